import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { streamJournal } from '../../src/exports/streamJournal.js';
import { streamSealsJsonl } from '../../src/exports/sealsJsonl.js';
import { sealJournal } from '../../src/integrity/sealJournal.js';
import { GENESIS_HASH, type Seal } from '../../src/integrity/seals.js';
import { verifySeals } from '../../src/integrity/verifySeals.js';
import { canonicalJson } from '../../src/integrity/canonical.js';
import { useBook, sealEverything, type Book } from '../support/book.js';
import type { TestDatabase } from '../support/db.js';
import { fund } from '../support/ledger.js';
import { collect } from '../exports/tools.js';

// This file's database is a scratch copy: the tamper tests drop an append-only trigger in
// it (the test role is a superuser), change rows, and create the trigger again.
let database: TestDatabase;
let ledger: PostgresLedger;
let book: Book;

useBook((ready) => ({ database, ledger, book } = ready));

async function seals(): Promise<Seal[]> {
  const text = await collect(streamSealsJsonl(database.pool));
  return text
    .trimEnd()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Seal);
}

/**
 * Runs `statements` as a superuser would behind the ledger's back: drops the table's
 * append-only trigger, runs them, and creates the trigger again.
 */
async function behindTheLedger(table: string, statements: string[]): Promise<void> {
  const client = await database.pool.connect();
  try {
    await client.query('begin');
    await client.query(`drop trigger ${table}_append_only on ${table}`);
    for (const statement of statements) await client.query(statement);
    await client.query(
      `create trigger ${table}_append_only before update or delete on ${table}
         for each statement execute function ledger_refuse_change()`,
    );
    await client.query('commit');
  } catch (error) {
    await client.query('rollback');
    throw error;
  } finally {
    client.release();
  }
}

describe('sealing', () => {
  test('seals chain committed entries in commit order; verification recomputes them', async () => {
    await sealEverything(database.pool);
    const first = await seals();
    expect(first.length).toBeGreaterThanOrEqual(1);
    expect(first[0]).toMatchObject({
      seal: 1,
      fromTxId: '0',
      previousHash: GENESIS_HASH,
      algorithm: 'lingxi-seal-v1',
    });
    const { rows } = await database.pool.query<{ n: string }>(
      'select count(*)::text as n from ledger_entries',
    );
    expect(first.reduce((sum, s) => sum + s.entryCount, 0)).toBe(Number(rows[0]!.n));
    expect(await sealJournal(database.pool)).toBeNull();
    expect(await verifySeals(database.pool)).toEqual([]);

    await fund(ledger, book.alice, '3');
    await sealEverything(database.pool);
    const after = await seals();
    const last = after.at(-1)!;
    expect(last.seal).toBe(after.length);
    expect(last.previousHash).toBe(after.at(-2)!.hash);
    expect(last.fromTxId).toBe(after.at(-2)!.toTxId);
    expect(await verifySeals(database.pool)).toEqual([]);
  });

  test('a backlog becomes several seals, cut on transaction boundaries, verified in parallel chunks', async () => {
    for (let i = 0; i < 12; i += 1) await fund(ledger, book.bob, `0.${i + 10}`);
    const before = (await seals()).length;
    await sealEverything(database.pool, { maxEntries: 1 });
    const all = await seals();
    const added = all.slice(before);
    expect(added.length).toBeGreaterThanOrEqual(10);
    for (const seal of added) expect(seal.entryCount).toBe(1);
    // More than nine seals: numbered, listed and chained in numeric order.
    expect(all.map((s) => s.seal)).toEqual(all.map((_, i) => i + 1));
    expect(await verifySeals(database.pool, { chunkEntries: 3, concurrency: 3 })).toEqual([]);
  });

  test('the seals table is append-only', async () => {
    await expect(
      database.pool.query(`update ledger_seals set hash = previous_hash`),
    ).rejects.toThrow(/append-only/);
    await expect(database.pool.query(`delete from ledger_seals`)).rejects.toThrow(/append-only/);
    await expect(database.pool.query(`truncate ledger_seals`)).rejects.toThrow(/append-only/);
  });

  test('an auditor recomputes the chain from a JSONL export and the seals alone', async () => {
    const entries = (await collect(streamJournal(database.pool, { format: 'jsonl' })))
      .trimEnd()
      .split('\n')
      .map(
        (line) =>
          JSON.parse(line) as Record<string, unknown> & { txId: string; id: string; seal: number },
      );
    // The recipe of docs/accounting-exports.md, with nothing of ours but RFC 8785.
    entries.sort((a, b) =>
      BigInt(a.txId) < BigInt(b.txId)
        ? -1
        : BigInt(a.txId) > BigInt(b.txId)
          ? 1
          : a.id < b.id
            ? -1
            : 1,
    );
    let previous = GENESIS_HASH;
    for (const seal of await seals()) {
      const covered = entries.filter((e) => e.seal === seal.seal);
      const lines = covered
        .map(({ seal: _seal, ...entry }) => `${canonicalJson(entry)}\n`)
        .join('');
      const entriesHash = createHash('sha256').update(lines).digest('hex');
      const header = {
        algorithm: seal.algorithm,
        seal: seal.seal,
        fromTxId: seal.fromTxId,
        toTxId: seal.toTxId,
        entryCount: covered.length,
        firstEntryId: covered[0]!.id,
        lastEntryId: covered.at(-1)!.id,
        entriesHash,
        previousHash: previous,
      };
      expect(createHash('sha256').update(canonicalJson(header)).digest('hex')).toBe(seal.hash);
      previous = seal.hash;
    }
  });
});

describe('tampering', () => {
  test('a posting amount changed behind the ledger breaks exactly the seal that covers it', async () => {
    const all = await seals();
    const { rows } = await database.pool.query<{ id: string; amount: string; tx_id: string }>(
      `select p.entry_id::text as id, p.amount::text as amount, e.tx_id::text as tx_id
         from ledger_postings p join ledger_entries e on e.id = p.entry_id
        where e.id = $1 and p.line = 1`,
      [book.entries.bobEthDeposit],
    );
    const posting = rows[0]!;
    const covering = all.find(
      (s) =>
        BigInt(s.fromTxId) <= BigInt(posting.tx_id) && BigInt(posting.tx_id) < BigInt(s.toTxId),
    )!;

    await behindTheLedger('ledger_postings', [
      `update ledger_postings set amount = 5 where entry_id = '${posting.id}' and line = 1`,
    ]);
    const findings = await verifySeals(database.pool);
    expect(findings).toEqual([
      expect.objectContaining({
        severity: 'error',
        kind: 'seal_mismatch',
        expected: covering.hash,
        actual: expect.stringMatching(/^[0-9a-f]{64}$/),
        details: expect.objectContaining({
          seal: covering.seal,
          changed: ['entries hash'],
          entryCount: { sealed: covering.entryCount, now: covering.entryCount },
        }),
      }),
    ]);

    // Put the amount back: the seal verifies again, so the hash is over content alone.
    await behindTheLedger('ledger_postings', [
      `update ledger_postings set amount = ${posting.amount} where entry_id = '${posting.id}' and line = 1`,
    ]);
    expect(await verifySeals(database.pool)).toEqual([]);
  });

  test('an entry forged into a sealed range, or a seal row rewritten, is found', async () => {
    const all = await seals();
    const target = all[0]!;
    const { rows } = await database.pool.query<{ id: string }>(
      `select id::text from ledger_accounts where code in ('expenses:promotions', $1) order by code`,
      [`liabilities:customers:${book.alice}`],
    );
    const [promotions, customer] = rows.map((r) => r.id) as [string, string];
    const forged = '00000000-0000-7000-8000-00000000f00d';
    // One statement, as the ledger writes, but with an old transaction id.
    await database.pool.query(
      `with e as (insert into ledger_entries (id, kind, tx_id) values ($1, 'adjustment', $2::xid8))
       insert into ledger_postings (entry_id, line, account_id, currency, amount, account_version, balance_after)
       values ($1, 1, $3, 'USD', 1, 9001, 0), ($1, 2, $4, 'USD', -1, 9001, 0)`,
      [forged, target.fromTxId === '0' ? '3' : target.fromTxId, promotions, customer],
    );
    const findings = await verifySeals(database.pool);
    expect(findings).toEqual([
      expect.objectContaining({
        kind: 'seal_mismatch',
        details: expect.objectContaining({
          seal: target.seal,
          changed: expect.arrayContaining(['entry count', 'entries hash']),
          entryCount: { sealed: target.entryCount, now: target.entryCount + 1 },
        }),
      }),
    ]);
    await behindTheLedger('ledger_postings', [
      `delete from ledger_postings where entry_id = '${forged}'`,
    ]);
    await behindTheLedger('ledger_entries', [`delete from ledger_entries where id = '${forged}'`]);
    expect(await verifySeals(database.pool)).toEqual([]);

    // Rewriting a seal's hash breaks that seal (its row) and the link to the next one.
    const last = all.at(-1)!;
    const beforeLast = all.at(-2)!;
    await behindTheLedger('ledger_seals', [
      `update ledger_seals set hash = '${'f'.repeat(64)}' where seal = ${beforeLast.seal}`,
    ]);
    expect(await verifySeals(database.pool)).toEqual([
      expect.objectContaining({
        kind: 'seal_mismatch',
        details: expect.objectContaining({ seal: beforeLast.seal, changed: ['seal row'] }),
      }),
      expect.objectContaining({
        kind: 'seal_chain_broken',
        expected: 'f'.repeat(64),
        actual: beforeLast.hash,
        details: expect.objectContaining({ seal: last.seal }),
      }),
    ]);
    await behindTheLedger('ledger_seals', [
      `update ledger_seals set hash = '${beforeLast.hash}' where seal = ${beforeLast.seal}`,
    ]);
    expect(await verifySeals(database.pool)).toEqual([]);
  });
});
