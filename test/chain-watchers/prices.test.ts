import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Address } from 'viem';
import { ChainConfigError } from '../../chain-watchers/adapter.js';
import { createEvmAdapter, type EvmAdapter } from '../../chain-watchers/evm/createEvmAdapter.js';
import { createChainlinkPriceSource } from '../../chain-watchers/prices/chainlink.js';
import { createFixedPriceSource } from '../../chain-watchers/prices/fixed.js';
import { createPriceSource } from '../../chain-watchers/prices/createPriceSource.js';
import { PriceUnavailableError } from '../../chain-watchers/prices.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { devnetNetworkConfig } from '../support/evm/network.js';

let devnet: Devnet;
let adapter: EvmAdapter;

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 2 });
  adapter = createEvmAdapter(
    devnetNetworkConfig({
      rpcUrls: [devnet.url],
      assets: [{ symbol: 'ETH', native: true, decimals: 18 }],
    }),
    { logger: { warn: () => {} } },
  );
});

afterAll(async () => {
  await devnet?.close();
});

/** A feed whose latest round was updated at the time of the block that set it. */
async function feedWithRound(decimals: number, answer: bigint): Promise<Address> {
  const feed = await devnet.deployAggregator(decimals, 'ETH / USD');
  await devnet.setRound(feed, answer, (await devnet.blockTimestamp()) + 1n);
  return feed;
}

describe('fixed price source', () => {
  it('quotes the configured rate exactly, whatever the block', async () => {
    const peg = createFixedPriceSource('0.9998');
    const quote = await peg.quote(123n);
    expect(quote.rate.toString()).toBe('0.9998');
    expect(quote.source).toBe('fixed');
    expect(quote.details).toEqual({ rate: '0.9998' });
    expect((await peg.quote(null)).rate.toString()).toBe('0.9998');
  });

  it('refuses a rate that is not a positive decimal string', () => {
    for (const bad of ['abc', '0', '-1', '1e3', '']) {
      expect(() => createFixedPriceSource(bad)).toThrow();
    }
  });
});

describe('Chainlink price source', () => {
  it('quotes answer / 10^decimals exactly, with what an auditor needs', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    const updatedAt = await devnet.blockTimestamp();
    const round = await devnet.setRound(feed, 312_345_678_901n, updatedAt);
    const eth = createChainlinkPriceSource({ chain: adapter, feed, maxAgeS: 3_600 });

    const quote = await eth.quote(round.blockNumber);

    expect(quote.rate.toString()).toBe('3123.45678901');
    expect(quote.source).toBe('chainlink');
    expect(quote.details).toEqual({
      feed,
      roundId: '1',
      answer: '312345678901',
      decimals: '8',
      updatedAt: updatedAt.toString(),
      blockNumber: round.blockNumber.toString(),
    });
  });

  it('keeps every digit of an 18-decimal feed', async () => {
    const feed = await feedWithRound(18, 1_000_000_000_000_000_001n);
    const quote = await createChainlinkPriceSource({ chain: adapter, feed, maxAgeS: 60 }).quote(
      null,
    );
    expect(quote.rate.toString()).toBe('1.000000000000000001');
  });

  it('quotes the round that was current at the given block', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    const first = await devnet.setRound(feed, 200_000_000_000n, await devnet.blockTimestamp());
    const second = await devnet.setRound(feed, 210_000_000_000n, await devnet.blockTimestamp());
    const eth = createChainlinkPriceSource({ chain: adapter, feed, maxAgeS: 3_600 });

    expect((await eth.quote(first.blockNumber)).rate.toString()).toBe('2000');
    expect((await eth.quote(second.blockNumber)).rate.toString()).toBe('2100');
    const latest = await eth.quote(null);
    expect(latest.rate.toString()).toBe('2100');
    expect(latest.details['roundId']).toBe('2');
    expect(latest.details['blockNumber']).toBe(second.blockNumber.toString());
  });

  it('refuses a round older than maxAgeS at the quoted block, but not at an earlier one', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    const round = await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp());
    const later = await devnet.mine(1, { increaseTimeS: 3_700 });
    const eth = createChainlinkPriceSource({ chain: adapter, feed, maxAgeS: 3_600 });

    await expect(eth.quote(round.blockNumber)).resolves.toMatchObject({ source: 'chainlink' });
    const error = await eth.quote(later).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PriceUnavailableError);
    expect((error as Error).message).toMatch(
      /round 1 is 37\d\d s old at block \d+; at most 3600 s/,
    );
  });

  it('refuses a zero, negative or never-set answer', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    const eth = createChainlinkPriceSource({ chain: adapter, feed, maxAgeS: 3_600 });
    await expect(eth.quote(null)).rejects.toBeInstanceOf(PriceUnavailableError);

    for (const answer of [0n, -5n]) {
      await devnet.setRound(feed, answer, await devnet.blockTimestamp());
      await expect(eth.quote(null)).rejects.toThrow(/not a price/);
    }
  });

  it('refuses a round whose answer was carried over from an earlier round (answeredInRound < roundId)', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp());
    const incomplete = await devnet.setIncompleteRound(
      feed,
      300_000_000_000n,
      await devnet.blockTimestamp(),
      1n,
    );
    const eth = createChainlinkPriceSource({ chain: adapter, feed, maxAgeS: 3_600 });

    const error = await eth.quote(incomplete.blockNumber).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PriceUnavailableError);
    expect((error as Error).message).toMatch(/round 2 is not complete \(answered in round 1\)/);
    // A complete round after it prices again.
    const complete = await devnet.setRound(feed, 310_000_000_000n, await devnet.blockTimestamp());
    expect((await eth.quote(complete.blockNumber)).rate.toString()).toBe('3100');
  });

  it("scales each block's answer by the decimals() the feed had at that block", async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    const before = await devnet.setRound(feed, 312_345_678_901n, await devnet.blockTimestamp());
    const after = await devnet.setDecimals(feed, 18, 3_123_456_789_010_000_000_000n);
    const eth = createChainlinkPriceSource({ chain: adapter, feed, maxAgeS: 3_600 });

    const old = await eth.quote(before.blockNumber);
    const now = await eth.quote(after.blockNumber);
    expect([old.rate.toString(), old.details['decimals']]).toEqual(['3123.45678901', '8']);
    expect([now.rate.toString(), now.details['decimals']]).toEqual(['3123.45678901', '18']);
  });

  it('refuses to price from an address that is not a feed', async () => {
    const eth = createChainlinkPriceSource({
      chain: adapter,
      feed: devnet.account(1).address,
      maxAgeS: 3_600,
    });
    await expect(eth.quote(null)).rejects.toThrow(PriceUnavailableError);
  });

  it('also reads through a bare viem client', async () => {
    const feed = await feedWithRound(8, 99_995_000n);
    const quote = await createChainlinkPriceSource({
      chain: devnet.client,
      feed,
      maxAgeS: 3_600,
    }).quote(null);
    expect(quote.rate.toString()).toBe('0.99995');
  });
});

describe('createPriceSource', () => {
  it('builds the source an asset price config describes', async () => {
    const feed = await feedWithRound(8, 250_012_345_678n);
    const evmAdapter = (network: string) => (network === 'devnet' ? adapter : undefined);

    const fixed = createPriceSource({ price: { fixed: '1' }, evmAdapter });
    const chainlink = createPriceSource({
      price: { chainlink: { network: 'devnet', feed, maxAgeS: 3_600 } },
      evmAdapter,
    });

    expect((await fixed.quote(null)).rate.toString()).toBe('1');
    const quote = await chainlink.quote(null);
    expect(quote.rate.toString()).toBe('2500.12345678');
    expect(quote.details['network']).toBe('devnet');
  });

  it('refuses a feed on a network that is not configured', () => {
    expect(() =>
      createPriceSource({
        price: { chainlink: { network: 'ethereum', feed: devnet.account(1).address, maxAgeS: 60 } },
        evmAdapter: () => undefined,
      }),
    ).toThrow(ChainConfigError);
  });
});
