import type { Command } from 'commander';
import { runReconciliation } from '../../reconcile/runReconciliation.js';
import { FindingsExit, type CliContext } from '../context.js';
import { formatTable } from '../output.js';

/** `lingxi reconcile`: one run; exit 1 when it has findings. */
export function registerReconcileCommands(program: Command, cli: CliContext): void {
  program
    .command('reconcile')
    .description(
      'one reconciliation run: ledger integrity, then each network against the chain; exit 1 on findings',
    )
    .option(
      '--network <name>',
      'only this network (repeatable; the ledger checks always run)',
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .action(async (options: { network?: string[] }, command: Command) => {
      const run = await cli.withRuntime(command, (runtime) =>
        runReconciliation(runtime, {
          trigger: 'cli',
          ...(options.network ? { networks: options.network } : {}),
        }),
      );
      const human = run.findings.length
        ? formatTable(
            ['severity', 'kind', 'where', 'expected', 'actual', 'difference'],
            run.findings.map((f) => [
              f.severity,
              f.kind,
              [f.network, f.asset, f.address ?? f.account].filter(Boolean).join(' '),
              f.expected ?? '',
              f.actual ?? '',
              f.difference ?? '',
            ]),
          )
        : `run ${run.runId}: clean (${
            Object.entries(run.blocks)
              .map(([n, b]) => `${n} at block ${b}`)
              .join(', ') || 'no networks'
          })`;
      cli
        .out(command)
        .data(
          { runId: run.runId, status: run.status, blocks: run.blocks, findings: run.findings },
          human,
        );
      if (run.findings.length > 0)
        throw new FindingsExit(`run ${run.runId}: ${run.findings.length} findings`);
    });
}
