import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { parseConfig } from '../../src/config/load.js';
import { publicConfig } from '../../src/http/dashboard/publicConfig.js';
import { BOT_TOKEN, call, nowS, signTelegram } from '../accounts/support.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, type TestService } from '../support/service.js';
import { CHROMIUM_LAUNCH, waitForText } from './browser.js';

const BOT = 'lingxi_test_bot';
const xpubs = mnemonicToAccountXpubs('test test test test test test test test test test test junk');

describe('publicConfig', () => {
  const networks = [
    {
      kind: 'evm',
      name: 'ethereum',
      chainId: 1,
      rpcUrls: ['https://rpc.example/v2/rpc-secret'],
      confirmations: 12,
      assets: [
        {
          symbol: 'USDT',
          contract: '0xdAC17F958D2ee523a2206206994597C13D831ec7',
          decimals: 6,
          price: { fixed: '1' },
        },
      ],
    },
    {
      kind: 'tron',
      name: 'tron',
      fullHost: 'https://api.trongrid.example',
      apiKey: 'trongrid-secret',
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

  test('with a bot token it reports the bot and no dev sign-in, and never a secret', () => {
    const config = parseConfig(
      {
        adminToken: 'admin-secret-0123456789',
        telegram: { botToken: BOT_TOKEN, botUsername: BOT },
        wallets: { evmXpub: xpubs.evmXpub, tronXpub: xpubs.tronXpub },
        networks,
      },
      {},
    );
    const answer = publicConfig(config);
    expect(answer).toEqual({
      telegramBot: BOT,
      devSignIn: false,
      networks: [
        {
          name: 'ethereum',
          kind: 'evm',
          chainId: 1,
          confirmations: '12',
          assets: [{ symbol: 'USDT', decimals: 6, minDeposit: '0', native: false }],
        },
        {
          name: 'tron',
          kind: 'tron',
          chainId: null,
          confirmations: 'solidified',
          assets: [{ symbol: 'USDT', decimals: 6, minDeposit: '0', native: false }],
        },
      ],
    });
    const text = JSON.stringify(answer);
    for (const secret of [BOT_TOKEN, 'admin-secret', 'rpc-secret', 'trongrid-secret', 'xpub'])
      expect(text).not.toContain(secret);
  });

  test('a bot token without a username gives neither sign-in; no token gives the dev sign-in only when turned on', () => {
    expect(publicConfig(parseConfig({ telegram: { botToken: BOT_TOKEN } }, {}))).toMatchObject({
      telegramBot: null,
      devSignIn: false,
    });
    expect(publicConfig(parseConfig({ telegram: { botUsername: BOT } }, {}))).toMatchObject({
      telegramBot: null,
      devSignIn: false,
    });
    expect(
      publicConfig(parseConfig({ telegram: { botUsername: BOT, devSignIn: true } }, {})),
    ).toMatchObject({ telegramBot: null, devSignIn: true });
  });

  test('the bot username is checked at start', () => {
    expect(() => parseConfig({ telegram: { botUsername: '@lingxi_bot' } }, {})).toThrow(
      /telegram\.botUsername/,
    );
  });
});

describe('a service with a Telegram bot', () => {
  let database: TestDatabase;
  let service: TestService;
  let browser: Browser;

  beforeAll(async () => {
    database = await createTestDatabase();
    service = await startTestService({
      databaseUrl: database.url,
      config: { telegram: { botToken: BOT_TOKEN, botUsername: BOT } },
    });
    browser = await chromium.launch(CHROMIUM_LAUNCH);
  });
  afterAll(async () => {
    await browser?.close();
    await service?.stop();
    await database?.drop();
  });

  test('GET /api/config reports the bot and no dev sign-in; the dev route does not exist', async () => {
    const config = await call(service, 'GET', '/api/config');
    expect(config.body).toEqual({ telegramBot: BOT, devSignIn: false, networks: [] });
    expect(config.text).not.toContain(BOT_TOKEN);
    const dev = await call(service, 'POST', '/api/auth/dev', { body: { telegramId: 1 } });
    expect(dev.status).toBe(404);
  });

  test('the page mounts the Login Widget (no dev form) and signs in from the fragment the widget navigates to', async () => {
    const context = await browser.newContext();
    const offsite: string[] = [];
    const problems: string[] = [];
    // Telegram's script is replaced by one that records how the page configured it.
    await context.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (url.hostname === '127.0.0.1') return route.continue();
      offsite.push(url.href);
      if (url.origin === 'https://telegram.org' && url.pathname === '/js/telegram-widget.js')
        return route.fulfill({
          contentType: 'text/javascript',
          body: 'window.__widget = Object.assign({}, document.currentScript.dataset);',
        });
      return route.abort('blockedbyclient');
    });
    const page = await context.newPage();
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    await page.goto(`${service.url}/`);
    await page.waitForFunction(() => (window as { __widget?: object }).__widget !== undefined);
    const widget = await page.evaluate(() => (window as { __widget?: object }).__widget);
    expect(widget).toEqual({
      telegramLogin: BOT,
      size: 'large',
      userpic: 'false',
      authUrl: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/#telegram-auth-[0-9a-f]{32}$/),
    });
    const { authUrl } = widget as { authUrl: string };
    expect(await page.locator('#dev-signin').isHidden()).toBe(true);
    expect(offsite).toEqual(['https://telegram.org/js/telegram-widget.js?22']);

    // What the widget does once the user confirms in Telegram: navigate to the auth URL with
    // the signed fields appended (into the fragment here, so they never reach a server).
    const signed = signTelegram({
      id: 555001,
      first_name: 'Ada',
      username: 'ada_tg',
      auth_date: nowS(),
    });
    const widgetRedirect = `${authUrl}?${new URLSearchParams(
      Object.entries(signed).map(([name, value]): [string, string] => [name, String(value)]),
    )}`;
    await page.evaluate((url) => {
      location.href = url;
    }, widgetRedirect);
    await page.locator('#balance-title').waitFor();
    await waitForText(page, '#who', '@ada_tg');
    expect(await page.evaluate(() => location.hash)).toBe('');
    expect(await page.evaluate(() => sessionStorage.getItem('lingxi.session'))).toMatch(/^lxs-/);

    // The same signed fields again (a replay) are refused, and the page says why.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#signin-title').waitFor();
    await page.evaluate((url) => {
      location.href = url;
    }, widgetRedirect);
    await waitForText(
      page,
      '#error',
      'Telegram sign-in failed: this Telegram login was already used; sign in again',
    );
    expect(await page.locator('#signin-title').isVisible()).toBe(true);
    // The refused POST is the only thing the console may mention.
    expect(problems.filter((problem) => !problem.includes('401'))).toEqual([]);
    await context.close();
  });

  test('a signed login someone else sends as a link does not sign the page in to their account (login CSRF)', async () => {
    // The attacker's own fresh Login Widget data, put in a link to our page: opened, it would
    // sign the victim in to the attacker's account, whose deposit address the page then shows.
    const context = await browser.newContext();
    await context.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (url.hostname === '127.0.0.1') return route.continue();
      if (url.origin === 'https://telegram.org' && url.pathname === '/js/telegram-widget.js')
        return route.fulfill({
          contentType: 'text/javascript',
          body: 'window.__widget = Object.assign({}, document.currentScript.dataset);',
        });
      return route.abort('blockedbyclient');
    });
    const attacker = signTelegram({ id: 840_201, first_name: 'Mallory', auth_date: nowS() });
    const fields = new URLSearchParams(
      Object.entries(attacker).map(([name, value]): [string, string] => [name, String(value)]),
    );
    const replaysBefore = await database.pool.query(`select count(*) from telegram_login_replays`);
    const page = await context.newPage();
    // A link opened in a new tab, and a page that opened ours and then moves it to the link.
    for (const link of [
      `${service.url}/#telegram-auth?${fields}`,
      `${service.url}/#telegram-auth-00000000000000000000000000000000?${fields}`,
    ]) {
      await page.goto(link);
      await page.locator('#signin-title').waitFor();
      await waitForText(
        page,
        '#error',
        'This Telegram sign-in was not started on this page, so it was not used. Sign in with the Telegram button.',
      );
      expect(await page.evaluate(() => sessionStorage.getItem('lingxi.session'))).toBeNull();
      expect(await page.evaluate(() => location.hash)).toBe('');
    }
    await page.goto(`${service.url}/`);
    await page.waitForFunction(() => (window as { __widget?: object }).__widget !== undefined);
    await page.evaluate((url) => {
      location.hash = url;
    }, `#telegram-auth?${fields}`);
    await waitForText(
      page,
      '#error',
      'This Telegram sign-in was not started on this page, so it was not used. Sign in with the Telegram button.',
    );
    expect(await page.evaluate(() => sessionStorage.getItem('lingxi.session'))).toBeNull();
    const replaysAfter = await database.pool.query(`select count(*) from telegram_login_replays`);
    expect(replaysAfter.rows).toEqual(replaysBefore.rows);
    await context.close();
  });
});

describe('a service with neither a Telegram bot nor the development sign-in', () => {
  let database: TestDatabase;
  let service: TestService;
  let browser: Browser;

  beforeAll(async () => {
    database = await createTestDatabase();
    service = await startTestService({ databaseUrl: database.url });
    browser = await chromium.launch(CHROMIUM_LAUNCH);
  });
  afterAll(async () => {
    await browser?.close();
    await service?.stop();
    await database?.drop();
  });

  test('the page says sign-in is unavailable and offers no dev form; the dev route does not exist', async () => {
    const config = await call(service, 'GET', '/api/config');
    expect(config.body).toEqual({ telegramBot: null, devSignIn: false, networks: [] });
    const dev = await call(service, 'POST', '/api/auth/dev', { body: { telegramId: 1 } });
    expect(dev.status).toBe(404);

    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${service.url}/`);
    await page.locator('#signin-unavailable').waitFor();
    expect(await page.locator('#signin-unavailable').textContent()).toContain(
      'Sign-in is not available',
    );
    expect(await page.locator('#dev-signin').isHidden()).toBe(true);
    expect(await page.locator('#telegram-login').isHidden()).toBe(true);
    await context.close();
  });
});
