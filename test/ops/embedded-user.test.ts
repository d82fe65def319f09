import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { serverAnswers } from '../../src/db/embedded.js';
import { freePort } from '../support/freePort.js';
import { startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';

/**
 * `npm start` on the embedded PostgreSQL works for a normal user, not only for root (as root
 * the server runs as a `postgres` system user; as anyone else, as that user). The suite usually
 * runs as root (CI does), so the service is started here as `nobody`; run as a normal user, it
 * runs as that user.
 */

const running: LingxiProcess[] = [];
const dirs: string[] = [];
afterAll(() => {
  for (const process of running) process.child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function normalUser(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined; // already one
  const id = (flag: string) => Number(execFileSync('id', [flag, 'nobody']).toString().trim());
  return { uid: id('-u'), gid: id('-g') };
}

test('a normal user serves on the embedded PostgreSQL, which keeps its files as that user and stops with it', async () => {
  const as = normalUser();
  const expectedUid = as?.uid ?? userInfo().uid;
  const dir = mkdtempSync(join(tmpdir(), 'lingxi-user-'));
  dirs.push(dir);
  if (as) chownSync(dir, as.uid, as.gid);
  const port = await freePort();
  const file = join(dir, 'lingxi.json');
  writeFileSync(
    file,
    JSON.stringify({
      log: { level: 'info' },
      http: { port: 0 },
      database: { embedded: { dir: join(dir, 'pg'), port } },
    }),
  );

  // HOME and TMPDIR the user can write (tsx keeps its cache under the temporary directory).
  const lingxi = startLingxi(['serve', '--config', file], { HOME: dir, TMPDIR: dir }, as);
  running.push(lingxi);
  const url = await lingxi.url(120_000);
  expect((await fetch(`${url}/readyz`)).status).toBe(200);
  const serverUrl = `postgres://postgres:lingxi-embedded@127.0.0.1:${port}/lingxi`;
  expect(await serverAnswers(serverUrl, 10_000)).toBe(true);
  expect(statSync(join(dir, 'pg', 'PG_VERSION')).uid).toBe(expectedUid);

  lingxi.child.kill('SIGTERM');
  expect(await lingxi.exited).toEqual({ code: 0, signal: null });
  expect(await serverAnswers(serverUrl, 2000)).toBe(false);
}, 180_000);
