import type {
  BlockRef,
  ObservedTransfer,
  ScanParameters,
  ScanResult,
  TrackedAsset,
} from '../adapter.js';
import { hex20OfTronAddress, normalizeTronAddress, tronAddressFromHex20 } from './address.js';
import { TronEndpointError } from './errors.js';
import type { TronHost } from './rpc.js';
import {
  parseBlock,
  parseTransactionInfo,
  type TronBlock,
  type TronContractCall,
  type TronLog,
  type TronTransaction,
  type TronTransactionInfo,
} from './wire.js';
import { minBig } from '../bigints.js';

/** keccak256("Transfer(address,address,uint256)"), as TronGrid writes topics (no 0x). */
export const TRANSFER_TOPIC = 'ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef';
const SELECTOR_TRANSFER = 'a9059cbb'; // transfer(address,uint256)
const SELECTOR_TRANSFER_FROM = '23b872dd'; // transferFrom(address,address,uint256)
/** java-tron's limit for getblockbylimitnext. */
export const MAX_BLOCKS_PER_REQUEST = 100;

/**
 * How a scan finds the transactions whose receipts it must read.
 * - `calldata`: the transactions sent by a watched address, or whose call data holds a
 *   watched address as an ABI word (transfer, transferFrom, batch payouts, most contract
 *   wallets). One receipt request per such transaction. Misses transfers made by a contract
 *   whose call data does not name the recipient (balances reconciliation catches those).
 * - `receipts`: every receipt of every block holding a contract call
 *   (gettransactioninfobyblocknum), so even such internal transfers are seen. One request
 *   per block: heavier on TronGrid quota.
 * Either way, TRX that contracts paid to watched addresses during a transaction whose receipt
 * was read (its `internal_transactions`) is seen with it.
 */
export type TronTransferDiscovery = 'calldata' | 'receipts';

export interface ScanTronTransfersParameters extends ScanParameters {
  assets: ReadonlyArray<TrackedAsset>;
  /** Blocks per getblockbylimitnext request, at most 100. */
  blocksPerRequest: number;
  /** Requests of one scan in flight at once. */
  concurrency: number;
  discovery: TronTransferDiscovery;
}

interface Found {
  transfer: ObservedTransfer;
  position: number;
}

/**
 * All TRC-20 transfers (any contract) and, when a native asset is configured, TRX transfers
 * in [fromBlock, toBlock] to or from a watched address, read from one host:
 *
 * 1. the blocks of the range (getblockbylimitnext, up to 100 per request), checked to be
 *    complete and hash-linked;
 * 2. the receipts of the candidate transactions (see `TronTransferDiscovery`), checked to
 *    belong to those blocks;
 * 3. each successful receipt's Transfer logs touching a watched address (amount, from and to
 *    from the log; `logIndex` is the log's position in the receipt); a failed top-level
 *    `transfer`/`transferFrom` is returned with `success: false` and `logIndex` 0, where its
 *    log would have been; with a native asset, also each successful receipt's internal
 *    transactions paying TRX to a watched address (`logIndex` -2 - position, see
 *    `internalTransactionLogIndex`);
 * 4. the block at `toBlock` read again: unchanged means no reorg reached the range meanwhile.
 *
 * @example await scanTronTransfers(host, { fromBlock, toBlock, addresses, assets, ... })
 */
export async function scanTronTransfers(
  host: TronHost,
  params: ScanTronTransfersParameters,
): Promise<ScanResult> {
  const { fromBlock, toBlock } = params;
  if (fromBlock < 0n || toBlock < fromBlock) {
    throw new RangeError(`scan range [${fromBlock}, ${toBlock}] is empty or negative`);
  }
  const watched = new Map<string, string>();
  for (const address of params.addresses) watched.set(watchedHex20(address), address);
  // The host's own head and solidified block, read with the blocks: how long the chain of the
  // transfers is and what is final on it (the caller's head may be another host's, on
  // another fork).
  const [blocks, endpoint] = await Promise.all([
    readBlocks(host, fromBlock, toBlock, params),
    readEndpointHead(host),
  ]);
  const toBlockRef = blocks[blocks.length - 1]!.ref;
  const { endpointHead, endpointFinalized } = endpoint;
  // The range must continue the chain the caller's cursor is on: a host on another fork
  // (behind a load balancer, or a fallback) would otherwise move the cursor onto its fork
  // without any block the caller recorded being checked again.
  if (params.parentHash !== undefined && blocks[0]!.ref.parentHash !== params.parentHash) {
    throw new TronEndpointError(
      'inconsistent',
      `${host.label}: block ${fromBlock} does not follow the block ${fromBlock - 1n} the scan continues (${params.parentHash})`,
      { host: host.label },
    );
  }
  if (watched.size === 0) return { transfers: [], toBlockRef, endpointHead, endpointFinalized };

  const context: Context = {
    watched,
    assetsByContract: new Map(
      params.assets.flatMap((asset) => (asset.contract ? [[asset.contract, asset] as const] : [])),
    ),
    nativeAsset: params.assets.find((asset) => asset.native) ?? null,
  };
  const infos =
    params.discovery === 'receipts'
      ? await readBlockReceipts(host, blocks, context, params.concurrency)
      : await readCandidateReceipts(host, blocks, context, params.concurrency);

  const found: Found[] = [];
  let position = 0;
  for (const block of blocks) {
    for (const tx of block.transactions) {
      position++;
      for (const transfer of transfersOf(tx, block.ref, infos.get(tx.txID) ?? null, context)) {
        found.push({ transfer, position });
      }
    }
  }

  if (infos.size > 0) {
    const again = await host.request<unknown>('wallet/getblockbynum', { num: Number(toBlock) });
    if (parseOptionalBlock(again)?.ref.hash !== toBlockRef.hash) {
      throw new TronEndpointError('inconsistent', `block ${toBlock} changed during the scan`, {
        host: host.label,
      });
    }
  }

  found.sort((a, b) => a.position - b.position || a.transfer.logIndex - b.transfer.logIndex);
  return {
    transfers: found.map((entry) => entry.transfer),
    toBlockRef,
    endpointHead,
    endpointFinalized,
  };
}

/** The host's head and latest solidified block (`/wallet/getnowblock`, `/walletsolidity/getnowblock`). */
async function readEndpointHead(
  host: TronHost,
): Promise<{ endpointHead: bigint; endpointFinalized: bigint }> {
  const [latest, solidified] = await Promise.all([
    host.tronWeb.trx.getCurrentBlock(),
    host.tronWeb.trx.getConfirmedCurrentBlock(),
  ]);
  const endpointHead = parseBlock(latest).ref.number;
  const endpointFinalized = parseBlock(solidified).ref.number;
  return { endpointHead, endpointFinalized: minBig(endpointFinalized, endpointHead) };
}

const HEX20_CACHE_MAX = 1_000_000;
const hex20Cache = new Map<string, string>();

/**
 * The 20-byte hex of a watched (canonical) address. Base58 decoding with its checksum costs
 * tens of microseconds; the watched set barely changes between scans, so results are kept.
 */
function watchedHex20(address: string): string {
  let hex20 = hex20Cache.get(address);
  if (hex20 === undefined) {
    if (normalizeTronAddress(address) !== address) {
      throw new TypeError(`watched address "${address}" is not canonical (use normalizeAddress)`);
    }
    hex20 = hex20OfTronAddress(address);
    if (hex20Cache.size >= HEX20_CACHE_MAX) hex20Cache.clear();
    hex20Cache.set(address, hex20);
  }
  return hex20;
}

interface Context {
  /** 20-byte hex -> canonical base58. */
  watched: ReadonlyMap<string, string>;
  assetsByContract: ReadonlyMap<string, TrackedAsset>;
  nativeAsset: TrackedAsset | null;
}

/** The blocks of the range, complete, in order, each the parent of the next. */
async function readBlocks(
  host: TronHost,
  fromBlock: bigint,
  toBlock: bigint,
  params: Pick<ScanTronTransfersParameters, 'blocksPerRequest' | 'concurrency'>,
): Promise<TronBlock[]> {
  const size = BigInt(Math.min(Math.max(1, params.blocksPerRequest), MAX_BLOCKS_PER_REQUEST));
  const chunks: Array<[bigint, bigint]> = [];
  for (let start = fromBlock; start <= toBlock; start += size) {
    chunks.push([start, start + size - 1n < toBlock ? start + size - 1n : toBlock]);
  }
  const parts = await mapWithConcurrency(chunks, params.concurrency, async ([start, end]) => {
    // java-tron answers `{}` when it has none of the blocks: completeness is checked below.
    // Read directly, not through TronWeb's getBlockRange: it hands back whatever `block` holds
    // (an object, a string) and throws a TypeError on a `null` body, which is no endpoint
    // fault, so the host was never passed over.
    const raw = await host.request<unknown>('wallet/getblockbylimitnext', {
      startNum: Number(start),
      endNum: Number(end) + 1,
    });
    const list =
      typeof raw === 'object' && raw !== null && !Array.isArray(raw)
        ? ((raw as { block?: unknown }).block ?? [])
        : null;
    if (!Array.isArray(list)) {
      throw new TronEndpointError(
        'malformed',
        `${host.label} /wallet/getblockbylimitnext ${start}..${end}: the answer has no block list`,
        { host: host.label },
      );
    }
    const blocks = list.map(parseBlock);
    const expected = Number(end - start) + 1;
    if (blocks.length !== expected) {
      const last = blocks[blocks.length - 1]?.ref.number;
      throw new TronEndpointError(
        'not-served',
        `${host.label} served ${blocks.length} of blocks ${start}..${end}${last === undefined ? '' : ` (up to ${last})`}`,
        { host: host.label },
      );
    }
    blocks.forEach((block, index) => {
      if (block.ref.number !== start + BigInt(index)) {
        throw new TronEndpointError(
          'inconsistent',
          `${host.label} answered block ${block.ref.number} for ${start + BigInt(index)}`,
          { host: host.label },
        );
      }
    });
    return blocks;
  });
  const blocks = parts.flat();
  for (let index = 1; index < blocks.length; index++) {
    if (blocks[index]!.ref.parentHash !== blocks[index - 1]!.ref.hash) {
      throw new TronEndpointError(
        'inconsistent',
        `block ${blocks[index]!.ref.number} does not follow the block before it`,
        { host: host.label },
      );
    }
  }
  return blocks;
}

/** `calldata` discovery: one gettransactioninfobyid per candidate transaction. */
async function readCandidateReceipts(
  host: TronHost,
  blocks: TronBlock[],
  context: Context,
  concurrency: number,
): Promise<Map<string, TronTransactionInfo>> {
  const wanted: Array<{ txID: string; blockNumber: bigint }> = [];
  for (const block of blocks) {
    for (const tx of block.transactions) {
      if (needsReceipt(tx, context)) wanted.push({ txID: tx.txID, blockNumber: block.ref.number });
    }
  }
  const infos = await mapWithConcurrency(wanted, concurrency, async ({ txID, blockNumber }) => {
    const info = parseTransactionInfo(await host.tronWeb.trx.getUnconfirmedTransactionInfo(txID));
    if (info === null) {
      // `{}`: this node (or the one behind the load balancer) does not have it yet.
      throw new TronEndpointError('not-served', `${host.label} has no receipt for ${txID}`, {
        host: host.label,
      });
    }
    if (info.id !== txID || info.blockNumber !== blockNumber) {
      throw new TronEndpointError(
        'inconsistent',
        `${host.label}: receipt of ${txID} says block ${info.blockNumber}, the block read was ${blockNumber}`,
        { host: host.label },
      );
    }
    return info;
  });
  return new Map(infos.map((info) => [info.id, info]));
}

/** `receipts` discovery: gettransactioninfobyblocknum for every block with a candidate kind. */
async function readBlockReceipts(
  host: TronHost,
  blocks: TronBlock[],
  context: Context,
  concurrency: number,
): Promise<Map<string, TronTransactionInfo>> {
  const wanted = blocks.filter((block) =>
    block.transactions.some(
      (tx) => tx.contract.type === 'TriggerSmartContract' || needsReceipt(tx, context),
    ),
  );
  const perBlock = await mapWithConcurrency(wanted, concurrency, async (block) => {
    const raw = await host.request<unknown>('wallet/gettransactioninfobyblocknum', {
      num: Number(block.ref.number),
    });
    if (!Array.isArray(raw)) {
      throw new TronEndpointError('malformed', `receipts of block ${block.ref.number}: not a list`);
    }
    const infos = raw.map(parseTransactionInfo);
    const byId = new Map<string, TronTransactionInfo>();
    for (const info of infos) {
      if (info === null || info.blockNumber !== block.ref.number) {
        throw new TronEndpointError(
          'inconsistent',
          `${host.label}: receipts of block ${block.ref.number} do not match the block`,
          { host: host.label },
        );
      }
      byId.set(info.id, info);
    }
    // java-tron keeps one receipt per transaction. An empty list is also what a node answers
    // for a block it does not have: every transaction of the block must be there.
    for (const tx of block.transactions) {
      if (!byId.has(tx.txID)) {
        throw new TronEndpointError(
          'not-served',
          `${host.label} has no receipt for ${tx.txID} in block ${block.ref.number}`,
          { host: host.label },
        );
      }
    }
    return infos as TronTransactionInfo[];
  });
  return new Map(perBlock.flat().map((info) => [info.id, info]));
}

function needsReceipt(tx: TronTransaction, context: Context): boolean {
  const call = tx.contract;
  if (call.type === 'TriggerSmartContract') {
    return context.watched.has(call.owner.slice(2)) || mentionsWatched(call.data, context.watched);
  }
  // TRX: the fee of an outgoing transfer is only in its receipt.
  return (
    call.type === 'TransferContract' &&
    context.nativeAsset !== null &&
    context.watched.has(call.owner.slice(2))
  );
}

const ZERO_PADDING = '0'.repeat(24);

/**
 * True when the call data holds a watched address as an ABI word (12 zero bytes, then the
 * address) at any byte offset: nested calls shift words by their 4-byte selectors.
 */
export function mentionsWatched(data: string, watched: ReadonlyMap<string, string>): boolean {
  for (let index = 0; index + 64 <= data.length; index += 2) {
    if (data.startsWith(ZERO_PADDING, index) && watched.has(data.slice(index + 24, index + 64))) {
      return true;
    }
  }
  return false;
}

function transfersOf(
  tx: TronTransaction,
  block: BlockRef,
  info: TronTransactionInfo | null,
  context: Context,
): ObservedTransfer[] {
  const call = tx.contract;
  const base = {
    txHash: tx.txID,
    blockNumber: block.number,
    blockHash: block.hash,
    blockTimestamp: block.timestamp,
  };
  if (call.type === 'TransferContract') {
    if (!context.nativeAsset) return [];
    const from = context.watched.get(call.owner.slice(2));
    const to = context.watched.get(call.to.slice(2));
    if (from === undefined && to === undefined) return [];
    return [
      {
        ...base,
        logIndex: -1,
        contract: null,
        asset: context.nativeAsset,
        from: from ?? tronAddressFromHex20(call.owner.slice(2)),
        to: to ?? tronAddressFromHex20(call.to.slice(2)),
        amountBaseUnits: call.amountSun,
        success: tx.contractRet === 'SUCCESS',
        feeBaseUnits: from === undefined ? null : (info?.feeSun ?? 0n),
      },
    ];
  }
  if (call.type !== 'TriggerSmartContract' || info === null) return [];
  if (info.receiptResult === null) {
    // Every contract call has a VM result; without one, "failed" would be a guess.
    throw new TronEndpointError('malformed', `receipt of ${tx.txID} has no receipt.result`);
  }

  const success = info.receiptResult === 'SUCCESS' && !info.failed;
  // A block and a receipt from two nodes (behind one load balancer) on two forks that both
  // mined the transaction, with two outcomes: a receipt is no proof of the block's outcome.
  if (tx.contractRet !== null && (tx.contractRet === 'SUCCESS') !== success) {
    throw new TronEndpointError(
      'inconsistent',
      `${tx.txID}: the block says ${tx.contractRet}, its receipt ${info.receiptResult}${info.failed ? ' (FAILED)' : ''}`,
    );
  }
  const transfers: ObservedTransfer[] = [];
  if (success) {
    info.logs.forEach((log, logIndex) => {
      const decoded = decodeTransferLog(log);
      if (!decoded) return;
      if (!context.watched.has(decoded.from) && !context.watched.has(decoded.to)) return;
      const contract = tronAddressFromHex20(log.address);
      transfers.push({
        ...base,
        logIndex,
        contract,
        asset: context.assetsByContract.get(contract) ?? null,
        from: tronAddressFromHex20(decoded.from),
        to: tronAddressFromHex20(decoded.to),
        amountBaseUnits: decoded.amount,
        success: true,
        feeBaseUnits: null,
      });
    });
    if (context.nativeAsset) {
      transfers.push(...internalTrxTransfers(info, base, context.nativeAsset, context.watched));
    }
  } else {
    const decoded = decodeTransferCall(call);
    if (decoded && (context.watched.has(decoded.from) || context.watched.has(decoded.to))) {
      const contract = tronAddressFromHex20(call.contract.slice(2));
      transfers.push({
        ...base,
        // No log exists; 0 is where a plain token transfer's log would be.
        logIndex: 0,
        contract,
        asset: context.assetsByContract.get(contract) ?? null,
        from: tronAddressFromHex20(decoded.from),
        to: tronAddressFromHex20(decoded.to),
        amountBaseUnits: decoded.amount,
        success: false,
        feeBaseUnits: null,
      });
    }
  }
  // The payer (owner) burns the fee once per transaction: it goes on the first outgoing
  // transfer it sent; other outgoing transfers of the transaction carry 0.
  const payer = call.owner.slice(2);
  let feeAssigned = false;
  for (const transfer of transfers) {
    const from = hex20OfTronAddress(transfer.from);
    if (!context.watched.has(from)) continue;
    if (!feeAssigned && from === payer) {
      transfer.feeBaseUnits = info.feeSun;
      feeAssigned = true;
    } else {
      transfer.feeBaseUnits = 0n;
    }
  }
  return transfers;
}

/** Internal transactions that move TRX to the recipient: a call, or a selfdestruct's payout. */
const TRX_MOVING_NOTES = new Set(['call', 'suicide']);

/**
 * The log index of the internal transaction at `position` in its receipt's
 * `internal_transactions`: -2, -3, ... Beside the transaction's own TRX transfer (-1) and its
 * Transfer logs (0, 1, ...), so every transfer of a transaction has an identity of its own;
 * java-tron lists internal transactions in execution order, so the same execution gives the
 * same positions on every node and every re-scan.
 */
export function internalTransactionLogIndex(position: number): number {
  return -2 - position;
}

/**
 * TRX that contracts paid to a watched address during a successful transaction (its receipt's
 * `internal_transactions`): a payout, a withdrawal from an exchange's contract, a swap's
 * output. Not: a rejected call (undone by a revert), TRC-10 tokens (`tokenId`), a call that
 * carried no TRX. Our addresses are not contracts, so they never make an internal
 * transaction: these only come in (one from a watched caller would be no deposit, and is left
 * out rather than read as an outflow).
 */
function internalTrxTransfers(
  info: TronTransactionInfo,
  base: Pick<ObservedTransfer, 'txHash' | 'blockNumber' | 'blockHash' | 'blockTimestamp'>,
  nativeAsset: TrackedAsset,
  watched: ReadonlyMap<string, string>,
): ObservedTransfer[] {
  const transfers: ObservedTransfer[] = [];
  info.internalTransactions.forEach((internal, position) => {
    if (internal.rejected || internal.trxSun <= 0n || !TRX_MOVING_NOTES.has(internal.note)) return;
    if (internal.transferTo === null || watched.has(internal.caller.slice(2))) return;
    const to = watched.get(internal.transferTo.slice(2));
    if (to === undefined) return;
    transfers.push({
      ...base,
      logIndex: internalTransactionLogIndex(position),
      contract: null,
      asset: nativeAsset,
      from: tronAddressFromHex20(internal.caller.slice(2)),
      to,
      amountBaseUnits: internal.trxSun,
      success: true,
      feeBaseUnits: null,
    });
  });
  return transfers;
}

/** A TRC-20 Transfer log: three topics (ERC-721's has four), a 32-byte value. */
function decodeTransferLog(log: TronLog): { from: string; to: string; amount: bigint } | null {
  const [topic, fromWord, toWord] = log.topics;
  if (log.topics.length !== 3 || topic !== TRANSFER_TOPIC) return null;
  if (!isAddressWord(fromWord) || !isAddressWord(toWord)) return null;
  if (!/^[0-9a-f]{64}$/.test(log.data) || !/^[0-9a-f]{40}$/.test(log.address)) return null;
  return { from: fromWord.slice(24), to: toWord.slice(24), amount: BigInt(`0x${log.data}`) };
}

/** A top-level `transfer(to, value)` or `transferFrom(from, to, value)` call (20-byte hex). */
function decodeTransferCall(
  call: TronContractCall,
): { from: string; to: string; amount: bigint } | null {
  const words = call.data.slice(8).match(/.{64}/g) ?? [];
  if (call.data.startsWith(SELECTOR_TRANSFER) && words.length >= 2 && isAddressWord(words[0])) {
    return { from: call.owner.slice(2), to: words[0].slice(24), amount: BigInt(`0x${words[1]}`) };
  }
  if (
    call.data.startsWith(SELECTOR_TRANSFER_FROM) &&
    words.length >= 3 &&
    isAddressWord(words[0]) &&
    isAddressWord(words[1])
  ) {
    return { from: words[0].slice(24), to: words[1].slice(24), amount: BigInt(`0x${words[2]}`) };
  }
  return null;
}

function isAddressWord(word: string | undefined): word is string {
  return word !== undefined && /^0{24}[0-9a-f]{40}$/.test(word);
}

/** A block answer, or null for java-tron's `{}`. */
export function parseOptionalBlock(json: unknown): TronBlock | null {
  if (typeof json === 'object' && json !== null && Object.keys(json).length === 0) return null;
  return parseBlock(json);
}

/** Maps with at most `limit` calls in flight; fails fast on the first error. */
export async function mapWithConcurrency<T, R>(
  items: ReadonlyArray<T>,
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const index = next++;
      try {
        results[index] = await fn(items[index]!);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}
