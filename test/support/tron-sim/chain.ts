import {
  SELECTORS,
  TRANSFER_TOPIC,
  addressFromLabel,
  addressWord,
  encodeStringResult,
  sha256Hex,
  toBase58,
  toHex20,
  toHex41,
  utf8Hex,
  word,
} from './encoding.js';

/**
 * The in-memory chain behind the TronGrid simulator: blocks, TRC-20 token contracts with
 * balances, TRX balances, transactions and their receipts, a solidified height that lags the
 * head, and reorgs. Everything is produced in TronGrid's own JSON shapes (see `blockJson`,
 * `transactionJson`, `transactionInfoJson`): the HTTP layer only routes.
 *
 * Time does not pass by itself: a test produces blocks with `produceBlocks`. Pending
 * transactions all go into the next block, in the order they were sent.
 */

export const MAINNET_USDT = 'TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t';

export interface TokenContract {
  /** Base58 `T...`. */
  address: string;
  /** `41...` hex. */
  hex41: string;
  symbol: string;
  name: string;
  decimals: number;
}

export interface TronChainOptions {
  /** Number of the first block the simulator serves (older ones answer `{}` as if pruned). */
  firstBlockNumber?: number;
  /** Blocks that exist when the chain is created. At least 1. */
  initialBlocks?: number;
  genesisTimestampMs?: number;
  blockIntervalMs?: number;
  /** How many blocks the solidified height trails the head. Tron mainnet: about 19. */
  solidityLag?: number;
  /** Address of the real USDT contract the chain deploys with 6 decimals. */
  usdtAddress?: string;
  /** Fee burned for a TRC-20 transfer, in sun (energy + bandwidth). */
  trc20FeeSun?: bigint;
  /** Fee burned for a TRC-20 transfer that reverts, in sun. */
  revertFeeSun?: bigint;
}

export interface TransferTokenParameters {
  token: TokenContract | string;
  from: string;
  to: string;
  amount: bigint;
  /** Force a REVERT even when the balance covers the amount. */
  fail?: boolean;
  feeSun?: bigint;
}

export interface DisperseTokenParameters {
  token: TokenContract | string;
  from: string;
  transfers: ReadonlyArray<{ to: string; amount: bigint }>;
  fail?: boolean;
}

export interface CallRouterParameters {
  router: RouterContract | string;
  /** Who sends (and pays the fee for) the call. */
  from: string;
  /** Base units of the router's token it pays out of its own balance. */
  amount: bigint;
}

/** A contract that pays its token to whichever address its state names (see `deployRouter`). */
export interface RouterContract {
  address: string;
  hex41: string;
  token: TokenContract;
}

/** One payment of a payout contract (see `payoutTrx`). */
export interface TrxPayout {
  to: string;
  /** Sun; with `tokenId`, base units of that TRC-10 token instead (no TRX moves). */
  amountSun: bigint;
  tokenId?: string;
  /** The recipient refused it (a contract that reverts on receive): undone, listed `rejected`. */
  rejected?: boolean;
}

export interface PayoutTrxParameters {
  /** Who calls the payout contract (and pays the fee). */
  from: string;
  payouts: ReadonlyArray<TrxPayout>;
  /**
   * The call data names the recipients (`disperseEther(address[],uint256[])`), as
   * `discovery: 'calldata'` needs; otherwise the contract reads them from its storage
   * (`payoutBatch(uint256)`) and only `discovery: 'receipts'` sees the transaction.
   */
  nameRecipients?: boolean;
  /** The whole call reverts: nothing moves, every internal transaction is `rejected`. */
  fail?: boolean;
  /**
   * TRC-20 tokens the contract pays in the same call, out of its own token balance (mint them
   * to `PAYOUT_CONTRACT`): one Transfer log each, after the TRX payouts (a swap paying both).
   */
  tokenPayouts?: ReadonlyArray<{ token: TokenContract | string; to: string; amount: bigint }>;
}

export interface SendTrxParameters {
  from: string;
  to: string;
  amountSun: bigint;
}

/** The JSON objects of the HTTP API, as java-tron writes them without `visible`. */
export type Json = Record<string, unknown>;

/**
 * Balances with their history, so any block of the canonical chain can be read (TronGrid's
 * solidity node answers at the solidified block), writes are O(1), and a reorg truncates.
 * Keys: `token:<token hex41>:<holder hex41>` (base units) and `trx:<holder hex41>` (sun).
 */
class VersionedBalances {
  private readonly history = new Map<string, Array<{ block: number; value: bigint }>>();
  private readonly touched = new Map<number, Set<string>>();

  get(key: string, block: number): bigint | undefined {
    const entries = this.history.get(key);
    if (!entries) return undefined;
    for (let i = entries.length - 1; i >= 0; i--) {
      if (entries[i]!.block <= block) return entries[i]!.value;
    }
    return undefined;
  }

  set(key: string, block: number, value: bigint): void {
    let entries = this.history.get(key);
    if (!entries) this.history.set(key, (entries = []));
    const last = entries[entries.length - 1];
    if (last && last.block > block)
      throw new Error(`balance history of ${key} is ahead of ${block}`);
    if (last?.block === block) last.value = value;
    else entries.push({ block, value });
    let keys = this.touched.get(block);
    if (!keys) this.touched.set(block, (keys = new Set()));
    keys.add(key);
  }

  /** Forgets every write made at a height above `block` (the dropped blocks of a reorg). */
  dropAbove(block: number): void {
    for (const [number, keys] of this.touched) {
      if (number <= block) continue;
      for (const key of keys) {
        // A key written in several dropped blocks is emptied at the first of them.
        const entries = this.history.get(key);
        if (!entries) continue;
        while (entries.length > 0 && entries[entries.length - 1]!.block > block) entries.pop();
        if (entries.length === 0) this.history.delete(key);
      }
      this.touched.delete(number);
    }
  }

  keysWithPrefix(prefix: string): string[] {
    return [...this.history.keys()].filter((key) => key.startsWith(prefix));
  }
}

/** The balances as of one block: reads see every write at or below it. */
class StateView {
  constructor(
    private readonly balances: VersionedBalances,
    readonly block: number,
  ) {}

  token(token: string, holder: string): bigint {
    return this.balances.get(`token:${token}:${holder}`, this.block) ?? 0n;
  }

  setToken(token: string, holder: string, amount: bigint): void {
    this.balances.set(`token:${token}:${holder}`, this.block, amount);
  }

  totalSupply(token: string): bigint {
    let total = 0n;
    for (const key of this.balances.keysWithPrefix(`token:${token}:`)) {
      total += this.balances.get(key, this.block) ?? 0n;
    }
    return total;
  }

  trx(holder: string): bigint {
    return this.balances.get(`trx:${holder}`, this.block) ?? 0n;
  }

  hasTrxAccount(holder: string): boolean {
    return this.balances.get(`trx:${holder}`, this.block) !== undefined;
  }

  setTrx(holder: string, sun: bigint): void {
    this.balances.set(`trx:${holder}`, this.block, sun);
  }
}

type PendingAction =
  | {
      kind: 'trc20';
      token: TokenContract;
      /** `transferFrom`'s caller (who pays the fee); null for a plain `transfer` by `from`. */
      spender: string | null;
      from: string;
      to: string;
      amount: bigint;
      fail: boolean;
      feeSun: bigint | null;
    }
  | {
      kind: 'disperse';
      token: TokenContract;
      from: string;
      transfers: Array<{ to: string; amount: bigint }>;
      fail: boolean;
    }
  | { kind: 'router'; router: RouterContract; from: string; amount: bigint }
  | {
      kind: 'payout';
      from: string;
      payouts: Array<{ to: string; amountSun: bigint; tokenId: string | null; rejected: boolean }>;
      tokenPayouts: Array<{ token: TokenContract; to: string; amount: bigint }>;
      fail: boolean;
    }
  | { kind: 'trx'; from: string; to: string; amountSun: bigint };

interface PendingTransaction {
  txID: string;
  /** The transaction's JSON without `ret` (set once it executes). */
  body: Json;
  action: PendingAction;
}

interface IncludedTransaction {
  txID: string;
  json: Json;
  info: Json;
  pending: PendingTransaction;
}

export interface SimBlock {
  number: number;
  blockID: string;
  parentHash: string;
  timestamp: number;
  witnessAddress: string;
  txTrieRoot: string;
  transactions: IncludedTransaction[];
}

/** A disperse contract (Disperse.app style): one call, many `transferFrom`s of one token. */
export const DISPERSE_CONTRACT = addressFromLabel('contract:disperse');
/** A payout contract (an exchange's or a batch payer's): pays TRX out of its own balance. */
export const PAYOUT_CONTRACT = addressFromLabel('contract:payout');

const WITNESSES = Array.from({ length: 27 }, (_, i) => toHex41(addressFromLabel(`witness:${i}`)));
const NET_PRICE_SUN = 1_000n;

export class TronChain {
  readonly firstBlockNumber: number;
  readonly blockIntervalMs: number;
  readonly genesisTimestampMs: number;
  readonly usdt: TokenContract;
  solidityLag: number;
  private readonly trc20FeeSun: bigint;
  private readonly revertFeeSun: bigint;
  private readonly blocks: SimBlock[] = [];
  private readonly balances = new VersionedBalances();
  private readonly tokens = new Map<string, TokenContract>();
  private pending: PendingTransaction[] = [];
  private readonly txIndex = new Map<string, { block: SimBlock; position: number }>();
  /** Transactions a reorg took out of the chain and did not requeue, by txID: `rebroadcast`. */
  private readonly dropped = new Map<string, PendingTransaction>();
  private readonly routers = new Map<string, RouterContract>();
  /** Router hex41 -> payee hex41. Plain state, not versioned: set it after a reorg. */
  private readonly routerPayees = new Map<string, string>();
  private branch = 0;
  private nonce = 0;

  constructor(options: TronChainOptions = {}) {
    this.firstBlockNumber = options.firstBlockNumber ?? 60_000_000;
    this.blockIntervalMs = options.blockIntervalMs ?? 3_000;
    this.genesisTimestampMs = options.genesisTimestampMs ?? 1_760_000_000_000;
    this.solidityLag = options.solidityLag ?? 19;
    this.trc20FeeSun = options.trc20FeeSun ?? 6_498_000n;
    this.revertFeeSun = options.revertFeeSun ?? 2_923_080n;
    const genesisParent = `${(this.firstBlockNumber - 1).toString(16).padStart(16, '0')}${sha256Hex('tron-sim:genesis').slice(16)}`;
    this.blocks.push(this.sealBlock(this.firstBlockNumber, genesisParent, []));
    this.usdt = this.deployToken({
      address: options.usdtAddress ?? MAINNET_USDT,
      symbol: 'USDT',
      name: 'Tether USD',
      decimals: 6,
    });
    this.produceBlocks(Math.max(1, options.initialBlocks ?? 40) - 1);
  }

  // ---- accounts and contracts ---------------------------------------------------------

  /** A deterministic address for a test actor: `chain.account('alice')`. */
  account(label: string): string {
    return addressFromLabel(`account:${label}`);
  }

  deployToken(params: {
    symbol: string;
    decimals: number;
    name?: string;
    address?: string;
  }): TokenContract {
    const address = toBase58(
      params.address ?? addressFromLabel(`token:${params.symbol}:${this.tokens.size}`),
    );
    const token: TokenContract = {
      address,
      hex41: toHex41(address),
      symbol: params.symbol,
      name: params.name ?? params.symbol,
      decimals: params.decimals,
    };
    if (this.tokens.has(token.hex41)) throw new Error(`a contract already lives at ${address}`);
    this.tokens.set(token.hex41, token);
    return token;
  }

  token(address: string): TokenContract | undefined {
    return this.tokens.get(toHex41(address));
  }

  /**
   * Credits tokens at the current head, outside any transaction (test setup). A reorg below
   * the current head undoes it, like any state of the dropped blocks.
   */
  mintToken(token: TokenContract | string, to: string, amount: bigint): void {
    const contract = this.resolveToken(token);
    const state = this.stateAt(undefined);
    state.setToken(contract.hex41, toHex41(to), state.token(contract.hex41, toHex41(to)) + amount);
  }

  /** Sets a TRX balance (sun) at the current head, outside any transaction (test setup). */
  setTrxBalance(address: string, sun: bigint): void {
    this.stateAt(undefined).setTrx(toHex41(address), sun);
  }

  tokenBalance(token: TokenContract | string, holder: string, blockNumber?: number): bigint {
    return this.stateAt(blockNumber).token(this.resolveToken(token).hex41, toHex41(holder));
  }

  /** An account exists on Tron once it has received TRX (or was set up with a balance). */
  isActivated(holder: string, blockNumber?: number): boolean {
    return this.stateAt(blockNumber).hasTrxAccount(toHex41(holder));
  }

  trxBalance(holder: string, blockNumber?: number): bigint {
    return this.stateAt(blockNumber).trx(toHex41(holder));
  }

  // ---- transactions -----------------------------------------------------------------

  /** Queues `token.transfer(to, amount)` sent by `from`; returns the txID. */
  transferToken(params: TransferTokenParameters): string {
    const token = this.resolveToken(params.token);
    const data = SELECTORS.transfer + addressWord(params.to) + word(params.amount);
    return this.queue(this.triggerBody(params.from, token.hex41, data), {
      kind: 'trc20',
      token,
      spender: null,
      from: toHex41(params.from),
      to: toHex41(params.to),
      amount: params.amount,
      fail: params.fail ?? false,
      feeSun: params.feeSun ?? null,
    });
  }

  /**
   * Queues `token.transferFrom(from, to, amount)` sent by `spender`. Allowances are not
   * modelled: every allowance is 0, so only a zero amount succeeds (the zero-value
   * `transferFrom` that address-poisoning spam sends from other people's addresses); any other
   * amount reverts. The spender pays the fee.
   */
  transferFromToken(params: {
    token: TokenContract | string;
    spender: string;
    from: string;
    to: string;
    amount: bigint;
  }): string {
    const token = this.resolveToken(params.token);
    const data =
      SELECTORS.transferFrom +
      addressWord(params.from) +
      addressWord(params.to) +
      word(params.amount);
    return this.queue(this.triggerBody(params.spender, token.hex41, data), {
      kind: 'trc20',
      token,
      spender: toHex41(params.spender),
      from: toHex41(params.from),
      to: toHex41(params.to),
      amount: params.amount,
      fail: false,
      feeSun: null,
    });
  }

  /**
   * Queues `disperse.disperseToken(token, recipients, values)`: one transaction whose receipt
   * holds one Transfer log per recipient, at log indexes 0, 1, ... The top-level call is to
   * the disperse contract, not to the token.
   */
  disperseToken(params: DisperseTokenParameters): string {
    const token = this.resolveToken(params.token);
    const count = BigInt(params.transfers.length);
    // disperseToken(address token, address[] recipients, uint256[] values)
    const recipientsOffset = 32n * 3n;
    const valuesOffset = recipientsOffset + 32n * (1n + count);
    const data =
      SELECTORS.disperseToken +
      addressWord(token.address) +
      word(recipientsOffset) +
      word(valuesOffset) +
      word(count) +
      params.transfers.map((t) => addressWord(t.to)).join('') +
      word(count) +
      params.transfers.map((t) => word(t.amount)).join('');
    return this.queue(this.triggerBody(params.from, toHex41(DISPERSE_CONTRACT), data), {
      kind: 'disperse',
      token,
      from: toHex41(params.from),
      transfers: params.transfers.map((t) => ({ to: toHex41(t.to), amount: t.amount })),
      fail: params.fail ?? false,
    });
  }

  /**
   * Deploys a router: a contract that, called with `pay(amount)`, transfers `amount` of its
   * token out of its own balance (mint to `router.address`) to its current payee. The call
   * data does not name the recipient, so the very same transaction pays another address when
   * the payee changed (`setRouterPayee`) before it is mined again on a new branch. Only a scan
   * that reads every receipt (`discovery: 'receipts'`) sees such a transfer.
   */
  deployRouter(params: { token: TokenContract | string; payee: string }): RouterContract {
    const address = addressFromLabel(`contract:router:${this.routers.size}`);
    const router: RouterContract = {
      address,
      hex41: toHex41(address),
      token: this.resolveToken(params.token),
    };
    this.routers.set(router.hex41, router);
    this.routerPayees.set(router.hex41, toHex41(params.payee));
    return router;
  }

  /** Whom the router pays from now on (transactions mined from the next block on). */
  setRouterPayee(router: RouterContract | string, payee: string): void {
    this.routerPayees.set(this.resolveRouter(router).hex41, toHex41(payee));
  }

  /** Queues `router.pay(amount)` sent by `from`; returns the txID. */
  callRouter(params: CallRouterParameters): string {
    const router = this.resolveRouter(params.router);
    const data = SELECTORS.pay + word(params.amount);
    return this.queue(this.triggerBody(params.from, router.hex41, data), {
      kind: 'router',
      router,
      from: toHex41(params.from),
      amount: params.amount,
    });
  }

  /**
   * Queues a call to the payout contract (`PAYOUT_CONTRACT`, fund it with `setTrxBalance`),
   * which pays each recipient TRX out of its own balance: internal transactions, listed in the
   * receipt's `internal_transactions` as java-tron writes them (`caller_address` the contract,
   * `callValueInfo` `[{callValue}]`, `note` "call"); no Transfer log. A payout with `tokenId`
   * is a TRC-10 transfer (`[{}, {tokenId, callValue}]`, TRC-10 balances are not modelled); a
   * `rejected` one, or all of them when the call fails (REVERT), moves nothing and is listed
   * with `rejected: true`. Returns the txID.
   */
  payoutTrx(params: PayoutTrxParameters): string {
    const count = BigInt(params.payouts.length);
    const data = params.nameRecipients
      ? SELECTORS.disperseEther +
        word(64n) +
        word(64n + 32n * (1n + count)) +
        word(count) +
        params.payouts.map((p) => addressWord(p.to)).join('') +
        word(count) +
        params.payouts.map((p) => word(p.amountSun)).join('')
      : SELECTORS.payoutBatch + word(BigInt(++this.nonce));
    return this.queue(this.triggerBody(params.from, toHex41(PAYOUT_CONTRACT), data), {
      kind: 'payout',
      from: toHex41(params.from),
      payouts: params.payouts.map((p) => ({
        to: toHex41(p.to),
        amountSun: p.amountSun,
        tokenId: p.tokenId ?? null,
        rejected: p.rejected ?? false,
      })),
      tokenPayouts: (params.tokenPayouts ?? []).map((p) => ({
        token: this.resolveToken(p.token),
        to: toHex41(p.to),
        amount: p.amount,
      })),
      fail: params.fail ?? false,
    });
  }

  /** Queues a TRX transfer (TransferContract); returns the txID. */
  sendTrx(params: SendTrxParameters): string {
    const body = this.transactionBody({
      type: 'TransferContract',
      value: {
        amount: Number(params.amountSun),
        owner_address: toHex41(params.from),
        to_address: toHex41(params.to),
      },
    });
    return this.queue(body, {
      kind: 'trx',
      from: toHex41(params.from),
      to: toHex41(params.to),
      amountSun: params.amountSun,
    });
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  // ---- blocks -----------------------------------------------------------------------

  /** Produces `count` blocks; the first takes every pending transaction. */
  produceBlocks(count = 1): SimBlock[] {
    const produced: SimBlock[] = [];
    for (let i = 0; i < count; i++) {
      const parent = this.head;
      const included = this.pending;
      this.pending = [];
      const number = parent.number + 1;
      const state = new StateView(this.balances, number);
      const timestamp = this.timestampOf(number);
      const transactions: IncludedTransaction[] = [];
      for (const pending of included) {
        const executed = this.execute(pending, state, number, timestamp);
        if (executed) transactions.push(executed);
      }
      const block = this.sealBlock(number, parent.blockID, transactions);
      this.blocks.push(block);
      block.transactions.forEach((tx, position) => this.txIndex.set(tx.txID, { block, position }));
      produced.push(block);
    }
    return produced;
  }

  /**
   * Drops the newest `depth` blocks. Their transactions vanish, or with `requeue` go back to
   * the pending pool (to be mined again, maybe with another outcome). Blocks produced next
   * form a new branch: same heights, other hashes.
   */
  reorg(depth: number, options: { requeue?: boolean } = {}): SimBlock[] {
    if (depth < 1 || depth >= this.blocks.length) throw new Error(`cannot reorg ${depth} blocks`);
    const dropped = this.blocks.splice(this.blocks.length - depth, depth);
    this.balances.dropAbove(this.headNumber);
    for (const block of dropped) for (const tx of block.transactions) this.txIndex.delete(tx.txID);
    this.branch += 1;
    const transactions = dropped.flatMap((b) => b.transactions.map((t) => t.pending));
    if (options.requeue) {
      this.pending = [...transactions, ...this.pending];
    } else {
      for (const tx of transactions) this.dropped.set(tx.txID, tx);
    }
    return dropped;
  }

  /**
   * A fork at `height`: drops every block above it (as `reorg`), so the next block produced is
   * `height + 1` on a new branch. `reorgTo(n); produceBlocks(k)` is the new branch.
   */
  reorgTo(height: number, options: { requeue?: boolean } = {}): SimBlock[] {
    return this.reorg(this.headNumber - height, options);
  }

  /**
   * Broadcasts again a transaction a reorg dropped (without `requeue`): the very same
   * transaction (same txID and raw data, as a wallet or a node's mempool would send it) goes
   * into the next block produced, executed against the state of the new branch there, so
   * its outcome may differ (it reverts, a router pays another address). Refused for a
   * transaction that is mined or pending, or that no reorg dropped.
   */
  rebroadcast(txID: string): void {
    const id = txID.toLowerCase();
    if (this.locate(id)) throw new Error(`transaction ${id} is mined on the canonical chain`);
    if (this.pending.some((tx) => tx.txID === id)) throw new Error(`transaction ${id} is pending`);
    const tx = this.dropped.get(id);
    if (!tx) throw new Error(`no reorg dropped transaction ${id}`);
    this.dropped.delete(id);
    this.pending.push(tx);
  }

  setSolidityLag(blocks: number): void {
    if (!Number.isInteger(blocks) || blocks < 0) throw new Error('solidity lag must be >= 0');
    this.solidityLag = blocks;
  }

  get head(): SimBlock {
    return this.blocks[this.blocks.length - 1]!;
  }

  get headNumber(): number {
    return this.head.number;
  }

  get solidifiedNumber(): number {
    return Math.max(this.firstBlockNumber, this.headNumber - this.solidityLag);
  }

  block(number: number): SimBlock | undefined {
    return this.blocks[number - this.firstBlockNumber];
  }

  blockById(blockID: string): SimBlock | undefined {
    const id = blockID.toLowerCase();
    const number = Number.parseInt(id.slice(0, 16), 16);
    const block = Number.isSafeInteger(number) ? this.block(number) : undefined;
    return block?.blockID === id ? block : undefined;
  }

  /** The canonical block and position of a transaction, if it is mined. */
  locate(txID: string): { block: SimBlock; position: number } | undefined {
    return this.txIndex.get(txID.toLowerCase());
  }

  /** Transfer events (Transfer logs) of the canonical chain, in chain order. */
  *transferEvents(): Generator<{
    block: SimBlock;
    tx: IncludedTransaction;
    logIndex: number;
    token: TokenContract;
    from: string;
    to: string;
    amount: bigint;
  }> {
    for (const block of this.blocks) {
      for (const tx of block.transactions) {
        const logs = (tx.info['log'] as Json[] | undefined) ?? [];
        for (const [logIndex, log] of logs.entries()) {
          const topics = log['topics'] as string[];
          const token = this.tokens.get(`41${log['address'] as string}`);
          if (!token || topics[0] !== TRANSFER_TOPIC) continue;
          yield {
            block,
            tx,
            logIndex,
            token,
            from: toBase58(`41${topics[1]!.slice(24)}`),
            to: toBase58(`41${topics[2]!.slice(24)}`),
            amount: BigInt(`0x${log['data'] as string}`),
          };
        }
      }
    }
  }

  // ---- JSON -------------------------------------------------------------------------

  blockJson(block: SimBlock, options: { detail?: boolean } = {}): Json {
    const json: Json = {
      blockID: block.blockID,
      block_header: {
        raw_data: {
          number: block.number,
          txTrieRoot: block.txTrieRoot,
          witness_address: block.witnessAddress,
          parentHash: block.parentHash,
          version: 32,
          timestamp: block.timestamp,
        },
        witness_signature: sha256Hex(`sig:${block.blockID}`).repeat(2) + '00',
      },
    };
    // java-tron leaves `transactions` out of an empty block altogether.
    if ((options.detail ?? true) && block.transactions.length > 0) {
      json['transactions'] = block.transactions.map((tx) => tx.json);
    }
    return json;
  }

  transactionJson(txID: string): Json | undefined {
    const located = this.locate(txID);
    return located ? located.block.transactions[located.position]!.json : undefined;
  }

  transactionInfoJson(txID: string): Json | undefined {
    const located = this.locate(txID);
    return located ? located.block.transactions[located.position]!.info : undefined;
  }

  /** Answers a constant call (`triggerconstantcontract`) against the state at `blockNumber`. */
  constantCall(
    contract: string,
    data: string,
    blockNumber?: number,
  ): { ok: true; result: string } | { ok: false; code: string; message: string } {
    const token = this.tokens.get(toHex41(contract));
    if (!token) {
      return {
        ok: false,
        code: 'CONTRACT_VALIDATE_ERROR',
        message: 'Contract validate error : No contract or not a valid smart contract',
      };
    }
    const selector = data.slice(0, 8);
    const state = this.stateAt(blockNumber);
    switch (selector) {
      case SELECTORS.balanceOf: {
        const holder = `41${data.slice(8 + 24, 8 + 64)}`;
        return { ok: true, result: word(state.token(token.hex41, holder)) };
      }
      case SELECTORS.decimals:
        return { ok: true, result: word(BigInt(token.decimals)) };
      case SELECTORS.totalSupply:
        return { ok: true, result: word(state.totalSupply(token.hex41)) };
      case SELECTORS.symbol:
      case SELECTORS.name: {
        const text = selector === SELECTORS.symbol ? token.symbol : token.name;
        return { ok: true, result: encodeStringResult(text) };
      }
      default:
        return { ok: false, code: 'CONTRACT_EXE_ERROR', message: 'REVERT opcode executed' };
    }
  }

  /** The unsigned transaction a trigger call would build (TronGrid returns it with reads). */
  triggerTransactionJson(owner: string, contract: string, data: string): Json {
    const body = this.triggerBody(owner, toHex41(contract), data);
    return { ret: [{}], visible: false, txID: this.txIdOf(body), ...body };
  }

  // ---- internals --------------------------------------------------------------------

  private resolveToken(token: TokenContract | string): TokenContract {
    const contract = typeof token === 'string' ? this.token(token) : token;
    if (!contract) throw new Error(`no token contract at ${String(token)}`);
    return contract;
  }

  private resolveRouter(router: RouterContract | string): RouterContract {
    const found = this.routers.get(toHex41(typeof router === 'string' ? router : router.address));
    if (!found) throw new Error(`no router at ${String(router)}`);
    return found;
  }

  private stateAt(blockNumber: number | undefined): StateView {
    if (blockNumber !== undefined && !this.block(blockNumber))
      throw new Error(`no block ${blockNumber}`);
    return new StateView(this.balances, blockNumber ?? this.headNumber);
  }

  private timestampOf(number: number): number {
    return this.genesisTimestampMs + (number - this.firstBlockNumber) * this.blockIntervalMs;
  }

  private triggerBody(owner: string, contractHex41: string, data: string): Json {
    return this.transactionBody(
      {
        type: 'TriggerSmartContract',
        value: { data, owner_address: toHex41(owner), contract_address: contractHex41 },
      },
      { fee_limit: 100_000_000 },
    );
  }

  private transactionBody(contract: { type: string; value: Json }, extra: Json = {}): Json {
    const head = this.head;
    const timestamp = this.timestampOf(head.number + 1) - 1_000;
    const rawData: Json = {
      contract: [
        {
          parameter: {
            value: contract.value,
            type_url: `type.googleapis.com/protocol.${contract.type}`,
          },
          type: contract.type,
        },
      ],
      ref_block_bytes: (head.number & 0xffff).toString(16).padStart(4, '0'),
      ref_block_hash: head.blockID.slice(16, 32),
      expiration: timestamp + 60_000,
      ...extra,
      timestamp,
    };
    this.nonce += 1;
    return {
      raw_data: rawData,
      // Not protobuf: only its presence and hex-ness matter to clients that read blocks.
      raw_data_hex: Buffer.from(`${JSON.stringify(rawData)}#${this.nonce}`).toString('hex'),
    };
  }

  private txIdOf(body: Json): string {
    return sha256Hex(body['raw_data_hex'] as string);
  }

  private queue(body: Json, action: PendingAction): string {
    const txID = this.txIdOf(body);
    this.pending.push({ txID, body, action });
    return txID;
  }

  private execute(
    pending: PendingTransaction,
    state: StateView,
    blockNumber: number,
    blockTimeStamp: number,
  ): IncludedTransaction | null {
    const { action, txID } = pending;
    const base = { id: txID, blockNumber, blockTimeStamp };
    const signature = [sha256Hex(`sig:${txID}`).repeat(2) + '1b'];
    const json = (contractRet: string): Json => ({
      ret: [{ contractRet }],
      signature,
      txID,
      ...pending.body,
    });
    if (action.kind === 'trx') {
      const balance = state.trx(action.from);
      // A TRX transfer the sender cannot cover is refused at broadcast: never in a block.
      if (balance < action.amountSun) return null;
      state.setTrx(action.from, balance - action.amountSun);
      state.setTrx(action.to, state.trx(action.to) + action.amountSun);
      return {
        txID,
        pending,
        json: json('SUCCESS'),
        info: { ...base, contractResult: [''], receipt: { net_usage: 267 } },
      };
    }
    if (action.kind === 'payout') return this.executePayout(pending, action, state, base, json);
    const tokenContract = action.kind === 'router' ? action.router.token : action.token;
    const token = tokenContract.hex41;
    // A router pays out of its own balance, to the payee its state names when it runs.
    const source = action.kind === 'router' ? action.router.hex41 : action.from;
    const moves =
      action.kind === 'trc20'
        ? [{ from: action.from, to: action.to, amount: action.amount }]
        : action.kind === 'router'
          ? [
              {
                from: source,
                to: this.routerPayees.get(action.router.hex41)!,
                amount: action.amount,
              },
            ]
          : action.transfers.map((t) => ({ from: action.from, to: t.to, amount: t.amount }));
    const total = moves.reduce((sum, move) => sum + move.amount, 0n);
    const spender = action.kind === 'trc20' ? action.spender : null;
    const covered = state.token(token, source) >= total && (spender === null || total === 0n);
    const success = covered && !(action.kind !== 'router' && action.fail);
    const energy = BigInt(14_650 * moves.length);
    const net = 345n;
    const feeSun =
      (action.kind === 'trc20' ? action.feeSun : null) ??
      (success ? this.trc20FeeSun * BigInt(moves.length) : this.revertFeeSun);
    const payer = spender ?? action.from;
    const trxBalance = state.trx(payer);
    if (state.hasTrxAccount(payer)) {
      state.setTrx(payer, trxBalance > feeSun ? trxBalance - feeSun : 0n);
    }
    const contractAddress =
      action.kind === 'trc20'
        ? action.token.hex41
        : action.kind === 'router'
          ? action.router.hex41
          : toHex41(DISPERSE_CONTRACT);
    const receipt = {
      energy_fee: Number(feeSun - net * NET_PRICE_SUN > 0n ? feeSun - net * NET_PRICE_SUN : 0n),
      energy_usage_total: Number(energy),
      net_fee: Number(net * NET_PRICE_SUN),
      net_usage: Number(net),
    };
    if (!success) {
      return {
        txID,
        pending,
        json: json('REVERT'),
        info: {
          ...base,
          fee: Number(feeSun),
          contractResult: [''],
          contract_address: contractAddress,
          receipt: { ...receipt, result: 'REVERT' },
          result: 'FAILED',
          resMessage: utf8Hex('REVERT opcode executed'),
        },
      };
    }
    for (const move of moves) {
      state.setToken(token, move.from, state.token(token, move.from) - move.amount);
      state.setToken(token, move.to, state.token(token, move.to) + move.amount);
    }
    return {
      txID,
      pending,
      json: json('SUCCESS'),
      info: {
        ...base,
        fee: Number(feeSun),
        contractResult: [action.kind === 'trc20' ? word(1n) : ''],
        contract_address: contractAddress,
        receipt: { ...receipt, result: 'SUCCESS' },
        log: moves.map((move) => ({
          address: toHex20(token),
          topics: [TRANSFER_TOPIC, addressWord(move.from), addressWord(move.to)],
          data: word(move.amount),
        })),
      },
    };
  }

  private executePayout(
    pending: PendingTransaction,
    action: Extract<PendingAction, { kind: 'payout' }>,
    state: StateView,
    base: Json,
    json: (contractRet: string) => Json,
  ): IncludedTransaction {
    const contract = toHex41(PAYOUT_CONTRACT);
    const paid = action.payouts.filter((p) => p.tokenId === null && !p.rejected);
    const total = paid.reduce((sum, p) => sum + p.amountSun, 0n);
    const tokensNeeded = new Map<string, bigint>();
    for (const p of action.tokenPayouts)
      tokensNeeded.set(p.token.hex41, (tokensNeeded.get(p.token.hex41) ?? 0n) + p.amount);
    const success =
      !action.fail &&
      state.trx(contract) >= total &&
      [...tokensNeeded].every(([token, amount]) => state.token(token, contract) >= amount);
    const feeSun = success ? this.trc20FeeSun : this.revertFeeSun;
    if (state.hasTrxAccount(action.from)) {
      const balance = state.trx(action.from);
      state.setTrx(action.from, balance > feeSun ? balance - feeSun : 0n);
    }
    if (success) {
      state.setTrx(contract, state.trx(contract) - total);
      for (const p of paid) state.setTrx(p.to, state.trx(p.to) + p.amountSun);
      for (const p of action.tokenPayouts) {
        const token = p.token.hex41;
        state.setToken(token, contract, state.token(token, contract) - p.amount);
        state.setToken(token, p.to, state.token(token, p.to) + p.amount);
      }
    }
    // java-tron: protobuf JSON leaves out a zero callValue and a false `rejected`; the TRX value
    // comes first, then each TRC-10 token; a revert rejects every internal transaction.
    const internalTransactions = action.payouts.map((p, index) => ({
      hash: sha256Hex(`internal:${pending.txID}:${index}`),
      caller_address: contract,
      transferTo_address: p.to,
      callValueInfo:
        p.tokenId === null
          ? [p.amountSun === 0n ? {} : { callValue: Number(p.amountSun) }]
          : [{}, { tokenId: p.tokenId, callValue: Number(p.amountSun) }],
      note: utf8Hex('call'),
      ...(p.rejected || !success ? { rejected: true } : {}),
    }));
    const receipt = {
      energy_fee: Number(feeSun),
      energy_usage_total: 9_000 * action.payouts.length,
      net_usage: 345,
    };
    return {
      txID: pending.txID,
      pending,
      json: json(success ? 'SUCCESS' : 'REVERT'),
      info: {
        ...base,
        fee: Number(feeSun),
        contractResult: [''],
        contract_address: contract,
        receipt: { ...receipt, result: success ? 'SUCCESS' : 'REVERT' },
        ...(success ? {} : { result: 'FAILED', resMessage: utf8Hex('REVERT opcode executed') }),
        ...(success && action.tokenPayouts.length > 0
          ? {
              log: action.tokenPayouts.map((p) => ({
                address: toHex20(p.token.hex41),
                topics: [TRANSFER_TOPIC, addressWord(contract), addressWord(p.to)],
                data: word(p.amount),
              })),
            }
          : {}),
        internal_transactions: internalTransactions,
      },
    };
  }

  private sealBlock(
    number: number,
    parentHash: string,
    transactions: IncludedTransaction[],
  ): SimBlock {
    const timestamp = this.timestampOf(number);
    const txTrieRoot =
      transactions.length === 0
        ? '0'.repeat(64)
        : sha256Hex(transactions.map((tx) => tx.txID).join(''));
    const witnessAddress = WITNESSES[number % WITNESSES.length]!;
    const digest = sha256Hex(
      `${number}|${parentHash}|${timestamp}|${txTrieRoot}|${witnessAddress}|branch:${this.branch}`,
    );
    return {
      number,
      blockID: number.toString(16).padStart(16, '0') + digest.slice(16),
      parentHash,
      timestamp,
      witnessAddress,
      txTrieRoot,
      transactions,
    };
  }
}
