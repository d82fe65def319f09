import { describe, expect, test } from 'vitest';
import type { TestDatabase } from '../support/db.js';
import { ledgerRowCounts } from '../support/ledger.js';
import { ADMIN_TOKEN, admin, userWithKey, type TestService } from '../support/service.js';
import { useGatewayStack } from '../gateway/fixtures.js';
import { call, devSignIn, expectErrorShape } from './support.js';

let database: TestDatabase;
let service: TestService;

useGatewayStack(
  (stack) => ({ database, service } = stack),
  (config) => ({ ...config, telegram: { devSignIn: true } }),
);

const CUSTODY = 'assets:custody:ethereum:USDT:0x70997970c51812dc3a010c7d01b50e0d17dc79c8';
const CHAIN = { network: 'ethereum', txHash: '0xdust01', logIndex: 3, blockNumber: 1234 };

function dustEntry(amount = '0.5') {
  return {
    description: 'dust deposit 0xdust01 log 3, below minDeposit, booked into custody',
    postings: [
      { account: CUSTODY, amount, currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: `-${amount}` },
    ],
    metadata: { chain: CHAIN, ticket: 'OPS-17' },
  };
}

async function post<T = unknown>(path: string, body: unknown, key?: string) {
  return call<T>(service, 'POST', `/admin${path}`, {
    token: ADMIN_TOKEN,
    body,
    headers: key ? { 'idempotency-key': key } : {},
  });
}

async function auditRows(action: string) {
  const { rows } = await database.pool.query<{
    actor: string;
    target: string;
    details: Record<string, unknown>;
  }>('select actor, target, details from audit_log where action = $1 order by id', [action]);
  return rows;
}

async function trialBalance() {
  const { body } = await admin<{
    accounts: Array<{ account: string; currency: string; debit: string; balance: string }>;
    totals: Array<{ currency: string; net: string }>;
  }>(service, 'GET', '/trial-balance');
  return body;
}

describe('POST /admin/entries', () => {
  test('a custody correction is booked, kept as given, in the trial balance and audited; a replay writes nothing; another body under the key is a 409', async () => {
    const created = await post<{ entryId: string }>('/entries', dustEntry(), 'dust-1');
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ entryId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    const { entryId } = created.body;

    const entry = await service.runtime.ledger.getEntry(entryId);
    expect(entry).toMatchObject({ kind: 'manual', description: dustEntry().description });
    expect(entry!.metadata).toEqual({
      chain: CHAIN,
      ticket: 'OPS-17',
      description: dustEntry().description,
      actor: 'admin',
    });
    expect(entry!.postings.map((p) => [p.account, p.currency, p.amount.toString()])).toEqual([
      [CUSTODY, 'USDT', '0.5'],
      ['equity:trading:USDT', 'USDT', '-0.5'],
    ]);

    const tb = await trialBalance();
    expect(tb.accounts).toContainEqual(
      expect.objectContaining({ account: CUSTODY, currency: 'USDT', debit: '0.5', balance: '0.5' }),
    );
    expect(tb.totals.length).toBeGreaterThan(0);
    for (const total of tb.totals) expect(total.net).toBe('0');
    const lines = await service.runtime.ledger.listAccountEntries(CUSTODY);
    expect(lines.lines.map((l) => l.entryId)).toEqual([entryId]);

    const audits = await auditRows('entry.post');
    expect(audits).toEqual([
      expect.objectContaining({
        actor: 'admin',
        target: `entry:${entryId}`,
        details: expect.objectContaining({ entryId, description: dustEntry().description }),
      }),
    ]);

    const before = await ledgerRowCounts(database.pool);
    const replay = await post<{ entryId: string }>('/entries', dustEntry(), 'dust-1');
    expect(replay.status).toBe(201);
    expect(replay.body).toEqual({ entryId });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    expect(await auditRows('entry.post')).toHaveLength(1);

    const conflict = await post('/entries', dustEntry('0.6'), 'dust-1');
    expect(conflict.status).toBe(409);
    expectErrorShape(conflict.body, 'idempotency_conflict');
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    expect(await auditRows('entry.post')).toHaveLength(1);
  });

  test('a deposit named by a Tron internal transaction (log index -2 and below) can be booked by hand', async () => {
    const chain = { network: 'tron', txHash: 'a1'.repeat(32), logIndex: -3, blockNumber: 68000001 };
    const created = await post<{ entryId: string }>('/entries', {
      ...dustEntry('0.25'),
      description: 'TRX a payout contract sent below minDeposit, booked into custody',
      metadata: { chain },
    });
    expect(created.status).toBe(201);
    const entry = await service.runtime.ledger.getEntry(created.body.entryId);
    expect(entry!.metadata['chain']).toEqual(chain);
  });

  test('bad entries are the documented 4xx with the ledger code, and nothing is written', async () => {
    const { userId } = await userWithKey(service, { telegramId: 7101, balance: '3' });
    const erased = await devSignIn(service, 7102, 'erased_one');
    await admin(service, 'POST', `/users/${erased.userId}/adjustments`, {
      amount: '2',
      reason: 'before erasure',
    });
    const erasure = await call(service, 'DELETE', '/api/me', {
      token: erased.token,
      body: { confirm: 'erase my account' },
    });
    expect(erasure.status).toBe(200);

    const d = 'a correction';
    const cases: Array<[string, unknown, number, string, string?]> = [
      [
        'unbalanced',
        {
          description: d,
          postings: [
            { account: CUSTODY, amount: '1', currency: 'USDT' },
            { account: 'equity:trading:USDT', amount: '-0.9' },
          ],
        },
        400,
        'unbalanced_entry',
      ],
      [
        'more digits than the currency has',
        {
          description: d,
          postings: [
            { account: CUSTODY, amount: '0.0000001', currency: 'USDT' },
            { account: 'equity:trading:USDT', amount: '-0.0000001' },
          ],
        },
        400,
        'invalid_amount',
      ],
      [
        'a JSON number',
        {
          description: d,
          postings: [
            { account: CUSTODY, amount: 1, currency: 'USDT' },
            { account: 'equity:trading:USDT', amount: '-1' },
          ],
        },
        400,
        'invalid_amount',
      ],
      [
        'unknown currency',
        {
          description: d,
          postings: [
            { account: 'assets:custody:ethereum:XYZ:0xabc', amount: '1', currency: 'XYZ' },
            { account: 'expenses:network-fees:ethereum', amount: '-1', currency: 'XYZ' },
          ],
        },
        400,
        'unknown_currency',
      ],
      [
        'unknown account',
        {
          description: d,
          postings: [
            { account: 'assets:bank:main', amount: '1' },
            { account: 'expenses:losses', amount: '-1' },
          ],
        },
        400,
        'unknown_account',
      ],
      [
        'revenue:usage',
        {
          description: d,
          postings: [
            { account: 'expenses:losses', amount: '1' },
            { account: 'revenue:usage', amount: '-1' },
          ],
        },
        400,
        'account_not_allowed',
      ],
      [
        'over-drawing a customer',
        {
          description: d,
          postings: [
            { account: `liabilities:customers:${userId}`, amount: '3.000000000000000001' },
            { account: 'expenses:promotions', amount: '-3.000000000000000001' },
          ],
        },
        402,
        'insufficient_balance',
        'insufficient_quota',
      ],
      [
        'an erased customer',
        {
          description: d,
          postings: [
            { account: 'expenses:promotions', amount: '1' },
            { account: `liabilities:customers:${erased.userId}`, amount: '-1' },
          ],
        },
        409,
        'user_erased',
      ],
      [
        'no description',
        { postings: dustEntry().postings, description: '  ' },
        400,
        'invalid_request',
      ],
      [
        'a chain reference reconciliation cannot read',
        { ...dustEntry(), metadata: { chain: { ...CHAIN, blockNumber: 'latest' } } },
        400,
        'invalid_request',
      ],
    ];
    const before = await ledgerRowCounts(database.pool);
    const audits = (await auditRows('entry.post')).length;
    for (const [what, body, status, code, type] of cases) {
      const result = await post('/entries', body);
      expect({ what, status: result.status }).toEqual({ what, status });
      expectErrorShape(result.body, code, type);
      expect(await ledgerRowCounts(database.pool)).toEqual(before);
    }
    expect(await auditRows('entry.post')).toHaveLength(audits);

    // The same customer may be credited or debited within its balance.
    const ok = await post('/entries', {
      description: 'goodwill, ticket 42',
      postings: [
        { account: `liabilities:customers:${userId}`, amount: '3' },
        { account: 'expenses:losses', amount: '-3' },
      ],
    });
    expect(ok.status).toBe(201);
    expect((await admin(service, 'GET', `/users/${userId}/balance`)).body).toMatchObject({
      available: '0',
    });
  });
});

describe('POST /admin/entries/:id/reversal', () => {
  test('reverses once, audited; a second reversal is a 409 and writes nothing', async () => {
    const account = 'assets:custody:tron:USDT:TWrongAddress1';
    const posted = await post<{ entryId: string }>('/entries', {
      description: 'custody correction on the wrong address',
      postings: [
        { account, amount: '12.5', currency: 'USDT' },
        { account: 'equity:trading:USDT', amount: '-12.5' },
      ],
    });
    expect(posted.status).toBe(201);
    const reversal = await post<{ entryId: string; reversedEntryId: string }>(
      `/entries/${posted.body.entryId}/reversal`,
      { reason: 'wrong address' },
      'rev-1',
    );
    expect(reversal.status).toBe(201);
    expect(reversal.body).toEqual({
      entryId: expect.stringMatching(/^[0-9a-f-]{36}$/),
      reversedEntryId: posted.body.entryId,
    });
    const entry = await service.runtime.ledger.getEntry(reversal.body.entryId);
    expect(entry).toMatchObject({
      kind: 'manual.reversal',
      reversesEntryId: posted.body.entryId,
      metadata: { reason: 'wrong address', actor: 'admin' },
    });
    expect((await service.runtime.ledger.getBalance(account)).posted.toString()).toBe('0');
    expect(await auditRows('entry.reverse')).toEqual([
      expect.objectContaining({
        actor: 'admin',
        target: `entry:${posted.body.entryId}`,
        details: expect.objectContaining({
          entryId: reversal.body.entryId,
          reason: 'wrong address',
        }),
      }),
    ]);

    const before = await ledgerRowCounts(database.pool);
    const again = await post(`/entries/${posted.body.entryId}/reversal`, { reason: 'again' });
    expect(again.status).toBe(409);
    expectErrorShape(again.body, 'already_reversed');
    const missing = await post('/entries/00000000-0000-4000-8000-000000000000/reversal', {
      reason: 'no such entry',
    });
    expect(missing.status).toBe(404);
    expectErrorShape(missing.body, 'entry_not_found');
    const noReason = await post(`/entries/${reversal.body.entryId}/reversal`, {});
    expect(noReason.status).toBe(400);
    expectErrorShape(noReason.body, 'invalid_request');
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    expect(await auditRows('entry.reverse')).toHaveLength(1);
  });

  test('a charged call is not reversed by hand (usage equals revenue)', async () => {
    const { userId } = await userWithKey(service, { telegramId: 7201, balance: '1' });
    const usage = await service.runtime.ledger.postEntry({
      kind: 'usage',
      postings: [
        { account: `liabilities:customers:${userId}`, amount: '0.25' },
        { account: 'revenue:usage', amount: '-0.25' },
      ],
    });
    const before = await ledgerRowCounts(database.pool);
    const result = await post(`/entries/${usage.entryId}/reversal`, { reason: 'refund' });
    expect(result.status).toBe(400);
    expectErrorShape(result.body, 'entry_not_reversible');
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });

  test("an entry the watcher booked is not reversed by hand: a reorg's own reversal must stay possible", async () => {
    const { userId } = await userWithKey(service, { telegramId: 7202, balance: '1' });
    const deposit = await service.runtime.ledger.postEntry({
      kind: 'deposit',
      postings: [
        { account: CUSTODY, amount: '2', currency: 'USDT' },
        { account: 'equity:trading:USDT', amount: '-2' },
        { account: 'equity:trading:USD', amount: '2' },
        { account: `liabilities:customers:${userId}`, amount: '-2' },
      ],
    });
    const before = await ledgerRowCounts(database.pool);
    const result = await post(`/entries/${deposit.entryId}/reversal`, { reason: 'mistake' });
    expect(result.status).toBe(400);
    expectErrorShape(result.body, 'entry_not_reversible');
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    // Still reversible by the watcher (once).
    await service.runtime.ledger.reverseEntry({
      entryId: deposit.entryId,
      kind: 'deposit.reversal',
    });
  });
});
