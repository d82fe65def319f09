import type pg from 'pg';
import { readJournalEntries } from '../exports/journalEntries.js';
import { SnapshotReader } from '../exports/snapshot.js';
import {
  EntriesDigest,
  GENESIS_HASH,
  SEAL_ALGORITHM,
  SEAL_COLUMNS,
  sealFromRow,
  sealHash,
  type Seal,
  type SealRow,
} from './seals.js';

/** Session advisory lock key of the sealing job ('lxseal' in ASCII): one sealer at a time. */
export const SEAL_LOCK_KEY = '119264587899244';

export interface SealJournalOptions {
  /**
   * Most entries one seal covers (default 50,000), so a backlog becomes several seals that
   * verify in parallel. A seal ends on a transaction boundary, so one transaction that wrote
   * more than this still gets a single seal.
   */
  maxEntries?: number;
  /** Most seals one call writes (default 1,000); the next call goes on. */
  maxSeals?: number;
  /** Rows per cursor page while hashing (default 2000). */
  pageRows?: number;
}

export const DEFAULT_SEAL_MAX_ENTRIES = 50_000;

/**
 * Seals what has become final since the last seal: every entry written by a transaction
 * with id at or above the last seal's bound and below `pg_snapshot_xmin(pg_current_snapshot())`.
 * Every transaction below that bound has ended, so no entry can ever join that set; its
 * entries are hashed (with their postings) in (tx_id, id) order and chained to the previous
 * seal, in seals of at most `maxEntries` entries. Reads only, then inserts a row per seal:
 * writers are never blocked or slowed.
 *
 * Returns the newest seal written, or null when there was nothing new to seal (or another
 * sealer holds the lock).
 *
 * @example const seal = await sealJournal(runtime.database.pool) // cron, every minute
 */
export async function sealJournal(
  pool: pg.Pool,
  options: SealJournalOptions = {},
): Promise<Seal | null> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    const { rows } = await client.query<{ locked: boolean }>(
      `select pg_try_advisory_lock(${SEAL_LOCK_KEY}::bigint) as locked`,
    );
    if (!rows[0]?.locked) return null;
    try {
      const { rows: boundRows } = await client.query<{ bound: string }>(
        `select pg_snapshot_xmin(pg_current_snapshot())::text as bound`,
      );
      const bound = boundRows[0]!.bound;
      let newest: Seal | null = null;
      for (let i = 0; i < (options.maxSeals ?? 1_000); i += 1) {
        const seal = await sealNext(client, bound, options);
        if (seal === null) break;
        newest = seal;
      }
      return newest;
    } finally {
      await client.query(`select pg_advisory_unlock(${SEAL_LOCK_KEY}::bigint)`);
    }
  } catch (error) {
    broken = error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    client.release(broken);
  }
}

/** The next seal after the last one, up to `bound` and at most maxEntries entries; null when none. */
async function sealNext(
  client: pg.PoolClient,
  bound: string,
  options: SealJournalOptions,
): Promise<Seal | null> {
  const { rows: lastRows } = await client.query<SealRow>(
    `select ${SEAL_COLUMNS} from ledger_seals order by ledger_seals.seal desc limit 1`,
  );
  const last = lastRows[0] ? sealFromRow(lastRows[0]) : null;
  const fromTxId = last?.toTxId ?? '0';
  // New transaction ids only grow, and every one below the last bound had ended: the bound
  // cannot move back. If it did, something is deeply wrong; stop rather than seal.
  if (BigInt(bound) < BigInt(fromTxId)) {
    throw new Error(`sealing bound ${bound} is below the last seal's bound ${fromTxId}`);
  }
  if (BigInt(bound) === BigInt(fromTxId)) return null;
  const toTxId = await sealEnd(
    client,
    fromTxId,
    bound,
    options.maxEntries ?? DEFAULT_SEAL_MAX_ENTRIES,
  );
  if (toTxId === null) return null;

  const digest = new EntriesDigest();
  const reader = await SnapshotReader.begin(client);
  try {
    for await (const entries of readJournalEntries(reader, {
      order: 'commit',
      txRange: { fromTxId, toTxId },
      withSeal: false,
      ...(options.pageRows ? { pageRows: options.pageRows } : {}),
    })) {
      for (const entry of entries) digest.add(entry);
    }
  } finally {
    await reader.close();
  }
  if (digest.count === 0) return null;

  const unsigned = {
    seal: (last?.seal ?? 0) + 1,
    fromTxId,
    toTxId,
    entryCount: digest.count,
    firstEntryId: digest.firstEntryId!,
    lastEntryId: digest.lastEntryId!,
    entriesHash: digest.digest(),
    previousHash: last?.hash ?? GENESIS_HASH,
    algorithm: SEAL_ALGORITHM,
  };
  const hash = sealHash(unsigned);
  const { rows } = await client.query<SealRow>(
    `insert into ledger_seals (seal, from_tx_id, to_tx_id, entry_count, first_entry_id, last_entry_id,
       entries_hash, previous_hash, hash, algorithm)
     values ($1, $2::xid8, $3::xid8, $4, $5, $6, $7, $8, $9, $10)
     returning ${SEAL_COLUMNS}`,
    [
      unsigned.seal,
      unsigned.fromTxId,
      unsigned.toTxId,
      unsigned.entryCount,
      unsigned.firstEntryId,
      unsigned.lastEntryId,
      unsigned.entriesHash,
      unsigned.previousHash,
      hash,
      unsigned.algorithm,
    ],
  );
  return sealFromRow(rows[0]!);
}

/**
 * Where a seal from `fromTxId` ends: `bound`, or earlier, on a transaction boundary, so that
 * it covers at most `maxEntries` entries (more only when one transaction wrote more).
 * Null when no entry waits below the bound.
 */
async function sealEnd(
  client: pg.PoolClient,
  fromTxId: string,
  bound: string,
  maxEntries: number,
): Promise<string | null> {
  const { rows } = await client.query<{ first: string | null; cut: string | null }>(
    `select (select tx_id::text from ledger_entries where tx_id >= $1::xid8 and tx_id < $2::xid8
              order by tx_id limit 1) as first,
            (select tx_id::text from ledger_entries where tx_id >= $1::xid8 and tx_id < $2::xid8
              order by tx_id offset $3 limit 1) as cut`,
    [fromTxId, bound, Math.max(1, Math.trunc(maxEntries))],
  );
  const first = rows[0]?.first ?? null;
  const cut = rows[0]?.cut ?? null;
  if (first === null) return null;
  if (cut === null) return bound;
  if (BigInt(cut) > BigInt(first)) return cut;
  // The first transaction alone holds more than maxEntries entries: seal all of it.
  const { rows: next } = await client.query<{ tx: string | null }>(
    `select (select tx_id::text from ledger_entries where tx_id > $1::xid8 and tx_id < $2::xid8
              order by tx_id limit 1) as tx`,
    [first, bound],
  );
  return next[0]?.tx ?? bound;
}
