const LF = 10;
const CR = 13;

/**
 * The bound on the size of one event of a provider's stream (`gateway.maxStreamEventChars`),
 * counted on the decoded text as it arrives, so the same stream is cut at the same place
 * however its bytes were split into reads.
 *
 * What counts: every character of the event's lines (field names, the `data: ` prefix,
 * values, comment lines, `event:`/`id:` lines), from its first line to the blank line that
 * ends it; line breaks (LF, CR or CRLF) are not counted. Characters are UTF-16 code units of
 * the decoded text (JavaScript's string length: most characters count 1, one outside the
 * Basic Multilingual Plane, an emoji, counts 2). An event of exactly `max` passes.
 */
export class StreamEventBound {
  /** Characters of the event being read so far. */
  private chars = 0;
  /** No character read yet on the current line. */
  private lineEmpty = true;
  /** The last character read was a CR: an LF right after it ends the same line. */
  private afterCR = false;

  constructor(readonly max: number) {}

  /**
   * Reads the next piece of decoded text; returns how much of it may be parsed: all of it
   * (`text.length`), or, when the event being read goes past `max` in it, the part before
   * the first character too many (the event's end is never in it, so it is never parsed).
   */
  take(text: string): number {
    const length = text.length;
    let at = 0;
    while (at < length) {
      const code = text.charCodeAt(at);
      if (code === LF || code === CR) {
        if (!(code === LF && this.afterCR)) {
          // A line break on an empty line: the blank line that ends an event.
          if (this.lineEmpty) this.chars = 0;
          this.lineEmpty = true;
        }
        this.afterCR = code === CR;
        at += 1;
        continue;
      }
      this.afterCR = false;
      let end = at + 1;
      while (end < length) {
        const next = text.charCodeAt(end);
        if (next === LF || next === CR) break;
        end += 1;
      }
      if (this.chars + (end - at) > this.max) return at + (this.max - this.chars);
      this.chars += end - at;
      this.lineEmpty = false;
      at = end;
    }
    return length;
  }
}
