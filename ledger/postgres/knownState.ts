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
 * made on remembered totals: a batch that refuses anything for lack of funds is planned
 * again on a fresh read first (see executeBatch).
 */
export class KnownState {
  private readonly accounts = new Map<string, AccountState>();
  private readonly holds = new Map<string, HoldState & { expiresAtMs: number | null }>();

  constructor(
    private readonly maxAccounts = 100_000,
    private readonly maxHolds = 100_000,
  ) {}

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

  /** Remembers what a read found. */
  rememberRead(inputs: BatchInputs): void {
    for (const account of inputs.accounts.values()) this.setAccount({ ...account });
    for (const hold of inputs.holds.values()) {
      if (hold.status === 'pending') this.setHold(hold);
      else this.holds.delete(hold.id);
    }
  }

  /** Remembers what a committed write left behind. */
  rememberWrite(state: BatchState, totals: ReadonlyArray<AccountTotals>): void {
    for (const row of totals) {
      const account = state.accounts.get(row.id);
      if (!account) continue;
      this.setAccount({ ...account, ...row });
    }
    for (const hold of state.newHolds.values()) {
      if (hold.status === 'pending') this.setHold({ ...hold, overdue: false });
    }
    for (const id of state.resolvedHolds.keys()) this.holds.delete(id);
  }

  /** Forgets what a failed batch touched, so its retry reads afresh. */
  forget(commands: ReadonlyArray<PreparedCommand<unknown>>): void {
    for (const command of commands) {
      for (const id of command.accountIds) this.accounts.delete(id);
      for (const id of command.holdIds) {
        const hold = this.holds.get(id);
        if (hold) {
          this.accounts.delete(hold.debitAccountId);
          this.accounts.delete(hold.creditAccountId);
        }
        this.holds.delete(id);
      }
    }
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
