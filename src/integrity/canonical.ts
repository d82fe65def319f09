import type { JournalEntry } from '../exports/journalEntries.js';

/**
 * JSON Canonicalization Scheme (RFC 8785) for the values JSON.parse returns: object keys
 * sorted by UTF-16 code units, no whitespace, numbers and strings as ECMAScript's
 * JSON.stringify writes them. Libraries exist for every language, so an auditor can
 * recompute a seal without our code.
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('canonical JSON has no NaN or Infinity');
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record)
        .filter((key) => record[key] !== undefined)
        .sort();
      return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(',')}}`;
    }
    default:
      throw new TypeError(`canonical JSON cannot hold a ${typeof value}`);
  }
}

/**
 * The fields of an entry a seal commits to: all of it, postings included, except where
 * it is sealed (which is not known until it is).
 */
export function canonicalEntry(entry: JournalEntry): Record<string, unknown> {
  return {
    id: entry.id,
    txId: entry.txId,
    kind: entry.kind,
    description: entry.description,
    metadata: entry.metadata,
    reversesEntryId: entry.reversesEntryId,
    holdId: entry.holdId,
    createdAt: entry.createdAt,
    effectiveAt: entry.effectiveAt,
    postings: entry.postings.map((p) => ({
      line: p.line,
      account: p.account,
      currency: p.currency,
      amount: p.amount,
      accountVersion: p.accountVersion,
      balanceAfter: p.balanceAfter,
    })),
  };
}

/**
 * The line a seal hashes for an entry: exactly `canonicalJson(canonicalEntry(entry))`
 * (with `seal` when asked, for the JSONL export), written field by field in canonical key
 * order, because this runs once per entry over the whole journal.
 */
export function canonicalEntryLine(entry: JournalEntry, seal?: { seal: number | null }): string {
  const q = JSON.stringify;
  let line = `{"createdAt":${q(entry.createdAt)},"description":${q(entry.description)},"effectiveAt":${q(entry.effectiveAt)},"holdId":${entry.holdId === null ? 'null' : q(entry.holdId)},"id":${q(entry.id)},"kind":${q(entry.kind)},"metadata":${canonicalJson(entry.metadata)},"postings":[`;
  entry.postings.forEach((p, i) => {
    if (!Number.isSafeInteger(p.line)) throw new TypeError(`posting line ${String(p.line)}`);
    line += `${i === 0 ? '' : ','}{"account":${q(p.account)},"accountVersion":${q(p.accountVersion)},"amount":${q(p.amount)},"balanceAfter":${q(p.balanceAfter)},"currency":${q(p.currency)},"line":${p.line}}`;
  });
  line += `],"reversesEntryId":${entry.reversesEntryId === null ? 'null' : q(entry.reversesEntryId)}`;
  if (seal) line += `,"seal":${seal.seal === null ? 'null' : seal.seal}`;
  return `${line},"txId":${q(entry.txId)}}`;
}
