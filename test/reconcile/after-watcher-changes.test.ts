import { encodeFunctionData, erc20Abi, keccak256, type Address, type Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startDevnet, type Devnet, type DevnetAccount } from '../support/evm/devnet.js';
import { postedOrZero, startEvmStack, type EvmStack } from '../support/evm/stack.js';

/**
 * Reconciliation after the watcher's changes to reorgs: a credited deposit that a reorg reversed
 * after the customer spent part of it, mined again at another log index (its place in the new
 * block), whose new credit repaid the receivable its reversal booked. The reversal then owes
 * nothing: the customer's receivable may still hold a debt of theirs for something else (a
 * call settled above its hold, say), which is not the reversal's.
 */

let devnet: Devnet;
let stack: EvmStack;
let usdt: Address;
/** A token priced by a Chainlink feed (`feed`) that a test moves. */
let usdx: Address;
let feed: Address;

async function setPrice(answer: bigint) {
  const { timestamp } = await devnet.client.getBlock();
  await devnet.setRound(feed, answer, timestamp);
}

async function spend(userId: string, amount: string) {
  await stack.runtime.ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: `liabilities:customers:${userId}`, amount },
      { account: 'expenses:promotions', amount: `-${amount}` },
    ],
  });
}

/**
 * `owed` the customer owes us for something else than a deposit, booked to their receivable
 * by hand (as a write-off's reverse: Dr the receivable, Cr an expense).
 */
async function otherDebt(userId: string, owed: string) {
  await stack.runtime.ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: `assets:receivables:customers:${userId}`, amount: owed },
      { account: 'expenses:promotions', amount: `-${owed}` },
    ],
  });
}

/** A USDT `transfer` signed once, to send again after a reorg. */
async function signTransfer(
  from: DevnetAccount,
  to: Address,
  amountBaseUnits: bigint,
  token: Address = usdt,
): Promise<{ raw: Hex; txHash: Hex }> {
  const signer = privateKeyToAccount(from.privateKey);
  const nonce = await devnet.client.getTransactionCount({
    address: signer.address,
    blockTag: 'pending',
  });
  const raw = await signer.signTransaction({
    type: 'eip1559',
    chainId: 1337,
    nonce,
    maxFeePerGas: 50_000_000_000n,
    maxPriorityFeePerGas: 1_000_000_000n,
    gas: 500_000n,
    to: token,
    data: encodeFunctionData({
      abi: erc20Abi,
      functionName: 'transfer',
      args: [to, amountBaseUnits],
    }),
  });
  return { raw, txHash: keccak256(raw) };
}

/** Mines the raw transactions, in this order, into one block. */
async function mineTogether(raws: Hex[]): Promise<void> {
  await devnet.rpc('miner_stop');
  try {
    for (const raw of raws) await devnet.rpc('eth_sendRawTransaction', [raw]);
    await devnet.rpc('evm_mine');
  } finally {
    await devnet.rpc('miner_start');
  }
}

async function rowsOf(txHash: string) {
  const { rows } = await stack.database.pool.query<{ log_index: number; status: string }>(
    `select log_index, status from deposits where tx_hash = $1 order by log_index`,
    [txHash],
  );
  return rows;
}

const reversalsOf = <F extends { kind: string; details: Record<string, unknown> }>(
  findings: F[],
  txHash: string,
) => findings.filter((f) => f.kind === 'deposit_reversed' && f.details['txHash'] === txHash);

/**
 * 100 USDT from `sender` credited to the user at log index 0, 70 of it spent, removed by a
 * reorg (reversed: 70 booked to the receivable), then mined again behind another transfer, at
 * log index 1, and credited: its credit repays the 70.
 */
async function creditSpendReorgAndMineAgain(
  user: { id: string; address: Address },
  sender: DevnetAccount,
): Promise<Hex> {
  await devnet.transferToken(usdt, devnet.account(0), sender.address, 100_000_000n);
  await devnet.mine(4);
  await stack.poll();
  const beforeTransfer = await devnet.snapshot();
  const deposit = await signTransfer(sender, user.address, 100_000_000n);
  await devnet.rpc('eth_sendRawTransaction', [deposit.raw]);
  await devnet.mine(4);
  await stack.poll(2);
  expect(await rowsOf(deposit.txHash)).toMatchObject([{ log_index: 0, status: 'credited' }]);
  await spend(user.id, '70');

  await devnet.revert(beforeTransfer);
  await devnet.mine(12, { increaseTimeS: 11 });
  await stack.poll(3);
  expect(await rowsOf(deposit.txHash)).toMatchObject([{ log_index: 0, status: 'reversed' }]);

  const other = await signTransfer(devnet.account(0), devnet.account(7).address, 1_000_000n);
  await mineTogether([other.raw, deposit.raw]);
  await devnet.mine(4);
  await stack.poll(2);
  expect(await rowsOf(deposit.txHash)).toMatchObject([
    { log_index: 0, status: 'reversed' },
    { log_index: 1, status: 'credited' },
  ]);
  return deposit.txHash;
}

beforeAll(async () => {
  devnet = await startDevnet();
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 10n ** 13n);
  usdx = await devnet.deployToken(6, { symbol: 'USDC' });
  await devnet.mint(usdx, devnet.account(0).address, 10n ** 13n);
  feed = await devnet.deployAggregator(8, 'USDC / USD');
  await setPrice(100_000_000n);
  stack = await startEvmStack(devnet, {
    assets: [
      { symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } },
      {
        symbol: 'USDC',
        contract: usdx,
        decimals: 6,
        price: { chainlink: { network: 'devnet', feed } },
      },
    ],
    confirmations: 3,
  });
  await stack.poll();
});
afterAll(async () => {
  await stack?.close();
});

test('a reversal repaid by its deposit mined again at another log index owes nothing, though the customer owes something else: info once, no custody finding', async () => {
  const gus = await stack.depositAddressOf(9101);
  await otherDebt(gus.id, '5');
  const txHash = await creditSpendReorgAndMineAgain(gus, devnet.account(3));
  // The 70 is repaid; the 5 left is the other debt.
  expect(
    (await postedOrZero(stack.runtime, `assets:receivables:customers:${gus.id}`)).toString(),
  ).toBe('5');
  expect((await postedOrZero(stack.runtime, `liabilities:customers:${gus.id}`)).toString()).toBe(
    '30',
  );

  const run = await stack.reconcile();
  expect(run.findings.filter((f) => f.kind !== 'deposit_reversed')).toEqual([]);
  expect(reversalsOf(run.findings, txHash)).toEqual([
    expect.objectContaining({
      severity: 'info',
      address: gus.address,
      difference: '-100',
      details: expect.objectContaining({
        logIndex: 0,
        receivableBooked: '70',
        receivableRepaid: '70',
        receivableOwed: '0',
      }),
    }),
  ]);
  // Reported once.
  expect((await stack.reconcile()).findings).toEqual([]);
});

test("the credit that repaid a reversal removed by a second reorg: the debt is the second reversal's, reported once, not also the first's", async () => {
  const hal = await stack.depositAddressOf(9102);
  const beforeSecond = await devnet.snapshot();
  const txHash = await creditSpendReorgAndMineAgain(hal, devnet.account(4));
  expect((await postedOrZero(stack.runtime, `liabilities:customers:${hal.id}`)).toString()).toBe(
    '30',
  );
  // Reported once, owing nothing.
  expect(reversalsOf((await stack.reconcile()).findings, txHash)).toEqual([
    expect.objectContaining({
      severity: 'info',
      details: expect.objectContaining({ logIndex: 0 }),
    }),
  ]);

  // A second reorg removes the new credit too: hal's 30 are taken back, the 70 owed again.
  await devnet.revert(beforeSecond);
  await devnet.mine(30, { increaseTimeS: 13 });
  await stack.poll(4);
  expect(await rowsOf(txHash)).toMatchObject([
    { log_index: 0, status: 'reversed' },
    { log_index: 1, status: 'reversed' },
  ]);
  expect(
    (await postedOrZero(stack.runtime, `assets:receivables:customers:${hal.id}`)).toString(),
  ).toBe('70');

  const run = await stack.reconcile();
  expect(run.findings.filter((f) => f.kind !== 'deposit_reversed')).toEqual([]);
  // One error for the 70 hal owes, on the reversal that booked it last; the first reversal's
  // debt was repaid, and what is owed now is the second's (it mirrored the repayment).
  expect(
    reversalsOf(run.findings, txHash).map((f) => [
      f.severity,
      f.details['logIndex'],
      f.details['receivableOwed'],
    ]),
  ).toEqual([['error', 1, '70']]);
});

test('mined again at the same log index at a lower price, its credit repays only part of the receivable: the rest is still reported owed', async () => {
  const ivy = await stack.depositAddressOf(9103);
  const sender = devnet.account(5);
  await devnet.transferToken(usdx, devnet.account(0), sender.address, 100_000_000n);
  await devnet.mine(4);
  await stack.poll();
  const beforeTransfer = await devnet.snapshot();
  const deposit = await signTransfer(sender, ivy.address, 100_000_000n, usdx);
  // Alone in its block: log index 0.
  await devnet.rpc('eth_sendRawTransaction', [deposit.raw]);
  await devnet.mine(4);
  await stack.poll(2);
  expect(await rowsOf(deposit.txHash)).toMatchObject([{ log_index: 0, status: 'credited' }]);
  expect((await postedOrZero(stack.runtime, `liabilities:customers:${ivy.id}`)).toString()).toBe(
    '100',
  );
  await spend(ivy.id, '70');

  // Reorged away (70 owed), and the price falls to 0.50 on the new branch.
  await devnet.revert(beforeTransfer);
  await setPrice(50_000_000n);
  await devnet.mine(12, { increaseTimeS: 11 });
  await stack.poll(3);
  expect(await rowsOf(deposit.txHash)).toMatchObject([{ log_index: 0, status: 'reversed' }]);
  const reversed = await stack.reconcile();
  expect(reversalsOf(reversed.findings, deposit.txHash)).toEqual([
    expect.objectContaining({
      severity: 'error',
      details: expect.objectContaining({ receivableOwed: '70' }),
    }),
  ]);

  // Mined again alone in its block: log index 0 again, the same row. Credited at 0.50: 50
  // repays 50 of the 70; 20 stays owed.
  await devnet.rpc('eth_sendRawTransaction', [deposit.raw]);
  await devnet.mine(4);
  await stack.poll(2);
  expect(await rowsOf(deposit.txHash)).toMatchObject([{ log_index: 0, status: 'credited' }]);
  expect(
    (await postedOrZero(stack.runtime, `assets:receivables:customers:${ivy.id}`)).toString(),
  ).toBe('20');

  const run = await stack.reconcile();
  expect(run.findings.filter((f) => f.kind !== 'deposit_reversed')).toEqual([]);
  expect(reversalsOf(run.findings, deposit.txHash)).toEqual([
    expect.objectContaining({
      severity: 'error',
      address: ivy.address,
      // The credit it reversed: 100 at 1.00.
      difference: '-100',
      details: expect.objectContaining({
        logIndex: 0,
        receivableBooked: '70',
        receivableRepaid: '50',
        receivableOwed: '20',
      }),
    }),
  ]);
});
