/**
 * Typed ledger errors. Each has a stable `code` that callers map to their own answers (the
 * HTTP layer maps them to the contract's error shape) and a `shortMessage` a user can act on.
 * `details` is for operators and logs, never sent to clients.
 */
export abstract class LedgerError extends Error {
  abstract readonly code: string;
  readonly shortMessage: string;
  readonly details: Record<string, unknown>;
  /** The request field the error is about, when there is one. */
  readonly param: string | null;

  constructor(
    shortMessage: string,
    options: { details?: Record<string, unknown>; param?: string | null } = {},
  ) {
    super(shortMessage);
    this.name = new.target.name;
    this.shortMessage = shortMessage;
    this.details = options.details ?? {};
    this.param = options.param ?? null;
  }
}

export class InvalidAmountError extends LedgerError {
  readonly code = 'invalid_amount';
  constructor(field: string, problem: string) {
    super(`${field} ${problem}`, { param: field });
  }
}

export class InvalidCursorError extends LedgerError {
  readonly code = 'invalid_cursor';
  constructor() {
    super('cursor is not one this ledger gave out (pass back a nextCursor as it was)', {
      param: 'cursor',
    });
  }
}

export class InvalidLimitError extends LedgerError {
  readonly code = 'invalid_limit';
  constructor(value: unknown) {
    super('limit must be a whole number of at least 1', {
      param: 'limit',
      details: { limit: String(value) },
    });
  }
}

export class UnknownCurrencyError extends LedgerError {
  readonly code = 'unknown_currency';
  constructor(currency: string) {
    super(`unknown currency "${currency}"`, { param: 'currency', details: { currency } });
  }
}

export class UnknownAccountError extends LedgerError {
  readonly code = 'unknown_account';
  constructor(account: string) {
    super(`unknown account "${account}"`, { param: 'account', details: { account } });
  }
}

export class CurrencyMismatchError extends LedgerError {
  readonly code = 'currency_mismatch';
  constructor(account: string, accountCurrency: string, currency: string) {
    super(`account "${account}" holds ${accountCurrency}, not ${currency}`, {
      param: 'currency',
      details: { account, accountCurrency, currency },
    });
  }
}

export class InvalidEntryError extends LedgerError {
  readonly code = 'invalid_entry';
}

export class UnbalancedEntryError extends LedgerError {
  readonly code = 'unbalanced_entry';
  constructor(currency: string, imbalance: string) {
    super(`postings in ${currency} do not balance: debits minus credits is ${imbalance}`, {
      param: 'postings',
      details: { currency, imbalance },
    });
  }
}

export class InsufficientFundsError extends LedgerError {
  readonly code = 'insufficient_funds';
  constructor(account: string, available: string, required: string) {
    super(`account "${account}" has ${available} available, ${required} required`, {
      details: { account, available, required },
    });
  }
}

export class IdempotencyConflictError extends LedgerError {
  readonly code = 'idempotency_conflict';
  constructor(key: string) {
    super(`idempotency key "${key}" was already used for a different request`, {
      param: 'idempotencyKey',
      details: { key },
    });
  }
}

export class HoldNotFoundError extends LedgerError {
  readonly code = 'hold_not_found';
  constructor(holdId: string) {
    super(`hold ${holdId} does not exist`, { param: 'holdId', details: { holdId } });
  }
}

export class HoldNotPendingError extends LedgerError {
  readonly code = 'hold_not_pending';
  constructor(
    holdId: string,
    readonly status: string,
  ) {
    super(`hold ${holdId} is already ${status}`, { param: 'holdId', details: { holdId, status } });
  }
}

export class HoldExceededError extends LedgerError {
  readonly code = 'hold_exceeded';
  constructor(holdId: string, held: string, amount: string) {
    super(`hold ${holdId} holds ${held}; posting ${amount} needs allowOverHold`, {
      param: 'amount',
      details: { holdId, held, amount },
    });
  }
}

export class EntryNotFoundError extends LedgerError {
  readonly code = 'entry_not_found';
  constructor(entryId: string) {
    super(`entry ${entryId} does not exist`, { param: 'entryId', details: { entryId } });
  }
}

export class AlreadyReversedError extends LedgerError {
  readonly code = 'already_reversed';
  constructor(entryId: string, reversalId: string) {
    super(`entry ${entryId} was already reversed by ${reversalId}`, {
      param: 'entryId',
      details: { entryId, reversalId },
    });
  }
}

export class InvalidAccountError extends LedgerError {
  readonly code = 'invalid_account';
}

/** A broken invariant: a bug, not bad input. The operation stops loudly. */
export class LedgerInvariantError extends LedgerError {
  readonly code = 'ledger_invariant';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new LedgerInvariantError(`invariant broken: ${message}`);
}
