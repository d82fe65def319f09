import type { Decimal } from '../ledger/index.js';

/** The USD value of one whole unit of an asset, and where it came from (stored on the entry). */
export interface PriceQuote {
  rate: Decimal;
  /** `fixed` or `chainlink`. */
  source: string;
  /** What an auditor needs to check the rate: feed address, round id, updated-at, block... as strings. */
  details: Record<string, string>;
}

export interface PriceSource {
  /** The rate as of `blockNumber` on the feed's network where it can answer that, else the latest. */
  quote(blockNumber: bigint | null): Promise<PriceQuote>;
}

/**
 * Why a source did not price:
 * - `refused`: it answered, and the answer is not a price (a stale, zero, negative or incomplete
 *   round; a feed call that reverted or returned nothing). Asking again at that block gets the same.
 * - `no-state`: the node cannot serve state at that block (a pruned node: "missing trie node",
 *   "header not found", "historical state ... not available", "pruned history unavailable").
 * - `unreachable`: the question went unanswered (a timeout, HTTP 5xx, a dropped connection, rate
 *   limiting, any other RPC error). It says nothing about the block asked for: ask again later.
 */
export type PriceUnavailableKind = 'refused' | 'no-state' | 'unreachable';

/** Refused to price: the feed is stale, negative, or unreachable. Crediting waits and retries. */
export class PriceUnavailableError extends Error {
  override name = 'PriceUnavailableError';
  readonly kind: PriceUnavailableKind;

  constructor(message: string, options: ErrorOptions & { kind?: PriceUnavailableKind } = {}) {
    super(message, options.cause === undefined ? {} : { cause: options.cause });
    this.kind = options.kind ?? 'refused';
  }

  /** An answer about the block asked for (`refused`, `no-state`), not a passing failure. */
  get definitive(): boolean {
    return this.kind !== 'unreachable';
  }
}
