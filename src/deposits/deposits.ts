import type { Kysely } from 'kysely';
import { getAddress } from 'viem';
import {
  assignDepositAddress,
  DepositKeyMismatchError,
  type AddressFamily,
} from '../../chain-watchers/pipeline/depositAddresses.js';
import type { WatcherTables } from '../../chain-watchers/pipeline/tables.js';
import { AddressDerivationError } from '../../chain-watchers/addresses/errors.js';
import type { Config } from '../config/schema.js';
import type { Database } from '../db/schema.js';
import { AppError, badRequest } from '../errors.js';
import type { Logger } from '../log.js';

export interface DepositAddressView {
  network: string;
  /** Null when deposits on this network cannot be served (see `unavailable`). */
  address: string | null;
  derivationPath: string | null;
  assets: Array<{ symbol: string; contract: string | null; decimals: number; minDeposit: string }>;
  confirmations: string;
  /**
   * Null when the address is served; else why not, as an error names it (`code`
   * `deposits_not_configured`: no xpub for the network's family; `deposit_key_mismatch`:
   * the configured xpub is not the key the family's last address was assigned under;
   * `deposit_key_invalid`: the configured xpub is not a usable xpub). The other networks are
   * served all the same.
   */
  unavailable: { code: string; message: string } | null;
}

/**
 * The user's deposit address on every configured network (one EVM address serves all EVM
 * networks), assigned on first request. `form: 'canonical'` (the default) gives addresses as
 * stored and as the watchers and ledger accounts name them (EVM lower-case); `form: 'display'`
 * gives what a user copies into a wallet: EVM addresses with their EIP-55 checksum (mixed
 * case), so a wallet catches a mistyped or altered character. Tron base58 is the same in both.
 * A network whose family has no xpub configured is listed with `address: null` and
 * `unavailable` saying so: one missing xpub does not hide the other networks' addresses.
 * So is a family whose configured xpub does not derive the last address assigned in it (the
 * key changed: DepositKeyMismatchError, logged for the operator): a user who has no address
 * there yet is given none; and a family whose configured xpub does not parse (logged too).
 */
export async function getDepositAddresses(
  db: Kysely<Database>,
  config: Config,
  userId: string,
  options: { form?: 'canonical' | 'display'; logger?: Logger } = {},
): Promise<DepositAddressView[]> {
  const watcherDb = db as unknown as Kysely<WatcherTables>;
  const byFamily = new Map<
    AddressFamily,
    { address: string; derivationPath: string } | DepositKeyMismatchError | AddressDerivationError
  >();
  const views: DepositAddressView[] = [];
  for (const network of config.networks) {
    const family: AddressFamily = network.kind === 'evm' ? 'evm' : 'tron';
    const xpub = family === 'evm' ? config.wallets.evmXpub : config.wallets.tronXpub;
    const assets = network.assets.map((a) => ({
      symbol: a.symbol,
      contract: a.contract ?? null,
      decimals: a.decimals,
      minDeposit: a.minDeposit,
    }));
    const confirmations = String(network.confirmations);
    // A network whose address cannot be given: no address, and why.
    const unavailable = (code: string, message: string) =>
      views.push({
        network: network.name,
        address: null,
        derivationPath: null,
        assets,
        confirmations,
        unavailable: { code, message },
      });
    if (!xpub) {
      unavailable(
        'deposits_not_configured',
        `deposits on ${network.name} are not configured (no wallets.${family}Xpub)`,
      );
      continue;
    }
    let address = byFamily.get(family);
    if (!address) {
      try {
        address = await assignDepositAddress(watcherDb, { userId, family, xpubs: config.wallets });
      } catch (error) {
        if (error instanceof DepositKeyMismatchError) {
          options.logger?.error({ err: error, code: error.code, family }, error.message);
        } else if (error instanceof AddressDerivationError) {
          // The message never repeats the key: safe to log.
          options.logger?.error(
            { code: error.code, family, field: `wallets.${family}Xpub` },
            `wallets.${family}Xpub cannot be used: ${error.message} (lingxi doctor checks it)`,
          );
        } else throw error;
        address = error;
      }
      byFamily.set(family, address);
    }
    if (address instanceof DepositKeyMismatchError || address instanceof AddressDerivationError) {
      unavailable(
        address instanceof DepositKeyMismatchError ? address.code : 'deposit_key_invalid',
        `deposits on ${network.name} are unavailable at the moment: the operator has been told`,
      );
      continue;
    }
    views.push({
      network: network.name,
      address:
        family === 'evm' && options.form === 'display'
          ? getAddress(address.address)
          : address.address,
      derivationPath: address.derivationPath,
      assets,
      confirmations,
      unavailable: null,
    });
  }
  return views;
}

/** 503 `deposits_not_configured`: why a network's address is unavailable, as an error to throw. */
export function depositsUnavailable(view: DepositAddressView): AppError {
  return new AppError(
    view.unavailable?.code ?? 'deposits_not_configured',
    view.unavailable?.message ?? `deposits on ${view.network} are not available`,
    { status: 503 },
  );
}

export interface DepositView {
  id: string;
  network: string;
  asset: string | null;
  amount: string | null;
  txHash: string;
  logIndex: number;
  blockNumber: string;
  confirmations: number;
  confirmationsRequired: string;
  status: string;
  amountUsd: string | null;
  rate: string | null;
  rateSource: string | null;
  ignoreReason: string | null;
  firstSeenAt: string;
  creditedAt: string | null;
}

/**
 * Whether `cursor` is one listDeposits gives out (`nextCursor`). Opaque to callers; it is the
 * last id of the previous page.
 */
export function isDepositCursor(cursor: string): boolean {
  return /^\d{1,18}$/.test(cursor);
}

/**
 * Whether a network name means anything to a deposit listing: one in the config, or one that
 * some deposit is on (a network taken out of the config keeps its deposits).
 */
export async function isDepositNetwork(
  db: Kysely<Database>,
  config: Pick<Config, 'networks'>,
  network: string,
): Promise<boolean> {
  if (config.networks.some((n) => n.name === network)) return true;
  const row = await db
    .selectFrom('deposits')
    .select('id')
    .where('network', '=', network)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Deposits, newest first by id (unique, given out in insert order), `limit`
 * a page; `cursor` is the previous page's `nextCursor`, null after the last page. Paging on
 * from a cursor never repeats or skips a row: deposits that arrive meanwhile sort before it.
 */
export async function listDeposits(
  db: Kysely<Database>,
  params: { userId?: string; network?: string; limit?: number; cursor?: string | null },
): Promise<{ data: DepositView[]; nextCursor: string | null }> {
  const limit = Math.min(Math.max(params.limit ?? 50, 1), 200);
  if (params.cursor && !isDepositCursor(params.cursor))
    throw badRequest('cursor is not one this API gave out', 'cursor');
  let query = db
    .selectFrom('deposits')
    .selectAll()
    .orderBy('id', 'desc')
    .limit(limit + 1);
  if (params.userId) query = query.where('user_id', '=', params.userId);
  if (params.network) query = query.where('network', '=', params.network);
  if (params.cursor) query = query.where('id', '<', params.cursor);
  const rows = await query.execute();
  const data = rows.slice(0, limit).map((row) => ({
    id: row.id,
    network: row.network,
    asset: row.asset,
    amount: row.amount,
    txHash: row.tx_hash,
    logIndex: row.log_index,
    blockNumber: row.block_number,
    confirmations: row.confirmations,
    confirmationsRequired: row.confirmations_required,
    status: row.status,
    amountUsd: row.amount_usd,
    rate: row.rate,
    rateSource: row.rate_source,
    ignoreReason: row.ignore_reason,
    firstSeenAt: row.first_seen_at.toISOString(),
    creditedAt: row.credited_at ? new Date(row.credited_at).toISOString() : null,
  }));
  return { data, nextCursor: rows.length > limit ? data[data.length - 1]!.id : null };
}
