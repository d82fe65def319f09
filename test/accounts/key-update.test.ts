import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runLingxi } from '../support/cli.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';
import { admin, startTestService, userWithKey, type TestService } from '../support/service.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';
import { gatewayConfig, sdk } from '../gateway/fixtures.js';
import { call, expectErrorShape, rowCounts } from './support.js';

/**
 * Changing a key's spend limit or model list after its creation (PATCH /admin/keys/:id,
 * `lingxi keys update`): a gateway in another process that had the key cached (only the
 * NOTIFY can reach it) serves the new limit or list from its next call, the spend already
 * made counts against a lowered (or a first) limit, and bad input changes nothing.
 */

let database: TestDatabase;
let stub: UpstreamStub;
/** The service this test talks to (admin API); in this process. */
let service: TestService;
/** `lingxi serve` in another process, on the same database: only a NOTIFY reaches its key cache. */
let gateway: LingxiProcess;
let gatewayUrl: string;
let dir: string;
let configFile: string;

/** $0.1 per output token and nothing for the prompt: a call of N tokens costs N/10 USD, held as max_tokens/10. */
const DEAR = { input: '0', cachedInput: '0', output: '100000' };

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  const base = gatewayConfig(stub.url);
  const config = {
    ...base,
    models: [
      ...base.models!,
      {
        id: 'dear',
        provider: 'stub',
        upstreamModel: 'gpt-4o-mini',
        pricePer1M: DEAR,
        maxOutputTokensDefault: 10,
        maxOutputTokensLimit: 100,
      },
    ],
  };
  service = await startTestService({ databaseUrl: database.url, config });
  dir = mkdtempSync(join(tmpdir(), 'lingxi-key-update-'));
  configFile = join(dir, 'lingxi.config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      ...config,
      adminToken: 'test-admin-token-0123456789',
      http: { host: '127.0.0.1', port: 0 },
      database: { url: database.url, poolSize: 3 },
      log: { level: 'info' },
    }),
  );
  gateway = startLingxi(['serve', '--config', configFile]);
  gatewayUrl = await gateway.url();
}, 120_000);
afterAll(async () => {
  gateway?.child.kill('SIGKILL');
  await gateway?.exited;
  await service?.stop();
  await stub?.close();
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A call on the other process's gateway of `tokens` output tokens, holding `maxTokens`/10 USD. */
async function spend(
  apiKey: string,
  tokens: number,
  maxTokens: number,
  model = 'dear',
): Promise<{ status: number; code?: string; message?: string }> {
  try {
    await sdk(gatewayUrl, apiKey).chat.completions.create({
      model,
      max_tokens: maxTokens,
      messages: [{ role: 'user', content: `spend [[tokens=${tokens}]]` }],
    });
    return { status: 200 };
  } catch (error) {
    const e = error as InstanceType<typeof OpenAI.APIError>;
    return { status: e.status ?? 0, code: String(e.code), message: e.message };
  }
}

/**
 * How the other process's gateway sees the key now, without spending: a key with a limit or a
 * model list is restricted (403 `key_restricted` on any change under /api/me), one without is
 * not (404 for a key it does not hold). Polled: the NOTIFY takes milliseconds, the cache a minute.
 */
async function seenAsRestricted(apiKey: string, restricted: boolean): Promise<void> {
  await expect
    .poll(
      async () =>
        (
          await call({ url: gatewayUrl }, 'DELETE', `/api/me/keys/${NO_KEY}`, {
            token: apiKey,
          })
        ).status,
      { timeout: 10_000, interval: 20 },
    )
    .toBe(restricted ? 403 : 404);
}

const NO_KEY = '0190b6c0-0000-7000-8000-000000000000';

interface KeyRow {
  spend_limit_usd: string | null;
  spent_usd: string;
  reserved_usd: string;
  allowed_models: string[] | null;
  revoked_at: Date | null;
}

async function keyRow(keyId: string): Promise<KeyRow> {
  const { rows } = await database.pool.query<KeyRow>(
    `select trim_scale(spend_limit_usd)::text as spend_limit_usd,
            trim_scale(spent_usd)::text as spent_usd, trim_scale(reserved_usd)::text as reserved_usd,
            allowed_models, revoked_at
       from api_keys where id = $1`,
    [keyId],
  );
  return rows[0]!;
}

/** Waits until the key's calls have settled: nothing reserved, `usage` calls served and recorded. */
async function settled(keyId: string, usage: number): Promise<void> {
  await expect
    .poll(
      async () => {
        const { rows } = await database.pool.query<{ n: number }>(
          "select count(*)::int as n from usage_records where key_id = $1 and outcome = 'ok'",
          [keyId],
        );
        return { usage: rows[0]!.n, reserved: (await keyRow(keyId)).reserved_usd };
      },
      { timeout: 10_000, interval: 20 },
    )
    .toEqual({ usage, reserved: '0' });
}

async function audits(keyId: string) {
  const { rows } = await database.pool.query<{ actor: string; details: Record<string, unknown> }>(
    `select actor, details from audit_log where action = 'key.update' and details->>'keyId' = $1
      order by id`,
    [keyId],
  );
  return rows;
}

const patchKey = (keyId: string, body: unknown) =>
  call<Record<string, unknown>>(service, 'PATCH', `/admin/keys/${keyId}`, {
    token: 'test-admin-token-0123456789',
    body,
  });

describe('PATCH /admin/keys/:id', () => {
  test('a limit lowered below what the key spent refuses the next call on a gateway that had the key cached', async () => {
    const { keyId, apiKey, userId } = await userWithKey(service, {
      telegramId: 9301,
      balance: '100',
      key: { spendLimitUsd: '10' },
    });
    expect(await spend(apiKey, 30, 40)).toEqual({ status: 200 }); // 3 USD spent, 4 held
    await settled(keyId, 1);
    expect(await keyRow(keyId)).toMatchObject({ spend_limit_usd: '10', spent_usd: '3' });

    const lowered = await patchKey(keyId, { spendLimitUsd: '2.5' });
    expect(lowered.status).toBe(200);
    expect(lowered.body).toMatchObject({
      id: keyId,
      userId,
      spendLimitUsd: '2.5',
      allowedModels: null,
      revokedAt: null,
      changed: true,
    });
    expect(Number(lowered.body['spentUsd'])).toBe(3);
    // The smallest call (0.1 USD held) is refused: 3 spent is over 2.5; the refusal names the
    // new limit once the gateway has heard of it (from its cache: 10, for a minute).
    await expect
      .poll(() => spend(apiKey, 1, 1), { timeout: 10_000, interval: 20 })
      .toMatchObject({
        status: 402,
        code: 'spend_limit_exceeded',
        message: expect.stringContaining('spend limit of 2.5 USD') as unknown,
      });

    // Raised above it again: 0.5 more is served, 0.6 more is not.
    expect((await patchKey(keyId, { spendLimitUsd: '3.5' })).status).toBe(200);
    expect(await spend(apiKey, 6, 6)).toMatchObject({ status: 402, code: 'spend_limit_exceeded' });
    expect(await spend(apiKey, 5, 5)).toEqual({ status: 200 });
    await settled(keyId, 2);
    expect(await keyRow(keyId)).toMatchObject({ spend_limit_usd: '3.5', spent_usd: '3.5' });

    // Audited once per change, with what changed; the same value again writes nothing.
    const again = await patchKey(keyId, { spendLimitUsd: '3.50' });
    expect(again.body).toMatchObject({ spendLimitUsd: '3.5', changed: false });
    expect(await audits(keyId)).toEqual([
      { actor: 'admin', details: { keyId, spendLimitUsd: { from: '10', to: '2.5' } } },
      { actor: 'admin', details: { keyId, spendLimitUsd: { from: '2.5', to: '3.5' } } },
    ]);
  });

  test('a first limit on a key that had none counts what the key spent before, on a gateway that had the key cached', async () => {
    const { keyId, apiKey } = await userWithKey(service, { telegramId: 9302, balance: '100' });
    expect(await spend(apiKey, 30, 40)).toEqual({ status: 200 }); // 3 USD, no limit
    await settled(keyId, 1);

    const limited = await patchKey(keyId, { spendLimitUsd: '3.5' });
    expect(limited.status).toBe(200);
    expect(limited.body).toMatchObject({ spendLimitUsd: '3.5', changed: true });
    expect(Number(limited.body['spentUsd'])).toBe(3);
    // The gateway had the key cached as unlimited (no call would reserve part of a limit):
    // once it has heard, 3 of the 3.5 is spent.
    await seenAsRestricted(apiKey, true);
    expect(await spend(apiKey, 6, 6)).toMatchObject({ status: 402, code: 'spend_limit_exceeded' });
    expect(await spend(apiKey, 5, 5)).toEqual({ status: 200 });
    await settled(keyId, 2);
    expect(await keyRow(keyId)).toMatchObject({ spend_limit_usd: '3.5', spent_usd: '3.5' });

    // Lifted: served beyond it again.
    const lifted = await patchKey(keyId, { spendLimitUsd: null });
    expect(lifted.body).toMatchObject({ spendLimitUsd: null, changed: true });
    await seenAsRestricted(apiKey, false);
    expect(await spend(apiKey, 10, 10)).toEqual({ status: 200 });
  });

  test('a model list set on a key refuses other models on a gateway that had the key cached; lifted, all are served', async () => {
    const { keyId, apiKey } = await userWithKey(service, { telegramId: 9303, balance: '100' });
    expect(await spend(apiKey, 1, 1, 'gpt-4o-mini')).toEqual({ status: 200 });
    expect(await spend(apiKey, 1, 1, 'gpt-4o-mini')).toEqual({ status: 200 }); // from its cache

    const listed = await patchKey(keyId, { allowedModels: ['dear'] });
    expect(listed.body).toMatchObject({ allowedModels: ['dear'], spendLimitUsd: null });
    await seenAsRestricted(apiKey, true);
    expect(await spend(apiKey, 1, 1, 'gpt-4o-mini')).toMatchObject({
      status: 403,
      code: 'model_not_allowed',
    });
    expect(await spend(apiKey, 1, 1, 'dear')).toEqual({ status: 200 });

    expect((await patchKey(keyId, { allowedModels: null })).body).toMatchObject({
      allowedModels: null,
      changed: true,
    });
    await seenAsRestricted(apiKey, false);
    expect(await spend(apiKey, 1, 1, 'gpt-4o-mini')).toEqual({ status: 200 });
  });

  test('bad input, an unknown key and a revoked key: a 4xx in the documented shape, nothing changed', async () => {
    const { keyId, userId } = await userWithKey(service, {
      telegramId: 9304,
      key: { spendLimitUsd: '5', allowedModels: ['dear'] },
    });
    const before = { rows: await rowCounts(database.pool), key: await keyRow(keyId) };
    const bad: Array<[unknown, string, string | null]> = [
      [{}, 'invalid_request', null],
      [{ spendLimitUsd: 5 }, 'invalid_amount', 'spendLimitUsd'],
      [{ spendLimitUsd: '0' }, 'invalid_amount', 'spendLimitUsd'],
      [{ spendLimitUsd: '-1' }, 'invalid_amount', 'spendLimitUsd'],
      [{ spendLimitUsd: 'ten' }, 'invalid_amount', 'spendLimitUsd'],
      [{ spendLimitUsd: '1.0000000000000000001' }, 'invalid_amount', 'spendLimitUsd'],
      [{ spendLimitUsd: '1e3' }, 'invalid_amount', 'spendLimitUsd'],
      [{ allowedModels: 'dear' }, 'invalid_request', 'allowedModels'],
      [{ allowedModels: [''] }, 'invalid_request', 'allowedModels'],
      [{ allowedModels: ['de\u0000ar'] }, 'invalid_request', 'allowedModels'],
      [
        { allowedModels: Array.from({ length: 101 }, (_, i) => `m${i}`) },
        'invalid_request',
        'allowedModels',
      ],
      // A valid change beside a bad one changes nothing either.
      [{ spendLimitUsd: '7', allowedModels: [1] }, 'invalid_request', 'allowedModels'],
      [{ spendLimitUsd: '7', name: 'renamed' }, 'invalid_request', 'name'],
      [['spendLimitUsd'], 'invalid_request', null],
      ['{"spendLimitUsd": ', 'invalid_request', null],
    ];
    const answers = [];
    for (const [body] of bad) {
      const result = await patchKey(keyId, body);
      expectErrorShape(result.body, (result.body as { error: { code: string } }).error.code);
      const { code, param } = (result.body as { error: { code: string; param: string | null } })
        .error;
      answers.push([body, `${result.status} ${code}`, param]);
    }
    expect(answers).toEqual(bad.map(([body, code, param]) => [body, `400 ${code}`, param]));

    const unknown = await patchKey(NO_KEY, { spendLimitUsd: '1' });
    expect(unknown.status).toBe(404);
    expectErrorShape(unknown.body, 'key_not_found');
    const notAnId = await patchKey('nope', { spendLimitUsd: '1' });
    expect(notAnId.status).toBe(404);
    expectErrorShape(notAnId.body, 'key_not_found');
    expect({ rows: await rowCounts(database.pool), key: await keyRow(keyId) }).toEqual(before);
    expect(await audits(keyId)).toEqual([]);

    expect((await admin(service, 'DELETE', `/users/${userId}/keys/${keyId}`)).status).toBe(200);
    const revoked = { rows: await rowCounts(database.pool), key: await keyRow(keyId) };
    const refused = await patchKey(keyId, { spendLimitUsd: '50', allowedModels: null });
    expect(refused.status).toBe(409);
    expectErrorShape(refused.body, 'key_revoked');
    expect((refused.body as { error: { message: string } }).error.message).toMatch(/revoked/);
    expect({ rows: await rowCounts(database.pool), key: await keyRow(keyId) }).toEqual(revoked);
    expect(await audits(keyId)).toEqual([]);
  });
});

describe('lingxi keys update', () => {
  const lingxi = (...args: string[]) => runLingxi(configFile, ['keys', 'update', ...args]);

  test('changes the model list and the limit as the admin API does: a gateway that had the key cached follows at once', async () => {
    const { keyId, apiKey, userId } = await userWithKey(service, {
      telegramId: 9311,
      balance: '100',
    });
    expect(await spend(apiKey, 1, 1, 'gpt-4o-mini')).toEqual({ status: 200 });
    await settled(keyId, 1);

    const set = await lingxi(keyId, '--models', 'dear', '--spend-limit', '1', '--json');
    expect({ code: set.code, stderr: set.stderr }).toEqual({ code: 0, stderr: '' });
    expect(set.json()).toMatchObject({
      id: keyId,
      userId,
      allowedModels: ['dear'],
      spendLimitUsd: '1',
      changed: true,
    });
    await seenAsRestricted(apiKey, true);
    expect(await spend(apiKey, 1, 1, 'gpt-4o-mini')).toMatchObject({
      status: 403,
      code: 'model_not_allowed',
    });
    // 1 USD of limit: a call holding 2 USD is refused until the limit is lifted.
    expect(await spend(apiKey, 20, 20)).toMatchObject({
      status: 402,
      code: 'spend_limit_exceeded',
    });

    const lifted = await lingxi(keyId, '--no-spend-limit', '--all-models');
    expect({ code: lifted.code, stderr: lifted.stderr }).toEqual({ code: 0, stderr: '' });
    expect(lifted.stdout).toBe(
      `key ${keyId} of user ${userId}: no spend limit, models all; running processes use it from now on\n`,
    );
    await seenAsRestricted(apiKey, false);
    expect(await spend(apiKey, 20, 20)).toEqual({ status: 200 });
    expect(await spend(apiKey, 1, 1, 'gpt-4o-mini')).toEqual({ status: 200 });
    await settled(keyId, 3);

    // A first limit again: everything the key spent (2 USD and two small calls) counts.
    const { rows } = await database.pool.query<{ spent: string }>(
      'select trim_scale(sum(cost_usd))::text as spent from usage_records where key_id = $1',
      [keyId],
    );
    const spent = rows[0]!.spent;
    expect(Number(spent)).toBeGreaterThan(2);
    const limited = await lingxi(keyId, '--spend-limit', '2.5');
    expect({ code: limited.code, stdout: limited.stdout }).toEqual({
      code: 0,
      stdout: `key ${keyId} of user ${userId}: spend limit 2.5 USD (${spent} spent), models all; running processes use it from now on\n`,
    });
    const same = await lingxi(keyId, '--spend-limit', '2.50');
    expect({ code: same.code, stdout: same.stdout }).toEqual({
      code: 0,
      stdout: `key ${keyId} of user ${userId} already has spend limit 2.5 USD (${spent} spent), models all; nothing changed\n`,
    });
    const records = await audits(keyId);
    expect(records.every((a) => a.actor.startsWith('cli:'))).toBe(true);
    expect(records.map((a) => a.details)).toEqual([
      {
        keyId,
        spendLimitUsd: { from: null, to: '1' },
        allowedModels: { from: null, to: ['dear'] },
      },
      {
        keyId,
        spendLimitUsd: { from: '1', to: null },
        allowedModels: { from: ['dear'], to: null },
      },
      { keyId, spendLimitUsd: { from: null, to: '2.5' } },
    ]);
  });

  test('refuses bad usage (exit 2), an unknown or revoked key (exit 1), one line each, nothing changed', async () => {
    const { keyId, userId } = await userWithKey(service, {
      telegramId: 9312,
      key: { spendLimitUsd: '5' },
    });
    const before = { rows: await rowCounts(database.pool), key: await keyRow(keyId) };
    const cases: Array<[string[], number, RegExp]> = [
      [[keyId], 2, /nothing to change/],
      [[keyId, '--spend-limit', '3', '--no-spend-limit'], 2, /--spend-limit and --no-spend-limit/],
      [[keyId, '--no-spend-limit', '--spend-limit', '3'], 2, /--spend-limit and --no-spend-limit/],
      [[keyId, '--models', 'dear', '--all-models'], 2, /--models and --all-models/],
      [[keyId, '--spend-limit', '0'], 2, /spendLimitUsd/],
      [[keyId, '--spend-limit', 'ten'], 2, /spendLimitUsd/],
      [[keyId, '--spend-limit', '-3'], 2, /spendLimitUsd/],
      [[keyId, '--models', ''], 2, /allowedModels/],
      [[keyId, '--models', 'dear,', '--spend-limit', '7'], 2, /allowedModels/],
      [['not-a-key', '--spend-limit', '3'], 2, /not a key id/],
      [[NO_KEY, '--spend-limit', '3'], 1, new RegExp(`no key ${NO_KEY}; nothing changed`)],
    ];
    for (const [args, code, message] of cases) {
      const run = await lingxi(...args);
      expect({ args, code: run.code, stdout: run.stdout }).toEqual({ args, code, stdout: '' });
      expect(run.stderr).toMatch(message);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect({ rows: await rowCounts(database.pool), key: await keyRow(keyId) }).toEqual(before);

    expect((await admin(service, 'DELETE', `/users/${userId}/keys/${keyId}`)).status).toBe(200);
    const revoked = await keyRow(keyId);
    const refused = await lingxi(keyId, '--no-spend-limit');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /^lingxi: key .* was revoked at .*; a revoked key cannot be changed\n$/,
    );
    expect(await keyRow(keyId)).toEqual(revoked);
    expect(await audits(keyId)).toEqual([]);
  });
});
