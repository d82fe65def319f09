import {
  BaseError,
  ContractFunctionRevertedError,
  ContractFunctionZeroDataError,
  createPublicClient,
  HttpRequestError,
  http,
  RpcRequestError,
  type PublicClient,
} from 'viem';
import { ChainConfigError, RpcUnavailableError, type EndpointError } from '../adapter.js';

/**
 * The endpoints of one EVM network, used one at a time with failover.
 *
 * Every request has a timeout (viem's HTTP transport, `timeoutMs`). `call` runs a unit of
 * work against one endpoint; when it fails with an endpoint fault (connection refused,
 * timeout, HTTP 429/5xx, a JSON-RPC error) that endpoint is demoted for a while and the next
 * one is tried. A round tries every endpoint, healthy ones first; between rounds it backs off
 * exponentially with jitter; after `retries + 1` rounds it throws RpcUnavailableError.
 *
 * A unit of work stays on one endpoint on purpose: load-balanced nodes disagree, so a scan
 * and the block it reports must come from the same one.
 *
 * Lagging nodes answer without error, so heads are probed: every `headCheckIntervalMs` the
 * pool asks each live endpoint for `eth_blockNumber`, and an endpoint more than
 * `staleHeadLagBlocks` behind the best head another endpoint reported is demoted (a node
 * whose head stops advancing while others move on falls behind the same way). Each endpoint's
 * chain id is checked before its first use; one on the wrong chain is dropped for good.
 */

export interface RpcLogger {
  warn(details: Record<string, unknown>, message: string): void;
}

export interface EvmRpcOptions {
  network: string;
  chainId: number;
  urls: ReadonlyArray<string>;
  timeoutMs: number;
  /** Rounds after the first; each round tries every endpoint once. */
  retries: number;
  logger: RpcLogger;
  /** Requests per JSON-RPC batch (viem HTTP batching). */
  batchSize?: number;
  /** Largest response body accepted; a bound on memory per request. */
  maxResponseBodySizeBytes?: number;
  /** How long a failing endpoint is passed over at first; doubles per consecutive failure. */
  demoteMs?: number;
  demoteMsMax?: number;
  retryBaseDelayMs?: number;
  retryMaxDelayMs?: number;
  headCheckIntervalMs?: number;
  staleHeadLagBlocks?: number;
}

export interface EndpointStatus {
  /** Scheme and host only: paths and queries often hold API keys. */
  label: string;
  dropped: boolean;
  chainIdVerified: boolean;
  demotedUntilMs: number;
  consecutiveFailures: number;
  head: bigint | null;
  lastError: string | null;
}

interface Endpoint {
  readonly index: number;
  readonly label: string;
  readonly client: PublicClient;
  dropped: boolean;
  chainIdVerified: boolean;
  demotedUntilMs: number;
  consecutiveFailures: number;
  head: { number: bigint; observedAtMs: number } | null;
  lastError: string | null;
}

const DEFAULTS = {
  batchSize: 100,
  // viem's default (10 MiB) is less than a batch of busy mainnet blocks with transactions.
  maxResponseBodySizeBytes: 32 * 1024 * 1024,
  demoteMs: 15_000,
  demoteMsMax: 300_000,
  retryBaseDelayMs: 250,
  retryMaxDelayMs: 8_000,
  headCheckIntervalMs: 5_000,
  staleHeadLagBlocks: 20,
};

export class EvmRpc {
  readonly network: string;
  private readonly endpoints: Endpoint[];
  private readonly options: Required<EvmRpcOptions>;
  private headsCheckedAtMs = Number.NEGATIVE_INFINITY;
  private headCheck: Promise<void> | null = null;

  constructor(options: EvmRpcOptions) {
    if (options.urls.length === 0) throw new ChainConfigError(`${options.network}: no rpcUrls`);
    this.options = { ...DEFAULTS, ...options };
    this.network = options.network;
    this.endpoints = options.urls.map((url, index) => ({
      index,
      label: endpointLabel(url, index),
      client: createPublicClient({
        transport: http(url, {
          // One round trip for many block or receipt reads; batchSize 1 turns batching off for
          // providers that refuse JSON-RPC batches.
          batch: this.options.batchSize > 1 ? { batchSize: this.options.batchSize } : false,
          timeout: options.timeoutMs,
          maxResponseBodySize: this.options.maxResponseBodySizeBytes,
          // Retries and failover are ours; viem's own would hide a failing endpoint.
          retryCount: 0,
        }),
        cacheTime: 0,
      }),
      dropped: false,
      chainIdVerified: false,
      demotedUntilMs: 0,
      consecutiveFailures: 0,
      head: null,
      lastError: null,
    }));
  }

  /**
   * Runs `work` against one endpoint, failing over as described above. Errors that no other
   * endpoint would answer differently (a contract revert, a ChainConfigError) are rethrown
   * at once.
   *
   * @example const head = await rpc.call('eth_blockNumber', (client) => client.getBlockNumber());
   */
  async call<T>(method: string, work: (client: PublicClient) => Promise<T>): Promise<T> {
    let attempts = 0;
    let lastError: unknown = null;
    // Each endpoint's last reason: the operator reading the error needs all of them.
    const reasons = new Map<Endpoint, string>();
    // And each one's last error itself, for callers that weigh how each failed.
    const failures = new Map<Endpoint, unknown>();
    for (let round = 0; round <= this.options.retries; round++) {
      if (round > 0) await sleep(this.backoffMs(round));
      await this.checkHeadsIfDue();
      for (const endpoint of this.rotation()) {
        attempts++;
        try {
          await this.ensureChainId(endpoint);
          const result = await work(endpoint.client);
          // An endpoint that answers is healthy again, even one tried while demoted.
          endpoint.consecutiveFailures = 0;
          endpoint.demotedUntilMs = 0;
          endpoint.lastError = null;
          return result;
        } catch (error) {
          lastError = error;
          reasons.set(endpoint, errorSummary(error));
          // A wrong-chain endpoint is already dropped: nothing to demote.
          if (error instanceof WrongChainError) continue;
          if (!isEndpointFault(error)) throw error;
          failures.set(endpoint, error);
          this.demote(endpoint, error);
        }
      }
    }
    if (this.endpoints.every((endpoint) => endpoint.dropped)) throw this.allDroppedError();
    throw new RpcUnavailableError(
      this.network,
      method,
      attempts,
      lastError,
      endpointErrors(this.endpoints, (endpoint) => reasons.get(endpoint)),
      this.endpoints.flatMap((endpoint) =>
        failures.has(endpoint) && !endpoint.dropped ? [failures.get(endpoint)] : [],
      ),
    );
  }

  /**
   * Checks the chain id of every endpoint now. Wrong ones are dropped (with a warning);
   * unreachable ones stay and are checked again before their first use.
   * Throws ChainConfigError when every endpoint serves another chain, RpcUnavailableError
   * when none could be asked.
   */
  async verifyChainIds(): Promise<void> {
    const outcomes = await Promise.allSettled(
      this.endpoints.map(async (endpoint) => {
        try {
          await this.ensureChainId(endpoint);
        } catch (error) {
          if (!(error instanceof WrongChainError)) this.demote(endpoint, error);
          throw error;
        }
      }),
    );
    const live = this.endpoints.filter((endpoint) => !endpoint.dropped);
    if (live.length === 0) throw this.allDroppedError();
    if (!live.some((endpoint) => endpoint.chainIdVerified)) {
      const failure = outcomes.find((outcome) => outcome.status === 'rejected');
      throw new RpcUnavailableError(
        this.network,
        'eth_chainId',
        this.endpoints.length,
        failure?.reason,
        endpointErrors(this.endpoints, (endpoint) => {
          const outcome = outcomes[endpoint.index];
          return outcome?.status === 'rejected' ? errorSummary(outcome.reason) : undefined;
        }),
      );
    }
  }

  /** Tells the pool the head an endpoint's answer showed (any `latest` block read). */
  observeHead(client: PublicClient, blockNumber: bigint): void {
    const endpoint = this.endpoints.find((candidate) => candidate.client === client);
    if (endpoint) endpoint.head = { number: blockNumber, observedAtMs: Date.now() };
  }

  status(): EndpointStatus[] {
    return this.endpoints.map((endpoint) => ({
      label: endpoint.label,
      dropped: endpoint.dropped,
      chainIdVerified: endpoint.chainIdVerified,
      demotedUntilMs: endpoint.demotedUntilMs,
      consecutiveFailures: endpoint.consecutiveFailures,
      head: endpoint.head?.number ?? null,
      lastError: endpoint.lastError,
    }));
  }

  /** Live endpoints: healthy ones in configured order, then demoted ones, soonest back first. */
  private rotation(): Endpoint[] {
    const now = Date.now();
    const live = this.endpoints.filter((endpoint) => !endpoint.dropped);
    if (live.length === 0) throw this.allDroppedError();
    const healthy = live.filter((endpoint) => endpoint.demotedUntilMs <= now);
    const demoted = live
      .filter((endpoint) => endpoint.demotedUntilMs > now)
      .sort((a, b) => a.demotedUntilMs - b.demotedUntilMs);
    return [...healthy, ...demoted];
  }

  private async ensureChainId(endpoint: Endpoint): Promise<void> {
    if (endpoint.chainIdVerified || endpoint.dropped) return;
    const chainId = await endpoint.client.getChainId();
    if (chainId !== this.options.chainId) {
      endpoint.dropped = true;
      endpoint.lastError = `serves chain id ${chainId}`;
      this.options.logger.warn(
        {
          network: this.network,
          endpoint: endpoint.label,
          chainId,
          expected: this.options.chainId,
        },
        'RPC endpoint serves another chain; dropped from rotation',
      );
      throw new WrongChainError(this.network, endpoint.label, chainId, this.options.chainId);
    }
    endpoint.chainIdVerified = true;
  }

  private async checkHeadsIfDue(): Promise<void> {
    const live = this.endpoints.filter((endpoint) => !endpoint.dropped);
    // One endpoint has nothing to be compared with.
    if (live.length < 2) return;
    if (Date.now() - this.headsCheckedAtMs < this.options.headCheckIntervalMs) return;
    this.headCheck ??= this.checkHeads(live).finally(() => {
      this.headsCheckedAtMs = Date.now();
      this.headCheck = null;
    });
    await this.headCheck;
  }

  private async checkHeads(live: Endpoint[]): Promise<void> {
    const now = Date.now();
    const probed = live.filter((endpoint) => endpoint.demotedUntilMs <= now);
    await Promise.allSettled(
      probed.map(async (endpoint) => {
        try {
          await this.ensureChainId(endpoint);
          const head = await endpoint.client.getBlockNumber({ cacheTime: 0 });
          endpoint.head = { number: head, observedAtMs: Date.now() };
        } catch (error) {
          if (!(error instanceof WrongChainError)) this.demote(endpoint, error);
        }
      }),
    );
    // Only recent observations count: after a reorg to a shorter chain an old, higher head
    // would make every honest endpoint look stale.
    const recentMs = this.options.headCheckIntervalMs * 3;
    const recent = live.filter(
      (endpoint) => endpoint.head && Date.now() - endpoint.head.observedAtMs <= recentMs,
    );
    let best: bigint | null = null;
    for (const endpoint of recent) {
      if (best === null || endpoint.head!.number > best) best = endpoint.head!.number;
    }
    if (best === null) return;
    for (const endpoint of probed) {
      if (!endpoint.head || !recent.includes(endpoint)) continue;
      const lagBlocks = best - endpoint.head.number;
      if (lagBlocks > BigInt(this.options.staleHeadLagBlocks)) {
        this.demote(
          endpoint,
          new Error(`stale head ${endpoint.head.number}, ${lagBlocks} blocks behind ${best}`),
        );
      }
    }
  }

  private demote(endpoint: Endpoint, error: unknown): void {
    endpoint.consecutiveFailures++;
    const durationMs = Math.min(
      this.options.demoteMs * 2 ** (endpoint.consecutiveFailures - 1),
      this.options.demoteMsMax,
    );
    endpoint.demotedUntilMs = Date.now() + durationMs;
    endpoint.lastError = errorSummary(error);
    this.options.logger.warn(
      {
        network: this.network,
        endpoint: endpoint.label,
        error: endpoint.lastError,
        demotedForMs: durationMs,
      },
      'RPC endpoint failed; passing it over',
    );
  }

  private backoffMs(round: number): number {
    const ceiling = Math.min(
      this.options.retryBaseDelayMs * 2 ** (round - 1),
      this.options.retryMaxDelayMs,
    );
    // Jitter keeps watchers of several networks from retrying in step.
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  private allDroppedError(): ChainConfigError {
    return new ChainConfigError(
      `${this.network}: no RPC endpoint serves chain id ${this.options.chainId} (${this.endpoints
        .map((endpoint) => `${endpoint.label}: ${endpoint.lastError ?? 'dropped'}`)
        .join('; ')})`,
    );
  }
}

class WrongChainError extends ChainConfigError {
  override name = 'WrongChainError';
  constructor(network: string, label: string, chainId: number, expected: number) {
    super(`${network}: RPC endpoint ${label} serves chain id ${chainId}, expected ${expected}`);
  }
}

/**
 * Whether another endpoint (or a later try) could answer differently. Contract reverts and
 * configuration errors are answers, not faults; everything else (transport errors, HTTP
 * statuses, JSON-RPC errors, inconsistent answers) is blamed on the endpoint.
 */
export function isEndpointFault(error: unknown): boolean {
  if (error instanceof WrongChainError) return true;
  if (error instanceof ChainConfigError) return false;
  return !isContractAnswer(error);
}

/** JSON-RPC "internal error": viem reads it as a revert in a contract call. */
const INTERNAL_ERROR_CODE = -32603;

/**
 * Whether a failed contract call is the contract's answer at that block: it reverted, or
 * returned nothing. A JSON-RPC "internal error" (-32603) is the node's failure, which viem
 * reports as a revert all the same; it is one only when the node says so (Hardhat answers
 * reverts with -32603 "... reverted ...").
 */
export function isContractAnswer(error: unknown): boolean {
  if (!(error instanceof BaseError)) return false;
  if (error.walk((cause) => cause instanceof ContractFunctionZeroDataError)) return true;
  if (!error.walk((cause) => cause instanceof ContractFunctionRevertedError)) return false;
  const rpc = error.walk((cause) => cause instanceof RpcRequestError);
  return !(
    rpc instanceof RpcRequestError &&
    rpc.code === INTERNAL_ERROR_CODE &&
    !/revert/i.test(rpc.details)
  );
}

/** The reason of each endpoint that has one, in configured order, named by its label. */
function endpointErrors(
  endpoints: ReadonlyArray<Endpoint>,
  reasonOf: (endpoint: Endpoint) => string | undefined,
): EndpointError[] {
  return endpoints.flatMap((endpoint) => {
    const error = reasonOf(endpoint);
    return error === undefined ? [] : [{ endpoint: endpoint.label, error }];
  });
}

function errorSummary(error: unknown): string {
  if (error instanceof BaseError) {
    const failed = error.walk((cause) => cause instanceof HttpRequestError);
    // "HTTP request failed" alone does not say why: the status, or what the connection met.
    if (failed instanceof HttpRequestError) {
      const shortMessage = error.shortMessage.replace(/\.$/, '');
      if (failed.status !== undefined) return `${shortMessage}: HTTP ${failed.status}`;
      const reasons = causeMessages(failed.cause);
      return reasons.length > 0 ? `${shortMessage}: ${reasons.join(': ')}` : error.shortMessage;
    }
    return error.shortMessage;
  }
  if (error instanceof Error) return error.message.split('\n')[0]!;
  return String(error);
}

/**
 * The first lines of a transport error's causes ("fetch failed", "connect ECONNREFUSED ..."),
 * bounded; one holding a URL is left out, as its path or query may hold an API key.
 */
function causeMessages(cause: unknown): string[] {
  const messages: string[] = [];
  for (let depth = 0; depth < 4 && cause instanceof Error; depth++) {
    const line = cause.message.split('\n')[0]!.trim();
    if (line && !line.includes('://')) messages.push(line);
    cause = cause.cause;
  }
  return messages;
}

function endpointLabel(url: string, index: number): string {
  try {
    const parsed = new URL(url);
    return `#${index} ${parsed.protocol}//${parsed.host}`;
  } catch {
    return `#${index}`;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
