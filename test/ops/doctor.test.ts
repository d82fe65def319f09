import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Address } from 'viem';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Kysely, PostgresDialect } from 'kysely';
import { deriveEvmAddress } from '../../chain-watchers/addresses/deriveEvmAddress.js';
import { deriveTronAddress } from '../../chain-watchers/addresses/deriveTronAddress.js';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import {
  assignDepositAddress,
  type AddressFamily,
} from '../../chain-watchers/pipeline/depositAddresses.js';
import type { WatcherTables } from '../../chain-watchers/pipeline/tables.js';
import { runCli } from '../../src/cli/main.js';
import type { DoctorCheck } from '../../src/doctor/check.js';
import type { DoctorReport } from '../../src/doctor/runDoctor.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { DEAD_RPC_URL } from '../support/evm/rpcServers.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';

/**
 * `lingxi doctor` against a real devnet (a token with the configured decimals, one whose
 * decimals the config gets wrong, a dead endpoint, a node on another chain), the model stub
 * (with the right key and a wrong one) and a test database.
 */

const MNEMONIC = 'test test test test test test test test test test test junk';
const ADMIN_TOKEN = 'doctor-admin-token-0123456789abcdefghijkl';

let devnet: Devnet;
let usdt: Address;
let usdc: Address;
let stub: UpstreamStub;
let database: TestDatabase;
let dir: string;

beforeAll(async () => {
  [devnet, stub, database] = await Promise.all([
    startDevnet({ accounts: 1 }),
    startUpstreamStub({ apiKey: 'upstream-secret' }),
    createTestDatabase(),
  ]);
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  // On chain 18 decimals; the config below says 6 (BSC's USDT trap, in miniature).
  usdc = await devnet.deployToken(18, { symbol: 'USDC' });
  dir = mkdtempSync(join(tmpdir(), 'lingxi-doctor-'));
});
afterAll(async () => {
  await Promise.all([devnet?.close(), stub?.close(), database?.drop()]);
  rmSync(dir, { recursive: true, force: true });
});

function devnetNetwork(name: string, params: { chainId?: number; rpcUrls: string[] }) {
  return {
    name,
    kind: 'evm',
    chainId: params.chainId ?? 1337,
    rpcUrls: params.rpcUrls,
    confirmations: 2,
    rpcTimeoutMs: 3000,
    assets: [
      { symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } },
      { symbol: 'ETH', native: true, decimals: 18, price: { fixed: '3000' } },
    ],
  };
}

function baseConfig(overrides: Record<string, unknown> = {}) {
  const xpubs = mnemonicToAccountXpubs(MNEMONIC);
  return {
    database: { url: database.url, poolSize: 2 },
    adminToken: ADMIN_TOKEN,
    providers: [{ name: 'stub', baseUrl: stub.url, apiKey: 'upstream-secret', timeoutMs: 3000 }],
    models: [
      {
        id: 'gpt-4o-mini',
        provider: 'stub',
        upstreamModel: 'gpt-4o-mini',
        pricePer1M: { input: '0.15', output: '0.6' },
      },
    ],
    wallets: { evmXpub: xpubs.evmXpub },
    networks: [devnetNetwork('devnet', { rpcUrls: [devnet.url] })],
    telegram: { botToken: '7000000001:AAE_test-bot-token-0123456789abcdefghij' },
    ...overrides,
  };
}

async function doctor(config: unknown, ...flags: string[]) {
  const file = join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(config));
  let stdout = '';
  let stderr = '';
  const code = await runCli(['doctor', '--config', file, '--timeout', '5000', ...flags], {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
  });
  return { code, stdout, stderr, file };
}

function find(report: DoctorReport, area: string, fragment: string): DoctorCheck {
  const found = report.checks.find((c) => c.area === area && c.message.includes(fragment));
  if (!found) throw new Error(`no ${area} check with "${fragment}": ${JSON.stringify(report)}`);
  return found;
}

test('a healthy deployment: every check ok, exit 0, plain words for people', async () => {
  const { code, stdout, stderr, file } = await doctor(baseConfig());
  expect(stderr).toBe('');
  expect(code).toBe(0);
  expect(stdout).toContain(`ok    config`);
  expect(stdout).toContain(`${file} is valid: 1 provider, 1 model, 1 network`);
  expect(stdout).toMatch(/ok +database +PostgreSQL \d+/);
  expect(stdout).toMatch(/schema up to date: all \d+ migrations applied/);
  expect(stdout).toMatch(/ok +devnet +http:\/\/127\.0\.0\.1:\d+: chain id 1337, head \d+/);
  expect(stdout).toContain(`USDT contract ${usdt}: decimals() is 6, as configured`);
  expect(stdout).toMatch(/ok +provider stub +http:\/\/127\.0\.0\.1:\d+ answers with the key/);
  expect(stdout).toMatch(/ok +wallet evm +wallets\.evmXpub is an xpub \(for devnet\)/);
  // The first address of the test mnemonic, as every wallet derives it.
  expect(stdout).toContain("m/44'/60'/0'/0/0, is 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
  expect(stdout).toMatch(/ok +admin token +set, 41 characters/);
  expect(stdout).toMatch(/ok +telegram +bot token set \(bot id 7000000001\)/);
  expect(stdout).not.toMatch(/^(warn|FAIL)/m);
  expect(stdout.trimEnd()).toMatch(/\d+ checks ok, 0 warnings, 0 failures: ready to run$/);
});

test('a wrong-decimals token, a dead endpoint, another chain and a refused key fail with a fix each; exit 1', async () => {
  const config = baseConfig({
    providers: [
      { name: 'stub', baseUrl: stub.url, apiKey: 'upstream-secret', timeoutMs: 3000 },
      { name: 'revoked', baseUrl: stub.url, apiKey: 'sk-revoked', timeoutMs: 3000 },
    ],
    networks: [
      {
        ...devnetNetwork('devnet', { rpcUrls: [devnet.url, DEAD_RPC_URL] }),
        assets: [
          { symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } },
          { symbol: 'USDC', contract: usdc, decimals: 6, price: { fixed: '1' } },
        ],
      },
      devnetNetwork('mainnet', { chainId: 1, rpcUrls: [devnet.url] }),
    ],
    telegram: {},
  });
  const { code, stdout, stderr } = await doctor(config, '--json');
  expect(code).toBe(1);
  expect(stderr).toMatch(/^lingxi: doctor: \d+ checks failed\n$/);
  const report = JSON.parse(stdout) as DoctorReport;
  expect(report.ok).toBe(false);

  expect(find(report, 'devnet', 'endpoint 1').status).toBe('ok');
  expect(find(report, 'devnet', `USDT contract ${usdt}`).status).toBe('ok');
  const decimals = find(report, 'devnet', 'USDC');
  expect(decimals).toMatchObject({ status: 'fail' });
  expect(decimals.message).toContain('has 18 decimals on chain, but the config says 6');
  expect(decimals.fix).toContain('"decimals"');

  const dead = find(report, 'devnet', 'endpoint 2 http://127.0.0.1:9');
  expect(dead.status).toBe('fail');
  expect(dead.message).toContain('no answer');
  expect(dead.fix).toContain('networks "devnet" rpcUrls[1]');

  const otherChain = find(report, 'mainnet', '');
  expect(otherChain.status).toBe('fail');
  expect(otherChain.message).toContain('chain id 1337');
  expect(otherChain.fix).toContain("network's chainId (1)");

  expect(find(report, 'provider stub', 'answers with the key').status).toBe('ok');
  expect(find(report, 'provider revoked', 'refused the API key (HTTP 401)').status).toBe('fail');
  // No bot token and no devSignIn in the file: nobody signs in, not even from this machine.
  expect(find(report, 'telegram', 'no bot token').status).toBe('warn');
  expect(find(report, 'telegram', 'no bot token').message).toContain(
    'the development sign-in is off',
  );

  // No secret reaches the report: neither the provider keys nor the admin token.
  expect(stdout).not.toContain('upstream-secret');
  expect(stdout).not.toContain('sk-revoked');
  expect(stdout).not.toContain(ADMIN_TOKEN);
  expect(report.counts.fail).toBe(report.checks.filter((c) => c.status === 'fail').length);
  expect(report.counts.fail).toBe(4);
});

test('a config that turns the development sign-in on is warned about; with a bot token beside it the config fails', async () => {
  const dev = await doctor(baseConfig({ telegram: { devSignIn: true } }), '--json');
  const report = JSON.parse(dev.stdout) as DoctorReport;
  const check = find(report, 'telegram', 'no bot token');
  expect(check.status).toBe('warn');
  expect(check.message).toContain(
    'the development sign-in (telegram.devSignIn) signs in any Telegram id from loopback clients',
  );
  expect(check.fix).toContain('remove telegram.devSignIn');

  const both = await doctor(
    baseConfig({
      telegram: {
        botToken: '7000000001:AAE_test-bot-token-0123456789abcdefghij',
        devSignIn: true,
      },
    }),
  );
  expect(both.code).toBe(1);
  expect(both.stdout).toMatch(
    /FAIL +config +.*telegram\.devSignIn: cannot be true with telegram\.botToken set/,
  );
});

test('an extended private key stops at the config, naming the field; a missing xpub for a network is a failure', async () => {
  const xprv =
    'xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi';
  const refused = await doctor(baseConfig({ wallets: { evmXpub: xprv } }), '--json');
  expect(refused.code).toBe(1);
  const config = JSON.parse(refused.stdout) as DoctorReport;
  expect(config.checks).toHaveLength(1);
  expect(config.checks[0]).toMatchObject({ area: 'config', status: 'fail' });
  expect(config.checks[0]!.message).toMatch(
    /^config wallets\.evmXpub: .*extended PRIVATE key.*treated as exposed/,
  );
  expect(config.checks[0]!.fix).toContain('(wallets.evmXpub)');
  expect(refused.stdout).not.toContain(xprv.slice(4, 30));

  const { code, stdout } = await doctor(
    baseConfig({
      networks: [
        devnetNetwork('devnet', { rpcUrls: [devnet.url] }),
        {
          name: 'tron',
          kind: 'tron',
          fullHost: DEAD_RPC_URL,
          confirmations: 'solidified',
          rpcTimeoutMs: 2000,
          assets: [{ symbol: 'TRX', native: true, decimals: 6, price: { fixed: '0.1' } }],
        },
      ],
    }),
    '--json',
  );
  expect(code).toBe(1);
  const report = JSON.parse(stdout) as DoctorReport;
  expect(find(report, 'wallet evm', 'is an xpub').status).toBe('ok');
  expect(find(report, 'wallet tron', 'wallets.tronXpub is not set').status).toBe('fail');
  expect(find(report, 'tron', 'no answer').status).toBe('fail');
});

test('a config that does not load is one failure naming the field; nothing else runs', async () => {
  const { code, stdout } = await doctor(
    baseConfig({ adminToken: 'short', networks: [] }),
    '--json',
  );
  expect(code).toBe(1);
  const report = JSON.parse(stdout) as DoctorReport;
  expect(report.checks).toHaveLength(1);
  expect(report.checks[0]).toMatchObject({ area: 'config', status: 'fail' });
  expect(report.checks[0]!.message).toContain('adminToken');
});

test('a book restored onto a server whose transaction ids are behind it fails, with how to restore it right', async () => {
  // pg_restore onto a new cluster keeps the old server's transaction ids in the book: here a
  // seal that ends a million ids ahead of this server.
  const restored = await createTestDatabase();
  try {
    await restored.pool.query(
      `insert into ledger_seals (seal, from_tx_id, to_tx_id, entry_count, first_entry_id, last_entry_id,
                                 entries_hash, previous_hash, hash, algorithm)
       select 1, '1'::xid8, (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000)::text::xid8, 1,
              gen_random_uuid(), gen_random_uuid(), repeat('a', 64), repeat('0', 64), repeat('b', 64), 'sha256'`,
    );
    const { code, stdout } = await doctor(
      baseConfig({ database: { url: restored.url, poolSize: 2 } }),
    );
    expect(code).toBe(1);
    expect(stdout).toMatch(
      /FAIL +database +the book holds transaction id \d+, ahead of this server's next/,
    );
    expect(stdout).toContain('pg_resetwal -e EPOCH');
  } finally {
    await restored.drop();
  }
});

test('every deposit address assigned must derive from the configured or a retired xpub at its stored index: a changed key or a changed row fails, naming the address', async () => {
  const own = await createTestDatabase();
  const db = new Kysely<WatcherTables>({ dialect: new PostgresDialect({ pool: own.newPool(2) }) });
  try {
    const a = mnemonicToAccountXpubs(MNEMONIC);
    const b = mnemonicToAccountXpubs(
      'legal winner thank year wave sausage worth useful legal winner thank yellow',
    );
    const { rows: users } = await own.pool.query<{ id: string }>(
      `insert into users (telegram_id) select 9300000 + g from generate_series(1, 4) g returning id::text`,
    );
    const ids = users.map((u) => u.id);
    const assign = (userId: string, family: AddressFamily, xpubs: object) =>
      assignDepositAddress(db, { userId, family, xpubs });
    // Three users under key A (both families), then a rotation of the EVM key to B, on purpose.
    for (const id of ids.slice(0, 3)) {
      await assign(id, 'evm', a);
      await assign(id, 'tron', a);
    }
    const rotated = { evmXpub: b.evmXpub, tronXpub: a.tronXpub, retiredXpubs: [a.evmXpub] };
    await assign(ids[3]!, 'evm', rotated);
    const at = (params: { wallets: object }) =>
      doctor(baseConfig({ database: { url: own.url, poolSize: 2 }, ...params }), '--json');

    const healthy = JSON.parse((await at({ wallets: rotated })).stdout) as DoctorReport;
    expect(find(healthy, 'deposit addresses', 'evm').status).toBe('ok');
    expect(find(healthy, 'deposit addresses', 'evm').message).toBe(
      '4 evm deposit addresses assigned (devnet): each derives from wallets.evmXpub (1), wallets.retiredXpubs[0] (3) at its stored index',
    );
    expect(find(healthy, 'deposit addresses', 'tron').message).toBe(
      '3 tron deposit addresses assigned (no network configured): each derives from wallets.tronXpub (3) at its stored index',
    );
    expect(healthy.ok).toBe(true);

    // The previous key left out of retiredXpubs: its three addresses are named.
    const forgotten = await at({ wallets: { evmXpub: b.evmXpub, tronXpub: a.tronXpub } });
    expect(forgotten.code).toBe(1);
    const evm = find(JSON.parse(forgotten.stdout) as DoctorReport, 'deposit addresses', 'evm');
    expect(evm.status).toBe('fail');
    expect(evm.message).toContain(
      '3 of 4 evm deposit addresses assigned: they derive from none of wallets.evmXpub at their stored index: ',
    );
    for (let index = 0; index < 3; index += 1)
      expect(evm.message).toContain(
        `${deriveEvmAddress(a.evmXpub, index).address.toLowerCase()} (user ${ids[index]}, devnet, index ${index}, m/44'/60'/0'/0/${index})`,
      );
    expect(evm.fix).toContain('wallets.retiredXpubs');

    // A row changed in the database: another wallet's address at index 1 of Tron.
    const planted = deriveTronAddress(b.tronXpub, 1).address;
    await own.pool.query(
      `update deposit_addresses set address = $1 where family = 'tron' and derivation_index = 1`,
      [planted],
    );
    const tampered = await at({ wallets: rotated });
    expect(tampered.code).toBe(1);
    const report = JSON.parse(tampered.stdout) as DoctorReport;
    expect(find(report, 'deposit addresses', 'evm').status).toBe('ok');
    const tron = find(report, 'deposit addresses', 'tron');
    expect(tron).toMatchObject({ status: 'fail' });
    expect(tron.message).toBe(
      `1 of 3 tron deposit addresses assigned: they derive from none of wallets.tronXpub, wallets.retiredXpubs[0] at their stored index: ${planted} (user ${ids[1]}, no network configured, index 1, m/44'/195'/0'/0/1)`,
    );
    expect(report.counts.fail).toBe(1);
    // Text: a failure line naming it, with the fix under it.
    const text = await doctor(
      baseConfig({ database: { url: own.url, poolSize: 2 }, wallets: rotated }),
    );
    expect(text.stdout).toMatch(new RegExp(`FAIL +deposit addresses +1 of 3 tron .*${planted}`));
    expect(text.stdout).toMatch(/^ +fix: find the xpub these were assigned under/m);

    // More than one page of rows (1000 a query): each is read, none twice.
    const more = Array.from({ length: 1000 }, (_, i) => {
      const index = 4 + i;
      return { index, address: deriveEvmAddress(b.evmXpub, index).address.toLowerCase() };
    });
    await own.pool.query(
      `with u as (insert into users (telegram_id) select 9400000 + g from generate_series(1, 1000) g returning id),
            n as (select id, row_number() over (order by id) as k from u)
       insert into deposit_addresses (user_id, family, derivation_index, derivation_path, address)
       select n.id, 'evm', 3 + n.k, 'm/44''/60''/0''/0/' || (3 + n.k), ($1::text[])[n.k]
         from n`,
      [more.map((m) => m.address)],
    );
    const paged = JSON.parse((await at({ wallets: rotated })).stdout) as DoctorReport;
    expect(find(paged, 'deposit addresses', 'evm').message).toBe(
      '1004 evm deposit addresses assigned (devnet): each derives from wallets.evmXpub (1001), wallets.retiredXpubs[0] (3) at its stored index',
    );
  } finally {
    await db.destroy();
    await own.drop();
  }
});
