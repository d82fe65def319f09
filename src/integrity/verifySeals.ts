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

/**
 * Re-verifies the whole chain: recomputes every seal from the entries it covers and checks
 * each link. A finding names the seal that broke (`seal_mismatch`: its entries or its row
 * changed; `seal_chain_broken`: a seal missing, reordered or re-linked). A clean chain
 * gives no finding.
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
  const reader = await SnapshotReader.open(pool);
  try {
    return await verifyOnSnapshot(reader, options);
  } finally {
    await reader.close();
  }
}

async function verifyOnSnapshot(
  reader: SnapshotReader,
  options: VerifySealsOptions,
): Promise<{ findings: Finding[]; stats: VerifySealsStats }> {
  const findings: Finding[] = [];
  const counts = new Map<string, number>();
  const report = (finding: Finding) => {
    const seen = (counts.get(finding.kind) ?? 0) + 1;
    counts.set(finding.kind, seen);
    if (seen <= MAX_FINDINGS_PER_KIND) findings.push(finding);
  };
  const stats: VerifySealsStats = {
    seals: 0,
    entriesVerified: 0,
    entriesUnsealed: 0,
    lastSeal: null,
    lastHash: null,
  };

  const [bounds] = await reader.query<{ last_to: string | null; count: string }>(
    `select (select to_tx_id::text from ledger_seals order by seal desc limit 1) as last_to,
            (select count(*) from ledger_seals)::text as count`,
  );
  const lastTo = bounds?.last_to ?? null;
  if (lastTo === null) {
    const [unsealed] = await reader.query<{ n: string }>(
      `select count(*)::text as n from ledger_entries`,
    );
    stats.entriesUnsealed = Number(unsealed?.n ?? 0);
    return { findings, stats };
  }
  const [unsealed] = await reader.query<{ n: string }>(
    `select count(*)::text as n from ledger_entries where tx_id >= $1::xid8`,
    [lastTo],
  );
  stats.entriesUnsealed = Number(unsealed?.n ?? 0);

  const seals = flatten(
    reader.pages<SealRow>(`select ${SEAL_COLUMNS} from ledger_seals order by seal`, [], 1000),
  );
  const entries = flatten(
    readJournalEntries(reader, {
      order: 'commit',
      txRange: { fromTxId: '0', toTxId: lastTo },
      withSeal: false,
      ...(options.pageRows ? { pageRows: options.pageRows } : {}),
    }),
  );

  let previous: Seal | null = null;
  let next = await entries.next();
  const outside: JournalEntry[] = [];
  for (let row = await seals.next(); !row.done; row = await seals.next()) {
    const seal = sealFromRow(row.value);
    stats.seals += 1;
    checkLink(seal, previous, report);
    const from = BigInt(seal.fromTxId);
    const to = BigInt(seal.toTxId);
    const digest = new EntriesDigest();
    // Entries below this seal's range that no seal covered (a gap in the chain).
    while (!next.done && BigInt(next.value.txId) < from) {
      if (outside.length < 20) outside.push(next.value);
      next = await entries.next();
    }
    if (outside.length > 0) {
      report({
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
      });
      outside.length = 0;
    }
    while (!next.done && BigInt(next.value.txId) < to) {
      digest.add(next.value);
      next = await entries.next();
    }
    stats.entriesVerified += digest.count;
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
    if (hash !== seal.hash || storedHash !== seal.hash || seal.algorithm !== SEAL_ALGORITHM) {
      const changed: string[] = [];
      if (recomputed.entryCount !== seal.entryCount) changed.push('entry count');
      if (
        recomputed.firstEntryId !== seal.firstEntryId ||
        recomputed.lastEntryId !== seal.lastEntryId
      )
        changed.push('first or last entry');
      if (recomputed.entriesHash !== seal.entriesHash) changed.push('entries hash');
      if (storedHash !== seal.hash) changed.push('seal row');
      if (seal.algorithm !== SEAL_ALGORITHM) changed.push(`algorithm ${seal.algorithm}`);
      report({
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
      });
    }
    previous = seal;
  }
  stats.lastSeal = previous?.seal ?? null;
  stats.lastHash = previous?.hash ?? null;
  for (const [kind, seen] of counts) {
    if (seen > MAX_FINDINGS_PER_KIND) {
      const last = findings.filter((f) => f.kind === kind).at(-1);
      if (last) last.details['moreFindingsOfThisKind'] = seen - MAX_FINDINGS_PER_KIND;
    }
  }
  return { findings, stats };
}

function checkLink(seal: Seal, previous: Seal | null, report: (finding: Finding) => void): void {
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
  if (problems.length === 0) return;
  report({
    severity: 'error',
    kind: 'seal_chain_broken',
    expected: expectedPrevious,
    actual: seal.previousHash,
    difference: null,
    details: { seal: seal.seal, reason: problems.join('; ') },
  });
}

/** One item at a time from a generator of pages. */
async function* flatten<T>(pages: AsyncGenerator<T[]>): AsyncGenerator<T> {
  for await (const page of pages) yield* page;
}
