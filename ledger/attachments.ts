import { assert } from './errors.js';

/** Column types an attachment may use (PostgreSQL type names). */
export type AttachmentColumnType =
  'text' | 'bigint' | 'integer' | 'numeric' | 'uuid' | 'timestamptz' | 'boolean' | 'jsonb';

/**
 * A row of the caller's own table written in the same statement, hence the same commit,
 * as the ledger change it describes (a usage record beside the entry that charged it), so
 * one can never exist without the other. Written only when the command actually changes
 * the ledger: a replayed or refused command writes no attachment.
 */
export interface Attachment {
  table: string;
  /** Column name to type; every attachment to one table must declare the same columns. */
  columns: Readonly<Record<string, AttachmentColumnType>>;
  row: Readonly<Record<string, unknown>>;
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/** Groups attachments by table and renders one INSERT ... SELECT FROM unnest() per table. */
export function attachmentInserts(
  attachments: ReadonlyArray<Attachment>,
  param: (value: unknown, type: string) => string,
): string[] {
  const byTable = new Map<string, Attachment[]>();
  for (const attachment of attachments) {
    const group = byTable.get(attachment.table) ?? [];
    group.push(attachment);
    byTable.set(attachment.table, group);
  }
  const parts: string[] = [];
  for (const [table, group] of byTable) {
    assert(IDENTIFIER.test(table), `attachment table name ${table}`);
    const columns = Object.entries(group[0]!.columns);
    for (const [name] of columns) assert(IDENTIFIER.test(name), `attachment column name ${name}`);
    const key = columns.map(([n, t]) => `${n}:${t}`).join(',');
    for (const other of group) {
      const otherKey = Object.entries(other.columns)
        .map(([n, t]) => `${n}:${t}`)
        .join(',');
      assert(otherKey === key, `attachments to ${table} declare different columns`);
    }
    const arrays = columns.map(([name, type]) =>
      param(
        group.map((a) => encode(a.row[name], type)),
        `${type}[]`,
      ),
    );
    parts.push(
      `insert into ${table} (${columns.map(([n]) => n).join(', ')}) select * from unnest(${arrays.join(', ')})`,
    );
  }
  return parts;
}

function encode(value: unknown, type: AttachmentColumnType): unknown {
  if (value === undefined || value === null) return null;
  if (type === 'jsonb') return JSON.stringify(value);
  if (typeof value === 'object' && !(value instanceof Date)) return String(value);
  return value;
}
