import type { Address, Hex, PrivateKeyAccount } from 'viem';
import { toHex } from 'viem';
import { mnemonicToAccount, privateKeyToAccount } from 'viem/accounts';
import { Decimal } from '../../../ledger/index.js';
import { mnemonicToAccountXpubs } from '../../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import type { ChainAdapter } from '../../../chain-watchers/adapter.js';
import { createAdapters, createWatcher } from '../../../chain-watchers/pipeline/createWatcher.js';
import type { DepositWatcher } from '../../../chain-watchers/pipeline/depositWatcher.js';
import { parseConfig } from '../../../src/config/load.js';
import { getDepositAddresses } from '../../../src/deposits/deposits.js';
import { createLogger } from '../../../src/log.js';
import { runReconciliation } from '../../../src/reconcile/runReconciliation.js';
import { openRuntime, type Runtime } from '../../../src/runtime.js';
import { createUser } from '../../../src/users/createUser.js';
import { createTestDatabase, type TestDatabase } from '../db.js';
import type { Devnet } from './devnet.js';

/** The mnemonic behind the deposit addresses: the operator's, never the service's. */
export const DEPOSIT_MNEMONIC = 'test test test test test test test test test test test junk';

/** The `networks[0]` fields a test chooses; the rest is the devnet's. */
export interface DevnetNetworkChoices {
  assets: Array<Record<string, unknown>>;
  confirmations?: number;
  treasuryAddresses?: string[];
}

/**
 * One EVM network on a devnet, the service's runtime on a fresh test database, and that
 * network's watcher: what reconciliation and watcher tests that need the whole service share.
 * The watcher has not run yet (its first poll starts at the head).
 */
export interface EvmStack {
  devnet: Devnet;
  database: TestDatabase;
  runtime: Runtime;
  adapters: Map<string, ChainAdapter>;
  watcher: DepositWatcher;
  /** Runs the watcher `times` times. */
  poll(times?: number): Promise<void>;
  /** One reconciliation run, as the cron job makes it. */
  reconcile(): ReturnType<typeof runReconciliation>;
  /** A new user and their deposit address (the nth user gets derivation index n - 1). */
  depositAddressOf(telegramId: number): Promise<{ id: string; address: Address }>;
  close(): Promise<void>;
}

/** Starts the stack on `devnet` (whose tokens the assets name); `close` closes the devnet too. */
export async function startEvmStack(
  devnet: Devnet,
  network: DevnetNetworkChoices,
): Promise<EvmStack> {
  const database = await createTestDatabase();
  const config = parseConfig(
    {
      database: { url: database.url },
      log: { level: 'silent' },
      wallets: mnemonicToAccountXpubs(DEPOSIT_MNEMONIC),
      networks: [
        {
          kind: 'evm',
          name: 'devnet',
          chainId: 1337,
          rpcUrls: [devnet.url],
          confirmations: network.confirmations ?? 3,
          rpcTimeoutMs: 2000,
          rpcRetries: 1,
          ...(network.treasuryAddresses ? { treasuryAddresses: network.treasuryAddresses } : {}),
          assets: network.assets,
        },
      ],
    },
    {},
  );
  const runtime = await openRuntime({ config, logger: createLogger('silent') });
  const adapters = createAdapters(config.networks, createLogger('silent'));
  const watcher = createWatcher({
    network: config.networks[0]!,
    adapters,
    ledger: runtime.ledger,
    pool: runtime.database.pool,
    logger: createLogger('silent'),
  });
  return {
    devnet,
    database,
    runtime,
    adapters,
    watcher,
    async poll(times = 1) {
      for (let i = 0; i < times; i += 1) await watcher.runOnce();
    },
    reconcile: () => runReconciliation(runtime, { trigger: 'test', adapters }),
    async depositAddressOf(telegramId) {
      const { id } = await createUser(runtime.database.db, { telegramId });
      const [view] = await getDepositAddresses(runtime.database.db, runtime.config, id);
      return { id, address: view!.address as Address };
    },
    async close() {
      for (const adapter of adapters.values()) await adapter.close();
      await runtime.close();
      await database.drop();
      await devnet.close();
    },
  };
}

/** The operator's signer for deposit address `index` (for sweeps in tests). */
export function operatorSigner(index: number): { privateKey: Hex; signer: PrivateKeyAccount } {
  const privateKey = toHex(
    mnemonicToAccount(DEPOSIT_MNEMONIC, { addressIndex: index }).getHdKey().privateKey!,
  );
  return { privateKey, signer: privateKeyToAccount(privateKey) };
}

/** Wei as ETH, exactly. */
export function eth(wei: bigint): Decimal {
  return new Decimal(wei.toString()).div(new Decimal(10).pow(18));
}

/** An account's posted balance; zero for an account never used. */
export async function postedOrZero(runtime: Runtime, account: string): Promise<Decimal> {
  return (await runtime.ledger.getBalance(account).catch(() => null))?.posted ?? new Decimal(0);
}
