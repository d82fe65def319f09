import { createHash } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { AppError, conflict } from '../errors.js';

/**
 * Idempotency keys, whatever carries them (the admin API's `Idempotency-Key` header, the CLI's
 * `--idempotency-key`): the first request with a key claims it and records its answer in the
 * transaction that does its work; a repeat with the same key and request gets that answer and
 * changes nothing; the same key with another request is refused. Kept in `http_idempotency`,
 * pruned with the request metadata (retention.requestMetaDays).
 */
export interface IdempotentRequest {
  /** The key as scoped to its caller (`admin:K`, `user:1:K`, `cli:K`): callers never share one. */
  key: string;
  /** `POST`, or `CLI` for a command. */
  method: string;
  /** `/admin/users`, or the command (`lingxi users create`). */
  path: string;
  /** Hashes that count as this request (see hashIdempotentRequest); the first is recorded. */
  requestHashes: [string, ...string[]];
  /** How the caller names the key in errors: `Idempotency-Key`, `--idempotency-key`. */
  param: string;
}

export type IdempotencyClaimResult =
  { claimed: true } | { claimed: false; status: number; response: unknown };

/** SHA-256 of the method, the path and the request's canonical (RFC 8785) body. */
export function hashIdempotentRequest(method: string, path: string, body: string): string {
  return createHash('sha256').update(`${method} ${path}\n${body}`).digest('hex');
}

/**
 * Claims `request.key`, or returns the answer recorded for it. Throws 409
 * `idempotency_conflict` when the key was used for another request, and 409
 * `idempotency_in_progress` while the first is still running. A claim whose heartbeat is older
 * than `leaseMs` was left by a process that died before answering: it is taken over, for the
 * same request only, by one caller when several retry at once. A claim given up (its request
 * failed) between this caller finding the key taken and reading its answer is claimed afresh.
 */
export async function claimIdempotencyKey(
  db: Kysely<Database>,
  request: IdempotentRequest,
  options: { leaseMs: number },
): Promise<IdempotencyClaimResult> {
  for (let attempt = 1; ; attempt += 1) {
    const inserted = await db
      .insertInto('http_idempotency')
      .values({
        key: request.key,
        method: request.method,
        path: request.path,
        request_hash: request.requestHashes[0],
        status: null,
        response: null,
      })
      .onConflict((oc) => oc.column('key').doNothing())
      .returning('key')
      .executeTakeFirst();
    if (inserted !== undefined) return { claimed: true };
    if (await takeOverAbandoned(db, request, options.leaseMs)) return { claimed: true };
    const previous = await db
      .selectFrom('http_idempotency')
      .selectAll()
      .where('key', '=', request.key)
      .executeTakeFirst();
    if (previous === undefined) {
      // The request that held the key failed and gave it up (releaseIdempotencyClaim) after
      // the insert above found it taken: the key is free again, so claim it afresh. Past a few
      // rounds (others keep claiming and failing), answer as while one runs: retry.
      if (attempt < MAX_CLAIM_ATTEMPTS) continue;
      throw inProgress(request);
    }
    if (!request.requestHashes.includes(previous.request_hash))
      throw conflict(
        `this ${request.param} was used for a different request`,
        'idempotency_conflict',
        request.param,
      );
    if (previous.status === null) throw inProgress(request);
    return { claimed: false, status: previous.status, response: previous.response };
  }
}

/** Rounds of claimIdempotencyKey when the key keeps being released under it. */
const MAX_CLAIM_ATTEMPTS = 3;

/** 409 `idempotency_in_progress`: another request holds the key; retry once it has answered. */
function inProgress(request: IdempotentRequest): AppError {
  return new AppError(
    'idempotency_in_progress',
    `a request with this ${request.param} is still running; retry once it has answered`,
    { status: 409, param: request.param, headers: { 'retry-after': '1' } },
  );
}

/**
 * Refreshes the claim every third of `leaseMs` while its request runs, so no retry takes it
 * over; returns the function that stops it.
 */
export function keepIdempotencyClaim(
  db: Kysely<Database>,
  key: string,
  leaseMs: number,
): () => void {
  const heartbeat = setInterval(
    () => {
      db.updateTable('http_idempotency')
        .set({ created_at: sql<Date>`now()` })
        .where('key', '=', key)
        .where('status', 'is', null)
        .execute()
        .catch(() => {});
    },
    Math.max(1, Math.floor(leaseMs / 3)),
  );
  return () => clearInterval(heartbeat);
}

/**
 * Records the answer to the claimed key in `trx`, the transaction that does the request's work:
 * a process that dies after the work committed has answered too. Secrets (`key`) are not kept.
 */
export async function recordIdempotentAnswer(
  trx: Kysely<Database>,
  key: string,
  status: number,
  body: unknown,
): Promise<void> {
  await trx
    .updateTable('http_idempotency')
    .set({ status, response: JSON.stringify(redactSecrets(body)) })
    .where('key', '=', key)
    .execute();
}

/** Gives up an unanswered claim (its request failed): the key may be sent again. */
export async function releaseIdempotencyClaim(db: Kysely<Database>, key: string): Promise<void> {
  await db
    .deleteFrom('http_idempotency')
    .where('key', '=', key)
    .where('status', 'is', null)
    .execute();
}

async function takeOverAbandoned(
  db: Kysely<Database>,
  request: IdempotentRequest,
  leaseMs: number,
): Promise<boolean> {
  const taken = await db
    .updateTable('http_idempotency')
    .set({ created_at: sql<Date>`now()` })
    .where('key', '=', request.key)
    .where('status', 'is', null)
    .where('request_hash', 'in', request.requestHashes)
    .where('created_at', '<', sql<Date>`now() - make_interval(secs => ${leaseMs / 1000})`)
    .returning('key')
    .executeTakeFirst();
  return taken !== undefined;
}

/** What a replay answers in place of a secret shown once. */
export function redactSecrets(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || !('key' in body)) return body ?? null;
  return {
    ...(body as Record<string, unknown>),
    key: null,
    keyShownOnce: 'the secret was shown in the first answer only',
  };
}
