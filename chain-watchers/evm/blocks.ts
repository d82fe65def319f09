import {
  BaseError,
  HttpRequestError,
  RpcRequestError,
  hexToBigInt,
  toHex,
  type BlockTag,
  type PublicClient,
  type RpcBlock,
} from 'viem';
import type { BlockRef } from '../adapter.js';

/** Block reads shared by the adapter and the scanner, as raw JSON-RPC (a missing block is null, not an error). */

export type RpcBlockWithTransactions = RpcBlock<BlockTag, true>;

/** The header of a block by number or tag; null when the endpoint has no such block. */
export async function getBlockRef(
  client: PublicClient,
  block: bigint | 'latest' | 'finalized' | 'safe',
): Promise<BlockRef | null> {
  const raw = await client.request({
    method: 'eth_getBlockByNumber',
    params: [typeof block === 'bigint' ? toHex(block) : block, false],
  });
  return raw ? blockRefOf(raw) : null;
}

/** A block with its full transactions; null when the endpoint has no such block. */
export async function getBlockWithTransactions(
  client: PublicClient,
  blockNumber: bigint,
): Promise<RpcBlockWithTransactions | null> {
  const raw = await client.request({
    method: 'eth_getBlockByNumber',
    params: [toHex(blockNumber), true],
  });
  return raw as RpcBlockWithTransactions | null;
}

export function blockRefOf(
  raw: Pick<RpcBlock, 'number' | 'hash' | 'parentHash' | 'timestamp'>,
): BlockRef {
  if (raw.number === null || raw.hash === null) {
    // Pending blocks have neither; we never ask for one.
    throw new Error('the endpoint returned a pending block where a mined one was expected');
  }
  return {
    number: hexToBigInt(raw.number),
    hash: raw.hash.toLowerCase(),
    parentHash: raw.parentHash.toLowerCase(),
    timestamp: hexToBigInt(raw.timestamp),
  };
}

/**
 * Whether the node itself answered with a JSON-RPC error (it understood and refused the
 * request), as opposed to a transport failure, an HTTP error status or a rate limit.
 */
export function isNodeRefusal(error: unknown): boolean {
  if (!(error instanceof BaseError)) return false;
  if (error.walk((cause) => cause instanceof HttpRequestError)) return false;
  const refusal = error.walk((cause) => cause instanceof RpcRequestError);
  if (!(refusal instanceof RpcRequestError)) return false;
  if (refusal.status !== undefined && refusal.status !== 200) return false;
  return ![429, -32005, -32007].includes(refusal.code);
}

/**
 * Runs `work` over `items` in consecutive chunks of `chunkSize`, each chunk in parallel. With
 * viem's HTTP batching on, one chunk is one JSON-RPC batch request.
 */
export async function mapInChunks<T, R>(
  items: ReadonlyArray<T>,
  chunkSize: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = [];
  for (let start = 0; start < items.length; start += chunkSize) {
    results.push(...(await Promise.all(items.slice(start, start + chunkSize).map(work))));
  }
  return results;
}
