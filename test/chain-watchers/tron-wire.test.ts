import { describe, expect, test } from 'vitest';
import { parseTransactionInfo } from '../../chain-watchers/tron/wire.js';

/** A receipt of a contract call that paid TRX, in the shape TronGrid answers (no `visible`). */
function receipt(internal: unknown): unknown {
  return {
    id: '5e'.repeat(32),
    fee: 1_234_000,
    blockNumber: 66_000_000,
    blockTimeStamp: 1_777_000_000_000,
    contractResult: [''],
    contract_address: '41' + '4d'.repeat(20),
    receipt: { energy_usage_total: 21_000, net_usage: 345, result: 'SUCCESS' },
    internal_transactions: internal,
  };
}

const CALL = '63616c6c'; // "call"

describe('internal transactions in a receipt', () => {
  test('read as java-tron writes them: zero values left out, TRC-10 beside TRX, rejected only when true', () => {
    const info = parseTransactionInfo(
      receipt([
        {
          hash: 'aa'.repeat(32),
          caller_address: '41' + '4d'.repeat(20),
          transferTo_address: '41' + '4d'.repeat(20),
          callValueInfo: [{}],
          note: CALL,
        },
        {
          hash: 'bb'.repeat(32),
          caller_address: '41' + '4D'.repeat(20),
          transferTo_address: '41' + 'a1'.repeat(20),
          callValueInfo: [{ callValue: 98_500_000 }],
          note: CALL,
        },
        {
          hash: 'cc'.repeat(32),
          caller_address: '41' + '4d'.repeat(20),
          transferTo_address: '41' + 'b2'.repeat(20),
          callValueInfo: [{}, { tokenId: '1002000', callValue: 7 }],
          note: CALL,
          rejected: true,
        },
      ]),
    );
    expect(info?.internalTransactions).toEqual([
      {
        caller: '41' + '4d'.repeat(20),
        transferTo: '41' + '4d'.repeat(20),
        trxSun: 0n,
        trc10TokenIds: [],
        note: 'call',
        rejected: false,
      },
      {
        caller: '41' + '4d'.repeat(20),
        transferTo: '41' + 'a1'.repeat(20),
        trxSun: 98_500_000n,
        trc10TokenIds: [],
        note: 'call',
        rejected: false,
      },
      {
        caller: '41' + '4d'.repeat(20),
        transferTo: '41' + 'b2'.repeat(20),
        trxSun: 0n,
        trc10TokenIds: ['1002000'],
        note: 'call',
        rejected: true,
      },
    ]);
    // A receipt without internal transactions has none.
    expect(
      parseTransactionInfo({ ...(receipt([]) as object), internal_transactions: undefined }),
    ).toMatchObject({ internalTransactions: [] });
  });

  test.each([
    ['a list that is not one', { caller_address: '41' + '4d'.repeat(20) }],
    [
      'a rejected flag that is not a boolean',
      [
        {
          caller_address: '41' + '4d'.repeat(20),
          callValueInfo: [{ callValue: 1 }],
          rejected: 'true',
        },
      ],
    ],
    [
      'two TRX values',
      [
        {
          caller_address: '41' + '4d'.repeat(20),
          callValueInfo: [{ callValue: 1 }, { callValue: 2 }],
        },
      ],
    ],
    [
      'a TRX value above 2^53 sun',
      [{ caller_address: '41' + '4d'.repeat(20), callValueInfo: [{ callValue: 2 ** 53 + 2 }] }],
    ],
    ['no caller', [{ transferTo_address: '41' + '4d'.repeat(20), callValueInfo: [{}] }]],
  ])('%s is a malformed answer, never a payment read as absent', (_what, internal) => {
    expect(() => parseTransactionInfo(receipt(internal))).toThrow(/malformed/);
  });
});
