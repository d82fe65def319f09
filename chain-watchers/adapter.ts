/**
 * The one interface every chain family implements (EVM via viem, Tron via tronweb). The
 * deposit pipeline (scan, confirm, credit, reorg) is written once against it.
 *
 * Conventions:
 * - Block numbers, amounts in base units and timestamps are `bigint`.
 * - Addresses and hashes are in the adapter's canonical form, produced by
 *   `normalizeAddress` / returned by `scan`: EVM lower-case `0x...` hex; Tron base58 `T...`
 *   addresses and lower-case 64-hex transaction ids and block ids without `0x`.
 * - Every RPC call has a timeout, retries with backoff and fails over across the network's
 *   endpoints; a method that still cannot answer throws (an `RpcUnavailableError`), it never
 *   returns a partial or empty answer in place of an error.
 */

export interface BlockRef {
  number: bigint;
  hash: string;
  parentHash: string;
  /** Seconds since the epoch. */
  timestamp: bigint;
}

export interface ChainHead {
  /** The newest block the endpoint serves. */
  latest: BlockRef;
  /**
   * The newest block the network treats as final: EVM `finalized` block tag, Tron's
   * latest solidified block. Null where the node has no such notion.
   */
  finalized: bigint | null;
}

/** An asset the network's config accepts. */
export interface TrackedAsset {
  symbol: string;
  /** Ledger currency code (the symbol unless the config says otherwise). */
  currency: string;
  native: boolean;
  /** Canonical contract address; null for the native coin. */
  contract: string | null;
  decimals: number;
}

export interface ObservedTransfer {
  txHash: string;
  /**
   * Identity of the transfer within its transaction's block: the EVM log index, or for
   * Tron the index of the Transfer log within the transaction's receipt. -1 for a native
   * coin transfer (the transaction's own value); on Tron, -2 - position for TRX a contract
   * paid (the internal transaction at that position of the receipt's `internal_transactions`).
   */
  logIndex: number;
  blockNumber: bigint;
  blockHash: string;
  blockTimestamp: bigint;
  /** Contract that emitted the transfer (canonical form); null for the native coin. */
  contract: string | null;
  /** The accepted asset it is, or null for a token we do not accept (recorded as ignored). */
  asset: TrackedAsset | null;
  from: string;
  to: string;
  amountBaseUnits: bigint;
  /** False when the transaction failed (EVM receipt status reverted; Tron receipt not SUCCESS). */
  success: boolean;
  /**
   * Network fee the sender paid for the whole transaction, in the native coin's base units
   * (EVM gasUsed x effectiveGasPrice; Tron receipt fee in sun). Set for transfers whose
   * `from` is one of the watched addresses (outgoing sweeps), else null.
   */
  feeBaseUnits: bigint | null;
}

export interface ScanParameters {
  fromBlock: bigint;
  toBlock: bigint;
  /** Canonical addresses to watch: transfers to or from any of them are returned. */
  addresses: ReadonlySet<string>;
  /**
   * The hash the caller holds for block `fromBlock - 1` (its cursor), when it has one. An
   * adapter that reads the range's blocks refuses a range that does not continue it (an
   * endpoint on another fork), as an endpoint fault: another endpoint is tried, and if the
   * chain really changed under the cursor, the caller's next reorg check finds it.
   */
  parentHash?: string;
}

export interface ScanResult {
  /** Transfers in [fromBlock, toBlock] to or from a watched address, any contract, in chain order. */
  transfers: ObservedTransfer[];
  /** The block at `toBlock` as the endpoint that answered the scan saw it. */
  toBlockRef: BlockRef;
  /**
   * The newest block of the endpoint that answered the scan, read with `toBlockRef`: the
   * chain the transfers are on is known to be this long. The head the caller read may come
   * from another endpoint, on another fork; confirmations are counted against the lower of
   * the two. Absent where the adapter does not say (the caller's head counts).
   */
  endpointHead?: bigint;
  /**
   * The finalized block (Tron: latest solidified) of the endpoint that answered the scan, read
   * with `endpointHead`: with `finalized`/`solidified` confirmations, what is final on the
   * chain the transfers are on. The caller's `finalized` may come from another endpoint, on
   * another fork; the lower of the two counts. Absent where the adapter does not say.
   */
  endpointFinalized?: bigint;
}

export interface BalanceAt {
  amountBaseUnits: bigint;
  /**
   * The block the balance is as of: the one asked for on EVM; Tron answers only at its latest
   * solidified block (the solidity node's state), and this says which.
   */
  blockNumber: bigint;
}

export interface ChainAdapter {
  readonly network: string;
  readonly kind: 'evm' | 'tron';
  readonly assets: ReadonlyArray<TrackedAsset>;
  /**
   * Checks the endpoints serve the configured chain (EVM chain id) and every token's
   * `decimals()` equals the config; throws a clear error naming the asset otherwise.
   */
  verify(): Promise<void>;
  getHead(): Promise<ChainHead>;
  /** The canonical block at a height, or null when the chain is not that high. */
  getBlock(number: bigint): Promise<BlockRef | null>;
  scan(params: ScanParameters): Promise<ScanResult>;
  /** Balance of one address in one accepted asset, at `blockNumber` where the chain can answer that. */
  getBalance(address: string, asset: TrackedAsset, blockNumber: bigint | null): Promise<BalanceAt>;
  /** Canonical form of an address; throws on an address that is not one of this chain's. */
  normalizeAddress(address: string): string;
  close(): Promise<void>;
}

/** Why one endpoint failed, the last time it was tried. */
export interface EndpointError {
  /** Scheme and host only (paths and queries often hold API keys). */
  endpoint: string;
  error: string;
}

/**
 * Every endpoint failed (after retries and failover). The caller retries later, never skips.
 * The message names each endpoint's last reason when the adapter gives them (they often differ:
 * one refuses the connection, another rate-limits), else the last error's.
 */
export class RpcUnavailableError extends Error {
  override name = 'RpcUnavailableError';
  /**
   * Each endpoint's last error as thrown, in configured order (endpoints dropped for serving
   * another chain left out), for a caller that weighs how each failed; `cause` is only the
   * last one tried. Not enumerable: a logged error does not carry them (a transport error
   * holds the endpoint's URL).
   */
  declare readonly endpointFailures: ReadonlyArray<unknown>;

  constructor(
    readonly network: string,
    readonly method: string,
    readonly attempts: number,
    cause: unknown,
    readonly endpointErrors: ReadonlyArray<EndpointError> = [],
    endpointFailures: ReadonlyArray<unknown> = [],
  ) {
    const reasons =
      endpointErrors.length > 0
        ? endpointErrors.map(({ endpoint, error }) => `${endpoint}: ${error}`).join('; ')
        : errorText(cause);
    super(`${network}: ${method} failed on every endpoint after ${attempts} attempts: ${reasons}`, {
      cause,
    });
    Object.defineProperty(this, 'endpointFailures', { value: endpointFailures, enumerable: false });
  }
}

/** The node disagrees with the config (wrong chain, wrong decimals); the watcher refuses to run. */
export class ChainConfigError extends Error {
  override name = 'ChainConfigError';
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message.split('\n')[0]! : String(error);
}
