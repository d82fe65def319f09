import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import { parseAmount, type Decimal } from '../../ledger/index.js';
import type { Database } from '../db/schema.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { unstorableText } from '../text.js';
import { assertNotErased } from '../users/createUser.js';

/** Keys look like `lx-` + 43 base64url characters (32 random bytes). */
const KEY_PREFIX = 'lx-';
const KEY_PATTERN = /^lx-[A-Za-z0-9_-]{43}$/;
/** A key id: a uuid as PostgreSQL reads one (anything else would be a cast error, a 500). */
const KEY_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface CreateApiKeyParameters {
  userId: string;
  name?: string | null | undefined;
  /** USD the key may spend in total, as a decimal string. */
  spendLimitUsd?: unknown;
  /** Model ids the key may call; all when absent. */
  allowedModels?: unknown;
  /** Refuse (409 `too_many_keys`) when the user already holds this many active keys. */
  maxActive?: number;
  /**
   * Runs in the transaction that inserts the key (its audit record, the Idempotency-Key
   * answer): committed with the key or not at all.
   */
  within?: (trx: Transaction<Database>, key: CreatedApiKey) => Promise<void>;
}

export interface CreatedApiKey {
  id: string;
  /** The secret: shown once, never stored. */
  key: string;
  prefix: string;
  name: string;
  spendLimitUsd: string | null;
  allowedModels: string[] | null;
  createdAt: string;
}

/**
 * A key's spend limit as given at creation or in a change: a positive decimal string of USD
 * (at most 18 decimals), or none (`null`, `undefined`). 400 `invalid_amount` otherwise.
 */
export function parseSpendLimitUsd(input: unknown): Decimal | null {
  if (input === undefined || input === null) return null;
  return parseAmount(input, { scale: 18, currency: 'USD', field: 'spendLimitUsd' });
}

/**
 * A key's model list as given at creation or in a change: up to 100 model ids of 1-200
 * characters the database can keep, or every model (`null`, `undefined`). 400 otherwise.
 */
export function parseAllowedModels(input: unknown): string[] | null {
  if (input === undefined || input === null) return null;
  if (
    !Array.isArray(input) ||
    input.length > 100 ||
    !input.every((m) => typeof m === 'string' && m.length > 0 && m.length <= 200)
  ) {
    throw badRequest('allowedModels must be a list of model ids', 'allowedModels');
  }
  const modelProblem = input
    .map((m) => unstorableText(m as string))
    .find((problem) => problem !== null);
  if (modelProblem) throw badRequest(`allowedModels ${modelProblem}`, 'allowedModels');
  return input as string[];
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** Creates an API key for a user; only its hash is stored. An erased user: 409 `user_erased`. */
export async function createApiKey(
  db: Kysely<Database>,
  params: CreateApiKeyParameters,
): Promise<CreatedApiKey> {
  const name = params.name ?? '';
  if (typeof name !== 'string' || name.length > 100)
    throw badRequest('name must be a text of at most 100 characters', 'name');
  const nameProblem = unstorableText(name);
  if (nameProblem !== null) throw badRequest(`name ${nameProblem}`, 'name');
  const spendLimit = parseSpendLimitUsd(params.spendLimitUsd);
  const allowedModels = parseAllowedModels(params.allowedModels);
  const key = `${KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
  return db.transaction().execute(async (trx) => {
    // The row lock waits for an erasure in progress (it locks the row FOR UPDATE) and holds
    // the next one off until this key is in, so erasure revokes it: an erased user never ends
    // up with a live key. With a cap, the lock is exclusive among key creations, so two at
    // once cannot both count one below it.
    const query = trx.selectFrom('users').select('status').where('id', '=', params.userId);
    const user = await (
      params.maxActive === undefined ? query.forShare() : query.forNoKeyUpdate()
    ).executeTakeFirst();
    if (!user) throw notFound(`user ${params.userId} does not exist`, 'user_not_found', 'user');
    assertNotErased(user, 'it can have no new API keys');
    if (params.maxActive !== undefined) {
      const active = await trx
        .selectFrom('api_keys')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('user_id', '=', params.userId)
        .where('revoked_at', 'is', null)
        .executeTakeFirstOrThrow();
      if (Number(active.n) >= params.maxActive)
        throw conflict(
          `an account holds at most ${params.maxActive} active keys; revoke one first`,
          'too_many_keys',
        );
    }
    const row = await trx
      .insertInto('api_keys')
      .values({
        id: uuidv7(),
        user_id: params.userId,
        name,
        prefix: key.slice(0, 10),
        key_hash: hashApiKey(key),
        spend_limit_usd: spendLimit?.toString() ?? null,
        allowed_models: allowedModels,
      })
      .returning(['id', 'prefix', 'name', 'created_at'])
      .executeTakeFirstOrThrow();
    const created: CreatedApiKey = {
      id: row.id,
      key,
      prefix: row.prefix,
      name: row.name,
      spendLimitUsd: spendLimit?.toString() ?? null,
      allowedModels,
      createdAt: row.created_at.toISOString(),
    };
    await params.within?.(trx, created);
    return created;
  });
}

export interface ApiKeySummary {
  id: string;
  name: string;
  prefix: string;
  spendLimitUsd: string | null;
  spentUsd: string;
  allowedModels: string[] | null;
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

/** A user's keys, newest first, as every API lists them: never the secret or its hash. */
export async function listApiKeys(db: Kysely<Database>, userId: string): Promise<ApiKeySummary[]> {
  const rows = await db
    .selectFrom('api_keys')
    .selectAll()
    .where('user_id', '=', userId)
    .orderBy('created_at', 'desc')
    .execute();
  return rows.map(toApiKeySummary);
}

/** A key's row as every API shows it. */
export function toApiKeySummary(row: Selectable<Database['api_keys']>): ApiKeySummary {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    spendLimitUsd: row.spend_limit_usd,
    spentUsd: row.spent_usd,
    allowedModels: row.allowed_models,
    createdAt: row.created_at.toISOString(),
    lastUsedAt: row.last_used_at ? new Date(row.last_used_at).toISOString() : null,
    revokedAt: row.revoked_at ? new Date(row.revoked_at).toISOString() : null,
  };
}

/** True when `text` can be a key id (a uuid); anything else names no key. */
export function isApiKeyId(text: string): boolean {
  return KEY_ID_PATTERN.test(text);
}

/** The user who holds key `keyId`; 404 `key_not_found` when there is no such key. */
export async function findApiKeyOwner(db: Kysely<Database>, keyId: string): Promise<string> {
  if (!isApiKeyId(keyId)) throw notFound('no such key', 'key_not_found', 'id');
  const row = await db
    .selectFrom('api_keys')
    .select('user_id')
    .where('id', '=', keyId)
    .executeTakeFirst();
  if (!row) throw notFound('no such key', 'key_not_found', 'id');
  return row.user_id;
}

export interface RevokeApiKeyParameters {
  userId: string;
  keyId: string;
  /**
   * Runs in the transaction that revokes the key (its audit record), and only when this call
   * revoked it: a key already revoked is answered with its time and nothing is written.
   */
  within?: (trx: Transaction<Database>, revoked: RevokedApiKey) => Promise<void>;
}

export interface RevokedApiKey {
  id: string;
  revokedAt: string;
  /** True when the key was revoked before this call; `revokedAt` is that first time. */
  alreadyRevoked: boolean;
}

/**
 * Revokes one of a user's keys; it stops working at once in this process and, by NOTIFY
 * `lingxi_keys` sent in the revocation's transaction (so delivered exactly when it commits,
 * even if this process dies right after), in every other (see KeyAuthenticator). Revoking it
 * again changes nothing and answers the first revocation's time. No such key of this user:
 * 404 `key_not_found`.
 */
export async function revokeApiKey(
  db: Kysely<Database>,
  params: RevokeApiKeyParameters,
): Promise<RevokedApiKey> {
  if (!isApiKeyId(params.keyId)) throw notFound('no such key', 'key_not_found', 'id');
  const result = await db.transaction().execute(async (trx): Promise<RevokedApiKey> => {
    const row = await trx
      .updateTable('api_keys')
      .set({ revoked_at: new Date() })
      .where('id', '=', params.keyId)
      .where('user_id', '=', params.userId)
      .where('revoked_at', 'is', null)
      .returning(['id', 'revoked_at'])
      .executeTakeFirst();
    if (row) {
      await notifyKeyChangeOnCommit(trx);
      const revoked = {
        id: row.id,
        revokedAt: new Date(row.revoked_at!).toISOString(),
        alreadyRevoked: false,
      };
      await params.within?.(trx, revoked);
      return revoked;
    }
    const existing = await trx
      .selectFrom('api_keys')
      .select(['id', 'revoked_at'])
      .where('id', '=', params.keyId)
      .where('user_id', '=', params.userId)
      .executeTakeFirst();
    if (!existing) throw notFound('no such key', 'key_not_found', 'id');
    return {
      id: existing.id,
      revokedAt: new Date(existing.revoked_at!).toISOString(),
      alreadyRevoked: true,
    };
  });
  if (!result.alreadyRevoked) forgetKeysLocally();
  return result;
}

/** What this process runs when it changes keys itself (see forgetKeysLocally). */
const localKeyChangeListeners = new Set<() => void>();

/** Runs `listener` whenever this process calls forgetKeysLocally; returns the unsubscriber. */
export function onLocalKeyChange(listener: () => void): () => void {
  localKeyChangeListeners.add(listener);
  return () => localKeyChangeListeners.delete(listener);
}

/**
 * Sends NOTIFY lingxi_keys in the transaction `trx` that changes keys (revocation, a new spend
 * limit or model list, suspension, erasure): PostgreSQL delivers it to every other gateway
 * process exactly when, and only if, that transaction commits, so no crash or broken
 * connection between the commit and a later statement can leave them serving a revoked key
 * from their caches. After the commit, the
 * caller runs forgetKeysLocally for this process (before it, a request could cache the old
 * state again before the change is visible).
 */
export async function notifyKeyChangeOnCommit(trx: Transaction<Database>): Promise<void> {
  await sql`select pg_notify('lingxi_keys', 'changed')`.execute(trx);
}

/**
 * Empties this process's key caches at once, before its caller answers (its own NOTIFY may
 * arrive a little later). Call it after the change (with its notifyKeyChangeOnCommit) has
 * committed.
 */
export function forgetKeysLocally(): void {
  for (const listener of localKeyChangeListeners) listener();
}

/** A well-formed key string, compared without leaking timing. */
export function looksLikeApiKey(candidate: string): boolean {
  return KEY_PATTERN.test(candidate);
}

export function hashesEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}
