import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { providers } from 'tronweb';
import { TronEndpointError } from './errors.js';
import type { RateLimiter } from './rateLimiter.js';

export interface TronHttpProviderSettings {
  /** Whole-request deadline (connect, headers and body), not an idle timeout. */
  timeoutMs: number;
  headers: Record<string, string>;
  limiter: RateLimiter;
  /** How often one request is retried in place after HTTP 429/403 before the host is given up. */
  rateLimitRetries: number;
  retryBaseDelayMs: number;
  retryMaxDelayMs: number;
  /**
   * The longest `Retry-After` (or "suspended for N s") honoured; a longer one is cut to it.
   * This host's limiter (the key's, for hosts that send it) holds every request until the
   * wait is over; a wait longer than `retryMaxDelayMs` fails the request at once when the
   * caller has another host to try.
   */
  retryAfterMaxMs: number;
  /** Whether the caller has another host to fail over to (else a long wait is waited here). */
  hasOtherHosts: boolean;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
  agents: { http: HttpAgent; https: HttpsAgent };
}

/**
 * TronWeb's HttpProvider with the guarantees the watchers need, so every TronWeb method that
 * goes through it inherits them:
 *
 * - a whole-request deadline (`AbortSignal`): axios' own `timeout` is reset by TronWeb to
 *   30 s whenever headers are set, and a trickling server can outlive it;
 * - pacing to the key's rate, and in-place retries with backoff and jitter on HTTP 429/403
 *   (honouring `Retry-After` and TronGrid's "suspended for N s"; a wait beyond
 *   `retryMaxDelayMs` is waited by the limiter, up to `retryAfterMaxMs`, not in place);
 * - typed failures (`TronEndpointError`), including java-tron's HTTP 200 `{"Error": ...}`
 *   answers, which TronWeb would otherwise turn into empty results (`getBlockRange` returns
 *   `[]` for them).
 */
export class TronHttpProvider extends providers.HttpProvider {
  private readonly settings: TronHttpProviderSettings;
  private readonly label: string;

  constructor(host: string, settings: TronHttpProviderSettings) {
    super(host, settings.timeoutMs, '', '', settings.headers);
    this.settings = settings;
    this.label = hostLabel(host);
  }

  override async request<T = unknown>(
    url: string,
    payload: Record<string, unknown> = {},
    method = 'get',
  ): Promise<T> {
    const verb = String(method).toLowerCase();
    const { settings } = this;
    for (let attempt = 0; ; attempt++) {
      await settings.limiter.take();
      try {
        return await this.send<T>(url, payload, verb);
      } catch (error) {
        if (error instanceof TronEndpointError && error.kind === 'rate-limited') {
          const askedMs = error.details.retryAfterMs;
          // Cutting a long wait short only earns more refusals: the key (or keyless host)
          // waits as asked, up to the bound; everyone sharing it waits, not just this request.
          const waitsLong = askedMs !== undefined && askedMs > settings.retryMaxDelayMs;
          if (waitsLong) {
            settings.limiter.pauseUntil(Date.now() + Math.min(askedMs, settings.retryAfterMaxMs));
            // Another host may answer now.
            if (settings.hasOtherHosts) throw error;
          }
          if (attempt < settings.rateLimitRetries) {
            if (!waitsLong) {
              const delayMs = Math.min(
                settings.retryMaxDelayMs,
                askedMs ??
                  backoffMs(
                    attempt,
                    settings.retryBaseDelayMs,
                    settings.retryMaxDelayMs,
                    settings.random,
                  ),
              );
              settings.limiter.pauseUntil(Date.now() + delayMs);
            }
            continue;
          }
        }
        throw error;
      }
    }
  }

  private async send<T>(url: string, payload: Record<string, unknown>, verb: string): Promise<T> {
    const path = url.replace(/^\/+/, '').replace(/\?.*$/, '');
    const signal = AbortSignal.timeout(this.settings.timeoutMs);
    let data: unknown;
    try {
      const response = await this.instance.request<unknown>({
        url,
        method: verb,
        data: verb === 'post' && Object.keys(payload).length > 0 ? payload : null,
        params: verb === 'get' ? payload : undefined,
        signal,
        timeout: 0,
        httpAgent: this.settings.agents.http,
        httpsAgent: this.settings.agents.https,
      });
      data = response.data;
    } catch (error) {
      throw endpointErrorOf(error, { host: this.label, path, timedOut: signal.aborted });
    }
    // TronGrid answers JSON. axios hands back the raw text of a body it cannot parse (one cut
    // off by a proxy or a dropped connection): read as an object, its fields were all absent,
    // so a TRX balance came out as 0 and a block list as empty.
    if (typeof data === 'string') {
      throw new TronEndpointError(
        'malformed',
        `${this.label} /${path}: the answer is not JSON: ${data.slice(0, 80)}`,
        { host: this.label, path },
      );
    }
    if (
      typeof data === 'object' &&
      data !== null &&
      typeof (data as { Error?: unknown }).Error === 'string'
    ) {
      const message = (data as { Error: string }).Error;
      const kind = RATE_LIMIT_TEXT.test(message) ? 'rate-limited' : 'node-error';
      const retryAfterMs = suspendedForMs(message);
      throw new TronEndpointError(kind, `${this.label} /${path}: ${message.slice(0, 200)}`, {
        host: this.label,
        path,
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      });
    }
    return data as T;
  }
}

const RATE_LIMIT_TEXT = /frequency limit|allowed_rps|rate|suspended|too many/i;

interface AxiosLikeError {
  isAxiosError?: boolean;
  code?: string;
  message?: string;
  response?: { status?: number; data?: unknown; headers?: Record<string, unknown> };
}

function endpointErrorOf(
  error: unknown,
  where: { host: string; path: string; timedOut: boolean },
): TronEndpointError {
  const axios = error as AxiosLikeError;
  const at = `${where.host} /${where.path}`;
  if (where.timedOut || axios.code === 'ECONNABORTED' || axios.code === 'ETIMEDOUT') {
    return new TronEndpointError('timeout', `${at}: no answer in time`, where, { cause: error });
  }
  const status = axios.response?.status;
  if (status !== undefined) {
    const body = bodyText(axios.response?.data);
    const details = { host: where.host, path: where.path, status };
    if (status === 429 || status === 403) {
      const retryAfterMs =
        retryAfterHeaderMs(axios.response?.headers?.['retry-after']) ?? suspendedForMs(body);
      return new TronEndpointError(
        'rate-limited',
        `${at}: HTTP ${status} (rate limited) ${body}`.trim(),
        { ...details, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) },
        { cause: error },
      );
    }
    return new TronEndpointError('http', `${at}: HTTP ${status} ${body}`.trim(), details, {
      cause: error,
    });
  }
  return new TronEndpointError(
    'network',
    `${at}: ${axios.code ?? ''} ${axios.message ?? String(error)}`.trim(),
    where,
    { cause: error },
  );
}

function bodyText(data: unknown): string {
  const text = typeof data === 'string' ? data : JSON.stringify(data ?? '');
  return text.slice(0, 200);
}

function retryAfterHeaderMs(value: unknown): number | undefined {
  if (typeof value !== 'string' || !/^\d+$/.test(value.trim())) return undefined;
  return Number(value.trim()) * 1_000;
}

/** TronGrid says "... the query server is suspended for 5 s" (or "30s"). */
function suspendedForMs(text: string): number | undefined {
  const match = /suspended for (\d+)\s*s/i.exec(text);
  return match ? Number(match[1]) * 1_000 : undefined;
}

/** Exponential backoff with full jitter: a uniform delay in [base, min(max, base * 2^attempt)]. */
export function backoffMs(
  attempt: number,
  baseMs: number,
  maxMs: number,
  random: () => number,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.round(baseMs + random() * Math.max(0, ceiling - baseMs));
}

/** Scheme, host and port only: enough to tell hosts apart in logs, never a path or a key. */
export function hostLabel(host: string): string {
  try {
    const url = new URL(host);
    return `${url.protocol}//${url.host}`;
  } catch {
    return 'invalid-host';
  }
}
