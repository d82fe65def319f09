import { spawnSync } from 'node:child_process';
import { expect, test } from 'vitest';

/**
 * Every role logs through createLogger: an error logged as `err` is written whole (its type,
 * stack and causes) and no URL in it keeps its user, path or query, where RPC endpoints carry
 * API keys (docs/security.md: keys are never logged). Run in a child process, as the service
 * logs: JSON lines on stderr.
 */
test('the service logger writes an error with its causes and cuts the URLs in it to their host', () => {
  const script = `
    import { createLogger } from './src/log.ts';
    const cause = new Error('POST https://user:pw@rpc.example.org/v3/SECRETKEY123?apikey=SECRET456 failed');
    const error = new TypeError('the watcher could not read block 12', { cause });
    createLogger('info').error({ err: error, network: 'ethereum' }, 'watcher stopped');
  `;
  const child = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script],
    { encoding: 'utf8' },
  );
  expect(child.status).toBe(0);
  const line = JSON.parse(child.stderr.trim()) as {
    msg: string;
    err: { type: string; message: string; stack: string };
  };
  expect(line.msg).toBe('watcher stopped');
  expect(line.err.type).toBe('TypeError');
  expect(line.err.message).toBe(
    'the watcher could not read block 12: POST https://rpc.example.org failed',
  );
  expect(line.err.stack).toContain('caused by: Error: POST https://rpc.example.org failed');
  const whole = child.stderr;
  expect(whole).not.toContain('SECRET');
  expect(whole).not.toContain('pw@');
});
