import type { BlockRef } from '../adapter.js';
import { TronEndpointError } from './errors.js';

/**
 * The parts of TronGrid's JSON the watchers read, checked on the way in: an answer of the
 * wrong shape is an endpoint fault (`malformed`), never a silently empty result.
 * Hex is lower-cased; int64 fields must be safe JS integers (they are for block numbers,
 * timestamps and fees; a TRX amount above 2^53 sun is refused rather than rounded).
 */

export interface TronBlock {
  ref: BlockRef;
  transactions: TronTransaction[];
}

export interface TronTransaction {
  txID: string;
  /** `ret[0].contractRet`: SUCCESS, REVERT, OUT_OF_ENERGY...; null when absent. */
  contractRet: string | null;
  contract: TronContractCall | TronTrxTransfer | { type: 'other'; typeName: string };
}

export interface TronContractCall {
  type: 'TriggerSmartContract';
  /** 41-hex. */
  owner: string;
  /** 41-hex. */
  contract: string;
  /** Lower-case hex without 0x. */
  data: string;
}

export interface TronTrxTransfer {
  type: 'TransferContract';
  owner: string;
  to: string;
  amountSun: bigint;
}

export interface TronLog {
  /** 20-byte hex, no prefix. */
  address: string;
  topics: string[];
  data: string;
}

export interface TronTransactionInfo {
  id: string;
  blockNumber: bigint;
  /** Sun burned by the transaction (absent in the JSON means 0). */
  feeSun: bigint;
  /** `receipt.result` (SUCCESS, REVERT...); null for transactions without a VM receipt. */
  receiptResult: string | null;
  /** Top-level `result`: "FAILED" when the transaction failed, absent otherwise. */
  failed: boolean;
  logs: TronLog[];
  /** `internal_transactions`, in the receipt's order (absent in the JSON means none). */
  internalTransactions: TronInternalTransaction[];
}

/**
 * One entry of a receipt's `internal_transactions`: a call (or create, selfdestruct...) one
 * contract made during the transaction, with the TRX and TRC-10 tokens it carried.
 */
export interface TronInternalTransaction {
  /** 41-hex: the contract that made the call. */
  caller: string;
  /** 41-hex: who received it; null when the JSON has none (an old node's `create`). */
  transferTo: string | null;
  /** The TRX it carried, in sun: `callValueInfo`'s entry without `tokenId` (absent means 0). */
  trxSun: bigint;
  /** TRC-10 token ids among `callValueInfo` with a non-zero amount. */
  trc10TokenIds: string[];
  /** `note` decoded from hex: "call", "create", "suicide"... */
  note: string;
  /** The call was undone (it, or a call above it, reverted). */
  rejected: boolean;
}

const HEX64 = /^[0-9a-fA-F]{64}$/;
const HEX41 = /^41[0-9a-fA-F]{40}$/;

export function malformed(what: string, detail: string): TronEndpointError {
  return new TronEndpointError('malformed', `malformed ${what}: ${detail}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function safeInteger(value: unknown, what: string): bigint {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  if (typeof value === 'string' && /^\d+$/.test(value)) return BigInt(value);
  throw malformed(what, `not an exact non-negative integer: ${String(value).slice(0, 40)}`);
}

/** Reads a block (getnowblock, getblockbynum, getblockbylimitnext items...). */
export function parseBlock(json: unknown): TronBlock {
  if (!isObject(json) || !isObject(json['block_header']))
    throw malformed('block', 'no block_header');
  const raw = (json['block_header'] as Record<string, unknown>)['raw_data'];
  const blockID = json['blockID'];
  if (!isObject(raw) || typeof blockID !== 'string' || !HEX64.test(blockID)) {
    throw malformed('block', 'no blockID or raw_data');
  }
  const number = safeInteger(raw['number'] ?? 0, 'block number');
  const hash = blockID.toLowerCase();
  // The first 8 bytes of a block id are its number: a cheap check that the node is sane.
  if (BigInt(`0x${hash.slice(0, 16)}`) !== number) {
    throw malformed('block', `blockID ${hash} does not encode number ${number}`);
  }
  const parentHash = raw['parentHash'];
  if (typeof parentHash !== 'string' || !HEX64.test(parentHash)) {
    throw malformed('block', `block ${number} has no parentHash`);
  }
  // Protobuf JSON leaves zero values out (block 0 has no `number`).
  const timestampMs = safeInteger(raw['timestamp'] ?? 0, 'block timestamp');
  const transactions = json['transactions'];
  if (transactions !== undefined && !Array.isArray(transactions)) {
    throw malformed('block', `block ${number} transactions is not a list`);
  }
  return {
    ref: { number, hash, parentHash: parentHash.toLowerCase(), timestamp: timestampMs / 1000n },
    // java-tron leaves `transactions` out of an empty block.
    transactions: (transactions ?? []).map((tx) => parseTransaction(tx, number)),
  };
}

function parseTransaction(json: unknown, blockNumber: bigint): TronTransaction {
  const where = `transaction in block ${blockNumber}`;
  if (!isObject(json) || typeof json['txID'] !== 'string' || !HEX64.test(json['txID'])) {
    throw malformed(where, 'no txID');
  }
  const txID = json['txID'].toLowerCase();
  const ret = Array.isArray(json['ret']) && isObject(json['ret'][0]) ? json['ret'][0] : null;
  const contractRet = ret && typeof ret['contractRet'] === 'string' ? ret['contractRet'] : null;
  const raw = json['raw_data'];
  const first = isObject(raw) && Array.isArray(raw['contract']) ? raw['contract'][0] : undefined;
  if (!isObject(first) || typeof first['type'] !== 'string') {
    throw malformed(where, `${txID} has no contract`);
  }
  const parameter = first['parameter'];
  const value = isObject(parameter) && isObject(parameter['value']) ? parameter['value'] : {};
  const hex41 = (key: string): string => {
    const field = value[key];
    if (typeof field !== 'string' || !HEX41.test(field)) {
      throw malformed(where, `${txID} ${key} is not a 41-hex address`);
    }
    return field.toLowerCase();
  };
  switch (first['type']) {
    case 'TriggerSmartContract': {
      const data = value['data'];
      return {
        txID,
        contractRet,
        contract: {
          type: 'TriggerSmartContract',
          owner: hex41('owner_address'),
          contract: hex41('contract_address'),
          data: typeof data === 'string' ? data.toLowerCase() : '',
        },
      };
    }
    case 'TransferContract':
      return {
        txID,
        contractRet,
        contract: {
          type: 'TransferContract',
          owner: hex41('owner_address'),
          to: hex41('to_address'),
          amountSun: safeInteger(value['amount'] ?? 0, `${where} ${txID} amount`),
        },
      };
    default:
      return { txID, contractRet, contract: { type: 'other', typeName: first['type'] } };
  }
}

/** Reads gettransactioninfobyid; null for java-tron's `{}` (unknown to this node). */
export function parseTransactionInfo(json: unknown): TronTransactionInfo | null {
  if (isObject(json) && Object.keys(json).length === 0) return null;
  if (!isObject(json) || typeof json['id'] !== 'string' || !HEX64.test(json['id'])) {
    throw malformed('transaction info', 'no id');
  }
  const id = json['id'].toLowerCase();
  const receipt = isObject(json['receipt']) ? json['receipt'] : {};
  const rawLogs = json['log'] ?? [];
  if (!Array.isArray(rawLogs)) throw malformed('transaction info', `${id} log is not a list`);
  const logs = rawLogs.map((log, index): TronLog => {
    if (
      !isObject(log) ||
      typeof log['address'] !== 'string' ||
      !Array.isArray(log['topics']) ||
      !log['topics'].every((topic) => typeof topic === 'string')
    ) {
      throw malformed('transaction info', `${id} log ${index}`);
    }
    return {
      address: log['address'].toLowerCase().replace(/^(0x|41(?=[0-9a-f]{40}$))/, ''),
      topics: (log['topics'] as string[]).map((topic) => topic.toLowerCase().replace(/^0x/, '')),
      data: typeof log['data'] === 'string' ? log['data'].toLowerCase().replace(/^0x/, '') : '',
    };
  });
  const rawInternal = json['internal_transactions'] ?? [];
  if (!Array.isArray(rawInternal)) {
    throw malformed('transaction info', `${id} internal_transactions is not a list`);
  }
  return {
    id,
    blockNumber: safeInteger(json['blockNumber'], `transaction info ${id} blockNumber`),
    feeSun: json['fee'] === undefined ? 0n : safeInteger(json['fee'], `transaction info ${id} fee`),
    receiptResult: typeof receipt['result'] === 'string' ? receipt['result'] : null,
    failed: json['result'] === 'FAILED',
    logs,
    internalTransactions: rawInternal.map((entry, index) =>
      parseInternalTransaction(entry, `transaction info ${id} internal transaction ${index}`),
    ),
  };
}

function parseInternalTransaction(json: unknown, where: string): TronInternalTransaction {
  if (!isObject(json)) throw malformed(where, 'not an object');
  const address = (key: string): string | null => {
    const field = json[key];
    if (field === undefined) return null;
    if (typeof field !== 'string' || !HEX41.test(field)) {
      throw malformed(where, `${key} is not a 41-hex address`);
    }
    return field.toLowerCase();
  };
  const caller = address('caller_address');
  if (caller === null) throw malformed(where, 'no caller_address');
  const values = json['callValueInfo'] ?? [];
  if (!Array.isArray(values)) throw malformed(where, 'callValueInfo is not a list');
  let trxSun: bigint | null = null;
  const trc10TokenIds: string[] = [];
  for (const value of values) {
    if (!isObject(value)) throw malformed(where, 'callValueInfo entry is not an object');
    // Protobuf JSON leaves a zero callValue out: `{}` is a call that carried no TRX.
    const amount = safeInteger(value['callValue'] ?? 0, `${where} callValue`);
    const tokenId = value['tokenId'];
    if (tokenId === undefined || tokenId === '') {
      // java-tron writes the TRX value once; a second one would be counted twice or dropped.
      if (trxSun !== null) throw malformed(where, 'callValueInfo holds two TRX values');
      trxSun = amount;
    } else if (typeof tokenId !== 'string') {
      throw malformed(where, 'callValueInfo tokenId is not a string');
    } else if (amount > 0n) {
      trc10TokenIds.push(tokenId);
    }
  }
  const note = json['note'] ?? '';
  if (typeof note !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(note)) {
    throw malformed(where, 'note is not hex');
  }
  const rejected = json['rejected'] ?? false;
  if (typeof rejected !== 'boolean') throw malformed(where, 'rejected is not a boolean');
  return {
    caller,
    transferTo: address('transferTo_address'),
    trxSun: trxSun ?? 0n,
    trc10TokenIds,
    note: Buffer.from(note, 'hex').toString('utf8'),
    rejected: rejected === true,
  };
}
