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
  /** Rows per cursor page while hashing (default 2000). */
  pageRows?: number;
}

/**
 * Seals what has become final since the last seal: every entry written by a transaction
 * with id at or above the last seal's bound and below `pg_snapshot_xmin(pg_current_snapshot())`.
 * Every transaction below that bound has ended, so no entry can ever join that set; its
 * entries are hashed (with their postings) in (tx_id, id) order and chained to the previous
 * seal. Reads only, then inserts one row: writers are never blocked or slowed.
 *
 * Returns null when there is nothing new to seal, or when another sealer holds the lock.
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
      return await sealLocked(client, options);
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

async function sealLocked(
  client: pg.PoolClient,
  options: SealJournalOptions,
): Promise<Seal | null> {
  const { rows: lastRows } = await client.query<SealRow>(
    `select ${SEAL_COLUMNS} from ledger_seals order by seal desc limit 1`,
  );
  const last = lastRows[0] ? sealFromRow(lastRows[0]) : null;
  const fromTxId = last?.toTxId ?? '0';
  const { rows: boundRows } = await client.query<{ bound: string }>(
    `select pg_snapshot_xmin(pg_current_snapshot())::text as bound`,
  );
  const toTxId = boundRows[0]!.bound;
  // New transaction ids only grow, and every one below the last bound had ended: the bound
  // cannot move back. If it did, something is deeply wrong; stop rather than seal.
  if (BigInt(toTxId) < BigInt(fromTxId)) {
    throw new Error(`sealing bound ${toTxId} is below the last seal's bound ${fromTxId}`);
  }
  if (BigInt(toTxId) === BigInt(fromTxId)) return null;

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
