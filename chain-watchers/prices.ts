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

/** Refused to price: the feed is stale, negative, or unreachable. Crediting waits and retries. */
export class PriceUnavailableError extends Error {
  override name = 'PriceUnavailableError';
}
