import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import {
  parseManualEntry,
  parseReversal,
  postManualEntry,
  reverseManually,
} from '../../billing/manualEntry.js';
import { badRequest } from '../../errors.js';
import { cliActor, type CliContext } from '../context.js';

/** `lingxi entries post` and `lingxi entries reverse`: manual journal entries (docs/accounting.md). */
export function registerEntryCommands(program: Command, cli: CliContext): void {
  const entries = program
    .command('entries')
    .description('manual journal entries: post one from a JSON file, or reverse an entry');

  entries
    .command('post')
    .description(
      'post a manual entry (kind "manual") from a JSON file: {"description", "postings": [{"account", "amount", "currency"?}], "metadata"?, "effectiveAt"?}',
    )
    .requiredOption('--file <path>', 'the entry as JSON; "-" reads it from stdin')
    .option('--idempotency-key <key>', 'repeat-safe key: the same key and entry write once')
    .action(async (options: { file: string; idempotencyKey?: string }, command: Command) => {
      const request = parseManualEntry(await readEntryFile(options.file));
      const result = await cli.withRuntime(command, async (runtime) => {
        return postManualEntry(runtime, request, {
          actor: cliActor(),
          idempotencyKey: options.idempotencyKey,
          // Written with the entry: an entry that commits is audited, once.
          audit: ({ entryId }) => ({
            actor: cliActor(),
            action: 'entry.post',
            target: `entry:${entryId}`,
            details: {
              entryId,
              description: request.description,
              postings: request.postings,
              ...(options.idempotencyKey ? { idempotencyKey: options.idempotencyKey } : {}),
            },
          }),
        });
      });
      cli
        .out(command)
        .data(
          { entryId: result.entryId },
          `${result.replayed ? 'already recorded as' : 'recorded'} entry ${result.entryId}`,
        );
    });

  entries
    .command('reverse')
    .description('reverse an entry (a new entry of kind "manual.reversal" mirroring it)')
    .requiredOption('--entry <id>', 'the entry to reverse')
    .requiredOption('--reason <text>', 'why (recorded on the reversal)')
    .option('--idempotency-key <key>', 'repeat-safe key: the same key and request write once')
    .action(
      async (
        options: { entry: string; reason: string; idempotencyKey?: string },
        command: Command,
      ) => {
        const { reason } = parseReversal({ reason: options.reason });
        const result = await cli.withRuntime(command, async (runtime) => {
          return reverseManually(runtime, options.entry, reason, {
            actor: cliActor(),
            idempotencyKey: options.idempotencyKey,
            audit: ({ entryId, reversedEntryId }) => ({
              actor: cliActor(),
              action: 'entry.reverse',
              target: `entry:${reversedEntryId}`,
              details: {
                entryId,
                reversedEntryId,
                reason,
                ...(options.idempotencyKey ? { idempotencyKey: options.idempotencyKey } : {}),
              },
            }),
          });
        });
        cli
          .out(command)
          .data(
            { entryId: result.entryId, reversedEntryId: result.reversedEntryId },
            `${result.replayed ? 'already reversed by' : 'reversed by'} entry ${result.entryId}`,
          );
      },
    );
}

async function readEntryFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (error) {
    throw badRequest(`cannot read ${path}: ${(error as Error).message}`, 'file');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw badRequest(`${path} is not JSON: ${(error as Error).message}`, 'file');
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
