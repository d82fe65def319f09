import type pg from 'pg';
import { Decimal } from '../../../ledger/index.js';
import { MAX_FINDINGS_PER_KIND, type Finding } from '../findings.js';

export interface UsageRevenueCheck {
  findings: Finding[];
  days: number;
  usageUsd: string;
  revenueUsd: string;
}

/** The revenue accounts usage is charged to: `revenue:usage` and any sub-account of it. */
const REVENUE_ACCOUNTS = `select id from ledger_accounts where code = 'revenue:usage' or code like 'revenue:usage:%'`;

/**
 * Law 7: charged usage equals revenue, to the last digit, per UTC day, and call by call.
 * A usage row's day is the day its call finished (usage_daily, the roll-up of rows past
 * retention, uses the same day). A revenue posting's day is the day of the call its entry
 * charged, or the day the entry was written when no usage row names it.
 */
export async function checkUsageRevenue(pool: pg.Pool): Promise<UsageRevenueCheck> {
  const { rows: tables } = await pool.query<{ daily: boolean }>(
    `select to_regclass('usage_daily') is not null as daily`,
  );
  const hasDaily = tables[0]?.daily === true;
  const revenueByEntry = `
    select p.entry_id, -sum(p.amount) as amount from ledger_postings p
     where p.account_id in (${REVENUE_ACCOUNTS}) group by p.entry_id`;
  const [days, records, orphans] = await Promise.all([
    pool.query<{ day: string; usage: string; revenue: string; calls: string; entries: string }>(`
      with usage_days as (
        select (finished_at at time zone 'UTC')::date as day, sum(cost_usd) as cost, count(*) as calls
          from usage_records where cost_usd > 0 group by 1
        ${hasDaily ? `union all select day, sum(cost_usd), sum(calls) from usage_daily where cost_usd > 0 group by day` : ''}
      ), usage as (
        select day, sum(cost) as cost, sum(calls) as calls from usage_days group by day
      ), revenue as (${revenueByEntry}
      ), revenue_days as (
        select coalesce((u.finished_at at time zone 'UTC')::date, (e.created_at at time zone 'UTC')::date) as day,
               sum(r.amount) as amount, count(*) as entries
          from revenue r join ledger_entries e on e.id = r.entry_id
          left join lateral (select finished_at from usage_records u where u.entry_id = r.entry_id order by u.id limit 1) u on true
         group by 1
      )
      select to_char(day, 'YYYY-MM-DD') as day, trim_scale(coalesce(usage.cost, 0))::text as usage,
             trim_scale(coalesce(revenue_days.amount, 0))::text as revenue,
             coalesce(usage.calls, 0)::text as calls, coalesce(revenue_days.entries, 0)::text as entries
        from usage full join revenue_days using (day)
       order by day`),
    pool.query<{
      id: string;
      request_id: string;
      cost: string;
      entry_id: string | null;
      revenue: string | null;
      finished_at: string;
      total: string;
    }>(`
      with revenue as (${revenueByEntry})
      select u.id::text as id, u.request_id, trim_scale(u.cost_usd)::text as cost, u.entry_id::text as entry_id,
             trim_scale(r.amount)::text as revenue,
             to_char(u.finished_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as finished_at,
             count(*) over ()::text as total
        from usage_records u left join revenue r on r.entry_id = u.entry_id
       where u.cost_usd > 0 and (r.amount is null or r.amount <> u.cost_usd)
       order by u.id limit ${MAX_FINDINGS_PER_KIND}`),
    pool.query<{ entry_id: string; amount: string; created_at: string; total: string }>(`
      with revenue as (${revenueByEntry})
      select r.entry_id::text as entry_id, trim_scale(r.amount)::text as amount,
             to_char(e.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as created_at,
             count(*) over ()::text as total
        from revenue r join ledger_entries e on e.id = r.entry_id
       where r.amount <> 0
         and not exists (select 1 from usage_records u where u.entry_id = r.entry_id)
         ${hasDaily ? `and (e.created_at at time zone 'UTC')::date > coalesce((select max(day) from usage_daily), '-infinity'::date)` : ''}
       order by e.created_at, e.id limit ${MAX_FINDINGS_PER_KIND}`),
  ]);

  const findings: Finding[] = [];
  let usageUsd = new Decimal(0);
  let revenueUsd = new Decimal(0);
  for (const day of days.rows) {
    usageUsd = usageUsd.add(day.usage);
    revenueUsd = revenueUsd.add(day.revenue);
    const difference = new Decimal(day.revenue).sub(day.usage);
    if (difference.isZero()) continue;
    findings.push({
      severity: 'error',
      kind: 'usage_revenue_mismatch',
      account: 'revenue:usage',
      currency: 'USD',
      expected: day.usage,
      actual: day.revenue,
      difference: difference.toString(),
      details: { day: day.day, usageCalls: Number(day.calls), revenueEntries: Number(day.entries) },
    });
  }
  for (const row of records.rows) {
    const revenue = row.revenue ?? '0';
    findings.push({
      severity: 'error',
      kind: row.revenue === null ? 'usage_without_revenue' : 'usage_revenue_mismatch_call',
      account: 'revenue:usage',
      currency: 'USD',
      expected: row.cost,
      actual: revenue,
      difference: new Decimal(revenue).sub(row.cost).toString(),
      details: {
        usageRecordId: row.id,
        requestId: row.request_id,
        entryId: row.entry_id,
        finishedAt: row.finished_at,
        callsOff: Number(row.total),
      },
    });
  }
  for (const row of orphans.rows) {
    findings.push({
      severity: 'error',
      kind: 'revenue_without_usage',
      account: 'revenue:usage',
      currency: 'USD',
      expected: '0',
      actual: row.amount,
      difference: row.amount,
      details: { entryId: row.entry_id, createdAt: row.created_at, entriesOff: Number(row.total) },
    });
  }
  return {
    findings,
    days: days.rows.length,
    usageUsd: usageUsd.toString(),
    revenueUsd: revenueUsd.toString(),
  };
}
