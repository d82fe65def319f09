import { Command, CommanderError } from 'commander';
import { LedgerError } from '../../ledger/index.js';
import { adjustBalance } from '../billing/adjustBalance.js';
import { getUserBalance } from '../billing/getUserBalance.js';
import { trialBalanceJson } from '../billing/trialBalance.js';
import { createApiKey } from '../keys/apiKeys.js';
import { ConfigError, loadConfig, type LoadedConfig } from '../config/load.js';
import { migrateToLatest } from '../db/migrate.js';
import { AppError } from '../errors.js';
import { toErrorResponse } from '../http/errors.js';
import { createLogger } from '../log.js';
import { startRoles } from '../roles/start.js';
import { openRuntime, type Runtime } from '../runtime.js';
import { createUser, requireUser } from '../users/createUser.js';
import { formatTable, type Output } from './output.js';

/** Exit codes of the contract: 0 success, 1 a finding or refusal, 2 bad usage or error. */
export const EXIT = { ok: 0, refused: 1, error: 2 } as const;

interface GlobalOptions {
  config?: string;
  json?: boolean;
}

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const defaultIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** Builds the `lingxi` program. Commands set `process.exitCode`-style results through `exit`. */
export function buildProgram(io: CliIo = defaultIo): Command {
  const program = new Command('lingxi')
    .description(
      'Lingxi Ledger: prepaid USD balances funded by crypto, spent through an OpenAI-compatible API',
    )
    .option(
      '--config <file>',
      'config file (default $LINGXI_CONFIG, else ./lingxi.config.json if present)',
    )
    .option('--json', 'machine-readable output')
    .showHelpAfterError()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .exitOverride();

  const out = (command: Command): Output => {
    const json = Boolean((command.optsWithGlobals() as GlobalOptions).json);
    return {
      json,
      data(value, human) {
        io.stdout(
          json ? `${JSON.stringify(value)}\n` : `${human ?? JSON.stringify(value, null, 2)}\n`,
        );
      },
      info(text) {
        if (!json) io.stdout(`${text}\n`);
      },
    };
  };
  const config = (command: Command): LoadedConfig =>
    loadConfig((command.optsWithGlobals() as GlobalOptions).config);
  /** Opens the runtime quietly (warnings only) for a one-shot command. */
  const withRuntime = async <T>(
    command: Command,
    body: (runtime: Runtime) => Promise<T>,
  ): Promise<T> => {
    const loaded = config(command);
    const logger = createLogger(process.env['LINGXI_LOG_LEVEL'] ?? 'warn');
    const runtime = await openRuntime({ config: loaded.config, logger });
    try {
      return await body(runtime);
    } finally {
      await runtime.close();
    }
  };

  program
    .command('migrate')
    .description('apply pending database migrations')
    .action(async (_options, command: Command) => {
      const loaded = config(command);
      const logger = createLogger('warn');
      const runtime = await openRuntime({ config: loaded.config, logger, migrate: false });
      try {
        const { applied } = await migrateToLatest(runtime.database.db);
        out(command).data(
          { applied },
          applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date',
        );
      } finally {
        await runtime.close();
      }
    });

  const runRoles =
    (roles: { http?: boolean }) => async (options: { port?: string }, command: Command) => {
      const loaded = config(command);
      const started = await startRoles({
        loaded,
        roles,
        ...(options.port !== undefined ? { port: parsePort(options.port) } : {}),
      });
      await waitForSignal();
      started.runtime.logger.info('shutting down');
      await started.stop();
    };
  program
    .command('start')
    .description('run every role in one process (http, watchers, cron)')
    .option('--port <port>', 'http port (overrides http.port)')
    .action(runRoles({ http: true }));
  program
    .command('serve')
    .description('run the http role: gateway, account, admin and dashboard')
    .option('--port <port>', 'http port (overrides http.port)')
    .action(runRoles({ http: true }));

  const users = program.command('users').description('manage users');
  users
    .command('create')
    .description('create a user')
    .requiredOption('--telegram-id <id>', 'Telegram user id')
    .option('--username <name>', 'Telegram username')
    .action(async (options: { telegramId: string; username?: string }, command: Command) => {
      const result = await withRuntime(command, (runtime) =>
        createUser(runtime.database.db, {
          telegramId: options.telegramId,
          username: options.username ?? null,
        }),
      );
      out(command).data(result, `created user ${result.id}`);
    });

  program
    .command('credit')
    .description('admin adjustment of a user balance; a negative amount debits (never below zero)')
    .requiredOption('--user <id>', 'user id')
    .requiredOption('--amount <decimal>', 'USD amount, such as 10 or -2.5')
    .requiredOption('--reason <text>', 'why (recorded on the entry)')
    .option('--idempotency-key <key>', 'repeat-safe key: the same key and request write once')
    .allowUnknownOption(false)
    .action(
      async (
        options: { user: string; amount: string; reason: string; idempotencyKey?: string },
        command: Command,
      ) => {
        const result = await withRuntime(command, async (runtime) => {
          await requireUser(runtime.database.db, options.user);
          return adjustBalance(runtime.ledger, {
            userId: options.user,
            amount: options.amount,
            reason: options.reason,
            idempotencyKey: options.idempotencyKey,
            actor: 'cli',
          });
        });
        out(command).data(
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
      const balance = await withRuntime(command, async (runtime) => {
        await requireUser(runtime.database.db, options.user);
        return getUserBalance(runtime.ledger, options.user);
      });
      out(command).data(
        balance,
        `available ${balance.available} USD (posted ${balance.posted}, held ${balance.held})`,
      );
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
        const key = await withRuntime(command, async (runtime) => {
          await requireUser(runtime.database.db, options.user);
          return createApiKey(runtime.database.db, {
            userId: options.user,
            name: options.name,
            spendLimitUsd: options.spendLimit,
            allowedModels: options.models?.split(',').map((m) => m.trim()),
          });
        });
        out(command).data(
          { id: key.id, key: key.key },
          `${key.key}\n(key ${key.id}; shown once, keep it now)`,
        );
      },
    );

  program
    .command('trial-balance')
    .description('debits and credits per account and currency; every currency nets to zero')
    .action(async (_options, command: Command) => {
      const trial = await withRuntime(command, (runtime) => runtime.ledger.trialBalance());
      const json = trialBalanceJson(trial);
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
      out(command).data(json, human);
    });

  return program;
}

/** Runs the CLI and returns the exit code. */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.exitCode === 0 ? EXIT.ok : EXIT.error;
    }
    const { message, code } = describeError(error);
    io.stderr(`lingxi: ${message}\n`);
    return code;
  }
}

function describeError(error: unknown): { message: string; code: number } {
  if (error instanceof ConfigError) return { message: error.message, code: EXIT.error };
  if (error instanceof AppError || error instanceof LedgerError) {
    const { status, body } = toErrorResponse(error);
    const refused = status === 402 || status === 403 || status === 409;
    return { message: body.error.message, code: refused ? EXIT.refused : EXIT.error };
  }
  return { message: error instanceof Error ? error.message : String(error), code: EXIT.error };
}

function parsePort(text: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new AppError('invalid_port', `--port ${text} is not a port number`);
  return port;
}

function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
  });
}
