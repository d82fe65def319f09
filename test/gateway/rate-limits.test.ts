import { randomUUID } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { Database } from '../../src/db/schema.js';
import { AppError } from '../../src/errors.js';
import { RateLimiter, type RateLimits } from '../../src/gateway/rateLimiter.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';

/**
 * Per-key rate limits hold across gateway processes: two limiters on one database stand for
 * two processes behind a load balancer (the gateway's own 429 answer is tested in
 * bad-input.test.ts).
 */

let database: TestDatabase;
const dbs: Array<Kysely<Database>> = [];

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await Promise.all(dbs.map((db) => db.destroy()));
  await database.drop();
});

/** A limiter with its own connections, as another process would have. */
function gatewayProcess(limits: RateLimits): RateLimiter {
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: database.newPool(3) }) });
  dbs.push(db);
  return new RateLimiter(limits, db);
}

async function outcomes(calls: Array<Promise<void>>) {
  const settled = await Promise.allSettled(calls);
  const refused = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as AppError] : []));
  return { served: settled.length - refused.length, refused };
}

test('two processes together serve a key exactly its requests per minute; the rest get 429 with retry-after', async () => {
  const limits = { requestsPerMinute: 10, tokensPerMinute: 1_000_000 };
  const [a, b] = [gatewayProcess(limits), gatewayProcess(limits)];
  const key = randomUUID();
  const { served, refused } = await outcomes(
    Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? a : b).take(key, 100)),
  );
  expect(served).toBe(10);
  expect(refused).toHaveLength(20);
  for (const error of refused) {
    expect(error).toBeInstanceOf(AppError);
    expect(error.code).toBe('rate_limit_exceeded');
    expect(error.status).toBe(429);
    // One request comes back every 6 s at 10 a minute.
    const retryAfter = Number(error.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(6);
  }
  // Another key has its own budget.
  await expect(a.take(randomUUID(), 100)).resolves.toBeUndefined();
});

test('two processes together serve a key exactly its tokens per minute', async () => {
  const limits = { requestsPerMinute: 1_000, tokensPerMinute: 1_000 };
  const [a, b] = [gatewayProcess(limits), gatewayProcess(limits)];
  const key = randomUUID();
  const { served, refused } = await outcomes(
    Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? a : b).take(key, 300)),
  );
  expect(served).toBe(3);
  expect(refused.map((e) => e.message)).toEqual(
    Array.from({ length: 5 }, () => expect.stringContaining('1000 tokens per minute')),
  );
});

test('a process takes a slice of the shared bucket at a time: many calls, one database trip', async () => {
  const limiter = gatewayProcess({ requestsPerMinute: 600, tokensPerMinute: 6_000_000 });
  const key = randomUUID();
  for (let i = 0; i < 30; i += 1) await limiter.take(key, 1_000);
  // The first call took a twentieth of the budget (30 requests, 300,000 tokens) for all 30.
  const { rows } = await database.pool.query<{ requests: number; tokens: number }>(
    'select requests, tokens from rate_limit_buckets where key_id = $1',
    [key],
  );
  expect(rows).toHaveLength(1);
  expect(Math.floor(rows[0]!.requests)).toBe(570);
  expect(Math.floor(rows[0]!.tokens / 1000)).toBe(5_700);
});
