import type { PreparedCommand } from '../command.js';
import { Decimal } from '../money.js';
import type { AccountState, BatchState, HoldState } from '../state.js';
import type { BatchInputs } from './readBatchInputs.js';

/** Account totals as the database returned them after a write. */
export interface AccountTotals {
  id: string;
  version: bigint;
  debitsPosted: Decimal;
  creditsPosted: Decimal;
  debitsPending: Decimal;
  creditsPending: Decimal;
}

/**
 * What this process last knew of accounts and pending holds, so a batch can skip its read.
 * Planning on stale totals is safe because writes are relative and the database checks
 * what matters (an account never below zero, a hold resolved once): a batch whose
 * assumptions no longer hold fails and runs again with a fresh read. A refusal is never
 * made on remembered state: a batch that refuses anything (for lack of funds, a hold past its
 * deadline by this machine's clock, a hold another process resolved...) is planned again on a
 * fresh read first (see executeBatch).
 *
 * With several lanes, batches run at once and their answers arrive in any order: a read
 * taken before another lane's write committed can come back after that write was
 * remembered. So every change to what is remembered is stamped with a clock, each batch
 * says from which `mark()` it ran, and an account or hold that another batch remembered or
 * forgot meanwhile is forgotten rather than overwritten with what may be older.
 */
export class KnownState {
  private readonly accounts = new Map<string, AccountState>();
  private readonly holds = new Map<string, HoldState & { expiresAtMs: number | null }>();
  private clock = 0;
  /** The clock at the last change to each account (`a:id`) or hold (`h:id`) remembered or forgotten. */
  private readonly changedAt = new Map<string, number>();
  /** Batches that started before this clock may not remember anything (changedAt was emptied). */
  private resetAt = 0;

  constructor(
    private readonly maxAccounts = 100_000,
    private readonly maxHolds = 100_000,
  ) {}

  /** Where a batch starts from; pass it to `rememberRead` / `rememberWrite`. */
  mark(): number {
    return this.clock;
  }

  /** The batch's inputs from memory, or null when anything it needs is not known. */
  inputsFor(commands: ReadonlyArray<PreparedCommand<unknown>>): BatchInputs | null {
    const accounts = new Map<string, AccountState>();
    const holds = new Map<string, HoldState>();
    const now = Date.now();
    for (const command of commands) {
      if (command.reverseEntryIds.length > 0 || command.expireLimit) return null;
      for (const id of command.holdIds) {
        const hold = this.holds.get(id);
        if (!hold) return null;
        const { expiresAtMs, ...state } = hold;
        holds.set(id, { ...state, overdue: expiresAtMs !== null && expiresAtMs <= now });
      }
    }
    const accountIds = new Set(commands.flatMap((c) => c.accountIds));
    for (const hold of holds.values())
      accountIds.add(hold.debitAccountId).add(hold.creditAccountId);
    for (const id of accountIds) {
      const account = this.accounts.get(id);
      if (!account) return null;
      accounts.set(id, { ...account });
    }
    // Idempotency keys are taken to be new: a key that exists fails the write, and the retry reads it.
    return { accounts, holds, overdueHolds: [], reversals: new Map(), idempotency: new Map() };
  }

  /** The currency of a hold this process remembers (it never changes), else undefined. */
  holdCurrency(id: string): string | undefined {
    return this.holds.get(id)?.currency;
  }

  /** Remembers what a read by a batch that started at `since` found; returns its new mark. */
  rememberRead(inputs: BatchInputs, since: number): number {
    const now = this.tick();
    for (const account of inputs.accounts.values())
      this.putAccount(account.id, since, now, { ...account });
    for (const hold of inputs.holds.values())
      this.putHold(hold.id, since, now, hold.status === 'pending' ? hold : null);
    return now;
  }

  /** Remembers what a committed write by a batch that started at `since` left behind. */
  rememberWrite(state: BatchState, totals: ReadonlyArray<AccountTotals>, since: number): void {
    const now = this.tick();
    for (const row of totals) {
      const account = state.accounts.get(row.id);
      if (account) this.putAccount(row.id, since, now, { ...account, ...row });
    }
    for (const hold of state.newHolds.values())
      this.putHold(
        hold.id,
        since,
        now,
        hold.status === 'pending' ? { ...hold, overdue: false } : null,
      );
    for (const id of state.resolvedHolds.keys()) this.putHold(id, since, now, null);
  }

  /** Forgets what a failed batch touched, so its retry reads afresh. */
  forget(commands: ReadonlyArray<PreparedCommand<unknown>>): void {
    const now = this.tick();
    for (const command of commands) {
      for (const id of command.accountIds) this.putAccount(id, now, now, null);
      for (const id of command.holdIds) {
        const hold = this.holds.get(id);
        if (hold) {
          this.putAccount(hold.debitAccountId, now, now, null);
          this.putAccount(hold.creditAccountId, now, now, null);
        }
        this.putHold(id, now, now, null);
      }
    }
  }

  /** Forgets everything, and lets no batch already running remember anything. */
  forgetAll(): void {
    this.changedAt.clear();
    this.accounts.clear();
    this.holds.clear();
    this.resetAt = this.clock + 1;
    this.clock += 1;
  }

  private tick(): number {
    if (this.changedAt.size > this.maxAccounts + this.maxHolds) {
      // Bounded memory: start over, and let no batch already running remember anything.
      this.changedAt.clear();
      this.accounts.clear();
      this.holds.clear();
      this.resetAt = this.clock + 1;
    }
    this.clock += 1;
    return this.clock;
  }

  /** Sets (or, with null, forgets) an account, unless another batch changed it after `since`. */
  private putAccount(id: string, since: number, now: number, account: AccountState | null): void {
    const stale = since < this.resetAt || (this.changedAt.get(`a:${id}`) ?? 0) > since;
    this.changedAt.set(`a:${id}`, now);
    if (account === null || stale) this.accounts.delete(id);
    else this.setAccount(account);
  }

  private putHold(id: string, since: number, now: number, hold: HoldState | null): void {
    const stale = since < this.resetAt || (this.changedAt.get(`h:${id}`) ?? 0) > since;
    this.changedAt.set(`h:${id}`, now);
    if (hold === null || stale) this.holds.delete(id);
    else this.setHold(hold);
  }

  private setAccount(account: AccountState): void {
    this.accounts.delete(account.id);
    if (this.accounts.size >= this.maxAccounts)
      this.accounts.delete(this.accounts.keys().next().value!);
    this.accounts.set(account.id, account);
  }

  private setHold(hold: HoldState): void {
    if (this.holds.size >= this.maxHolds) this.holds.delete(this.holds.keys().next().value!);
    this.holds.set(hold.id, {
      ...hold,
      expiresAtMs: hold.expiresAt ? hold.expiresAt.getTime() : null,
    });
  }
}
