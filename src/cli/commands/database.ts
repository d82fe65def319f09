import type { Command } from 'commander';
import type { CliContext } from '../context.js';

/** `lingxi migrate`. */
export function registerDatabaseCommands(program: Command, cli: CliContext): void {
  program
    .command('migrate')
    .description('apply pending database migrations')
    .action(async (_options, command: Command) => {
      // Opening the runtime applies what is pending (before the ledger reads its tables).
      const applied = await cli.withRuntime(command, (runtime) =>
        Promise.resolve(runtime.migrationsApplied),
      );
      cli
        .out(command)
        .data(
          { applied },
          applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date',
        );
    });
}
