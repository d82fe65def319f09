import type { Command } from 'commander';
import { AppError } from '../../errors.js';
import type { DoctorCheck } from '../../doctor/check.js';
import { runDoctor, type DoctorReport } from '../../doctor/runDoctor.js';
import { FindingsExit, type CliContext } from '../context.js';

const STATUS_WORD = { ok: 'ok', warn: 'warn', fail: 'FAIL' } as const;

/**
 * `lingxi doctor [--timeout MS]`: checks the config, the database, every network endpoint,
 * every model provider, the deposit keys and the secrets; prints each check with what to do.
 * Exit 0 when nothing failed (warnings allowed), 1 when something did.
 */
export function registerDoctorCommand(program: Command, cli: CliContext): void {
  program
    .command('doctor')
    .description(
      'check a deployment: config, database, RPC endpoints, providers, keys and secrets (exit 1 on a failure)',
    )
    .option('--timeout <ms>', 'longest wait for any one answer', '10000')
    .action(async (options: { timeout: string }, command: Command) => {
      const timeoutMs = Number(options.timeout);
      if (!Number.isInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 300_000)
        throw new AppError('invalid_timeout', `--timeout ${options.timeout}: 100 to 300000 ms`);
      const { config: configFlag } = command.optsWithGlobals() as { config?: string };
      const report = await runDoctor({
        timeoutMs,
        ...(configFlag !== undefined ? { configFlag } : {}),
      });
      cli.out(command).data(report, formatReport(report));
      if (!report.ok)
        throw new FindingsExit(
          `doctor: ${report.counts.fail} ${report.counts.fail === 1 ? 'check' : 'checks'} failed`,
        );
    });
}

export function formatReport(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((check) => check.area.length));
  const lines = report.checks.flatMap((check: DoctorCheck) => {
    const head = `${STATUS_WORD[check.status].padEnd(4)}  ${check.area.padEnd(width)}  ${check.message}`;
    return check.fix && check.status !== 'ok'
      ? [head, `${' '.repeat(width + 8)}fix: ${check.fix}`]
      : [head];
  });
  const { ok, warn, fail } = report.counts;
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  lines.push(
    '',
    `${plural(ok, 'check')} ok, ${plural(warn, 'warning')}, ${plural(fail, 'failure')}${fail === 0 ? ': ready to run' : ''}`,
  );
  return lines.join('\n');
}
