import { entryChainReference, entryRate, type JournalEntry } from './journalEntries.js';
import { timeColumn, type JournalFilter } from './journalFilter.js';
import { usedAccounts, usedCurrencies } from './journalAccounts.js';
import type { JournalWriterContext } from './streamJournal.js';

/**
 * An hledger journal: `decimal-mark`, a `commodity` directive per currency at its full
 * scale (so reports print exact amounts), an `account` directive per account used (so
 * `hledger check --strict` passes), then one transaction per entry, dated by the UTC day of
 * its time on the export's basis, with the entry id as the transaction code and kind,
 * time, rate, chain reference, request id and model as tags. Account names are ours,
 * unchanged. No text of an entry can add a line, a tag or a directive (see
 * {@link hledgerDescription} and {@link tagValue}).
 */
export async function* journalHledger(context: JournalWriterContext): AsyncGenerator<string> {
  const { reader, filter } = context;
  let head = `${exportComment(filter, ';')}decimal-mark .\n\n`;
  for (const currency of await usedCurrencies(reader, filter)) {
    // hledger refuses a commodity directive without a decimal mark (`1 GEM`); `1.` is zero
    // decimals.
    const sample = `1.${'0'.repeat(currency.scale)}`;
    head += `commodity ${sample} ${hledgerCommodity(currency.currency)}\n`;
  }
  yield `${head}\n`;
  for await (const accounts of usedAccounts(reader, filter)) {
    yield accounts.map((a) => `account ${a.code}\n`).join('');
  }
  const effective = filter.basis === 'effective';
  for await (const entries of context.entries()) {
    yield entries.map((entry) => hledgerTransaction(entry, effective)).join('');
  }
}

function hledgerTransaction(entry: JournalEntry, effective: boolean): string {
  const at = effective ? entry.effectiveAt : entry.createdAt;
  const { rate, rateSource } = entryRate(entry);
  const chain = entryChainReference(entry);
  const tags = [`kind:${tagValue(entry.kind)}`, `at:${at}`];
  if (rate) tags.push(`rate:${tagValue(rate)}`);
  if (rateSource) tags.push(`rate-source:${tagValue(rateSource)}`);
  if (chain) tags.push(`chain:${tagValue(chain)}`);
  const { requestId, model } = entry.metadata;
  if (typeof requestId === 'string') tags.push(`request:${tagValue(requestId)}`);
  if (typeof model === 'string') tags.push(`model:${tagValue(model)}`);
  if (entry.reversesEntryId) tags.push(`reverses:${entry.reversesEntryId}`);
  let text = `\n${at.slice(0, 10)} (${entry.id}) ${hledgerDescription(entry.description)}\n    ; ${tags.join(', ')}\n`;
  for (const posting of entry.postings) {
    text += `    ${posting.account}  ${posting.amount} ${hledgerCommodity(posting.currency)}\n`;
  }
  return text;
}

/** hledger needs a symbol in double quotes unless it is letters only. */
function hledgerCommodity(code: string): string {
  return /^[A-Za-z]+$/.test(code) ? code : `"${code}"`;
}

/** A tag value ends at a comma or the line's end. */
function tagValue(text: string): string {
  return text.replace(/[,\r\n]/g, ' ');
}

/**
 * A description as hledger reads it back whole: on one line (a line break or tab is a space,
 * so no text can start a directive, a posting or a transaction of its own), and with each
 * `;` as the full-width `；`, since hledger ends a description at a semicolon and reads what
 * follows as a comment whose `name:value` words are tags (a description `refund; kind:deposit`
 * would tag an adjustment as a deposit). hledger has no escape for either.
 */
function hledgerDescription(text: string): string {
  return text.replace(/[\r\n\t]+/g, ' ').replace(/;/g, '\uFF1B');
}

/** The header comment: what the export covers. Built from the request only, never the clock. */
export function exportComment(filter: JournalFilter, mark: string): string {
  const range = `[${filter.from ?? '-infinity'}, ${filter.to ?? 'infinity'})`;
  const lines = [
    `Lingxi Ledger journal export`,
    `entries by ${timeColumn(filter.basis)} (UTC) in ${range}` +
      (filter.account ? `, touching ${filter.account}` : ''),
    'amounts are exact; a positive amount is a debit',
  ];
  return lines.map((line) => `${mark} ${line}\n`).join('');
}
