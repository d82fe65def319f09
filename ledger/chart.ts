import { InvalidAccountError, UnknownAccountError } from './errors.js';
import type { AccountType } from './types.js';

/** How an account that does not exist yet is created when an entry first names it. */
export interface AccountTemplate {
  /** Matches the whole account code; named groups are available to `currency`. */
  pattern: RegExp;
  type: AccountType;
  /** A fixed currency, a named group of the pattern, or null: taken from the posting. */
  currency: { fixed: string } | { group: string } | null;
  noNegative: boolean;
}

const SEGMENT = '[A-Za-z0-9_.-]+';

/**
 * The chart of accounts (architecture.md). Every account the service creates on demand matches
 * one of these; any other code must have been created explicitly, or it is unknown.
 */
export const DEFAULT_CHART: ReadonlyArray<AccountTemplate> = [
  {
    pattern: new RegExp(`^liabilities:customers:(?<user>${SEGMENT})$`),
    type: 'liability',
    currency: { fixed: 'USD' },
    noNegative: true,
  },
  // An erased user's remaining balance: still owed, no longer attributable to a person
  // (docs/privacy.md). Moved here by the erasure entry; never spent by the service.
  {
    pattern: new RegExp(`^liabilities:unclaimed:(?<user>${SEGMENT})$`),
    type: 'liability',
    currency: { fixed: 'USD' },
    noNegative: true,
  },
  {
    pattern: new RegExp(
      `^assets:custody:(?<network>${SEGMENT}):(?<asset>${SEGMENT}):(?<address>${SEGMENT})$`,
    ),
    type: 'asset',
    currency: null,
    noNegative: false,
  },
  {
    pattern: new RegExp(`^equity:trading:(?<currency>[A-Z][A-Z0-9-]+)$`),
    type: 'equity',
    currency: { group: 'currency' },
    noNegative: false,
  },
  {
    pattern: /^revenue:usage(:[A-Za-z0-9_.:-]+)?$/,
    type: 'revenue',
    currency: { fixed: 'USD' },
    noNegative: false,
  },
  {
    pattern: /^expenses:promotions$/,
    type: 'expense',
    currency: { fixed: 'USD' },
    noNegative: false,
  },
  { pattern: /^expenses:losses$/, type: 'expense', currency: { fixed: 'USD' }, noNegative: false },
  {
    pattern: new RegExp(`^expenses:network-fees:(?<network>${SEGMENT})$`),
    type: 'expense',
    currency: null,
    noNegative: false,
  },
  {
    pattern: new RegExp(`^assets:receivables:customers:(?<user>${SEGMENT})$`),
    type: 'asset',
    currency: { fixed: 'USD' },
    noNegative: false,
  },
];

export interface AccountSpec {
  code: string;
  type: AccountType;
  currency: string;
  noNegative: boolean;
}

const CODE_PATTERN = /^[a-z]+(:[A-Za-z0-9_.-]+)+$/;

/** The spec for an account the chart allows creating; throws UnknownAccountError otherwise. */
export function accountSpecFromChart(
  chart: ReadonlyArray<AccountTemplate>,
  code: string,
  postingCurrency: string | undefined,
): AccountSpec {
  if (code.length > 200 || !CODE_PATTERN.test(code)) {
    throw new InvalidAccountError(
      `"${code.slice(0, 80)}" is not an account code such as "liabilities:customers:42"`,
      {
        param: 'account',
      },
    );
  }
  for (const template of chart) {
    const match = template.pattern.exec(code);
    if (!match) continue;
    let currency: string | undefined;
    if (template.currency === null) currency = postingCurrency;
    else if ('fixed' in template.currency) currency = template.currency.fixed;
    else currency = match.groups?.[template.currency.group];
    if (!currency) {
      throw new InvalidAccountError(
        `account "${code}" does not exist yet; name its currency to create it`,
        {
          param: 'currency',
        },
      );
    }
    return { code, type: template.type, currency, noNegative: template.noNegative };
  }
  throw new UnknownAccountError(code);
}

/** Account codes of the chart, built in one place (architecture.md, chart of accounts). */
export const accountCodes = {
  customer: (userId: string) => `liabilities:customers:${userId}`,
  /** An erased user's balance: still owed, no longer attributable to a person. */
  unclaimed: (userId: string) => `liabilities:unclaimed:${userId}`,
  receivable: (userId: string) => `assets:receivables:customers:${userId}`,
  custody: (network: string, asset: string, address: string) =>
    `assets:custody:${network}:${asset}:${address}`,
  trading: (currency: string) => `equity:trading:${currency}`,
  usageRevenue: 'revenue:usage',
  promotions: 'expenses:promotions',
  losses: 'expenses:losses',
  networkFees: (network: string) => `expenses:network-fees:${network}`,
} as const;
