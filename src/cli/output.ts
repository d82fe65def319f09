export interface Output {
  json: boolean;
  /** Prints data: JSON with --json, else the human text (or pretty JSON). */
  data(value: unknown, human?: string): void;
  /** A line for people; silent with --json. */
  info(text: string): void;
}

/** Plain aligned columns for terminal output. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
