import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { messages, startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';

let database: TestDatabase;
let dir: string;
const processes: LingxiProcess[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  dir = mkdtempSync(join(tmpdir(), 'lingxi-start-notices-'));
});
afterAll(async () => {
  for (const p of processes) p.child.kill('SIGTERM');
  await Promise.all(processes.map((p) => p.exited));
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const ADMIN_OFF = 'no adminToken configured';

/** `lingxi serve` with this config file, or with none (`null`); resolves once it listens. */
async function serveLog(config: Record<string, unknown> | null): Promise<string[]> {
  const cwd = mkdtempSync(join(dir, 'cwd-'));
  let args = ['serve', '--port', '0'];
  if (config) {
    const file = join(cwd, 'service.json');
    writeFileSync(file, JSON.stringify({ database: { url: database.url }, ...config }));
    args = [...args, '--config', file];
  }
  const started = startLingxi(
    args,
    { DATABASE_URL: database.url, LINGXI_CONFIG: '' },
    undefined,
    cwd,
  );
  processes.push(started);
  await started.url();
  return messages(started.log);
}

test('an http role without an admin token says at start that the admin API is off, as the docs promise', async () => {
  const [noFile, noToken, withToken] = await Promise.all([
    serveLog(null),
    serveLog({}),
    serveLog({ adminToken: 'a-long-enough-admin-token-0123456789' }),
  ]);
  expect(noFile.filter((m) => m.includes(ADMIN_OFF))).toEqual([
    'no adminToken configured: the admin API (/admin) is off (403 admin_disabled)',
  ]);
  expect(noToken.filter((m) => m.includes(ADMIN_OFF))).toHaveLength(1);
  expect(withToken.filter((m) => m.includes(ADMIN_OFF))).toEqual([]);
});
