import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { fund, openLedger } from '../support/ledger.js';

let database: TestDatabase;
let ledger: PostgresLedger;
let configFile: string;

beforeAll(async () => {
  database = await createTestDatabase();
  ledger = await openLedger(database.pool);
  // A journal larger than a pipe's buffer, so the export is still writing when the reader leaves.
  await Promise.all(Array.from({ length: 1500 }, (_, i) => fund(ledger, `p${i % 50}`, '1.25')));
  configFile = join(mkdtempSync(join(tmpdir(), 'lingxi-pipe-')), 'lingxi.config.json');
  writeFileSync(configFile, JSON.stringify({ database: { url: database.url } }));
});
afterAll(async () => {
  await ledger?.close();
  await database?.drop();
});

test('an export piped into a reader that stops early (`| head`) ends quietly: exit 0, no stack trace', async () => {
  const bin = join(import.meta.dirname, '..', '..', 'bin', 'lingxi.js');
  const shell = spawn(
    'bash',
    [
      '-c',
      `node "${bin}" export journal --format csv --config "${configFile}" | head -c 200 > /dev/null; echo "status=\${PIPESTATUS[0]}" >&2`,
    ],
    { env: { ...process.env, LINGXI_FROM_SOURCE: '1' } },
  );
  let stderr = '';
  shell.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  await new Promise((resolve) => shell.once('exit', resolve));
  expect(stderr).toBe('status=0\n');
}, 60_000);

test('an export --out a file that cannot be written exits 2 with a one-line reason, not a crash', async () => {
  const bin = join(import.meta.dirname, '..', '..', 'bin', 'lingxi.js');
  const dir = mkdtempSync(join(tmpdir(), 'lingxi-out-'));
  const out = join(dir, 'no-such-dir', 'journal.csv');
  const child = spawn(
    process.execPath,
    [bin, 'export', 'journal', '--format', 'csv', '--out', out, '--json', '--config', configFile],
    { env: { ...process.env, LINGXI_FROM_SOURCE: '1' } },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise((resolve) => child.once('exit', resolve));
  expect({ code, stdout }).toEqual({ code: 2, stdout: '' });
  expect(stderr).toBe(
    `lingxi: cannot write ${out}: ENOENT: no such file or directory, open '${out}.partial'\n`,
  );
}, 60_000);
