import { createHash } from 'node:crypto';
/**
 * A named statement, so each connection parses and plans each shape of batch once (and the
 * text crosses the wire once): there are few shapes, one per combination of the kinds of
 * rows a batch writes, and for a small batch parsing this statement costs more than running it.
 */
export function preparedStatement(
  text: string,
  values: unknown[],
): { name: string; text: string; values: unknown[] } {
  return { name: `lx_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`, text, values };
}
