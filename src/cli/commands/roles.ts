import type { Command } from 'commander';
import { AppError } from '../../errors.js';
import { startRoles, type RoleSelection } from '../../roles/start.js';
import type { CliContext } from '../context.js';

/** `lingxi start` / `serve`: the long-running roles. They stop on SIGINT or SIGTERM. */
export function registerRoleCommands(program: Command, cli: CliContext): void {
  const run =
    (roles: RoleSelection) =>
    async (
      options: { port?: string; network?: string[]; metricsPort?: string },
      command: Command,
    ) => {
      const started = await startRoles({
        loaded: cli.config(command),
        roles: options.network?.length ? { ...roles, watchers: options.network } : roles,
        ...(options.port !== undefined ? { port: parsePort(options.port, '--port') } : {}),
        ...(options.metricsPort !== undefined
          ? { metricsPort: parsePort(options.metricsPort, '--metrics-port') }
          : {}),
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
    .option(METRICS_PORT, METRICS_PORT_HELP)
    .action(run({ watchers: 'all' }));
  program
    .command('cron')
    .description(
      'run the cron role: reconciliation, hold expiry, sealing, retention (one active per job)',
    )
    .option(METRICS_PORT, METRICS_PORT_HELP)
    .action(run({ cron: true }));
}

const METRICS_PORT = '--metrics-port <port>';
const METRICS_PORT_HELP = 'serve /metrics, /livez and /readyz on this port (on http.host)';

function parsePort(text: string, option: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(port) || port > 65535)
    throw new AppError('invalid_port', `${option} ${text} is not a port number`);
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
