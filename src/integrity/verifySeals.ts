import type pg from 'pg';
import { readJournalEntries, type JournalEntry } from '../exports/journalEntries.js';
import { SnapshotReader } from '../exports/snapshot.js';
import { MAX_FINDINGS_PER_KIND, type Finding } from './findings.js';
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

export interface VerifySealsOptions {
  /** Seal ranges re-hashed at once, each on a connection of its own (default 2). */
  concurrency?: number;
  /** Entries (by the seals' counts) re-read in one pass (default 100,000). */
  chunkEntries?: number;
  pageRows?: number;
}

export interface VerifySealsStats {
  seals: number;
  /** Entries re-hashed (everything the seals cover). */
  entriesVerified: number;
  /** Entries written since the last seal's bound (not yet sealed). */
  entriesUnsealed: number;
  lastSeal: number | null;
  lastHash: string | null;
}

/** Most seals in one chunk: bounds the seal rows held in memory, however small the seals. */
const MAX_SEALS_PER_CHUNK = 10_000;

/**
 * Re-verifies the whole chain: recomputes every seal from the entries it covers and checks
 * each link. A finding names the seal that broke (`seal_mismatch`: its entries or its row
 * changed; `seal_chain_broken`: a seal missing, reordered or re-linked). A clean chain
 * gives no finding.
 *
 * Sealed entries are final, so consecutive seals are re-read in chunks, several at once,
 * each chunk on its own connection and snapshot.
 */
export async function verifySeals(
  pool: pg.Pool,
  options: VerifySealsOptions = {},
): Promise<Finding[]> {
  return (await verifySealChain(pool, options)).findings;
}

/** {@link verifySeals} with its counts, for the integrity run. */
export async function verifySealChain(
  pool: pg.Pool,
  options: VerifySealsOptions = {},
): Promise<{ findings: Finding[]; stats: VerifySealsStats }> {
  const concurrency = Math.min(Math.max(Math.trunc(options.concurrency ?? 2), 1), 16);
  const chunkEntries = Math.max(Math.trunc(options.chunkEntries ?? 100_000), 1);
  const findings: Array<Finding & { order: number }> = [];
  const report = (order: number, finding: Finding) => findings.push({ ...finding, order });
  const stats: VerifySealsStats = {
    seals: 0,
    entriesVerified: 0,
    entriesUnsealed: 0,
    lastSeal: null,
    lastHash: null,
  };

  // At most `concurrency` chunks in flight; every job is awaited at the end, so a failure
  // in any of them fails the verification rather than going unseen.
  const jobs: Array<Promise<void>> = [];
  const inFlight = new Set<Promise<void>>();
  const submit = async (chunk: Seal[], fromTxId: string) => {
    while (inFlight.size >= concurrency) await Promise.race(inFlight);
    const job = verifyChunk(pool, chunk, fromTxId, options.pageRows).then(({ verified, found }) => {
      stats.entriesVerified += verified;
      for (const f of found) report(f.seal * 2 + 1, f.finding);
    });
    job.catch(() => {});
    const slot: Promise<void> = job.then(
      () => void inFlight.delete(slot),
      () => void inFlight.delete(slot),
    );
    inFlight.add(slot);
    jobs.push(job);
  };

  const reader = await SnapshotReader.open(pool);
  try {
    let previous: Seal | null = null;
    let chunk: Seal[] = [];
    let chunkCount = 0;
    // A chunk starts where the previous one ended, so entries in a gap between two seals
    // are read (and reported) too.
    let chunkFrom = '0';
    for await (const rows of reader.pages<SealRow>(
      `select ${SEAL_COLUMNS} from ledger_seals order by ledger_seals.seal`,
      [],
      1000,
    )) {
      for (const row of rows) {
        const seal = sealFromRow(row);
        stats.seals += 1;
        const link = checkLink(seal, previous);
        if (link) report(seal.seal * 2, link);
        chunk.push(seal);
        chunkCount += seal.entryCount;
        previous = seal;
        if (chunkCount >= chunkEntries || chunk.length >= MAX_SEALS_PER_CHUNK) {
          await submit(chunk, chunkFrom);
          [chunk, chunkCount, chunkFrom] = [[], 0, seal.toTxId];
        }
      }
    }
    if (chunk.length > 0) await submit(chunk, chunkFrom);
    stats.lastSeal = previous?.seal ?? null;
    stats.lastHash = previous?.hash ?? null;
    const [unsealed] = await reader.query<{ n: string }>(
      `select count(*)::text as n from ledger_entries where tx_id >= $1::xid8`,
      [previous?.toTxId ?? '0'],
    );
    stats.entriesUnsealed = Number(unsealed?.n ?? 0);
    await Promise.all(jobs);
  } finally {
    await Promise.allSettled(jobs);
    await reader.close();
  }

  // Chunks finish in any order; findings are reported in seal order, a link before a hash.
  findings.sort((a, b) => a.order - b.order);
  const counts = new Map<string, number>();
  const kept: Finding[] = [];
  for (const { order: _order, ...finding } of findings) {
    const seen = (counts.get(finding.kind) ?? 0) + 1;
    counts.set(finding.kind, seen);
    if (seen <= MAX_FINDINGS_PER_KIND) kept.push(finding);
  }
  for (const [kind, seen] of counts) {
    if (seen > MAX_FINDINGS_PER_KIND) {
      const last = kept.filter((f) => f.kind === kind).at(-1);
      if (last) last.details['moreFindingsOfThisKind'] = seen - MAX_FINDINGS_PER_KIND;
    }
  }
  return { findings: kept, stats };
}

/** Re-hashes consecutive seals from one pass over their entries, on a snapshot of its own. */
async function verifyChunk(
  pool: pg.Pool,
  seals: Seal[],
  fromTxId: string,
  pageRows: number | undefined,
): Promise<{ verified: number; found: Array<{ seal: number; finding: Finding }> }> {
  const found: Array<{ seal: number; finding: Finding }> = [];
  let verified = 0;
  const reader = await SnapshotReader.open(pool);
  try {
    const entries = flatten(
      readJournalEntries(reader, {
        order: 'commit',
        txRange: { fromTxId, toTxId: seals.at(-1)!.toTxId },
        withSeal: false,
        ...(pageRows ? { pageRows } : {}),
      }),
    );
    try {
      let next = await entries.next();
      for (const seal of seals) {
        const from = BigInt(seal.fromTxId);
        const to = BigInt(seal.toTxId);
        // Entries between the previous seal's range and this one's: no seal covers them.
        const outside: JournalEntry[] = [];
        while (!next.done && BigInt(next.value.txId) < from) {
          if (outside.length < 20) outside.push(next.value);
          next = await entries.next();
        }
        if (outside.length > 0) {
          found.push({
            seal: seal.seal,
            finding: {
              severity: 'error',
              kind: 'seal_chain_broken',
              expected: null,
              actual: null,
              difference: null,
              details: {
                seal: seal.seal,
                reason: `entries below seal ${seal.seal}'s range are covered by no seal`,
                entryIds: outside.map((e) => e.id),
              },
            },
          });
        }
        const digest = new EntriesDigest();
        while (!next.done && BigInt(next.value.txId) < to) {
          digest.add(next.value);
          next = await entries.next();
        }
        verified += digest.count;
        const mismatch = compare(seal, digest);
        if (mismatch) found.push({ seal: seal.seal, finding: mismatch });
      }
    } finally {
      await entries.return(undefined);
    }
  } finally {
    await reader.close();
  }
  return { verified, found };
}

/** The seal recomputed from its entries against the stored one; null when they agree. */
function compare(seal: Seal, digest: EntriesDigest): Finding | null {
  const recomputed = {
    seal: seal.seal,
    fromTxId: seal.fromTxId,
    toTxId: seal.toTxId,
    entryCount: digest.count,
    firstEntryId: digest.firstEntryId ?? '',
    lastEntryId: digest.lastEntryId ?? '',
    entriesHash: digest.digest(),
    previousHash: seal.previousHash,
    algorithm: SEAL_ALGORITHM,
  };
  const hash = sealHash(recomputed);
  const storedHash = sealHash(seal);
  if (hash === seal.hash && storedHash === seal.hash && seal.algorithm === SEAL_ALGORITHM) {
    return null;
  }
  const changed: string[] = [];
  if (recomputed.entryCount !== seal.entryCount) changed.push('entry count');
  if (recomputed.firstEntryId !== seal.firstEntryId || recomputed.lastEntryId !== seal.lastEntryId)
    changed.push('first or last entry');
  if (recomputed.entriesHash !== seal.entriesHash) changed.push('entries hash');
  if (storedHash !== seal.hash) changed.push('seal row');
  if (seal.algorithm !== SEAL_ALGORITHM) changed.push(`algorithm ${seal.algorithm}`);
  return {
    severity: 'error',
    kind: 'seal_mismatch',
    expected: seal.hash,
    actual: hash,
    difference: null,
    details: {
      seal: seal.seal,
      fromTxId: seal.fromTxId,
      toTxId: seal.toTxId,
      changed,
      entryCount: { sealed: seal.entryCount, now: recomputed.entryCount },
      entriesHash: { sealed: seal.entriesHash, now: recomputed.entriesHash },
      firstEntryId: { sealed: seal.firstEntryId, now: recomputed.firstEntryId },
      lastEntryId: { sealed: seal.lastEntryId, now: recomputed.lastEntryId },
      sealedAt: seal.createdAt,
    },
  };
}

function checkLink(seal: Seal, previous: Seal | null): Finding | null {
  const problems: string[] = [];
  const expectedNumber = (previous?.seal ?? 0) + 1;
  if (seal.seal !== expectedNumber) problems.push(`seal ${expectedNumber} is missing`);
  const expectedPrevious = previous?.hash ?? GENESIS_HASH;
  if (seal.previousHash !== expectedPrevious)
    problems.push(`its previous hash is not the hash of seal ${expectedNumber - 1}`);
  const expectedFrom = previous?.toTxId ?? '0';
  if (seal.fromTxId !== expectedFrom)
    problems.push(
      `its range starts at ${seal.fromTxId}, not where the previous seal ended (${expectedFrom})`,
    );
  if (problems.length === 0) return null;
  return {
    severity: 'error',
    kind: 'seal_chain_broken',
    expected: expectedPrevious,
    actual: seal.previousHash,
    difference: null,
    details: { seal: seal.seal, reason: problems.join('; ') },
  };
}

/** One item at a time from a generator of pages. */
async function* flatten<T>(pages: AsyncGenerator<T[]>): AsyncGenerator<T> {
  for await (const page of pages) yield* page;
}
