import QRCode from 'qrcode';
import { getAddress, type Address } from 'viem';
import { mnemonicToAccount } from 'viem/accounts';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { deriveEvmAddress } from '../../chain-watchers/addresses/deriveEvmAddress.js';
import { deriveTronAddress } from '../../chain-watchers/addresses/deriveTronAddress.js';
import { createAdapters, createWatcher } from '../../chain-watchers/pipeline/createWatcher.js';
import type { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import { createLogger } from '../../src/log.js';
import { call, devSignIn, expectErrorShape, type ErrorShape } from '../accounts/support.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { startTestService, type TestService } from '../support/service.js';

const MNEMONIC = 'test test test test test test test test test test test junk';
const xpubs = mnemonicToAccountXpubs(MNEMONIC);
let devnet: Devnet;
let database: TestDatabase;
let service: TestService;
let adapters: Map<string, ChainAdapter>;
let watcher: DepositWatcher;
let usdt: Address;
/** The networks the service runs with (config input). */
let networks: unknown[];

beforeAll(async () => {
  devnet = await startDevnet();
  database = await createTestDatabase();
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 10n ** 12n);
  const evm = (name: string) => ({
    kind: 'evm',
    name,
    chainId: 1337,
    rpcUrls: [devnet.url],
    confirmations: 3,
    assets: [
      { symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' }, minDeposit: '0.5' },
    ],
  });
  networks = [
    evm('ethereum'),
    evm('base'),
    {
      kind: 'tron',
      name: 'tron',
      fullHost: 'http://127.0.0.1:9',
      confirmations: 'solidified',
      assets: [
        {
          symbol: 'USDT',
          contract: 'TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t',
          decimals: 6,
          price: { fixed: '1' },
        },
      ],
    },
  ];
  service = await startTestService({
    databaseUrl: database.url,
    config: { wallets: xpubs, networks: networks as never, telegram: { devSignIn: true } },
  });
  adapters = createAdapters(service.runtime.config.networks, createLogger('silent'));
  watcher = createWatcher({
    network: service.runtime.config.networks[0]!,
    adapters,
    ledger: service.runtime.ledger,
    pool: service.runtime.database.pool,
    logger: createLogger('silent'),
  });
  await watcher.runOnce();
});
afterAll(async () => {
  for (const adapter of adapters?.values() ?? []) await adapter.close();
  await service?.stop();
  await database?.drop();
  await devnet?.close();
});

test('each user gets their own deposit addresses: one EVM address for every EVM network, a Tron one, stable on every request', async () => {
  const alice = await devSignIn(service, 4101);
  const bob = await devSignIn(service, 4102);
  const first = await call<
    Array<{
      network: string;
      address: string;
      derivationPath: string;
      assets: Array<{ symbol: string }>;
    }>
  >(service, 'GET', '/api/me/deposit-addresses', { token: alice.token });
  expect(first.status).toBe(200);
  expect(first.body.map((a) => a.network)).toEqual(['ethereum', 'base', 'tron']);
  const [ethereum, base, tron] = first.body;
  expect(ethereum!.address).toBe(base!.address);
  expect(ethereum!.derivationPath).toBe("m/44'/60'/0'/0/0");
  // Shown with its EIP-55 checksum (mixed case), so a wallet catches a mistyped character.
  expect(ethereum!.address).toBe(deriveEvmAddress(xpubs.evmXpub, 0).address);
  expect(ethereum!.address).toBe(getAddress(ethereum!.address));
  expect(ethereum!.address).not.toBe(ethereum!.address.toLowerCase());
  // The path shown is the one the address derives from, from the mnemonic (the operator's side).
  expect(mnemonicToAccount(MNEMONIC, { path: ethereum!.derivationPath as never }).address).toBe(
    ethereum!.address,
  );
  expect(tron!.address).toBe(deriveTronAddress(xpubs.tronXpub, 0).address);
  expect(tron!.address).toMatch(/^T[1-9A-HJ-NP-Za-km-z]{33}$/);
  expect(ethereum!.assets).toEqual([
    { symbol: 'USDT', contract: usdt, decimals: 6, minDeposit: '0.5' },
  ]);
  const again = await call(service, 'GET', '/api/me/deposit-addresses', { token: alice.token });
  expect(again.body).toEqual(first.body);
  // The QR code encodes exactly the address shown (the same code for every EVM network).
  for (const view of first.body) {
    const qr = await call(service, 'GET', `/api/me/deposit-addresses/${view.network}/qr.svg`, {
      token: alice.token,
    });
    expect(qr.status).toBe(200);
    expect(qr.text, view.network).toBe(
      await QRCode.toString(view.address, {
        type: 'svg',
        errorCorrectionLevel: 'M',
        margin: 2,
        width: 240,
      }),
    );
  }
  const other = await call<Array<{ address: string; derivationPath: string }>>(
    service,
    'GET',
    '/api/me/deposit-addresses',
    { token: bob.token },
  );
  expect(other.body[0]!.derivationPath).toBe("m/44'/60'/0'/0/1");
  expect(other.body[0]!.address).not.toBe(ethereum!.address);
});

test('a missing tronXpub leaves the Ethereum address served: Tron is listed as unavailable, not the whole list a 503', async () => {
  const partial = await startTestService({
    databaseUrl: database.url,
    config: {
      wallets: { evmXpub: xpubs.evmXpub },
      networks: networks as never,
      telegram: { devSignIn: true },
    },
  });
  try {
    const carol = await devSignIn(partial, 4103);
    const answer = await call<
      Array<{
        network: string;
        address: string | null;
        derivationPath: string | null;
        assets: Array<{ symbol: string }>;
        confirmations: string;
        unavailable: { code: string; message: string } | null;
      }>
    >(partial, 'GET', '/api/me/deposit-addresses', { token: carol.token });
    expect(answer.status).toBe(200);
    expect(answer.body.map((a) => [a.network, a.unavailable?.code ?? null])).toEqual([
      ['ethereum', null],
      ['base', null],
      ['tron', 'deposits_not_configured'],
    ]);
    const [ethereum, , tron] = answer.body;
    expect(ethereum!.address).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect(ethereum!.address).toBe(getAddress(ethereum!.address!));
    expect(tron).toMatchObject({
      address: null,
      derivationPath: null,
      assets: [{ symbol: 'USDT' }],
      confirmations: 'solidified',
      unavailable: {
        code: 'deposits_not_configured',
        message: 'deposits on tron are not configured (no wallets.tronXpub)',
      },
    });
    // The QR code of the served address works; the unavailable one says why.
    const qr = await call(partial, 'GET', '/api/me/deposit-addresses/ethereum/qr.svg', {
      token: carol.token,
    });
    expect(qr.status).toBe(200);
    const none = await call<ErrorShape>(partial, 'GET', '/api/me/deposit-addresses/tron/qr.svg', {
      token: carol.token,
    });
    expect(none.status).toBe(503);
    expectErrorShape(none.body, 'deposits_not_configured', 'api_error');
    // No Tron address was assigned; the EVM one stays the user's once Tron is configured.
    const full = await call<Array<{ network: string; address: string }>>(
      service,
      'GET',
      '/api/me/deposit-addresses',
      { token: carol.token },
    );
    expect(full.body[0]!.address).toBe(ethereum!.address);
    expect(full.body[2]!.address).toMatch(/^T/);
  } finally {
    await partial.stop();
  }
});

test('a deposit shows its state and confirmations as it confirms, then the credited USD and rate; other users never see it', async () => {
  const alice = await devSignIn(service, 4101);
  const bob = await devSignIn(service, 4102);
  const [address] = (
    await call<Array<{ address: Address }>>(service, 'GET', '/api/me/deposit-addresses', {
      token: alice.token,
    })
  ).body;
  const sent = await devnet.transferToken(usdt, devnet.account(0), address!.address, 33_330_000n);
  await watcher.runOnce();
  let page = await call<{ data: Array<Record<string, unknown>> }>(
    service,
    'GET',
    '/api/me/deposits',
    { token: alice.token },
  );
  expect(page.body.data).toEqual([
    expect.objectContaining({
      network: 'ethereum',
      asset: 'USDT',
      amount: '33.33',
      txHash: sent.txHash,
      status: 'seen',
      confirmations: 1,
      confirmationsRequired: '3',
      amountUsd: null,
    }),
  ]);
  await devnet.mine(1);
  await watcher.runOnce();
  page = await call(service, 'GET', '/api/me/deposits', { token: alice.token });
  expect(page.body.data[0]).toMatchObject({ status: 'confirming', confirmations: 2 });
  await devnet.mine(1);
  await watcher.runOnce();
  page = await call(service, 'GET', '/api/me/deposits', { token: alice.token });
  expect(page.body.data[0]).toMatchObject({
    status: 'credited',
    confirmations: 3,
    amountUsd: '33.33',
    rate: '1',
    rateSource: 'fixed',
  });
  expect(
    (await call<{ available: string }>(service, 'GET', '/api/me/balance', { token: alice.token }))
      .body.available,
  ).toBe('33.33');
  expect(
    (await call<{ data: unknown[] }>(service, 'GET', '/api/me/deposits', { token: bob.token })).body
      .data,
  ).toEqual([]);
  expect((await call(service, 'GET', '/api/me/deposits')).status).toBe(401);
  // A page size that is not one is refused, as /api/me/usage refuses it; a good one pages.
  for (const limit of ['0', '201', 'ten', '1.5']) {
    const refused = await call<{ error: { code: string; param: string } }>(
      service,
      'GET',
      `/api/me/deposits?limit=${limit}`,
      { token: alice.token },
    );
    expect({ limit, status: refused.status, param: refused.body.error.param }).toEqual({
      limit,
      status: 400,
      param: 'limit',
    });
  }
  const one = await call<{ data: unknown[] }>(service, 'GET', '/api/me/deposits?limit=1', {
    token: alice.token,
  });
  expect(one.body.data).toHaveLength(1);
});
