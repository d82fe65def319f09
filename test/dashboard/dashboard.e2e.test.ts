import { mkdirSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { Address } from 'viem';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import { createAdapters, createWatcher } from '../../chain-watchers/pipeline/createWatcher.js';
import type { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { Decimal } from '../../ledger/index.js';
import { createLogger } from '../../src/log.js';
import { call, devSignIn, expectErrorShape } from '../accounts/support.js';
import { gatewayConfig, sdk } from '../gateway/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { startTestService, type TestService } from '../support/service.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';
import { CHROMIUM_LAUNCH, waitForText } from './browser.js';

const xpubs = mnemonicToAccountXpubs('test test test test test test test test test test test junk');
let devnet: Devnet;
let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;
let adapters: Map<string, ChainAdapter>;
let watcher: DepositWatcher;
let usdt: Address;
let browser: Browser;
let context: BrowserContext;
let page: Page;
/** Requests the page tried to make anywhere but the service: there must be none. */
const offsite: string[] = [];
const pageProblems: string[] = [];

beforeAll(async () => {
  [devnet, database, stub] = await Promise.all([
    startDevnet(),
    createTestDatabase(),
    startUpstreamStub(),
  ]);
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 10n ** 12n);
  service = await startTestService({
    databaseUrl: database.url,
    config: {
      ...gatewayConfig(stub.url),
      telegram: { devSignIn: true },
      wallets: xpubs,
      networks: [
        {
          kind: 'evm',
          name: 'ethereum',
          chainId: 1337,
          rpcUrls: [devnet.url],
          confirmations: 3,
          assets: [
            {
              symbol: 'USDT',
              contract: usdt,
              decimals: 6,
              price: { fixed: '1' },
              minDeposit: '0.5',
            },
          ],
        },
      ] as never,
    },
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

  browser = await chromium.launch(CHROMIUM_LAUNCH);
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: service.url });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === '127.0.0.1' || url.hostname === 'localhost') return route.continue();
    offsite.push(url.href);
    return route.abort('blockedbyclient');
  });
  page = await context.newPage();
  page.on('pageerror', (error) => pageProblems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') pageProblems.push(`console: ${message.text()}`);
  });
});

afterAll(async () => {
  await browser?.close();
  for (const adapter of adapters?.values() ?? []) await adapter.close();
  await service?.stop();
  await stub?.close();
  await database?.drop();
  await devnet?.close();
});

test('the page, its assets and its config are served with a strict CSP, validators and no secrets', async () => {
  const index = await fetch(`${service.url}/`);
  expect(index.status).toBe(200);
  expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
  const csp = index.headers.get('content-security-policy') ?? '';
  expect(csp).toContain("default-src 'none'");
  expect(csp).toContain("script-src 'self' https://telegram.org;");
  expect(csp).not.toContain('unsafe-inline');
  expect(csp).not.toContain('unsafe-eval');
  expect(index.headers.get('cache-control')).toBe('no-cache');
  const html = await index.text();
  expect(html).not.toMatch(/<script>|<script(?![^>]*\ssrc=)[^>]*>|\sstyle=|\son[a-z]+=/i);
  const etag = index.headers.get('etag');
  expect(etag).toMatch(/^"[\w-]+"$/);
  const again = await fetch(`${service.url}/`, {
    // As a browser revalidates; fetch() would add cache-control: no-cache.
    headers: { 'if-none-match': etag!, 'cache-control': 'max-age=0' },
  });
  expect(again.status).toBe(304);

  for (const [path, type] of [
    ['/app.js', 'text/javascript; charset=utf-8'],
    ['/style.css', 'text/css; charset=utf-8'],
    ['/favicon.svg', 'image/svg+xml'],
  ] as const) {
    const asset = await fetch(`${service.url}${path}`);
    expect(asset.status, path).toBe(200);
    expect(asset.headers.get('content-type'), path).toBe(type);
    expect(asset.headers.get('cache-control'), path).toBe('public, max-age=300');
    expect(asset.headers.get('etag'), path).toMatch(/^"[\w-]+"$/);
    expect(asset.headers.get('x-content-type-options'), path).toBe('nosniff');
  }

  const config = await call<Record<string, unknown>>(service, 'GET', '/api/config');
  expect(config.status).toBe(200);
  expect(config.body).toEqual({
    telegramBot: null,
    devSignIn: true,
    networks: [
      {
        name: 'ethereum',
        kind: 'evm',
        chainId: 1337,
        confirmations: '3',
        assets: [{ symbol: 'USDT', decimals: 6, minDeposit: '0.5', native: false }],
      },
    ],
  });
  expect(config.text).not.toContain(devnet.url);
  expect(config.text).not.toContain(xpubs.evmXpub);
  expect(config.text).not.toContain('upstream-secret');

  expect((await call(service, 'GET', '/api/me/deposit-addresses/ethereum/qr.svg')).status).toBe(
    401,
  );
  const other = await devSignIn(service, 777002);
  const qr = await call(service, 'GET', '/api/me/deposit-addresses/ethereum/qr.svg', {
    token: other.token,
  });
  expect(qr.status).toBe(200);
  expect(qr.headers.get('content-type')).toBe('image/svg+xml');
  expect(qr.headers.get('cache-control')).toBe('private, no-cache');
  expect(qr.headers.get('vary')).toContain('authorization');
  expect(qr.text).toMatch(/^<svg [^>]*width="240" height="240"/);
  const unknown = await call(service, 'GET', '/api/me/deposit-addresses/solana/qr.svg', {
    token: other.token,
  });
  expect(unknown.status).toBe(404);
  expectErrorShape(unknown.body, 'network_not_found');
  expect((await fetch(`${service.url}/nope.js`)).status).toBe(404);
});

test('a user signs in, tops up on the devnet and watches it confirm, creates a key, calls the API and sees the call', async () => {
  await page.goto(`${service.url}/`);

  // Sign in with the development form: no bot configured, so no Telegram widget.
  await page.getByLabel('Telegram id').fill('777001');
  await page.getByLabel(/Username/).fill('ada_dash');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#balance-title').waitFor();
  await waitForText(page, '#who', '@ada_dash');
  expect(await page.locator('#telegram-login').isHidden()).toBe(true);
  expect(await page.locator('script[src*="telegram.org"]').count()).toBe(0);
  await waitForText(page, '#balance-available', '0');
  const token = await page.evaluate(() => sessionStorage.getItem('lingxi.session'));
  expect(token).toMatch(/^lxs-/);
  expect(await context.cookies()).toEqual([]);

  // The deposit address, its QR code, assets and confirmations.
  const [view] = (
    await call<Array<{ network: string; address: Address }>>(
      service,
      'GET',
      '/api/me/deposit-addresses',
      { token: token! },
    )
  ).body;
  const card = page.locator('article.card[data-network="ethereum"]');
  await waitForText(page, '#address-ethereum', view!.address);
  await expect.poll(() => card.locator('.assets').innerText()).toContain('USDT — minimum 0.5 USDT');
  expect(await card.innerText()).toContain('Credited after 3 confirmations.');
  await page.waitForFunction(() => {
    const img = document.querySelector<HTMLImageElement>('img.qr[data-network="ethereum"]');
    return Boolean(img?.src.startsWith('blob:') && img.complete && img.naturalWidth > 0);
  });
  await card.getByRole('button', { name: 'Copy address' }).click();
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(view!.address);

  // 12.5 USDT on the devnet; the page finds it by polling and follows its confirmations.
  const sent = await devnet.transferToken(usdt, devnet.account(0), view!.address, 12_500_000n);
  await watcher.runOnce();
  const row = page.locator('#deposits-table tbody tr').first();
  await waitForText(page, '#deposits-table tbody tr:first-child .count', '1 / 3', 15_000);
  expect(await row.getAttribute('data-status')).toBe('seen');
  expect(await row.locator('.amount').innerText()).toBe('12.5 USDT');
  expect(await row.locator('td[title]').last().getAttribute('title')).toBe(sent.txHash);
  await devnet.mine(1);
  await watcher.runOnce();
  await waitForText(page, '#deposits-table tbody tr:first-child .count', '2 / 3');
  expect(await row.getAttribute('data-status')).toBe('confirming');
  await devnet.mine(1);
  await watcher.runOnce();
  await waitForText(page, '#deposits-table tbody tr:first-child .count', '3 / 3');
  expect(await row.getAttribute('data-status')).toBe('credited');
  await waitForText(page, '#deposits-table tbody tr:first-child .credited', '12.5 USD');
  await waitForText(page, '#balance-available', '12.5');
  await waitForText(page, '#balance-posted', '12.5');

  // A key: the secret is shown once, with a warning, and copies.
  await page.getByLabel(/^Name/).fill('e2e');
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.locator('#key-secret').waitFor();
  expect(await page.locator('#key-secret').innerText()).toContain('shown only once');
  const secret = await page.locator('#key-secret-value').inputValue();
  expect(secret).toMatch(/^lx-[A-Za-z0-9_-]{43}$/);
  await page.locator('#key-secret-copy').click();
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(secret);
  await waitForText(page, '#keys-table tbody tr[data-state="active"] .name', 'e2e');

  // The official SDK with that key; the page notices the balance move and shows the call.
  const { response } = await sdk(service.url, secret)
    .chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Hello from the dashboard test [[tokens=7]]' }],
    })
    .withResponse();
  const cost = response.headers.get('x-lingxi-cost')!;
  expect(new Decimal(cost).gt(0)).toBe(true);
  await waitForText(page, '#usage-table tbody tr:first-child .model', 'gpt-4o-mini', 15_000);
  expect(await page.locator('#usage-table tbody tr:first-child .cost').innerText()).toBe(cost);
  await waitForText(page, '#balance-available', new Decimal('12.5').minus(cost).toFixed());
  const today = new Date().toISOString().slice(0, 10);
  const bar = page.locator(`#spend-chart rect.bar[data-day="${today}"]`);
  await waitForText(page, '#chart-summary', `${cost} USD spent in the last 14 days.`);
  expect(await bar.getAttribute('data-usd')).toBe(cost);
  expect(Number(await bar.getAttribute('height'))).toBeGreaterThan(0);
  expect(await page.locator('#spend-chart rect.bar').count()).toBe(14);

  // The secret goes away for good once dismissed.
  await page.getByRole('button', { name: 'I have stored it' }).click();
  expect(await page.locator('#key-secret').isHidden()).toBe(true);
  expect(await page.locator('#key-secret-value').inputValue()).toBe('');

  mkdirSync('test-artifacts', { recursive: true });
  await page.screenshot({ path: 'test-artifacts/dashboard.png', fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  await page.screenshot({ path: 'test-artifacts/dashboard-narrow.png', fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // Revoking takes a confirmation, then the key stops working.
  const keyRow = page.locator('#keys-table tbody tr', { hasText: 'e2e' });
  await keyRow.getByRole('button', { name: 'Revoke key e2e' }).click();
  await keyRow.getByRole('button', { name: /Revoke key e2e now/ }).click();
  await page.locator('#keys-table tbody tr[data-state="revoked"]', { hasText: 'e2e' }).waitFor();
  expect((await call(service, 'GET', '/api/me', { token: secret })).status).toBe(401);

  // Signing out ends the session on the server too.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#signin-title').waitFor();
  expect(await page.evaluate(() => sessionStorage.getItem('lingxi.session'))).toBeNull();
  expect((await call(service, 'GET', '/api/me', { token: token! })).status).toBe(401);

  expect(offsite).toEqual([]);
  expect(pageProblems).toEqual([]);
});

test('a deposit that is not credited says why on the page, with no progress bar that reads as still confirming', async () => {
  await page.goto(`${service.url}/`);
  await page.getByLabel('Telegram id').fill('850001');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#balance-title').waitFor();
  const token = await page.evaluate(() => sessionStorage.getItem('lingxi.session'));
  const [view] = (
    await call<Array<{ address: Address }>>(service, 'GET', '/api/me/deposit-addresses', {
      token: token!,
    })
  ).body;
  // 0.3 USDT, below the 0.5 minimum: recorded, never credited.
  await devnet.transferToken(usdt, devnet.account(0), view!.address, 300_000n);
  await watcher.runOnce();
  const api = await call<{ data: Array<Record<string, unknown>> }>(
    service,
    'GET',
    '/api/me/deposits',
    { token: token! },
  );
  expect(api.body.data[0]).toMatchObject({
    status: 'ignored',
    ignoreReason: 'below the minimum of 0.5 USDT',
  });
  const row = page.locator('#deposits-table tbody tr[data-status="ignored"]');
  await row.waitFor({ timeout: 15_000 });
  expect(await row.locator('.amount').innerText()).toBe('0.3 USDT');
  expect(await row.locator('.badge').innerText()).toBe('Not credited');
  // The reason is on the page, not only in a tooltip a touch screen never shows.
  expect(await row.locator('.reason').isVisible()).toBe(true);
  expect(await row.locator('.reason').innerText()).toBe('below the minimum of 0.5 USDT');
  expect(await row.locator('progress').count()).toBe(0);
  expect(await row.locator('.count').innerText()).toBe('—');
  // The chain moves on; the row does not start to look as if it were still confirming.
  await devnet.mine(3);
  await watcher.runOnce();
  await page.getByRole('button', { name: 'Check now' }).click();
  await row.waitFor();
  expect(await row.locator('progress').count()).toBe(0);
  expect(await row.locator('.credited').innerText()).toBe('—');
  await waitForText(page, '#balance-available', '0');

  expect(offsite).toEqual([]);
  expect(pageProblems).toEqual([]);
});

test('a user with more deposits than one page pages back to the oldest, and forward again', async () => {
  await page.goto(`${service.url}/`);
  // Whoever the test before left signed in in this tab signs out, through the page: clearing
  // the storage under the running page raced its own requests (they went out with no token: 401).
  await page.locator('#balance-title').waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#signin-title').waitFor();
  await page.getByLabel('Telegram id').fill('850002');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#balance-title').waitFor();
  const token = await page.evaluate(() => sessionStorage.getItem('lingxi.session'));
  const [view] = (
    await call<Array<{ address: Address }>>(service, 'GET', '/api/me/deposit-addresses', {
      token: token!,
    })
  ).body;
  const me = await call<{ id: string }>(service, 'GET', '/api/me', { token: token! });
  // 60 small deposits as the watcher records them (below the minimum: never credited); the
  // chain is not needed to show a list.
  const hashes = Array.from(
    { length: 60 },
    (_, i) => `0x${(i + 1).toString(16).padStart(64, '0')}`,
  );
  for (const [i, hash] of hashes.entries())
    await database.pool.query(
      `insert into deposits (network, tx_hash, log_index, user_id, address, from_address, contract,
         asset, currency, decimals, amount_base_units, amount, block_number, block_hash, status,
         confirmations, confirmations_required, ignore_reason)
       values ('ethereum', $1, 0, $2, $3, $4, $5, 'USDT', 'USDT', 6, '100000', '0.1', $6, $7,
         'ignored', 0, '3', 'below the minimum of 0.5 USDT')`,
      [
        hash,
        me.body.id,
        view!.address.toLowerCase(),
        devnet.account(0).address.toLowerCase(),
        usdt.toLowerCase(),
        1000 + i,
        hash,
      ],
    );
  await page.getByRole('button', { name: 'Check now' }).click();
  const rows = page.locator('#deposits-table tbody tr');
  const newest = page.locator(`#deposits-table td[title="${hashes[59]}"]`);
  const oldest = page.locator(`#deposits-table td[title="${hashes[0]}"]`);
  await newest.waitFor({ timeout: 15_000 });
  expect(await rows.count()).toBe(50);
  expect(await oldest.count()).toBe(0);

  await page.locator('#deposits-pager').getByRole('button', { name: 'Older' }).click();
  await oldest.waitFor({ timeout: 15_000 });
  expect(await rows.count()).toBe(10);
  expect(await newest.count()).toBe(0);
  await waitForText(page, '#deposits-page', 'Page 2');
  expect(await page.locator('#deposits-older').isDisabled()).toBe(true);

  await page.locator('#deposits-pager').getByRole('button', { name: 'Newer' }).click();
  await newest.waitFor({ timeout: 15_000 });
  expect(await rows.count()).toBe(50);
  await waitForText(page, '#deposits-page', 'Page 1');
  expect(await page.locator('#deposits-newer').isDisabled()).toBe(true);

  expect(offsite).toEqual([]);
  expect(pageProblems).toEqual([]);
});
