import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, expect, test, vi } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics.js';
import { nodeCronScheduler } from '../../src/roles/cron.js';
import { runLingxi } from '../support/cli.js';

/**
 * Cron schedules are read in one configured time zone (`cron.timezone`, UTC by default), not
 * in each machine's: two cron processes on machines set to different zones compute the same
 * ticks, so each tick still runs once across them. The machine here is set to Shanghai
 * (UTC+8) and the clock is simulated (fake timers), so nothing waits for a real day.
 */

const zone = process.env['TZ'];
afterEach(() => {
  vi.useRealTimers();
  if (zone === undefined) delete process.env['TZ'];
  else process.env['TZ'] = zone;
});

/** The turns a daily "0 3 * * *" schedule fires while the simulated clock runs a day from `from`. */
async function dailyTurns(config: Record<string, unknown>, from: string): Promise<string[]> {
  process.env['TZ'] = 'Asia/Shanghai';
  vi.useFakeTimers({ now: new Date(from) });
  const runtime = {
    config: parseConfig(config, {}),
    logger: pino({ level: 'silent' }),
    metrics: new Metrics(() => Promise.resolve(0)),
  };
  const fired: string[] = [];
  const task = nodeCronScheduler(runtime)({ name: 'retention', schedule: '0 3 * * *' }, (at) => {
    fired.push(at.toISOString());
    return Promise.resolve();
  });
  try {
    await vi.advanceTimersByTimeAsync(24 * 3600 * 1000);
  } finally {
    await task.stop();
  }
  return fired;
}

test('by default a daily schedule runs at its hour in UTC, whatever zone the machine is set to', async () => {
  expect(await dailyTurns({}, '2026-01-01T00:00:00Z')).toEqual(['2026-01-01T03:00:00.000Z']);
});

test('cron.timezone reads the schedules in that zone', async () => {
  expect(
    await dailyTurns({ cron: { timezone: 'America/New_York' } }, '2026-01-01T00:00:00Z'),
  ).toEqual(['2026-01-01T08:00:00.000Z']);
});

test('a schedule or a time zone that is not one is refused at start, naming the field', () => {
  expect(() => parseConfig({ cron: { retention: '17 3 * *' } }, {})).toThrow(
    /config cron\.retention: must be a cron schedule/,
  );
  expect(() => parseConfig({ cron: { reconcile: 'every ten minutes' } }, {})).toThrow(
    /config cron\.reconcile: must be a cron schedule/,
  );
  // Schedules node-cron's own check passes but that can never run: refused at config load,
  // not by a role that fails to start (April has no 31st).
  expect(() => parseConfig({ cron: { seal: '0 0 31W 4 *' } }, {})).toThrow(
    /config cron\.seal: must be a cron schedule .*: Could not find next matching date/,
  );
  expect(() => parseConfig({ cron: { expireHolds: '0 0 30 2 *' } }, {})).toThrow(
    /config cron\.expireHolds: must be a cron schedule .*impossible day of month/,
  );
  expect(() => parseConfig({ cron: { retention: '61 * * * *' } }, {})).toThrow(
    /config cron\.retention: must be a cron schedule .*61 is a invalid expression for minute/,
  );
  expect(() => parseConfig({ cron: { timezone: 'Mars/Olympus' } }, {})).toThrow(
    /config cron\.timezone: must be an IANA time zone/,
  );
});

test('every schedule field is checked at load by `lingxi doctor` (the loader every command uses) as the cron role starts it, naming the field', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lingxi-cron-schedules-'));
  const file = join(dir, 'lingxi.config.json');
  // A database nobody answers on: a config that loads would be checked against it and fail
  // there instead, a minute later than the config.
  const doctor = async (cron: Record<string, string>) => {
    writeFileSync(
      file,
      JSON.stringify({
        database: { url: 'postgres://127.0.0.1:1/none', connectTimeoutMs: 500 },
        cron,
      }),
    );
    const { code, stdout } = await runLingxi(file, ['doctor', '--json', '--timeout', '500']);
    const report = JSON.parse(stdout) as { checks: Array<{ area: string; message: string }> };
    return { code, first: report.checks[0]! };
  };
  const bad: Array<[string, RegExp, Record<string, string>?]> = [
    // node-cron's own check passes these; they never fall due and starting them throws.
    ['0 0 31W 4 *', /Could not find next matching date/],
    ['0 0 0 31 11 *', /impossible day of month/],
    // 2:30 on the second Sunday of March does not happen in New York (summer time starts):
    // fine in UTC, never due in that zone.
    [
      '30 2 * 3 0#2',
      /falls due read in cron\.timezone \(America\/New_York\).*Could not find next matching date/,
      { timezone: 'America/New_York' },
    ],
    ['61 * * * *', /61 is a invalid expression for minute/],
    ['0 24 * * *', /24 is a invalid expression for hour/],
    ['0 3 * 13 *', /13 is a invalid expression for month/],
    ['0 3 * * 8', /8 is a invalid expression for week day/],
    ['every ten minutes', /expected 5 or 6 fields/],
    ['17 3 * *', /expected 5 or 6 fields but got 4/],
    ['', /must be a cron schedule/],
  ];
  try {
    for (const job of ['reconcile', 'expireHolds', 'seal', 'retention']) {
      for (const [schedule, reason, extra] of bad) {
        const { code, first } = await doctor({ ...extra, [job]: schedule });
        expect({ job, schedule, code, area: first.area }).toEqual({
          job,
          schedule,
          code: 1,
          area: 'config',
        });
        expect(first.message).toMatch(new RegExp(`^config cron\\.${job}: must be a cron schedule`));
        expect(first.message).toMatch(reason);
      }
    }
    // The same schedule in UTC loads, and the cron role starts it.
    const config = parseConfig({ cron: { retention: '30 2 * 3 0#2' } }, {});
    const task = nodeCronScheduler({
      config,
      logger: pino({ level: 'silent' }),
      metrics: new Metrics(() => Promise.resolve(0)),
    })({ name: 'retention', schedule: config.cron.retention }, () => Promise.resolve());
    await task.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
