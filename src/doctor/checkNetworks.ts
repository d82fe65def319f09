import type { ChainAdapter, ChainHead } from '../../chain-watchers/adapter.js';
import { ChainConfigError, RpcUnavailableError } from '../../chain-watchers/adapter.js';
import { createAdapters, createPriceSources } from '../../chain-watchers/pipeline/createWatcher.js';
import type { WatcherLogger } from '../../chain-watchers/pipeline/depositWatcher.js';
import type { Config, NetworkConfig } from '../config/schema.js';
import { fail, hostOf, ok, reasonOf, warn, type DoctorCheck } from './check.js';

/** A head older than this suggests a stuck or syncing node (or a halted chain). */
const HEAD_AGE_WARN_S = 15 * 60;

const quiet: WatcherLogger = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * Each network, each of its endpoints on its own (a failover hides a dead endpoint): the node
 * answers and serves the configured chain (EVM chain id), its head and final block, and every
 * token contract's decimals() against the config. Then each Chainlink price source answers
 * fresh. One attempt per call, at most `timeoutMs` each.
 */
export async function checkNetworks(config: Config, timeoutMs: number): Promise<DoctorCheck[]> {
  const perNetwork = await Promise.all(
    config.networks.map(async (network) => {
      const endpoints = endpointsOf(network);
      const endpointChecks = await Promise.all(
        endpoints.map((url, i) => checkEndpoint(network, url, i, endpoints.length, timeoutMs)),
      );
      return [...endpointChecks.flat(), ...(await checkPrices(config, network, timeoutMs))];
    }),
  );
  return perNetwork.flat();
}

function endpointsOf(network: NetworkConfig): string[] {
  return network.kind === 'evm' ? network.rpcUrls : [network.fullHost, ...network.fallbackHosts];
}

/** The network as if `url` were its only endpoint, tried once. */
function onlyEndpoint(network: NetworkConfig, url: string, timeoutMs: number): NetworkConfig {
  const common = { rpcRetries: 0, rpcTimeoutMs: Math.min(network.rpcTimeoutMs, timeoutMs) };
  return network.kind === 'evm'
    ? { ...network, ...common, rpcUrls: [url] }
    : { ...network, ...common, fullHost: url, fallbackHosts: [] };
}

async function checkEndpoint(
  network: NetworkConfig,
  url: string,
  index: number,
  count: number,
  timeoutMs: number,
): Promise<DoctorCheck[]> {
  const area = network.name;
  const label = `${count > 1 ? `endpoint ${index + 1} ` : ''}${hostOf(url)}`;
  const single = onlyEndpoint(network, url, timeoutMs);
  const where =
    network.kind === 'evm'
      ? `networks "${network.name}" rpcUrls[${index}]`
      : index === 0
        ? `networks "${network.name}" fullHost`
        : `networks "${network.name}" fallbackHosts[${index - 1}]`;
  let adapter: ChainAdapter;
  try {
    adapter = createAdapters([single], quiet).get(network.name)!;
  } catch (error) {
    return [fail(area, `${label}: ${reasonOf(error)}`, `fix the assets of network "${area}"`)];
  }
  const checks: DoctorCheck[] = [];
  try {
    let head: ChainHead;
    try {
      head = await adapter.getHead();
    } catch (error) {
      return [endpointFailure(area, label, where, network, error)];
    }
    checks.push(describeHead(area, label, network, head));
    const tokens = network.assets.filter((asset) => !asset.native);
    const tokenChecks = await Promise.all(
      tokens.map(async (asset) => {
        const oneAsset = { ...single, assets: [asset] } as NetworkConfig;
        const tokenAdapter = createAdapters([oneAsset], quiet).get(network.name)!;
        try {
          await tokenAdapter.verify();
          return ok(
            area,
            `${label}: ${asset.symbol} contract ${asset.contract}: decimals() is ${asset.decimals}, as configured`,
          );
        } catch (error) {
          if (error instanceof ChainConfigError)
            return fail(
              area,
              `${label}: ${reasonOf(error)}`,
              `set the asset's "decimals" to what the contract says (and check the contract address is the token's on this chain); when it exceeds the currency's scale, widen it in "currencies"`,
            );
          return endpointFailure(area, label, where, network, error);
        } finally {
          await tokenAdapter.close().catch(() => {});
        }
      }),
    );
    checks.push(...tokenChecks);
  } finally {
    await adapter.close().catch(() => {});
  }
  return checks;
}

function describeHead(
  area: string,
  label: string,
  network: NetworkConfig,
  head: ChainHead,
): DoctorCheck {
  const chain = network.kind === 'evm' ? `chain id ${network.chainId}, ` : '';
  const final =
    head.finalized === null
      ? ''
      : `, ${network.kind === 'tron' ? 'solidified' : 'finalized'} ${head.finalized}`;
  const ageS = Math.max(0, Math.round(Date.now() / 1000 - Number(head.latest.timestamp)));
  const message = `${label}: ${chain}head ${head.latest.number} (${ageS} s old)${final}`;
  if (ageS > HEAD_AGE_WARN_S)
    return warn(
      area,
      message,
      'the newest block is old: the node may be syncing or stuck; compare with a block explorer',
    );
  if (network.confirmations === 'finalized' && head.finalized === null)
    return fail(
      area,
      `${message}; the node knows no finalized block`,
      'this network is configured with confirmations "finalized": use a node that serves the finalized tag, or a confirmation count',
    );
  return ok(area, message);
}

function endpointFailure(
  area: string,
  label: string,
  where: string,
  network: NetworkConfig,
  error: unknown,
): DoctorCheck {
  if (error instanceof ChainConfigError)
    return fail(
      area,
      `${label}: ${reasonOf(error)}`,
      network.kind === 'evm'
        ? `the endpoint serves another chain: fix ${where} or the network's chainId (${network.chainId})`
        : `fix ${where}`,
    );
  const reason = reasonOf(error instanceof RpcUnavailableError ? error.cause : error);
  return fail(
    area,
    `${label}: no answer (${reason})`,
    `check ${where}: the URL, its API key, and that this machine can reach it`,
  );
}

/** Chainlink sources answer, and freshly (the watcher refuses stale prices too). */
async function checkPrices(
  config: Config,
  network: NetworkConfig,
  timeoutMs: number,
): Promise<DoctorCheck[]> {
  const priced = network.assets.filter((asset) => 'chainlink' in asset.price);
  if (priced.length === 0) return [];
  const adapters = createAdapters(
    config.networks.map((n) => ({
      ...n,
      rpcRetries: 0,
      rpcTimeoutMs: Math.min(n.rpcTimeoutMs, timeoutMs),
    })),
    quiet,
  );
  try {
    const sources = createPriceSources(network, adapters);
    return await Promise.all(
      priced.map(async (asset) => {
        const feed = 'chainlink' in asset.price ? asset.price.chainlink : null;
        try {
          const quote = await sources.get(asset.symbol)!.quote(null);
          return ok(
            network.name,
            `${asset.symbol} price ${quote.rate.toString()} USD from Chainlink ${feed?.feed} on ${feed?.network}`,
          );
        } catch (error) {
          return fail(
            network.name,
            `${asset.symbol} price from Chainlink ${feed?.feed} on ${feed?.network}: ${reasonOf(error)}`,
            `check the feed address is the ${asset.symbol}/USD aggregator on ${feed?.network}, that network's endpoints, and maxAgeS`,
          );
        }
      }),
    );
  } finally {
    await Promise.all([...adapters.values()].map((a) => a.close().catch(() => {})));
  }
}
