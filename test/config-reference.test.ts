import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { CONFIG_REFERENCE_PATH, generateConfigReference } from '../scripts/gen-config-docs.js';
import { configFields, FIELD_NOTES } from '../src/config/reference.js';

/** docs/config-reference.md is generated from the schema and can never drift from it. */

test('the committed docs/config-reference.md is what the schema generates (else: npm run docs:config)', async () => {
  const committed = readFileSync(CONFIG_REFERENCE_PATH, 'utf8');
  expect(committed === (await generateConfigReference()), 'run npm run docs:config').toBe(true);
});

test('every config field is explained, and every explanation names a field that exists', () => {
  const fields = configFields();
  const paths = new Set(fields.map((f) => f.path));
  expect(Object.keys(FIELD_NOTES).filter((path) => !paths.has(path))).toEqual([]);
  // A new field needs a .describe() in the schema or a line in FIELD_NOTES (src/config/reference.ts).
  expect(fields.filter((f) => !f.documented).map((f) => f.path)).toEqual([]);
  expect(paths).toContain('networks[].assets[].decimals');
  expect(paths).toContain('networks[].rpcUrls');
  expect(paths).toContain('http.shutdownGraceMs');
});
