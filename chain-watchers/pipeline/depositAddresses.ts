import { sql, type Kysely } from 'kysely';
import { parseAccountKey } from '../addresses/accountKey.js';
import { deriveEvmAddress } from '../addresses/deriveEvmAddress.js';
import { deriveTronAddress } from '../addresses/deriveTronAddress.js';
import type { WatcherTables } from './tables.js';

export type AddressFamily = 'evm' | 'tron';

export interface DepositAddress {
  family: AddressFamily;
  /** Canonical form: EVM lower-case 0x hex, Tron base58. */
  address: string;
  derivationPath: string;
  derivationIndex: number;
}

export interface Xpubs {
  evmXpub?: string | undefined;
  tronXpub?: string | undefined;
  /** Keys addresses were assigned under before a rotation (`wallets.retiredXpubs`). */
  retiredXpubs?: readonly string[] | undefined;
}

/**
 * The configured xpub does not derive the last address assigned in its family, and no retired
 * xpub does either: the key changed since (a wrong xpub in the config, another wallet's, or
 * two processes configured with different keys). No new address is assigned: it would be one
 * the wallet behind the previous addresses may not control. The message is for operators: it
 * names an assigned address, so it is logged, never shown to a user.
 */
export class DepositKeyMismatchError extends Error {
  readonly code = 'deposit_key_mismatch';
  constructor(
    readonly family: AddressFamily,
    readonly lastAssigned: { address: string; derivationPath: string; derivationIndex: number },
  ) {
    super(
      `wallets.${family}Xpub does not derive the last ${family} deposit address assigned (${lastAssigned.address}, index ${lastAssigned.derivationIndex}, ${lastAssigned.derivationPath}), and no xpub in wallets.retiredXpubs does: the key changed since it was assigned. No new ${family} address is given out. Restore the xpub it was assigned under; or, if you rotated the key on purpose, add the previous xpub to wallets.retiredXpubs (docs/operating.md, rotating keys)`,
    );
    this.name = 'DepositKeyMismatchError';
  }
}

function derive(family: AddressFamily, xpub: string, index: number): DerivedAddress {
  const derived = family === 'evm' ? deriveEvmAddress(xpub, index) : deriveTronAddress(xpub, index);
  return {
    address: family === 'evm' ? derived.address.toLowerCase() : derived.address,
    derivationPath: derived.derivationPath,
  };
}

interface DerivedAddress {
  /** Canonical form. */
  address: string;
  derivationPath: string;
}

/**
 * Throws DepositKeyMismatchError unless the family's last assigned address (the highest
 * index) derives from `xpub` or a retired xpub. Checked before each new assignment, so a
 * changed key is caught before the first address under it is handed out.
 */
async function checkDepositKey(
  db: Kysely<WatcherTables>,
  family: AddressFamily,
  xpub: string,
  retired: readonly string[],
): Promise<void> {
  const last = await db
    .selectFrom('deposit_addresses')
    .select(['address', 'derivation_path', 'derivation_index'])
    .where('family', '=', family)
    .orderBy('derivation_index', 'desc')
    .limit(1)
    .executeTakeFirst();
  if (!last) return;
  if (derive(family, xpub, last.derivation_index).address === last.address) return;
  for (const candidate of retired) {
    try {
      if (derive(family, candidate, last.derivation_index).address === last.address) return;
    } catch {
      // A retired entry that is not an xpub derives nothing.
    }
  }
  throw new DepositKeyMismatchError(family, {
    address: last.address,
    derivationPath: last.derivation_path,
    derivationIndex: last.derivation_index,
  });
}

/**
 * The user's deposit address of a chain family, assigned on first request: the family's next
 * index (one past the highest assigned), derived from the configured xpub (no private key
 * involved).
 * Asking again returns the same address. A new address is assigned only while the family's
 * last assigned address derives from the configured xpub or a retired one
 * (DepositKeyMismatchError otherwise).
 */
export async function assignDepositAddress(
  db: Kysely<WatcherTables>,
  params: { userId: string; family: AddressFamily; xpubs: Xpubs },
): Promise<DepositAddress> {
  const existing = await findDepositAddress(db, params.userId, params.family);
  if (existing) return existing;
  const xpub = params.family === 'evm' ? params.xpubs.evmXpub : params.xpubs.tronXpub;
  if (!xpub)
    throw new Error(`no ${params.family} xpub is configured (wallets.${params.family}Xpub)`);
  // A key that does not parse fails here, before anything is locked.
  parseAccountKey(xpub, params.family);
  // Indexes are handed out in order, without gaps: a gap a wallet restored from the mnemonic
  // may stop scanning at (BIP-44's gap limit is 20). Two first requests for the same user (two
  // tabs, two processes) queue on the user's row, and the second finds the first's address;
  // first requests of different users queue on the family's lock, held to commit, and each
  // takes one past the highest index assigned. One that fails or dies before its commit takes
  // nothing (as a sequence would: it never gives a number back).
  return db.transaction().execute(async (trx) => {
    await trx
      .selectFrom('users')
      .select('id')
      .where('id', '=', params.userId)
      .forNoKeyUpdate()
      .execute();
    const assigned = await findDepositAddress(trx, params.userId, params.family);
    if (assigned) return assigned;
    await sql`select pg_advisory_xact_lock(hashtext(${`lingxi:deposit-index:${params.family}`}))`.execute(
      trx,
    );
    // Under the lock: the last address assigned is the one the next index follows.
    await checkDepositKey(trx, params.family, xpub, params.xpubs.retiredXpubs ?? []);
    const { rows } = await sql<{ index: number }>`
      select coalesce(max(derivation_index), -1) + 1 as index
        from deposit_addresses where family = ${params.family}`.execute(trx);
    const index = rows[0]!.index;
    const derived = derive(params.family, xpub, index);
    await trx
      .insertInto('deposit_addresses')
      .values({
        user_id: params.userId,
        family: params.family,
        derivation_index: index,
        derivation_path: derived.derivationPath,
        address: derived.address,
      })
      .execute();
    return {
      family: params.family,
      address: derived.address,
      derivationPath: derived.derivationPath,
      derivationIndex: index,
    };
  });
}

export async function findDepositAddress(
  db: Kysely<WatcherTables>,
  userId: string,
  family: AddressFamily,
): Promise<DepositAddress | null> {
  const row = await db
    .selectFrom('deposit_addresses')
    .select(['family', 'address', 'derivation_path', 'derivation_index'])
    .where('user_id', '=', userId)
    .where('family', '=', family)
    .executeTakeFirst();
  return row
    ? {
        family: row.family,
        address: row.address,
        derivationPath: row.derivation_path,
        derivationIndex: row.derivation_index,
      }
    : null;
}

/** Every assigned address of a family, to the user it belongs to. */
export async function watchedAddresses(
  db: Kysely<WatcherTables>,
  family: AddressFamily,
): Promise<Map<string, string>> {
  const rows = await db
    .selectFrom('deposit_addresses')
    .select(['address', 'user_id'])
    .where('family', '=', family)
    .execute();
  return new Map(rows.map((row) => [row.address, row.user_id]));
}
