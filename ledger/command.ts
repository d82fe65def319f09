import { createHash } from 'node:crypto';
import type { BatchState, HoldState } from './state.js';
import { Decimal } from './money.js';
import type { AccountInfo } from './types.js';

/** The original postings of an entry a batch is asked to reverse. */
export interface ReversalTarget {
  entryId: string;
  kind: string;
  postings: Array<{ accountId: string; amount: Decimal }>;
  /** The entry that already reversed it, if any. */
  reversedBy: string | null;
}

/** What a command sees while it plans inside a batch transaction. */
export interface BatchContext {
  state: BatchState;
  reversals: Map<string, ReversalTarget>;
  /** Pending holds past their deadline, locked for an expiry command. */
  overdueHolds: HoldState[];
}

/**
 * A validated ledger operation, ready to run inside a batch. Preparing (outside the
 * transaction) checks the input and resolves accounts; planning (inside it, under locks)
 * decides the outcome from the locked state and records it through `BatchState.apply`.
 */
export interface PreparedCommand<Result> {
  readonly type: string;
  readonly idempotencyKey: string | null;
  /** Hash of the request, compared when the idempotency key was seen before. */
  readonly requestHash: string | null;
  readonly accountIds: readonly string[];
  readonly holdIds: readonly string[];
  readonly reverseEntryIds: readonly string[];
  /** For the expiry command: how many overdue holds to lock. */
  readonly expireLimit?: number;
  /**
   * The no-overdraft account whose available balance the command may lower, when known
   * before the batch: commands on the same such account run in the same lane of the
   * batcher, one batch after another, instead of racing each other.
   */
  readonly partitionKey?: string;
  plan(context: BatchContext): Result;
  /** The JSON stored with the idempotency key; `replay` turns it back into a result. */
  encode(result: Result): unknown;
  replay(stored: unknown): Result;
}

/** A stable hash of a request: keys sorted, Decimals as plain strings. */
export function hashRequest(type: string, params: unknown): string {
  return createHash('sha256').update(canonicalJson({ type, params })).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (value === undefined || value === null) return 'null';
  if (Decimal.isDecimal(value)) return JSON.stringify((value as Decimal).toString());
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  if (typeof value === 'bigint') return JSON.stringify(value.toString());
  return JSON.stringify(value);
}

/** What preparing a command may ask of the ledger: accounts and currency scales. */
export interface PrepareContext {
  /**
   * Finds an account, creating it from the chart when `create` and the chart allows. With
   * `strictCurrency`, an account the chart would create in another currency than `currency`
   * is not created: CurrencyMismatchError, nothing written.
   */
  resolveAccount(
    code: string,
    options?: { currency?: string; create?: boolean; strictCurrency?: boolean },
  ): Promise<AccountInfo>;
  /** The account if this process already knows it (no round trip), else undefined. */
  knownAccount(code: string): AccountInfo | undefined;
  /** A hold's currency (remembered, or read from the database); null when there is no such hold. */
  holdCurrency(holdId: string): Promise<string | null>;
  /** Fractional digits of a currency; throws UnknownCurrencyError. */
  scaleOf(currency: string): number;
}
