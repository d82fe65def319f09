import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getAddress, toHex, type Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import {
  ChainConfigError,
  RpcUnavailableError,
  type ObservedTransfer,
  type TrackedAsset,
} from '../../chain-watchers/adapter.js';
import {
  createEvmAdapter,
  type EvmAdapter,
  type EvmAdapterOptions,
} from '../../chain-watchers/evm/createEvmAdapter.js';
import { startDevnet, type Devnet, type DevnetAccount } from '../support/evm/devnet.js';
import { devnetNetworkConfig, type DevnetAssetInput } from '../support/evm/network.js';
import {
  DEAD_RPC_URL,
  startFailingRpcServer,
  startHangingRpcServer,
  startRpcProxy,
  type TestRpcServer,
} from '../support/evm/rpcServers.js';

const ETHER = 10n ** 18n;

let devnet: Devnet;
let usdt: Address;
let dai: Address;
let fakeUsdt: Address;
let sender: DevnetAccount;
let alice: DevnetAccount;
let bob: DevnetAccount;
let stranger: DevnetAccount;
let adapter: EvmAdapter;
const warnings: string[] = [];
const servers: TestRpcServer[] = [];

function assetInputs(overrides: { daiDecimals?: number } = {}): DevnetAssetInput[] {
  return [
    // Checksummed in config on purpose: the adapter must match contracts case-insensitively.
    { symbol: 'USDT', contract: getAddress(usdt), decimals: 6 },
    { symbol: 'DAI', contract: dai, decimals: overrides.daiDecimals ?? 18 },
    { symbol: 'ETH', native: true, decimals: 18 },
  ];
}

function adapterFor(
  rpcUrls: string[],
  options: EvmAdapterOptions = {},
  config: { chainId?: number; rpcRetries?: number; daiDecimals?: number } = {},
): EvmAdapter {
  return createEvmAdapter(
    devnetNetworkConfig({
      rpcUrls,
      assets: assetInputs(config),
      ...(config.chainId === undefined ? {} : { chainId: config.chainId }),
      ...(config.rpcRetries === undefined ? {} : { rpcRetries: config.rpcRetries }),
    }),
    {
      logger: {
        warn: (details, message) => warnings.push(`${message} ${JSON.stringify(details)}`),
      },
      ...options,
      rpc: { retryBaseDelayMs: 10, ...options.rpc },
    },
  );
}

function asset(symbol: string): TrackedAsset {
  const found = adapter.assets.find((candidate) => candidate.symbol === symbol);
  if (!found) throw new Error(`no asset ${symbol}`);
  return found;
}

async function scanSince(fromBlock: bigint, addresses: string[], on: EvmAdapter = adapter) {
  const toBlock = await devnet.blockNumber();
  return on.scan({ fromBlock, toBlock, addresses: new Set(addresses) });
}

async function nextBlock(): Promise<bigint> {
  return (await devnet.blockNumber()) + 1n;
}

beforeAll(async () => {
  devnet = await startDevnet();
  [sender, alice, bob, stranger] = [0, 1, 2, 3].map((index) => devnet.account(index)) as [
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
  ];
  usdt = await devnet.deployToken(6, { name: 'Tether USD', symbol: 'USDT' });
  dai = await devnet.deployToken(18, { name: 'Dai Stablecoin', symbol: 'DAI' });
  fakeUsdt = await devnet.deployToken(6, { name: 'Tether USD', symbol: 'USDT' });
  await devnet.mint(usdt, sender.address, 1_000_000_000_000n);
  await devnet.mint(dai, sender.address, 1_000_000n * ETHER);
  await devnet.mint(fakeUsdt, sender.address, 1_000_000_000_000n);
  adapter = adapterFor([devnet.url]);
});

afterAll(async () => {
  await Promise.all(servers.map((server) => server.close()));
  await devnet?.close();
});

describe('scan: deposits to watched addresses', () => {
  it('returns USDT (6 decimals) and DAI (18 decimals) deposits with exact amounts, log indexes and block hashes', async () => {
    const fromBlock = await nextBlock();
    const single = await devnet.transferToken(usdt, sender, alice.address, 12_345_678n);
    const large = await devnet.transferToken(dai, sender, bob.address, 1_500_000_000_000_000_001n);
    // One transaction, three Transfer logs: 0 to alice, 1 to a stranger, 2 to bob.
    const batch = await devnet.transferTokenMany(usdt, sender, [
      { to: alice.address, amountBaseUnits: 1n },
      { to: stranger.address, amountBaseUnits: 5n },
      { to: bob.address, amountBaseUnits: 2_000_000n },
    ]);

    const { transfers, toBlockRef } = await scanSince(fromBlock, [alice.address, bob.address]);

    const deposit = (
      sent: typeof single,
      logIndex: number,
      contract: Address,
      symbol: string,
      to: Address,
      amountBaseUnits: bigint,
    ): ObservedTransfer => ({
      txHash: sent.txHash,
      logIndex,
      blockNumber: sent.blockNumber,
      blockHash: sent.blockHash,
      blockTimestamp: expect.any(BigInt) as bigint,
      contract,
      asset: asset(symbol),
      from: sender.address,
      to,
      amountBaseUnits,
      success: true,
      feeBaseUnits: null,
    });
    expect(transfers).toEqual([
      deposit(single, 0, usdt, 'USDT', alice.address, 12_345_678n),
      deposit(large, 0, dai, 'DAI', bob.address, 1_500_000_000_000_000_001n),
      deposit(batch, 0, usdt, 'USDT', alice.address, 1n),
      deposit(batch, 2, usdt, 'USDT', bob.address, 2_000_000n),
    ]);
    for (const transfer of transfers) {
      expect(transfer.blockTimestamp).toBe(await devnet.blockTimestamp(transfer.blockNumber));
    }
    expect(toBlockRef).toEqual(await adapter.getBlock(batch.blockNumber));
  });

  it('returns native ETH sent to a watched address with log index -1', async () => {
    const fromBlock = await nextBlock();
    const sent = await devnet.sendEth(sender, alice.address, ETHER / 4n);

    const { transfers } = await scanSince(fromBlock, [alice.address]);

    expect(transfers).toEqual([
      {
        txHash: sent.txHash,
        logIndex: -1,
        blockNumber: sent.blockNumber,
        blockHash: sent.blockHash,
        blockTimestamp: await devnet.blockTimestamp(sent.blockNumber),
        contract: null,
        asset: asset('ETH'),
        from: sender.address,
        to: alice.address,
        amountBaseUnits: 250_000_000_000_000_000n,
        success: true,
        feeBaseUnits: null,
      },
    ]);
  });

  it('returns a same-symbol token from another contract with asset null', async () => {
    const fromBlock = await nextBlock();
    const fake = await devnet.transferToken(fakeUsdt, sender, alice.address, 100_000_000n);

    const { transfers } = await scanSince(fromBlock, [alice.address]);

    expect(transfers).toHaveLength(1);
    expect(transfers[0]).toMatchObject({
      txHash: fake.txHash,
      contract: fakeUsdt,
      asset: null,
      amountBaseUnits: 100_000_000n,
    });
  });

  it('never returns a reverted transfer as a successful one', async () => {
    const refuser = await devnet.deploy('EtherRefuser');
    const fromBlock = await nextBlock();
    await devnet.setTransfersBlocked(usdt, true);
    const revertedToken = await devnet.transferToken(usdt, sender, alice.address, 5_000_000n, {
      gas: 200_000n,
    });
    await devnet.setTransfersBlocked(usdt, false);
    const revertedEth = await devnet.sendEth(sender, refuser, ETHER, { gas: 100_000n });
    expect([revertedToken.status, revertedEth.status]).toEqual(['reverted', 'reverted']);

    const { transfers } = await scanSince(fromBlock, [alice.address, refuser]);

    // A reverted token transfer leaves no log at all; a reverted native payment is reported failed.
    expect(transfers.filter((transfer) => transfer.success)).toEqual([]);
    expect(transfers).toEqual([
      expect.objectContaining({
        txHash: revertedEth.txHash,
        logIndex: -1,
        to: refuser,
        amountBaseUnits: ETHER,
        success: false,
      }),
    ]);
  });

  it('reports a reverted token transfer sent by a watched address as failed, with the fee it paid', async () => {
    await devnet.mint(usdt, alice.address, 5_000_000n);
    const fromBlock = await nextBlock();
    await devnet.setTransfersBlocked(usdt, true);
    const reverted = await devnet.transferToken(usdt, alice, stranger.address, 5_000_000n, {
      gas: 200_000n,
    });
    await devnet.setTransfersBlocked(usdt, false);
    expect(reverted.status).toBe('reverted');

    // It left no Transfer log; its sender's transaction is read from the block instead.
    const { transfers } = await scanSince(fromBlock, [alice.address]);
    expect(transfers).toEqual([
      {
        txHash: reverted.txHash,
        logIndex: -1,
        blockNumber: reverted.blockNumber,
        blockHash: reverted.blockHash,
        blockTimestamp: expect.any(BigInt),
        contract: usdt.toLowerCase(),
        asset: asset('USDT'),
        from: alice.address,
        to: stranger.address,
        amountBaseUnits: 5_000_000n,
        success: false,
        feeBaseUnits: reverted.feeWei,
      },
    ]);
  });

  it('carries the network fee on transfers out of a watched address', async () => {
    await devnet.mint(usdt, alice.address, 50_000_000n);
    const fromBlock = await nextBlock();
    const sweep = await devnet.transferToken(usdt, alice, stranger.address, 40_000_000n);
    const ethOut = await devnet.sendEth(alice, stranger.address, ETHER / 10n);

    const { transfers } = await scanSince(fromBlock, [alice.address]);

    expect(transfers).toEqual([
      expect.objectContaining({
        txHash: sweep.txHash,
        from: alice.address,
        to: stranger.address,
        amountBaseUnits: 40_000_000n,
        feeBaseUnits: sweep.feeWei,
        success: true,
      }),
      expect.objectContaining({
        txHash: ethOut.txHash,
        logIndex: -1,
        from: alice.address,
        amountBaseUnits: ETHER / 10n,
        feeBaseUnits: ethOut.feeWei,
        success: true,
      }),
    ]);
    expect(sweep.feeWei).toBeGreaterThan(0n);
  });

  it('refuses a reversed range or a non-canonical address at once, without retrying', async () => {
    await expect(
      adapter.scan({ fromBlock: 5n, toBlock: 4n, addresses: new Set([alice.address]) }),
    ).rejects.toThrow(RangeError);
    await expect(
      adapter.scan({ fromBlock: 1n, toBlock: 2n, addresses: new Set([getAddress(alice.address)]) }),
    ).rejects.toThrow(/not canonical/);
  });

  it('returns nothing, but the block, when no address is watched', async () => {
    const head = await devnet.blockNumber();
    const result = await adapter.scan({ fromBlock: 1n, toBlock: head, addresses: new Set() });
    expect(result.transfers).toEqual([]);
    expect(result.toBlockRef.number).toBe(head);
  });

  it('finds the same transfers when the provider caps eth_getLogs at 3 blocks', async () => {
    const fromBlock = await nextBlock();
    for (let index = 0; index < 8; index++) {
      await devnet.transferToken(usdt, sender, index % 2 ? alice.address : bob.address, 1n);
    }
    const capped = await startRpcProxy(devnet.url, (call) => {
      if (call.method !== 'eth_getLogs') return undefined;
      const filter = call.params[0] as { fromBlock: string; toBlock: string };
      const blocks = BigInt(filter.toBlock) - BigInt(filter.fromBlock) + 1n;
      return blocks > 3n
        ? { error: { code: -32005, message: 'query exceeds max block range 3' } }
        : undefined;
    });
    servers.push(capped);

    const direct = await scanSince(fromBlock, [alice.address, bob.address]);
    const split = await scanSince(
      fromBlock,
      [alice.address, bob.address],
      adapterFor([capped.url]),
    );

    expect(direct.transfers).toHaveLength(8);
    expect(split.transfers).toEqual(direct.transfers);
    expect(capped.methods.filter((method) => method === 'eth_getLogs').length).toBeGreaterThan(2);
  });

  it('watches thousands of addresses with one unfiltered query, or topic filters when the provider refuses it', async () => {
    const many = [
      ...Array.from({ length: 1_500 }, () =>
        privateKeyToAccount(generatePrivateKey()).address.toLowerCase(),
      ),
      alice.address,
    ];
    const fromBlock = await nextBlock();
    const toAlice = await devnet.transferToken(usdt, sender, alice.address, 11n);
    const toUser = await devnet.transferToken(dai, sender, many[700] as Address, 22n);
    await devnet.transferToken(usdt, sender, stranger.address, 33n);
    const counting = await startRpcProxy(devnet.url, () => undefined);
    const refusing = await startRpcProxy(devnet.url, (call) => {
      const filter = call.params[0] as { topics?: unknown[] } | undefined;
      return call.method === 'eth_getLogs' && filter?.topics?.length === 1
        ? { error: { code: -32005, message: 'query returned more than 10000 results' } }
        : undefined;
    });
    servers.push(counting, refusing);

    const unfiltered = await scanSince(fromBlock, many, adapterFor([counting.url]));
    const filtered = await scanSince(fromBlock, many, adapterFor([refusing.url]));

    expect(unfiltered.transfers.map((transfer) => [transfer.txHash, transfer.to])).toEqual([
      [toAlice.txHash, alice.address],
      [toUser.txHash, many[700]],
    ]);
    expect(filtered.transfers).toEqual(unfiltered.transfers);
    expect(counting.methods.filter((method) => method === 'eth_getLogs')).toHaveLength(1);
    // One refused unfiltered try, then to/from filters for 500 addresses at a time.
    expect(refusing.methods.filter((method) => method === 'eth_getLogs')).toHaveLength(1 + 2 * 4);
  });

  it('drops a transfer whose block was reorged away and reports the new block', async () => {
    const snapshot = await devnet.snapshot();
    const fromBlock = await nextBlock();
    const orphan = await devnet.transferToken(usdt, sender, alice.address, 777n);
    const before = await scanSince(fromBlock, [alice.address]);
    expect(before.transfers.map((transfer) => transfer.txHash)).toEqual([orphan.txHash]);

    await devnet.revert(snapshot);
    await devnet.mine(1, { increaseTimeS: 1 });
    const after = await scanSince(fromBlock, [alice.address]);

    expect(after.transfers).toEqual([]);
    expect(after.toBlockRef.number).toBe(before.toBlockRef.number);
    expect(after.toBlockRef.hash).not.toBe(before.toBlockRef.hash);
  });

  it('refuses a range whose first block does not follow the parentHash it continues (an endpoint on another fork)', async () => {
    const fromBlock = await nextBlock();
    await devnet.transferToken(usdt, sender, alice.address, 1n);
    await devnet.mine(2);
    const parent = await devnet.client.getBlock({ blockNumber: fromBlock - 1n });
    const tokensOnly = createEvmAdapter(
      devnetNetworkConfig({
        rpcUrls: [devnet.url],
        assets: [{ symbol: 'USDT', contract: usdt, decimals: 6 }],
        rpcRetries: 0,
      }),
      { logger: { warn: () => {} } },
    );
    // With a native asset every block of the range is read; without, only its ends.
    for (const on of [adapterFor([devnet.url], {}, { rpcRetries: 0 }), tokensOnly]) {
      for (const toBlock of [fromBlock, fromBlock + 2n]) {
        const range = { fromBlock, toBlock, addresses: new Set([alice.address]) };
        const continued = await on.scan({ ...range, parentHash: parent.hash });
        expect(continued.transfers).toHaveLength(1);
        const error = await on
          .scan({ ...range, parentHash: parent.parentHash })
          .catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(RpcUnavailableError);
        expect((error as Error).message).toMatch(
          new RegExp(`block ${fromBlock} .* does not continue .*: the endpoint is on another fork`),
        );
      }
    }
  });
});

describe('verify', () => {
  it('accepts a config that matches the chain', async () => {
    await expect(adapter.verify()).resolves.toBeUndefined();
  });

  it('refuses a token whose decimals disagree with the contract, naming network, symbol and contract', async () => {
    const wrong = adapterFor([devnet.url], {}, { daiDecimals: 6 });
    const error = await wrong.verify().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChainConfigError);
    expect((error as Error).message).toBe(
      `devnet: DAI contract ${dai} has 18 decimals on chain, but the config says 6; fix the config`,
    );
  });

  it('refuses a token address with no contract behind it', async () => {
    const noContract = createEvmAdapter(
      devnetNetworkConfig({
        rpcUrls: [devnet.url],
        assets: [{ symbol: 'USDT', contract: stranger.address, decimals: 6 }],
      }),
      { logger: { warn: () => {} } },
    );
    await expect(noContract.verify()).rejects.toThrow(/USDT contract .* does not answer decimals/);
  });

  it('refuses endpoints that serve another chain', async () => {
    const wrongChain = adapterFor([devnet.url], {}, { chainId: 56 });
    await expect(wrongChain.verify()).rejects.toBeInstanceOf(ChainConfigError);
    await expect(wrongChain.getHead()).rejects.toBeInstanceOf(ChainConfigError);
  });

  it('drops one wrong endpoint with a warning and keeps the right one', async () => {
    const bscProxy = await startRpcProxy(devnet.url, (call) =>
      call.method === 'eth_chainId' ? { result: toHex(56) } : undefined,
    );
    servers.push(bscProxy);
    const mixed = adapterFor([bscProxy.url, devnet.url]);

    await mixed.verify();
    const head = await mixed.getHead();

    expect(head.latest.number).toBe(await devnet.blockNumber());
    expect(mixed.rpcStatus().map((endpoint) => endpoint.dropped)).toEqual([true, false]);
    expect(bscProxy.methods).toEqual(['eth_chainId']);
    expect(warnings.some((warning) => warning.includes('serves another chain'))).toBe(true);
  });
});

describe('blocks and balances', () => {
  it('reports the head and the finalized block (ganache finalizes instantly)', async () => {
    const head = await adapter.getHead();
    expect(head.latest.number).toBe(await devnet.blockNumber());
    expect(head.finalized).toBe(head.latest.number);
  });

  it('reports finalized as null when the node refuses the tag', async () => {
    const noFinality = await startRpcProxy(devnet.url, (call) =>
      call.method === 'eth_getBlockByNumber' && call.params[0] === 'finalized'
        ? { error: { code: -32602, message: 'invalid block tag finalized' } }
        : undefined,
    );
    servers.push(noFinality);
    const head = await adapterFor([noFinality.url]).getHead();
    expect(head.finalized).toBeNull();
    expect(head.latest.number).toBe(await devnet.blockNumber());
  });

  it('a scan reports its own endpoint\'s finalized block only with "finalized" confirmations; nothing final where the node refuses the tag', async () => {
    let refuse = false;
    let finalizedReads = 0;
    const proxy = await startRpcProxy(devnet.url, (call) => {
      if (call.method !== 'eth_getBlockByNumber' || call.params[0] !== 'finalized') return;
      finalizedReads += 1;
      return refuse
        ? { error: { code: -32602, message: 'invalid block tag finalized' } }
        : undefined;
    });
    servers.push(proxy);
    const base = devnetNetworkConfig({ rpcUrls: [proxy.url], assets: assetInputs() });
    const counted = createEvmAdapter(base, { logger: { warn() {} } });
    const final = createEvmAdapter(
      { ...base, confirmations: 'finalized' },
      { logger: { warn() {} } },
    );
    const from = await devnet.mine(1);
    const to = await devnet.blockNumber();

    const plain = await scanSince(from, [alice.address.toLowerCase()], counted);
    expect(plain.endpointFinalized).toBeUndefined();
    expect(finalizedReads).toBe(0);

    const scanned = await scanSince(from, [alice.address.toLowerCase()], final);
    expect(scanned.endpointHead).toBe(to);
    expect(scanned.endpointFinalized).toBe(to); // ganache finalizes instantly
    expect(finalizedReads).toBe(1);

    refuse = true;
    expect((await scanSince(from, [], final)).endpointFinalized).toBe(-1n);
  });

  it('returns null for a block the chain has not reached', async () => {
    expect(await adapter.getBlock((await devnet.blockNumber()) + 1000n)).toBeNull();
  });

  it('returns a different block at the same height after a reorg', async () => {
    const snapshot = await devnet.snapshot();
    const height = await devnet.mine(2);
    const original = await adapter.getBlock(height);

    await devnet.revert(snapshot);
    await devnet.mine(2, { increaseTimeS: 1 });
    const replacement = await adapter.getBlock(height);

    expect(replacement?.number).toBe(height);
    expect(replacement?.hash).not.toBe(original?.hash);
    expect(replacement?.parentHash).toBe((await adapter.getBlock(height - 1n))?.hash);
  });

  it('returns the balance as of an older block', async () => {
    const owner = privateKeyToAccount(generatePrivateKey()).address.toLowerCase() as Address;
    const first = await devnet.transferToken(usdt, sender, owner, 7_000_000n);
    const second = await devnet.transferToken(usdt, sender, owner, 3_000_000n);
    const eth = await devnet.sendEth(sender, owner, 123n);

    expect(await adapter.getBalance(owner, asset('USDT'), first.blockNumber - 1n)).toEqual({
      amountBaseUnits: 0n,
      blockNumber: first.blockNumber - 1n,
    });
    expect(await adapter.getBalance(owner, asset('USDT'), first.blockNumber)).toEqual({
      amountBaseUnits: 7_000_000n,
      blockNumber: first.blockNumber,
    });
    expect(await adapter.getBalance(owner, asset('USDT'), second.blockNumber)).toEqual({
      amountBaseUnits: 10_000_000n,
      blockNumber: second.blockNumber,
    });
    expect(
      (await adapter.getBalance(owner, asset('ETH'), second.blockNumber)).amountBaseUnits,
    ).toBe(0n);
    expect(await adapter.getBalance(getAddress(owner), asset('ETH'), null)).toEqual({
      amountBaseUnits: 123n,
      blockNumber: eth.blockNumber,
    });
  });

  it('normalizes addresses to lower case and refuses bad ones', () => {
    expect(adapter.normalizeAddress('0xdAC17F958D2ee523a2206206994597C13D831ec7')).toBe(
      '0xdac17f958d2ee523a2206206994597c13d831ec7',
    );
    expect(adapter.normalizeAddress('0xDAC17F958D2EE523A2206206994597C13D831EC7')).toBe(
      '0xdac17f958d2ee523a2206206994597c13d831ec7',
    );
    // One letter's case flipped: the checksum catches the typo.
    expect(() => adapter.normalizeAddress('0xdAC17F958D2ee523a2206206994597C13D831eC7')).toThrow();
    expect(() => adapter.normalizeAddress('TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t')).toThrow();
    expect(() => adapter.normalizeAddress('0x1234')).toThrow();
  });
});

describe('RPC failover', () => {
  it('answers through a dead endpoint and one that returns HTTP 500', async () => {
    const failing = await startFailingRpcServer(500);
    servers.push(failing);
    const resilient = adapterFor([DEAD_RPC_URL, failing.url, devnet.url]);
    const fromBlock = await nextBlock();
    const sent = await devnet.transferToken(usdt, sender, alice.address, 42n);

    const head = await resilient.getHead();
    const scanned = await scanSince(fromBlock, [alice.address], resilient);
    const balance = await resilient.getBalance(alice.address, asset('USDT'), sent.blockNumber);

    expect(head.latest.number).toBe(sent.blockNumber);
    expect(scanned.transfers.map((transfer) => transfer.txHash)).toEqual([sent.txHash]);
    expect(balance.amountBaseUnits).toBe(
      await devnet.tokenBalance(usdt, alice.address, sent.blockNumber),
    );
    // Both bad endpoints were tried once, then passed over while demoted.
    expect(failing.methods).toEqual(['eth_chainId']);
    expect(resilient.rpcStatus().map((endpoint) => endpoint.consecutiveFailures)).toEqual([
      1, 1, 0,
    ]);
  });

  it('gives up on an endpoint that does not answer within rpcTimeoutMs', async () => {
    const hanging = await startHangingRpcServer();
    servers.push(hanging);
    const patient = createEvmAdapter(
      devnetNetworkConfig({
        rpcUrls: [hanging.url, devnet.url],
        assets: [{ symbol: 'ETH', native: true, decimals: 18 }],
        rpcTimeoutMs: 300,
      }),
      { logger: { warn: () => {} } },
    );

    const started = Date.now();
    const head = await patient.getHead();

    expect(head.latest.number).toBe(await devnet.blockNumber());
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(patient.rpcStatus()[0]?.lastError).toMatch(/took too long/);
  });

  it('throws RpcUnavailableError, never an empty answer, when every endpoint fails', async () => {
    const failing = await startFailingRpcServer(429);
    servers.push(failing);
    const hopeless = adapterFor([DEAD_RPC_URL, failing.url], {}, { rpcRetries: 2 });

    const error = await hopeless
      .scan({ fromBlock: 1n, toBlock: 2n, addresses: new Set([alice.address]) })
      .catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(RpcUnavailableError);
    expect((error as RpcUnavailableError).attempts).toBe(6);
    expect((error as Error).message).toMatch(
      /^devnet: scan failed on every endpoint after 6 attempts/,
    );
  });

  it('when every endpoint fails, the error names each one (host only, never its key) with its own reason', async () => {
    const failing = await startFailingRpcServer(429);
    servers.push(failing);
    const hopeless = adapterFor(
      [`${DEAD_RPC_URL}/v3/dead-endpoint-key`, `${failing.url}/rpc?apikey=limited-endpoint-key`],
      {},
      { rpcRetries: 0 },
    );

    const error = await hopeless.getHead().catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(RpcUnavailableError);
    const { message, endpointErrors } = error as RpcUnavailableError;
    const failingHost = new URL(failing.url).host;
    // The first line is what the watcher logs: each endpoint, by host, with its own reason.
    expect(message.split('\n')[0]).toMatch(
      new RegExp(
        '^devnet: getHead failed on every endpoint after 2 attempts: ' +
          '#0 http://127\\.0\\.0\\.1:9: HTTP request failed: fetch failed: [^;]+; ' +
          `#1 http://${failingHost.replaceAll('.', '\\.')}: HTTP request failed: HTTP 429$`,
      ),
    );
    expect(endpointErrors.map(({ endpoint }) => endpoint)).toEqual([
      '#0 http://127.0.0.1:9',
      `#1 http://${failingHost}`,
    ]);
    expect(message).not.toMatch(/endpoint-key/);
  });

  it('passes over an endpoint whose head lags behind', async () => {
    await devnet.mine(10);
    const lagging = await startRpcProxy(devnet.url, async (call) => {
      if (call.method === 'eth_blockNumber') return { result: '0x1' };
      if (call.method === 'eth_getBlockByNumber' && call.params[0] === 'latest') {
        return { result: await devnet.rpc('eth_getBlockByNumber', ['0x1', false]) };
      }
      return undefined;
    });
    servers.push(lagging);
    const watcher = adapterFor([lagging.url, devnet.url], { rpc: { staleHeadLagBlocks: 5 } });

    const head = await watcher.getHead();

    expect(head.latest.number).toBe(await devnet.blockNumber());
    expect(lagging.methods).toEqual(['eth_chainId', 'eth_blockNumber']);
    expect(watcher.rpcStatus()[0]?.lastError).toMatch(/stale head 1, \d+ blocks behind/);
  });
});
