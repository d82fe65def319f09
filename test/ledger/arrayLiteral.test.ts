import { expect, test } from 'vitest';
import { arrayLiteral } from '../../ledger/postgres/writeBatch.js';
import { createTestDatabase } from '../support/db.js';

test('number and uuid arrays go to PostgreSQL as array text that reads back the same', async () => {
  const database = await createTestDatabase();
  try {
    const cases: Array<[unknown[], string]> = [
      [['0198b0a4-1a2b-7c3d-8e4f-0123456789ab', null], 'uuid[]'],
      [['9223372036854775807', '-1', 0, null], 'bigint[]'],
      [[1, 2, 32767], 'int[]'],
      [['-0.005', '123456789012345678901234567890.123456789012345678', '0', null], 'numeric[]'],
      [[], 'numeric[]'],
    ];
    for (const [elements, type] of cases) {
      const literal = arrayLiteral(elements, type);
      expect(typeof literal).toBe('string');
      const { rows } = await database.pool.query<{ back: string[] }>(
        `select (select array_agg(x::text) from unnest($1::${type}) as x) as back`,
        [literal],
      );
      expect(rows[0]!.back ?? []).toEqual(elements.map((e) => (e === null ? null : String(e))));
    }
  } finally {
    await database.drop();
  }
});

test('an element that does not look like its type is left to pg to encode, never spliced in', () => {
  const forged = ['0198b0a4-1a2b-7c3d-8e4f-0123456789ab,0198b0a4-1a2b-7c3d-8e4f-0123456789ac'];
  expect(arrayLiteral(forged, 'uuid[]')).toBe(forged);
  expect(arrayLiteral(['1}', '2'], 'numeric[]')).toEqual(['1}', '2']);
  expect(arrayLiteral(['1e5'], 'numeric[]')).toEqual(['1e5']);
  expect(arrayLiteral(['a"b'], 'text[]')).toEqual(['a"b']);
});
