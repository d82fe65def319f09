/**
 * bench:watcher: a ganache chain with a backlog of 10,000 blocks holding 5,000 USDT deposits
 * to 1,000 users; the watcher catches up from the first block (blocks/s, deposits credited/s),
 * then follows new blocks in steady state: detection latency = time from the block that gives
 * a deposit its required depth to the deposit being credited (committed).
 * Uses DATABASE_URL's server (default: the local PostgreSQL at 127.0.0.1:5432).
 */
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Address } from 'viem';
import { mnemonicToAccountXpubs } from '../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { networkSchema, type EvmNetworkConfig } from '../chain-watchers/config.js';
import { createEvmAdapter } from '../chain-watchers/evm/createEvmAdapter.js';
import { createPriceSources } from '../chain-watchers/pipeline/createWatcher.js';
import { assignDepositAddress } from '../chain-watchers/pipeline/depositAddresses.js';
import { DepositWatcher } from '../chain-watchers/pipeline/depositWatcher.js';
import { runWatcher } from '../chain-watchers/pipeline/runWatcher.js';
import type { WatcherTables } from '../chain-watchers/pipeline/tables.js';
import { PostgresLedger } from '../ledger/index.js';
import { startDevnet } from '../test/support/evm/devnet.js';
import { fmt, freshDatabase, percentile } from './support.js';

const USERS = 1_000;
const DEPOSITS = 5_000;
const BLOCKS = 10_000;
const PER_TX = 50;
const CONFIRMATIONS = 12;
const POLL_MS = 1_000;
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

const devnet = await startDevnet();
const url = await freshDatabase('lingxi_bench_watcher');
const pool = new pg.Pool({ connectionString: url, max: 10 });
const ledger = new PostgresLedger({
  pool,
  currencies: [
    { code: 'USD', scale: 18 },
    { code: 'USDT', scale: 6 },
  ],
});
await ledger.init();
const db = new Kysely<WatcherTables>({ dialect: new PostgresDialect({ pool }) });

console.error(`deriving ${USERS} deposit addresses...`);
const xpubs = mnemonicToAccountXpubs('test test test test test test test test test test test junk');
const addresses: Address[] = [];
for (let i = 0; i < USERS; i += 1) {
  const { rows } = await pool.query<{ id: string }>(
    'insert into users (telegram_id) values ($1) returning id',
    [100_000 + i],
  );
  addresses.push(
    (await assignDepositAddress(db, { userId: rows[0]!.id, family: 'evm', xpubs }))
      .address as Address,
  );
}

console.error(`building a backlog of ${BLOCKS} blocks with ${DEPOSITS} deposits...`);
const usdt = await devnet.deployToken(6, { symbol: 'USDT' });
const funder = devnet.account(0);
await devnet.mint(usdt, funder.address, 10n ** 15n);
const startBlock = (await devnet.blockNumber()) + 1n;
const transactions = DEPOSITS / PER_TX;
const gap = Math.floor(BLOCKS / transactions) - 1;
for (let t = 0; t < transactions; t += 1) {
  const transfers = Array.from({ length: PER_TX }, (_, k) => ({
    to: addresses[(t * PER_TX + k) % USERS]!,
    amountBaseUnits: 1_000_000n + BigInt(k),
  }));
  await devnet.transferTokenMany(usdt, funder, transfers);
  await devnet.mine(gap);
}
const backlogHead = await devnet.blockNumber();
await devnet.mine(CONFIRMATIONS);

const config = networkSchema.parse({
  kind: 'evm',
  name: 'devnet',
  chainId: 1337,
  rpcUrls: [devnet.url],
  confirmations: CONFIRMATIONS,
  pollIntervalMs: POLL_MS,
  maxBlockRange: 2_000,
  startBlock: Number(startBlock),
  assets: [{ symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } }],
}) as EvmNetworkConfig;
const adapter = createEvmAdapter(config, { logger: quiet });
const watcher = new DepositWatcher({
  network: config,
  adapter,
  ledger,
  pool,
  priceSources: createPriceSources(config, new Map([['devnet', adapter]])),
  logger: quiet,
});

console.error('catching up...');
const started = performance.now();
let iterations = 0;
for (;;) {
  iterations += 1;
  const report = await watcher.runOnce();
  if (report.caughtUp) break;
}
const catchUpS = (performance.now() - started) / 1000;
const credited = Number(
  (await pool.query<{ n: string }>(`select count(*) as n from deposits where status = 'credited'`))
    .rows[0]!.n,
);
const blocksScanned = Number(backlogHead - startBlock) + 1 + CONFIRMATIONS;

console.error('steady state...');
const controller = new AbortController();
const loop = runWatcher(watcher, { pool, signal: controller.signal, logger: quiet });
const latencies: number[] = [];
for (let i = 0; i < 15; i += 1) {
  const sent = await devnet.transferToken(usdt, funder, addresses[i]!, 2_000_000n);
  // One block a second, like a fast chain; the deposit reaches its depth with the 11th after it.
  let depthReachedAt = 0;
  for (let b = 1; b < CONFIRMATIONS; b += 1) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    await devnet.mine(1);
    if (b === CONFIRMATIONS - 1) depthReachedAt = Date.now();
  }
  for (;;) {
    const { rows } = await pool.query<{ credited_at: Date | null }>(
      `select credited_at from deposits where tx_hash = $1`,
      [sent.txHash],
    );
    if (rows[0]?.credited_at) {
      latencies.push(rows[0].credited_at.getTime() - depthReachedAt);
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
controller.abort();
await loop;
latencies.sort((a, b) => a - b);

console.log(`| measure | value |`);
console.log(`|---|---:|`);
console.log(`| backlog | ${blocksScanned} blocks, ${DEPOSITS} deposits to ${USERS} users |`);
console.log(`| catch-up time | ${fmt(catchUpS, 1)} s (${iterations} iterations) |`);
console.log(`| blocks/s | ${fmt(blocksScanned / catchUpS, 0)} |`);
console.log(`| deposits credited/s | ${fmt(credited / catchUpS, 0)} (${credited} credited) |`);
console.log(
  `| steady-state latency p50 / max (poll ${POLL_MS} ms) | ${fmt(percentile(latencies, 0.5), 0)} ms / ${fmt(latencies[latencies.length - 1]!, 0)} ms |`,
);

await adapter.close();
await db.destroy();
await ledger.close();
await devnet.close();
