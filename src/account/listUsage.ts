import { sql, type Kysely, type Selectable } from 'kysely';
import type { Database } from '../db/schema.js';
import { startsWithCalendarDate } from '../time/isoTime.js';
import { encodeCursor, iso, type CursorPart } from './params.js';

export interface ListUsageParameters {
  userId: string;
  /** started_at at or after: exact ISO 8601 text (microseconds kept, see parseTime). */
  from?: string;
  /** started_at before. */
  to?: string;
  model?: string;
  limit: number;
  /** From a previous page's nextCursor: [startedAt (UTC, microseconds), id]. */
  cursor?: string[];
}

/** One API call as the user sees it: numbers and times, never a prompt or a completion. */
export interface UsageItem {
  id: string;
  requestId: string;
  keyId: string | null;
  endpoint: string;
  model: string;
  provider: string | null;
  stream: boolean;
  promptTokens: string;
  cachedTokens: string;
  /** Part of promptTokens: written to the provider's prompt cache. */
  cacheWriteTokens: string;
  completionTokens: string;
  reasoningTokens: string;
  costUsd: string;
  shortfallUsd: string;
  estimated: boolean;
  startedAt: string;
  finishedAt: string;
  latencyMs: number;
  httpStatus: number;
  outcome: string;
}

type UsageRow = Selectable<Database['usage_records']>;

/** The columns `usageItem` reads. */
export const USAGE_ITEM_COLUMNS = [
  'id',
  'request_id',
  'key_id',
  'endpoint',
  'model',
  'provider',
  'stream',
  'prompt_tokens',
  'cached_tokens',
  'cache_write_tokens',
  'completion_tokens',
  'reasoning_tokens',
  'cost_usd',
  'shortfall_usd',
  'estimated',
  'started_at',
  'finished_at',
  'latency_ms',
  'http_status',
  'outcome',
] as const satisfies ReadonlyArray<keyof UsageRow>;

/** A usage row as the user sees it (the account API and the account export). */
export function usageItem(row: Pick<UsageRow, (typeof USAGE_ITEM_COLUMNS)[number]>): UsageItem {
  return {
    id: row.id,
    requestId: row.request_id,
    keyId: row.key_id,
    endpoint: row.endpoint,
    model: row.model,
    provider: row.provider,
    stream: row.stream,
    promptTokens: row.prompt_tokens,
    cachedTokens: row.cached_tokens,
    cacheWriteTokens: row.cache_write_tokens,
    completionTokens: row.completion_tokens,
    reasoningTokens: row.reasoning_tokens,
    costUsd: row.cost_usd,
    shortfallUsd: row.shortfall_usd,
    estimated: row.estimated,
    startedAt: iso(row.started_at)!,
    finishedAt: iso(row.finished_at)!,
    latencyMs: row.latency_ms,
    httpStatus: row.http_status,
    outcome: row.outcome,
  };
}

export interface ListUsageResult {
  data: UsageItem[];
  nextCursor: string | null;
}

const STARTED_KEY = /^\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z$/;

/**
 * Cursor parts: the row's started_at to the microsecond (a real date and time: a forged
 * `2026-13-45T99:99` would fail PostgreSQL's cast), and its id.
 */
export const USAGE_CURSOR: CursorPart[] = [
  { test: (part) => STARTED_KEY.test(part) && startsWithCalendarDate(part) },
  /^\d{1,18}$/,
];

/** A user's usage records, newest first (started_at, then id), one page at a time. */
export async function listUsage(
  db: Kysely<Database>,
  params: ListUsageParameters,
): Promise<ListUsageResult> {
  let query = db
    .selectFrom('usage_records')
    .select([
      ...USAGE_ITEM_COLUMNS,
      sql<string>`to_char(started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`.as(
        'started_key',
      ),
    ])
    .where('user_id', '=', params.userId)
    .orderBy('started_at', 'desc')
    .orderBy('id', 'desc')
    .limit(params.limit + 1);
  if (params.from) query = query.where(sql<boolean>`started_at >= ${params.from}::timestamptz`);
  if (params.to) query = query.where(sql<boolean>`started_at < ${params.to}::timestamptz`);
  if (params.model !== undefined) query = query.where('model', '=', params.model);
  if (params.cursor) {
    const [startedAt, id] = params.cursor as [string, string];
    query = query.where(
      sql<boolean>`(started_at, id) < (${startedAt}::timestamptz, ${id}::bigint)`,
    );
  }
  const rows = await query.execute();
  const page = rows.slice(0, params.limit);
  const last = page[page.length - 1];
  return {
    data: page.map(usageItem),
    nextCursor:
      rows.length > params.limit && last ? encodeCursor([last.started_key, last.id]) : null,
  };
}
