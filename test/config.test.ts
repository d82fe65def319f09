import { describe, expect, test } from 'vitest';
import { ConfigError, parseConfig } from '../src/config/load.js';

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

  test('an unset environment variable is an error naming the field and the variable', () => {
    expect(() => parseConfig({ telegram: { botToken: 'env:TELEGRAM_BOT_TOKEN' } }, {})).toThrow(
      new ConfigError('environment variable TELEGRAM_BOT_TOKEN is not set', 'telegram.botToken'),
    );
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
