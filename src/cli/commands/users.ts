import type { Command } from 'commander';
import { createApiKey } from '../../keys/apiKeys.js';
import { createUser, requireUser } from '../../users/createUser.js';
import { auditCli, type CliContext } from '../context.js';

/** `lingxi users create`, `lingxi keys create`. */
export function registerUserCommands(program: Command, cli: CliContext): void {
  const users = program.command('users').description('manage users');
  users
    .command('create')
    .description('create a user')
    .requiredOption('--telegram-id <id>', 'Telegram user id')
    .option('--username <name>', 'Telegram username')
    .action(async (options: { telegramId: string; username?: string }, command: Command) => {
      const result = await cli.withRuntime(command, async (runtime) => {
        const user = await createUser(runtime.database.db, {
          telegramId: options.telegramId,
          username: options.username ?? null,
        });
        await auditCli(runtime, 'user.create', `user:${user.id}`, {
          telegramId: options.telegramId,
        });
        return user;
      });
      cli.out(command).data(result, `created user ${result.id}`);
    });

  const keys = program.command('keys').description('manage API keys');
  keys
    .command('create')
    .description('create an API key for a user; the key is shown once, only its hash is stored')
    .requiredOption('--user <id>', 'user id')
    .option('--name <name>', 'a name to recognise the key by')
    .option('--spend-limit <usd>', 'most USD the key may spend in total')
    .option('--models <ids>', 'comma-separated model ids the key may use')
    .action(
      async (
        options: { user: string; name?: string; spendLimit?: string; models?: string },
        command: Command,
      ) => {
        const key = await cli.withRuntime(command, async (runtime) => {
          const user = await requireUser(runtime.database.db, options.user);
          const created = await createApiKey(runtime.database.db, {
            userId: user.id,
            name: options.name,
            spendLimitUsd: options.spendLimit,
            allowedModels: options.models?.split(',').map((m) => m.trim()),
          });
          // By id only: a key's name can name the person, and the audit log outlives an erasure.
          await auditCli(runtime, 'key.create', `user:${user.id}`, { keyId: created.id });
          return created;
        });
        cli
          .out(command)
          .data(
            { id: key.id, key: key.key },
            `${key.key}\n(key ${key.id}; shown once, keep it now)`,
          );
      },
    );
}
