/**
 * Why one Tron endpoint could not answer. Every kind is an *endpoint* fault: another host,
 * or the same one later, may answer, so the RPC layer demotes the host and fails over.
 * Errors that no other host would answer differently (a contract that reverts, a config
 * mismatch) are other classes and are thrown at once.
 */
export type TronEndpointErrorKind =
  /** No answer within `rpcTimeoutMs`. */
  | 'timeout'
  /** Connection refused or reset, DNS failure... */
  | 'network'
  /** HTTP 429, or 403 (TronGrid's answer when a key exceeds its rate). */
  | 'rate-limited'
  /** Any other HTTP error status. */
  | 'http'
  /** HTTP 200 with java-tron's `{"Error": ...}` body. */
  | 'node-error'
  /** The answer does not have the shape TronGrid documents. */
  | 'malformed'
  /** The host does not serve a block or receipt it should (it lags, or a load balancer hid it). */
  | 'not-served'
  /** The answer contradicts itself or the host's earlier answers (a reorg or a load balancer). */
  | 'inconsistent'
  /** The host's head is far behind other hosts'. */
  | 'lagging';

export class TronEndpointError extends Error {
  override name = 'TronEndpointError';
  constructor(
    readonly kind: TronEndpointErrorKind,
    message: string,
    readonly details: { host?: string; path?: string; status?: number; retryAfterMs?: number } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A contract call the node executed and refused (revert, no such contract): not an endpoint fault. */
export class TronContractCallError extends Error {
  override name = 'TronContractCallError';
  constructor(
    readonly contract: string,
    readonly functionSignature: string,
    readonly reason: string,
  ) {
    super(`${functionSignature} on ${contract} failed: ${reason}`);
  }
}
