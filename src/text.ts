const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Why PostgreSQL cannot keep `text` as it is, or null when it can: a NUL character (which text
 * and jsonb refuse, a 500 if it reached them) or half of a UTF-16 surrogate pair (which cannot
 * be encoded in UTF-8; it would be stored as U+FFFD, not as sent). The ledger refuses the same
 * in its own inputs.
 */
export function unstorableText(text: string): string | null {
  if (text.includes('\u0000')) return 'must not contain a NUL character (\\u0000)';
  if (LONE_SURROGATE.test(text)) return 'must not contain half of a UTF-16 surrogate pair';
  return null;
}
