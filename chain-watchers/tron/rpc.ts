import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { TronWeb } from 'tronweb';
import { ChainConfigError, RpcUnavailableError } from '../adapter.js';
import { TronEndpointError } from './errors.js';
import { TronHttpProvider, backoffMs, hostLabel } from './provider.js';
import { RateLimiter } from './rateLimiter.js';

/**
 * The hosts of one Tron network (`fullHost`, then `fallbackHosts`), used one at a time with
 * failover, each through its own TronWeb client.
 *
 * `call` runs a unit of work against one host. When it fails with an endpoint fault
 * (`TronEndpointError`: timeout, connection refused, HTTP 5xx, rate limiting that in-place
 * retries did not clear, an `{"Error"}` body, a missing or contradictory answer) that host is
 * demoted for a while and the next one is tried. A round tries every host, healthy ones
 * first; between rounds it backs off exponentially with jitter; after `retries + 1` rounds it
 * throws RpcUnavailableError. A refusal asking for a wait beyond `retryMaxDelayMs` fails over
 * at once when there is another host; the refusing host's limiter holds its next requests for
 * that wait (up to `retryAfterMaxMs`), so neither a retry nor a later round asks it too
 * early. Anything else (a contract revert, a config mismatch) is thrown at once: no other
 * host would answer it differently.
 *
 * A unit of work stays on one host on purpose: TronGrid is load-balanced, and a scan and the
 * block it reports must describe one chain.
 *
 * Lagging hosts answer without error, so heads are compared: `observeHead` records each
 * host's head, `checkHeadsIfDue` asks every live host for its head every
 * `headCheckIntervalMs`, and a host more than `staleHeadLagBlocks` behind the best head seen
 * is demoted.
 */

export interface RpcLogger {
  warn(details: Record<string, unknown>, message: string): void;
}

export interface TronRpcOptions {
  network: string;
  /** `fullHost` first, then the fallbacks. */
  hosts: ReadonlyArray<string>;
  apiKey?: string | undefined;
  timeoutMs: number;
  /** Rounds after the first; each round tries every host once. */
  retries: number;
  logger: RpcLogger;
  /** Requests per second per API key (TronGrid allows about 15), and per keyless host. */
  requestsPerSecond?: number;
  retryBaseDelayMs?: number;
  retryMaxDelayMs?: number;
  /**
   * The longest `Retry-After` (or TronGrid's "suspended for N s") honoured, default 60 s. A
   * wait beyond `retryMaxDelayMs` fails the request over to the next host at once, while the
   * refused host (with every host sharing its API key) waits it out before its next request.
   */
  retryAfterMaxMs?: number;
  /** How long a failing host is passed over at first; doubles per consecutive failure. */
  demoteMs?: number;
  demoteMsMax?: number;
  headCheckIntervalMs?: number;
  staleHeadLagBlocks?: number;
  /** For deterministic tests. */
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export interface TronHost {
  /** Scheme and host only, for logs. */
  readonly label: string;
  readonly tronWeb: TronWeb;
  /** A raw request through this host's TronWeb full-node provider (same limits and errors). */
  request<T>(path: string, payload?: Record<string, unknown>, method?: 'get' | 'post'): Promise<T>;
}

export interface HostStatus {
  label: string;
  sendsApiKey: boolean;
  demotedUntilMs: number;
  consecutiveFailures: number;
  head: bigint | null;
  lastError: string | null;
}

interface Host extends TronHost {
  readonly index: number;
  readonly sendsApiKey: boolean;
  demotedUntilMs: number;
  consecutiveFailures: number;
  head: { number: bigint; observedAtMs: number } | null;
  lastError: string | null;
}

const DEFAULTS = {
  requestsPerSecond: 15,
  retryBaseDelayMs: 250,
  retryMaxDelayMs: 8_000,
  retryAfterMaxMs: 60_000,
  demoteMs: 15_000,
  demoteMsMax: 300_000,
  headCheckIntervalMs: 30_000,
  staleHeadLagBlocks: 20,
};

export class TronRpc {
  readonly network: string;
  private readonly hosts: Host[];
  private readonly settings: typeof DEFAULTS & {
    retries: number;
    logger: RpcLogger;
    random: () => number;
    sleep: (ms: number) => Promise<void>;
  };
  private readonly agents = {
    http: new HttpAgent({ keepAlive: true, maxSockets: 16 }),
    https: new HttpsAgent({ keepAlive: true, maxSockets: 16 }),
  };
  private headsCheckedAtMs = Number.NEGATIVE_INFINITY;
  private headCheck: Promise<void> | null = null;

  constructor(options: TronRpcOptions) {
    if (options.hosts.length === 0) throw new ChainConfigError(`${options.network}: no fullHost`);
    const defined = Object.fromEntries(
      Object.entries(options).filter(([, value]) => value !== undefined),
    ) as Partial<typeof DEFAULTS>;
    this.settings = {
      ...DEFAULTS,
      ...defined,
      retries: options.retries,
      logger: options.logger,
      random: options.random ?? Math.random,
      sleep: options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
    };
    this.network = options.network;
    const primary = safeUrl(options.hosts[0]!, options.network);
    const limiters = new Map<string, RateLimiter>();
    this.hosts = options.hosts.map((host, index) => {
      const url = safeUrl(host, options.network);
      const sendsApiKey = options.apiKey !== undefined && mayReceiveApiKey(url, primary);
      // TronGrid limits per key; a keyless host limits per client address.
      const limiterKey = sendsApiKey ? `key` : `host:${url.host}`;
      let limiter = limiters.get(limiterKey);
      if (!limiter) {
        limiter = new RateLimiter(this.settings.requestsPerSecond, this.settings.sleep);
        limiters.set(limiterKey, limiter);
      }
      const provider = (): TronHttpProvider =>
        new TronHttpProvider(host, {
          timeoutMs: options.timeoutMs,
          headers: sendsApiKey ? { 'TRON-PRO-API-KEY': options.apiKey! } : {},
          limiter: limiter!,
          rateLimitRetries: options.retries,
          retryBaseDelayMs: this.settings.retryBaseDelayMs,
          retryMaxDelayMs: this.settings.retryMaxDelayMs,
          retryAfterMaxMs: this.settings.retryAfterMaxMs,
          hasOtherHosts: options.hosts.length > 1,
          sleep: this.settings.sleep,
          random: this.settings.random,
          agents: this.agents,
        });
      const fullNode = provider();
      // Providers are passed in, not `headers`: TronWeb rebuilds providers with a 30 s
      // timeout when it is given headers.
      const tronWeb = new TronWeb({ fullNode, solidityNode: provider() });
      return {
        index,
        label: hostLabel(host),
        sendsApiKey,
        tronWeb,
        request: <T>(path: string, payload: Record<string, unknown> = {}, method = 'post') =>
          fullNode.request<T>(path, payload, method),
        demotedUntilMs: 0,
        consecutiveFailures: 0,
        head: null,
        lastError: null,
      };
    });
  }

  /**
   * Runs `work` against one host, failing over as described above.
   *
   * @example const block = await rpc.call('getnowblock', (host) => host.tronWeb.trx.getCurrentBlock());
   */
  async call<T>(method: string, work: (host: TronHost) => Promise<T>): Promise<T> {
    let attempts = 0;
    let lastError: unknown = null;
    for (let round = 0; round <= this.settings.retries; round++) {
      if (round > 0) {
        await this.settings.sleep(
          backoffMs(
            round - 1,
            this.settings.retryBaseDelayMs,
            this.settings.retryMaxDelayMs,
            this.settings.random,
          ),
        );
      }
      for (const host of this.rotation()) {
        attempts++;
        try {
          const result = await work(host);
          host.consecutiveFailures = 0;
          host.lastError = null;
          return result;
        } catch (error) {
          if (!(error instanceof TronEndpointError)) throw error;
          lastError = error;
          this.demote(host, error);
        }
      }
    }
    throw new RpcUnavailableError(this.network, method, attempts, lastError);
  }

  /** Records the head a host's answer showed; demotes (and throws for) a host far behind others. */
  observeHead(host: TronHost, blockNumber: bigint): void {
    const entry = this.hosts.find((candidate) => candidate === host);
    if (!entry) return;
    entry.head = { number: blockNumber, observedAtMs: Date.now() };
    const best = this.bestRecentHead();
    if (best !== null && best - blockNumber > BigInt(this.settings.staleHeadLagBlocks)) {
      throw new TronEndpointError(
        'lagging',
        `${entry.label}: head ${blockNumber} is ${best - blockNumber} blocks behind another host's ${best}`,
        { host: entry.label },
      );
    }
  }

  /** Asks every live host for its head when the last check is older than `headCheckIntervalMs`. */
  async checkHeadsIfDue(): Promise<void> {
    if (this.hosts.length < 2) return;
    if (Date.now() - this.headsCheckedAtMs < this.settings.headCheckIntervalMs) return;
    this.headCheck ??= this.checkHeads().finally(() => {
      this.headsCheckedAtMs = Date.now();
      this.headCheck = null;
    });
    await this.headCheck;
  }

  status(): HostStatus[] {
    return this.hosts.map((host) => ({
      label: host.label,
      sendsApiKey: host.sendsApiKey,
      demotedUntilMs: host.demotedUntilMs,
      consecutiveFailures: host.consecutiveFailures,
      head: host.head?.number ?? null,
      lastError: host.lastError,
    }));
  }

  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  private async checkHeads(): Promise<void> {
    const now = Date.now();
    await Promise.all(
      this.hosts
        .filter((host) => host.demotedUntilMs <= now)
        .map(async (host) => {
          try {
            const block = await host.request<{
              block_header?: { raw_data?: { number?: unknown } };
            }>('wallet/getnowblock');
            const number = block.block_header?.raw_data?.number;
            if (typeof number === 'number' && Number.isSafeInteger(number)) {
              host.head = { number: BigInt(number), observedAtMs: Date.now() };
            }
          } catch (error) {
            if (error instanceof TronEndpointError) this.demote(host, error);
          }
        }),
    );
    const best = this.bestRecentHead();
    if (best === null) return;
    for (const host of this.hosts) {
      if (host.head && best - host.head.number > BigInt(this.settings.staleHeadLagBlocks)) {
        this.demote(
          host,
          new TronEndpointError(
            'lagging',
            `${host.label}: head ${host.head.number} is ${best - host.head.number} blocks behind ${best}`,
          ),
        );
      }
    }
  }

  /** The best head any host reported in the last few check intervals. */
  private bestRecentHead(): bigint | null {
    const horizon = Date.now() - 3 * this.settings.headCheckIntervalMs;
    let best: bigint | null = null;
    for (const host of this.hosts) {
      if (
        host.head &&
        host.head.observedAtMs >= horizon &&
        (best === null || host.head.number > best)
      ) {
        best = host.head.number;
      }
    }
    return best;
  }

  /** Healthy hosts in configured order, then demoted ones, soonest back first. */
  private rotation(): Host[] {
    const now = Date.now();
    const healthy = this.hosts.filter((host) => host.demotedUntilMs <= now);
    const demoted = this.hosts
      .filter((host) => host.demotedUntilMs > now)
      .sort((a, b) => a.demotedUntilMs - b.demotedUntilMs || a.index - b.index);
    return [...healthy, ...demoted];
  }

  private demote(host: Host, error: TronEndpointError): void {
    host.consecutiveFailures += 1;
    host.lastError = error.message.split('\n')[0]!.slice(0, 300);
    const demoteMs = Math.min(
      this.settings.demoteMsMax,
      this.settings.demoteMs * 2 ** (host.consecutiveFailures - 1),
    );
    const retryAfterMs = Math.min(error.details.retryAfterMs ?? 0, this.settings.retryAfterMaxMs);
    host.demotedUntilMs = Date.now() + Math.max(demoteMs, retryAfterMs);
    this.settings.logger.warn(
      {
        network: this.network,
        host: host.label,
        kind: error.kind,
        consecutiveFailures: host.consecutiveFailures,
        demotedForMs: host.demotedUntilMs - Date.now(),
      },
      `tron host failed: ${host.lastError}`,
    );
  }
}

function safeUrl(host: string, network: string): URL {
  try {
    const url = new URL(host);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http(s)');
    return url;
  } catch {
    throw new ChainConfigError(`${network}: "${hostLabel(host)}" is not an http(s) URL`);
  }
}

/**
 * The API key goes to the configured `fullHost` and to TronGrid hosts, never to a third-party
 * fallback that would learn it.
 */
function mayReceiveApiKey(url: URL, primary: URL): boolean {
  return (
    url.hostname === primary.hostname ||
    url.hostname === 'trongrid.io' ||
    url.hostname.endsWith('.trongrid.io')
  );
}
