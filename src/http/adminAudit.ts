import type { Context } from 'koa';
import type { Kysely } from 'kysely';
import { audit, type AuditEvent } from '../audit.js';
import type { Database } from '../db/schema.js';

/** Records an admin request's action; who, from where and the request id come from the request. */
export type AdminAudit = (
  ctx: Context,
  action: string,
  target: string | null,
  details: Record<string, unknown>,
) => Promise<void>;

export function adminAudit(db: Kysely<Database>): AdminAudit {
  return (ctx, action, target, details) => audit(db, adminAuditEvent(ctx, action, target, details));
}

/**
 * An admin request's audit record, for a domain function to write in its own transaction
 * (money changes: recorded if and only if they commit).
 */
export function adminAuditEvent(
  ctx: Context,
  action: string,
  target: string | null,
  details: Record<string, unknown>,
): AuditEvent {
  return {
    actor: ctx.state['actor'],
    action,
    target,
    details,
    ip: ctx.ip,
    requestId: ctx.state['requestId'],
  };
}
