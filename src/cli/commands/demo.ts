import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { AppError } from '../../errors.js';
import type { CliContext } from '../context.js';
import { waitForSignal } from './roles.js';

/**
 * `lingxi demo [--ci]`: the whole system on a devnet, a Tron simulator and a model stub.
 * The demo lives in demo/ with the test fixtures it uses; it is loaded only when asked for,
 * and only a development checkout has it (the production build does not).
 */
/** The demo's entry point, declared here so that the production build never compiles demo/. */
type RunDemo = (options: {
  ci: boolean;
  port?: number;
  write?: (text: string) => void;
}) => Promise<{ summary: unknown; stop(): Promise<void> }>;

export function registerDemoCommand(program: Command, cli: CliContext): void {
  program
    .command('demo')
    .description(
      'run the whole system on an in-process devnet, a Tron simulator and a model stub (development checkouts)',
    )
    .option('--ci', 'run every step non-interactively, print a JSON summary, and exit')
    .option('--port <port>', 'http port (default 8080; 0 picks a free one)')
    .action(async (options: { ci?: boolean; port?: string }, command: Command) => {
      const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
      const source = join(root, 'demo', 'runDemo.ts');
      if (!existsSync(source)) {
        throw new AppError(
          'demo_unavailable',
          'the demo needs a development checkout (git clone, then npm install with dev dependencies)',
        );
      }
      const { runDemo } = (await import(pathToFileURL(source).href)) as { runDemo: RunDemo };
      const port = options.port === undefined ? undefined : Number(options.port);
      const json = cli.out(command).json;
      const demo = await runDemo({
        ci: Boolean(options.ci),
        ...(port !== undefined ? { port } : {}),
        write: (text) => (json ? cli.io.stderr(text) : cli.io.stdout(text)),
      });
      if (json) cli.io.stdout(`${JSON.stringify(demo.summary)}\n`);
      if (!options.ci) await waitForSignal();
      await demo.stop();
    });
}
