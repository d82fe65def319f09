import { Decimal as DecimalJs } from 'decimal.js';
import { InvalidAmountError } from './errors.js';

/**
 * The one Decimal the project uses for money. Precision is far beyond any amount we hold
 * (a 30-digit integer part with 36 fractional digits still fits), rounding is half-even
 * wherever a rule asks for rounding, and `toString()` never switches to exponent notation.
 */
export const Decimal = DecimalJs.clone({
  precision: 100,
  rounding: DecimalJs.ROUND_HALF_EVEN,
  toExpNeg: -100,
  toExpPos: 100,
  maxE: 1_000,
  minE: -1_000,
});
export type Decimal = InstanceType<typeof Decimal>;

export const ZERO = new Decimal(0);

/** What callers may pass as an amount: a decimal string, or a Decimal already parsed. */
export type AmountInput = string | Decimal;

const AMOUNT_PATTERN = /^-?(0|[1-9]\d{0,35})(\.\d{1,36})?$/;
/** Amounts are below 10^36 (36 integer digits), whether given as a string or a Decimal. */
export const AMOUNT_LIMIT = new Decimal('1e36');

export interface ParseAmountOptions {
  /** Fractional digits the currency allows. */
  scale: number;
  /** Name of the field, for the error message. */
  field?: string;
  currency?: string;
  allowNegative?: boolean;
  allowZero?: boolean;
}

/**
 * Parses a money amount exactly. Accepts only decimal strings (`"12.5"`, `"-3"`) or Decimals,
 * below 10^36 either way; a JS number, `NaN`, `1e999` (string or Decimal), a sign where none is
 * allowed, or more fractional digits than the currency's scale is an InvalidAmountError.
 *
 * @example parseAmount('12.50', { scale: 6 }) // Decimal 12.5
 */
export function parseAmount(input: unknown, options: ParseAmountOptions): Decimal {
  const field = options.field ?? 'amount';
  let value: Decimal;
  if (typeof input === 'string') {
    if (!AMOUNT_PATTERN.test(input)) {
      throw new InvalidAmountError(
        field,
        `"${truncate(input)}" is not a decimal string such as "12.5"`,
      );
    }
    value = new Decimal(input);
  } else if (Decimal.isDecimal(input)) {
    // Checked as given, before the copy: a Decimal of another decimal.js configuration may lie
    // outside this one's exponent range, and copying it would turn 1e-2000 into 0. Its size is
    // bounded as a string's is, so totals stay exact within this Decimal's precision (and
    // print without an exponent).
    const given = input as Decimal;
    if (!given.isFinite()) throw new InvalidAmountError(field, 'is not a finite number');
    checkScale(given, options, field);
    if (given.abs().gte(AMOUNT_LIMIT))
      throw new InvalidAmountError(field, 'has more than 36 integer digits');
    value = new Decimal(given);
  } else if (typeof input === 'number' || typeof input === 'bigint') {
    throw new InvalidAmountError(
      field,
      `must be a decimal string such as "${String(input)}", not a JSON number`,
    );
  } else {
    throw new InvalidAmountError(field, 'must be a decimal string such as "12.5"');
  }
  checkScale(value, options, field);
  if (value.isNegative() && !value.isZero() && !options.allowNegative) {
    throw new InvalidAmountError(field, 'must not be negative');
  }
  if (value.isZero() && !options.allowZero) throw new InvalidAmountError(field, 'must not be zero');
  // -0 and "1.50" normalise to 0 and 1.5 so equal amounts compare and hash equal.
  return value.isZero() ? ZERO : value;
}

/** Base units of a chain asset (a bigint) to an exact Decimal of the asset. */
export function fromBaseUnits(amountBaseUnits: bigint, decimals: number): Decimal {
  return new Decimal(amountBaseUnits.toString()).div(new Decimal(10).pow(decimals));
}

/** An exact Decimal of a chain asset to base units; throws if it has more digits than `decimals`. */
export function toBaseUnits(amount: Decimal, decimals: number): bigint {
  const scaled = amount.mul(new Decimal(10).pow(decimals));
  if (!scaled.isInteger())
    throw new InvalidAmountError('amount', `has more than ${decimals} fractional digits`);
  return BigInt(scaled.toFixed(0));
}

/** The wire form of an amount: plain decimal digits, no exponent, no trailing zeros. */
export function formatAmount(amount: Decimal): string {
  return amount.toString();
}

function checkScale(value: Decimal, options: ParseAmountOptions, field: string): void {
  if (value.decimalPlaces() > options.scale) {
    const unit = options.currency ? `${options.currency} allows` : 'the currency allows';
    throw new InvalidAmountError(
      field,
      `has ${value.decimalPlaces()} fractional digits; ${unit} at most ${options.scale}`,
    );
  }
}

function truncate(text: string): string {
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}
