import { sql, type Kysely } from 'kysely';
import { listSessions } from '../auth/sessions.js';
import { readUserBalance } from '../billing/getUserBalance.js';
import type { Database } from '../db/schema.js';
import { listApiKeys } from '../keys/apiKeys.js';
import { toEntry, type AuditLogEntry } from './listAuditLog.js';
import { usageItem } from './listUsage.js';
import { iso } from './params.js';
import { getAdminUserView } from './profile.js';
import { getStatementSummary, statementLinePages } from './statement.js';

export const EXPORT_FORMAT = 'lingxi-account-export/1';

const PAGE = 1000;
/** Tables exported in their own section (or never: secrets), not in `other`. */
const SECTIONED = new Set(['users', 'api_keys', 'sessions', 'usage_records', 'usage_daily']);
/** Columns never exported: hashes of secrets. */
const SECRET_COLUMNS = new Set(['key_hash', 'token_hash', 'payload_hash']);
/** Rows per table of the `other` section at most. */
const OTHER_ROWS_MAX = 10_000;

/**
 * Everything held about a user, as one JSON document (GET /api/me/export): the profile, the
 * balance, API keys and sessions (without their hashes), every ledger line of the balance,
 * every usage row (with the request metadata still kept) and daily usage aggregate, the audit
 * entries about or by the user (the operator's without the admin's IP, request id or login
 * name), and the rows of any other table with a `user_id` column
 * (deposit addresses, deposits...). Written a page at a time: memory stays constant. Read in
 * one read-only snapshot, so a call charged or a top-up credited while it streams is in every
 * part of it (balance, ledger lines, totals, usage) or in none.
 */
export async function* exportAccount(
  db: Kysely<Database>,
  userId: string,
  now: Date,
): AsyncGenerator<string> {
  const snapshot = await db
    .startTransaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute();
  try {
    yield* exportFrom(snapshot, userId, now);
  } finally {
    await snapshot.rollback().execute();
  }
}

async function* exportFrom(
  db: Kysely<Database>,
  userId: string,
  now: Date,
): AsyncGenerator<string> {
  const head = {
    format: EXPORT_FORMAT,
    exportedAt: now.toISOString(),
    profile: await getAdminUserView(db, userId),
    balance: await readUserBalance(db, userId),
    keys: await listApiKeys(db, userId),
    sessions: await listSessions(db, userId),
  };
  const json = JSON.stringify(head);
  yield json.slice(0, -1);

  const summary = await getStatementSummary(db, { userId });
  const ledgerHead = JSON.stringify(summary).slice(0, -1);
  yield `,"ledger":${ledgerHead},"lines":`;
  yield* jsonArray(statementLinePages(db, { userId }));
  yield '}';

  yield ',"usage":';
  yield* jsonArray(usagePages(db, userId));
  yield ',"usageDaily":';
  yield* jsonArray(usageDailyPages(db, userId));
  yield ',"auditLog":';
  yield* jsonArray(auditPages(db, userId));
  yield ',"other":{';
  let first = true;
  for (const table of await otherUserTables(db)) {
    const rows = await otherRows(db, table, userId);
    yield `${first ? '' : ','}${JSON.stringify(table)}:${JSON.stringify(rows)}`;
    first = false;
  }
  yield '}}';
}

async function* jsonArray(pages: AsyncIterable<unknown[]>): AsyncGenerator<string> {
  yield '[';
  let first = true;
  for await (const page of pages) {
    if (page.length === 0) continue;
    yield (first ? '' : ',') + page.map((item) => JSON.stringify(item)).join(',');
    first = false;
  }
  yield ']';
}

async function* usagePages(db: Kysely<Database>, userId: string): AsyncGenerator<unknown[]> {
  let after = '0';
  for (;;) {
    const rows = await db
      .selectFrom('usage_records')
      .selectAll()
      .where('user_id', '=', userId)
      .where('id', '>', after)
      .orderBy('id')
      .limit(PAGE)
      .execute();
    yield rows.map((row) => ({
      ...usageItem(row),
      entryId: row.entry_id,
      firstByteAt: iso(row.first_byte_at),
      clientIp: row.client_ip,
      userAgent: row.user_agent,
    }));
    if (rows.length < PAGE) return;
    after = rows[rows.length - 1]!.id;
  }
}

async function* usageDailyPages(db: Kysely<Database>, userId: string): AsyncGenerator<unknown[]> {
  let after: [string, string] = ['0001-01-01', ''];
  for (;;) {
    const rows = await db
      .selectFrom('usage_daily')
      .select([
        sql<string>`to_char(day, 'YYYY-MM-DD')`.as('day_text'),
        'model',
        'calls',
        'prompt_tokens',
        'cached_tokens',
        'cache_write_tokens',
        'completion_tokens',
        'reasoning_tokens',
        'cost_usd',
        'shortfall_usd',
        'outcomes',
      ])
      .where('user_id', '=', userId)
      .where(sql<boolean>`(day, model) > (${after[0]}::date, ${after[1]})`)
      .orderBy('day')
      .orderBy('model')
      .limit(PAGE)
      .execute();
    yield rows.map((row) => ({
      day: row.day_text,
      model: row.model,
      calls: row.calls,
      promptTokens: row.prompt_tokens,
      cachedTokens: row.cached_tokens,
      cacheWriteTokens: row.cache_write_tokens,
      completionTokens: row.completion_tokens,
      reasoningTokens: row.reasoning_tokens,
      costUsd: row.cost_usd,
      shortfallUsd: row.shortfall_usd,
      outcomes: row.outcomes,
    }));
    if (rows.length < PAGE) return;
    const last = rows[rows.length - 1]!;
    after = [last.day_text, last.model];
  }
}

async function* auditPages(db: Kysely<Database>, userId: string): AsyncGenerator<unknown[]> {
  const subject = `user:${userId}`;
  let after = '0';
  for (;;) {
    const rows = await db
      .selectFrom('audit_log')
      .selectAll()
      .where((eb) => eb.or([eb('target', '=', subject), eb('actor', '=', subject)]))
      .where('id', '>', after)
      .orderBy('id')
      .limit(PAGE)
      .execute();
    yield rows.map((row) => (row.actor === subject ? toEntry(row) : operatorsEntry(row)));
    if (rows.length < PAGE) return;
    after = rows[rows.length - 1]!.id;
  }
}

/**
 * An entry about the user written by the operator (the admin API, actor `admin`, or the CLI,
 * `cli:<login name>`): the user's export says `admin` did it, and carries neither the admin's
 * IP address nor the request id, which are the operator's, not the user's.
 */
function operatorsEntry(row: Parameters<typeof toEntry>[0]): AuditLogEntry {
  return { ...toEntry(row), actor: 'admin', ip: null, requestId: null };
}

/** Other tables of ours that hold rows per user (found by their `user_id` column). */
async function otherUserTables(db: Kysely<Database>): Promise<string[]> {
  const { rows } = await sql<{ table_name: string }>`
    select c.table_name from information_schema.columns c
      join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
     where c.table_schema = current_schema() and c.column_name = 'user_id' and t.table_type = 'BASE TABLE'
     order by c.table_name`.execute(db);
  return rows
    .map((r) => r.table_name)
    .filter((name) => !SECTIONED.has(name) && !name.startsWith('ledger_'));
}

async function otherRows(
  db: Kysely<Database>,
  table: string,
  userId: string,
): Promise<{ rows: Record<string, unknown>[]; truncated: boolean }> {
  const { rows } = await sql<Record<string, unknown>>`
    select * from ${sql.table(table)} where user_id = ${userId} order by 1 limit ${OTHER_ROWS_MAX + 1}`.execute(
    db,
  );
  const kept = rows.slice(0, OTHER_ROWS_MAX).map((row) =>
    Object.fromEntries(
      Object.entries(row)
        .filter(([column]) => !SECRET_COLUMNS.has(column))
        .map(([column, value]) => [column, value instanceof Date ? value.toISOString() : value]),
    ),
  );
  return { rows: kept, truncated: rows.length > OTHER_ROWS_MAX };
}
