/**
 * A spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV
 * injection): `=`, `+`, `-`, `@`, and the tab and carriage return some of them skip first.
 * Other white space before them counts too: an import that trims spaces (LibreOffice's
 * "Trim spaces" with "Evaluate formulas") reads ` =1+1` as `=1+1`.
 */
const FORMULA_START = /^(?:\s*[=+\-@]|[\t\r])/;

/** A plain decimal number, as amounts are written: `-1.5`, `0.000123456789012345`, `100`. */
const DECIMAL_NUMBER = /^-?\d+(\.\d+)?$/;

/**
 * One CSV field (RFC 4180), quoted when it holds a comma, a quote or a line break, and also
 * a semicolon or a tab: a spreadsheet whose list separator is one of those (Excel in much of
 * Europe uses ';') would otherwise start a new cell there, one that may hold a formula.
 */
export function csvField(value: string): string {
  return /[",;\t\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/**
 * A text cell that a spreadsheet cannot run: text that starts like a formula gets a leading
 * `'`, which spreadsheets read as "this cell is text" (OWASP's advice for CSV injection).
 * Text that already starts with `'` gets one too, so that dropping one leading `'` always
 * gives the original text back (`'=1` would otherwise read back as `=1`).
 *
 * @example csvText('=HYPERLINK("https://example.com")') // `'=HYPERLINK("https://example.com")`
 */
export function csvText(value: string): string {
  return FORMULA_START.test(value) || value.startsWith("'") ? `'${value}` : value;
}

/** The header and the record writer of one CSV table. */
export interface CsvTable {
  /** The header line, ending in "\n". */
  header: string;
  /** One record, its fields in the order of the columns, ending in "\n". */
  line: (fields: readonly string[]) => string;
}

/**
 * A CSV table whose every cell is text (see {@link csvText}), except in `numberColumns`: there
 * a decimal number is written exactly as it is (`-1.5` stays a negative number; money is never
 * altered), and anything else is text like the rest.
 *
 * @example csvTable(['account', 'balance'], ['balance']).line(['revenue:usage', '-1.5'])
 */
export function csvTable<Column extends string>(
  columns: readonly Column[],
  numberColumns: readonly Column[],
): CsvTable {
  const numbers = columns.map((column) => numberColumns.includes(column));
  const cell = (value: string, i: number) =>
    csvField(numbers[i] && DECIMAL_NUMBER.test(value) ? value : csvText(value));
  return {
    header: `${columns.map(csvField).join(',')}\n`,
    line: (fields) => {
      if (fields.length !== columns.length) {
        throw new Error(`a CSV record of ${fields.length} fields for ${columns.length} columns`);
      }
      return `${fields.map(cell).join(',')}\n`;
    },
  };
}
