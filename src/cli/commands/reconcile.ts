import type { Command } from 'commander';
import { acknowledgeFinding } from '../../reconcile/acknowledgeFinding.js';
import { runReconciliation } from '../../reconcile/runReconciliation.js';
import { cliActor, FindingsExit, type CliContext } from '../context.js';
import { formatTable } from '../output.js';

/**
 * `lingxi reconcile`: one run; exit 1 when it has findings (the contract). An info finding
 * (a reversal that owes nothing) is reported in one run only, so it never keeps the exit at 1. `lingxi reconcile ack FINGERPRINT --reason TEXT`
 * acknowledges one of the latest run's findings.
 */
export function registerReconcileCommands(program: Command, cli: CliContext): void {
  const reconcile = program
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
            ['severity', 'kind', 'where', 'expected', 'actual', 'difference', 'fingerprint'],
            run.findings.map((f) => [
              f.severity,
              f.kind,
              [f.network, f.asset, f.address ?? f.account].filter(Boolean).join(' '),
              f.expected ?? '',
              f.actual ?? '',
              f.difference ?? '',
              f.fingerprint,
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
      if (run.status === 'findings')
        throw new FindingsExit(`run ${run.runId}: ${run.findings.length} findings`);
    });
  reconcile
    .command('ack <fingerprint>')
    .description(
      'acknowledge a finding of the latest run (a deposit reversed by a reorg, an outflow explained): later runs leave it out; recorded in the audit log',
    )
    .requiredOption('--reason <text>', 'why (kept with the acknowledgement and in the audit log)')
    .action(async (fingerprint: string, options: { reason: string }, command: Command) => {
      const acknowledged = await cli.withRuntime(command, (runtime) =>
        acknowledgeFinding(runtime, {
          fingerprint,
          reason: options.reason,
          audit: { actor: cliActor() },
        }),
      );
      cli
        .out(command)
        .data(
          acknowledged,
          `acknowledged ${acknowledged.finding.kind} ${acknowledged.fingerprint} (run ${acknowledged.runId})`,
        );
    });
}
