import { Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import { Decimal, type PostgresLedger } from '../../ledger/index.js';
import { adjustBalance } from '../../src/billing/adjustBalance.js';
import type { Database } from '../../src/db/schema.js';
import { Meter, type CallRecord } from '../../src/gateway/meter.js';
import type { ApiCaller } from '../../src/keys/keyAuthenticator.js';
import { createApiKey } from '../../src/keys/apiKeys.js';
import { createUser } from '../../src/users/createUser.js';
import { createLogger } from '../../src/log.js';
import { sealJournal } from '../../src/integrity/sealJournal.js';
import { afterAll, beforeAll } from 'vitest';
import { createTestDatabase, type TestDatabase } from './db.js';
import { openLedger } from './ledger.js';

/** Addresses of the book, lower-case EVM and a base58 Tron one, as the watchers write them. */
export const ADDRESSES = {
  tronAlice: 'TXyzAbc123AliceDeposit7777777777',
  ethBob: '0xb0b0000000000000000000000000000000000b0b',
  ethHot: '0x4070000000000000000000000000000000000407',
};

export interface Book {
  db: Kysely<Database>;
  alice: string;
  bob: string;
  entries: {
    aliceUsdtDeposit: string;
    bobEthDeposit: string;
    bobUsdtDeposit: string;
    promotion: string;
    mistakenCredit: string;
    reversal: string;
    ethSweep: string;
    usdtSweep: string;
    usage: string[];
  };
  /** Usage costs charged, in order. */
  usageCosts: string[];
}

/** A Kysely over the test pool (never destroyed here: the database's drop() ends the pool). */
export function kyselyOver(pool: pg.Pool): Kysely<Database> {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

/**
 * A realistic small book, written through the ledger API and the gateway's meter:
 * deposits of USDT on Tron and of ETH and USDT on Ethereum with their conversion legs to
 * USD and rate metadata, API calls held and settled (with usage rows), a failed call
 * released, an admin promotion and debit, a mistaken credit and its reversal, and sweeps
 * from a deposit address to the hot wallet with the network fee paid in ETH.
 */
export async function buildBook(
  pool: pg.Pool,
  ledger: PostgresLedger,
  telegramBase = 1000,
): Promise<Book> {
  const db = kyselyOver(pool);
  const alice = (await createUser(db, { telegramId: telegramBase + 1, username: 'alice' })).id;
  const bob = (await createUser(db, { telegramId: telegramBase + 2, username: 'bob' })).id;
  const customer = (id: string) => `liabilities:customers:${id}`;

  const aliceUsdtDeposit = await ledger.postEntry({
    kind: 'deposit',
    description: 'USDT deposit on tron',
    metadata: {
      rate: '1',
      rateSource: 'fixed',
      chain: { network: 'tron', txHash: 'a1'.repeat(32), logIndex: 0, blockNumber: '68000001' },
    },
    effectiveAt: new Date('2026-11-20T08:00:03Z'),
    postings: [
      {
        account: `assets:custody:tron:USDT:${ADDRESSES.tronAlice}`,
        amount: '100',
        currency: 'USDT',
      },
      { account: 'equity:trading:USDT', amount: '-100' },
      { account: 'equity:trading:USD', amount: '100' },
      { account: customer(alice), amount: '-100' },
    ],
  });
  const bobEthDeposit = await ledger.postEntry({
    kind: 'deposit',
    description: 'ETH deposit on ethereum',
    metadata: {
      rate: '3012.45',
      rateSource: 'chainlink',
      priceFeed: { round: '110680464442257320247', updatedAt: '2026-11-21T10:59:47Z' },
      chain: {
        network: 'ethereum',
        txHash: `0x${'b2'.repeat(32)}`,
        logIndex: 7,
        blockNumber: '21000000',
      },
    },
    effectiveAt: new Date('2026-11-21T11:00:11Z'),
    postings: [
      {
        account: `assets:custody:ethereum:ETH:${ADDRESSES.ethBob}`,
        amount: '0.5',
        currency: 'ETH',
      },
      { account: 'equity:trading:ETH', amount: '-0.5' },
      { account: 'equity:trading:USD', amount: '1506.225' },
      { account: customer(bob), amount: '-1506.225' },
    ],
  });
  const bobUsdtDeposit = await ledger.postEntry({
    kind: 'deposit',
    description: 'USDT deposit on ethereum',
    metadata: {
      rate: '1',
      rateSource: 'fixed',
      chain: {
        network: 'ethereum',
        txHash: `0x${'c3'.repeat(32)}`,
        logIndex: 2,
        blockNumber: '21000100',
      },
    },
    effectiveAt: new Date('2026-11-21T11:20:35Z'),
    postings: [
      {
        account: `assets:custody:ethereum:USDT:${ADDRESSES.ethBob}`,
        amount: '250.5',
        currency: 'USDT',
      },
      { account: 'equity:trading:USDT', amount: '-250.5' },
      { account: 'equity:trading:USD', amount: '250.5' },
      { account: customer(bob), amount: '-250.5' },
    ],
  });

  // API calls through the meter: hold the most a call may cost, settle the exact cost.
  const meter = new Meter(ledger, db, createLogger('silent'));
  const usage: string[] = [];
  const usageCosts = ['0.000123456789012345', '0.0421', '1.5'];
  let call = 0;
  for (const [userId, cost] of [
    [alice, usageCosts[0]!],
    [bob, usageCosts[1]!],
    [alice, usageCosts[2]!],
  ] as const) {
    const key = await createApiKey(db, { userId, name: 'book' });
    const caller: ApiCaller = { keyId: key.id, userId, allowedModels: null, spendLimitUsd: null };
    const requestId = `req-book-${telegramBase}-${++call}`;
    const held = await meter.hold({
      caller,
      requestId,
      model: 'gpt-4o-mini',
      maxCost: new Decimal('2'),
      holdMs: 600_000,
    });
    const settled = await meter.settle(
      held,
      new Decimal(cost),
      callRecord(caller, requestId, 'ok', 200),
    );
    usage.push(settled.entryId!);
  }
  {
    // An upstream failure: the hold is released, nothing is charged, a usage row says why.
    const key = await createApiKey(db, { userId: bob, name: 'book-failed' });
    const caller: ApiCaller = {
      keyId: key.id,
      userId: bob,
      allowedModels: null,
      spendLimitUsd: null,
    };
    const requestId = `req-book-${telegramBase}-failed`;
    const held = await meter.hold({
      caller,
      requestId,
      model: 'gpt-4o-mini',
      maxCost: new Decimal('2'),
      holdMs: 600_000,
    });
    await meter.release(held, callRecord(caller, requestId, 'upstream_error', 502));
  }

  const promotion = await adjustBalance(
    { ledger, database: { pool } },
    {
      userId: alice,
      amount: '5',
      reason: 'welcome bonus',
      actor: 'admin',
    },
  );
  const mistakenCredit = await adjustBalance(
    { ledger, database: { pool } },
    {
      userId: bob,
      amount: '20',
      reason: 'credit meant for another user',
      actor: 'admin',
    },
  );
  const reversal = await ledger.reverseEntry({
    entryId: mistakenCredit.entryId,
    description: 'reverse the mistaken credit',
    metadata: { actor: 'admin', reason: 'wrong user' },
  });
  await adjustBalance(
    { ledger, database: { pool } },
    {
      userId: bob,
      amount: '-1.5',
      reason: 'goodwill clawback',
      actor: 'admin',
    },
  );

  // Sweeps to the hot wallet: the fee is paid in ETH by the address that sends.
  const ethSweep = await ledger.postEntry({
    kind: 'sweep',
    description: 'sweep ETH to the hot wallet',
    metadata: {
      chain: { network: 'ethereum', txHash: `0x${'d4'.repeat(32)}`, blockNumber: '21000200' },
    },
    postings: [
      {
        account: `assets:custody:ethereum:ETH:${ADDRESSES.ethHot}`,
        amount: '0.499',
        currency: 'ETH',
      },
      { account: 'expenses:network-fees:ethereum', amount: '0.001', currency: 'ETH' },
      { account: `assets:custody:ethereum:ETH:${ADDRESSES.ethBob}`, amount: '-0.5' },
    ],
  });
  const usdtSweep = await ledger.postEntry({
    kind: 'sweep',
    description: 'sweep USDT to the hot wallet, gas paid by the hot wallet',
    metadata: {
      chain: {
        network: 'ethereum',
        txHash: `0x${'e5'.repeat(32)}`,
        logIndex: 0,
        blockNumber: '21000201',
      },
    },
    postings: [
      {
        account: `assets:custody:ethereum:USDT:${ADDRESSES.ethHot}`,
        amount: '250.5',
        currency: 'USDT',
      },
      { account: `assets:custody:ethereum:USDT:${ADDRESSES.ethBob}`, amount: '-250.5' },
      { account: 'expenses:network-fees:ethereum', amount: '0.000421337' },
      { account: `assets:custody:ethereum:ETH:${ADDRESSES.ethHot}`, amount: '-0.000421337' },
    ],
  });

  return {
    db,
    alice,
    bob,
    entries: {
      aliceUsdtDeposit: aliceUsdtDeposit.entryId,
      bobEthDeposit: bobEthDeposit.entryId,
      bobUsdtDeposit: bobUsdtDeposit.entryId,
      promotion: promotion.entryId,
      mistakenCredit: mistakenCredit.entryId,
      reversal: reversal.entryId,
      ethSweep: ethSweep.entryId,
      usdtSweep: usdtSweep.entryId,
      usage,
    },
    usageCosts,
  };
}

/** A finished chat call's record, as the gateway would hand it to the meter. */
export function callRecord(
  caller: ApiCaller,
  requestId: string,
  outcome: CallRecord['outcome'],
  httpStatus: number,
): CallRecord {
  const startedAt = new Date();
  return {
    requestId,
    caller,
    endpoint: 'chat.completions',
    model: 'gpt-4o-mini',
    provider: 'stub',
    priceId: null,
    stream: false,
    usage: {
      promptTokens: 120n,
      cachedTokens: 0n,
      cacheWriteTokens: 0n,
      completionTokens: 48n,
      reasoningTokens: 0n,
    },
    estimated: false,
    startedAt,
    firstByteAt: startedAt,
    finishedAt: new Date(startedAt.getTime() + 5),
    httpStatus,
    outcome,
    clientIp: '127.0.0.1',
    userAgent: 'book',
  };
}

/**
 * Seals until every committed entry is sealed. Transaction ids are cluster-wide, so a
 * transaction open in another test's database can hold the bound back for a moment.
 */
export async function sealEverything(
  pool: pg.Pool,
  options: { maxEntries?: number; timeoutMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  for (;;) {
    await sealJournal(pool, options.maxEntries ? { maxEntries: options.maxEntries } : {});
    const { rows } = await pool.query<{ unsealed: string }>(
      `select count(*)::text as unsealed from ledger_entries
        where tx_id >= coalesce((select to_tx_id from ledger_seals order by seal desc limit 1), '0'::xid8)`,
    );
    if (rows[0]?.unsealed === '0') return;
    if (Date.now() > deadline) throw new Error(`${rows[0]?.unsealed} entries still unsealed`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A test file's database with a ledger and the book in it: `ready` gets them before its tests run. */
export function useBook(
  ready: (fixture: { database: TestDatabase; ledger: PostgresLedger; book: Book }) => void,
): void {
  let database: TestDatabase | undefined;
  let ledger: PostgresLedger | undefined;
  beforeAll(async () => {
    database = await createTestDatabase();
    ledger = await openLedger(database.pool);
    ready({ database, ledger, book: await buildBook(database.pool, ledger) });
  });
  afterAll(async () => {
    await ledger?.close();
    await database?.drop();
  });
}
