import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import Koa from 'koa';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { connect } from '../../src/db/connect.js';
import { healthRoutes } from '../../src/http/routes/health.js';
import type { Runtime } from '../../src/runtime.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';

/** Liveness answers while the process runs; readiness also needs the database and no shutdown. */

let database: TestDatabase;
let silent: ReturnType<typeof createTcpServer>;
const sockets: Socket[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  // Accepts connections and never says a word: a database host that hangs.
  silent = createTcpServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => silent.close(resolve));
  await database?.drop();
});

async function probe(
  databaseUrl: string,
  isShuttingDown = () => false,
): Promise<{ livez: number; readyz: number; body: unknown }> {
  const handle = connect(databaseUrl, 1);
  const app = new Koa();
  const router = healthRoutes(
    { database: { ...handle, embedded: false } } as Pick<Runtime, 'database'>,
    isShuttingDown,
  );
  app.use(router.routes());
  const server = createHttpServer(app.callback());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const livez = await fetch(`${url}/livez`);
    const readyz = await fetch(`${url}/readyz`);
    return { livez: livez.status, readyz: readyz.status, body: await readyz.json() };
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    // A connection attempt to the silent host would hold the pool open: cut it first.
    for (const socket of sockets.splice(0)) socket.destroy();
    await handle.close().catch(() => {});
  }
}

test('ready when the database answers', async () => {
  expect(await probe(database.url)).toEqual({
    livez: 200,
    readyz: 200,
    body: { status: 'ok', database: 'ok' },
  });
});

test('not ready while shutting down, alive all the same', async () => {
  expect(await probe(database.url, () => true)).toEqual({
    livez: 200,
    readyz: 503,
    body: { status: 'shutting_down' },
  });
});

test('not ready when the database refuses connections', async () => {
  const closed = createTcpServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  expect(await probe(`postgres://lingxi@127.0.0.1:${port}/lingxi`)).toEqual({
    livez: 200,
    readyz: 503,
    body: { status: 'unavailable', database: 'unreachable' },
  });
});

test('not ready when the database host hangs', async () => {
  const port = (silent.address() as AddressInfo).port;
  const result = await probe(`postgres://lingxi@127.0.0.1:${port}/lingxi`);
  expect(result).toEqual({
    livez: 200,
    readyz: 503,
    body: { status: 'unavailable', database: 'timeout' },
  });
});

test('a query to a database host that hangs fails with a timeout instead of waiting', async () => {
  const port = (silent.address() as AddressInfo).port;
  const handle = connect(`postgres://lingxi@127.0.0.1:${port}/lingxi`, 1, {
    connectTimeoutMs: 300,
  });
  try {
    await expect(handle.pool.query('select 1')).rejects.toThrow(/timeout/i);
  } finally {
    for (const socket of sockets.splice(0)) socket.destroy();
    await handle.close().catch(() => {});
  }
});
