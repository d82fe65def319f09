import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Address } from 'viem';
import { createEvmAdapter } from '../../chain-watchers/evm/createEvmAdapter.js';
import { createChainlinkPriceSource } from '../../chain-watchers/prices/chainlink.js';
import { PriceUnavailableError } from '../../chain-watchers/prices.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { devnetNetworkConfig } from '../support/evm/network.js';
import {
  ethCallTo,
  startFlakyRpcProxy,
  type FlakyRpcProxy,
  type RpcFault,
} from '../support/evm/flakyRpcProxy.js';

let devnet: Devnet;
let proxy: FlakyRpcProxy;
let feed: Address;
let roundBlock: bigint;

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 2 });
  proxy = await startFlakyRpcProxy(devnet.url);
  feed = await devnet.deployAggregator(8, 'ETH / USD');
  roundBlock = (await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp()))
    .blockNumber;
});

afterAll(async () => {
  await proxy?.close();
  await devnet?.close();
});

/** The feed read through the proxy, over an adapter that does not retry (one endpoint, one round). */
function source(address: Address = feed) {
  const adapter = createEvmAdapter(
    devnetNetworkConfig({
      rpcUrls: [proxy.url],
      rpcRetries: 0,
      rpcTimeoutMs: 2_000,
      assets: [{ symbol: 'ETH', native: true, decimals: 18 }],
    }),
    { logger: { warn: () => {} } },
  );
  return createChainlinkPriceSource({ chain: adapter, feed: address, maxAgeS: 100_000 });
}

async function failureOf(fault: RpcFault): Promise<PriceUnavailableError> {
  const eth = source();
  proxy.failNext(ethCallTo(feed), fault);
  const error = await eth.quote(roundBlock).catch((caught: unknown) => caught);
  expect(proxy.pendingFaults()).toBe(0);
  expect(error).toBeInstanceOf(PriceUnavailableError);
  return error as PriceUnavailableError;
}

describe('how a Chainlink read that fails is told apart', () => {
  it('a passing RPC failure is `unreachable`, not a refusal at that block: HTTP 503, 429, a dropped connection, a rate-limit JSON-RPC error', async () => {
    for (const fault of [
      { httpStatus: 503 },
      { httpStatus: 429 },
      { dropConnection: true },
      { rpcError: { code: -32005, message: 'daily request count exceeded, request rate limited' } },
      { rpcError: { code: -32603, message: 'Internal error' } },
    ] satisfies RpcFault[]) {
      const error = await failureOf(fault);
      expect([JSON.stringify(fault), error.kind, error.definitive]).toEqual([
        JSON.stringify(fault),
        'unreachable',
        false,
      ]);
    }
    // And the same block reads fine once the endpoint answers again.
    expect((await source().quote(roundBlock)).rate.toString()).toBe('3000');
  });

  it("a node that cannot serve the block's state answers for good (`no-state`): geth, Nethermind, reth, OpenEthereum", async () => {
    for (const message of [
      'missing trie node 288259a570829264e76b2c58d4369b5a94f086018dc4409d1d0131405c5d1975 (path )',
      'missing trie node c6eb (path ) state 0xc6eb is not available, not found',
      'header not found',
      'required historical state unavailable (reexec=128)',
      'historical state 0x1f2e is not available',
      'pruned history unavailable',
      'State at block #11052984 is pruned',
      'This request is not supported because your node is running with state pruning. Run with --pruning=archive.',
    ]) {
      const error = await failureOf({ rpcError: { code: -32000, message } });
      expect([message, error.kind, error.definitive]).toEqual([message, 'no-state', true]);
      expect(error.message).toContain(`(node: ${message})`);
    }
    // reth answers with the "internal error" code, which viem reads as a revert.
    const reth = await failureOf({
      rpcError: { code: -32603, message: 'State at block #3 is pruned' },
    });
    expect(reth.kind).toBe('no-state');
  });

  it('a round the feed refuses, or an address that is no feed, is `refused`', async () => {
    const stale = createChainlinkPriceSource({ chain: devnet.client, feed, maxAgeS: 1 });
    await devnet.mine(1, { increaseTimeS: 60 });
    const old = await stale.quote(null).catch((caught: unknown) => caught);
    expect(old).toMatchObject({ kind: 'refused', definitive: true });
    expect((old as Error).message).toMatch(/s old at block/);

    const notAFeed = await source(devnet.account(1).address)
      .quote(null)
      .catch((caught: unknown) => caught);
    expect(notAFeed).toMatchObject({ kind: 'refused', definitive: true });
  });
});
