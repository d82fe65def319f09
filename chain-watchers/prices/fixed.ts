import { parseAmount } from '../../ledger/index.js';
import type { PriceQuote, PriceSource } from '../prices.js';

/**
 * A constant rate: a stablecoin's peg (`"1"`) or a rate an operator sets by hand.
 * Throws at creation when `rate` is not a positive decimal string.
 *
 * @example createFixedPriceSource('1').quote(null) // { rate: 1, source: 'fixed', details: { rate: '1' } }
 */
export function createFixedPriceSource(rate: string): PriceSource {
  const value = parseAmount(rate, { scale: 36, field: 'price.fixed' });
  const quote: PriceQuote = { rate: value, source: 'fixed', details: { rate: value.toString() } };
  return {
    async quote() {
      return { ...quote, details: { ...quote.details } };
    },
  };
}
