import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { badRequest } from '../errors.js';
import { forgetKeysLocally, notifyKeyChangeOnCommit } from '../keys/apiKeys.js';
import { unstorableText } from '../text.js';
import { userErased } from '../users/createUser.js';
import { readUser, toAdminView, type AdminUserView } from './profile.js';

export interface SetSuspensionParameters {
  userId: string;
  suspended: boolean;
  reason: unknown;
  now: Date;
}

export interface SetSuspensionResult {
  user: AdminUserView;
  /** False when the user already was in the asked state (nothing written). */
  changed: boolean;
}

/**
 * Suspends or reinstates a user. A suspension stops the user's keys and sessions at once:
 * sessions are checked against the user row on every request, and NOTIFY lingxi_keys (sent in
 * the suspension's transaction, so delivered exactly when it commits) empties every process's
 * key cache. Nothing is revoked, so reinstating brings them back. An erased
 * user cannot be suspended or reinstated (409 `user_erased`).
 */
export async function setSuspension(
  db: Kysely<Database>,
  params: SetSuspensionParameters,
): Promise<SetSuspensionResult> {
  const { reason } = params;
  if (typeof reason !== 'string' || reason.trim() === '' || reason.length > 500)
    throw badRequest('reason must be a text of 1-500 characters', 'reason');
  const problem = unstorableText(reason);
  if (problem !== null) throw badRequest(`reason ${problem}`, 'reason');
  const current = await readUser(db, params.userId);
  if (current.status === 'erased') throw userErased('there is nothing to suspend');
  const from = params.suspended ? 'active' : 'suspended';
  // The NOTIFY goes in the update's transaction: delivered exactly when the change commits.
  const updated = await db.transaction().execute(async (trx) => {
    const row = await trx
      .updateTable('users')
      .set(
        params.suspended
          ? {
              status: 'suspended',
              suspended_at: params.now,
              suspension_reason: reason.trim(),
              updated_at: params.now,
            }
          : {
              status: 'active',
              suspended_at: null,
              suspension_reason: null,
              updated_at: params.now,
            },
      )
      .where('id', '=', params.userId)
      .where('status', '=', from)
      .returningAll()
      .executeTakeFirst();
    if (row) await notifyKeyChangeOnCommit(trx);
    return row;
  });
  if (!updated) {
    const now = await readUser(db, params.userId);
    if (now.status === 'erased') throw userErased('there is nothing to suspend');
    return { user: toAdminView(now), changed: false };
  }
  forgetKeysLocally();
  return { user: toAdminView(updated), changed: true };
}
