import type { Command } from 'commander';
import { migrateToLatest } from '../../db/migrate.js';
import type { CliContext } from '../context.js';

/** `lingxi migrate`. */
export function registerDatabaseCommands(program: Command, cli: CliContext): void {
  program
    .command('migrate')
    .description('apply pending database migrations')
    .action(async (_options, command: Command) => {
      const { applied } = await cli.withRuntime(
        command,
        (runtime) => migrateToLatest(runtime.database.db),
        { migrate: false },
      );
      cli
        .out(command)
        .data(
          { applied },
          applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date',
        );
    });
}
