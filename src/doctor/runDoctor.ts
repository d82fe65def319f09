import { ConfigError, loadConfig, type LoadedConfig } from '../config/load.js';
import { fail, ok, reasonOf, warn, type DoctorCheck } from './check.js';
import { checkDatabase } from './checkDatabase.js';
import { checkKeys } from './checkKeys.js';
import { checkNetworks } from './checkNetworks.js';
import { checkProviders } from './checkProviders.js';

export interface RunDoctorParameters {
  /** The --config flag, if given (else $LINGXI_CONFIG, else ./lingxi.config.json). */
  configFlag?: string;
  /** Longest wait for any one answer (database, RPC call, provider), in ms. */
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
}

export interface DoctorReport {
  /** True when nothing failed (warnings allowed). */
  ok: boolean;
  counts: { ok: number; warn: number; fail: number };
  checks: DoctorCheck[];
}

/**
 * Checks a deployment before (or while) it runs: the config, the database (and that every
 * deposit address assigned derives from a configured or retired xpub), every network
 * endpoint, every model provider, the deposit keys and the secrets. Reads only; applies no
 * migration and writes nothing. A config that does not load is the one failure that stops
 * the rest.
 *
 * @example
 * const report = await runDoctor({ timeoutMs: 10_000 });
 * if (!report.ok) process.exitCode = 1;
 */
export async function runDoctor(params: RunDoctorParameters): Promise<DoctorReport> {
  let loaded: LoadedConfig;
  try {
    loaded = loadConfig(params.configFlag, params.env);
  } catch (error) {
    const where = error instanceof ConfigError && error.path ? ` (${error.path})` : '';
    return report([
      fail(
        'config',
        `${reasonOf(error)}`,
        `fix the config file${where}, or set the environment variable it names; docs/config-reference.md lists every field`,
      ),
    ]);
  }
  const { config, file } = loaded;
  const checks: DoctorCheck[] = [];
  const count = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  const summary = `${count(config.providers.length, 'provider')}, ${count(config.models.length, 'model')}, ${count(config.networks.length, 'network')}`;
  checks.push(
    file
      ? ok('config', `${file} is valid: ${summary}`)
      : warn(
          'config',
          `no config file: embedded defaults (${summary})`,
          'copy lingxi.config.example.json to lingxi.config.json, or pass --config FILE',
        ),
  );
  if (config.providers.length === 0)
    checks.push(
      warn(
        'config',
        'no model providers: /v1 answers model_not_found',
        'add "providers" and "models"',
      ),
    );
  if (config.networks.length === 0)
    checks.push(warn('config', 'no networks: no deposits are watched', 'add "networks"'));

  const [database, networks, providers] = await Promise.all([
    checkDatabase(config, params.timeoutMs).catch((error: unknown) => [
      fail('database', reasonOf(error), 'see the message'),
    ]),
    checkNetworks(config, params.timeoutMs),
    checkProviders(config, params.timeoutMs),
  ]);
  checks.push(...database, ...networks, ...providers, ...checkKeys(config));
  return report(checks);
}

function report(checks: DoctorCheck[]): DoctorReport {
  const counts = { ok: 0, warn: 0, fail: 0 };
  for (const check of checks) counts[check.status] += 1;
  return { ok: counts.fail === 0, counts, checks };
}
