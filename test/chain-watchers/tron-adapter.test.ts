import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import {
  ChainConfigError,
  RpcUnavailableError,
  type ObservedTransfer,
} from '../../chain-watchers/adapter.js';
import type { TronNetworkConfig } from '../../chain-watchers/config.js';
import { deriveTronAddress } from '../../chain-watchers/addresses/deriveTronAddress.js';
import {
  createTronAdapter,
  type TronAdapter,
  type TronAdapterOptions,
} from '../../chain-watchers/tron/createTronAdapter.js';
import { MAINNET_USDT, type TokenContract } from '../support/tron-sim/chain.js';
import { startTronSimulator, type TronSimulator } from '../support/tron-sim/server.js';
import {
  DEPOSIT_XPUBS,
  FAST_TRON_ADAPTER,
  tronNetwork as baseTronNetwork,
} from '../support/tron-sim/stack.js';

// Deposit addresses come from the account xpub, as in production (test mnemonic: no funds).
const { tronXpub } = DEPOSIT_XPUBS;
const deposit = (index: number) => deriveTronAddress(tronXpub, index).address;
const DEPOSIT_0 = deposit(0);
const DEPOSIT_1 = deposit(1);
const WATCHED = new Set([DEPOSIT_0, DEPOSIT_1]);
const FEE_SUN = 6_498_000n; // the simulator's burn for one TRC-20 transfer

let sim: TronSimulator;
const cleanups: Array<() => Promise<void>> = [];

beforeEach(async () => {
  sim = await startTronSimulator({ chainOptions: { solidityLag: 19 } });
  cleanups.push(() => sim.close());
});
afterEach(async () => {
  vi.useRealTimers();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tronNetwork(overrides: Record<string, unknown> = {}): TronNetworkConfig {
  return baseTronNetwork(sim.url, { apiKey: 'test-key', ...overrides });
}

function adapterFor(
  network: TronNetworkConfig = tronNetwork(),
  options: TronAdapterOptions = {},
): TronAdapter {
  const adapter = createTronAdapter(network, { ...FAST_TRON_ADAPTER, demoteMs: 50, ...options });
  cleanups.push(() => adapter.close());
  return adapter;
}

/** A funded sender: USDT and TRX for fees. */
function fundedSender(label: string, token: TokenContract = sim.chain.usdt): string {
  const sender = sim.chain.account(label);
  sim.chain.mintToken(token, sender, 10n ** 18n);
  sim.chain.setTrxBalance(sender, 1_000_000_000n);
  return sender;
}

async function freeClosedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function identity(transfer: ObservedTransfer): string {
  return `${transfer.txHash}:${transfer.logIndex}`;
}

describe('scanning TRC-20 deposits', () => {
  test('USDT to two deposit addresses: exact amounts, block hashes, distinct identities', async () => {
    const alice = fundedSender('alice');
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    const direct0 = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: DEPOSIT_0,
      amount: 12_345_678n,
    });
    const direct1 = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: DEPOSIT_1,
      amount: 100_000_000n,
    });
    sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: sim.chain.account('stranger'),
      amount: 5n,
    });
    const [first] = sim.chain.produceBlocks(2);
    // One payout transaction (disperse contract) paying both addresses: two logs, one tx.
    const batch = sim.chain.disperseToken({
      token: sim.chain.usdt,
      from: alice,
      transfers: [
        { to: DEPOSIT_1, amount: 1n },
        { to: sim.chain.account('someone-else'), amount: 7n },
        { to: DEPOSIT_0, amount: 999_999_999_999n },
      ],
    });
    const [second] = sim.chain.produceBlocks(3);
    const adapter = adapterFor();

    const { transfers, toBlockRef } = await adapter.scan({
      fromBlock,
      toBlock: BigInt(sim.chain.headNumber),
      addresses: WATCHED,
    });

    expect(toBlockRef).toEqual({
      number: BigInt(sim.chain.headNumber),
      hash: sim.chain.head.blockID,
      parentHash: sim.chain.head.parentHash,
      timestamp: BigInt(sim.chain.head.timestamp / 1000),
    });
    expect(
      transfers.map((t) => [
        t.txHash,
        t.logIndex,
        t.to,
        t.amountBaseUnits,
        t.blockNumber,
        t.blockHash,
      ]),
    ).toEqual([
      [direct0, 0, DEPOSIT_0, 12_345_678n, BigInt(first!.number), first!.blockID],
      [direct1, 0, DEPOSIT_1, 100_000_000n, BigInt(first!.number), first!.blockID],
      [batch, 0, DEPOSIT_1, 1n, BigInt(second!.number), second!.blockID],
      [batch, 2, DEPOSIT_0, 999_999_999_999n, BigInt(second!.number), second!.blockID],
    ]);
    expect(new Set(transfers.map(identity)).size).toBe(4);
    for (const transfer of transfers) {
      expect(transfer).toMatchObject({
        from: alice,
        contract: MAINNET_USDT,
        asset: { symbol: 'USDT', contract: MAINNET_USDT, decimals: 6, native: false },
        success: true,
        feeBaseUnits: null, // incoming: the sender paid, not us
        blockTimestamp: BigInt(
          Math.floor(sim.chain.block(Number(transfer.blockNumber))!.timestamp / 1000),
        ),
      });
      expect(transfer.txHash).toMatch(/^[0-9a-f]{64}$/);
    }
  });

  test('a same-symbol token from another contract comes back with asset null', async () => {
    const fake = sim.chain.deployToken({ symbol: 'USDT', name: 'Tether USD', decimals: 6 });
    const mallory = fundedSender('mallory', fake);
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    const tx = sim.chain.transferToken({
      token: fake,
      from: mallory,
      to: DEPOSIT_0,
      amount: 50_000_000n,
    });
    sim.chain.produceBlocks(1);
    const adapter = adapterFor();

    const { transfers } = await adapter.scan({ fromBlock, toBlock: fromBlock, addresses: WATCHED });

    expect(transfers).toHaveLength(1);
    expect(transfers[0]).toMatchObject({
      txHash: tx,
      contract: fake.address,
      asset: null,
      to: DEPOSIT_0,
      amountBaseUnits: 50_000_000n,
      success: true,
    });
  });

  test('a failed transfer is never returned as successful, and moves nothing', async () => {
    const alice = fundedSender('alice');
    const broke = sim.chain.account('broke');
    sim.chain.setTrxBalance(broke, 100_000_000n);
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    const forced = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: DEPOSIT_0,
      amount: 10_000_000n,
      fail: true,
    });
    const insufficient = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: broke,
      to: DEPOSIT_1,
      amount: 1n,
    });
    sim.chain.produceBlocks(1);
    const adapter = adapterFor();

    const { transfers } = await adapter.scan({ fromBlock, toBlock: fromBlock, addresses: WATCHED });

    expect(
      transfers.map((t) => [t.txHash, t.success, t.to, t.amountBaseUnits, t.logIndex]),
    ).toEqual([
      [forced, false, DEPOSIT_0, 10_000_000n, 0],
      [insufficient, false, DEPOSIT_1, 1n, 0],
    ]);
    expect(transfers.every((t) => t.asset?.symbol === 'USDT')).toBe(true);
    const usdt = adapter.assets[0]!;
    expect((await adapter.getBalance(DEPOSIT_0, usdt, null)).amountBaseUnits).toBe(0n);
  });

  test('an outgoing transfer (a sweep) carries the fee its sender burned', async () => {
    const treasury = sim.chain.account('treasury');
    sim.chain.mintToken(sim.chain.usdt, DEPOSIT_0, 250_000_000n);
    sim.chain.setTrxBalance(DEPOSIT_0, 30_000_000n);
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    const sweep = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: DEPOSIT_0,
      to: treasury,
      amount: 250_000_000n,
    });
    const failedSweep = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: DEPOSIT_0,
      to: treasury,
      amount: 1n,
      feeSun: 1_234_567n,
    });
    sim.chain.produceBlocks(1);
    const adapter = adapterFor();

    const { transfers } = await adapter.scan({ fromBlock, toBlock: fromBlock, addresses: WATCHED });

    expect(
      transfers.map((t) => [t.txHash, t.from, t.to, t.amountBaseUnits, t.success, t.feeBaseUnits]),
    ).toEqual([
      [sweep, DEPOSIT_0, treasury, 250_000_000n, true, FEE_SUN],
      [failedSweep, DEPOSIT_0, treasury, 1n, false, 1_234_567n],
    ]);
  });

  test('native TRX transfers when the network accepts TRX: log index -1, fee on outgoing', async () => {
    const network = tronNetwork({
      assets: [
        { symbol: 'USDT', contract: MAINNET_USDT, decimals: 6, price: { fixed: '1' } },
        { symbol: 'TRX', native: true, decimals: 6, price: { fixed: '0.3' } },
      ],
    });
    const alice = fundedSender('alice');
    sim.chain.setTrxBalance(DEPOSIT_1, 5_000_000n);
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    const incoming = sim.chain.sendTrx({ from: alice, to: DEPOSIT_0, amountSun: 42_000_000n });
    const outgoing = sim.chain.sendTrx({ from: DEPOSIT_1, to: alice, amountSun: 1_000_000n });
    sim.chain.produceBlocks(1);
    const adapter = adapterFor(network);

    const { transfers } = await adapter.scan({ fromBlock, toBlock: fromBlock, addresses: WATCHED });

    expect(
      transfers.map((t) => [
        t.txHash,
        t.logIndex,
        t.contract,
        t.asset?.symbol,
        t.amountBaseUnits,
        t.feeBaseUnits,
      ]),
    ).toEqual([
      [incoming, -1, null, 'TRX', 42_000_000n, null],
      [outgoing, -1, null, 'TRX', 1_000_000n, 0n],
    ]);
    const trx = adapter.assets.find((asset) => asset.native)!;
    sim.chain.produceBlocks(19); // balances are read at the solidified block
    expect(await adapter.getBalance(DEPOSIT_0, trx, null)).toEqual({
      amountBaseUnits: 42_000_000n,
      blockNumber: BigInt(sim.chain.solidifiedNumber),
    });
  });

  test('both discovery modes agree; receipts mode reads one receipt list per block', async () => {
    const alice = fundedSender('alice');
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    sim.chain.transferToken({ token: sim.chain.usdt, from: alice, to: DEPOSIT_0, amount: 3n });
    sim.chain.produceBlocks(1);
    sim.chain.disperseToken({
      token: sim.chain.usdt,
      from: alice,
      transfers: [{ to: DEPOSIT_1, amount: 4n }],
    });
    sim.chain.produceBlocks(2);
    const toBlock = BigInt(sim.chain.headNumber);

    const byCalldata = await adapterFor().scan({ fromBlock, toBlock, addresses: WATCHED });
    sim.resetRequests();
    const byReceipts = await adapterFor(tronNetwork(), { discovery: 'receipts' }).scan({
      fromBlock,
      toBlock,
      addresses: WATCHED,
    });

    expect(byReceipts).toEqual(byCalldata);
    expect(byCalldata.transfers).toHaveLength(2);
    expect(sim.count('wallet/gettransactioninfobyblocknum')).toBe(2);
    expect(sim.count('wallet/gettransactioninfobyid')).toBe(0);
  });

  test('a contract paying an address its call data does not name: only the config\'s discovery "receipts" sees it', async () => {
    const alice = fundedSender('alice');
    const router = sim.chain.deployRouter({ token: sim.chain.usdt, payee: DEPOSIT_0 });
    sim.chain.mintToken(sim.chain.usdt, router.address, 10n);
    sim.chain.produceBlocks(1);
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    const tx = sim.chain.callRouter({ router, from: alice, amount: 10n });
    sim.chain.produceBlocks(1);
    const range = { fromBlock, toBlock: fromBlock, addresses: WATCHED };

    expect((await adapterFor().scan(range)).transfers).toEqual([]);
    const { transfers } = await adapterFor(tronNetwork({ discovery: 'receipts' })).scan(range);
    expect(transfers.map((t) => [t.txHash, t.logIndex, t.to, t.amountBaseUnits])).toEqual([
      [tx, 0, DEPOSIT_0, 10n],
    ]);
  });

  test('with no watched address, nothing is returned but the range is still read', async () => {
    const adapter = adapterFor();
    const head = BigInt(sim.chain.headNumber);
    const result = await adapter.scan({
      fromBlock: head - 5n,
      toBlock: head,
      addresses: new Set(),
    });
    expect(result.transfers).toEqual([]);
    expect(result.toBlockRef.hash).toBe(sim.chain.head.blockID);
  });

  test('a range beyond the head is an error, never an empty result', async () => {
    const adapter = adapterFor(tronNetwork({ rpcRetries: 1 }));
    const head = BigInt(sim.chain.headNumber);
    await expect(
      adapter.scan({ fromBlock: head - 2n, toBlock: head + 3n, addresses: WATCHED }),
    ).rejects.toThrow(RpcUnavailableError);
  });

  test('a range above maxBlockRange is refused', async () => {
    const adapter = adapterFor(tronNetwork({ maxBlockRange: 10 }));
    await expect(adapter.scan({ fromBlock: 1n, toBlock: 11n, addresses: WATCHED })).rejects.toThrow(
      /maxBlockRange 10/,
    );
  });
});

describe('heads, blocks and reorgs', () => {
  test('finalized is the solidified height, lagging the head as configured', async () => {
    const adapter = adapterFor();
    const head = await adapter.getHead();
    expect(head.latest.number).toBe(BigInt(sim.chain.headNumber));
    expect(head.latest.hash).toBe(sim.chain.head.blockID);
    expect(head.finalized).toBe(head.latest.number - 19n);

    sim.chain.setSolidityLag(5);
    sim.chain.produceBlocks(2);
    const later = await adapter.getHead();
    expect(later.latest.number).toBe(head.latest.number + 2n);
    expect(later.finalized).toBe(later.latest.number - 5n);
  });

  test('getBlock: lower-case hex ids, parent links, null above the head', async () => {
    const adapter = adapterFor();
    const n = sim.chain.headNumber - 3;
    const block = await adapter.getBlock(BigInt(n));
    const parent = await adapter.getBlock(BigInt(n - 1));
    expect(block).toEqual({
      number: BigInt(n),
      hash: sim.chain.block(n)!.blockID,
      parentHash: parent!.hash,
      timestamp: BigInt(sim.chain.block(n)!.timestamp / 1000),
    });
    expect(block!.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(block!.hash.slice(0, 16)).toBe(n.toString(16).padStart(16, '0'));
    expect(await adapter.getBlock(BigInt(sim.chain.headNumber + 1))).toBeNull();
  });

  test('after a reorg, the same height has another hash and dropped transfers vanish', async () => {
    const alice = fundedSender('alice');
    const adapter = adapterFor();
    sim.chain.produceBlocks(2);
    const tx = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: DEPOSIT_0,
      amount: 77n,
    });
    const [mined] = sim.chain.produceBlocks(3);
    const height = BigInt(mined!.number);
    const before = await adapter.getBlock(height);
    const firstScan = await adapter.scan({
      fromBlock: height,
      toBlock: height,
      addresses: WATCHED,
    });
    expect(firstScan.transfers.map((t) => t.txHash)).toEqual([tx]);

    sim.chain.reorg(3); // drops `mined` and the two blocks after it
    sim.chain.produceBlocks(4);

    const after = await adapter.getBlock(height);
    expect(after!.hash).not.toBe(before!.hash);
    expect(after!.parentHash).toBe(before!.parentHash); // the fork point is below
    const rescan = await adapter.scan({
      fromBlock: height,
      toBlock: height + 2n,
      addresses: WATCHED,
    });
    expect(rescan.transfers).toEqual([]);
  });

  test('a transaction re-mined on the new branch is found in its new block', async () => {
    const alice = fundedSender('alice');
    const adapter = adapterFor();
    const tx = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: DEPOSIT_1,
      amount: 5n,
    });
    const [mined] = sim.chain.produceBlocks(1);
    sim.chain.reorg(1, { requeue: true });
    sim.chain.produceBlocks(1); // an empty block on the new branch
    sim.chain.reorg(1, { requeue: false });
    sim.chain.transferToken({ token: sim.chain.usdt, from: alice, to: DEPOSIT_1, amount: 5n });
    const [remined] = sim.chain.produceBlocks(2);
    const { transfers } = await adapter.scan({
      fromBlock: BigInt(mined!.number),
      toBlock: BigInt(remined!.number) + 1n,
      addresses: WATCHED,
    });
    expect(transfers).toHaveLength(1);
    expect(transfers[0]!.blockHash).toBe(remined!.blockID);
    expect(transfers[0]!.blockHash).not.toBe(mined!.blockID);
    expect(transfers[0]!.txHash).not.toBe(tx); // the re-sent one, not the dropped original
  });
});

describe('balances, verification and addresses', () => {
  test('getBalance reads balanceOf exactly, beyond 2^53, at the solidified block it names', async () => {
    const usdtAdapter = adapterFor();
    const huge = 123_456_789_012_345_678_901n;
    sim.chain.mintToken(sim.chain.usdt, DEPOSIT_0, huge);
    const usdt = usdtAdapter.assets[0]!;
    // At the head only: the solidity node does not have it yet.
    expect(await usdtAdapter.getBalance(DEPOSIT_0, usdt, null)).toEqual({
      amountBaseUnits: 0n,
      blockNumber: BigInt(sim.chain.solidifiedNumber),
    });
    sim.chain.produceBlocks(19);
    expect(await usdtAdapter.getBalance(DEPOSIT_0, usdt, null)).toEqual({
      amountBaseUnits: huge,
      blockNumber: BigInt(sim.chain.solidifiedNumber),
    });
    expect(sim.count('walletsolidity/triggerconstantcontract')).toBe(2);
    expect(sim.count('wallet/triggerconstantcontract')).toBe(0);
    expect((await usdtAdapter.getBalance(DEPOSIT_1, usdt, 5n)).amountBaseUnits).toBe(0n);
  });

  test('verify() passes on the right decimals and names the asset on the wrong ones', async () => {
    await expect(adapterFor().verify()).resolves.toBeUndefined();

    const wrong = adapterFor(
      tronNetwork({
        assets: [{ symbol: 'USDT', contract: MAINNET_USDT, decimals: 18, price: { fixed: '1' } }],
      }),
    );
    const error = await wrong.verify().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChainConfigError);
    expect((error as Error).message).toMatch(
      /USDT.*decimals\(\) is 6 on chain, the config says 18/,
    );

    const nowhere = adapterFor(
      tronNetwork({
        assets: [
          {
            symbol: 'USDC',
            contract: sim.chain.account('not-a-contract'),
            decimals: 6,
            price: { fixed: '1' },
          },
        ],
      }),
    );
    await expect(nowhere.verify()).rejects.toThrow(/USDC: cannot read decimals\(\)/);
  });

  test('a config the adapter cannot watch safely is refused at creation', () => {
    expect(() =>
      adapterFor(
        tronNetwork({
          assets: [{ symbol: 'TRX', native: true, decimals: 18, price: { fixed: '1' } }],
        }),
      ),
    ).toThrow(/TRX has 6 decimals/);
    expect(() =>
      adapterFor(
        tronNetwork({
          assets: [
            {
              symbol: 'USDT',
              contract: '0xdAC17F958D2ee523a2206206994597C13D831ec7',
              decimals: 6,
              price: { fixed: '1' },
            },
          ],
        }),
      ),
    ).toThrow(ChainConfigError);
  });

  test('normalizeAddress takes base58 or 41-hex and answers base58', () => {
    const adapter = adapterFor();
    expect(adapter.normalizeAddress('41a614f803b6fd780986a42c78ec9c7f77e6ded13c')).toBe(
      MAINNET_USDT,
    );
    expect(adapter.normalizeAddress('41A614F803B6FD780986A42C78EC9C7F77E6DED13C')).toBe(
      MAINNET_USDT,
    );
    expect(adapter.normalizeAddress(MAINNET_USDT)).toBe(MAINNET_USDT);
    expect(() => adapter.normalizeAddress('0xa614f803b6fd780986a42c78ec9c7f77e6ded13c')).toThrow(
      /not a Tron address/,
    );
    expect(() => adapter.normalizeAddress('TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u')).toThrow(
      /not a Tron address/,
    );
  });
});

describe('RPC resilience', () => {
  test('HTTP 429 rate limiting is waited out; no range is skipped', async () => {
    const alice = fundedSender('alice');
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    for (let i = 0; i < 6; i++) {
      sim.chain.transferToken({
        token: sim.chain.usdt,
        from: alice,
        to: DEPOSIT_0,
        amount: BigInt(i + 1),
      });
      sim.chain.produceBlocks(40);
    }
    sim.rateLimit({ perSecond: 5, status: 429 });
    const adapter = adapterFor(tronNetwork(), { retryMaxDelayMs: 1_000, blocksPerRequest: 50 });

    const { transfers } = await adapter.scan({
      fromBlock,
      toBlock: BigInt(sim.chain.headNumber),
      addresses: WATCHED,
    });

    expect(transfers.map((t) => t.amountBaseUnits)).toEqual([1n, 2n, 3n, 4n, 5n, 6n]);
    expect(sim.requests.filter((r) => r.status === 429).length).toBeGreaterThan(0);
  });

  test('HTTP 403 (TronGrid key limit) is retried like 429', async () => {
    sim.failNext(3, { kind: 'status', status: 403 }, 'wallet/getnowblock');
    const head = await adapterFor().getHead();
    expect(head.latest.number).toBe(BigInt(sim.chain.headNumber));
    expect(sim.requests.filter((r) => r.status === 403)).toHaveLength(3);
  });

  /**
   * A clock that moves only when the adapter sleeps: the adapter's waits are read off it, and
   * nothing really waits.
   */
  function simulatedClock(): { sleep: (ms: number) => Promise<void> } {
    vi.useFakeTimers({ toFake: ['Date'] });
    return {
      sleep: async (ms) => {
        vi.setSystemTime(Date.now() + ms);
      },
    };
  }

  const rateLimitedFor = (seconds: number) =>
    ({ kind: 'status', status: 429, headers: { 'retry-after': String(seconds) } }) as const;

  test('a Retry-After longer than retryMaxDelayMs is waited out before the host is asked again, up to retryAfterMaxMs', async () => {
    const { sleep } = simulatedClock();
    const number = BigInt(sim.chain.headNumber - 5);
    const asked = () =>
      sim.requests
        .filter((r) => r.path === 'wallet/getblockbynum')
        .map((r) => ({ status: r.status, atMs: r.atMs }));

    // TronGrid asks for 30 s; the in-place retry bound (8 s, the default) does not cut it short.
    sim.failNext(1, rateLimitedFor(30), 'wallet/getblockbynum');
    const adapter = adapterFor(tronNetwork(), {
      retryMaxDelayMs: 8_000,
      retryAfterMaxMs: 60_000,
      sleep,
    });
    expect((await adapter.getBlock(number))!.number).toBe(number);
    const [refused, retried] = asked();
    expect([refused!.status, retried!.status]).toEqual([429, 200]);
    expect(retried!.atMs - refused!.atMs).toBeGreaterThanOrEqual(30_000);
    expect(retried!.atMs - refused!.atMs).toBeLessThan(31_000);

    // Ten minutes asked: waited up to retryAfterMaxMs (60 s, the default), then asked again.
    sim.resetRequests();
    sim.failNext(1, rateLimitedFor(600), 'wallet/getblockbynum');
    const bounded = adapterFor(tronNetwork(), {
      retryMaxDelayMs: 8_000,
      retryAfterMaxMs: 60_000,
      sleep,
    });
    expect((await bounded.getBlock(number))!.number).toBe(number);
    const [first, second] = asked();
    expect([first!.status, second!.status]).toEqual([429, 200]);
    expect(second!.atMs - first!.atMs).toBeGreaterThanOrEqual(60_000);
    expect(second!.atMs - first!.atMs).toBeLessThan(61_000);
  });

  test('a Retry-After longer than retryMaxDelayMs fails over to the next host at once', async () => {
    const { sleep } = simulatedClock();
    const fallback = await startTronSimulator({ chain: sim.chain });
    cleanups.push(() => fallback.close());
    const number = BigInt(sim.chain.headNumber - 5);
    sim.failNext(1, rateLimitedFor(30), 'wallet/getblockbynum');
    // A host of its own (a node the operator runs, no TronGrid key): not under the key's wait.
    const adapter = adapterFor(
      tronNetwork({ fallbackHosts: [fallback.url.replace('127.0.0.1', 'localhost')] }),
      { retryMaxDelayMs: 8_000, retryAfterMaxMs: 60_000, sleep },
    );
    const startedAtMs = Date.now();

    expect((await adapter.getBlock(number))!.number).toBe(number);
    expect(sim.requests.map((r) => r.status)).toEqual([429]);
    expect(fallback.count('wallet/getblockbynum')).toBe(1);
    expect(Date.now() - startedAtMs).toBeLessThan(1_000);
    const [limited] = adapter.rpcStatus();
    expect(limited!.lastError).toMatch(/HTTP 429/);
  });

  test('paced to the key rate, TronGrid never has to refuse', async () => {
    sim.rateLimit({ perSecond: 15, status: 429 });
    const adapter = adapterFor(tronNetwork(), { requestsPerSecond: 14 });
    const head = BigInt(sim.chain.headNumber);
    for (let i = 0; i < 4; i++) {
      await adapter.scan({ fromBlock: head - 30n, toBlock: head, addresses: WATCHED });
      await adapter.getHead();
    }
    expect(sim.requests.filter((r) => r.status === 429)).toHaveLength(0);
    expect(sim.requests.every((r) => r.apiKey === 'test-key')).toBe(true);
  });

  test('a dead first host: every call still succeeds through the fallback', async () => {
    const dead = `http://127.0.0.1:${await freeClosedPort()}`;
    const alice = fundedSender('alice');
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    const tx = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: DEPOSIT_0,
      amount: 9n,
    });
    sim.chain.produceBlocks(1);
    const adapter = adapterFor(tronNetwork({ fullHost: dead, fallbackHosts: [sim.url] }));

    await adapter.verify();
    expect((await adapter.getHead()).latest.number).toBe(BigInt(sim.chain.headNumber));
    expect((await adapter.getBlock(fromBlock))!.hash).toBe(
      sim.chain.block(Number(fromBlock))!.blockID,
    );
    const { transfers } = await adapter.scan({ fromBlock, toBlock: fromBlock, addresses: WATCHED });
    expect(transfers.map((t) => t.txHash)).toEqual([tx]);
    sim.chain.produceBlocks(19); // solidified
    expect((await adapter.getBalance(DEPOSIT_0, adapter.assets[0]!, null)).amountBaseUnits).toBe(
      9n,
    );

    const [first, second] = adapter.rpcStatus();
    expect(first!.consecutiveFailures).toBeGreaterThan(0);
    expect(first!.lastError).toMatch(/ECONNREFUSED/);
    expect(second!.consecutiveFailures).toBe(0);
  });

  test('HTTP 500s, stalls and empty answers on one host fail over to the next', async () => {
    const second = await startTronSimulator({ chain: sim.chain });
    cleanups.push(() => second.close());
    const adapter = adapterFor(tronNetwork({ fallbackHosts: [second.url], rpcTimeoutMs: 300 }));
    const head = BigInt(sim.chain.headNumber);

    sim.addFault({ path: 'wallet/getnowblock', fault: { kind: 'status', status: 500 } });
    expect((await adapter.getHead()).latest.number).toBe(head);
    sim.clearFaults();

    sim.addFault({ path: 'wallet/getblockbylimitnext', fault: { kind: 'stall' } });
    // A fresh adapter, so the first host (demoted by the 500 above) is asked first again.
    const afterStall = adapterFor(tronNetwork({ fallbackHosts: [second.url], rpcTimeoutMs: 300 }));
    const stalled = await afterStall.scan({
      fromBlock: head - 3n,
      toBlock: head,
      addresses: WATCHED,
    });
    expect(stalled.toBlockRef.hash).toBe(sim.chain.head.blockID);
    // The stalled host was given up on at its deadline and the answer came from the second.
    const [stalledHost, fallback] = afterStall.rpcStatus();
    expect(stalledHost!.lastError).toMatch(/no answer in time/);
    expect(fallback!.consecutiveFailures).toBe(0);
    sim.clearFaults();

    // TronWeb turns `{}` and `{"Error": ...}` into an empty block list: that is not "no blocks".
    sim.addFault({ path: 'wallet/getblockbylimitnext', fault: { kind: 'empty' } });
    second.failNext(1, {
      kind: 'error-body',
      message: 'class java.lang.NullPointerException : null',
    });
    const empty = await adapter.scan({ fromBlock: head - 3n, toBlock: head, addresses: WATCHED });
    expect(empty.toBlockRef.hash).toBe(sim.chain.head.blockID);
    expect(second.count('wallet/getblockbylimitnext')).toBeGreaterThanOrEqual(1);
  });

  test('a truncated JSON body is an endpoint fault, never an empty answer: TRX balance not read as 0', async () => {
    const network = tronNetwork({
      assets: [{ symbol: 'TRX', native: true, decimals: 6, price: { fixed: '0.3' } }],
    });
    const trx = { symbol: 'TRX', currency: 'TRX', native: true, contract: null, decimals: 6 };
    sim.chain.setTrxBalance(DEPOSIT_0, 123_456_789n);
    sim.chain.produceBlocks(20);
    // A body cut off mid-way (a proxy or a dropped connection after the headers), with 200.
    const full = JSON.stringify({ address: '41' + 'ab'.repeat(20), balance: 123_456_789 });
    sim.failNext(
      1,
      { kind: 'status', status: 200, body: full.slice(0, full.indexOf('balance') - 1) },
      'walletsolidity/getaccount',
    );
    const balance = await adapterFor(network).getBalance(DEPOSIT_0, trx, null);
    expect(balance.amountBaseUnits).toBe(123_456_789n);
    expect(sim.count('walletsolidity/getaccount')).toBe(2);
  });

  test('a null body for an account is an endpoint fault, retried: the TRX balance is read, never thrown as a TypeError', async () => {
    const network = tronNetwork({
      assets: [{ symbol: 'TRX', native: true, decimals: 6, price: { fixed: '0.3' } }],
    });
    const trx = { symbol: 'TRX', currency: 'TRX', native: true, contract: null, decimals: 6 };
    sim.chain.setTrxBalance(DEPOSIT_1, 7_000_001n);
    sim.chain.produceBlocks(20);
    sim.failNext(1, { kind: 'status', status: 200, body: 'null' }, 'walletsolidity/getaccount');
    const balance = await adapterFor(network).getBalance(DEPOSIT_1, trx, null);
    expect(balance.amountBaseUnits).toBe(7_000_001n);
    expect(sim.count('walletsolidity/getaccount')).toBe(2);
  });

  test('a missing receipt (load-balanced node) is retried, never read as a failure', async () => {
    const alice = fundedSender('alice');
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    sim.chain.transferToken({ token: sim.chain.usdt, from: alice, to: DEPOSIT_0, amount: 11n });
    sim.chain.produceBlocks(1);
    sim.failNext(1, { kind: 'empty' }, 'wallet/gettransactioninfobyid');
    const { transfers } = await adapterFor().scan({
      fromBlock,
      toBlock: fromBlock,
      addresses: WATCHED,
    });
    expect(transfers.map((t) => [t.amountBaseUnits, t.success])).toEqual([[11n, true]]);
  });

  test('a host lagging far behind the others is passed over', async () => {
    const ahead = await startTronSimulator({ chain: sim.chain });
    cleanups.push(() => ahead.close());
    sim.setHeadLag(50);
    const adapter = adapterFor(tronNetwork({ fallbackHosts: [ahead.url] }));
    const head = await adapter.getHead();
    expect(head.latest.number).toBe(BigInt(sim.chain.headNumber));
  });

  test('when every host fails, RpcUnavailableError: never an empty answer', async () => {
    const second = await startTronSimulator({ chain: sim.chain });
    cleanups.push(() => second.close());
    for (const host of [sim, second]) host.addFault({ fault: { kind: 'status', status: 502 } });
    const adapter = adapterFor(tronNetwork({ fallbackHosts: [second.url], rpcRetries: 1 }));
    const error = await adapter
      .scan({ fromBlock: 1n, toBlock: 2n, addresses: WATCHED })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RpcUnavailableError);
    expect(error).toMatchObject({ network: 'tron', method: 'scan', attempts: 4 });
    expect((error as Error).message).toMatch(/HTTP 502/);
  });

  test('the API key goes to the configured host, not to a third-party fallback', async () => {
    const dead = `http://127.0.0.1:${await freeClosedPort()}`;
    const other = sim.url.replace('127.0.0.1', 'localhost');
    const adapter = adapterFor(tronNetwork({ fullHost: dead, fallbackHosts: [other] }));
    await adapter.getHead();
    expect(sim.requests.length).toBeGreaterThan(0);
    expect(sim.requests.every((r) => r.apiKey === null)).toBe(true);
  });
});

describe('performance', () => {
  test('scanning 1,000 blocks', async () => {
    const alice = fundedSender('alice');
    const fromBlock = BigInt(sim.chain.headNumber + 1);
    for (let i = 0; i < 20; i++) {
      sim.chain.transferToken({
        token: sim.chain.usdt,
        from: alice,
        to: i % 2 ? DEPOSIT_0 : DEPOSIT_1,
        amount: BigInt(i + 1),
      });
      sim.chain.transferToken({
        token: sim.chain.usdt,
        from: alice,
        to: sim.chain.account(`noise-${i}`),
        amount: 1n,
      });
      sim.chain.produceBlocks(50);
    }
    const toBlock = fromBlock + 999n;
    const timings: Record<string, number> = {};
    for (const [label, options] of [
      ['calldata, unthrottled', {}],
      ['receipts, unthrottled', { discovery: 'receipts' }],
      ['calldata, 15 req/s', { requestsPerSecond: 15 }],
    ] as const) {
      sim.resetRequests();
      const adapter = adapterFor(tronNetwork(), options);
      const started = performance.now();
      const { transfers } = await adapter.scan({ fromBlock, toBlock, addresses: WATCHED });
      timings[`${label} (${sim.requests.length} requests)`] = Math.round(
        performance.now() - started,
      );
      expect(transfers).toHaveLength(20);
    }
    console.info('tron scan of 1,000 simulator blocks, ms:', timings);
  });
});
