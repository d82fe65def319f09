/** The largest PostgreSQL bigint, the type of users.id. */
const BIGINT_MAX = 9_223_372_036_854_775_807n;

/**
 * True when `text` can be a user id: a positive whole number that fits in a bigint. A longer
 * or larger number names no user; checked here because PostgreSQL refuses it with an error
 * (a 500) rather than finding nothing.
 */
export function isUserId(text: string): boolean {
  return /^[1-9]\d{0,18}$/.test(text) && BigInt(text) <= BIGINT_MAX;
}
