import { createParser } from 'eventsource-parser';
import { describe, expect, test } from 'vitest';
import { StreamEventBound } from '../../src/gateway/sseBound.js';

/**
 * The bound on a provider's stream events, on its own: the same events pass (and the stream is
 * cut at the same one) whatever line ends the provider uses and however its text is split
 * into reads; an event of exactly the bound passes, one character more does not.
 */

/** The events parsed from `reads` under a bound of `max`, and whether the bound cut the stream. */
function read(reads: string[], max: number): { events: string[]; cut: boolean } {
  const events: string[] = [];
  const parser = createParser({ onEvent: (event) => events.push(event.data) });
  const bound = new StreamEventBound(max);
  for (const text of reads) {
    const fits = bound.take(text);
    parser.feed(text.slice(0, fits));
    if (fits < text.length) return { events, cut: true };
  }
  return { events, cut: false };
}

describe('StreamEventBound', () => {
  // The second event's lines: a comment (12), `event: message` (14), `data: ` + 30 (36),
  // `data: ` + 8 (14): 76 characters counted; line breaks are not.
  const second = [
    ': keep-alive',
    'event: message',
    `data: ${'a'.repeat(30)}`,
    `data: ${'b'.repeat(8)}`,
  ];
  for (const [name, eol] of [
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['CR', '\r'],
  ] as const) {
    const stream = [['data: first'], second, ['data: [DONE]']]
      .map((lines) => lines.map((line) => line + eol).join('') + eol)
      .join('');
    test.each([
      [75, true],
      [76, false],
      [77, false],
    ])(
      `${name}: a bound of %i cuts the 76-character event: %s, however the text is split`,
      (max, cut) => {
        // (A stream ending in a lone CR leaves its last event waiting for a possible LF.)
        const all = [
          'first',
          `${'a'.repeat(30)}\n${'b'.repeat(8)}`,
          ...(eol === '\r' ? [] : ['[DONE]']),
        ];
        const expected = cut ? { events: ['first'], cut: true } : { events: all, cut: false };
        expect(read([stream], max)).toEqual(expected);
        for (let at = 1; at < stream.length; at++)
          expect([at, read([stream.slice(0, at), stream.slice(at)], max)]).toEqual([at, expected]);
        // One character a read.
        expect(read([...stream], max)).toEqual(expected);
      },
    );
  }
});
