import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { z } from 'zod';
import { configSchema, type Config, type ConfigInput } from './schema.js';

/** The built-in currency table; `currencies` in the config file adds to or overrides it. */
export const DEFAULT_CURRENCIES: ReadonlyArray<{ code: string; scale: number }> = [
  { code: 'USD', scale: 18 },
  { code: 'USDT', scale: 6 },
  { code: 'USDC', scale: 6 },
  { code: 'ETH', scale: 18 },
  { code: 'BNB', scale: 18 },
  { code: 'POL', scale: 18 },
  { code: 'TRX', scale: 6 },
];

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    message: string,
    readonly path: string,
  ) {
    super(path ? `config ${path}: ${message}` : `config: ${message}`);
  }
}

export interface LoadedConfig {
  config: Config;
  /** The file it came from, or null when the service runs on embedded defaults. */
  file: string | null;
}

/** Finds the config file: the flag, then $LINGXI_CONFIG, then ./lingxi.config.json if present. */
export function resolveConfigPath(flag?: string): string | null {
  if (flag !== undefined) {
    // `--config "$CONF"` with CONF unset: falling back would run on another config and database.
    if (flag === '') throw new ConfigError('--config names no file (an empty path)', '');
    return resolve(flag);
  }
  const fromEnv = process.env['LINGXI_CONFIG'];
  if (fromEnv) return resolve(fromEnv);
  const local = resolve('lingxi.config.json');
  return existsSync(local) ? local : null;
}

/**
 * What a service with no config file runs on, beyond the schema's defaults: someone who ran
 * `npm start` to try the dashboard on their machine gets the development sign-in. Any config
 * file, even `{}`, leaves it off unless it says `"devSignIn": true`.
 */
const EMBEDDED_DEFAULTS = { telegram: { devSignIn: true } };

/** Reads, substitutes `env:NAME` values, validates. Throws ConfigError naming the bad field. */
export function loadConfig(flag?: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const file = resolveConfigPath(flag);
  let raw: unknown = EMBEDDED_DEFAULTS;
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new ConfigError(`cannot read ${file}: ${(error as Error).message}`, '');
    }
    try {
      raw = JSON.parse(text);
    } catch (error) {
      throw new ConfigError(`${file} is not valid JSON: ${(error as Error).message}`, '');
    }
  }
  return { config: parseConfig(raw, env), file };
}

/** Validates an already-parsed config object (tests and the demo build theirs in code). */
export function parseConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env): Config {
  const missing = new Map<string, string>();
  const fromEnv = new Set<string>();
  const substituted = substituteEnv(raw, [], env, missing, fromEnv);
  if (env['DATABASE_URL'] && isRecord(substituted)) {
    // DATABASE_URL is how operators and CI point the service at a server, unless the file names one itself.
    const database = isRecord(substituted['database']) ? substituted['database'] : {};
    if (database['url'] === undefined)
      substituted['database'] = { ...database, url: env['DATABASE_URL'] };
  }
  let result = configSchema.safeParse(substituted);
  // An environment variable is text: `"port": "env:PORT"` is read as the number (or the
  // boolean) the field wants when the text is one. Each pass fixes one such field.
  for (let pass = 0; !result.success && pass < fromEnv.size; pass += 1) {
    if (!typeEnvValue(substituted, innermostIssue(result.error.issues[0]!), fromEnv)) break;
    result = configSchema.safeParse(substituted);
  }
  if (!result.success) {
    const issue = innermostIssue(result.error.issues[0]!);
    if (issue.code === 'unrecognized_keys') {
      // A misspelt key must not be dropped: "databse" would start an empty embedded database.
      const paths = issue.keys.map((key) => formatPath([...issue.path, key]));
      throw new ConfigError(
        `unknown ${paths.length === 1 ? 'key' : 'keys'} (misspelt? see docs/config-reference.md)`,
        paths.join(', '),
      );
    }
    const path = formatPath(issue.path);
    const unset = [...missing].find(
      ([at]) => at === path || at.startsWith(`${path}[`) || at.startsWith(`${path}.`),
    );
    // The unset variable is the cause: say so, as for any other unset one, rather than what
    // the schema saw without it ("Too small: expected array to have >=1 items").
    if (unset) throw new ConfigError(`environment variable ${unset[1]} is not set`, unset[0]);
    throw new ConfigError(issue.message, path);
  }
  const config = result.data;
  // A value that names an environment variable is wanted: an unset one is an error, not a
  // silent default (an unset TELEGRAM_BOT_TOKEN must not start a service nobody can sign in
  // to). The one exception is the database URL, whose documented fallback is the embedded
  // server.
  for (const [path, variable] of missing) {
    if (path === 'database.url') continue;
    throw new ConfigError(`environment variable ${variable} is not set`, path);
  }
  checkReferences(config);
  return config;
}

/** Currency scales after the config's overrides. */
export function currencyTable(config: Config): Map<string, number> {
  const table = new Map(DEFAULT_CURRENCIES.map((c) => [c.code, c.scale]));
  for (const c of config.currencies) table.set(c.code, c.scale);
  return table;
}

function checkReferences(config: Config): void {
  // A bot token means real sign-in: an unproven one beside it would let anyone on this
  // machine, or behind a proxy that hides them, be any user.
  if (config.telegram.devSignIn && config.telegram.botToken)
    throw new ConfigError(
      'cannot be true with telegram.botToken set: the development sign-in signs in any Telegram id with no proof; remove one of them',
      'telegram.devSignIn',
    );
  const providers = new Set<string>();
  config.providers.forEach((provider, i) => {
    // The gateway finds a provider by name: a second one of the same name would win silently.
    if (providers.has(provider.name))
      throw new ConfigError(`duplicate provider "${provider.name}"`, `providers[${i}].name`);
    providers.add(provider.name);
  });
  // A price per 1M tokens with more than (USD scale - 6) decimals would make per-token costs
  // inexact; refuse it rather than round a charge.
  const priceDigits = (currencyTable(config).get('USD') ?? 18) - 6;
  config.models.forEach((model, i) => {
    for (const [kind, price] of Object.entries(model.pricePer1M)) {
      const decimals = price?.split('.')[1]?.length ?? 0;
      if (decimals > priceDigits) {
        throw new ConfigError(
          `has ${decimals} decimals; at most ${priceDigits} keep every charge exact`,
          `models[${i}].pricePer1M.${kind}`,
        );
      }
    }
  });
  config.models.forEach((model, i) => {
    // Every call first holds the most it can cost, and a hold of nothing is refused: a model
    // whose calls can only cost 0 could never be called.
    const { input, cachedInput, cacheWrite, output, reasoning } = model.pricePer1M;
    const priced = (...prices: Array<string | undefined>) =>
      prices.some((price) => price !== undefined && /[1-9]/.test(price));
    const chargeable =
      model.kind === 'embedding'
        ? priced(input, cachedInput, cacheWrite)
        : priced(input, cachedInput, cacheWrite) || priced(output, reasoning);
    if (!chargeable)
      throw new ConfigError(
        'every price is 0: a call is metered by holding the most it can cost first, so a model must cost something (free models are not supported)',
        `models[${i}].pricePer1M`,
      );
  });
  const seenModels = new Set<string>();
  config.models.forEach((model, i) => {
    if (!providers.has(model.provider)) {
      throw new ConfigError(`unknown provider "${model.provider}"`, `models[${i}].provider`);
    }
    if (seenModels.has(model.id))
      throw new ConfigError(`duplicate model id "${model.id}"`, `models[${i}].id`);
    seenModels.add(model.id);
  });
  const codes = new Set<string>();
  config.currencies.forEach((currency, i) => {
    if (codes.has(currency.code))
      throw new ConfigError(`duplicate currency "${currency.code}"`, `currencies[${i}].code`);
    codes.add(currency.code);
  });
  const currencies = currencyTable(config);
  const networks = new Set<string>();
  config.networks.forEach((network, i) => {
    if (networks.has(network.name)) {
      throw new ConfigError(`duplicate network "${network.name}"`, `networks[${i}].name`);
    }
    networks.add(network.name);
    if (network.kind === 'evm' && network.confirmations === 'solidified') {
      throw new ConfigError(
        '"solidified" is for Tron; use a count or "finalized"',
        `networks[${i}].confirmations`,
      );
    }
    if (network.kind === 'tron' && network.confirmations === 'finalized') {
      throw new ConfigError(
        '"finalized" is for EVM; use a count or "solidified"',
        `networks[${i}].confirmations`,
      );
    }
    // A deposit is credited `confirmations` blocks deep. A reorg that removes it later is at
    // least that deep, and the watcher rechecks (and reverses the credit) only above its fork
    // point as far as it finds it: always reorgDepthMax blocks behind its cursor, further only
    // while its checkpoints reach further (4 x, when iterations scan short ranges).
    if (
      typeof network.confirmations === 'number' &&
      network.confirmations > network.reorgDepthMax
    ) {
      throw new ConfigError(
        `is ${network.reorgDepthMax}, less than confirmations (${network.confirmations}): a reorg that removes a credited deposit would reach below what the watcher is sure to re-check, and the credit would stand; set it to at least ${network.confirmations}`,
        `networks[${i}].reorgDepthMax`,
      );
    }
    // Prices, minimums, custody accounts and reconciliation find a network's asset by its
    // symbol: two of one symbol would share an account and one's price.
    const symbols = new Set<string>();
    network.assets.forEach((asset, j) => {
      const at = `networks[${i}].assets[${j}]`;
      if (symbols.has(asset.symbol))
        throw new ConfigError(
          `duplicate asset symbol "${asset.symbol}" on network "${network.name}"; give each asset its own symbol (and "currency" to book them as one)`,
          `${at}.symbol`,
        );
      symbols.add(asset.symbol);
      if (!asset.native && !asset.contract)
        throw new ConfigError('a token needs "contract" (or "native": true)', at);
      if (asset.native && asset.contract)
        throw new ConfigError('a native asset has no "contract"', at);
      const code = asset.currency ?? asset.symbol;
      const scale = currencies.get(code);
      if (scale === undefined) {
        throw new ConfigError(`unknown currency "${code}"; add it to "currencies"`, `${at}.symbol`);
      }
      if (asset.decimals > scale) {
        throw new ConfigError(
          `${asset.decimals} decimals exceed currency ${code}'s scale ${scale}; set "currencies": [{"code": "${code}", "scale": ${asset.decimals}}]`,
          `${at}.decimals`,
        );
      }
    });
  });
  config.networks.forEach((network, i) =>
    network.assets.forEach((asset, j) => {
      if ('chainlink' in asset.price && !networks.has(asset.price.chainlink.network)) {
        throw new ConfigError(
          `unknown network "${asset.price.chainlink.network}"`,
          `networks[${i}].assets[${j}].price.chainlink.network`,
        );
      }
    }),
  );
}

/**
 * An issue of a union (a price source: `{"fixed"}` or `{"chainlink"}`) says only "Invalid
 * input" at the union's path. When exactly one branch has the keys the value has, that
 * branch's own issue names the bad field (`price.fixed`: expected string, received number).
 */
function innermostIssue(issue: z.core.$ZodIssue): z.core.$ZodIssue {
  if (issue.code !== 'invalid_union') return issue;
  const matching = issue.errors.filter(
    (branch) =>
      !branch.some((inner) => inner.code === 'unrecognized_keys' && inner.path.length === 0),
  );
  const only = matching.length === 1 ? matching[0]![0] : undefined;
  if (!only) return issue;
  return innermostIssue({ ...only, path: [...issue.path, ...only.path] } as z.core.$ZodIssue);
}

/**
 * Where `issue` says a number or a boolean was expected and found the text of an environment
 * variable that reads as one (`8080`, `true`), puts the typed value there; false otherwise.
 */
function typeEnvValue(config: unknown, issue: z.core.$ZodIssue, fromEnv: Set<string>): boolean {
  if (issue.code !== 'invalid_type' || issue.path.length === 0) return false;
  if (!fromEnv.has(formatPath(issue.path))) return false;
  const parent = issue.path
    .slice(0, -1)
    .reduce<unknown>((at, key) => (at as Record<PropertyKey, unknown>)?.[key], config);
  const key = issue.path[issue.path.length - 1]!;
  if (typeof parent !== 'object' || parent === null) return false;
  const text = (parent as Record<PropertyKey, unknown>)[key];
  if (typeof text !== 'string') return false;
  let typed: number | boolean;
  if (issue.expected === 'number' && /^-?\d+(\.\d+)?$/.test(text.trim())) typed = Number(text);
  else if (issue.expected === 'boolean' && /^(true|false)$/.test(text.trim()))
    typed = text.trim() === 'true';
  else return false;
  (parent as Record<PropertyKey, unknown>)[key] = typed;
  return true;
}

function substituteEnv(
  value: unknown,
  path: Array<string | number>,
  env: NodeJS.ProcessEnv,
  missing: Map<string, string>,
  fromEnv: Set<string>,
): unknown {
  if (typeof value === 'string' && value.startsWith('env:')) {
    const name = value.slice(4);
    const found = env[name];
    if (found === undefined || found === '') {
      missing.set(formatPath(path), name);
      return undefined;
    }
    fromEnv.add(formatPath(path));
    return found;
  }
  if (Array.isArray(value)) {
    return value
      .map((item, i) => substituteEnv(item, [...path, i], env, missing, fromEnv))
      .filter((item) => item !== undefined);
  }
  if (isRecord(value)) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      const next = substituteEnv(item, [...path, key], env, missing, fromEnv);
      if (next !== undefined) out[key] = next;
    }
    return out;
  }
  return value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  return path
    .map((part, i) =>
      typeof part === 'number' ? `[${part}]` : i === 0 ? String(part) : `.${String(part)}`,
    )
    .join('');
}

export type { Config, ConfigInput };
