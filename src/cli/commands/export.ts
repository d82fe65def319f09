import { once } from 'node:events';
import cliProgress from 'cli-progress';
import { Option, type Command } from 'commander';
import { parseJournalFilter, TIME_BASES } from '../../exports/journalFilter.js';
import { streamSealsJsonl } from '../../exports/sealsJsonl.js';
import { writeChunksToFile } from '../../exports/sinks.js';
import { streamStatementCsv } from '../../exports/statementCsv.js';
import { JOURNAL_FORMATS, streamJournal, type JournalFormat } from '../../exports/streamJournal.js';
import { streamTrialBalanceCsv } from '../../exports/trialBalanceCsv.js';
import { requireUser } from '../../users/createUser.js';
import { badRequest } from '../../errors.js';
import { auditCli, type CliContext, type CliIo } from '../context.js';

interface OutOption {
  out?: string;
}

/** `lingxi export journal|trial-balance|statement|seals`: streamed to --out FILE or stdout. */
export function registerExportCommands(program: Command, cli: CliContext): void {
  const exports = program
    .command('export')
    .description('export the books: streamed, deterministic, to --out FILE or stdout');

  exports
    .command('journal')
    .description('every entry in a range, as CSV (a line per posting), JSONL, hledger or beancount')
    .addOption(
      new Option('--format <format>', 'output format')
        .choices(JOURNAL_FORMATS)
        .makeOptionMandatory(),
    )
    .option('--from <iso>', 'first instant, inclusive (a date alone is UTC midnight)')
    .option('--to <iso>', 'end instant, exclusive')
    .option('--account <prefix>', 'only entries touching this account or its sub-accounts')
    .addOption(
      new Option('--basis <time>', 'filter and order by commit time or business time')
        .choices(TIME_BASES)
        .default('created'),
    )
    .option('--out <file>', 'write to this file (a progress bar shows on a terminal)')
    .action(
      async (
        options: OutOption & {
          format: JournalFormat;
          from?: string;
          to?: string;
          account?: string;
          basis: string;
        },
        command: Command,
      ) => {
        const filter = parseJournalFilter(withoutEmptyTimes(options));
        await cli.withRuntime(command, async (runtime) => {
          await auditCli(runtime, 'export.journal', null, { format: options.format, ...filter });
          const progress = progressBar(options.out);
          try {
            const chunks = streamJournal(runtime.database.unbounded.pool, {
              format: options.format,
              filter,
              ...(progress ? { onProgress: progress.update } : {}),
            });
            await emit(cli, command, chunks, options.out, () => progress?.stop());
          } finally {
            progress?.stop();
          }
        });
      },
    );

  exports
    .command('trial-balance')
    .description('debits, credits and balance per account, with a total line per currency, as CSV')
    .option('--to <iso>', 'as of this instant (exclusive); default: now, from the cached totals')
    .addOption(
      new Option('--basis <time>', 'time the --to instant applies to')
        .choices(TIME_BASES)
        .default('created'),
    )
    .option('--out <file>', 'write to this file')
    .action(async (options: OutOption & { to?: string; basis: string }, command: Command) => {
      const filter = parseJournalFilter(withoutEmptyTimes(options));
      await cli.withRuntime(command, async (runtime) => {
        await auditCli(runtime, 'export.trial_balance', null, { ...filter });
        await emit(
          cli,
          command,
          streamTrialBalanceCsv(runtime.database.unbounded.pool, {
            ...(filter.to !== undefined ? { to: filter.to } : {}),
            ...(filter.basis !== undefined ? { basis: filter.basis } : {}),
          }),
          options.out,
        );
      });
    });

  exports
    .command('statement')
    .description("a user's balance line by line with the running balance, as CSV")
    .requiredOption('--user <id>', 'user id')
    .option('--from <iso>', 'first instant, inclusive')
    .option('--to <iso>', 'end instant, exclusive')
    .option('--out <file>', 'write to this file')
    .action(
      async (
        options: OutOption & { user: string; from?: string; to?: string },
        command: Command,
      ) => {
        const filter = parseJournalFilter(withoutEmptyTimes(options));
        await cli.withRuntime(command, async (runtime) => {
          const user = await requireUser(runtime.database.db, options.user);
          await auditCli(runtime, 'export.statement', `user:${user.id}`, { ...filter });
          await emit(
            cli,
            command,
            streamStatementCsv(runtime.database.unbounded.pool, {
              userId: user.id,
              ...(filter.from !== undefined ? { from: filter.from } : {}),
              ...(filter.to !== undefined ? { to: filter.to } : {}),
            }),
            options.out,
          );
        });
      },
    );

  exports
    .command('seals')
    .description('the seal chain, one JSON object per line, oldest first')
    .option('--out <file>', 'write to this file')
    .action(async (options: OutOption, command: Command) => {
      await cli.withRuntime(command, (runtime) =>
        emit(cli, command, streamSealsJsonl(runtime.database.unbounded.pool), options.out),
      );
    });
}

/** To the file (then a one-line summary) or to stdout, the export itself. */
async function emit(
  cli: CliContext,
  command: Command,
  chunks: AsyncGenerator<string>,
  out: string | undefined,
  beforeSummary?: () => void,
): Promise<void> {
  if (out === undefined) {
    await writeToIo(cli.io, chunks);
    return;
  }
  const bytes = await writeChunksToFile(chunks, out);
  beforeSummary?.();
  cli.out(command).data({ file: out, bytes }, `wrote ${bytes} bytes to ${out}`);
}

async function writeToIo(io: CliIo, chunks: AsyncGenerator<string>): Promise<void> {
  try {
    for await (const chunk of chunks) {
      io.stdout(chunk);
      // When io is the process's stdout on a slow pipe, wait for it rather than buffer.
      if (process.stdout.writableNeedDrain) await once(process.stdout, 'drain');
    }
  } catch (error) {
    // The reader went away (`| head`): it has what it wanted; the export stops (leaving the
    // loop closes its cursor) and the command ends as a success, as Unix tools do.
    if ((error as NodeJS.ErrnoException).code === 'EPIPE') return;
    throw error;
  }
}

/** A bar on stderr, only for a file export on a terminal; nothing otherwise. */
function progressBar(
  out: string | undefined,
): { update: (p: { entries: number; totalEntries: number }) => void; stop: () => void } | null {
  if (out === undefined || !process.stderr.isTTY) return null;
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: 'exporting [{bar}] {percentage}% | {value}/{total} entries | {eta_formatted} left',
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update: ({ entries, totalEntries }) => {
      if (!started) {
        bar.start(totalEntries, entries);
        started = true;
      } else bar.update(entries);
    },
    stop: () => {
      if (started) bar.stop();
      started = false;
    },
  };
}

/**
 * `--from ""` (a script's unset variable) is refused, not read as "no bound": an export of the
 * whole book where a range was meant looks complete. Query strings keep `from=` as unset.
 */
function withoutEmptyTimes<T extends { from?: string; to?: string }>(options: T): T {
  for (const field of ['from', 'to'] as const)
    if (options[field] !== undefined && options[field]!.trim() === '')
      throw badRequest(`--${field} names no time (an empty value)`, field);
  return options;
}
