import type { Config, ProviderConfig } from '../config/schema.js';
import { fail, hostOf, ok, reasonOf, warn, type DoctorCheck } from './check.js';

/**
 * Each provider answers `GET {baseUrl}/models` with its key, within the smaller of its
 * timeoutMs and the doctor's; and lists the upstream models the config sends it (a provider
 * that lists fewer models than it serves gets a warning, not a failure).
 */
export async function checkProviders(config: Config, timeoutMs: number): Promise<DoctorCheck[]> {
  return Promise.all(
    config.providers.map((provider) => checkProvider(config, provider, timeoutMs)),
  );
}

async function checkProvider(
  config: Config,
  provider: ProviderConfig,
  timeoutMs: number,
): Promise<DoctorCheck> {
  const area = `provider ${provider.name}`;
  const url = `${provider.baseUrl.replace(/\/+$/, '')}/models`;
  const deadlineMs = Math.min(provider.timeoutMs, timeoutMs);
  const where = `${hostOf(provider.baseUrl)}`;
  let response: Response;
  try {
    response = await fetch(url, {
      headers: {
        accept: 'application/json',
        ...(provider.apiKey ? { authorization: `Bearer ${provider.apiKey}` } : {}),
      },
      signal: AbortSignal.timeout(deadlineMs),
    });
  } catch (error) {
    const timedOut = error instanceof Error && error.name === 'TimeoutError';
    return fail(
      area,
      `GET ${where}/…/models: ${timedOut ? `no answer within ${deadlineMs} ms` : reasonOf(error)}`,
      `check providers "${provider.name}" baseUrl and that this machine can reach it`,
    );
  }
  const text = await response.text().catch(() => '');
  if (response.status === 401 || response.status === 403)
    return fail(
      area,
      `${where} refused the API key (HTTP ${response.status})`,
      provider.apiKey
        ? `check providers "${provider.name}" apiKey (the variable it names): revoked, mistyped or for another account`
        : `set providers "${provider.name}" apiKey`,
    );
  if (!response.ok)
    return fail(
      area,
      `GET ${where}/…/models answered HTTP ${response.status}`,
      `check providers "${provider.name}" baseUrl: it should end in the API's version, such as /v1`,
    );
  let listed: Set<string> | null = null;
  try {
    const body = JSON.parse(text) as { data?: Array<{ id?: unknown }> };
    if (Array.isArray(body.data))
      listed = new Set(
        body.data.map((m) => m.id).filter((id): id is string => typeof id === 'string'),
      );
  } catch {
    // not JSON: reported below
  }
  if (listed === null)
    return warn(
      area,
      `${where} answered /models, but not with an OpenAI-style model list`,
      `check providers "${provider.name}" baseUrl points at an OpenAI-compatible API`,
    );
  const wanted = config.models.filter((m) => m.provider === provider.name);
  const missing = wanted.filter((m) => !listed.has(m.upstreamModel)).map((m) => m.upstreamModel);
  if (missing.length > 0)
    return warn(
      area,
      `${where} answers with the key, but does not list ${missing.join(', ')}`,
      'check the upstreamModel names of those models (some providers list fewer models than they serve)',
    );
  return ok(
    area,
    `${where} answers with the key and lists ${wanted.length === 1 ? 'the model' : `all ${wanted.length} models`} configured for it`,
  );
}
