import { sql, type Kysely, type Transaction } from 'kysely';
import { Decimal } from '../../ledger/index.js';
import type { Database } from '../db/schema.js';
import { badRequest, conflict, notFound } from '../errors.js';
import {
  forgetKeysLocally,
  isApiKeyId,
  notifyKeyChangeOnCommit,
  parseAllowedModels,
  parseSpendLimitUsd,
  toApiKeySummary,
  type ApiKeySummary,
} from './apiKeys.js';

export interface UpdateApiKeyParameters {
  keyId: string;
  /** The new spend limit (a decimal string of USD), `null` for none; left as it is when absent. */
  spendLimitUsd?: unknown;
  /** The new model list, `null` for every model; left as it is when absent. */
  allowedModels?: unknown;
  /**
   * Runs in the transaction that changes the key (its audit record), and only when something
   * changed: the same values again write nothing.
   */
  within?: (trx: Transaction<Database>, change: ApiKeyChange) => Promise<void>;
}

/** What changed, field by field (only the fields that did), as the audit log keeps it. */
export interface ApiKeyChange {
  keyId: string;
  userId: string;
  spendLimitUsd?: { from: string | null; to: string | null };
  allowedModels?: { from: string[] | null; to: string[] | null };
}

export interface UpdatedApiKey extends ApiKeySummary {
  userId: string;
  /** False when the key already had these values: nothing was written. */
  changed: boolean;
}

/**
 * Changes a key's spend limit or model list. Validated as at creation (400 naming the field,
 * nothing changed); no such key: 404 `key_not_found`; a revoked key: 409 `key_revoked`.
 *
 * The spend already counted stays: a limit lowered below it refuses the next call (402
 * `spend_limit_exceeded`). A key is only counted while it has a limit, so a limit put on a key
 * that had none starts from what the key's calls still in the usage log cost (rows older than
 * `retention.usageLogDays` are rolled up per user, not per key, and no longer count). Every
 * gateway process hears of the change as of a revocation (NOTIFY `lingxi_keys`, sent in the
 * change's transaction), so none goes on serving the old limit or list from its cache.
 */
export async function updateApiKey(
  db: Kysely<Database>,
  params: UpdateApiKeyParameters,
): Promise<UpdatedApiKey> {
  const setsLimit = params.spendLimitUsd !== undefined;
  const setsModels = params.allowedModels !== undefined;
  if (!setsLimit && !setsModels)
    throw badRequest('nothing to change: give spendLimitUsd or allowedModels (null to lift one)');
  const spendLimit = setsLimit ? parseSpendLimitUsd(params.spendLimitUsd) : null;
  const allowedModels = setsModels ? parseAllowedModels(params.allowedModels) : null;
  if (!isApiKeyId(params.keyId)) throw notFound('no such key', 'key_not_found', 'id');
  const result = await db.transaction().execute(async (trx): Promise<UpdatedApiKey> => {
    // Locked: a concurrent revocation or change waits, and so does a call reserving part of
    // the limit (it updates this row), so the spend read below is the one the limit meets.
    const current = await trx
      .selectFrom('api_keys')
      .selectAll()
      .where('id', '=', params.keyId)
      .forUpdate()
      .executeTakeFirst();
    if (!current) throw notFound('no such key', 'key_not_found', 'id');
    if (current.revoked_at !== null)
      throw conflict(
        `key ${current.id} was revoked at ${new Date(current.revoked_at).toISOString()}; a revoked key cannot be changed`,
        'key_revoked',
        'id',
      );
    const change: ApiKeyChange = { keyId: current.id, userId: current.user_id };
    const limitTo = spendLimit?.toString() ?? null;
    if (setsLimit && !sameLimit(current.spend_limit_usd, limitTo))
      change.spendLimitUsd = { from: current.spend_limit_usd, to: limitTo };
    if (setsModels && !sameModels(current.allowed_models, allowedModels))
      change.allowedModels = { from: current.allowed_models, to: allowedModels };
    if (!change.spendLimitUsd && !change.allowedModels)
      return { ...toApiKeySummary(current), userId: current.user_id, changed: false };

    // Spend is counted only while a key has a limit: one that had none counts from what its
    // calls cost (never less than it counted before, under an earlier limit).
    const startsCounting = current.spend_limit_usd === null && change.spendLimitUsd !== undefined;
    const row = await trx
      .updateTable('api_keys')
      .set({
        ...(change.spendLimitUsd ? { spend_limit_usd: limitTo } : {}),
        ...(change.allowedModels ? { allowed_models: allowedModels } : {}),
        ...(startsCounting
          ? {
              spent_usd: sql<string>`greatest(spent_usd,
                (select coalesce(sum(u.cost_usd), 0) from usage_records u
                  where u.user_id = ${current.user_id} and u.key_id = ${current.id}))`,
            }
          : {}),
      })
      .where('id', '=', current.id)
      .returningAll()
      .executeTakeFirstOrThrow();
    await notifyKeyChangeOnCommit(trx);
    await params.within?.(trx, change);
    return { ...toApiKeySummary(row), userId: row.user_id, changed: true };
  });
  if (result.changed) forgetKeysLocally();
  return result;
}

/** The audit record's details of a change (the admin API's and the CLI's): by key id, no name. */
export function keyChangeDetails(change: ApiKeyChange): Record<string, unknown> {
  return {
    keyId: change.keyId,
    ...(change.spendLimitUsd ? { spendLimitUsd: change.spendLimitUsd } : {}),
    ...(change.allowedModels ? { allowedModels: change.allowedModels } : {}),
  };
}

function sameLimit(a: string | null, b: string | null): boolean {
  if (a === null || b === null) return a === b;
  // Compared as amounts: "20" and "20.00" are one limit.
  return new Decimal(a).eq(b);
}

function sameModels(a: string[] | null, b: string[] | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.every((model, i) => model === b[i]);
}
