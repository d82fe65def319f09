/**
 * `npm run demo` / `lingxi demo`: the whole system on one machine, nothing to configure.
 * Embedded PostgreSQL (or DATABASE_URL), an in-process EVM devnet (ganache), the TronGrid
 * simulator and a local model stub; every role (http, watchers, cron) starts on them; a
 * user tops up with USDT and ETH on the devnet and USDT on Tron, calls the API with the
 * official openai SDK, and the books are reconciled and exported for hledger.
 *
 * Development tool only: it uses the test fixtures (devnet, simulator, stub) and is never
 * part of the production build or roles.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import OpenAI from 'openai';
import type { Kysely } from 'kysely';
import pg from 'pg';
import type { Address } from 'viem';
import { mnemonicToAccountXpubs } from '../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { Decimal } from '../ledger/index.js';
import { createSession } from '../src/auth/sessions.js';
import { getUserBalance } from '../src/billing/getUserBalance.js';
import { parseConfig } from '../src/config/load.js';
import { getDepositAddresses, listDeposits } from '../src/deposits/deposits.js';
import { writeChunksToFile } from '../src/exports/sinks.js';
import { streamJournal } from '../src/exports/streamJournal.js';
import { createApiKey } from '../src/keys/apiKeys.js';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import type { Database } from '../src/db/schema.js';
import { runReconciliation } from '../src/reconcile/runReconciliation.js';
import { startRoles, type StartedRoles } from '../src/roles/start.js';
import { createUser } from '../src/users/createUser.js';
import { startDevnet, type Devnet } from '../test/support/evm/devnet.js';
import { startTronSimulator, type TronSimulator } from '../test/support/tron-sim/server.js';
import { MAINNET_USDT } from '../test/support/tron-sim/chain.js';
import { startUpstreamStub, type UpstreamStub } from '../test/support/upstream-stub.js';
import { createNarrator, type Narrator } from './narrate.js';

export interface DemoOptions {
  /** Non-interactive: run every step, print a JSON summary, stop everything, exit. */
  ci: boolean;
  /** HTTP port (default 8080; 0 picks a free one). */
  port?: number;
  /** Where the demo keeps its embedded database and export (default ./data/demo). */
  dataDir?: string;
  write?: (text: string) => void;
}

export interface DemoSummary {
  dashboardUrl: string;
  userId: string;
  apiKey: string;
  depositAddresses: Array<{ network: string; address: string }>;
  deposits: Array<{
    network: string;
    asset: string | null;
    amount: string | null;
    status: string;
    amountUsd: string | null;
  }>;
  balanceAfterDeposits: string;
  calls: Array<{ kind: string; costUsd: string }>;
  balance: { available: string; posted: string; held: string };
  reconciliation: { runId: string; status: string; findings: number };
  export: {
    file: string;
    hledgerCheck: 'passed' | 'failed' | 'hledger not installed';
    output?: string;
  };
}

const MNEMONIC = 'test test test test test test test test test test test junk';
const ETH_USD = 312_345_678_901n; // 3123.45678901 with 8 decimals

export async function runDemo(
  options: DemoOptions,
): Promise<{ summary: DemoSummary; stop(): Promise<void> }> {
  const say = createNarrator({
    interactive: !options.ci && process.stdout.isTTY === true,
    write: options.write ?? ((t) => process.stdout.write(t)),
  });
  const dataDir = resolve(options.dataDir ?? 'data/demo');
  mkdirSync(dataDir, { recursive: true });
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stops.splice(0).reverse()) await stop().catch(() => {});
  };
  try {
    const devnet = await say.step('Starting an EVM devnet (ganache, in this process)', async () => {
      const chain = await startDevnet();
      stops.push(() => chain.close());
      return chain;
    });
    const { usdt, feed } = await say.step(
      'Deploying USDT (6 decimals) and an ETH/USD price feed on it',
      () => deployEvmAssets(devnet),
    );
    const tron = await say.step('Starting the TronGrid simulator', async () => {
      const sim = await startTronSimulator({ chainOptions: { solidityLag: 4 } });
      stops.push(() => sim.close());
      return sim;
    });
    const stub = await say.step(
      'Starting a local model provider (deterministic stub)',
      async () => {
        const s = await startUpstreamStub({ apiKey: 'demo-upstream-key' });
        stops.push(() => s.close());
        return s;
      },
    );

    const databaseUrl = await say.step('Preparing a fresh database for the demo', () =>
      freshDemoDatabase(dataDir, stops),
    );
    const xpubs = mnemonicToAccountXpubs(MNEMONIC);
    const config = parseConfig({
      http: { host: '127.0.0.1', port: options.port ?? 8080 },
      database: { url: databaseUrl },
      log: { level: 'error' },
      adminToken: `demo-admin-${Math.random().toString(36).slice(2)}-token`,
      // The dashboard's dev form: the demo runs on loopback and has no Telegram bot.
      telegram: { devSignIn: true },
      providers: [
        { name: 'stub', baseUrl: stub.url, apiKey: 'demo-upstream-key', timeoutMs: 10_000 },
      ],
      models: [
        {
          id: 'gpt-4o-mini',
          provider: 'stub',
          upstreamModel: 'gpt-4o-mini',
          pricePer1M: { input: '0.15', cachedInput: '0.075', output: '0.6' },
          maxOutputTokensDefault: 256,
        },
        {
          id: 'text-embedding-3-small',
          provider: 'stub',
          upstreamModel: 'text-embedding-3-small',
          kind: 'embedding',
          pricePer1M: { input: '0.02', output: '0' },
        },
      ],
      wallets: xpubs,
      networks: [
        {
          kind: 'evm',
          name: 'devnet',
          chainId: 1337,
          rpcUrls: [devnet.url],
          confirmations: 3,
          pollIntervalMs: 400,
          assets: [
            { symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } },
            {
              symbol: 'ETH',
              native: true,
              decimals: 18,
              price: { chainlink: { network: 'devnet', feed, maxAgeS: 86_400 } },
            },
          ],
        },
        {
          kind: 'tron',
          name: 'tron-sim',
          fullHost: tron.url,
          confirmations: 'solidified',
          pollIntervalMs: 400,
          assets: [{ symbol: 'USDT', contract: MAINNET_USDT, decimals: 6, price: { fixed: '1' } }],
        },
      ],
    });
    const roles: StartedRoles = await say.step(
      'Starting every role: http, a watcher per network, cron',
      async () => {
        const started = await startRoles({
          loaded: { config, file: null },
          roles: { http: true, watchers: 'all', cron: true },
          ...(options.port !== undefined ? { port: options.port } : {}),
        });
        stops.push(() => started.stop());
        return started;
      },
    );
    const { runtime } = roles;
    const { db } = runtime.database;
    const dashboardUrl = roles.http!.url;

    const user = await say.step('Creating a user', () =>
      createUser(db, { telegramId: 424242, username: 'demo_user' }),
    );
    const addresses = await say.step("Assigning the user's deposit addresses", () =>
      getDepositAddresses(db, config, user.id),
    );
    for (const a of addresses)
      say.detail(
        `${a.network.padEnd(9)} ${a.address}  (${a.derivationPath}; ${a.assets.map((x) => x.symbol).join(', ')})`,
      );
    const evmAddress = addresses.find((a) => a.network === 'devnet')!.address as Address;
    const tronAddress = addresses.find((a) => a.network === 'tron-sim')!.address!;

    await say.step('Sending 100 USDT and 0.05 ETH on the devnet, 50 USDT on Tron', async () => {
      const funder = devnet.account(0);
      await devnet.transferToken(usdt, funder, evmAddress, 100_000_000n);
      await devnet.sendEth(funder, evmAddress, 50_000_000_000_000_000n);
      const sender = tron.chain.account('demo-sender');
      tron.chain.mintToken(tron.chain.usdt, sender, 1_000_000_000n);
      tron.chain.setTrxBalance(sender, 1_000_000_000n);
      tron.chain.transferToken({
        token: tron.chain.usdt,
        from: sender,
        to: tronAddress,
        amount: 50_000_000n,
      });
      tron.chain.produceBlocks(1);
    });

    // Blocks keep coming, as on a real chain, until the demo stops (paused while reconciling).
    let producing = true;
    const producer = setInterval(() => {
      if (!producing) return;
      void devnet.mine(1).catch(() => {});
      tron.chain.produceBlocks(1);
    }, 400);
    stops.push(async () => clearInterval(producer));

    const deposits = await say.progress('Waiting for confirmations', 3, async (update) => {
      for (;;) {
        const page = await listDeposits(db, { userId: user.id });
        const credited = page.data.filter((d) => d.status === 'credited').length;
        update(
          credited,
          page.data
            .map(
              (d) =>
                `${d.network} ${d.amount} ${d.asset}: ${d.status} ${d.confirmations}/${d.confirmationsRequired}`,
            )
            .join(' | '),
        );
        if (credited >= 3) return page.data;
        await sleep(250);
      }
    });
    const afterDeposits = await getUserBalance(runtime.ledger, user.id);
    say.detail(
      `balance: ${afterDeposits.available} USD (100 USDT + 0.05 ETH at 3123.45678901 + 50 USDT)`,
    );

    const key = await say.step('Creating an API key', () =>
      createApiKey(db, { userId: user.id, name: 'demo' }),
    );
    const client = new OpenAI({ baseURL: `${dashboardUrl}/v1`, apiKey: key.key, maxRetries: 0 });
    const calls: DemoSummary['calls'] = [];
    await say.step(
      'Calling the API with the openai SDK (one plain call, one streamed)',
      async () => {
        const { response } = await client.chat.completions
          .create({
            model: 'gpt-4o-mini',
            messages: [{ role: 'user', content: 'Write a haiku about ledgers [[tokens=17]]' }],
          })
          .withResponse();
        calls.push({ kind: 'chat', costUsd: response.headers.get('x-lingxi-cost') ?? '?' });
        const before = new Decimal((await getUserBalance(runtime.ledger, user.id)).posted);
        const stream = await client.chat.completions.create({
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content: 'Count slowly [[tokens=24]] [[delay=20]]' }],
          stream: true,
        });
        let text = '';
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
        await roles.http!.services.work.drain(5000);
        const after = new Decimal((await getUserBalance(runtime.ledger, user.id)).posted);
        calls.push({ kind: 'chat (streamed)', costUsd: before.sub(after).toString() });
        say.detail(`streamed ${text.trim().split(' ').length} tokens`);
      },
    );
    for (const c of calls) say.detail(`${c.kind}: charged ${c.costUsd} USD`);
    const balance = await getUserBalance(runtime.ledger, user.id);
    say.detail(`balance: ${balance.available} USD`);

    // Tron answers balances only at its latest solidified block: reconcile once the watcher
    // has scanned up to it, or the run rightly warns that the watcher is behind
    // (`watcher_behind`), which a slow machine shows while blocks keep coming.
    producing = false;
    const run = await say.step('Reconciling the books against both chains', async () => {
      await waitForWatcher(db, 'tron-sim', tron.chain.solidifiedNumber);
      return runReconciliation(runtime, { trigger: 'demo' });
    });
    producing = true;
    say.detail(
      run.findings.length === 0
        ? `run ${run.runId}: clean (${Object.entries(run.blocks)
            .map(([n, b]) => `${n} at block ${b}`)
            .join(', ')})`
        : `run ${run.runId}: ${run.findings.length} findings (${run.findings
            .map((f) => `${f.kind} on ${f.network}`)
            .join(', ')})`,
    );

    const file = join(dataDir, 'journal.hledger');
    const exported = await say.step(`Exporting the journal for hledger to ${file}`, async () => {
      await writeChunksToFile(streamJournal(runtime.database.pool, { format: 'hledger' }), file);
      const check = spawnSync('hledger', ['-f', file, 'check'], { encoding: 'utf8' });
      if (check.error) return { file, hledgerCheck: 'hledger not installed' as const };
      return {
        file,
        hledgerCheck: check.status === 0 ? ('passed' as const) : ('failed' as const),
        output: `${check.stdout}${check.stderr}`.trim(),
      };
    });
    say.detail(`hledger check: ${exported.hledgerCheck}`);

    const session = await createSession(db, {
      userId: user.id,
      method: 'dev',
      ttlS: config.sessions.ttlS,
      now: new Date(),
    });
    const summary: DemoSummary = {
      dashboardUrl,
      userId: user.id,
      apiKey: key.key,
      depositAddresses: addresses.map((a) => ({ network: a.network, address: a.address! })),
      deposits: deposits.map((d) => ({
        network: d.network,
        asset: d.asset,
        amount: d.amount,
        status: d.status,
        amountUsd: d.amountUsd,
      })),
      balanceAfterDeposits: afterDeposits.available,
      calls,
      balance,
      reconciliation: { runId: run.runId, status: run.status, findings: run.findings.length },
      export: exported,
    };
    say.done([
      `Dashboard: ${dashboardUrl}/  (sign in with the dev form: Telegram id 424242)`,
      `Session token for the API: ${session.token}`,
      `API key: ${key.key}`,
      `Admin token: ${config.adminToken}`,
      options.ci ? 'Done.' : 'The service keeps running; press Ctrl+C to stop.',
    ]);
    return { summary, stop: stopAll };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/**
 * The demo's own database, empty at every run: on the embedded server under dataDir (the
 * default), or, when DATABASE_URL is set, that database as it is (it is never dropped).
 */
async function freshDemoDatabase(
  dataDir: string,
  stops: Array<() => Promise<void>>,
): Promise<string> {
  if (process.env['DATABASE_URL']) return process.env['DATABASE_URL'];
  const server = await startEmbeddedPostgres({
    dir: join(dataDir, 'pg'),
    port: 54331,
    database: 'postgres',
  });
  stops.push(() => server.stop());
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    await admin.query('drop database if exists lingxi_demo with (force)');
    await admin.query('create database lingxi_demo');
  } finally {
    await admin.end();
  }
  return server.adminUrl.replace(/\/postgres$/, '/lingxi_demo');
}

async function deployEvmAssets(devnet: Devnet): Promise<{ usdt: Address; feed: Address }> {
  const usdt = await devnet.deployToken(6, { symbol: 'USDT', name: 'Tether USD (devnet)' });
  await devnet.mint(usdt, devnet.account(0).address, 10n ** 15n);
  const feed = await devnet.deployAggregator(8, 'ETH / USD');
  await devnet.setRound(feed, ETH_USD, await devnet.blockTimestamp());
  return { usdt, feed };
}

/** Waits (at most a minute) until the network's watcher has scanned up to `block`. */
async function waitForWatcher(db: Kysely<Database>, network: string, block: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const cursor = await db
      .selectFrom('watcher_cursors')
      .select('block_number')
      .where('network', '=', network)
      .executeTakeFirst();
    if (cursor && BigInt(cursor.block_number) >= BigInt(block)) return;
    await sleep(100);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export type { Narrator, TronSimulator, UpstreamStub };
