import type { Command } from 'commander';
import { isDepositCursor, isDepositNetwork, listDeposits } from '../../deposits/deposits.js';
import { AppError } from '../../errors.js';
import { isUserId } from '../../users/userId.js';
import type { CliContext } from '../context.js';
import { formatTable } from '../output.js';

/** The page size when --limit is not given, and the most one page holds. */
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 200;

/**
 * `lingxi deposits list`: each deposit's state and confirmations, newest first (by id, which
 * is unique and only grows), a page at a time: `--after` the previous page's `nextCursor`.
 */
export function registerDepositCommands(program: Command, cli: CliContext): void {
  const deposits = program.command('deposits').description('crypto top-ups the watchers saw');
  deposits
    .command('list')
    .description(
      'deposits, newest first, with state and confirmations, a page at a time; ' +
        'page on with --after <nextCursor> (printed last, or in --json)',
    )
    .option('--user <id>', 'only this user')
    .option(
      '--network <name>',
      'only this network (one in the config, or one that deposits are on)',
    )
    .option('--limit <n>', `how many per page (1 to ${MAX_LIMIT})`, String(DEFAULT_LIMIT))
    .option(
      '--after <cursor>',
      'the next page: the nextCursor of the previous page (same --user and --network); ' +
        'deposits that arrive meanwhile are not in later pages, so none is skipped or repeated',
    )
    .action(
      async (
        options: { user?: string; network?: string; limit: string; after?: string },
        command: Command,
      ) => {
        const limit = Number(options.limit);
        if (!/^\d+$/.test(options.limit) || limit < 1 || limit > MAX_LIMIT)
          throw new AppError(
            'invalid_limit',
            `--limit ${options.limit}: a whole number, 1 to ${MAX_LIMIT}`,
          );
        if (options.user !== undefined && !isUserId(options.user))
          throw new AppError('invalid_user', `--user ${options.user}: not a user id`);
        if (options.after !== undefined && !isDepositCursor(options.after))
          throw new AppError(
            'invalid_cursor',
            `--after ${options.after.slice(0, 40)}: not a cursor this command printed ` +
              '(use the nextCursor of the previous page)',
          );
        const page = await cli.withRuntime(command, async (runtime) => {
          const { network } = options;
          // A misspelt name would list nothing, as a network without deposits does.
          if (
            network !== undefined &&
            !(await isDepositNetwork(runtime.database.db, runtime.config, network))
          ) {
            const known = runtime.config.networks.map((n) => n.name).join(', ') || 'none';
            throw new AppError(
              'unknown_network',
              `--network ${network}: no network of that name in the config (${known}), ` +
                'nor any deposit on one',
            );
          }
          return listDeposits(runtime.database.db, {
            ...(options.user ? { userId: options.user } : {}),
            ...(network ? { network } : {}),
            limit,
            cursor: options.after ?? null,
          });
        });
        const human = formatTable(
          ['id', 'network', 'asset', 'amount', 'status', 'confirmations', 'usd', 'tx'],
          page.data.map((d) => [
            d.id,
            d.network,
            d.asset ?? '?',
            d.amount ?? '?',
            d.status,
            `${d.confirmations}/${d.confirmationsRequired}`,
            d.amountUsd ?? '',
            `${d.txHash.slice(0, 18)}…`,
          ]),
        );
        cli
          .out(command)
          .data(
            page,
            page.nextCursor === null
              ? human
              : `${human}\nmore: lingxi deposits list --after ${page.nextCursor}`,
          );
      },
    );
}
