import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { HDKey } from 'viem/accounts';
import { mnemonicToAccountXpubs } from '../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { ConfigError, loadConfig, parseConfig } from '../src/config/load.js';

describe('configuration', () => {
  test('embedded defaults: no file, no networks, no providers', () => {
    const config = parseConfig({}, {});
    expect(config.http).toMatchObject({ host: '127.0.0.1', port: 8080 });
    expect(config.database.url).toBeUndefined();
    expect(config.networks).toEqual([]);
  });

  test('env: values come from the environment; DATABASE_URL is used unless the file names a URL', () => {
    const env = { ADMIN: 'a-long-enough-admin-token', DATABASE_URL: 'postgres://x@h/db' };
    expect(parseConfig({ adminToken: 'env:ADMIN' }, env)).toMatchObject({
      adminToken: 'a-long-enough-admin-token',
      database: { url: 'postgres://x@h/db' },
    });
    expect(parseConfig({ database: { url: 'postgres://y@h/other' } }, env).database.url).toBe(
      'postgres://y@h/other',
    );
    expect(parseConfig({ database: { url: 'env:NOPE' } }, {}).database.url).toBeUndefined();
  });

  test('env: in a number or boolean field reads the variable as one (a container port); text that is none is an error naming the field', () => {
    const config = parseConfig(
      {
        http: { port: 'env:PORT', trustProxy: 'env:BEHIND_PROXY', shutdownGraceMs: 'env:GRACE' },
        database: { poolSize: 'env:POOL' },
      },
      { PORT: '9090', BEHIND_PROXY: 'true', GRACE: ' 5000 ', POOL: '7' },
    );
    expect(config.http).toMatchObject({ port: 9090, trustProxy: true, shutdownGraceMs: 5000 });
    expect(config.database.poolSize).toBe(7);
    expect(() => parseConfig({ http: { port: 'env:PORT' } }, { PORT: '80a' })).toThrow(
      /config http\.port: /,
    );
    expect(() => parseConfig({ http: { trustProxy: 'env:TP' } }, { TP: 'yes' })).toThrow(
      /config http\.trustProxy: /,
    );
    // Only a variable's text is read so: the file itself says what it means.
    expect(() => parseConfig({ http: { port: '9090' } }, {})).toThrow(/config http\.port: /);
    // A string field keeps the text, digits or not.
    expect(
      parseConfig({ adminToken: 'env:ADMIN' }, { ADMIN: '12345678901234567890' }).adminToken,
    ).toBe('12345678901234567890');
  });

  test('an unset environment variable is an error naming the field and the variable', () => {
    expect(() => parseConfig({ telegram: { botToken: 'env:TELEGRAM_BOT_TOKEN' } }, {})).toThrow(
      new ConfigError('environment variable TELEGRAM_BOT_TOKEN is not set', 'telegram.botToken'),
    );
  });

  test('an unset variable a required field needs is named as the cause, not as what the schema saw without it', () => {
    // The example as copied, its .env not exported: no RPC URL of the first network is set.
    expect(() => loadConfig('lingxi.config.example.json', {})).toThrow(
      new ConfigError('environment variable ETH_RPC_URL is not set', 'networks[0].rpcUrls[0]'),
    );
    expect(() =>
      parseConfig({ providers: [{ name: 'openai', baseUrl: 'env:OPENAI_BASE_URL' }] }, {}),
    ).toThrow(
      new ConfigError('environment variable OPENAI_BASE_URL is not set', 'providers[0].baseUrl'),
    );
  });

  test('an empty bot token is refused: it would leave Telegram sign-in off without a word', () => {
    for (const botToken of ['', '   '])
      expect(() => parseConfig({ telegram: { botToken } }, {})).toThrow(
        /config telegram\.botToken: /,
      );
  });

  test('the development sign-in is off unless the config file turns it on, and never beside a bot token', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lingxi-config-'));
    try {
      const file = (name: string, config: unknown) => {
        writeFileSync(join(dir, name), JSON.stringify(config));
        return join(dir, name);
      };
      // An operator's file that never heard of it (API-only: users and keys from the CLI).
      expect(loadConfig(file('empty.json', {}), {}).config.telegram.devSignIn).toBe(false);
      expect(
        loadConfig(file('api-only.json', { adminToken: 'a-long-enough-admin-token' }), {}).config
          .telegram.devSignIn,
      ).toBe(false);
      expect(parseConfig({}, {}).telegram.devSignIn).toBe(false);
      expect(
        loadConfig(file('dev.json', { telegram: { devSignIn: true } }), {}).config.telegram
          .devSignIn,
      ).toBe(true);
      expect(
        parseConfig({ telegram: { devSignIn: 'env:DEV' } }, { DEV: 'true' }).telegram.devSignIn,
      ).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const both = new ConfigError(
      'cannot be true with telegram.botToken set: the development sign-in signs in any Telegram id with no proof; remove one of them',
      'telegram.devSignIn',
    );
    expect(() =>
      parseConfig({ telegram: { botToken: '7000000001:AAE_token', devSignIn: true } }, {}),
    ).toThrow(both);
    expect(() =>
      parseConfig(
        { telegram: { botToken: 'env:TELEGRAM_BOT_TOKEN', devSignIn: true } },
        { TELEGRAM_BOT_TOKEN: '7000000001:AAE_token' },
      ),
    ).toThrow(both);
  });

  test('a bad field stops with its path', () => {
    expect(() => parseConfig({ http: { port: 'eighty' } }, {})).toThrow(/config http\.port: /);
    expect(() =>
      parseConfig(
        {
          providers: [{ name: 'p', baseUrl: 'http://x/v1' }],
          models: [
            { id: 'm', provider: 'q', upstreamModel: 'm', pricePer1M: { input: '1', output: '1' } },
          ],
        },
        {},
      ),
    ).toThrow(/models\[0\]\.provider: unknown provider "q"/);
    expect(() =>
      parseConfig(
        {
          models: [
            { id: 'm', provider: 'p', upstreamModel: 'm', pricePer1M: { input: 1, output: '1' } },
          ],
        },
        {},
      ),
    ).toThrow(/pricePer1M\.input/);
    const provider = [{ name: 'p', baseUrl: 'http://x/v1' }];
    expect(() =>
      parseConfig(
        {
          providers: provider,
          models: [
            {
              id: 'm',
              provider: 'p',
              upstreamModel: 'm',
              pricePer1M: { input: '0.0000000000001', output: '1' },
            },
          ],
        },
        {},
      ),
    ).toThrow(/pricePer1M\.input: has 13 decimals; at most 12/);
  });

  test('a model every call of which would cost 0 is refused: it could never be held for', () => {
    const provider = [{ name: 'p', baseUrl: 'http://x/v1' }];
    const model =
      (pricePer1M: Record<string, string>, kind = 'chat') =>
      () =>
        parseConfig(
          {
            providers: provider,
            models: [{ id: 'm', provider: 'p', upstreamModel: 'm', kind, pricePer1M }],
          },
          {},
        );
    expect(model({ input: '0', output: '0.000' })).toThrow(
      /models\[0\]\.pricePer1M: every price is 0/,
    );
    expect(model({ input: '0', output: '5' }, 'embedding')).toThrow(/every price is 0/);
    expect(model({ input: '0', output: '0.000000000001' })).not.toThrow();
    expect(model({ input: '0.1', output: '0' }, 'embedding')).not.toThrow();
  });

  test('an asset with more decimals than its currency allows is refused (the BSC USDT trap)', () => {
    const bsc = {
      kind: 'evm',
      name: 'bsc',
      chainId: 56,
      rpcUrls: ['http://bsc'],
      confirmations: 15,
      assets: [
        {
          symbol: 'USDT',
          contract: '0x55d398326f99059fF775485246999027B3197955',
          decimals: 18,
          price: { fixed: '1' },
        },
      ],
    };
    expect(() => parseConfig({ networks: [bsc] }, {})).toThrow(
      /18 decimals exceed currency USDT's scale 6/,
    );
    expect(
      parseConfig({ networks: [bsc], currencies: [{ code: 'USDT', scale: 18 }] }, {}).networks,
    ).toHaveLength(1);
  });
});

describe('configuration mistakes a person makes in the file', () => {
  const provider = { name: 'p', baseUrl: 'http://x/v1' };
  const model = {
    id: 'm',
    provider: 'p',
    upstreamModel: 'm',
    pricePer1M: { input: '1', output: '1' },
  };

  test('a misspelt or unknown key stops with its path instead of being dropped', () => {
    // "databse" used to be dropped: no database URL, so an empty embedded database was
    // started under ./data and the operator's credits went there.
    expect(() => parseConfig({ databse: { url: 'postgres://x@h/db' } }, {})).toThrow(
      new ConfigError('unknown key (misspelt? see docs/config-reference.md)', 'databse'),
    );
    expect(() => parseConfig({ http: { prot: 9000 } }, {})).toThrow(
      /^config http\.prot: unknown key/,
    );
    expect(() => parseConfig({ adminTokn: 'a-long-enough-admin-token' }, {})).toThrow(
      /^config adminTokn: unknown key/,
    );
    expect(() =>
      parseConfig({ providers: [{ ...provider, apiKye: 'sk-1' }], models: [model] }, {}),
    ).toThrow(/^config providers\[0\]\.apiKye: unknown key/);
    expect(() =>
      parseConfig(
        {
          providers: [provider],
          models: [{ ...model, pricePer1M: { input: '1', ouptut: '1', output: '2' } }],
        },
        {},
      ),
    ).toThrow(/^config models\[0\]\.pricePer1M\.ouptut: unknown key/);
    const tron = {
      kind: 'tron',
      name: 'tron',
      fullHost: 'http://tron',
      confirmations: 'solidified',
      assets: [{ symbol: 'USDT', contract: 'T1', decimals: 6, price: { fixed: '1' } }],
    };
    expect(() => parseConfig({ networks: [{ ...tron, confirmation: 20 }] }, {})).toThrow(
      /^config networks\[0\]\.confirmation: unknown key/,
    );
    expect(() =>
      parseConfig({ networks: [{ ...tron, assets: [{ ...tron.assets[0], minDepsit: '5' }] }] }, {}),
    ).toThrow(/^config networks\[0\]\.assets\[0\]\.minDepsit: unknown key/);
    // Several at once: all named.
    expect(() => parseConfig({ a: 1, b: 2 }, {})).toThrow(/^config a, b: unknown keys/);
  });

  test('a reorgDepthMax below the confirmations is refused: a reorg that removes a credited deposit would be deeper than the watcher is sure to re-check', () => {
    const polygon = {
      kind: 'evm',
      name: 'polygon',
      chainId: 137,
      rpcUrls: ['http://polygon'],
      confirmations: 256,
      assets: [
        {
          symbol: 'USDC',
          contract: '0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359',
          decimals: 6,
          price: { fixed: '1' },
        },
      ],
    };
    // The default reorgDepthMax (128) is less than 256.
    expect(() => parseConfig({ networks: [polygon] }, {})).toThrow(
      new ConfigError(
        'is 128, less than confirmations (256): a reorg that removes a credited deposit would reach below what the watcher is sure to re-check, and the credit would stand; set it to at least 256',
        'networks[0].reorgDepthMax',
      ),
    );
    expect(() => parseConfig({ networks: [{ ...polygon, reorgDepthMax: 255 }] }, {})).toThrow(
      /^config networks\[0\]\.reorgDepthMax: is 255, less than confirmations \(256\)/,
    );
    expect(
      parseConfig({ networks: [{ ...polygon, reorgDepthMax: 256 }] }, {}).networks[0]!
        .reorgDepthMax,
    ).toBe(256);
    // "finalized" is a block the node names, not a depth: nothing to compare.
    expect(
      parseConfig({ networks: [{ ...polygon, confirmations: 'finalized', reorgDepthMax: 1 }] }, {})
        .networks,
    ).toHaveLength(1);
  });

  test('two providers of one name are refused (the gateway would use only the last one)', () => {
    expect(() =>
      parseConfig(
        { providers: [provider, { ...provider, baseUrl: 'http://y/v1' }], models: [model] },
        {},
      ),
    ).toThrow(new ConfigError('duplicate provider "p"', 'providers[1].name'));
  });

  test('two assets of one symbol on a network are refused (prices, custody accounts and reconciliation go by symbol)', () => {
    const polygon = {
      kind: 'evm',
      name: 'polygon',
      chainId: 137,
      rpcUrls: ['http://polygon'],
      confirmations: 64,
      assets: [
        {
          symbol: 'USDC',
          contract: '0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359',
          decimals: 6,
          price: { fixed: '1' },
        },
        {
          symbol: 'USDC',
          contract: '0x2791Bca1f2de4661ED88A30C99A7a9449Aa84174',
          decimals: 6,
          price: { fixed: '1' },
        },
      ],
    };
    expect(() => parseConfig({ networks: [polygon] }, {})).toThrow(
      new ConfigError(
        'duplicate asset symbol "USDC" on network "polygon"; give each asset its own symbol (and "currency" to book them as one)',
        'networks[0].assets[1].symbol',
      ),
    );
    // The same symbol on two networks is fine: accounts and prices are per network.
    const other = { ...polygon, name: 'polygon-2', assets: [polygon.assets[0]] };
    expect(
      parseConfig({ networks: [{ ...polygon, assets: [polygon.assets[0]] }, other] }, {}).networks,
    ).toHaveLength(2);
    // Distinct symbols booked in one currency are fine too.
    expect(
      parseConfig(
        {
          networks: [
            {
              ...polygon,
              assets: [
                polygon.assets[0],
                { ...polygon.assets[1], symbol: 'USDCe', currency: 'USDC' },
              ],
            },
          ],
        },
        {},
      ).networks[0]!.assets,
    ).toHaveLength(2);
  });

  test('--config "" (a script\'s unset variable) is refused, not read as "no flag"', () => {
    // It used to fall back to $LINGXI_CONFIG, ./lingxi.config.json or the embedded database:
    // `lingxi --config "$CONF" credit ...` with CONF unset wrote to another database.
    expect(() => loadConfig('', {})).toThrow(
      new ConfigError('--config names no file (an empty path)', ''),
    );
  });

  test('a price source with a number or a misspelt kind names the bad field, not "price: Invalid input"', () => {
    const tron = (price: unknown) => ({
      networks: [
        {
          kind: 'tron',
          name: 'tron',
          fullHost: 'http://tron',
          confirmations: 'solidified',
          assets: [{ symbol: 'USDT', contract: 'T1', decimals: 6, price }],
        },
      ],
    });
    expect(() => parseConfig(tron({ fixed: 1 }), {})).toThrow(
      /^config networks\[0\]\.assets\[0\]\.price\.fixed: Invalid input: expected string, received number$/,
    );
    // A rate of 0 would credit nothing: refused when the config loads, not when a watcher starts.
    for (const zero of ['0', '0.000'])
      expect(() => parseConfig(tron({ fixed: zero }), {})).toThrow(
        /^config networks\[0\]\.assets\[0\]\.price\.fixed: must be above 0/,
      );
    expect(() => parseConfig(tron({ chainlink: { network: 'tron' } }), {})).toThrow(
      /^config networks\[0\]\.assets\[0\]\.price\.chainlink\.feed: /,
    );
    expect(() => parseConfig(tron({ fixd: '1' }), {})).toThrow(
      /^config networks\[0\]\.assets\[0\]\.price: must be \{"fixed": "1"\} or \{"chainlink": \{"network", "feed"\}\}$/,
    );
  });

  test('a currency listed twice is refused (the last one would win)', () => {
    expect(() =>
      parseConfig(
        {
          currencies: [
            { code: 'USDT', scale: 18 },
            { code: 'USDT', scale: 6 },
          ],
        },
        {},
      ),
    ).toThrow(new ConfigError('duplicate currency "USDT"', 'currencies[1].code'));
  });
  test('an admin or metrics token no client can send (a space, a line break, a letter outside ASCII) is refused, naming the field', () => {
    const token = 'a-long-enough-admin-token';
    for (const field of ['adminToken', 'metricsToken'] as const) {
      // A secret file written with `echo`, read whole into the variable: its trailing newline
      // made every request 401, since no Authorization header can carry it.
      for (const bad of [`${token}\n`, `${token}\r\n`, `correct horse ${token}`, `${token}é`]) {
        expect(() => parseConfig({ [field]: 'env:TOKEN' }, { TOKEN: bad }), bad).toThrow(
          new RegExp(`^config ${field}: must be printable ASCII without spaces`),
        );
      }
      expect(parseConfig({ [field]: 'env:TOKEN' }, { TOKEN: `${token}!~+/=` })[field]).toBe(
        `${token}!~+/=`,
      );
    }
  });

  test('a wallet xpub that does not parse is refused at load, naming the field (it made the deposit-address list a 500)', () => {
    const xpubs = mnemonicToAccountXpubs(
      'test test test test test test test test test test test junk',
    );
    const other = mnemonicToAccountXpubs(
      'legal winner thank year wave sausage worth useful legal winner thank yellow',
    );
    const wallets = { evmXpub: xpubs.evmXpub, tronXpub: xpubs.tronXpub };
    expect(
      parseConfig({ wallets: { ...wallets, retiredXpubs: [other.evmXpub] } }, {}).wallets,
    ).toEqual({ ...wallets, retiredXpubs: [other.evmXpub] });
    // A mistyped last character (the checksum catches it), the .env placeholder, a root key.
    const mistyped = `${xpubs.evmXpub.slice(0, -1)}${xpubs.evmXpub.endsWith('x') ? 'y' : 'x'}`;
    const root = HDKey.fromMasterSeed(new Uint8Array(32).fill(7)).publicExtendedKey;
    const cases: Array<[object, string, RegExp]> = [
      [{ evmXpub: mistyped }, 'wallets.evmXpub', /EVM extended public key is not a Base58Check/],
      [{ tronXpub: 'xpub-change-me' }, 'wallets.tronXpub', /Tron extended public key is not a/],
      [{ evmXpub: root }, 'wallets.evmXpub', /at depth 0; expected the account level/],
      [{ retiredXpubs: [other.tronXpub, 'x'] }, 'wallets.retiredXpubs[1]', /not a Base58Check/],
    ];
    for (const [bad, field, reason] of cases) {
      let error: unknown;
      try {
        parseConfig({ wallets: { ...wallets, ...bad } }, { EVM_XPUB: mistyped });
      } catch (caught) {
        error = caught;
      }
      expect(error, field).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).path).toBe(field);
      expect((error as ConfigError).message).toMatch(reason);
    }
    // From the environment too; and an xprv is refused without repeating it.
    expect(() =>
      parseConfig({ wallets: { evmXpub: 'env:EVM_XPUB' } }, { EVM_XPUB: mistyped }),
    ).toThrow(/^config wallets\.evmXpub: the EVM extended public key is not a Base58Check/);
    const xprv = HDKey.fromMasterSeed(new Uint8Array(32).fill(7)).derive(
      "m/44'/60'/0'",
    ).privateExtendedKey!;
    expect(() => parseConfig({ wallets: { evmXpub: xprv } }, {})).toThrow(
      /^config wallets\.evmXpub: .*extended PRIVATE key.*treated as exposed\)$/,
    );
    try {
      parseConfig({ wallets: { evmXpub: xprv } }, {});
    } catch (error) {
      expect((error as Error).message).not.toContain(xprv.slice(4, 30));
    }
  });
});
