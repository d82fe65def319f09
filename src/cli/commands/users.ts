import type { Command } from 'commander';
import { audit } from '../../audit.js';
import { createApiKey } from '../../keys/apiKeys.js';
import { createUser, requireUser } from '../../users/createUser.js';
import { parseTelegramId } from '../../users/telegramId.js';
import { cliActor, type CliContext } from '../context.js';
import { IDEMPOTENCY_OPTION, runIdempotent } from '../idempotent.js';
import { registerKeyManagementCommands } from './keys.js';

const IDEMPOTENCY_HELP =
  'repeat-safe key: a rerun with the same key and arguments prints the first answer and writes nothing; with other arguments it is refused (exit 1)';

/** `lingxi users create`, `lingxi keys create` (and `keys list`, `keys revoke`: ./keys.ts). */
export function registerUserCommands(program: Command, cli: CliContext): void {
  const users = program.command('users').description('manage users');
  users
    .command('create')
    .description('create a user')
    .requiredOption('--telegram-id <id>', 'Telegram user id')
    .option('--username <name>', 'Telegram username')
    .option(`${IDEMPOTENCY_OPTION} <key>`, IDEMPOTENCY_HELP)
    .action(
      async (
        options: { telegramId: string; username?: string; idempotencyKey?: string },
        command: Command,
      ) => {
        // Normalised before it is hashed: the same user asked for twice is the same request.
        const telegramId = parseTelegramId(options.telegramId);
        const username = options.username ?? null;
        const result = await cli.withRuntime(command, (runtime) =>
          runIdempotent(
            runtime,
            {
              idempotencyKey: options.idempotencyKey,
              command: 'users create',
              args: { telegramId, username },
            },
            // Audited and answered in the user's transaction: a run that dies after the user
            // is in has answered, so a rerun prints that user (not 409 user_exists).
            (recordAnswer) =>
              createUser(
                runtime.database.db,
                { telegramId, username },
                {
                  within: async (trx, user) => {
                    await audit(trx, {
                      actor: cliActor(),
                      action: 'user.create',
                      target: `user:${user.id}`,
                      details: { telegramId },
                    });
                    await recordAnswer(trx, { id: user.id });
                  },
                },
              ),
          ),
        );
        const { id } = result.answer as { id: string };
        cli
          .out(command)
          .data(
            { id },
            result.replayed
              ? `created user ${id} (by an earlier run with this ${IDEMPOTENCY_OPTION}; nothing written now)`
              : `created user ${id}`,
          );
      },
    );

  const keys = program.command('keys').description('manage API keys');
  keys
    .command('create')
    .description('create an API key for a user; the key is shown once, only its hash is stored')
    .requiredOption('--user <id>', 'user id')
    .option('--name <name>', 'a name to recognise the key by')
    .option('--spend-limit <usd>', 'most USD the key may spend in total')
    .option('--models <ids>', 'comma-separated model ids the key may use')
    .option(
      `${IDEMPOTENCY_OPTION} <key>`,
      `${IDEMPOTENCY_HELP}; a rerun cannot show the secret again (it prints "key": null)`,
    )
    .action(
      async (
        options: {
          user: string;
          name?: string;
          spendLimit?: string;
          models?: string;
          idempotencyKey?: string;
        },
        command: Command,
      ) => {
        const allowedModels = options.models?.split(',').map((m) => m.trim());
        const result = await cli.withRuntime(command, async (runtime) => {
          const user = await requireUser(runtime.database.db, options.user);
          return runIdempotent(
            runtime,
            {
              idempotencyKey: options.idempotencyKey,
              command: 'keys create',
              args: {
                user: user.id,
                name: options.name ?? null,
                spendLimit: options.spendLimit ?? null,
                models: allowedModels ?? null,
              },
            },
            (recordAnswer) =>
              createApiKey(runtime.database.db, {
                userId: user.id,
                name: options.name,
                spendLimitUsd: options.spendLimit,
                allowedModels,
                // By id only: a key's name can name the person, and the audit log outlives an
                // erasure. With the answer, in the key's transaction: a rerun after a crash
                // gets this key's answer, never a second key. The secret is not kept.
                within: async (trx, created) => {
                  await audit(trx, {
                    actor: cliActor(),
                    action: 'key.create',
                    target: `user:${user.id}`,
                    details: { keyId: created.id },
                  });
                  await recordAnswer(trx, { id: created.id, key: created.key });
                },
              }),
          );
        });
        if (!result.replayed) {
          const { id, key } = result.answer;
          cli.out(command).data({ id, key }, `${key}\n(key ${id}; shown once, keep it now)`);
          return;
        }
        const replayed = result.answer as { id: string; key: null; keyShownOnce: string };
        cli
          .out(command)
          .data(
            replayed,
            `key ${replayed.id} was created by an earlier run with this ${IDEMPOTENCY_OPTION}; ` +
              'its secret was shown by that run only. If it was lost, revoke the key ' +
              `(lingxi keys revoke ${replayed.id}) and create another.`,
          );
      },
    );

  registerKeyManagementCommands(keys, cli);
}
