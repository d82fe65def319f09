import { canonicalEntryLine } from '../integrity/canonical.js';
import type { JournalWriterContext } from './streamJournal.js';

/**
 * One entry per line, postings nested: the canonical JSON (RFC 8785) of exactly what a seal
 * hashes, plus `seal`, the number of the seal that covers it (null until sealed). An auditor
 * drops `seal`, re-serialises canonically, and recomputes the seals (docs/accounting-exports.md).
 */
export async function* journalJsonl(context: JournalWriterContext): AsyncGenerator<string> {
  for await (const entries of context.entries()) {
    let chunk = '';
    for (const entry of entries) {
      chunk += `${canonicalEntryLine(entry, { seal: entry.seal })}\n`;
    }
    yield chunk;
  }
}
