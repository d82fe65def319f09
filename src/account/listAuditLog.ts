import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';

export interface ListAuditLogParameters {
  limit: number;
  /** The previous page's nextCursor: entries older than this id. */
  cursor?: string | undefined;
  target?: string | undefined;
  action?: string | undefined;
  actor?: string | undefined;
}

export interface AuditLogEntry {
  id: string;
  at: string;
  actor: string;
  action: string;
  target: string | null;
  details: Record<string, unknown>;
  ip: string | null;
  requestId: string | null;
}

/** The append-only audit log, newest first, a page at a time. */
export async function listAuditLog(
  db: Kysely<Database>,
  params: ListAuditLogParameters,
): Promise<{ data: AuditLogEntry[]; nextCursor: string | null }> {
  let query = db
    .selectFrom('audit_log')
    .selectAll()
    .orderBy('id', 'desc')
    .limit(params.limit + 1);
  if (params.cursor !== undefined) query = query.where('id', '<', params.cursor);
  if (params.target !== undefined) query = query.where('target', '=', params.target);
  if (params.action !== undefined) query = query.where('action', '=', params.action);
  if (params.actor !== undefined) query = query.where('actor', '=', params.actor);
  const rows = await query.execute();
  const page = rows.slice(0, params.limit);
  return {
    data: page.map(toEntry),
    nextCursor: rows.length > params.limit ? page[page.length - 1]!.id : null,
  };
}

export function toEntry(row: {
  id: string;
  at: Date;
  actor: string;
  action: string;
  target: string | null;
  details: Record<string, unknown>;
  ip: string | null;
  request_id: string | null;
}): AuditLogEntry {
  return {
    id: row.id,
    at: row.at.toISOString(),
    actor: row.actor,
    action: row.action,
    target: row.target,
    details: row.details,
    ip: row.ip,
    requestId: row.request_id,
  };
}
