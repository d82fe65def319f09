import { existsSync, readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { Kysely, PostgresDialect } from 'kysely';
import { migrateToLatest } from '../src/db/migrate.js';

export interface LoadResult {
  operations: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

/** Runs `work` from `concurrency` callers in a closed loop for `seconds` and measures each call. */
export async function closedLoop(
  concurrency: number,
  seconds: number,
  work: (caller: number, i: number) => Promise<void>,
): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, caller) => {
      for (let i = 0; performance.now() < deadline; i += 1) {
        const t0 = performance.now();
        try {
          await work(caller, i);
          latencies.push(performance.now() - t0);
        } catch {
          errors += 1;
        }
      }
    }),
  );
  return summarize(latencies, errors, started);
}

/**
 * Runs `work` at a fixed total rate for `seconds`, from up to `concurrency` callers: call i is
 * due at start + i / rate, and its latency counts from when it was due (so a call that had to
 * wait for a free caller counts its wait). At a rate every path sustains, this measures what
 * a hop adds to a call rather than how long calls queue at saturation.
 */
export async function pacedLoop(
  concurrency: number,
  seconds: number,
  ratePerSecond: number,
  work: (caller: number, i: number) => Promise<void>,
): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  const total = Math.floor(seconds * ratePerSecond);
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, caller) => {
      for (;;) {
        const i = next++;
        if (i >= total) return;
        const due = started + (i * 1000) / ratePerSecond;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        try {
          await work(caller, i);
          latencies.push(performance.now() - due);
        } catch {
          errors += 1;
        }
      }
    }),
  );
  return summarize(latencies, errors, started);
}

/** Throughput and latency percentiles of a run that started at `started` (performance.now()). */
function summarize(latencies: number[], errors: number, started: number): LoadResult {
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    operations: latencies.length,
    seconds: elapsed,
    perSecond: latencies.length / elapsed,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    errors,
  };
}

export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** A fresh, migrated database for a benchmark on the server of DATABASE_URL (default: the local one). */
export async function freshDatabase(name: string): Promise<string> {
  const adminUrl = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 1 });
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
  await migrateToLatest(db);
  await db.destroy();
  return url.toString();
}

export function fmt(value: number, digits = 1): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-';
}

/** CPU seconds (user + system) a process has used, from /proc; null where there is no /proc. */
function cpuSecondsOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return null;
  }
}
/** Linux's USER_HZ, the unit of /proc/PID/stat's times, is 100 on every architecture Node runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

/** CPU seconds used so far by each PostgreSQL server process on this machine, by pid. */
function postgresCpuSeconds(): Map<number, number> | null {
  if (!existsSync('/proc')) return null;
  const used = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/cmdline`, 'utf8').startsWith('postgres')) continue;
    } catch {
      continue;
    }
    const seconds = cpuSecondsOf(Number(entry));
    if (seconds !== null) used.set(Number(entry), seconds);
  }
  return used;
}

/**
 * Cores (CPU seconds per second) each named process, and PostgreSQL's processes together
 * (`postgres`), used while `run` ran; null where unknown. A PostgreSQL backend that exits
 * during the run is not counted.
 */
export async function measureCpu<T>(
  processes: Record<string, number>,
  run: () => Promise<T>,
): Promise<{ result: T; cores: Record<string, number | null> }> {
  const read = () =>
    new Map(Object.entries(processes).map(([name, pid]) => [name, cpuSecondsOf(pid)]));
  const before = read();
  const postgresBefore = postgresCpuSeconds();
  const started = performance.now();
  const result = await run();
  const seconds = (performance.now() - started) / 1000;
  const after = read();
  const postgresAfter = postgresCpuSeconds();
  const cores: Record<string, number | null> = {};
  for (const [name, used] of after) {
    const was = before.get(name);
    cores[name] = used === null || was == null ? null : (used - was) / seconds;
  }
  cores['postgres'] = null;
  if (postgresBefore !== null && postgresAfter !== null) {
    let used = 0;
    for (const [pid, now] of postgresAfter) used += now - (postgresBefore.get(pid) ?? 0);
    cores['postgres'] = used / seconds;
  }
  return { result, cores };
}
