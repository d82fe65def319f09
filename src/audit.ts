import type { Kysely } from 'kysely';
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
