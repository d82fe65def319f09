import {
  BaseError,
  HttpRequestError,
  LimitExceededRpcError,
  ResponseBodyTooLargeError,
  RpcRequestError,
  TimeoutError,
  hexToBigInt,
  hexToNumber,
  toHex,
  type Hex,
  type PublicClient,
  type RpcLog,
  type RpcTransactionReceipt,
} from 'viem';
import type {
  BlockRef,
  ObservedTransfer,
  ScanParameters,
  ScanResult,
  TrackedAsset,
} from '../adapter.js';
import {
  blockRefOf,
  getBlockRef,
  getBlockWithTransactions,
  isNodeRefusal,
  mapInChunks,
  type RpcBlockWithTransactions,
} from './blocks.js';
import { compareBig, minBig } from '../bigints.js';

/** keccak256("Transfer(address,address,uint256)"): ERC-20 and ERC-721 share it. */
export const TRANSFER_TOPIC = '0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef';

export interface ScanTransfersParameters extends ScanParameters {
  assets: ReadonlyArray<TrackedAsset>;
  /** Watched addresses per `eth_getLogs` topic filter. */
  addressChunkSize: number;
  /** Blocks or receipts fetched per JSON-RPC batch. */
  batchSize: number;
  /** `eth_getLogs` filters in flight at once. */
  logQueryConcurrency: number;
  logPlanner: TransferLogPlanner;
  /**
   * Read the endpoint's `finalized` block too, reported as `endpointFinalized` (the network
   * credits at `finalized`); left out otherwise, to spare the request.
   */
  readFinalized: boolean;
}

/**
 * How Transfer logs are asked for:
 * - `topics`: filters on the watched addresses (topic2 = to, then topic1 = from), 2 queries
 *   per `addressChunkSize` addresses. The node does the matching.
 * - `all-transfers`: every Transfer log of the range (topic0 only), matched here. One query
 *   (split while the provider refuses the range); cheap on quiet chains, heavy on busy ones.
 * - `auto` (default): topic filters for up to one chunk of addresses; beyond that, try the
 *   whole range unfiltered once, and if the provider refuses it or it holds more than
 *   `maxAllTransfersLogs`, use topic filters for the next `topicsOnlyScansAfterDense` scans.
 *   Nodes that match topics by scanning every log (ganache does) are far faster this way.
 */
export type TransferLogQueryMode = 'auto' | 'topics' | 'all-transfers';

/** Remembers, per network, whether asking for every Transfer log of a range is cheap. */
export class TransferLogPlanner {
  private topicsOnlyScansLeft = 0;

  constructor(
    readonly mode: TransferLogQueryMode,
    private readonly maxAllTransfersLogs = 10_000,
    private readonly topicsOnlyScansAfterDense = 100,
  ) {}

  shouldTryAllTransfers(manyAddresses: boolean): boolean {
    if (this.mode !== 'auto' || !manyAddresses) return false;
    if (this.topicsOnlyScansLeft > 0) {
      this.topicsOnlyScansLeft--;
      return false;
    }
    return true;
  }

  /** The count of logs an unfiltered query returned, or null when the provider refused it. */
  recordAllTransfers(logCount: number | null): void {
    if (logCount === null || logCount > this.maxAllTransfersLogs) {
      this.topicsOnlyScansLeft = this.topicsOnlyScansAfterDense;
    }
  }
}

/** The endpoint changed its answer in the middle of a scan (a reorg, or a load balancer). */
export class InconsistentScanError extends Error {
  override name = 'InconsistentScanError';
}

/** The endpoint does not serve a block the scan needs (it lags). */
export class BlockNotServedError extends Error {
  override name = 'BlockNotServedError';
}

interface Candidate {
  transfer: ObservedTransfer;
  transactionIndex: number;
  /**
   * The block's header is still to be read: its hash must be the log's (the logs and the
   * blocks of one endpoint can come from two forks), and it has the timestamp.
   */
  needsBlock: boolean;
  /** The transaction's receipt is needed (native status, or the fee of an outgoing transfer). */
  needsReceipt: boolean;
  /** Kept only if the receipt says the transaction failed (see `failedCallCandidate`). */
  onlyIfFailed?: boolean;
}

/**
 * All transfers in [fromBlock, toBlock] to or from a watched address, on one endpoint: ERC-20
 * `Transfer` logs of any contract (see TransferLogQueryMode for how they are asked for), and when
 * a native asset is configured, the value of every transaction in the range. The block at
 * `toBlock` is read before and checked after, from the same endpoint, so the transfers and
 * `toBlockRef` describe one chain; every `eth_getLogs` goes in one JSON-RPC batch with that
 * block's header, which must be `toBlockRef` (behind a load balancer, the node that answers the
 * logs has the whole range: see `getLogsAnchored`). With `parentHash` (the caller's cursor), the
 * first block of the range must have it as its parent, else the range is refused
 * (InconsistentScanError, an endpoint fault: the next endpoint is tried). The caller checks the
 * range and the addresses first (`assertScanParameters`): anything thrown in here is blamed on the
 * endpoint.
 *
 * @example await scanTransfers(client, { fromBlock: 100n, toBlock: 199n, addresses, assets, ... })
 */
export async function scanTransfers(
  client: PublicClient,
  params: ScanTransfersParameters,
): Promise<ScanResult> {
  const { fromBlock, toBlock } = params;
  // The first block is read with the last (one batch) when the scan must continue a cursor,
  // and the endpoint's head with them: how long the chain of the transfers is; with
  // `readFinalized`, its finalized block too: what is final on that chain.
  const [toBlockRef, firstRef, endpointHead, finalized] = await Promise.all([
    getBlockRef(client, toBlock),
    params.parentHash === undefined || fromBlock === toBlock
      ? null
      : getBlockRef(client, fromBlock),
    client.request({ method: 'eth_blockNumber' }).then(hexToBigInt),
    params.readFinalized ? getFinalizedNumber(client) : undefined,
  ]);
  // No higher than the head read with it (two nodes behind one load balancer).
  const final =
    finalized === undefined ? {} : { endpointFinalized: minBig(finalized, endpointHead) };
  if (!toBlockRef)
    throw new BlockNotServedError(`the endpoint does not serve block ${toBlock} yet`);
  if (params.parentHash !== undefined) {
    const first = fromBlock === toBlock ? toBlockRef : firstRef;
    if (!first) throw new BlockNotServedError(`the endpoint does not serve block ${fromBlock}`);
    assertContinues(first, params.parentHash);
  }

  const watched = [...params.addresses].sort();
  if (watched.length === 0) return { transfers: [], toBlockRef, endpointHead, ...final };
  const watchedSet = new Set(watched);
  const assetsByContract = new Map(
    params.assets.flatMap((asset) => (asset.contract ? [[asset.contract, asset] as const] : [])),
  );
  const nativeAsset = params.assets.find((asset) => asset.native) ?? null;

  const logs = await getTransferLogs(client, params, watched, toBlockRef);
  const candidates = new Map<string, Candidate>();
  for (const log of logs) {
    const candidate = candidateFromLog(log, watchedSet, assetsByContract);
    if (!candidate) continue;
    const { blockNumber } = candidate.transfer;
    if (blockNumber < fromBlock || blockNumber > toBlock) {
      throw new InconsistentScanError(
        `asked for logs of [${fromBlock}, ${toBlock}], got block ${blockNumber}`,
      );
    }
    candidates.set(`${candidate.transfer.txHash}:${log.logIndex}`, candidate);
  }

  // The headers read already: a log in one of them is checked against it without reading it again.
  const blocks = new Map<bigint, BlockRef>(
    [toBlockRef, firstRef].flatMap((ref) => (ref ? [[ref.number, ref] as const] : [])),
  );
  if (nativeAsset) {
    const bodies = await getBlockRange(client, fromBlock, toBlock, params.batchSize);
    assertChainOfBlocks(bodies, toBlockRef);
    // Linked to `toBlockRef` by the chain of bodies: the range as a whole continues the cursor.
    if (params.parentHash !== undefined) assertContinues(blockRefOf(bodies[0]!), params.parentHash);
    for (const body of bodies) {
      const ref = blockRefOf(body);
      blocks.set(ref.number, ref);
      for (const candidate of nativeCandidates(
        body,
        ref,
        nativeAsset,
        watchedSet,
        assetsByContract,
      )) {
        candidates.set(`${candidate.transfer.txHash}:-1`, candidate);
      }
    }
  }

  // Without the chain of bodies, each header is read with `toBlock` in one batch (one request,
  // which a load balancer sends to one node): a header of the logs' fork on a node whose
  // `toBlock` is still `toBlockRef` is of the chain the cursor moves onto.
  await fillBlocks(
    client,
    [...candidates.values()],
    blocks,
    params.batchSize,
    nativeAsset ? null : toBlockRef,
  );
  await fillReceipts(client, [...candidates.values()], watchedSet, params.batchSize);
  for (const [key, candidate] of candidates)
    if (candidate.onlyIfFailed && candidate.transfer.success) candidates.delete(key);

  if (!nativeAsset) {
    // Without the full chain of bodies, re-read the last block: unchanged means no reorg
    // reached the range while it was being read.
    const after = await getBlockRef(client, toBlock);
    if (after?.hash !== toBlockRef.hash) {
      throw new InconsistentScanError(`block ${toBlock} changed during the scan`);
    }
  }

  const transfers = [...candidates.values()]
    .sort(
      (a, b) =>
        compareBig(a.transfer.blockNumber, b.transfer.blockNumber) ||
        a.transactionIndex - b.transactionIndex ||
        a.transfer.logIndex - b.transfer.logIndex,
    )
    .map((candidate) => candidate.transfer);
  return { transfers, toBlockRef, endpointHead, ...final };
}

/** A scan's range is ordered and its addresses canonical; a caller's mistake, never retried. */
export function assertScanParameters(params: ScanParameters): void {
  if (params.fromBlock < 0n || params.toBlock < params.fromBlock) {
    throw new RangeError(
      `scan range [${params.fromBlock}, ${params.toBlock}] is empty or negative`,
    );
  }
  for (const address of params.addresses) {
    if (!/^0x[0-9a-f]{40}$/.test(address)) {
      throw new TypeError(`watched address "${address}" is not canonical (use normalizeAddress)`);
    }
  }
}

/**
 * The endpoint's `finalized` block number. A node that refuses the tag (chains without
 * finality, old clients) or has no finalized block yet has nothing final: -1, as the watcher
 * reads a head without a finalized block (see `getHead`), so a transfer it saw is not credited
 * on another endpoint's word.
 */
async function getFinalizedNumber(client: PublicClient): Promise<bigint> {
  try {
    return (await getBlockRef(client, 'finalized'))?.number ?? -1n;
  } catch (error) {
    if (!isNodeRefusal(error)) throw error;
    return -1n;
  }
}

/** One `eth_getLogs` filter over a block range. */
interface LogQuery {
  topics: Array<Hex | Hex[] | null>;
  fromBlock: bigint;
  toBlock: bigint;
}

async function getTransferLogs(
  client: PublicClient,
  params: ScanTransfersParameters,
  watched: string[],
  toBlockRef: BlockRef,
): Promise<RpcLog[]> {
  const { fromBlock, toBlock, logPlanner } = params;
  const query = (queries: LogQuery[], split: boolean) =>
    getLogsAnchored(client, queries, {
      anchor: params.batchSize > 1 ? toBlockRef : null,
      perRequest:
        params.batchSize > 1
          ? Math.max(1, Math.min(params.logQueryConcurrency, params.batchSize - 1))
          : params.logQueryConcurrency,
      split,
    });
  if (logPlanner.mode === 'all-transfers') {
    return query([{ topics: [TRANSFER_TOPIC], fromBlock, toBlock }], true);
  }
  if (logPlanner.shouldTryAllTransfers(watched.length > params.addressChunkSize)) {
    try {
      const logs = await query([{ topics: [TRANSFER_TOPIC], fromBlock, toBlock }], false);
      logPlanner.recordAllTransfers(logs.length);
      return logs;
    } catch (error) {
      if (!isRangeRefusal(error)) throw error;
      logPlanner.recordAllTransfers(null);
    }
  }
  const queries: LogQuery[] = [];
  for (let start = 0; start < watched.length; start += params.addressChunkSize) {
    const topics = watched.slice(start, start + params.addressChunkSize).map(addressTopic);
    queries.push({ topics: [TRANSFER_TOPIC, null, topics], fromBlock, toBlock }); // to a watched address
    queries.push({ topics: [TRANSFER_TOPIC, topics], fromBlock, toBlock }); // from a watched address
  }
  return query(queries, true);
}

/**
 * `eth_getLogs` for each query, `perRequest` at a time. With `anchor` (the scan's last block,
 * batching on), each group is one JSON-RPC batch with that block's header, which must be
 * `anchor`: one request, so behind a load balancer one node answers the logs and the header,
 * and that node has the whole range on the chain the cursor moves onto. A node that lags
 * answers a range past its head with the logs up to its head, or none (ganache, older geth,
 * Erigon and Besu did; current clients refuse it), which no log gives away: without the
 * anchor its transfers in the blocks it lacks were never seen, and the cursor moved past them.
 * With `split`, a query the provider refuses as too large is halved (or cut where the
 * provider suggests) and its halves asked again, each in a batch with the anchor too.
 * Without batching (`batchSize` 1) there is no anchor: a header read in a request of its own
 * may come from another node and proves nothing of the logs' node, so none is read, and a
 * node that lags behind a load balancer can still answer a short range unnoticed.
 */
async function getLogsAnchored(
  client: PublicClient,
  queries: LogQuery[],
  options: { anchor: BlockRef | null; perRequest: number; split: boolean },
): Promise<RpcLog[]> {
  const { anchor } = options;
  const pending = [...queries];
  const logs: RpcLog[] = [];
  while (pending.length > 0) {
    const group = pending.splice(0, options.perRequest);
    // Both in the same tick: viem's HTTP batching sends them as one batch, the anchor first.
    const [answered, ...settled] = await Promise.allSettled([
      anchor ? getBlockRef(client, anchor.number) : Promise.resolve(null),
      ...group.map(({ topics, fromBlock, toBlock }) =>
        client.request({
          method: 'eth_getLogs',
          params: [{ fromBlock: toHex(fromBlock), toBlock: toHex(toBlock), topics }],
        }),
      ),
    ]);
    if (answered.status === 'rejected') throw answered.reason;
    if (anchor) {
      if (!answered.value) {
        throw new BlockNotServedError(
          `the endpoint that answered eth_getLogs does not serve block ${anchor.number} yet (it lags)`,
        );
      }
      if (answered.value.hash !== anchor.hash) {
        throw new InconsistentScanError(
          `block ${anchor.number} changed during the scan (the endpoint that answered eth_getLogs has ${answered.value.hash}, not ${anchor.hash})`,
        );
      }
    }
    for (const [index, outcome] of settled.entries()) {
      if (outcome.status === 'fulfilled') {
        logs.push(...outcome.value);
        continue;
      }
      const { topics, fromBlock, toBlock } = group[index]!;
      const error: unknown = outcome.reason;
      if (!options.split || fromBlock === toBlock || !isRangeRefusal(error)) throw error;
      const suggested = suggestedRangeEnd(error);
      const middle =
        suggested !== null && suggested >= fromBlock && suggested < toBlock
          ? suggested
          : fromBlock + (toBlock - fromBlock) / 2n;
      pending.push(
        { topics, fromBlock, toBlock: middle },
        { topics, fromBlock: middle + 1n, toBlock },
      );
    }
  }
  return logs;
}

const RANGE_REFUSAL =
  /range|too many|more than|limit|exceed|too large|too wide|response size|results/i;

/** A provider's "ask for fewer blocks" answer (-32005 and its many spellings), not a fault. */
export function isRangeRefusal(error: unknown): boolean {
  if (!(error instanceof BaseError)) return false;
  if (error.walk((cause) => cause instanceof TimeoutError)) return false;
  if (error.walk((cause) => cause instanceof LimitExceededRpcError)) return true;
  if (error.walk((cause) => cause instanceof ResponseBodyTooLargeError)) return true;
  const http = error.walk((cause) => cause instanceof HttpRequestError);
  if (http instanceof HttpRequestError) return http.status === 413;
  const rpc = error.walk((cause) => cause instanceof RpcRequestError);
  if (!(rpc instanceof RpcRequestError)) return false;
  if (rpc.code === 429 || rpc.code === -32007) return false; // rate limits: fail over instead
  return RANGE_REFUSAL.test(rpc.details);
}

/** Infura, Alchemy and others name a range that would work: "[0x1, 0x2]" or data {from, to}. */
function suggestedRangeEnd(error: unknown): bigint | null {
  if (!(error instanceof BaseError)) return null;
  const rpc = error.walk((cause) => cause instanceof RpcRequestError);
  if (!(rpc instanceof RpcRequestError)) return null;
  const data = rpc.data as { to?: unknown } | undefined;
  if (data && typeof data.to === 'string' && /^0x[0-9a-f]+$/i.test(data.to)) {
    return hexToBigInt(data.to as Hex);
  }
  const match = /\[\s*(0x[0-9a-f]+)\s*,\s*(0x[0-9a-f]+)\s*\]/i.exec(rpc.details);
  return match ? hexToBigInt(match[2] as Hex) : null;
}

function candidateFromLog(
  log: RpcLog,
  watched: ReadonlySet<string>,
  assetsByContract: ReadonlyMap<string, TrackedAsset>,
): Candidate | null {
  // ERC-721 Transfer has the same signature with the token id as a third topic: not money.
  if (log.removed || log.topics.length !== 3 || log.topics[0] !== TRANSFER_TOPIC) return null;
  if (!/^0x[0-9a-fA-F]{64}$/.test(log.data)) return null;
  if (log.blockNumber === null || log.blockHash === null || log.transactionHash === null) {
    return null; // pending
  }
  if (log.logIndex === null || log.transactionIndex === null) return null;
  const from = topicAddress(log.topics[1]!);
  const to = topicAddress(log.topics[2]!);
  if (!watched.has(from) && !watched.has(to)) return null;
  const contract = log.address.toLowerCase();
  return {
    transfer: {
      txHash: log.transactionHash.toLowerCase(),
      logIndex: hexToNumber(log.logIndex),
      blockNumber: hexToBigInt(log.blockNumber),
      blockHash: log.blockHash.toLowerCase(),
      // From the header, read for every log's block (`fillBlocks`): newer nodes put the
      // timestamp on the log too, but the header is needed anyway to check the log's block.
      blockTimestamp: 0n,
      contract,
      asset: assetsByContract.get(contract) ?? null,
      from,
      to,
      amountBaseUnits: hexToBigInt(log.data as Hex),
      // A reverted transaction leaves no logs; the receipt is read for outgoing ones anyway.
      success: true,
      feeBaseUnits: null,
    },
    transactionIndex: hexToNumber(log.transactionIndex),
    needsBlock: true,
    needsReceipt: watched.has(from),
  };
}

function nativeCandidates(
  body: RpcBlockWithTransactions,
  ref: BlockRef,
  asset: TrackedAsset,
  watched: ReadonlySet<string>,
  assetsByContract: ReadonlyMap<string, TrackedAsset>,
): Candidate[] {
  const candidates: Candidate[] = [];
  for (const tx of body.transactions) {
    if (!tx.to || tx.transactionIndex === null) continue; // contract creation
    const value = hexToBigInt(tx.value);
    const from = tx.from.toLowerCase();
    const to = tx.to.toLowerCase();
    if (value === 0n) {
      if (watched.has(from)) candidates.push(failedCallCandidate(tx, ref, assetsByContract));
      continue;
    }
    if (!watched.has(from) && !watched.has(to)) continue;
    candidates.push({
      transfer: {
        txHash: tx.hash.toLowerCase(),
        logIndex: -1,
        blockNumber: ref.number,
        blockHash: ref.hash,
        blockTimestamp: ref.timestamp,
        contract: null,
        asset,
        from,
        to,
        amountBaseUnits: value,
        success: false, // until the receipt says otherwise
        feeBaseUnits: null,
      },
      transactionIndex: hexToNumber(tx.transactionIndex),
      needsBlock: false,
      needsReceipt: true,
    });
  }
  return candidates;
}

const ERC20_TRANSFER_CALL = /^0xa9059cbb0{24}([0-9a-f]{40})([0-9a-f]{64})$/i;

/**
 * A transaction without value sent by a watched address (a token sweep or top-up, another
 * contract call): if it reverts it leaves no Transfer log, yet its sender paid the fee. It is
 * kept (log index -1, failed, with its fee) only when its receipt says it failed; a call that
 * succeeds is seen through its logs. A call to `transfer(to, amount)` of a tracked token names
 * the recipient and amount it tried to move; any other call is a transfer of nothing to the
 * contract called.
 */
function failedCallCandidate(
  tx: RpcBlockWithTransactions['transactions'][number],
  ref: BlockRef,
  assetsByContract: ReadonlyMap<string, TrackedAsset>,
): Candidate {
  const contract = tx.to!.toLowerCase();
  const asset = assetsByContract.get(contract) ?? null;
  const call = asset ? ERC20_TRANSFER_CALL.exec(tx.input) : null;
  return {
    transfer: {
      txHash: tx.hash.toLowerCase(),
      logIndex: -1,
      blockNumber: ref.number,
      blockHash: ref.hash,
      blockTimestamp: ref.timestamp,
      contract,
      asset: call ? asset : null,
      from: tx.from.toLowerCase(),
      to: call ? `0x${call[1]!.toLowerCase()}` : contract,
      amountBaseUnits: call ? hexToBigInt(`0x${call[2]!}`) : 0n,
      success: false, // until the receipt says otherwise
      feeBaseUnits: null,
    },
    transactionIndex: hexToNumber(tx.transactionIndex!),
    needsBlock: false,
    needsReceipt: true,
    onlyIfFailed: true,
  };
}

async function getBlockRange(
  client: PublicClient,
  fromBlock: bigint,
  toBlock: bigint,
  batchSize: number,
): Promise<RpcBlockWithTransactions[]> {
  const numbers: bigint[] = [];
  for (let number = fromBlock; number <= toBlock; number++) numbers.push(number);
  return mapInChunks(numbers, batchSize, async (number) => {
    const body = await getBlockWithTransactions(client, number);
    if (!body) throw new BlockNotServedError(`the endpoint does not serve block ${number}`);
    return body;
  });
}

/**
 * The range's first block has the caller's cursor as its parent. An endpoint on another fork
 * (a fallback, or another node behind a load balancer) fails here, as an endpoint fault, so
 * the cursor never moves onto its fork without the blocks recorded from the cursor's fork
 * being checked again (the next reorg check compares them, on whichever chain wins).
 */
function assertContinues(first: BlockRef, parentHash: string): void {
  if (first.parentHash !== parentHash.toLowerCase()) {
    throw new InconsistentScanError(
      `block ${first.number} (parent ${first.parentHash}) does not continue the block ${first.number - 1n} the scan starts after (${parentHash}): the endpoint is on another fork`,
    );
  }
}

/** Each block's parent is the block before it, and the last is the scan's `toBlockRef`. */
function assertChainOfBlocks(bodies: RpcBlockWithTransactions[], toBlockRef: BlockRef): void {
  for (let index = 1; index < bodies.length; index++) {
    if (bodies[index]!.parentHash.toLowerCase() !== bodies[index - 1]!.hash?.toLowerCase()) {
      throw new InconsistentScanError(
        `block ${hexToBigInt(bodies[index]!.number!)} does not follow the block before it`,
      );
    }
  }
  const last = bodies[bodies.length - 1];
  if (last?.hash?.toLowerCase() !== toBlockRef.hash) {
    throw new InconsistentScanError(`block ${toBlockRef.number} changed during the scan`);
  }
}

/**
 * Block hash and timestamp for every log-based candidate; the header must match the log. With
 * `sameChainAs`, every batch of headers also reads that block again, which must be unchanged:
 * the headers are of the chain that block is on (the node that answered the batch has both).
 * Logs and a header from a stale node on another fork, behind one load balancer with a node
 * on the chain `toBlockRef` came from, were otherwise taken as that chain's.
 */
async function fillBlocks(
  client: PublicClient,
  candidates: Candidate[],
  blocks: Map<bigint, BlockRef>,
  batchSize: number,
  sameChainAs: BlockRef | null,
): Promise<void> {
  const waiting = candidates.filter((candidate) => candidate.needsBlock);
  const missing = [
    ...new Set(
      waiting
        .map((candidate) => candidate.transfer.blockNumber)
        .filter((number) => !blocks.has(number)),
    ),
  ];
  const fetched: Array<BlockRef | null> = [];
  const perBatch = sameChainAs ? Math.max(1, batchSize - 1) : batchSize;
  for (let start = 0; start < missing.length; start += perBatch) {
    const numbers = missing.slice(start, start + perBatch);
    const [anchor, ...refs] = await Promise.all([
      sameChainAs ? getBlockRef(client, sameChainAs.number) : null,
      ...numbers.map((number) => getBlockRef(client, number)),
    ]);
    if (sameChainAs && anchor?.hash !== sameChainAs.hash) {
      throw new InconsistentScanError(`block ${sameChainAs.number} changed during the scan`);
    }
    fetched.push(...refs);
  }
  for (const [index, ref] of fetched.entries()) {
    if (!ref) throw new BlockNotServedError(`the endpoint does not serve block ${missing[index]}`);
    blocks.set(ref.number, ref);
  }
  for (const { transfer } of candidates) {
    const ref = blocks.get(transfer.blockNumber);
    if (!ref) throw new InconsistentScanError(`block ${transfer.blockNumber} was not read`);
    if (ref.hash !== transfer.blockHash) {
      throw new InconsistentScanError(
        `logs of block ${transfer.blockNumber} came from ${transfer.blockHash}, the block is now ${ref.hash}`,
      );
    }
    transfer.blockTimestamp = ref.timestamp;
  }
}

/** Status for native transfers; status and fee for transfers from a watched address. */
async function fillReceipts(
  client: PublicClient,
  candidates: Candidate[],
  watched: ReadonlySet<string>,
  batchSize: number,
): Promise<void> {
  const hashes = [
    ...new Set(
      candidates
        .filter((candidate) => candidate.needsReceipt)
        .map((candidate) => candidate.transfer.txHash),
    ),
  ];
  const receipts = await mapInChunks(hashes, batchSize, async (hash) => {
    const receipt = await client.request({
      method: 'eth_getTransactionReceipt',
      params: [hash as Hex],
    });
    if (!receipt) throw new InconsistentScanError(`no receipt for transaction ${hash}`);
    return receipt;
  });
  const byHash = new Map(
    receipts.map((receipt) => [receipt.transactionHash.toLowerCase(), receipt]),
  );
  for (const candidate of candidates) {
    if (!candidate.needsReceipt) continue;
    const transfer = candidate.transfer;
    const receipt = byHash.get(transfer.txHash)!;
    if (receipt.blockHash.toLowerCase() !== transfer.blockHash) {
      throw new InconsistentScanError(
        `receipt of ${transfer.txHash} is in block ${receipt.blockHash}, not ${transfer.blockHash}`,
      );
    }
    transfer.success = receipt.status === '0x1';
    if (watched.has(transfer.from)) {
      // The fee is the transaction sender's; a transferFrom paid by someone else cost us nothing.
      transfer.feeBaseUnits = receipt.from.toLowerCase() === transfer.from ? feeOf(receipt) : 0n;
    }
  }
}

/** gasUsed x effectiveGasPrice, plus the L1 data fee OP-stack chains put on the receipt. */
function feeOf(receipt: RpcTransactionReceipt): bigint {
  const price = receipt.effectiveGasPrice ?? (receipt as { gasPrice?: Hex }).gasPrice;
  if (!price) {
    throw new InconsistentScanError(`receipt of ${receipt.transactionHash} has no gas price`);
  }
  const l1Fee = (receipt as { l1Fee?: Hex | null }).l1Fee;
  return hexToBigInt(receipt.gasUsed) * hexToBigInt(price) + (l1Fee ? hexToBigInt(l1Fee) : 0n);
}

function addressTopic(address: string): Hex {
  return `0x000000000000000000000000${address.slice(2)}`;
}

function topicAddress(topic: Hex): string {
  return `0x${topic.slice(26)}`.toLowerCase();
}
