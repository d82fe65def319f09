import { BadRequestError } from 'openai';
import { expect, test } from 'vitest';
import type { TestDatabase } from '../support/db.js';
import { ledgerRowCounts } from '../support/ledger.js';
import { admin, userWithKey, type TestService } from '../support/service.js';
import type { UpstreamStub } from '../support/upstream-stub.js';
import { sdk, useGatewayStack } from './fixtures.js';

/**
 * `service_tier` written the way a client trying its luck (or a sloppy one) writes it: another
 * case, whitespace, an array or object holding a priced name, a number, true, an empty string.
 * None is a priced tier, so each is refused before anything is held or sent; `null` is no tier.
 */

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;
let telegramId = 8400;

useGatewayStack((stack) => ({ database, stub, service } = stack));

test.each([
  ['Default'],
  ['DEFAULT'],
  [' default'],
  ['default '],
  ['flex\n'],
  [''],
  [['default']],
  [{ tier: 'default' }],
  [0],
  [true],
])('service_tier %j: 400 feature_not_priced, nothing held, sent or charged', async (tier) => {
  telegramId += 1;
  const { userId, apiKey } = await userWithKey(service, { telegramId, balance: '1' });
  const ledgerBefore = await ledgerRowCounts(database.pool);
  const upstreamBefore = stub.requests.length;
  const refused = await sdk(service.url, apiKey)
    .chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hello' }],
      // @ts-expect-error: what the SDK's types would not let through
      service_tier: tier,
    })
    .then(
      () => null,
      (error: unknown) => error,
    );
  expect(refused).toBeInstanceOf(BadRequestError);
  expect((refused as BadRequestError).code).toBe('feature_not_priced');
  expect((refused as BadRequestError).param).toBe('service_tier');
  expect(await ledgerRowCounts(database.pool)).toEqual(ledgerBefore);
  expect(stub.requests.length).toBe(upstreamBefore);
  const { body } = await admin<{ available: string; held: string }>(
    service,
    'GET',
    `/users/${userId}/balance`,
  );
  expect(body).toMatchObject({ available: '1', held: '0' });
});

test('service_tier null is no tier: served and charged at table prices', async () => {
  telegramId += 1;
  const { apiKey } = await userWithKey(service, { telegramId, balance: '1' });
  const answer = await sdk(service.url, apiKey).chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'hello [[tokens=2]]' }],
    service_tier: null,
  });
  expect(answer.service_tier).toBe('default');
});
