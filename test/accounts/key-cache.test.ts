import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { Database } from '../../src/db/schema.js';
import { createApiKey, notifyKeyChange, revokeApiKey } from '../../src/keys/apiKeys.js';
import { KeyAuthenticator } from '../../src/keys/keyAuthenticator.js';
import { createLogger } from '../../src/log.js';
import { createUser } from '../../src/users/createUser.js';
import { runLingxi } from '../support/cli.js';
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
    await revokeApiKey(db, { userId, keyId });
    await notifyKeyChange(db);
    await new Promise((resolve) => setTimeout(resolve, 200)); // NOTIFY reaches the listener
    proxy.holdAnswers(false);
    await expect(inFlight).resolves.toMatchObject({ keyId }); // it began before the revocation

    // Every call after the revocation is refused.
    await expect(keys.authenticate(`Bearer ${key}`)).rejects.toMatchObject({ status: 401 });
  } finally {
    await keys.close();
  }
});

test('a key revoked with `lingxi keys revoke` is refused by a gateway already running that had it cached', async () => {
  dir = mkdtempSync(join(tmpdir(), 'lingxi-key-cache-'));
  const configFile = join(dir, 'lingxi.config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      http: { host: '127.0.0.1', port: 0 },
      database: { url: database.url, poolSize: 3 },
      log: { level: 'info' },
    }),
  );
  // The gateway is another process: only the NOTIFY of the CLI's revocation can reach its cache.
  const gateway = startLingxi(['serve', '--config', configFile]);
  processes.push(gateway);
  const baseUrl = await gateway.url();
  const models = async (key: string) =>
    (await fetch(`${baseUrl}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;

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

  const revoked = await runLingxi(configFile, ['keys', 'revoke', leaked.id, '--json']);
  expect({ code: revoked.code, stderr: revoked.stderr }).toEqual({ code: 0, stderr: '' });
  expect(revoked.json()).toMatchObject({ id: leaked.id, alreadyRevoked: false });
  // The NOTIFY's trip (milliseconds), far inside the cache's minute: without it, 200 until then.
  await expect.poll(() => models(leaked.key), { timeout: 20_000, interval: 20 }).toBe(401);
  expect(await models(kept.key)).toBe(200);
});

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
