import type { Kysely } from 'kysely';
import type pg from 'pg';
import type { Database } from './db/schema.js';

export interface AuditEvent {
  actor: string;
  action: string;
  target?: string | null;
  details?: Record<string, unknown>;
  ip?: string | null;
  requestId?: string | null;
}

/** Appends to the audit log (the database refuses any change to it afterwards). */
export async function audit(db: Kysely<Database>, event: AuditEvent): Promise<void> {
  await db
    .insertInto('audit_log')
    .values({
      actor: event.actor,
      action: event.action,
      target: event.target ?? null,
      details: JSON.stringify(event.details ?? {}),
      ip: event.ip ?? null,
      request_id: event.requestId ?? null,
    })
    .execute();
}

/**
 * Appends to the audit log on `client`, inside the caller's transaction: an action that changes
 * money is recorded if and only if it commits, so a retry after a failure is recorded once.
 */
export async function auditWithin(client: pg.ClientBase, event: AuditEvent): Promise<void> {
  await client.query(
    `insert into audit_log (actor, action, target, details, ip, request_id)
     values ($1, $2, $3, $4, $5, $6)`,
    [
      event.actor,
      event.action,
      event.target ?? null,
      JSON.stringify(event.details ?? {}),
      event.ip ?? null,
      event.requestId ?? null,
    ],
  );
}
