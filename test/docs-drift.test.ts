import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Command } from 'commander';
import { expect, test } from 'vitest';
import { buildProgram } from '../src/cli/main.js';
import { configFields } from '../src/config/reference.js';
import { openApiDocument } from '../src/http/openapi.js';

/**
 * The hand-written docs name CLI commands and flags, HTTP routes, error codes and config
 * fields. Each of those names must be one the service has, so a renamed flag, route, code or
 * field fails here instead of lying to a reader. (docs/config-reference.md is generated and
 * checked by test/config-reference.test.ts.)
 */

const ROOT = join(import.meta.dirname, '..');

/** README.md and docs/*.md but the generated reference, as [file, lines]. */
function docs(): Array<{ file: string; lines: string[] }> {
  const files = [
    join(ROOT, 'README.md'),
    ...readdirSync(join(ROOT, 'docs'))
      .filter((name) => name.endsWith('.md') && name !== 'config-reference.md')
      .map((name) => join(ROOT, 'docs', name)),
  ];
  return files.map((file) => ({
    file: relative(ROOT, file),
    lines: readFileSync(file, 'utf8').split('\n'),
  }));
}

/** Every `pattern` match in the docs, with where it is (`docs/api.md:12`). */
function* occurrences(pattern: RegExp): Generator<{ at: string; match: RegExpMatchArray }> {
  for (const { file, lines } of docs())
    for (const [index, line] of lines.entries())
      for (const match of line.replaceAll('\\|', '/').matchAll(pattern))
        yield { at: `${file}:${index + 1}`, match };
}

test('every `lingxi <command>` the docs quote is a command of the CLI, with options it has', () => {
  const program = buildProgram({ stdout: () => {}, stderr: () => {} });
  const global = new Set(program.options.map((option) => option.long));
  const wrong: string[] = [];
  let checked = 0;
  // "lingxi export journal --format csv [--out FILE]", up to the end of a code span or cell.
  for (const { at, match } of occurrences(/\blingxi((?:\s+[a-z][a-z-]*)+)([^`|#;&)]*)/g)) {
    const words = match[1]!.trim().split(/\s+/);
    let command: Command = program;
    const path: string[] = [];
    for (const word of words) {
      const sub = command.commands.find((c) => c.name() === word || c.aliases().includes(word));
      if (!sub) break;
      command = sub;
      path.push(word);
    }
    if (path.length === 0) {
      wrong.push(`${at}: lingxi ${words[0]} is no command`);
      continue;
    }
    checked++;
    const options = new Set([...global, ...command.options.map((option) => option.long)]);
    const rest = `${words.slice(path.length).join(' ')} ${match[2]}`;
    for (const [, flag] of rest.matchAll(/(?<![\w-])(--[a-z][a-z-]*)/g))
      if (!options.has(flag)) wrong.push(`${at}: lingxi ${path.join(' ')} has no ${flag}`);
  }
  expect(wrong).toEqual([]);
  expect(checked).toBeGreaterThan(40);
});

/** A path called with a method it does not take, on purpose (the 405 example). */
const NOT_ROUTES = new Set(['PUT /api/me/keys']);

test('every `METHOD /path` the docs name is a route of /openapi.json (which the app serves)', () => {
  const routes = new Set<string>();
  for (const [path, item] of Object.entries(openApiDocument.paths))
    for (const method of ['get', 'post', 'delete', 'put', 'patch'] as const)
      if (item[method as keyof typeof item])
        routes.add(`${method.toUpperCase()} ${path.replace(/\{[^}]+\}/g, '{}')}`);
  const wrong: string[] = [];
  let checked = 0;
  // "GET /api/me/usage?from", "GET/POST/DELETE /api/me/keys", "DELETE /admin/users/:id/keys/:keyId"
  const pattern =
    /\b((?:GET|POST|DELETE|PUT|PATCH)(?:\/(?:GET|POST|DELETE|PUT|PATCH))*)\s+(\/[\w{}:.\-/]*)/g;
  for (const { at, match } of occurrences(pattern)) {
    const path = match[2]!.replace(/\/$/, '').replace(/(\{[^}]+\}|:\w+)/g, '{}') || '/';
    for (const method of match[1]!.split('/')) {
      const route = `${method} ${path}`;
      checked++;
      if (!routes.has(route) && !NOT_ROUTES.has(route)) wrong.push(`${at}: ${route}`);
    }
  }
  expect(wrong).toEqual([]);
  expect(checked).toBeGreaterThan(80);
});

/** Every string literal in the service's source, and a pattern per template literal. */
function sourceStrings(): { literals: Set<string>; templates: RegExp[] } {
  const literals = new Set<string>();
  const templates: RegExp[] = [];
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
      entry.isDirectory()
        ? walk(join(dir, entry.name))
        : entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')
          ? [join(dir, entry.name)]
          : [],
    );
  const files = ['src', 'ledger', 'chain-watchers'].flatMap((dir) => walk(join(ROOT, dir)));
  // The OpenAPI document is prose about codes, like these docs: it proves no code exists.
  for (const file of files.filter((f) => !f.endsWith(join('src', 'http', 'openapi.ts')))) {
    const text = readFileSync(file, 'utf8');
    for (const [, literal] of text.matchAll(/'([a-z][a-z0-9_]*)'/g)) literals.add(literal!);
    for (const [, template] of text.matchAll(/`([a-z][a-z0-9_]*\$\{[^`]*)`/g))
      if (/^[a-z0-9_]*(\$\{[^}]+\}[a-z0-9_]*)+$/.test(template!))
        templates.push(new RegExp(`^${template!.replace(/\$\{[^}]+\}/g, '[a-z0-9_]+')}$`));
  }
  return { literals, templates };
}

test('every error code the docs give with a status is a code the service raises', () => {
  const { literals, templates } = sourceStrings();
  const known = (code: string) => literals.has(code) || templates.some((t) => t.test(code));
  const wrong: string[] = [];
  let checked = 0;
  const check = (at: string, code: string) => {
    checked++;
    if (!known(code)) wrong.push(`${at}: ${code}`);
  };
  // "409 `user_erased`", "**404 `key_not_found`**", "400 `invalid_request`"
  for (const { at, match } of occurrences(/\b[45]\d\d\*{0,2}\s+\*{0,2}`([a-z][a-z0-9_]*)`/g))
    check(at, match[1]!);
  // Table rows with a status cell: every cell that is one code (the type and code columns).
  for (const { file, lines } of docs())
    for (const [index, line] of lines.entries()) {
      const cells = line.split('|').map((cell) => cell.trim());
      if (!cells.some((cell) => /^[45]\d\d$/.test(cell))) continue;
      for (const cell of cells) {
        const code = /^`([a-z][a-z0-9_]*)`$/.exec(cell)?.[1];
        if (code) check(`${file}:${index + 1}`, code);
      }
    }
  expect(wrong).toEqual([]);
  expect(checked).toBeGreaterThan(60);
});

/** Dotted names in the docs that start like a config field but are not one. */
const NOT_CONFIG = new Set([
  'ledger.closingBalance', // the account export's `ledger` part
  'sessions.token_hash', // a table column
]);

test('every config field the docs name (`http.shutdownDelayMs`, `networks[].rpcUrls`) exists', () => {
  const paths = new Set(configFields().map((field) => field.path));
  const roots = new Set([...paths].map((path) => path.split(/[.[]/)[0]!));
  const wrong: string[] = [];
  let checked = 0;
  for (const { at, match } of occurrences(
    /`([a-zA-Z]\w*(?:\[\d*\])?(?:\.[a-zA-Z]\w*(?:\[\d*\])?)+)`/g,
  )) {
    const name = match[1]!;
    if (!roots.has(name.split(/[.[]/)[0]!) || NOT_CONFIG.has(name)) continue;
    checked++;
    // `networks[1].assets[0].decimals` (an error message's path) is `networks[].assets[].decimals`.
    if (!paths.has(name.replace(/\[\d+\]/g, '[]'))) wrong.push(`${at}: ${name}`);
  }
  expect(wrong).toEqual([]);
  expect(checked).toBeGreaterThan(40);
});
