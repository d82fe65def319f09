export interface Output {
  json: boolean;
  /** Prints data: JSON with --json, else the human text (or pretty JSON). */
  data(value: unknown, human?: string): void;
  /** A line for people; silent with --json. */
  info(text: string): void;
}

/**
 * Control characters (line breaks, ESC and the terminal sequences it starts, C1 codes) and the
 * Unicode marks that reorder or split the text shown (line and paragraph separators, bidi
 * overrides and isolates).
 */
function unprintable(code: number): boolean {
  return (
    code <= 0x1f ||
    (code >= 0x7f && code <= 0x9f) ||
    code === 0x2028 ||
    code === 0x2029 ||
    (code >= 0x202a && code <= 0x202e) ||
    (code >= 0x2066 && code <= 0x2069)
  );
}

/**
 * `text` with every character that would act on the terminal rather than show written as
 * `\uXXXX`: text others chose (an API key's name, set through /api/me/keys) can then neither add
 * rows to a table nor move the cursor, clear or recolour the operator's screen.
 */
export function printable(text: string): string {
  let shown = '';
  for (const c of text) {
    const code = c.codePointAt(0)!;
    shown += unprintable(code) ? `\\u${code.toString(16).padStart(4, '0')}` : c;
  }
  return shown;
}

/** Plain aligned columns for terminal output; cells are shown `printable`. */
export function formatTable(headers: string[], rawRows: string[][]): string {
  const rows = rawRows.map((row) => row.map(printable));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
