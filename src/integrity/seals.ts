import { createHash, type Hash } from 'node:crypto';
import type { JournalEntry } from '../exports/journalEntries.js';
import { canonicalEntryLine, canonicalJson } from './canonical.js';

export const SEAL_ALGORITHM = 'lingxi-seal-v1';
export const GENESIS_HASH = '0'.repeat(64);

/** One link of the hash chain over the journal. */
export interface Seal {
  seal: number;
  /** Entries written by transactions with id in [fromTxId, toTxId) (xid8 as decimal text). */
  fromTxId: string;
  toTxId: string;
  entryCount: number;
  firstEntryId: string;
  lastEntryId: string;
  /** sha256 (hex) of the entries' canonical lines, each followed by "\n", in (txId, id) order. */
  entriesHash: string;
  previousHash: string;
  /** sha256 (hex) of the canonical JSON of {@link sealHeader}. */
  hash: string;
  algorithm: string;
  createdAt: string;
}

/** What a seal's hash covers: everything about it but its own hash and when it was taken. */
export function sealHeader(seal: Omit<Seal, 'hash' | 'createdAt'>): Record<string, unknown> {
  return {
    algorithm: seal.algorithm,
    seal: seal.seal,
    fromTxId: seal.fromTxId,
    toTxId: seal.toTxId,
    entryCount: seal.entryCount,
    firstEntryId: seal.firstEntryId,
    lastEntryId: seal.lastEntryId,
    entriesHash: seal.entriesHash,
    previousHash: seal.previousHash,
  };
}

export function sealHash(seal: Omit<Seal, 'hash' | 'createdAt'>): string {
  return sha256(canonicalJson(sealHeader(seal)));
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Hashes entries one at a time, in commit order, as a seal covers them. */
export class EntriesDigest {
  private readonly hash: Hash = createHash('sha256');
  count = 0;
  firstEntryId: string | null = null;
  lastEntryId: string | null = null;

  add(entry: JournalEntry): void {
    this.hash.update(`${canonicalEntryLine(entry)}\n`);
    this.count += 1;
    this.firstEntryId ??= entry.id;
    this.lastEntryId = entry.id;
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

export interface SealRow {
  seal: string;
  from_tx_id: string;
  to_tx_id: string;
  entry_count: string;
  first_entry_id: string;
  last_entry_id: string;
  entries_hash: string;
  previous_hash: string;
  hash: string;
  algorithm: string;
  created_at: string;
}

/**
 * Columns of ledger_seals as SealRow (ids and xids as text, the time as ISO UTC). The
 * aliases shadow the columns: order by `ledger_seals.seal`, never by `seal` (text order).
 */
export const SEAL_COLUMNS = `seal::text as seal, from_tx_id::text as from_tx_id, to_tx_id::text as to_tx_id,
  entry_count::text as entry_count, first_entry_id::text as first_entry_id, last_entry_id::text as last_entry_id,
  entries_hash, previous_hash, hash, algorithm,
  to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as created_at`;

export function sealFromRow(row: SealRow): Seal {
  return {
    seal: Number(row.seal),
    fromTxId: row.from_tx_id,
    toTxId: row.to_tx_id,
    entryCount: Number(row.entry_count),
    firstEntryId: row.first_entry_id,
    lastEntryId: row.last_entry_id,
    entriesHash: row.entries_hash,
    previousHash: row.previous_hash,
    hash: row.hash,
    algorithm: row.algorithm,
    createdAt: row.created_at,
  };
}
