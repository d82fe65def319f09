import { Command, CommanderError } from 'commander';
import { LedgerError } from '../../ledger/index.js';
import { ConfigError } from '../config/load.js';
import { AppError } from '../errors.js';
import { toErrorResponse } from '../http/errors.js';
import { registerDatabaseCommands } from './commands/database.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerDepositCommands } from './commands/deposits.js';
import { registerEntryCommands } from './commands/entries.js';
import { registerReconcileCommands } from './commands/reconcile.js';
import { registerExportCommands } from './commands/export.js';
import { registerLedgerCommands } from './commands/ledger.js';
import { registerPrivacyCommands } from './commands/privacy.js';
import { registerRoleCommands } from './commands/roles.js';
import { registerUserCommands } from './commands/users.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { createCliContext, FindingsExit, RefusalExit, type CliIo } from './context.js';
import { packageVersion } from './version.js';

export type { CliIo } from './context.js';

/** Exit codes of the contract: 0 success, 1 a finding or refusal, 2 bad usage or error. */
export const EXIT = { ok: 0, refused: 1, error: 2 } as const;

const defaultIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** Builds the `lingxi` program; each command group registers itself from src/cli/commands/. */
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
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .showHelpAfterError()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .exitOverride();
  const cli = createCliContext(io);
  registerDatabaseCommands(program, cli);
  registerRoleCommands(program, cli);
  registerDoctorCommand(program, cli);
  registerUserCommands(program, cli);
  registerLedgerCommands(program, cli);
  registerEntryCommands(program, cli);
  registerExportCommands(program, cli);
  registerPrivacyCommands(program, cli);
  registerDepositCommands(program, cli);
  registerReconcileCommands(program, cli);
  registerDemoCommand(program, cli);
  return program;
}

/** Runs the CLI and returns the exit code. */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.error;
    if (error instanceof FindingsExit || error instanceof RefusalExit) {
      io.stderr(`lingxi: ${error.message}\n`);
      return EXIT.refused;
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
