import type { Command } from 'commander';
import { listDeposits } from '../../deposits/deposits.js';
import { AppError } from '../../errors.js';
import { isUserId } from '../../users/userId.js';
import type { CliContext } from '../context.js';
import { formatTable } from '../output.js';

/** `lingxi deposits list`: each deposit's state and confirmations. */
export function registerDepositCommands(program: Command, cli: CliContext): void {
  const deposits = program.command('deposits').description('crypto top-ups the watchers saw');
  deposits
    .command('list')
    .description('deposits, newest first, with state and confirmations')
    .option('--user <id>', 'only this user')
    .option('--network <name>', 'only this network')
    .option('--limit <n>', 'how many (at most 200)', '50')
    .action(
      async (options: { user?: string; network?: string; limit: string }, command: Command) => {
        const limit = Number(options.limit);
        if (!/^\d+$/.test(options.limit) || limit < 1 || limit > 200)
          throw new AppError('invalid_limit', `--limit ${options.limit}: a whole number, 1 to 200`);
        if (options.user !== undefined && !isUserId(options.user))
          throw new AppError('invalid_user', `--user ${options.user}: not a user id`);
        const page = await cli.withRuntime(command, (runtime) =>
          listDeposits(runtime.database.db, {
            ...(options.user ? { userId: options.user } : {}),
            ...(options.network ? { network: options.network } : {}),
            limit,
          }),
        );
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
        cli.out(command).data(page, human);
      },
    );
}
