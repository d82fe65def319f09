import type { Decimal, AmountInput } from './money.js';

export type AccountType = 'asset' | 'liability' | 'equity' | 'revenue' | 'expense';

/** Asset and expense accounts grow with debits; the others grow with credits. */
export type NormalSide = 'debit' | 'credit';

export function normalSide(type: AccountType): NormalSide {
  return type === 'asset' || type === 'expense' ? 'debit' : 'credit';
}

export interface AccountInfo {
  id: string;
  code: string;
  type: AccountType;
  currency: string;
  /** The balance on the account's normal side may not go below zero, pending debits included. */
  noNegative: boolean;
}

/** One line of an entry. A positive amount is a debit, a negative one a credit. */
export interface PostingInput {
  account: string;
  amount: AmountInput;
  /** Needed only when the account does not exist yet and its template leaves currency open. */
  currency?: string;
}

export interface Balance {
  account: string;
  currency: string;
  /** Posted balance on the account's normal side. */
  posted: Decimal;
  /** Pending holds that will reduce it. */
  held: Decimal;
  /** posted minus held: what may still be spent or held. */
  available: Decimal;
  debitsPosted: Decimal;
  creditsPosted: Decimal;
  debitsPending: Decimal;
  creditsPending: Decimal;
}

export type HoldStatus = 'pending' | 'posted' | 'voided' | 'expired';

export interface Hold {
  id: string;
  debitAccount: string;
  creditAccount: string;
  currency: string;
  amount: Decimal;
  status: HoldStatus;
  expiresAt: Date | null;
  postedAmount: Decimal | null;
  entryId: string | null;
  metadata: Record<string, unknown>;
  createdAt: Date;
  resolvedAt: Date | null;
}

export interface Entry {
  id: string;
  kind: string;
  description: string;
  metadata: Record<string, unknown>;
  reversesEntryId: string | null;
  holdId: string | null;
  effectiveAt: Date;
  createdAt: Date;
  postings: Array<{ account: string; currency: string; amount: Decimal }>;
}
