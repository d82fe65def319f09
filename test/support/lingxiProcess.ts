import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';

/** A `lingxi` command run as a real child process from the sources, its JSON log collected. */
export interface LingxiProcess {
  child: ChildProcess;
  /** Every stderr line, parsed (a line that is not JSON is kept as `{msg, notJson: true}`). */
  log: Array<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first log line that matches; rejects on exit or after `timeoutMs`. */
  waitForLog(
    match: (entry: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** The http role's URL, from its `http listening on` line. */
  url(timeoutMs?: number): Promise<string>;
}

/**
 * `node bin/lingxi.js ARGS` with LINGXI_FROM_SOURCE=1 and no DATABASE_URL unless given;
 * `as` runs it as another user (the tests must then run as root); `cwd` in another directory
 * (where `./lingxi.config.json` is looked for).
 */
export function startLingxi(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  as?: { uid: number; gid: number },
  cwd?: string,
): LingxiProcess {
  const child = spawn(process.execPath, [resolve('bin/lingxi.js'), ...args], {
    env: { ...process.env, LINGXI_FROM_SOURCE: '1', DATABASE_URL: '', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(as ?? {}),
    ...(cwd === undefined ? {} : { cwd }),
  });
  const log: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
      for (const wake of waiters) wake();
    }),
  );
  let buffered = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.trim()) continue;
      try {
        log.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        log.push({ msg: line, notJson: true });
      }
    }
    for (const wake of waiters) wake();
  });
  const waitForLog: LingxiProcess['waitForLog'] = (match, timeoutMs = 60_000) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no such log line in ${timeoutMs} ms: ${JSON.stringify(log)}`));
      }, timeoutMs);
      function check() {
        const found = log.find(match);
        if (!found && !done) return;
        clearTimeout(timer);
        waiters.delete(check);
        if (found) resolve(found);
        else reject(new Error(`lingxi exited first: ${JSON.stringify(log)}`));
      }
      waiters.add(check);
      check();
    });
  return {
    child,
    log,
    exited,
    waitForLog,
    async url(timeoutMs = 60_000) {
      const line = await waitForLog(
        (entry) =>
          typeof entry['url'] === 'string' && String(entry['msg']).startsWith('http listening'),
        timeoutMs,
      );
      return line['url'] as string;
    },
  };
}

/** The messages of a log, in order. */
export function messages(log: ReadonlyArray<Record<string, unknown>>): string[] {
  return log.map((entry) => String(entry['msg']));
}
