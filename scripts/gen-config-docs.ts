// docs/config-reference.md from the config schema: `npm run docs:config` writes it,
// `npm run docs:config -- --check` only says whether it is up to date (exit 1 when not).
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import prettier from 'prettier';
import { renderConfigReference } from '../src/config/reference.js';

export const CONFIG_REFERENCE_PATH = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  'docs',
  'config-reference.md',
);

/** The file's text: the reference, formatted as `npm run lint` (prettier) wants it. */
export async function generateConfigReference(): Promise<string> {
  const options = (await prettier.resolveConfig(CONFIG_REFERENCE_PATH)) ?? {};
  return prettier.format(renderConfigReference(), { ...options, parser: 'markdown' });
}

async function main(): Promise<void> {
  const text = await generateConfigReference();
  let current: string | null = null;
  try {
    current = readFileSync(CONFIG_REFERENCE_PATH, 'utf8');
  } catch {
    // not written yet
  }
  if (current === text) {
    process.stdout.write('docs/config-reference.md is up to date\n');
  } else if (process.argv.includes('--check')) {
    process.stderr.write('docs/config-reference.md is out of date: run npm run docs:config\n');
    process.exitCode = 1;
  } else {
    writeFileSync(CONFIG_REFERENCE_PATH, text);
    process.stdout.write('wrote docs/config-reference.md\n');
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
