import { AppError } from '../errors.js';

/** Our root segment to beancount's root account type (revenue is Income there). */
export const BEANCOUNT_ROOTS: Readonly<Record<string, string>> = {
  assets: 'Assets',
  liabilities: 'Liabilities',
  equity: 'Equity',
  revenue: 'Income',
  expenses: 'Expenses',
};

/**
 * Stand-ins for the characters of our account segments that beancount does not allow in an
 * account name (it allows letters, digits and '-', and a component may not start with '-').
 * Non-ASCII letters are allowed, and none of these can occur in our codes, so the mapping
 * stays reversible.
 */
const STAND_INS: Readonly<Record<string, string>> = { '.': '\uFF0E', _: '\uFF3F' };
const LEADING_HYPHEN = '\u2010';

/**
 * Our account code as a beancount account name: the root becomes beancount's type
 * (`revenue` is `Income`), a component that starts with a lower-case letter gets a capital
 * (`custody` is `Custody`), and everything else stays as it is (`USDT`, `TXyz..`, `42`,
 * `0xab..`). `.` and `_` become the full-width `．` and `＿`; a leading `-` becomes `‐`.
 *
 * Two codes that differ only in the case of a component's first letter (`tron`, `Tron`)
 * would get one name: an export refuses such a pair rather than merge them. So the mapping
 * is one-to-one on every export, and each `open` directive carries the original code as
 * `code` metadata, which is how a name is mapped back.
 *
 * @example beancountAccount('liabilities:customers:42') // 'Liabilities:Customers:42'
 * @example beancountAccount('assets:custody:tron:USDT:TXyz') // 'Assets:Custody:Tron:USDT:TXyz'
 */
export function beancountAccount(code: string): string {
  const [root, ...components] = code.split(':');
  const mappedRoot = BEANCOUNT_ROOTS[root ?? ''];
  if (!mappedRoot || components.length === 0) {
    throw new AppError(
      'unmappable_account',
      `account "${code}" has no beancount name: its root must be one of ${Object.keys(BEANCOUNT_ROOTS).join(', ')}`,
      { status: 422 },
    );
  }
  return [mappedRoot, ...components.map(beancountComponent)].join(':');
}

function beancountComponent(component: string): string {
  let mapped = component.replace(/[._]/g, (c) => STAND_INS[c]!);
  if (/^[a-z]/.test(mapped)) mapped = mapped[0]!.toUpperCase() + mapped.slice(1);
  else if (mapped.startsWith('-')) mapped = LEADING_HYPHEN + mapped.slice(1);
  return mapped;
}
