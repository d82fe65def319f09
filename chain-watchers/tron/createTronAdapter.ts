import {
  ChainConfigError,
  type BalanceAt,
  type BlockRef,
  type ChainAdapter,
  type ChainHead,
  type ScanParameters,
  type ScanResult,
  type TrackedAsset,
} from '../adapter.js';
import type { TronNetworkConfig } from '../config.js';
import { normalizeTronAddress } from './address.js';
import { trackedAssetsFromConfig } from './assets.js';
import { TronContractCallError, TronEndpointError } from './errors.js';
import { TronRpc, type HostStatus, type RpcLogger, type TronHost } from './rpc.js';
import {
  MAX_BLOCKS_PER_REQUEST,
  parseOptionalBlock,
  scanTronTransfers,
  type TronTransferDiscovery,
} from './scan.js';
import { malformed, parseBlock } from './wire.js';

export interface TronAdapterOptions {
  logger?: RpcLogger;
  /** Requests per second per API key (TronGrid: about 15). Default 15. */
  requestsPerSecond?: number;
  /** Blocks per getblockbylimitnext request, at most 100. Default 100. */
  blocksPerRequest?: number;
  /** Requests of one scan in flight at once. Default 4. */
  concurrency?: number;
  /** How a scan finds the receipts to read. Default: the network's `discovery`. */
  discovery?: TronTransferDiscovery;
  retryBaseDelayMs?: number;
  retryMaxDelayMs?: number;
  /** The longest `Retry-After` honoured (see TronRpc). Default 60 s. */
  retryAfterMaxMs?: number;
  demoteMs?: number;
  demoteMsMax?: number;
  headCheckIntervalMs?: number;
  staleHeadLagBlocks?: number;
  /** For deterministic tests. */
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export interface TronAdapter extends ChainAdapter {
  readonly kind: 'tron';
  /** Per-host health, for /metrics and logs. */
  rpcStatus(): HostStatus[];
}

/** How often a balance read is retried when a block is solidified between its block reads. */
const BALANCE_HEAD_ATTEMPTS = 3;

/**
 * The Tron `ChainAdapter`, over TronGrid-compatible HTTP APIs through the TronWeb client.
 * `finalized` is the latest solidified block; addresses are base58 `T...`; block and
 * transaction ids are lower-case hex. Every request has a deadline (`rpcTimeoutMs`), is paced
 * to the key's rate, retried with backoff and jitter, and fails over across `fullHost` and
 * `fallbackHosts` (see TronRpc); when every host fails the method throws RpcUnavailableError.
 *
 * @example
 * const tron = createTronAdapter(config.networks.find((n) => n.kind === 'tron')!, { logger });
 * await tron.verify();
 * const { transfers, toBlockRef } = await tron.scan({ fromBlock, toBlock, addresses });
 */
export function createTronAdapter(
  network: TronNetworkConfig,
  options: TronAdapterOptions = {},
): TronAdapter {
  const assets = trackedAssetsFromConfig(network);
  const rpc = new TronRpc({
    network: network.name,
    hosts: [network.fullHost, ...network.fallbackHosts],
    apiKey: network.apiKey,
    timeoutMs: network.rpcTimeoutMs,
    retries: network.rpcRetries,
    logger: options.logger ?? { warn: () => {} },
    ...pick(options, [
      'requestsPerSecond',
      'retryBaseDelayMs',
      'retryMaxDelayMs',
      'retryAfterMaxMs',
      'demoteMs',
      'demoteMsMax',
      'headCheckIntervalMs',
      'staleHeadLagBlocks',
      'random',
      'sleep',
    ]),
  });
  const blocksPerRequest = Math.min(options.blocksPerRequest ?? 100, MAX_BLOCKS_PER_REQUEST);
  const concurrency = options.concurrency ?? 4;
  const discovery = options.discovery ?? network.discovery;

  async function getHead(): Promise<ChainHead> {
    await rpc.checkHeadsIfDue();
    return rpc.call('getnowblock', async (host) => {
      const [latestJson, solidifiedJson] = await Promise.all([
        host.tronWeb.trx.getCurrentBlock(),
        host.tronWeb.trx.getConfirmedCurrentBlock(),
      ]);
      const latest = parseBlock(latestJson).ref;
      const solidified = parseBlock(solidifiedJson).ref.number;
      rpc.observeHead(host, latest.number);
      if (solidified > latest.number) {
        throw new TronEndpointError(
          'inconsistent',
          `${host.label}: solidified block ${solidified} is above the head ${latest.number}`,
          { host: host.label },
        );
      }
      return { latest, finalized: solidified };
    });
  }

  async function getBlock(blockNumber: bigint): Promise<BlockRef | null> {
    const num = safeBlockNumber(blockNumber);
    return rpc.call('getblockbynum', async (host) => {
      let json: unknown = {};
      try {
        json = await host.tronWeb.trx.getBlockByNumber(num);
      } catch (error) {
        // TronWeb throws a plain "Block not found" for the node's `{}`.
        if (error instanceof TronEndpointError) throw error;
      }
      const block = parseOptionalBlock(json);
      if (block) {
        if (block.ref.number !== blockNumber) {
          throw new TronEndpointError(
            'inconsistent',
            `${host.label} answered block ${block.ref.number} for ${blockNumber}`,
          );
        }
        return block.ref;
      }
      // `{}` means "not that high" only if the node's head agrees.
      const head = parseBlock(await host.tronWeb.trx.getCurrentBlock()).ref.number;
      if (head < blockNumber) return null;
      throw new TronEndpointError(
        'not-served',
        `${host.label} has no block ${blockNumber} below its head ${head}`,
        { host: host.label },
      );
    });
  }

  async function scan(params: ScanParameters): Promise<ScanResult> {
    const size = params.toBlock - params.fromBlock + 1n;
    if (size > BigInt(network.maxBlockRange)) {
      throw new RangeError(
        `${network.name}: scan of ${size} blocks exceeds maxBlockRange ${network.maxBlockRange}`,
      );
    }
    safeBlockNumber(params.toBlock);
    return rpc.call('scan', async (host) => {
      const result = await scanTronTransfers(host, {
        ...params,
        assets,
        blocksPerRequest,
        concurrency,
        discovery,
      });
      if (result.endpointHead !== undefined) rpc.observeHead(host, result.endpointHead);
      return result;
    });
  }

  async function getBalance(
    address: string,
    asset: TrackedAsset,
    _blockNumber: bigint | null,
  ): Promise<BalanceAt> {
    const holder = normalizeTronAddress(address);
    // Tron answers balances only at its newest state, not at a chosen block. The solidity
    // node's (`/walletsolidity/`) newest state is the latest solidified block, the point the
    // watcher credits at: read there, with the solidified block read around the balance, and
    // return the block they agree on.
    return rpc.call('getBalance', async (host) => {
      for (let attempt = 1; ; attempt++) {
        const before = await solidifiedNumber(host);
        const amountBaseUnits = asset.native
          ? await trxBalance(host, holder)
          : await readUint256(
              host,
              asset.contract!,
              'balanceOf(address)',
              [{ type: 'address', value: holder }],
              { solidified: true },
            );
        const after = await solidifiedNumber(host);
        if (before === after) return { amountBaseUnits, blockNumber: after };
        if (attempt >= BALANCE_HEAD_ATTEMPTS) {
          throw new TronEndpointError(
            'inconsistent',
            `${host.label}: the solidified block moved during each of ${attempt} balance reads`,
          );
        }
      }
    });
  }

  async function verify(): Promise<void> {
    await getHead();
    for (const asset of assets) {
      if (asset.native) continue; // TRX decimals are checked against the config at creation
      const contract = asset.contract!;
      const decimals = await rpc.call('decimals', async (host) => {
        try {
          return await readUint256(host, contract, 'decimals()', []);
        } catch (error) {
          if (error instanceof TronContractCallError) {
            throw new ChainConfigError(
              `${network.name}: asset ${asset.symbol}: cannot read decimals() of ${contract} (${error.reason}); is the contract address right?`,
            );
          }
          throw error;
        }
      });
      if (decimals !== BigInt(asset.decimals)) {
        throw new ChainConfigError(
          `${network.name}: asset ${asset.symbol} at ${contract}: decimals() is ${decimals} on chain, the config says ${asset.decimals}`,
        );
      }
    }
  }

  return {
    network: network.name,
    kind: 'tron',
    assets,
    verify,
    getHead,
    getBlock,
    scan,
    getBalance,
    normalizeAddress: normalizeTronAddress,
    rpcStatus: () => rpc.status(),
    async close() {
      rpc.close();
    },
  };
}

async function solidifiedNumber(host: TronHost): Promise<bigint> {
  return parseBlock(await host.tronWeb.trx.getConfirmedCurrentBlock()).ref.number;
}

/** TRX (sun) as of the latest solidified block (`/walletsolidity/getaccount`). */
async function trxBalance(host: TronHost, holder: string): Promise<bigint> {
  const account: unknown = await host.tronWeb.trx.getAccount(holder);
  // A `null` (or any non-object) body is no account at all: a fault of this host, not 0.
  if (typeof account !== 'object' || account === null || Array.isArray(account)) {
    throw malformed('account', `answer is ${JSON.stringify(account)?.slice(0, 40)}`);
  }
  // `{}` is an account never activated: it holds nothing.
  const balance = (account as { balance?: unknown }).balance ?? 0;
  if (typeof balance !== 'number' || !Number.isSafeInteger(balance) || balance < 0) {
    throw malformed('account', `balance ${String(balance)} is not an exact integer`);
  }
  return BigInt(balance);
}

/**
 * Calls a view function returning one uint256 (triggerconstantcontract) and reads the word
 * exactly. The contract itself is the caller: it always exists, a fresh deposit address may not.
 * `solidified`: on the solidity node (`/walletsolidity/triggerconstantcontract`), against the
 * state of the latest solidified block; otherwise against the head.
 */
async function readUint256(
  host: TronHost,
  contract: string,
  signature: string,
  parameters: Array<{ type: string; value: string }>,
  options: { solidified?: boolean } = {},
): Promise<bigint> {
  let answer: { result?: { result?: boolean }; constant_result?: unknown };
  const builder = host.tronWeb.transactionBuilder;
  try {
    answer = (await (
      options.solidified
        ? builder.triggerConfirmedConstantContract.bind(builder)
        : builder.triggerConstantContract.bind(builder)
    )(contract, signature, {}, parameters, contract)) as typeof answer;
  } catch (error) {
    if (error instanceof TronEndpointError) throw error;
    // TronWeb throws the node's `result.message` (a revert, "No contract...") as a plain Error.
    throw new TronContractCallError(contract, signature, (error as Error).message ?? String(error));
  }
  const results = answer.constant_result;
  const word = Array.isArray(results) ? results[0] : undefined;
  if (answer.result?.result !== true || typeof word !== 'string') {
    throw malformed(`${signature} answer`, `no constant_result for ${contract}`);
  }
  if (word === '') throw new TronContractCallError(contract, signature, 'empty result');
  if (!/^[0-9a-fA-F]{64}$/.test(word)) {
    throw malformed(`${signature} answer`, `"${word.slice(0, 80)}" is not one 32-byte word`);
  }
  return BigInt(`0x${word}`);
}

function safeBlockNumber(blockNumber: bigint): number {
  if (blockNumber < 0n || blockNumber > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`block number ${blockNumber} is out of range`);
  }
  return Number(blockNumber);
}

function pick<T extends object, K extends keyof T>(source: T, keys: K[]): Partial<Pick<T, K>> {
  const picked: Partial<Pick<T, K>> = {};
  for (const key of keys) if (source[key] !== undefined) picked[key] = source[key];
  return picked;
}
