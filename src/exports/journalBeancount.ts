import { AppError } from '../errors.js';
import { beancountAccount } from './beancountAccounts.js';
import { caseFoldedGroups, usedAccounts, usedCurrencies, widestEntry } from './journalAccounts.js';
import { entryChainReference, entryRate, type JournalEntry } from './journalEntries.js';
import { exportComment } from './journalHledger.js';
import type { JournalWriterContext } from './streamJournal.js';

const BEANCOUNT_COMMODITY = /^[A-Z][A-Z0-9'._-]{0,22}[A-Z0-9]$/;

/**
 * beancount computes under Python's default decimal context, 28 significant digits: it rounds
 * a negative amount (every credit) with more as it reads it, and each partial sum when it
 * checks that an entry balances. An entry that needs more would be read as other amounts
 * than ours, or refused by bean-check ("Transaction does not balance").
 */
export const BEANCOUNT_DIGITS = 28;

/**
 * A beancount ledger: options, a `commodity` and an `open` directive (with the account's
 * currency, and our code as `code` metadata) dated at first use, then one transaction per
 * entry with its id, kind, time, rate, chain reference, request id and model as metadata.
 * Account names are mapped by {@link beancountAccount}. No prices or costs are needed: every entry balances
 * in each currency on its own (the conversion goes through equity:trading accounts).
 */
export async function* journalBeancount(context: JournalWriterContext): AsyncGenerator<string> {
  const { reader, filter } = context;
  for (const group of await caseFoldedGroups(reader, filter)) {
    const names = new Map<string, string>();
    for (const code of group) {
      const name = beancountAccount(code);
      const other = names.get(name);
      if (other !== undefined) {
        throw new AppError(
          'account_name_collision',
          `accounts "${other}" and "${code}" would both be "${name}" in beancount`,
          { status: 422 },
        );
      }
      names.set(name, code);
    }
  }
  const widest = await widestEntry(reader, filter);
  if (widest !== undefined && widest.digits > BEANCOUNT_DIGITS) {
    throw new AppError(
      'unmappable_amount',
      `entry ${widest.entryId} needs ${widest.digits} digits to add up its ${widest.currency} amounts exactly; beancount computes with ${BEANCOUNT_DIGITS} (use the hledger, CSV or JSONL format, or leave the entry out with --account or --from/--to)`,
      { status: 422 },
    );
  }
  const currencies = await usedCurrencies(reader, filter);
  let head = `${exportComment(filter, ';')}option "title" "Lingxi Ledger"\noption "operating_currency" "USD"\n\n`;
  for (const currency of currencies) {
    if (!BEANCOUNT_COMMODITY.test(currency.currency)) {
      throw new AppError(
        'unmappable_currency',
        `currency "${currency.currency}" is not a valid beancount commodity`,
        { status: 422 },
      );
    }
    head += `${currency.firstDay} commodity ${currency.currency}\n`;
  }
  yield `${head}\n`;
  for await (const accounts of usedAccounts(reader, filter)) {
    yield accounts
      .map(
        (a) =>
          `${a.firstDay} open ${beancountAccount(a.code)} ${a.currency}\n  code: ${quote(a.code)}\n`,
      )
      .join('');
  }
  const effective = filter.basis === 'effective';
  for await (const entries of context.entries()) {
    yield entries.map((entry) => beancountTransaction(entry, effective)).join('');
  }
}

function beancountTransaction(entry: JournalEntry, effective: boolean): string {
  const at = effective ? entry.effectiveAt : entry.createdAt;
  const { rate, rateSource } = entryRate(entry);
  const chain = entryChainReference(entry);
  let text = `\n${at.slice(0, 10)} * ${quote(entry.description)}\n`;
  text += `  entry: ${quote(entry.id)}\n  kind: ${quote(entry.kind)}\n  at: ${quote(at)}\n`;
  if (rate) text += `  rate: ${quote(rate)}\n`;
  if (rateSource) text += `  rate_source: ${quote(rateSource)}\n`;
  if (chain) text += `  chain: ${quote(chain)}\n`;
  const { requestId, model } = entry.metadata;
  if (typeof requestId === 'string') text += `  request_id: ${quote(requestId)}\n`;
  if (typeof model === 'string') text += `  model: ${quote(model)}\n`;
  if (entry.reversesEntryId) text += `  reverses: ${quote(entry.reversesEntryId)}\n`;
  for (const posting of entry.postings) {
    text += `  ${beancountAccount(posting.account)}  ${posting.amount} ${posting.currency}\n`;
  }
  return text;
}

function quote(text: string): string {
  return `"${text
    .replace(/[\r\n\t]+/g, ' ')
    .replace(/\\/g, '\\\\')
    .replace(/"/g, '\\"')}"`;
}
