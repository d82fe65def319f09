import { BaseError, erc20Abi, type Address, type PublicClient } from 'viem';
import {
  ChainConfigError,
  RpcUnavailableError,
  type BalanceAt,
  type BlockRef,
  type ChainAdapter,
  type ChainHead,
  type ScanParameters,
  type ScanResult,
  type TrackedAsset,
} from '../adapter.js';
import type { EvmNetworkConfig } from '../config.js';
import { normalizeEvmAddress, trackedAssetsFromConfig } from './assets.js';
import { getBlockRef, isNodeRefusal } from './blocks.js';
import { EvmRpc, type EndpointStatus, type EvmRpcOptions, type RpcLogger } from './rpc.js';
import {
  assertScanParameters,
  scanTransfers,
  TransferLogPlanner,
  type TransferLogQueryMode,
} from './scan.js';

export interface EvmAdapterOptions {
  /** Where warnings about endpoints go (a pino logger fits); stderr by default. */
  logger?: RpcLogger;
  /** Watched addresses per `eth_getLogs` topic filter (default 500). */
  logAddressChunkSize?: number;
  /** Blocks or receipts per JSON-RPC batch (default 100). */
  batchSize?: number;
  /** `eth_getLogs` filters in flight at once (default 4). */
  logQueryConcurrency?: number;
  /** How Transfer logs are queried (default `auto`); see TransferLogQueryMode. */
  transferLogQuery?: TransferLogQueryMode;
  /** Largest JSON-RPC response accepted, in bytes (default 32 MiB); larger ranges are split. */
  maxResponseBodySizeBytes?: number;
  /** Failover tuning; see EvmRpc. */
  rpc?: Pick<
    EvmRpcOptions,
    | 'demoteMs'
    | 'demoteMsMax'
    | 'retryBaseDelayMs'
    | 'retryMaxDelayMs'
    | 'headCheckIntervalMs'
    | 'staleHeadLagBlocks'
  >;
}

export interface EvmAdapter extends ChainAdapter {
  readonly kind: 'evm';
  readonly chainId: number;
  /**
   * Runs `work` on one endpoint with this network's timeouts, retries and failover: for
   * reads the ChainAdapter interface does not cover (a Chainlink feed). Everything inside one
   * `work` call reaches the same endpoint.
   */
  withClient<T>(method: string, work: (client: PublicClient) => Promise<T>): Promise<T>;
  /** Health of each endpoint, for /metrics and operators (URLs reduced to their host). */
  rpcStatus(): EndpointStatus[];
}

const consoleLogger: RpcLogger = {
  warn(details, message) {
    console.warn(`[evm] ${message} ${JSON.stringify(details)}`);
  },
};

/**
 * The ChainAdapter of one EVM network, over viem's HTTP transport.
 *
 * @example
 * const adapter = createEvmAdapter(config.networks.ethereum);
 * await adapter.verify();
 * const { transfers, toBlockRef } = await adapter.scan({ fromBlock, toBlock, addresses });
 */
export function createEvmAdapter(
  network: EvmNetworkConfig,
  options: EvmAdapterOptions = {},
): EvmAdapter {
  const assets = trackedAssetsFromConfig(network);
  const rpc = new EvmRpc({
    network: network.name,
    chainId: network.chainId,
    urls: network.rpcUrls,
    timeoutMs: network.rpcTimeoutMs,
    retries: network.rpcRetries,
    logger: options.logger ?? consoleLogger,
    ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
    ...(options.maxResponseBodySizeBytes === undefined
      ? {}
      : { maxResponseBodySizeBytes: options.maxResponseBodySizeBytes }),
    ...options.rpc,
  });
  const scanTuning = {
    addressChunkSize: options.logAddressChunkSize ?? 500,
    batchSize: options.batchSize ?? 100,
    logQueryConcurrency: options.logQueryConcurrency ?? 4,
    logPlanner: new TransferLogPlanner(options.transferLogQuery ?? 'auto'),
    // What is final on the chain a scan saw, only where deposits are credited at it.
    readFinalized: network.confirmations === 'finalized',
  };

  async function verify(): Promise<void> {
    await rpc.verifyChainIds();
    for (const asset of assets) {
      if (asset.native || asset.contract === null) continue;
      const contract = asset.contract as Address;
      let decimals: number;
      try {
        decimals = await rpc.call(`${asset.symbol}.decimals`, (client) =>
          client.readContract({ address: contract, abi: erc20Abi, functionName: 'decimals' }),
        );
      } catch (error) {
        if (error instanceof RpcUnavailableError) throw error;
        const reason = error instanceof BaseError ? error.shortMessage : String(error);
        throw new ChainConfigError(
          `${network.name}: ${asset.symbol} contract ${contract} does not answer decimals() (${reason}); is it the right address for chain id ${network.chainId}?`,
          { cause: error },
        );
      }
      if (decimals !== asset.decimals) {
        throw new ChainConfigError(
          `${network.name}: ${asset.symbol} contract ${contract} has ${decimals} decimals on chain, but the config says ${asset.decimals}; fix the config`,
        );
      }
    }
  }

  async function getHead(): Promise<ChainHead> {
    return rpc.call('getHead', async (client) => {
      const latest = await getBlockRef(client, 'latest');
      if (!latest) throw new Error('the endpoint returned no latest block');
      rpc.observeHead(client, latest.number);
      let finalized: bigint | null = null;
      try {
        finalized = (await getBlockRef(client, 'finalized'))?.number ?? null;
      } catch (error) {
        // Nodes of chains without finality (or old clients) refuse the tag: no notion, not a fault.
        if (!isNodeRefusal(error)) throw error;
      }
      return { latest, finalized };
    });
  }

  async function getBlock(number: bigint): Promise<BlockRef | null> {
    return rpc.call('getBlock', (client) => getBlockRef(client, number));
  }

  async function scan(params: ScanParameters): Promise<ScanResult> {
    assertScanParameters(params);
    return rpc.call('scan', async (client) => {
      const result = await scanTransfers(client, { ...params, assets, ...scanTuning });
      if (result.endpointHead !== undefined) rpc.observeHead(client, result.endpointHead);
      return result;
    });
  }

  async function getBalance(
    address: string,
    asset: TrackedAsset,
    blockNumber: bigint | null,
  ): Promise<BalanceAt> {
    const owner = normalizeEvmAddress(address) as Address;
    const tracked = assets.find(
      (candidate) => candidate.native === asset.native && candidate.contract === asset.contract,
    );
    if (!tracked) {
      throw new ChainConfigError(
        `${network.name}: ${asset.symbol} is not an asset of this network`,
      );
    }
    return rpc.call('getBalance', async (client) => {
      // A balance "now" is pinned to a block, so the answer says which block it is as of.
      const at = blockNumber ?? (await client.getBlockNumber({ cacheTime: 0 }));
      const amountBaseUnits =
        tracked.contract === null
          ? await client.getBalance({ address: owner, blockNumber: at })
          : await client.readContract({
              address: tracked.contract as Address,
              abi: erc20Abi,
              functionName: 'balanceOf',
              args: [owner],
              blockNumber: at,
            });
      return { amountBaseUnits, blockNumber: at };
    });
  }

  return {
    network: network.name,
    kind: 'evm',
    chainId: network.chainId,
    assets,
    verify,
    getHead,
    getBlock,
    scan,
    getBalance,
    normalizeAddress: normalizeEvmAddress,
    withClient: (method, work) => rpc.call(method, work),
    rpcStatus: () => rpc.status(),
    async close() {
      // HTTP transports hold no connections of their own to close.
    },
  };
}
