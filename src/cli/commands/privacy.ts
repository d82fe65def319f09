import type { Command } from 'commander';
import { retentionNow, runRetention } from '../../privacy/retention.js';
import type { CliContext } from '../context.js';

/** `lingxi retention run`: the retention policy of docs/privacy.md, once. */
export function registerPrivacyCommands(program: Command, cli: CliContext): void {
  const retention = program.command('retention').description('the data retention policy');
  retention
    .command('run')
    .description(
      'scrub request metadata and roll old usage rows into daily aggregates (retention.* in the config)',
    )
    .option('--now <iso>', 'act as if it were this time (for catching up or testing)')
    .action(async (options: { now?: string }, command: Command) => {
      const chosen = options.now === undefined ? null : new Date(options.now);
      if (chosen !== null && Number.isNaN(chosen.getTime()))
        throw new Error(`--now must be an ISO 8601 time, not "${options.now}"`);
      // Without --now: the earlier of this machine's clock and the database's.
      const result = await cli.withRuntime(command, async (runtime) =>
        runRetention(
          runtime.database.unbounded.db,
          runtime.config,
          chosen ?? (await retentionNow(runtime.database.db)),
        ),
      );
      cli
        .out(command)
        .data(
          result,
          [
            `request metadata removed from ${result.scrubbedRows} usage rows (finished before ${result.requestMetaCutoff})`,
            `${result.rolledUpRows} usage rows rolled into ${result.aggregatesTouched} daily aggregates (finished before ${result.usageLogCutoff})`,
            `${result.prunedSessions} ended sessions, ${result.prunedLoginReplays} expired Telegram login hashes, ${result.prunedIdempotencyKeys} old Idempotency-Key records, ${result.prunedKeyReservations} released spend-limit reservations and ${result.prunedRateLimitBuckets} idle rate-limit buckets deleted`,
            ...(result.complete ? [] : ['stopped at the per-run bound; run again to continue']),
          ].join('\n'),
        );
    });
}
