import { createHash, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import type { Database } from '../db/schema.js';
import { AppError, unauthorized } from '../errors.js';

/** Session tokens look like `lxs-` + 43 base64url characters (32 random bytes). */
export const SESSION_TOKEN_PREFIX = 'lxs-';
const SESSION_TOKEN_PATTERN = /^lxs-[A-Za-z0-9_-]{43}$/;

export type SessionMethod = 'telegram' | 'dev';

export interface CreatedSession {
  sessionId: string;
  /** The secret: shown once, never stored. */
  token: string;
  expiresAt: string;
}

export interface SessionPrincipal {
  sessionId: string;
  userId: string;
}

export function hashSessionToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function looksLikeSessionToken(candidate: string): boolean {
  return SESSION_TOKEN_PATTERN.test(candidate);
}

/** Starts a session for a user; only the token's hash is stored. */
export async function createSession(
  db: Kysely<Database>,
  params: { userId: string; method: SessionMethod; ttlS: number; now: Date },
): Promise<CreatedSession> {
  const token = `${SESSION_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
  const expiresAt = new Date(params.now.getTime() + params.ttlS * 1000);
  const id = uuidv7();
  await db
    .insertInto('sessions')
    .values({
      id,
      user_id: params.userId,
      token_hash: hashSessionToken(token),
      method: params.method,
      created_at: params.now,
      expires_at: expiresAt,
    })
    .execute();
  return { sessionId: id, token, expiresAt: expiresAt.toISOString() };
}

/**
 * The session behind a token, read from the database on every request (no cache), so a
 * logout, a suspension or an erasure takes effect at once. 401 for an unknown, expired or
 * revoked session; 403 for a suspended account, and for any session of an erased one (erasure
 * revokes them all).
 */
export async function authenticateSession(
  db: Kysely<Database>,
  token: string,
  now: Date = new Date(),
): Promise<SessionPrincipal> {
  if (!looksLikeSessionToken(token)) throw unauthorized('invalid session token', 'invalid_session');
  const row = await db
    .selectFrom('sessions as s')
    .innerJoin('users as u', 'u.id', 's.user_id')
    .select(['s.id', 's.user_id', 's.expires_at', 's.revoked_at', 's.last_used_at', 'u.status'])
    .where('s.token_hash', '=', hashSessionToken(token))
    .executeTakeFirst();
  if (!row) throw unauthorized('invalid session token', 'invalid_session');
  // Erasure revokes every session of the account and keeps the rows until retention: a retried
  // DELETE /api/me (its first answer lost) learns that the account is erased.
  if (row.status === 'erased') assertAccountUsable(row.status);
  if (row.revoked_at) throw unauthorized('this session was signed out', 'session_revoked');
  if (new Date(row.expires_at).getTime() <= now.getTime())
    throw unauthorized('this session has expired; sign in again', 'session_expired');
  assertAccountUsable(row.status);
  const lastUsed = row.last_used_at ? new Date(row.last_used_at).getTime() : 0;
  if (lastUsed < now.getTime() - 60_000) {
    // At most one write a minute per session.
    await db.updateTable('sessions').set({ last_used_at: now }).where('id', '=', row.id).execute();
  }
  return { sessionId: row.id, userId: row.user_id };
}

/** 403 unless the account may act: suspended and erased accounts may not. */
export function assertAccountUsable(status: string): void {
  if (status === 'active') return;
  if (status === 'erased')
    throw new AppError('account_erased', 'this account was erased', {
      status: 403,
      type: 'invalid_request_error',
    });
  throw new AppError('account_suspended', `this account is ${status}`, {
    status: 403,
    type: 'invalid_request_error',
  });
}

/** Signs one session out (idempotent). */
export async function revokeSession(
  db: Kysely<Database>,
  params: { sessionId: string; userId: string; now: Date },
): Promise<{ sessionId: string; revokedAt: string }> {
  await db
    .updateTable('sessions')
    .set({ revoked_at: params.now })
    .where('id', '=', params.sessionId)
    .where('user_id', '=', params.userId)
    .where('revoked_at', 'is', null)
    .execute();
  const row = await db
    .selectFrom('sessions')
    .select(['id', 'revoked_at'])
    .where('id', '=', params.sessionId)
    .where('user_id', '=', params.userId)
    .executeTakeFirstOrThrow();
  return { sessionId: row.id, revokedAt: new Date(row.revoked_at!).toISOString() };
}

export interface SessionSummary {
  id: string;
  method: string;
  createdAt: string;
  expiresAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

/** A user's sessions, newest first, without their hashes. */
export async function listSessions(
  db: Kysely<Database>,
  userId: string,
): Promise<SessionSummary[]> {
  const rows = await db
    .selectFrom('sessions')
    .select(['id', 'method', 'created_at', 'expires_at', 'last_used_at', 'revoked_at'])
    .where('user_id', '=', userId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .execute();
  return rows.map((row) => ({
    id: row.id,
    method: row.method,
    createdAt: row.created_at.toISOString(),
    expiresAt: new Date(row.expires_at).toISOString(),
    lastUsedAt: row.last_used_at ? new Date(row.last_used_at).toISOString() : null,
    revokedAt: row.revoked_at ? new Date(row.revoked_at).toISOString() : null,
  }));
}
