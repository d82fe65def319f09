import type pg from 'pg';
import { canonicalJson } from '../integrity/canonical.js';
import { SEAL_COLUMNS, sealFromRow, type SealRow } from '../integrity/seals.js';
import { withSnapshot } from './snapshot.js';

/**
 * Every seal, oldest first, one canonical JSON object per line: what an auditor keeps (the
 * last hash commits to everything before it) and checks a journal export against.
 */
export function streamSealsJsonl(pool: pg.Pool): AsyncGenerator<string> {
  return withSnapshot(pool, async function* (reader) {
    for await (const rows of reader.pages<SealRow>(
      `select ${SEAL_COLUMNS} from ledger_seals order by ledger_seals.seal`,
    )) {
      yield rows.map((row) => `${canonicalJson(sealFromRow(row))}\n`).join('');
    }
  });
}
