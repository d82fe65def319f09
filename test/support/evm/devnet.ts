import ganache from 'ganache';
import {
  createPublicClient,
  encodeDeployData,
  encodeFunctionData,
  http,
  keccak256,
  toHex,
  type Address,
  type Hex,
  type PrivateKeyAccount,
  type PublicClient,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { getContract, type ContractName } from './compile.js';

/**
 * An in-process ganache devnet (chain id 1337) for tests that need a real EVM node.
 *
 * - Accounts are local private keys (viem `privateKeyToAccount`), funded at genesis; every
 *   transaction is signed here and sent raw, never through ganache's unlocked accounts.
 * - Instamine "eager": a transaction is mined into its own block before its hash returns, so
 *   a receipt is readable at once.
 * - Reorgs: `snapshot()`, mine, `revert(id)`, then `mine(1, { increaseTimeS: 1 })` builds a
 *   different block at the same height (the same empty block with the same timestamp would
 *   hash the same).
 * - Forks of one chain on two nodes: `startDevnet({ forkUrl: other.url })`.
 * - Addresses this module returns are lower-case, the adapter's canonical form.
 */

export const DEVNET_CHAIN_ID = 1337;

export interface DevnetAccount {
  /** Lower-case 0x address. */
  address: Address;
  privateKey: Hex;
  signer: PrivateKeyAccount;
}

export interface SentTransaction {
  txHash: Hex;
  blockNumber: bigint;
  blockHash: Hex;
  status: 'success' | 'reverted';
  gasUsed: bigint;
  effectiveGasPrice: bigint;
  /** gasUsed x effectiveGasPrice, in wei. */
  feeWei: bigint;
  /** Address of a created contract, lower-case; null otherwise. */
  contractAddress: Address | null;
}

export interface SendParameters {
  from: DevnetAccount;
  to: Address | null;
  data?: Hex;
  valueWei?: bigint;
  /** Fixed gas limit: set so a transaction that will revert is still mined (no estimate). */
  gas?: bigint;
}

export interface StartDevnetOptions {
  /** Funded accounts to create (default 10). */
  accounts?: number;
  /** Balance of each account in wei (default 1,000,000 ETH). */
  balanceWei?: bigint;
  /**
   * Another node's URL: this devnet starts on that chain as it is now (its blocks, contracts
   * and balances up to its head are shared) and mines its own blocks after it: two devnets
   * that agree on a prefix and then each follow their own fork. It mines the first block of
   * its own at once (funding the accounts); ganache answers `eth_getLogs` for that height
   * with the other node's logs, so keep the other node's block there free of them.
   */
  forkUrl?: string;
}

export interface Devnet {
  readonly url: string;
  readonly chainId: number;
  /** A viem public client on the devnet (`cacheTime: 0`). */
  readonly client: PublicClient;
  readonly accounts: ReadonlyArray<DevnetAccount>;
  /** A funded account; index into `accounts`, throwing when out of range. */
  account(index: number): DevnetAccount;
  send(params: SendParameters): Promise<SentTransaction>;
  deploy(name: ContractName, args?: readonly unknown[], from?: DevnetAccount): Promise<Address>;
  /** Deploys a TestToken (ERC-20 with public mint) with the given decimals. */
  deployToken(
    decimals: number,
    options?: { name?: string; symbol?: string; from?: DevnetAccount },
  ): Promise<Address>;
  mint(token: Address, to: Address, amountBaseUnits: bigint): Promise<SentTransaction>;
  transferToken(
    token: Address,
    from: DevnetAccount,
    to: Address,
    amountBaseUnits: bigint,
    options?: { gas?: bigint },
  ): Promise<SentTransaction>;
  /** One transaction, one Transfer log per recipient (in order). */
  transferTokenMany(
    token: Address,
    from: DevnetAccount,
    transfers: ReadonlyArray<{ to: Address; amountBaseUnits: bigint }>,
  ): Promise<SentTransaction>;
  /** While blocked, TestToken transfers revert (send with `gas` to mine the failure). */
  setTransfersBlocked(token: Address, blocked: boolean): Promise<SentTransaction>;
  sendEth(
    from: DevnetAccount,
    to: Address,
    valueWei: bigint,
    options?: { gas?: bigint },
  ): Promise<SentTransaction>;
  /** Deploys a MockAggregator (Chainlink AggregatorV3 look-alike). */
  deployAggregator(decimals: number, description?: string): Promise<Address>;
  setRound(aggregator: Address, answer: bigint, updatedAt: bigint): Promise<SentTransaction>;
  /** A new round reporting an answer carried over from round `answeredInRound`. */
  setIncompleteRound(
    aggregator: Address,
    answer: bigint,
    updatedAt: bigint,
    answeredInRound: bigint,
  ): Promise<SentTransaction>;
  /** Changes the feed's `decimals()`, with the current answer re-expressed in them. */
  setDecimals(aggregator: Address, decimals: number, answer: bigint): Promise<SentTransaction>;
  tokenBalance(token: Address, owner: Address, blockNumber?: bigint): Promise<bigint>;
  /** Mines `blocks` empty blocks in one call; `increaseTimeS` moves the clock first. */
  mine(blocks?: number, options?: { increaseTimeS?: number }): Promise<bigint>;
  blockNumber(): Promise<bigint>;
  /** Timestamp (seconds) of a block, the latest by default. */
  blockTimestamp(blockNumber?: bigint): Promise<bigint>;
  snapshot(): Promise<Hex>;
  /** Reverts to a snapshot (a snapshot id is used up by reverting to it). */
  revert(snapshotId: Hex): Promise<void>;
  /** A raw JSON-RPC call, for what the helpers do not cover. */
  rpc<T>(method: string, params?: unknown[]): Promise<T>;
  close(): Promise<void>;
}

const GAS_DEPLOY = 3_000_000n;
const GAS_CALL = 500_000n;
const GAS_ETH_TRANSFER = 21_000n;
const MAX_FEE_PER_GAS = 50_000_000_000n;
const MAX_PRIORITY_FEE_PER_GAS = 1_000_000_000n;

/** Starts ganache in this process on 127.0.0.1 at a free port. Call `close()` when done. */
export async function startDevnet(options: StartDevnetOptions = {}): Promise<Devnet> {
  const accountCount = options.accounts ?? 10;
  const balanceWei = options.balanceWei ?? 10n ** 24n;
  const accounts: DevnetAccount[] = Array.from({ length: accountCount }, (_, index) => {
    // Deterministic keys: the same addresses every run make failures easier to read.
    const privateKey = keccak256(toHex(`lingxi-devnet-account-${index}`));
    const signer = privateKeyToAccount(privateKey);
    return { address: lower(signer.address), privateKey, signer };
  });

  const server = ganache.server({
    chain: { chainId: DEVNET_CHAIN_ID, hardfork: 'shanghai' },
    logging: { quiet: true },
    miner: { instamine: 'eager' },
    ...(options.forkUrl === undefined ? {} : { fork: { url: options.forkUrl } }),
    wallet: {
      accounts: accounts.map((account) => ({
        secretKey: account.privateKey,
        balance: toHex(balanceWei),
      })),
    },
  });
  await server.listen(0, '127.0.0.1');
  const url = `http://127.0.0.1:${server.address().port}`;
  const client = createPublicClient({ transport: http(url, { retryCount: 0 }), cacheTime: 0 });

  const nonces = new Map<Address, number>();
  let closed = false;

  async function rpc<T>(method: string, params: unknown[] = []): Promise<T> {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    });
    const body = (await response.json()) as { result?: T; error?: { message: string } };
    if (body.error) throw new Error(`${method}: ${body.error.message}`);
    return body.result as T;
  }

  async function nextNonce(account: DevnetAccount): Promise<number> {
    let nonce = nonces.get(account.address);
    if (nonce === undefined) {
      nonce = await client.getTransactionCount({ address: account.address, blockTag: 'pending' });
    }
    nonces.set(account.address, nonce + 1);
    return nonce;
  }

  async function send(params: SendParameters): Promise<SentTransaction> {
    const nonce = await nextNonce(params.from);
    const serialized = await params.from.signer.signTransaction({
      type: 'eip1559',
      chainId: DEVNET_CHAIN_ID,
      nonce,
      gas: params.gas ?? (params.to === null ? GAS_DEPLOY : GAS_CALL),
      maxFeePerGas: MAX_FEE_PER_GAS,
      maxPriorityFeePerGas: MAX_PRIORITY_FEE_PER_GAS,
      ...(params.to === null ? {} : { to: params.to }),
      ...(params.data === undefined ? {} : { data: params.data }),
      value: params.valueWei ?? 0n,
    });
    let txHash: Hex;
    try {
      txHash = await rpc<Hex>('eth_sendRawTransaction', [serialized]);
    } catch (error) {
      nonces.delete(params.from.address);
      throw error;
    }
    const receipt = await client.getTransactionReceipt({ hash: txHash });
    return {
      txHash,
      blockNumber: receipt.blockNumber,
      blockHash: receipt.blockHash,
      status: receipt.status,
      gasUsed: receipt.gasUsed,
      effectiveGasPrice: receipt.effectiveGasPrice,
      feeWei: receipt.gasUsed * receipt.effectiveGasPrice,
      contractAddress: receipt.contractAddress ? lower(receipt.contractAddress) : null,
    };
  }

  async function deploy(
    name: ContractName,
    args: readonly unknown[] = [],
    from: DevnetAccount = account(0),
  ): Promise<Address> {
    const { abi, bytecode } = await getContract(name);
    const sent = await send({ from, to: null, data: encodeDeployData({ abi, bytecode, args }) });
    if (sent.status !== 'success' || !sent.contractAddress) {
      throw new Error(`deploying ${name} failed in ${sent.txHash}`);
    }
    return sent.contractAddress;
  }

  async function call(
    name: ContractName,
    contract: Address,
    functionName: string,
    args: readonly unknown[],
    from: DevnetAccount = account(0),
    gas?: bigint,
  ): Promise<SentTransaction> {
    const { abi } = await getContract(name);
    return send({
      from,
      to: contract,
      data: encodeFunctionData({ abi, functionName, args }),
      ...(gas === undefined ? {} : { gas }),
    });
  }

  function account(index: number): DevnetAccount {
    const found = accounts[index];
    if (!found) throw new Error(`the devnet has ${accounts.length} accounts, not ${index + 1}`);
    return found;
  }

  return {
    url,
    chainId: DEVNET_CHAIN_ID,
    client,
    accounts,
    account,
    send,
    deploy,
    deployToken: (decimals, tokenOptions = {}) =>
      deploy(
        'TestToken',
        [tokenOptions.name ?? 'Test Token', tokenOptions.symbol ?? 'TST', decimals],
        tokenOptions.from,
      ),
    mint: (token, to, amountBaseUnits) => call('TestToken', token, 'mint', [to, amountBaseUnits]),
    transferToken: (token, from, to, amountBaseUnits, transferOptions = {}) =>
      call('TestToken', token, 'transfer', [to, amountBaseUnits], from, transferOptions.gas),
    transferTokenMany: (token, from, transfers) =>
      call(
        'TestToken',
        token,
        'transferMany',
        [transfers.map((transfer) => transfer.to), transfers.map((t) => t.amountBaseUnits)],
        from,
        GAS_CALL + BigInt(transfers.length) * 40_000n,
      ),
    setTransfersBlocked: (token, blocked) =>
      call('TestToken', token, 'setTransfersBlocked', [blocked]),
    sendEth: (from, to, valueWei, sendOptions = {}) =>
      send({ from, to, valueWei, gas: sendOptions.gas ?? GAS_ETH_TRANSFER }),
    deployAggregator: (decimals, description = 'TEST / USD') =>
      deploy('MockAggregator', [decimals, description]),
    setRound: (aggregator, answer, updatedAt) =>
      call('MockAggregator', aggregator, 'setRound', [answer, updatedAt]),
    setIncompleteRound: (aggregator, answer, updatedAt, answeredInRound) =>
      call('MockAggregator', aggregator, 'setIncompleteRound', [
        answer,
        updatedAt,
        answeredInRound,
      ]),
    setDecimals: (aggregator, decimals, answer) =>
      call('MockAggregator', aggregator, 'setDecimals', [decimals, answer]),
    async tokenBalance(token, owner, blockNumber) {
      const { abi } = await getContract('TestToken');
      return (await client.readContract({
        address: token,
        abi,
        functionName: 'balanceOf',
        args: [owner],
        ...(blockNumber === undefined ? {} : { blockNumber }),
      })) as bigint;
    },
    async mine(blocks = 1, mineOptions = {}) {
      if (mineOptions.increaseTimeS) await rpc('evm_increaseTime', [mineOptions.increaseTimeS]);
      await rpc('evm_mine', [{ blocks }]);
      return client.getBlockNumber({ cacheTime: 0 });
    },
    blockNumber: () => client.getBlockNumber({ cacheTime: 0 }),
    async blockTimestamp(blockNumber) {
      const block = await client.getBlock(
        blockNumber === undefined ? { blockTag: 'latest' } : { blockNumber },
      );
      return block.timestamp;
    },
    snapshot: () => rpc<Hex>('evm_snapshot'),
    async revert(snapshotId) {
      const reverted = await rpc<boolean>('evm_revert', [snapshotId]);
      if (!reverted) throw new Error(`evm_revert ${snapshotId} refused`);
      // Nonces of reverted transactions are free again.
      nonces.clear();
    },
    rpc,
    async close() {
      if (closed) return;
      closed = true;
      await server.close();
    },
  };
}

function lower(address: string): Address {
  return address.toLowerCase() as Address;
}
