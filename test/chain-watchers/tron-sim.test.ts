import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { TronWeb } from 'tronweb';
import { MAINNET_USDT, type Json } from '../support/tron-sim/chain.js';
import { toHex20 } from '../support/tron-sim/encoding.js';
import { startTronSimulator, type TronSimulator } from '../support/tron-sim/server.js';

// The simulator must answer like TronGrid for what the watchers and TronWeb rely on: these
// tests pin that down through the real TronWeb client.

let sim: TronSimulator;
let tronWeb: TronWeb;

beforeEach(async () => {
  sim = await startTronSimulator({ chainOptions: { solidityLag: 19, initialBlocks: 30 } });
  tronWeb = new TronWeb({ fullHost: sim.url, headers: { 'TRON-PRO-API-KEY': 'k' } });
});
afterEach(async () => {
  await sim.close();
});

async function post(path: string, body: Record<string, unknown> = {}): Promise<unknown> {
  const response = await fetch(`${sim.url}/${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
  });
  return response.json();
}

describe('blocks', () => {
  test('getnowblock: blockID starts with the number; empty blocks have no transactions key', async () => {
    const block = (await tronWeb.trx.getCurrentBlock()) as unknown as Record<string, unknown> & {
      blockID: string;
      block_header: { raw_data: { number: number; parentHash: string; timestamp: number } };
    };
    const number = block.block_header.raw_data.number;
    expect(number).toBe(sim.chain.headNumber);
    expect(block.blockID.slice(0, 16)).toBe(number.toString(16).padStart(16, '0'));
    expect(block.block_header.raw_data.parentHash).toBe(sim.chain.block(number - 1)!.blockID);
    expect('transactions' in block).toBe(false);
    expect(sim.requests[0]).toMatchObject({ path: 'wallet/getnowblock', apiKey: 'k' });
  });

  test('solidity endpoints answer only up to the solidified height', async () => {
    const solid = await tronWeb.trx.getConfirmedCurrentBlock();
    expect(solid.block_header.raw_data.number).toBe(sim.chain.headNumber - 19);
    expect(await post('walletsolidity/getblockbynum', { num: sim.chain.headNumber })).toEqual({});
    expect(await post('wallet/getblockbynum', { num: sim.chain.headNumber })).toMatchObject({
      blockID: sim.chain.head.blockID,
    });
  });

  test('unknown blocks and transactions answer {} like java-tron', async () => {
    expect(await post('wallet/getblockbynum', { num: sim.chain.headNumber + 1 })).toEqual({});
    expect(await post('wallet/getblockbyid', { value: 'ab'.repeat(32) })).toEqual({});
    expect(await post('wallet/gettransactioninfobyid', { value: 'cd'.repeat(32) })).toEqual({});
    expect(await post('wallet/gettransactionbyid', { value: 'cd'.repeat(32) })).toEqual({});
    await expect(tronWeb.trx.getBlockByNumber(sim.chain.headNumber + 5)).rejects.toThrow(
      'Block not found',
    );
  });

  test('getblockbylimitnext: [start, end), at most 100 blocks, {} otherwise', async () => {
    const head = sim.chain.headNumber;
    const range = await tronWeb.trx.getBlockRange(head - 4, head);
    expect(range.map((b) => b.block_header.raw_data.number)).toEqual(
      [0, 1, 2, 3, 4].map((i) => head - 4 + i),
    );
    const first = sim.chain.firstBlockNumber;
    expect(
      await post('wallet/getblockbylimitnext', { startNum: first, endNum: first + 101 }),
    ).toEqual({});
    expect(
      await post('wallet/getblockbylimitnext', { startNum: head + 1, endNum: head + 5 }),
    ).toEqual({});
  });

  test('a reorg gives the same height another hash', () => {
    const height = sim.chain.headNumber - 1;
    const before = sim.chain.block(height)!.blockID;
    sim.chain.reorg(2);
    sim.chain.produceBlocks(3);
    expect(sim.chain.block(height)!.blockID).not.toBe(before);
    expect(sim.chain.block(height)!.parentHash).toBe(sim.chain.block(height - 1)!.blockID);
  });
});

describe('forks', () => {
  test('reorgTo drops the blocks above a height; rebroadcast mines the very same transaction later, against the new branch', async () => {
    const alice = sim.chain.account('alice');
    const bob = sim.chain.account('bob');
    sim.chain.setTrxBalance(alice, 10n ** 9n);
    sim.chain.mintToken(sim.chain.usdt, alice, 5n);
    sim.chain.produceBlocks(1);
    const fork = sim.chain.headNumber;
    const tx = sim.chain.transferToken({ token: sim.chain.usdt, from: alice, to: bob, amount: 5n });
    const [first] = sim.chain.produceBlocks(3);
    expect(() => sim.chain.rebroadcast(tx)).toThrow(/mined/);

    sim.chain.reorgTo(fork);
    expect(sim.chain.headNumber).toBe(fork);
    expect(await post('wallet/gettransactionbyid', { value: tx })).toEqual({});
    expect(sim.chain.tokenBalance(sim.chain.usdt, bob)).toBe(0n);
    sim.chain.produceBlocks(2);
    // On the new branch alice spends the tokens first: the same transaction then reverts.
    sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: sim.chain.account('carol'),
      amount: 5n,
    });
    sim.chain.rebroadcast(tx);
    expect(() => sim.chain.rebroadcast(tx)).toThrow(/pending/);
    const [again] = sim.chain.produceBlocks(1);
    expect(again!.number).toBe(first!.number + 2);
    const json = (await post('wallet/gettransactionbyid', { value: tx })) as Json;
    expect(json['txID']).toBe(tx);
    expect(json['ret']).toEqual([{ contractRet: 'REVERT' }]);
    const info = (await post('wallet/gettransactioninfobyid', { value: tx })) as Json;
    expect(info).toMatchObject({ blockNumber: again!.number, result: 'FAILED' });
    expect(() => sim.chain.rebroadcast('ab'.repeat(32))).toThrow(/no reorg dropped/);
  });

  test("a router's payment goes to its payee at execution: the same transaction pays another address after a fork", async () => {
    const caller = sim.chain.account('caller');
    const [ivan, judy] = [sim.chain.account('ivan'), sim.chain.account('judy')];
    const router = sim.chain.deployRouter({ token: sim.chain.usdt, payee: ivan });
    sim.chain.mintToken(sim.chain.usdt, router.address, 50n);
    sim.chain.produceBlocks(1);
    const fork = sim.chain.headNumber;
    const tx = sim.chain.callRouter({ router, from: caller, amount: 50n });
    sim.chain.produceBlocks(1);
    const log = async () =>
      ((await post('wallet/gettransactioninfobyid', { value: tx })) as { log: Json[] }).log;
    expect((await log())[0]!['topics']).toContain(`000000000000000000000000${toHex20(ivan)}`);
    expect(sim.chain.tokenBalance(sim.chain.usdt, ivan)).toBe(50n);

    sim.chain.reorgTo(fork);
    sim.chain.setRouterPayee(router, judy);
    sim.chain.rebroadcast(tx);
    sim.chain.produceBlocks(1);
    expect((await log())[0]!['topics']).toContain(`000000000000000000000000${toHex20(judy)}`);
    expect((await log())[0]!['address']).toBe(toHex20(MAINNET_USDT));
    expect(sim.chain.tokenBalance(sim.chain.usdt, ivan)).toBe(0n);
    expect(sim.chain.tokenBalance(sim.chain.usdt, judy)).toBe(50n);
  });
});

describe('TRC-20 transfers and receipts', () => {
  test('a transfer: TriggerSmartContract in the block, Transfer log in the receipt', async () => {
    const alice = sim.chain.account('alice');
    const bob = sim.chain.account('bob');
    sim.chain.mintToken(sim.chain.usdt, alice, 1_000n);
    const txID = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: bob,
      amount: 250n,
    });
    const [block] = sim.chain.produceBlocks(1);
    const tx = (await tronWeb.trx.getTransaction(txID)) as unknown as {
      ret: Array<{ contractRet: string }>;
      raw_data: { contract: Array<{ type: string; parameter: { value: Record<string, string> } }> };
    };
    expect(tx.ret).toEqual([{ contractRet: 'SUCCESS' }]);
    expect(tx.raw_data.contract[0]!.type).toBe('TriggerSmartContract');
    expect(tx.raw_data.contract[0]!.parameter.value).toEqual({
      owner_address: TronWeb.address.toHex(alice).toLowerCase(),
      contract_address: '41a614f803b6fd780986a42c78ec9c7f77e6ded13c',
      data: `a9059cbb${TronWeb.address.toHex(bob).slice(2).toLowerCase().padStart(64, '0')}${(250).toString(16).padStart(64, '0')}`,
    });
    const info = await tronWeb.trx.getUnconfirmedTransactionInfo(txID);
    expect(info).toMatchObject({
      id: txID,
      blockNumber: block!.number,
      blockTimeStamp: block!.timestamp,
      receipt: { result: 'SUCCESS' },
      log: [
        {
          address: 'a614f803b6fd780986a42c78ec9c7f77e6ded13c',
          topics: [
            'ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef',
            TronWeb.address.toHex(alice).slice(2).toLowerCase().padStart(64, '0'),
            TronWeb.address.toHex(bob).slice(2).toLowerCase().padStart(64, '0'),
          ],
        },
      ],
    });
    // Not solidified yet: the solidity node does not know it.
    expect(await tronWeb.trx.getTransactionInfo(txID)).toEqual({});
    sim.chain.produceBlocks(19);
    expect(await tronWeb.trx.getTransactionInfo(txID)).toMatchObject({ id: txID });
  });

  test('a failed transfer: REVERT, fee burned, no log, balances unchanged', async () => {
    const alice = sim.chain.account('alice');
    sim.chain.mintToken(sim.chain.usdt, alice, 10n);
    const txID = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice,
      to: sim.chain.account('bob'),
      amount: 11n,
    });
    sim.chain.produceBlocks(1);
    const info = (await tronWeb.trx.getUnconfirmedTransactionInfo(txID)) as unknown as Record<
      string,
      unknown
    >;
    expect(info).toMatchObject({ result: 'FAILED', receipt: { result: 'REVERT' } });
    expect(info['log']).toBeUndefined();
    expect(Number(info['fee'])).toBeGreaterThan(0);
    expect(TronWeb.toUtf8(info['resMessage'] as string)).toBe('REVERT opcode executed');
    expect(sim.chain.tokenBalance(sim.chain.usdt, alice)).toBe(10n);
  });

  test('triggerconstantcontract reads balanceOf and decimals; an unknown contract is refused', async () => {
    const holder = sim.chain.account('holder');
    sim.chain.mintToken(sim.chain.usdt, holder, 2n ** 70n);
    const balance = await tronWeb.transactionBuilder.triggerConstantContract(
      MAINNET_USDT,
      'balanceOf(address)',
      {},
      [{ type: 'address', value: holder }],
      MAINNET_USDT,
    );
    expect(balance.result.result).toBe(true);
    expect(BigInt(`0x${balance.constant_result[0]}`)).toBe(2n ** 70n);
    const decimals = await tronWeb.transactionBuilder.triggerConstantContract(
      MAINNET_USDT,
      'decimals()',
      {},
      [],
      MAINNET_USDT,
    );
    expect(BigInt(`0x${decimals.constant_result[0]}`)).toBe(6n);
    await expect(
      tronWeb.transactionBuilder.triggerConstantContract(
        sim.chain.account('eoa'),
        'decimals()',
        {},
        [],
        MAINNET_USDT,
      ),
    ).rejects.toThrow(/No contract/);
  });
});

describe('TronGrid v1 API', () => {
  test('contract events page with meta.fingerprint; only_confirmed hides recent ones', async () => {
    const alice = sim.chain.account('alice');
    sim.chain.mintToken(sim.chain.usdt, alice, 1_000n);
    for (let i = 1; i <= 5; i++) {
      sim.chain.transferToken({
        token: sim.chain.usdt,
        from: alice,
        to: sim.chain.account(`r${i}`),
        amount: BigInt(i),
      });
      sim.chain.produceBlocks(1);
    }
    const values: string[] = [];
    let fingerprint: string | undefined;
    do {
      const page = await tronWeb.event.getEventsByContractAddress(MAINNET_USDT, {
        eventName: 'Transfer',
        orderBy: 'block_timestamp,asc',
        limit: 2,
        ...(fingerprint ? { fingerprint } : {}),
      });
      values.push(...page.data!.map((event) => String(event.result['value'])));
      fingerprint = (page.meta as { fingerprint?: string }).fingerprint;
    } while (fingerprint);
    expect(values).toEqual(['1', '2', '3', '4', '5']);

    const confirmed = await tronWeb.event.getEventsByContractAddress(MAINNET_USDT, {
      onlyConfirmed: true,
    });
    expect(confirmed.data).toEqual([]);
    sim.chain.produceBlocks(19);
    const later = await tronWeb.event.getEventsByContractAddress(MAINNET_USDT, {
      onlyConfirmed: true,
      limit: 200,
    });
    expect(later.data).toHaveLength(5);
    expect(later.data![0]).toMatchObject({
      event_name: 'Transfer',
      contract_address: MAINNET_USDT,
    });
  });

  test('account TRC-20 history: base58 addresses, token info, only_to', async () => {
    const alice = sim.chain.account('alice');
    const bob = sim.chain.account('bob');
    sim.chain.mintToken(sim.chain.usdt, alice, 100n);
    sim.chain.transferToken({ token: sim.chain.usdt, from: alice, to: bob, amount: 40n });
    sim.chain.produceBlocks(1);
    sim.chain.transferToken({ token: sim.chain.usdt, from: bob, to: alice, amount: 15n });
    sim.chain.produceBlocks(1);
    const response = await fetch(
      `${sim.url}/v1/accounts/${bob}/transactions/trc20?only_to=true&limit=200`,
    );
    const body = (await response.json()) as {
      data: Array<Record<string, unknown>>;
      success: boolean;
    };
    expect(body.success).toBe(true);
    expect(body.data).toEqual([
      expect.objectContaining({
        from: alice,
        to: bob,
        value: '40',
        type: 'Transfer',
        token_info: { symbol: 'USDT', address: MAINNET_USDT, decimals: 6, name: 'Tether USD' },
      }),
    ]);
  });
});

describe('test controls', () => {
  test('faults hit the next N requests of an endpoint, then clear; requests are counted', async () => {
    sim.failNext(2, { kind: 'status', status: 429 }, 'wallet/getnowblock');
    await expect(tronWeb.trx.getCurrentBlock()).rejects.toThrow(/429/);
    await expect(tronWeb.trx.getCurrentBlock()).rejects.toThrow(/429/);
    await expect(tronWeb.trx.getCurrentBlock()).resolves.toBeDefined();
    expect(sim.count('wallet/getnowblock')).toBe(3);
    expect(sim.requests.map((r) => r.status)).toEqual([429, 429, 200]);
  });

  test('a rate limit answers TronGrid-style refusals beyond the allowed rate', async () => {
    sim.rateLimit({ perSecond: 3, status: 403 });
    const outcomes = await Promise.allSettled(
      Array.from({ length: 5 }, () => tronWeb.trx.getCurrentBlock()),
    );
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(3);
    expect(sim.requests.filter((r) => r.status === 403)).toHaveLength(2);
  });

  test('a lagging node serves an older head and does not know newer blocks', async () => {
    sim.setHeadLag(5);
    const head = await tronWeb.trx.getCurrentBlock();
    expect(head.block_header.raw_data.number).toBe(sim.chain.headNumber - 5);
    expect(await post('wallet/getblockbynum', { num: sim.chain.headNumber })).toEqual({});
  });
});
