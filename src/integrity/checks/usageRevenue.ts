import type pg from 'pg';
import { Decimal } from '../../../ledger/index.js';
import { MAX_FINDINGS_PER_KIND, type Finding } from '../findings.js';

export interface UsageRevenueCheck {
  findings: Finding[];
  days: number;
  usageUsd: string;
  revenueUsd: string;
}

interface DayRow {
  day: string;
  usage: string;
  revenue: string;
  calls: string;
  entries: string;
}

interface CallRow {
  kind: 'usage_without_revenue' | 'usage_revenue_mismatch_call' | 'revenue_without_usage';
  usage_record_id: string | null;
  request_id: string | null;
  entry_id: string | null;
  cost: string;
  revenue: string;
  at: string;
  total: number;
}

/**
 * Law 7: charged usage equals revenue, to the last digit, per UTC day, and call by call.
 * A usage row's day is the day its call finished. A revenue posting's day is the day of the
 * call its entry charged, or the day the entry was written when no usage row names it:
 * usage_daily, the roll-up of rows past retention, files a charged call under that day too
 * (its entry's), so a call that finished before midnight and settled after it matches on
 * both sides before and after retention.
 *
 * One pass: the revenue per entry (postings on `revenue:usage` and its sub-accounts) full
 * joined with the usage rows on their entry, then summed per day and compared per call.
 */
export async function checkUsageRevenue(pool: pg.Pool): Promise<UsageRevenueCheck> {
  const { rows: tables } = await pool.query<{ daily: boolean }>(
    `select to_regclass('usage_daily') is not null as daily`,
  );
  const hasDaily = tables[0]?.daily === true;
  // The revenue accounts' ids go in as a parameter so the planner sees how many postings
  // they hold (one account holds a third of the book; a guess of "a few" plans badly).
  const { rows: accounts } = await pool.query<{ id: string }>(
    `select id::text as id from ledger_accounts where code = 'revenue:usage' or code like 'revenue:usage:%'`,
  );
  const revenueIds = accounts.map((a) => a.id);
  const { rows } = await pool.query<{ days: DayRow[] | null; calls: CallRow[] | null }>(
    `
    with revenue as (
      select p.entry_id, -sum(p.amount) as amount from ledger_postings p
       where p.account_id = any($1::bigint[]) group by p.entry_id
    ), calls as (
      select id, request_id, cost_usd, entry_id, finished_at from usage_records
       where cost_usd > 0 or entry_id is not null
    ), joined as materialized (
      select c.id, c.request_id, coalesce(c.cost_usd, 0) as cost, coalesce(c.entry_id, r.entry_id) as entry_id,
             coalesce(r.amount, 0) as revenue, c.id is null as revenue_only, r.entry_id is null as usage_only,
             coalesce(c.finished_at, (select e.created_at from ledger_entries e where e.id = r.entry_id)) as at
        from calls c full join revenue r on r.entry_id = c.entry_id
    ), usage_days as (
      select (at at time zone 'UTC')::date as day, sum(cost) as usage, sum(revenue) as revenue,
             count(*) filter (where cost > 0) as calls, count(*) filter (where not usage_only) as entries
        from joined group by 1
      ${
        hasDaily
          ? `union all
      select day, sum(cost_usd), 0, sum(calls), 0 from usage_daily where cost_usd > 0 group by day`
          : ''
      }
    ), days as (
      select day, sum(usage) as usage, sum(revenue) as revenue, sum(calls) as calls, sum(entries) as entries
        from usage_days group by day
    ), off as (
      select j.*, case when j.revenue_only then 'revenue_without_usage'
                       when j.usage_only then 'usage_without_revenue'
                       else 'usage_revenue_mismatch_call' end as kind
        from joined j
       where j.cost <> j.revenue
         ${
           hasDaily
             ? // Rows past retention live on in usage_daily without their entry ids: a revenue
               // entry of those days has no row to name it, and the day totals vouch for it.
               `and not (j.revenue_only and (j.at at time zone 'UTC')::date <= coalesce((select max(day) from usage_daily), '-infinity'::date))`
             : ''
         }
    ), ranked as (
      select off.*, row_number() over (partition by kind order by at, entry_id, id) as rank,
             count(*) over (partition by kind) as total
        from off
    )
    select (select jsonb_agg(jsonb_build_object('day', to_char(day, 'YYYY-MM-DD'), 'usage', trim_scale(usage)::text,
              'revenue', trim_scale(revenue)::text, 'calls', calls::text, 'entries', entries::text) order by day)
              from days) as days,
           (select jsonb_agg(jsonb_build_object('kind', kind, 'usage_record_id', id::text, 'request_id', request_id,
              'entry_id', entry_id::text, 'cost', trim_scale(cost)::text, 'revenue', trim_scale(revenue)::text,
              'at', to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'total', total)
              order by kind desc, rank)
              from ranked where rank <= ${MAX_FINDINGS_PER_KIND}) as calls`,
    [revenueIds],
  );
  const days = rows[0]?.days ?? [];
  const calls = rows[0]?.calls ?? [];

  const findings: Finding[] = [];
  let usageUsd = new Decimal(0);
  let revenueUsd = new Decimal(0);
  for (const day of days) {
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
  for (const call of calls) {
    const difference = new Decimal(call.revenue).sub(call.cost).toString();
    if (call.kind === 'revenue_without_usage') {
      findings.push({
        severity: 'error',
        kind: call.kind,
        account: 'revenue:usage',
        currency: 'USD',
        expected: '0',
        actual: call.revenue,
        difference,
        details: { entryId: call.entry_id, createdAt: call.at, entriesOff: call.total },
      });
    } else {
      findings.push({
        severity: 'error',
        kind: call.kind,
        account: 'revenue:usage',
        currency: 'USD',
        expected: call.cost,
        actual: call.revenue,
        difference,
        details: {
          usageRecordId: call.usage_record_id,
          requestId: call.request_id,
          entryId: call.entry_id,
          finishedAt: call.at,
          callsOff: call.total,
        },
      });
    }
  }
  return {
    findings,
    days: days.length,
    usageUsd: usageUsd.toString(),
    revenueUsd: revenueUsd.toString(),
  };
}
