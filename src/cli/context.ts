import { userInfo } from 'node:os';
import type { Command } from 'commander';
import { audit } from '../audit.js';
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { createLogger } from '../log.js';
import { openRuntime, type Runtime } from '../runtime.js';
import type { Output } from './output.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

interface GlobalOptions {
  config?: string;
  json?: boolean;
}

/** What every command gets: its output, its config, and a runtime for one-shot work. */
export interface CliContext {
  io: CliIo;
  out(command: Command): Output;
  config(command: Command): LoadedConfig;
  /** Opens the runtime quietly (warnings only) for a one-shot command, and closes it after. */
  withRuntime<T>(
    command: Command,
    body: (runtime: Runtime) => Promise<T>,
    options?: { migrate?: boolean },
  ): Promise<T>;
}

export function createCliContext(io: CliIo): CliContext {
  const context: CliContext = {
    io,
    out(command) {
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
    },
    config(command) {
      return loadConfig((command.optsWithGlobals() as GlobalOptions).config);
    },
    async withRuntime(command, body, options = {}) {
      const loaded = context.config(command);
      const logger = createLogger(process.env['LINGXI_LOG_LEVEL'] ?? 'warn');
      const runtime = await openRuntime({
        config: loaded.config,
        logger,
        migrate: options.migrate ?? true,
      });
      try {
        return await body(runtime);
      } finally {
        await runtime.close();
      }
    },
  };
  return context;
}

/**
 * Records an operator's CLI action in the audit log, as the admin API records its own: the
 * actor is `cli:<login name>` of whoever ran the command.
 */
export async function auditCli(
  runtime: Runtime,
  action: string,
  target: string | null,
  details: Record<string, unknown> = {},
): Promise<void> {
  await audit(runtime.database.db, { actor: cliActor(), action, target, details });
}

/** The actor of a CLI action, as the audit log names it: `cli:<login name>`. */
export function cliActor(): string {
  return `cli:${loginName()}`;
}

function loginName(): string {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry for this uid (some containers).
    return process.env['USER'] ?? `uid-${process.getuid?.() ?? 'unknown'}`;
  }
}

/** Thrown by a command that ran fine but has findings (reconciliation): exit 1, no error text beyond its message. */
export class FindingsExit extends Error {
  override name = 'FindingsExit';
}

/** Thrown by a command that refuses what it was asked (no such key to revoke): exit 1, its one-line reason. */
export class RefusalExit extends Error {
  override name = 'RefusalExit';
}
