import { sql, type Kysely } from 'kysely';
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
}

/**
 * The user's deposit address of a chain family, assigned on first request: the next index
 * of that family's sequence, derived from the configured xpub (no private key involved).
 * Asking again returns the same address.
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
  const sequence = params.family === 'evm' ? 'deposit_index_evm' : 'deposit_index_tron';
  const { rows } = await sql<{ index: string }>`select nextval(${sequence}) as index`.execute(db);
  const index = Number(rows[0]!.index);
  const derived =
    params.family === 'evm' ? deriveEvmAddress(xpub, index) : deriveTronAddress(xpub, index);
  await db
    .insertInto('deposit_addresses')
    .values({
      user_id: params.userId,
      family: params.family,
      derivation_index: index,
      derivation_path: derived.derivationPath,
      address: params.family === 'evm' ? derived.address.toLowerCase() : derived.address,
    })
    // Two first requests at once: one wins, the other returns the winner's address.
    .onConflict((oc) => oc.columns(['user_id', 'family']).doNothing())
    .execute();
  return (await findDepositAddress(db, params.userId, params.family))!;
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
