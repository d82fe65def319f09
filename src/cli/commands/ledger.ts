import type { Command } from 'commander';
import { adjustBalance } from '../../billing/adjustBalance.js';
import { getUserBalance } from '../../billing/getUserBalance.js';
import { trialBalanceJson } from '../../billing/trialBalance.js';
import { requireUser } from '../../users/createUser.js';
import { cliActor, type CliContext } from '../context.js';
import { formatTable } from '../output.js';

/** `lingxi credit`, `balance`, `trial-balance`. */
export function registerLedgerCommands(program: Command, cli: CliContext): void {
  program
    .command('credit')
    .description('admin adjustment of a user balance; a negative amount debits (never below zero)')
    .requiredOption('--user <id>', 'user id')
    .requiredOption('--amount <decimal>', 'USD amount, such as 10 or -2.5')
    .requiredOption('--reason <text>', 'why (recorded on the entry)')
    .option('--idempotency-key <key>', 'repeat-safe key: the same key and request write once')
    .action(
      async (
        options: { user: string; amount: string; reason: string; idempotencyKey?: string },
        command: Command,
      ) => {
        const result = await cli.withRuntime(command, async (runtime) => {
          const user = await requireUser(runtime.database.db, options.user);
          const adjusted = await adjustBalance(runtime, {
            userId: user.id,
            amount: options.amount,
            reason: options.reason,
            idempotencyKey: options.idempotencyKey,
            actor: 'cli',
            // Written with the entry: a credit that commits is audited, once.
            audit: ({ entryId }) => ({
              actor: cliActor(),
              action: 'balance.adjust',
              target: `user:${user.id}`,
              details: { amount: options.amount, reason: options.reason, entryId },
            }),
          });
          return adjusted;
        });
        cli
          .out(command)
          .data(
            { entryId: result.entryId },
            `${result.replayed ? 'already recorded as' : 'recorded'} entry ${result.entryId}`,
          );
      },
    );

  program
    .command('balance')
    .description("a user's USD balance")
    .requiredOption('--user <id>', 'user id')
    .action(async (options: { user: string }, command: Command) => {
      const balance = await cli.withRuntime(command, async (runtime) => {
        await requireUser(runtime.database.db, options.user);
        return getUserBalance(runtime.ledger, options.user);
      });
      cli
        .out(command)
        .data(
          balance,
          `available ${balance.available} USD (posted ${balance.posted}, held ${balance.held})`,
        );
    });

  program
    .command('trial-balance')
    .description('debits and credits per account and currency; every currency nets to zero')
    .action(async (_options, command: Command) => {
      const json = trialBalanceJson(
        await cli.withRuntime(command, (runtime) => runtime.ledger.trialBalance()),
      );
      const human = [
        formatTable(
          ['account', 'currency', 'debit', 'credit', 'balance'],
          json.accounts.map((a) => [a.account, a.currency, a.debit, a.credit, a.balance]),
        ),
        '',
        formatTable(
          ['currency', 'debit', 'credit', 'net'],
          json.totals.map((t) => [t.currency, t.debit, t.credit, t.net]),
        ),
      ].join('\n');
      cli.out(command).data(json, human);
    });
}
