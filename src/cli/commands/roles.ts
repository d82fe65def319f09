import type { Command } from 'commander';
import { AppError } from '../../errors.js';
import { startRoles, type RoleSelection } from '../../roles/start.js';
import type { CliContext } from '../context.js';

/** `lingxi start` / `serve`: the long-running roles. They stop on SIGINT or SIGTERM. */
export function registerRoleCommands(program: Command, cli: CliContext): void {
  const run =
    (roles: RoleSelection) =>
    async (options: { port?: string; network?: string[] }, command: Command) => {
      const started = await startRoles({
        loaded: cli.config(command),
        roles: options.network?.length ? { ...roles, watchers: options.network } : roles,
        ...(options.port !== undefined ? { port: parsePort(options.port) } : {}),
      });
      const signal = await waitForSignal();
      const { logger } = started.runtime;
      logger.info({ signal }, 'shutting down (a second signal exits at once)');
      const force = (again: NodeJS.Signals) => {
        logger.warn({ signal: again }, 'second signal: exiting without finishing the shutdown');
        process.exit(again === 'SIGINT' ? 130 : 143);
      };
      process.once('SIGINT', force).once('SIGTERM', force);
      try {
        await started.stop();
      } finally {
        process.off('SIGINT', force).off('SIGTERM', force);
      }
    };
  program
    .command('start')
    .description('run every role in one process (http, watchers, cron)')
    .option('--port <port>', 'http port (overrides http.port)')
    .action(run({ http: true, watchers: 'all', cron: true }));
  program
    .command('serve')
    .description('run the http role: gateway, account, admin and dashboard')
    .option('--port <port>', 'http port (overrides http.port)')
    .action(run({ http: true }));
  program
    .command('watch')
    .description(
      'run the watcher role: follow networks, credit confirmed deposits (one active per network)',
    )
    .option(
      '--network <name>',
      'a network of the config (repeatable; default: all)',
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .action(run({ watchers: 'all' }));
  program
    .command('cron')
    .description(
      'run the cron role: reconciliation, hold expiry, sealing, retention (one active per job)',
    )
    .action(run({ cron: true }));
}

function parsePort(text: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new AppError('invalid_port', `--port ${text} is not a port number`);
  return port;
}

export function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const done = (signal: NodeJS.Signals) => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve(signal);
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
  });
}
