import { Kysely, PostgresDialect } from 'kysely';
import type { QueryResult } from 'pg';
import { mnemonicToAccountXpubs } from '../../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { networkSchema, type TronNetworkConfig } from '../../../chain-watchers/config.js';
import { createPriceSources } from '../../../chain-watchers/pipeline/createWatcher.js';
import { assignDepositAddress } from '../../../chain-watchers/pipeline/depositAddresses.js';
import { DepositWatcher } from '../../../chain-watchers/pipeline/depositWatcher.js';
import type { WatcherTables } from '../../../chain-watchers/pipeline/tables.js';
import {
  createTronAdapter,
  type TronAdapter,
  type TronAdapterOptions,
} from '../../../chain-watchers/tron/createTronAdapter.js';
import { Decimal, type PostgresLedger } from '../../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../db.js';
import { openLedger } from '../ledger.js';
import { MAINNET_USDT } from './chain.js';
import { startTronSimulator, type TronSimulator } from './server.js';

/** The account xpubs behind the deposit addresses (test mnemonic: no funds). */
export const DEPOSIT_XPUBS = mnemonicToAccountXpubs(
  'test test test test test test test test test test test junk',
);

/** A logger that says nothing. */
export const quiet = { debug() {}, info() {}, warn() {}, error() {} };

/** Adapter options for the simulator: no rate limit to speak of, short retry delays. */
export const FAST_TRON_ADAPTER: TronAdapterOptions = {
  requestsPerSecond: 1000,
  retryBaseDelayMs: 5,
  retryMaxDelayMs: 50,
  // The simulator's refusals say "suspended for 1s": tests that do not test it need not wait.
  retryAfterMaxMs: 50,
};

/**
 * The raw `networks[]` entry of a Tron network on the simulator at `fullHost` (USDT at $1),
 * before validation: for `parseConfig`. `overrides` replace or add fields.
 */
export function tronNetworkFields(
  fullHost: string,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    kind: 'tron',
    name: 'tron',
    confirmations: 'solidified',
    fullHost,
    rpcTimeoutMs: 2000,
    rpcRetries: 2,
    assets: [{ symbol: 'USDT', contract: MAINNET_USDT, decimals: 6, price: { fixed: '1' } }],
    ...overrides,
  };
}

/** The same network, validated. */
export function tronNetwork(
  fullHost: string,
  overrides: Record<string, unknown> = {},
): TronNetworkConfig {
  return networkSchema.parse(tronNetworkFields(fullHost, overrides)) as TronNetworkConfig;
}

export interface TronWatcherStackOptions {
  /** The simulator's solidity lag. */
  solidityLag: number;
  /** The sender's TRX balance (sun); it also gets 10^15 USDT base units. */
  senderTrx: bigint;
  /** Fields every `network()` of the test has (over the defaults, under its own overrides). */
  network?: () => Record<string, unknown>;
  /** Adapter options over `FAST_TRON_ADAPTER`. */
  adapterOptions?: TronAdapterOptions;
}

/**
 * The TronGrid simulator, a ledger on a fresh test database, a funded `sender` and what the
 * watcher tests build on them: networks starting at the head, watchers (Tron adapter and
 * DepositWatcher), users with a Tron deposit address. No block is produced.
 */
export interface TronWatcherStack {
  sim: TronSimulator;
  database: TestDatabase;
  ledger: PostgresLedger;
  db: Kysely<WatcherTables>;
  sender: string;
  /** A network starting at the current head. */
  network(overrides?: Record<string, unknown>): TronNetworkConfig;
  /** A watcher on `config` with an adapter of its own (closed by `close`). */
  watcher(config?: TronNetworkConfig): DepositWatcher;
  /** A new user and their Tron deposit address. */
  newUser(telegramId: number): Promise<{ id: string; address: string }>;
  /** The `deposits` rows of `txId` (`columns` of them), untyped as `pool.query` gives them. */
  depositRows(txId: string, columns: string): Promise<QueryResult['rows']>;
  /** An account's posted balance as a string; '0' for an account never used. */
  posted(account: string): Promise<string>;
  close(): Promise<void>;
}

export async function startTronWatcherStack(
  options: TronWatcherStackOptions,
): Promise<TronWatcherStack> {
  const sim = await startTronSimulator({ chainOptions: { solidityLag: options.solidityLag } });
  const database = await createTestDatabase();
  const ledger = await openLedger(database.pool);
  await database.pool.query(
    `insert into ledger_currencies (code, scale) values ('TRX', 6) on conflict do nothing`,
  );
  await ledger.init();
  const db = new Kysely<WatcherTables>({
    dialect: new PostgresDialect({ pool: database.newPool(2) }),
  });
  const sender = sim.chain.account('sender');
  sim.chain.mintToken(sim.chain.usdt, sender, 10n ** 15n);
  sim.chain.setTrxBalance(sender, options.senderTrx);

  const adapters: TronAdapter[] = [];
  const network = (overrides: Record<string, unknown> = {}) =>
    tronNetwork(sim.url, {
      startBlock: sim.chain.headNumber,
      ...options.network?.(),
      ...overrides,
    });
  return {
    sim,
    database,
    ledger,
    db,
    sender,
    network,
    watcher(config = network()) {
      const adapter = createTronAdapter(config, {
        ...FAST_TRON_ADAPTER,
        ...options.adapterOptions,
        logger: quiet,
      });
      adapters.push(adapter);
      return new DepositWatcher({
        network: config,
        adapter,
        ledger,
        pool: database.pool,
        priceSources: createPriceSources(config, new Map([[config.name, adapter]])),
        logger: quiet,
      });
    },
    async newUser(telegramId) {
      const { rows } = await database.pool.query<{ id: string }>(
        'insert into users (telegram_id) values ($1) returning id',
        [telegramId],
      );
      const id = rows[0]!.id;
      const { address } = await assignDepositAddress(db, {
        userId: id,
        family: 'tron',
        xpubs: DEPOSIT_XPUBS,
      });
      return { id, address };
    },
    async depositRows(txId, columns) {
      const { rows } = await database.pool.query(
        `select ${columns} from deposits where tx_hash = $1`,
        [txId],
      );
      return rows;
    },
    async posted(account) {
      return (
        (await ledger.getBalance(account).catch(() => null))?.posted ?? new Decimal(0)
      ).toString();
    },
    async close() {
      for (const adapter of adapters) await adapter.close();
      await db.destroy();
      await ledger.close();
      await database.drop();
      await sim.close();
    },
  };
}
