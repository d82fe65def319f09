import { v7 as uuidv7 } from 'uuid';
import {
  assert,
  InsufficientFundsError,
  InvalidEntryError,
  UnbalancedEntryError,
} from './errors.js';
import { Decimal, ZERO } from './money.js';
import { normalSide, type AccountInfo, type HoldStatus } from './types.js';
import type { Attachment } from './attachments.js';

/** An account as locked for a batch: the cached totals the batch will move. */
export interface AccountState extends AccountInfo {
  debitsPosted: Decimal;
  creditsPosted: Decimal;
  debitsPending: Decimal;
  creditsPending: Decimal;
  /** How many postings the account has; the next posting gets version + 1. */
  version: bigint;
}

export interface HoldState {
  id: string;
  debitAccountId: string;
  creditAccountId: string;
  currency: string;
  amount: Decimal;
  status: HoldStatus;
  expiresAt: Date | null;
  postedAmount: Decimal | null;
  shortfall: Decimal | null;
  entryId: string | null;
  metadata: Record<string, unknown>;
  /** The deadline had passed when the batch locked the hold (by the database clock). */
  overdue: boolean;
}

export interface EntryRow {
  id: string;
  kind: string;
  description: string;
  metadata: Record<string, unknown>;
  reversesEntryId: string | null;
  holdId: string | null;
  effectiveAt: Date | null;
}

export interface PostingRow {
  entryId: string;
  /** Position within the entry, from 1. */
  line: number;
  accountId: string;
  currency: string;
  amount: Decimal;
  /**
   * How many of this batch's postings on the same account come after this one, and their
   * sum: the database derives the posting's account version and running balance from the
   * account's totals after the batch (it may have moved since the batch read it).
   */
  laterCount: number;
  laterSum: Decimal;
}

export interface HoldRow {
  id: string;
  debitAccountId: string;
  creditAccountId: string;
  currency: string;
  amount: Decimal;
  expiresAt: Date | null;
  metadata: Record<string, unknown>;
  status: HoldStatus;
  postedAmount: Decimal | null;
  shortfall: Decimal | null;
  entryId: string | null;
}

/** What one command changes, checked and applied as a whole or not at all. */
export interface Change {
  entry?: Omit<EntryRow, 'id'> & {
    id?: string;
    postings: Array<{ accountId: string; amount: Decimal }>;
  };
  /** Adjustments of pending totals: holds being created (+) or released (-). */
  pending?: Array<{ accountId: string; debits: Decimal; credits: Decimal }>;
  newHold?: Omit<HoldRow, 'status' | 'postedAmount' | 'shortfall' | 'entryId'>;
  resolveHold?: {
    id: string;
    status: Exclude<HoldStatus, 'pending'>;
    postedAmount: Decimal | null;
    shortfall: Decimal | null;
  };
}

/**
 * The state of one batch: the accounts and holds it has locked, and the rows it will write.
 * Commands plan against it through `apply`, which enforces balance and no-overdraft rules
 * before it changes anything, so a refused command leaves no trace.
 */
export class BatchState {
  readonly entries: EntryRow[] = [];
  readonly postings: PostingRow[] = [];
  readonly holds = new Map<string, HoldState>();
  /** Holds created by this batch, written with their final state. */
  readonly newHolds = new Map<string, HoldRow>();
  /** Pre-existing holds this batch resolves. */
  readonly resolvedHolds = new Map<string, HoldState>();
  readonly touchedAccounts = new Set<string>();
  /** Rows of the callers' own tables committed with the batch. */
  readonly attachments: Attachment[] = [];
  /** The totals as read, before any command of the batch. */
  readonly initial: ReadonlyMap<string, AccountState>;
  /**
   * Set by a command whose outcome depends on an account's balance beyond "is it enough": part
   * of an amount booked to a shortfall account because an available balance fell short, or a
   * receivable repaid up to its balance. Totals remembered from earlier batches must not make
   * such a decision (they may be older than a top-up or another repayment).
   */
  decidedOnTotals = false;

  constructor(readonly accounts: Map<string, AccountState>) {
    this.initial = new Map([...accounts].map(([id, account]) => [id, { ...account }]));
  }

  account(id: string): AccountState {
    const account = this.accounts.get(id);
    assert(account, `account ${id} was not locked by the batch`);
    return account;
  }

  /** Applies a change atomically; returns the entry id if it wrote one. */
  apply(change: Change): { entryId: string | null } {
    const next = new Map<string, AccountState>();
    const draft = (id: string): AccountState => {
      let state = next.get(id);
      if (!state) {
        state = { ...this.account(id) };
        next.set(id, state);
      }
      return state;
    };

    if (change.entry) {
      const postings = change.entry.postings;
      if (postings.length < 2)
        throw new InvalidEntryError('an entry needs at least two postings', { param: 'postings' });
      const sums = new Map<string, Decimal>();
      for (const posting of postings) {
        assert(!posting.amount.isZero(), 'posting amount is zero');
        const account = draft(posting.accountId);
        sums.set(account.currency, (sums.get(account.currency) ?? ZERO).add(posting.amount));
        if (posting.amount.isPositive())
          account.debitsPosted = account.debitsPosted.add(posting.amount);
        else account.creditsPosted = account.creditsPosted.sub(posting.amount);
      }
      for (const [currency, sum] of sums) {
        if (!sum.isZero()) throw new UnbalancedEntryError(currency, sum.toString());
      }
    }
    for (const adjustment of change.pending ?? []) {
      const account = draft(adjustment.accountId);
      account.debitsPending = account.debitsPending.add(adjustment.debits);
      account.creditsPending = account.creditsPending.add(adjustment.credits);
      assert(
        !account.debitsPending.isNegative() && !account.creditsPending.isNegative(),
        'pending total below zero',
      );
    }
    for (const account of next.values()) {
      if (!account.noNegative) continue;
      const after = available(account);
      if (!after.isNegative()) continue;
      const before = available(this.account(account.id));
      if (!after.lt(before)) continue;
      throw new InsufficientFundsError(
        account.code,
        before.toString(),
        before.sub(after).toString(),
      );
    }

    // Checked: now make it so.
    let entryId: string | null = null;
    if (change.entry) {
      entryId = change.entry.id ?? uuidv7();
      const { postings, ...row } = change.entry;
      this.entries.push({ ...row, id: entryId });
      for (const [i, posting] of postings.entries()) {
        const account = this.account(posting.accountId);
        account.version += 1n;
        this.postings.push({
          entryId,
          line: i + 1,
          accountId: account.id,
          currency: account.currency,
          amount: posting.amount,
          laterCount: 0,
          laterSum: ZERO,
        });
      }
    }
    // The totals were worked out on the drafts above; the versions move with each posting.
    for (const [id, draft] of next) {
      const account = this.account(id);
      account.debitsPosted = draft.debitsPosted;
      account.creditsPosted = draft.creditsPosted;
      account.debitsPending = draft.debitsPending;
      account.creditsPending = draft.creditsPending;
      this.touchedAccounts.add(id);
    }

    if (change.newHold) {
      const row: HoldRow = {
        ...change.newHold,
        status: 'pending',
        postedAmount: null,
        shortfall: null,
        entryId: null,
      };
      this.newHolds.set(row.id, row);
      this.holds.set(row.id, { ...row, overdue: false });
    }
    if (change.resolveHold) {
      const { id, status, postedAmount, shortfall } = change.resolveHold;
      const hold = this.holds.get(id);
      assert(hold && hold.status === 'pending', `hold ${id} resolved twice`);
      Object.assign(hold, { status, postedAmount, shortfall, entryId });
      const created = this.newHolds.get(id);
      if (created) Object.assign(created, { status, postedAmount, shortfall, entryId });
      else this.resolvedHolds.set(id, hold);
    }
    return { entryId };
  }
}

/** Fills each posting's `laterCount` and `laterSum` once the batch is planned. */
export function countLaterPostings(postings: PostingRow[]): void {
  const seen = new Map<string, { count: number; sum: Decimal }>();
  for (let i = postings.length - 1; i >= 0; i -= 1) {
    const posting = postings[i]!;
    const after = seen.get(posting.accountId) ?? { count: 0, sum: ZERO };
    posting.laterCount = after.count;
    posting.laterSum = after.sum;
    seen.set(posting.accountId, { count: after.count + 1, sum: after.sum.add(posting.amount) });
  }
}

/** Balance on the account's normal side, pending debits (or credits) subtracted. */
export function available(account: Omit<AccountState, 'version'>): Decimal {
  return normalSide(account.type) === 'credit'
    ? account.creditsPosted.sub(account.debitsPosted).sub(account.debitsPending)
    : account.debitsPosted.sub(account.creditsPosted).sub(account.creditsPending);
}

/** Posted balance on the account's normal side. */
export function posted(account: Omit<AccountState, 'version'>): Decimal {
  return normalSide(account.type) === 'credit'
    ? account.creditsPosted.sub(account.debitsPosted)
    : account.debitsPosted.sub(account.creditsPosted);
}

/** Pending amounts that reduce the normal-side balance. */
export function held(account: Omit<AccountState, 'version'>): Decimal {
  return normalSide(account.type) === 'credit' ? account.debitsPending : account.creditsPending;
}
