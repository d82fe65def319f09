import { BaseError, RpcRequestError, type Address, type PublicClient } from 'viem';
import { Decimal } from '../../ledger/index.js';
import {
  PriceUnavailableError,
  type PriceQuote,
  type PriceSource,
  type PriceUnavailableKind,
} from '../prices.js';
import { normalizeEvmAddress } from '../evm/assets.js';
import { isContractAnswer } from '../evm/rpc.js';
import { RpcUnavailableError } from '../adapter.js';
import type { EvmAdapter } from '../evm/createEvmAdapter.js';

/** The two functions of Chainlink's AggregatorV3Interface a quote needs. */
export const aggregatorV3Abi = [
  {
    type: 'function',
    name: 'decimals',
    stateMutability: 'view',
    inputs: [],
    outputs: [{ name: '', type: 'uint8' }],
  },
  {
    type: 'function',
    name: 'latestRoundData',
    stateMutability: 'view',
    inputs: [],
    outputs: [
      { name: 'roundId', type: 'uint80' },
      { name: 'answer', type: 'int256' },
      { name: 'startedAt', type: 'uint256' },
      { name: 'updatedAt', type: 'uint256' },
      { name: 'answeredInRound', type: 'uint80' },
    ],
  },
] as const;

export interface ChainlinkPriceSourceParameters {
  /**
   * The feed's network: its EVM adapter (timeouts, retries, failover) or a bare viem client.
   * All reads of one quote go to one endpoint.
   */
  chain: Pick<EvmAdapter, 'withClient'> | PublicClient;
  /** Aggregator (or proxy) address. */
  feed: string;
  /** Oldest round accepted, in seconds before the quoted block's timestamp. */
  maxAgeS: number;
  /** Name of the feed's network, stored in the quote's details. */
  network?: string;
}

/**
 * USD rate from a Chainlink AggregatorV3 feed, read at a block of the feed's network:
 * rate = answer / 10^decimals, exactly, with `decimals()` read at the same block as the round
 * (a feed whose decimals change is scaled by the decimals it had then). Refuses
 * (PriceUnavailableError) an answer <= 0, a round not yet complete (`updatedAt` 0 or
 * `answeredInRound` < `roundId`), a round older than `maxAgeS` at that block, or a feed it
 * cannot read; the error's `kind` tells a refusal at that block (`refused`, `no-state`: a
 * pruned node) from a read that did not get through (`unreachable`).
 *
 * @example
 * const eth = createChainlinkPriceSource({ chain: ethereumAdapter, feed: '0x5f4e...8419', maxAgeS: 3900 });
 * const { rate, details } = await eth.quote(19_000_000n);
 */
export function createChainlinkPriceSource(params: ChainlinkPriceSourceParameters): PriceSource {
  if (!Number.isInteger(params.maxAgeS) || params.maxAgeS <= 0) {
    throw new RangeError(
      `maxAgeS must be a positive whole number of seconds, not ${params.maxAgeS}`,
    );
  }
  const feed = normalizeEvmAddress(params.feed) as Address;
  const run = <T>(work: (client: PublicClient) => Promise<T>): Promise<T> =>
    'withClient' in params.chain
      ? params.chain.withClient('chainlink.latestRoundData', work)
      : work(params.chain);

  async function quote(blockNumber: bigint | null): Promise<PriceQuote> {
    let read;
    try {
      read = await run(async (client) => {
        const at = blockNumber ?? (await client.getBlockNumber({ cacheTime: 0 }));
        const [decimals, round, block] = await Promise.all([
          client.readContract({
            address: feed,
            abi: aggregatorV3Abi,
            functionName: 'decimals',
            blockNumber: at,
          }),
          client.readContract({
            address: feed,
            abi: aggregatorV3Abi,
            functionName: 'latestRoundData',
            blockNumber: at,
          }),
          client.getBlock({ blockNumber: at }),
        ]);
        return { at, decimals, round, blockTimestamp: block.timestamp };
      });
    } catch (error) {
      const reason = error instanceof BaseError ? error.shortMessage : String(error);
      // What the node said ("missing trie node ...") is what tells an operator why; viem's
      // short message names only the JSON-RPC error class.
      const said = errorChain(error).find((cause) => cause instanceof RpcRequestError)?.details;
      const text = said && !reason.includes(said) ? `${reason} (node: ${said})` : reason;
      throw new PriceUnavailableError(`Chainlink feed ${feed} could not be read: ${text}`, {
        cause: error,
        kind: readFailureKind(error),
      });
    }
    const [roundId, answer, , updatedAt, answeredInRound] = read.round;
    if (answer <= 0n) {
      throw new PriceUnavailableError(
        `Chainlink feed ${feed} answered ${answer} in round ${roundId} at block ${read.at}: not a price`,
      );
    }
    if (updatedAt === 0n) {
      throw new PriceUnavailableError(`Chainlink feed ${feed} round ${roundId} is not complete`);
    }
    // Deprecated in OCR feeds (always roundId there), but an older aggregator or a proxy mid
    // phase change can still report a round whose answer was carried over from an earlier one.
    if (answeredInRound < roundId) {
      throw new PriceUnavailableError(
        `Chainlink feed ${feed} round ${roundId} is not complete (answered in round ${answeredInRound})`,
      );
    }
    const ageS = read.blockTimestamp - updatedAt;
    if (ageS > BigInt(params.maxAgeS)) {
      throw new PriceUnavailableError(
        `Chainlink feed ${feed} round ${roundId} is ${ageS} s old at block ${read.at}; at most ${params.maxAgeS} s is accepted`,
      );
    }
    const rate = new Decimal(answer.toString()).div(new Decimal(10).pow(read.decimals));
    return {
      rate,
      source: 'chainlink',
      details: {
        ...(params.network === undefined ? {} : { network: params.network }),
        feed,
        roundId: roundId.toString(),
        answer: answer.toString(),
        decimals: String(read.decimals),
        updatedAt: updatedAt.toString(),
        blockNumber: read.at.toString(),
      },
    };
  }

  return { quote };
}

/**
 * What the JSON-RPC error of a node that cannot serve state at a block says: geth ("missing
 * trie node ...", "header not found", "required historical state unavailable", path scheme
 * "historical state ... is not available"), Nethermind and geth ("pruned history unavailable"),
 * reth ("State at block #N is pruned"), OpenEthereum ("... running with state pruning").
 * Matched only in a JSON-RPC error, never in an HTTP error page, nor in an answer of a gateway
 * or rate limiter in front of the node (HTTP 429, 502, 503, 504).
 */
const NO_STATE =
  /missing trie node|header not found|historical state|state\b.{0,120}\bnot available|state at block .{0,40}\bpruned|pruned history|state pruning/i;

const PASSING_HTTP_STATUSES = new Set([429, 502, 503, 504]);

/**
 * How a failed read of the feed failed. When it failed on every endpoint of the feed's network,
 * it is an answer about the block only if every endpoint asked gave one: one endpoint that
 * failed in passing (`unreachable`) may have the state another lacked, so the read is
 * `unreachable` whatever the others said, and whichever endpoint was tried last; else
 * `no-state` if any endpoint lacked the state, else `refused`.
 */
function readFailureKind(error: unknown): PriceUnavailableKind {
  const unavailable = errorChain(error).find((cause) => cause instanceof RpcUnavailableError);
  const failures = unavailable?.endpointFailures ?? [];
  if (failures.length === 0) return endpointFailureKind(error);
  const kinds = new Set(failures.map(endpointFailureKind));
  if (kinds.has('unreachable')) return 'unreachable';
  return kinds.has('no-state') ? 'no-state' : 'refused';
}

/**
 * How one endpoint's read failed. A node's JSON-RPC error saying it lacks that block's state
 * is `no-state`; a revert or an empty answer is the feed's answer at that block (`refused`),
 * except an "internal error" that viem takes for a revert but that says nothing of one;
 * anything else (timeouts, HTTP statuses, dropped connections, rate limits, other JSON-RPC
 * errors) is `unreachable`, and says nothing about the round at that block.
 */
function endpointFailureKind(error: unknown): PriceUnavailableKind {
  const chain = errorChain(error);
  const rpc = chain.find((cause) => cause instanceof RpcRequestError);
  if (rpc && !PASSING_HTTP_STATUSES.has(rpc.status ?? 200) && NO_STATE.test(rpc.details))
    return 'no-state';
  return isContractAnswer(error) ? 'refused' : 'unreachable';
}

/** The error and its causes, outermost first. */
function errorChain(error: unknown): Error[] {
  const chain: Error[] = [];
  for (let cause = error; cause instanceof Error && !chain.includes(cause); cause = cause.cause)
    chain.push(cause);
  return chain;
}
