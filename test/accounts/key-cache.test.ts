import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { Database } from '../../src/db/schema.js';
import { eraseAccount } from '../../src/account/eraseAccount.js';
import { setSuspension } from '../../src/account/suspendUser.js';
import { createApiKey, revokeApiKey } from '../../src/keys/apiKeys.js';
import { KeyAuthenticator } from '../../src/keys/keyAuthenticator.js';
import { createLogger } from '../../src/log.js';
import { createUser } from '../../src/users/createUser.js';
import { runLingxi } from '../support/cli.js';
import { openLedger } from '../support/ledger.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy.js';

let database: TestDatabase;
let proxy: TcpProxy;
/** The database seen through the proxy, whose answers a test can hold back. */
let slowDb: Kysely<Database>;
let slowPool: pg.Pool;
let db: Kysely<Database>;
let dir: string | undefined;
const processes: LingxiProcess[] = [];
/** Closed after the tests: pools and proxies made by cutOffAfterCommit, LISTEN clients. */
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  database = await createTestDatabase();
  const url = new URL(database.url);
  proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
  url.host = proxy.address;
  slowPool = new pg.Pool({ connectionString: url.toString(), max: 2 });
  slowDb = new Kysely<Database>({ dialect: new PostgresDialect({ pool: slowPool }) });
  db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: database.newPool(2) }) });
});
afterAll(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  for (const p of processes) p.child.kill('SIGKILL');
  await Promise.all(processes.map((p) => p.exited));
  if (dir) rmSync(dir, { recursive: true, force: true });
  await slowDb?.destroy();
  await db?.destroy();
  await proxy?.close();
  await database?.drop();
});

test('a key revoked while a lookup of it is on its way is not cached as valid', async () => {
  const { id: userId } = await createUser(db, { telegramId: 990_001 });
  const { id: keyId, key } = await createApiKey(db, { userId });
  const keys = new KeyAuthenticator(slowDb, database.url, createLogger('silent'));
  await keys.start();
  try {
    await expect(keys.authenticate(`Bearer ${key}`)).resolves.toMatchObject({ keyId });
    // Its last-use write (off the request path) done and answered, every connection of the
    // pool is idle: the next lookup goes out at once, with no connection handshake to hold.
    await waitFor(async () => (await lastUsed(keyId)) !== null);
    await waitFor(
      async () => slowPool.totalCount > 0 && slowPool.idleCount === slowPool.totalCount,
    );
    keys.invalidate();

    // The next lookup reads the key while it is still valid (its answer is on the way back,
    // so the server has run it); the answer is held up while the key is revoked and every
    // process told so.
    proxy.holdAnswers(true);
    const inFlight = keys.authenticate(`Bearer ${key}`);
    await waitFor(async () => proxy.heldAnswers() > 0);
    // Returns once committed; this process's own caches are told then (other processes by the
    // NOTIFY the revocation's transaction sent).
    await revokeApiKey(db, { userId, keyId });
    proxy.holdAnswers(false);
    await expect(inFlight).resolves.toMatchObject({ keyId }); // it began before the revocation

    // Every call after the revocation is refused.
    await expect(keys.authenticate(`Bearer ${key}`)).rejects.toMatchObject({ status: 401 });
  } finally {
    await keys.close();
  }
});

test('a key revoked with `lingxi keys revoke` is refused by a gateway already running that had it cached', async () => {
  const { models } = await gateway();
  const { id: userId } = await createUser(db, { telegramId: 990_002 });
  const leaked = await createApiKey(db, { userId, name: 'leaked' });
  const kept = await createApiKey(db, { userId, name: 'kept' });
  expect(await models(leaked.key)).toBe(200);
  // The gateway answers from its cache: a revocation written behind its back (no NOTIFY) is
  // not seen. Undone before the real one.
  await db
    .updateTable('api_keys')
    .set({ revoked_at: new Date() })
    .where('id', '=', leaked.id)
    .execute();
  expect(await models(leaked.key)).toBe(200);
  await db.updateTable('api_keys').set({ revoked_at: null }).where('id', '=', leaked.id).execute();

  const revoked = await runLingxi(gatewayConfig!, ['keys', 'revoke', leaked.id, '--json']);
  expect({ code: revoked.code, stderr: revoked.stderr }).toEqual({ code: 0, stderr: '' });
  expect(revoked.json()).toMatchObject({ id: leaked.id, alreadyRevoked: false });
  // The NOTIFY's trip (milliseconds), far inside the cache's minute: without it, 200 until then.
  await expect.poll(() => models(leaked.key), { timeout: 20_000, interval: 20 }).toBe(401);
  expect(await models(kept.key)).toBe(200);
});

test('a key revoked by a process that loses the database right after the commit is refused by a running gateway that had it cached', async () => {
  const { models } = await gateway();
  const { id: userId } = await createUser(db, { telegramId: 990_003 });
  const leaked = await createApiKey(db, { userId, name: 'leaked' });
  expect(await models(leaked.key)).toBe(200);
  expect(await models(leaked.key)).toBe(200); // from its cache now

  // The revoking process can send nothing once its transaction has committed.
  const doomed = await cutOffAfterCommit();
  await revokeApiKey(doomed, { userId, keyId: leaked.id }).catch(() => {});
  expect(await revokedAt(leaked.id)).not.toBeNull(); // the revocation itself committed
  // The NOTIFY's trip (milliseconds), far inside the cache's minute: without it, 200 until then.
  await expect.poll(() => models(leaked.key), { timeout: 20_000, interval: 20 }).toBe(401);
});

test.each(['revocation', 'suspension', 'erasure'] as const)(
  'key change (%s): every process is told even when the changing one loses the database right after the commit',
  async (change) => {
    const telegramId = 990_010 + ['revocation', 'suspension', 'erasure'].indexOf(change);
    const { id: userId } = await createUser(db, { telegramId });
    const { id: keyId } = await createApiKey(db, { userId });
    const heard = await listenForKeyChanges();

    const doomed = await cutOffAfterCommit();
    const now = new Date();
    const made =
      change === 'revocation'
        ? revokeApiKey(doomed, { userId, keyId })
        : change === 'suspension'
          ? setSuspension(doomed, { userId, suspended: true, reason: 'leaked key', now })
          : eraseAccount(doomed, await openLedger(database.newPool(2)), {
              userId,
              confirm: 'erase my account',
              now,
            });
    // What comes after the commit (the old separate NOTIFY, an erasure's ledger entry and audit
    // record) fails: the database is gone for this process.
    await made.catch(() => {});
    const user = await db
      .selectFrom('users')
      .select('status')
      .where('id', '=', userId)
      .executeTakeFirstOrThrow();
    expect({ status: user.status, keyRevoked: (await revokedAt(keyId)) !== null }).toEqual(
      change === 'revocation'
        ? { status: 'active', keyRevoked: true }
        : change === 'suspension'
          ? { status: 'suspended', keyRevoked: false }
          : { status: 'erased', keyRevoked: true },
    );
    // Notifications arrive in the order their transactions committed: once the marker, sent
    // after the change committed, is in, so is the change's NOTIFY if it was ever sent.
    expect(await heard.untilMarker()).toEqual(['lingxi_keys']);
  },
);

let gatewayConfig: string | undefined;
let gatewayModels: ((key: string) => Promise<number>) | undefined;

/** One `lingxi serve` in another process: only a NOTIFY can reach its key cache. */
async function gateway(): Promise<{ models: (key: string) => Promise<number> }> {
  if (!gatewayModels) {
    dir = mkdtempSync(join(tmpdir(), 'lingxi-key-cache-'));
    gatewayConfig = join(dir, 'lingxi.config.json');
    writeFileSync(
      gatewayConfig,
      JSON.stringify({
        http: { host: '127.0.0.1', port: 0 },
        database: { url: database.url, poolSize: 3 },
        log: { level: 'info' },
      }),
    );
    const child = startLingxi(['serve', '--config', gatewayConfig]);
    processes.push(child);
    const baseUrl = await child.url();
    gatewayModels = async (key: string) =>
      (await fetch(`${baseUrl}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;
  }
  return { models: gatewayModels };
}

/**
 * A database handle whose process loses the database the moment a change commits (every
 * connection reset, every new one refused), as if it died or lost its link right then: the
 * answer to a transaction's COMMIT, or to a write sent outside a transaction (which commits by
 * itself), is the last thing it gets.
 */
async function cutOffAfterCommit(): Promise<Kysely<Database>> {
  const url = new URL(database.url);
  const link = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
  url.host = link.address;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 2 });
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    let inTransaction = false;
    Object.assign(client, {
      query: (...args: unknown[]) => {
        const text = typeof args[0] === 'string' ? args[0].trim().toLowerCase() : '';
        const commits =
          text === 'commit' || (!inTransaction && /^(with|insert|update|delete)\b/.test(text));
        if (text === 'begin') inTransaction = true;
        if (text === 'commit' || text === 'rollback') inTransaction = false;
        const answer = query(...args);
        if (!commits || !(answer instanceof Promise)) return answer;
        return answer.then((result: unknown) => {
          link.refuse(true);
          link.cut();
          return result;
        });
      },
    });
  });
  const doomed = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  cleanups.push(
    () => link.close(),
    () => doomed.destroy(),
  );
  return doomed;
}

const MARKER = 'key_cache_test_marker';

/** A LISTEN on lingxi_keys and a marker channel, on a connection of its own. */
async function listenForKeyChanges(): Promise<{ untilMarker: () => Promise<string[]> }> {
  const client = new pg.Client({ connectionString: database.url });
  await client.connect();
  cleanups.push(() => client.end());
  const channels: string[] = [];
  let markerHeard: () => void = () => {};
  const marker = new Promise<void>((resolve) => (markerHeard = resolve));
  client.on('notification', ({ channel }) => {
    if (channel === MARKER) markerHeard();
    else channels.push(channel);
  });
  await client.query(`listen lingxi_keys; listen ${MARKER}`);
  return {
    async untilMarker() {
      await database.pool.query(`select pg_notify('${MARKER}', '')`);
      await marker;
      return channels;
    },
  };
}

async function revokedAt(keyId: string): Promise<Date | null> {
  const row = await db
    .selectFrom('api_keys')
    .select('revoked_at')
    .where('id', '=', keyId)
    .executeTakeFirstOrThrow();
  return row.revoked_at === null ? null : new Date(row.revoked_at);
}

async function lastUsed(keyId: string): Promise<Date | null> {
  const row = await db
    .selectFrom('api_keys')
    .select('last_used_at')
    .where('id', '=', keyId)
    .executeTakeFirstOrThrow();
  return row.last_used_at;
}

async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  for (const giveUpAt = Date.now() + 30_000; !(await condition());) {
    if (Date.now() > giveUpAt) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
