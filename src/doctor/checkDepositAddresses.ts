import { sql, type Kysely } from 'kysely';
import { deriveEvmAddress } from '../../chain-watchers/addresses/deriveEvmAddress.js';
import { deriveTronAddress } from '../../chain-watchers/addresses/deriveTronAddress.js';
import type { AddressFamily } from '../../chain-watchers/pipeline/depositAddresses.js';
import type { Config } from '../config/schema.js';
import { fail, ok, reasonOf, type DoctorCheck } from './check.js';

const AREA = 'deposit addresses';
/** Rows read per query: one page of a family, in index order. */
const PAGE_SIZE = 1000;
/** Mismatches named in the report per family; the rest are counted. */
const LISTED_MAX = 20;

interface Key {
  /** Where the config has it: `wallets.evmXpub`, `wallets.retiredXpubs[1]`. */
  field: string;
  xpub: string;
  matched: number;
}

interface Row {
  user_id: string;
  derivation_index: number;
  derivation_path: string;
  address: string;
}

/**
 * Every deposit address already assigned must derive, at its stored index (and path), from
 * the family's configured xpub or one in `wallets.retiredXpubs`: one that does not was
 * assigned under a key the config no longer names (its funds are swept with a mnemonic the
 * operator may not know to keep), or its row was changed since. Each family with addresses is
 * one check; a failure names each mismatch (address, user, networks, index). Reads only.
 */
export async function checkDepositAddresses(
  db: Kysely<unknown>,
  config: Config,
): Promise<DoctorCheck[]> {
  const { rows: table } = await sql<{ found: boolean }>`
    select to_regclass('deposit_addresses') is not null as found`.execute(db);
  if (!table[0]?.found) return [];
  const checks: DoctorCheck[] = [];
  for (const family of ['evm', 'tron'] as const) {
    try {
      const check = await checkFamily(db, config, family);
      if (check) checks.push(check);
    } catch (error) {
      checks.push(
        fail(
          AREA,
          `${family}: cannot read the deposit addresses: ${reasonOf(error)}`,
          'see the message; run `lingxi doctor` again (a larger --timeout for a large table)',
        ),
      );
    }
  }
  return checks;
}

async function checkFamily(
  db: Kysely<unknown>,
  config: Config,
  family: AddressFamily,
): Promise<DoctorCheck | null> {
  const configured = family === 'evm' ? config.wallets.evmXpub : config.wallets.tronXpub;
  const keys: Key[] = [
    ...(configured ? [{ field: `wallets.${family}Xpub`, xpub: configured, matched: 0 }] : []),
    ...config.wallets.retiredXpubs.map((xpub, i) => ({
      field: `wallets.retiredXpubs[${i}]`,
      xpub,
      matched: 0,
    })),
  ];
  const networks = config.networks.filter((n) => n.kind === family).map((n) => n.name);
  const networksText = networks.length > 0 ? networks.join(', ') : 'no network configured';
  const mismatches: string[] = [];
  let mismatched = 0;
  let total = 0;
  // The key that derived the last row is tried first: addresses come in runs of one key.
  let last: Key | undefined;
  for (let after = -1; ;) {
    const { rows } = await sql<Row>`
      select user_id::text as user_id, derivation_index, derivation_path, address
        from deposit_addresses
       where family = ${family} and derivation_index > ${after}
       order by derivation_index
       limit ${PAGE_SIZE}`.execute(db);
    for (const row of rows) {
      total += 1;
      const found = matchRow(family, row, last ? [last, ...keys.filter((k) => k !== last)] : keys);
      if (found.key) {
        found.key.matched += 1;
        last = found.key;
        continue;
      }
      mismatched += 1;
      if (mismatches.length < LISTED_MAX)
        mismatches.push(
          `${row.address} (user ${row.user_id}, ${networksText}, index ${row.derivation_index}, ${row.derivation_path}${found.note ? `; ${found.note}` : ''})`,
        );
    }
    if (rows.length < PAGE_SIZE) break;
    after = rows[rows.length - 1]!.derivation_index;
  }
  if (total === 0) return null;
  const plural = (n: number) => `${n} ${family} deposit address${n === 1 ? '' : 'es'}`;
  if (mismatched === 0) {
    const from = keys
      .filter((k) => k.matched > 0)
      .map((k) => `${k.field} (${k.matched})`)
      .join(', ');
    return ok(
      AREA,
      `${plural(total)} assigned (${networksText}): each derives from ${from} at its stored index`,
    );
  }
  const against =
    keys.length === 0
      ? `no xpub is configured to check them against (neither wallets.${family}Xpub nor wallets.retiredXpubs)`
      : `they derive from none of ${keys.map((k) => k.field).join(', ')} at their stored index`;
  const more = mismatched > mismatches.length ? `; and ${mismatched - mismatches.length} more` : '';
  return fail(
    AREA,
    `${mismatched} of ${plural(total)} assigned: ${against}: ${mismatches.join('; ')}${more}`,
    `find the xpub these were assigned under (your wallet shows each address at its path) and keep its mnemonic: funds sent there are swept with it. If wallets.${family}Xpub was changed on purpose, list the previous xpub in wallets.retiredXpubs (docs/operating.md, rotating keys); if it was changed by mistake, restore it. A row that no key derives was changed in the database: compare it with a backup before anyone deposits to it`,
  );
}

/** The key that derives `row` at its index and path, or why none does. */
function matchRow(
  family: AddressFamily,
  row: Row,
  keys: readonly Key[],
): { key: Key | null; note?: string } {
  let note: string | undefined;
  for (const key of keys) {
    let derived: { address: string; derivationPath: string };
    try {
      derived =
        family === 'evm'
          ? deriveEvmAddress(key.xpub, row.derivation_index)
          : deriveTronAddress(key.xpub, row.derivation_index);
    } catch {
      // A key that derives nothing (the config load refuses it) matches nothing.
      continue;
    }
    const address = family === 'evm' ? derived.address.toLowerCase() : derived.address;
    if (address !== row.address) continue;
    if (derived.derivationPath === row.derivation_path) return { key };
    note = `${key.field} derives it at ${derived.derivationPath}, not at the stored path`;
  }
  return note === undefined ? { key: null } : { key: null, note };
}
