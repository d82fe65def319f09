import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';
import { migrations } from '../../migrations/index.js';

const dir = fileURLToPath(new URL('../../migrations/', import.meta.url));

test('every migration file is registered under its own name, so none is left out of a deployment', () => {
  const files = readdirSync(dir)
    .filter((file) => file.endsWith('.ts') && file !== 'index.ts')
    .map((file) => file.replace(/\.ts$/, ''))
    .sort();
  expect(Object.keys(migrations).sort()).toEqual(files);
  for (const name of files) expect(typeof migrations[name]?.up).toBe('function');
});
