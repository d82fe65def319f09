import type { Command } from 'commander';
import { audit } from '../../audit.js';
import { AppError } from '../../errors.js';
import { findApiKeyOwner, isApiKeyId, listApiKeys, revokeApiKey } from '../../keys/apiKeys.js';
import { keyChangeDetails, updateApiKey } from '../../keys/updateApiKey.js';
import { requireUser } from '../../users/createUser.js';
import { isUserId } from '../../users/userId.js';
import { cliActor, RefusalExit, type CliContext } from '../context.js';
import { formatTable, printable } from '../output.js';

/** The longest `--reason` kept in the audit log, as a suspension's reason. */
const REASON_LENGTH_MAX = 500;

/** Bad usage (exit 2, one line) before anything is opened: `--user abc` is no user id. */
function checkUserId(user: string | undefined): void {
  if (user !== undefined && !isUserId(user))
    throw new AppError(
      'invalid_user',
      `--user ${user.slice(0, 40)}: not a user id (a whole number)`,
    );
}

/** Bad usage (exit 2, one line) before anything is opened: the id is no key id. */
function checkKeyId(keyId: string): void {
  if (!isApiKeyId(keyId))
    throw new AppError(
      'invalid_key_id',
      `${keyId.slice(0, 40)}: not a key id (a uuid, as \`lingxi keys list\` shows it)`,
    );
}

/**
 * `lingxi keys list`, `lingxi keys revoke`, `lingxi keys update`: what the admin API does for
 * keys, from a shell. They call the admin API's functions, so the listing, the audit record
 * and the NOTIFY that empties every process's key cache are the same.
 */
export function registerKeyManagementCommands(keys: Command, cli: CliContext): void {
  keys
    .command('list')
    .description("list a user's API keys, newest first (never the secret or its hash)")
    .requiredOption('--user <id>', 'user id')
    .addHelpText(
      'after',
      '\nWith --json: {"data": [{"id","name","prefix","spendLimitUsd","spentUsd","allowedModels",' +
        '"createdAt","lastUsedAt","revokedAt"}]}, as GET /admin/users/:id/keys answers.',
    )
    .action(async (options: { user: string }, command: Command) => {
      checkUserId(options.user);
      const listed = await cli.withRuntime(command, async (runtime) => {
        const user = await requireUser(runtime.database.db, options.user);
        return listApiKeys(runtime.database.db, user.id);
      });
      const rows = listed.map((key) => [
        key.id,
        key.name,
        `${key.prefix}...`,
        key.createdAt,
        key.lastUsedAt ?? '-',
        key.revokedAt ?? '-',
        // Spend is counted only while a key has a limit.
        key.spendLimitUsd === null ? 'no limit' : `${key.spentUsd} of ${key.spendLimitUsd}`,
        key.allowedModels?.join(',') ?? 'all',
      ]);
      cli
        .out(command)
        .data(
          { data: listed },
          listed.length === 0
            ? `user ${options.user} has no API keys`
            : formatTable(
                ['id', 'name', 'prefix', 'created', 'last used', 'revoked', 'spent USD', 'models'],
                rows,
              ),
        );
    });

  keys
    .command('revoke')
    .description(
      'revoke an API key: it is refused at once by every running process; revoking it again changes nothing',
    )
    .argument('<id>', 'the key id (a uuid, as `keys list` shows it)')
    .option('--user <id>', 'the user who holds the key (refused when it is not theirs)')
    .option('--reason <text>', `why, kept in the audit log (1-${REASON_LENGTH_MAX} characters)`)
    .addHelpText(
      'after',
      '\nExit 0 when revoked or already revoked (its first time shown, nothing written), ' +
        '1 when there is no such key (of --user), 2 when the id is not one.\n' +
        'With --json: {"id","revokedAt","alreadyRevoked"}.',
    )
    .action(
      async (keyId: string, options: { user?: string; reason?: string }, command: Command) => {
        checkKeyId(keyId);
        checkUserId(options.user);
        const reason = options.reason?.trim();
        if (reason !== undefined && (reason === '' || reason.length > REASON_LENGTH_MAX))
          throw new AppError(
            'invalid_reason',
            `--reason: a text of 1-${REASON_LENGTH_MAX} characters`,
          );
        const { userId, revoked } = await cli.withRuntime(command, async (runtime) => {
          const { db } = runtime.database;
          try {
            const owner =
              options.user === undefined
                ? await findApiKeyOwner(db, keyId)
                : (await requireUser(db, options.user)).id;
            const result = await revokeApiKey(db, {
              userId: owner,
              keyId,
              // As the admin API records it (by key id, in the revocation's transaction, once),
              // with the operator's reason.
              within: (trx, done) =>
                audit(trx, {
                  actor: cliActor(),
                  action: 'key.revoke',
                  target: `user:${owner}`,
                  details: {
                    keyId: done.id,
                    ...(reason === undefined ? {} : { reason }),
                  },
                }),
            });
            return { userId: owner, revoked: result };
          } catch (error) {
            if (error instanceof AppError && error.status === 404) {
              const whose = options.user === undefined ? '' : ` of user ${options.user}`;
              throw new RefusalExit(
                error.code === 'user_not_found'
                  ? `user ${options.user} does not exist; nothing revoked`
                  : `no key ${keyId}${whose}; nothing revoked`,
              );
            }
            throw error;
          }
        });
        const { id, revokedAt, alreadyRevoked } = revoked;
        cli
          .out(command)
          .data(
            { id, revokedAt, alreadyRevoked },
            alreadyRevoked
              ? `key ${id} of user ${userId} was already revoked at ${revokedAt}; nothing changed`
              : `revoked key ${id} of user ${userId} at ${revokedAt}; running processes refuse it from now on`,
          );
      },
    );

  const update = keys
    .command('update')
    .description(
      "change an API key's spend limit or model list; every running process uses the new ones at once",
    )
    .argument('<id>', 'the key id (a uuid, as `keys list` shows it)')
    .option('--spend-limit <usd>', 'most USD the key may spend in total (what it spent counts)')
    .option('--no-spend-limit', 'lift the spend limit')
    .option('--models <ids>', 'comma-separated model ids the key may use')
    .option('--all-models', 'let the key use every model')
    .addHelpText(
      'after',
      '\nExit 0 when changed or already so (nothing written), 1 when there is no such key or it ' +
        'is revoked, 2 on bad usage (no change given, a bad id, amount or model list).\n' +
        'With --json: {"id","userId","name","prefix","spendLimitUsd","spentUsd","allowedModels",' +
        '"createdAt","lastUsedAt","revokedAt","changed"}, as PATCH /admin/keys/:id answers.',
    );
  // --spend-limit and --no-spend-limit set one value (the last given wins): both given is
  // refused rather than half-obeyed.
  const given = new Set<string>();
  for (const name of ['spend-limit', 'no-spend-limit'])
    update.on(`option:${name}`, () => given.add(`--${name}`));
  update.action(
    async (
      keyId: string,
      options: { spendLimit?: string | false; models?: string; allModels?: boolean },
      command: Command,
    ) => {
      checkKeyId(keyId);
      if (given.size > 1 || (options.models !== undefined && options.allModels))
        throw new AppError(
          'invalid_usage',
          given.size > 1
            ? '--spend-limit and --no-spend-limit: give one'
            : '--models and --all-models: give one',
        );
      if (options.spendLimit === undefined && options.models === undefined && !options.allModels)
        throw new AppError(
          'invalid_usage',
          'nothing to change: give --spend-limit, --no-spend-limit, --models or --all-models',
        );
      const updated = await cli.withRuntime(command, async (runtime) => {
        try {
          return await updateApiKey(runtime.database.db, {
            keyId,
            ...(options.spendLimit === undefined
              ? {}
              : { spendLimitUsd: options.spendLimit === false ? null : options.spendLimit }),
            ...(options.allModels
              ? { allowedModels: null }
              : options.models === undefined
                ? {}
                : { allowedModels: options.models.split(',').map((m) => m.trim()) }),
            // As the admin API records it (by key id, in the change's transaction, once).
            within: (trx, change) =>
              audit(trx, {
                actor: cliActor(),
                action: 'key.update',
                target: `user:${change.userId}`,
                details: keyChangeDetails(change),
              }),
          });
        } catch (error) {
          if (error instanceof AppError && error.status === 404)
            throw new RefusalExit(`no key ${keyId}; nothing changed`);
          throw error;
        }
      });
      const limit =
        updated.spendLimitUsd === null
          ? 'no spend limit'
          : `spend limit ${updated.spendLimitUsd} USD (${updated.spentUsd} spent)`;
      // Model ids a key's owner may have chosen (POST /api/me/keys): shown, never run, by the terminal.
      const models = printable(updated.allowedModels?.join(',') ?? 'all');
      cli
        .out(command)
        .data(
          updated,
          updated.changed
            ? `key ${updated.id} of user ${updated.userId}: ${limit}, models ${models}; running processes use it from now on`
            : `key ${updated.id} of user ${updated.userId} already has ${limit}, models ${models}; nothing changed`,
        );
    },
  );
}
