import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';
import type pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, userWithKey, type TestService } from '../support/service.js';
import {
  countPromptTokens,
  startUpstreamStub,
  type UpstreamStub,
} from '../support/upstream-stub.js';
import { expectedCost, gatewayConfig, MODELS, sdk } from './fixtures.js';

/**
 * PostgreSQL itself refuses the service's new connections for a while (SQLSTATE 53300: its
 * role's `CONNECTION LIMIT` reached, as with `max_connections` or a pooler's limit), and its
 * open sessions are ended. The service runs as a role of its own (a superuser would bypass
 * the limit). Calls that arrive get OpenAI's error shape, 503 `service_unavailable`, and are
 * never forwarded; a call already served waits for its settlement, which lands once the
 * database lets the service in again; nothing stays held or reserved.
 */

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;
let role: string;

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  role = `lingxi_limited_${randomBytes(4).toString('hex')}`;
  await database.pool.query(`create role ${role} login password '${role}'`);
  for (const grant of [
    `grant connect on database ${database.name} to ${role}`,
    `grant usage, create on schema public to ${role}`,
    `grant select, insert, update, delete on all tables in schema public to ${role}`,
    `grant usage, select, update on all sequences in schema public to ${role}`,
  ])
    await database.pool.query(grant);
  const url = new URL(database.url);
  url.username = role;
  url.password = role;
  service = await startTestService({
    databaseUrl: url.toString(),
    config: gatewayConfig(stub.url),
  });
});
afterAll(async () => {
  await database?.pool.query(`alter role ${role} connection limit -1`).catch(() => {});
  await service?.stop();
  await stub?.close();
  await database?.drop();
  await database?.pool.query(`drop role if exists ${role}`).catch(() => {});
});

/** New sessions of the service's role are refused from now on, and its open ones ended. */
async function refuseConnections(): Promise<void> {
  await database.pool.query(`alter role ${role} connection limit 0`);
  await database.pool.query(
    `select pg_terminate_backend(pid) from pg_stat_activity where usename = $1`,
    [role],
  );
}

async function books(userId: string, keyId: string) {
  const { rows: usage } = await database.pool.query<{ outcome: string; cost: string }>(
    `select outcome, cost_usd::text as cost from usage_records where user_id = $1 order by id`,
    [userId],
  );
  const { rows } = await database.pool.query<{ posted: string; held: string; pending: number }>(
    `select trim_scale(a.credits_posted - a.debits_posted)::text as posted,
            trim_scale(a.debits_pending)::text as held,
            (select count(*)::int from ledger_holds h
              where h.debit_account_id = a.id and h.status = 'pending') as pending
       from ledger_accounts a where a.code = $1`,
    [`liabilities:customers:${userId}`],
  );
  const { rows: key } = await database.pool.query<{ spent: string; reserved: string }>(
    `select trim_scale(spent_usd)::text as spent, trim_scale(reserved_usd)::text as reserved
       from api_keys where id = $1`,
    [keyId],
  );
  return { usage, ...rows[0]!, key: key[0]! };
}

test('PostgreSQL refuses new connections while calls arrive: 503 service_unavailable, never forwarded; a served stream is settled once it lets the service in again', async () => {
  const { userId, keyId, apiKey } = await userWithKey(service, {
    telegramId: 3201,
    balance: '5',
    key: { spendLimitUsd: '4' },
  });
  const client = sdk(service.url, apiKey, { timeout: 30_000 });
  const messages = [{ role: 'user' as const, content: 'count [[tokens=12]] [[delay=50]]' }];
  const stream = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages,
    stream: true,
  });
  const iterator = stream[Symbol.asyncIterator]();
  let text = (await iterator.next()).value?.choices[0]?.delta?.content ?? '';
  // The stream is under way, its hold taken: from now on PostgreSQL lets nobody of the
  // service in, until the test says so.
  await refuseConnections();
  const forwarded = stub.requests.length;
  let ended = false;
  const rest = (async () => {
    for (let next = await iterator.next(); !next.done; next = await iterator.next())
      text += next.value.choices[0]?.delta?.content ?? '';
    ended = true;
  })();

  const refused = await Promise.all([
    ...[1, 2, 3].map((i) =>
      client.chat.completions
        .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `json ${i}` }] })
        .catch((e: unknown) => e),
    ),
    client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 's' }], stream: true })
      .catch((e: unknown) => e),
    client.embeddings
      .create({ model: 'text-embedding-3-small', input: 'e' })
      .catch((e: unknown) => e),
  ]);
  for (const error of refused) {
    expect(error).toBeInstanceOf(OpenAI.APIError);
    const apiError = error as InstanceType<typeof OpenAI.APIError>;
    expect(apiError.status).toBe(503);
    expect(apiError.code).toBe('service_unavailable');
    expect(apiError.type).toBe('api_error');
    expect(apiError.headers?.get('retry-after')).toBe('1');
  }
  expect(stub.requests.length).toBe(forwarded); // none was forwarded

  // Upstream has sent the whole stream; its end waits for the settlement, which waits for
  // the database.
  const upstream = stub.requests[forwarded - 1]!;
  await expect.poll(() => upstream.settled, { timeout: 20_000, interval: 20 }).toBe(true);
  expect(ended).toBe(false);
  await database.pool.query(`alter role ${role} connection limit -1`);
  await rest;
  expect(text).toBe(Array.from({ length: 12 }, (_, i) => `tok${i} `).join(''));

  const cost = expectedCost(MODELS.mini, {
    prompt: countPromptTokens({ messages }),
    completion: 12,
  });
  await service.http.services.work.drain(20_000);
  expect(await books(userId, keyId)).toEqual({
    usage: [{ outcome: 'ok', cost: cost.toString() }],
    posted: new Decimal(5).sub(cost).toString(),
    held: '0',
    pending: 0,
    key: { spent: cost.toString(), reserved: '0' },
  });

  // And the service works again as it was.
  const { data } = await client.chat.completions
    .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'after [[tokens=3]]' }] })
    .withResponse();
  expect(data.usage?.completion_tokens).toBe(3);
  const after = await books(userId, keyId);
  expect([after.usage.length, after.pending, after.key.reserved]).toEqual([2, 0, '0']);
}, 60_000);

test('the pool exhausted (every connection taken) while calls arrive: 503 service_unavailable after database.connectTimeoutMs, never forwarded; a served stream is settled once a connection frees', async () => {
  const small = await startTestService({
    databaseUrl: database.url,
    config: { ...gatewayConfig(stub.url), database: { poolSize: 3, connectTimeoutMs: 300 } },
  });
  let taken: pg.PoolClient[] = [];
  try {
    const { userId, keyId, apiKey } = await userWithKey(small, {
      telegramId: 3202,
      balance: '5',
      key: { spendLimitUsd: '4' },
    });
    const client = sdk(small.url, apiKey, { timeout: 30_000 });
    const messages = [{ role: 'user' as const, content: 'count [[tokens=8]] [[delay=50]]' }];
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      stream: true,
    });
    const iterator = stream[Symbol.asyncIterator]();
    let text = (await iterator.next()).value?.choices[0]?.delta?.content ?? '';
    // Something else takes every connection of the service's pool.
    taken = await Promise.all(
      Array.from({ length: 3 }, () => small.runtime.database.pool.connect()),
    );
    const forwarded = stub.requests.length;
    const rest = (async () => {
      for (let next = await iterator.next(); !next.done; next = await iterator.next())
        text += next.value.choices[0]?.delta?.content ?? '';
    })();
    const refused = await Promise.all(
      [1, 2].map((i) =>
        client.chat.completions
          .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `json ${i}` }] })
          .catch((e: unknown) => e),
      ),
    );
    for (const error of refused) {
      expect(error).toBeInstanceOf(OpenAI.APIError);
      const apiError = error as InstanceType<typeof OpenAI.APIError>;
      expect([apiError.status, apiError.code]).toEqual([503, 'service_unavailable']);
    }
    expect(stub.requests.length).toBe(forwarded);
    const upstream = stub.requests[forwarded - 1]!;
    await expect.poll(() => upstream.settled, { timeout: 20_000, interval: 20 }).toBe(true);
    for (const client of taken.splice(0)) client.release();
    await rest;
    expect(text).toBe(Array.from({ length: 8 }, (_, i) => `tok${i} `).join(''));
    await small.http.services.work.drain(20_000);
    const cost = expectedCost(MODELS.mini, {
      prompt: countPromptTokens({ messages }),
      completion: 8,
    });
    expect(await books(userId, keyId)).toEqual({
      usage: [{ outcome: 'ok', cost: cost.toString() }],
      posted: new Decimal(5).sub(cost).toString(),
      held: '0',
      pending: 0,
      key: { spent: cost.toString(), reserved: '0' },
    });
  } finally {
    for (const client of taken) client.release();
    await small.stop();
  }
}, 60_000);
