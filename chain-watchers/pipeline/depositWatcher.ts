import { Kysely, PostgresDialect, sql, type RawBuilder } from 'kysely';
import type pg from 'pg';
import {
  accountCodes,
  AMOUNT_LIMIT,
  Decimal,
  fromBaseUnits,
  LedgerError,
  type LedgerTransaction,
  type PostEntryParameters,
  type PostgresLedger,
} from '../../ledger/index.js';
import type { ChainAdapter, ChainHead, ObservedTransfer } from '../adapter.js';
import { feeCurrencyOf, type NetworkConfig } from '../config.js';
import {
  PriceUnavailableError,
  type PriceQuote,
  type PriceSource,
  type PriceUnavailableKind,
} from '../prices.js';
import { watchedAddresses, type AddressFamily } from './depositAddresses.js';
import type { WatcherTables } from './tables.js';
import { compareBig, maxBig, minBig } from '../bigints.js';

export interface WatcherLogger {
  debug(details: object, message: string): void;
  info(details: object, message: string): void;
  warn(details: object, message: string): void;
  error(details: object, message: string): void;
}

export interface DepositWatcherOptions {
  network: NetworkConfig;
  adapter: ChainAdapter;
  ledger: PostgresLedger;
  pool: pg.Pool;
  /** Price of each accepted asset, by symbol. */
  priceSources: ReadonlyMap<string, PriceSource>;
  logger: WatcherLogger;
  /**
   * How often the `price unavailable` warning is repeated while an asset's deposits keep
   * waiting for a price (it is logged at once when a deposit starts waiting or the cause
   * changes). Five minutes by default.
   */
  priceWarningIntervalMs?: number;
  /** The time in ms, for the warning's interval; `Date.now` by default. */
  nowMs?: () => number;
}

/** How often `price unavailable` is repeated for one asset while nothing changes. */
export const PRICE_WARNING_INTERVAL_MS = 5 * 60_000;

export interface IterationReport {
  head: bigint;
  /** Highest block with the network's required confirmations. */
  safeHeight: bigint;
  scanned: { from: bigint; to: bigint } | null;
  /** Set when the chain changed under the cursor: scanning restarted after this block. */
  forkPoint: bigint | null;
  recorded: number;
  credited: number;
  orphaned: number;
  reversed: number;
  ignored: number;
  booked: number;
  /**
   * Confirmed deposits left uncredited because their price source refused to price them (stale,
   * bad or unreachable feed): they wait, and are priced again on the next iteration. Null when
   * the iteration ended before it priced anything (the endpoint is behind): not counted.
   */
  awaitingPrice: number | null;
  /** The cursor reached the head: the next iteration can wait a poll interval. */
  caughtUp: boolean;
}

/**
 * No checkpoint the watcher kept (4 x reorgDepthMax blocks behind its cursor) is on the chain
 * the endpoint serves: a reorg deeper than all of them, or an endpoint on another chain. The
 * iteration fails before it records, credits or moves anything, and so does every next one
 * until the endpoint serves a chain with a kept checkpoint again (by itself, or another
 * endpoint), or an operator adds a checkpoint below the fork (docs/operating.md).
 */
export class ChainDivergedError extends Error {
  override name = 'ChainDivergedError';
  constructor(
    readonly details: {
      network: string;
      cursor: bigint;
      /** The oldest checkpoint kept below the cursor; null when none is kept. */
      oldestCheckpoint: { number: bigint; hash: string } | null;
      /** What the endpoint has at the oldest checkpoint's height: null when nothing. */
      endpointHash: string | null;
    },
  ) {
    const oldest = details.oldestCheckpoint;
    super(
      `${details.network}: no checkpoint kept matches the chain (a reorg deeper than they reach, or an endpoint on another chain): ` +
        (oldest
          ? `the oldest, block ${oldest.number} ${oldest.hash}, is ${details.endpointHash ?? 'missing'} on the endpoint`
          : 'none is kept below the cursor') +
        `; the cursor stays at ${details.cursor} and nothing is credited until an operator acts`,
    );
  }
}

/** USD has 18 fractional digits; amount x rate is rounded half-even to them, the residue kept on the entry. */
const USD_SCALE = 18;

/**
 * The ignore reason of a transfer in a failed transaction: it moved nothing, so reconciliation
 * does not count it among the uncredited deposits the address holds.
 */
export const FAILED_TRANSACTION = 'the transaction failed';

/**
 * Follows one network: scans bounded block ranges for transfers to or from our addresses,
 * records each, credits a deposit once it has the network's confirmations, books sweeps, and
 * rewinds to the fork point when the chain changes under it. Everything an iteration learns
 * is committed in one database transaction (deposit rows, ledger entries, cursor), so a
 * crash loses the iteration and a restart repeats it, crediting nothing twice: a deposit is
 * unique on (network, transaction, log index) and its entry on the same idempotency key.
 *
 * RPC work happens before the transaction opens; a failed call fails the iteration, which
 * is retried later from the same cursor: no block range is ever skipped.
 */
export class DepositWatcher {
  readonly network: NetworkConfig;
  private readonly family: AddressFamily;
  private readonly feeCurrency: string;
  private readonly assetsBySymbol: Map<string, NetworkConfig['assets'][number]>;
  private readonly treasury: Set<string>;
  /**
   * The assets whose deposits waited for a price at the last iteration that priced: what the
   * warnings were last about. In memory only: a restarted watcher warns afresh.
   */
  private waitingForPrice = new Map<string, WaitingForPrice>();

  constructor(private readonly options: DepositWatcherOptions) {
    this.network = options.network;
    this.family = options.network.kind === 'evm' ? 'evm' : 'tron';
    this.feeCurrency = feeCurrencyOf(options.network);
    this.assetsBySymbol = new Map(options.network.assets.map((a) => [a.symbol, a]));
    this.treasury = new Set(
      options.network.treasuryAddresses.map((a) => options.adapter.normalizeAddress(a)),
    );
  }

  /** One poll: head, reorg check, one bounded scan, confirmations, credits; one commit. */
  async runOnce(): Promise<IterationReport> {
    const { adapter, pool } = this.options;
    const network = this.network.name;
    const head = await adapter.getHead();
    const safeHeight = this.safeHeightOf(head);
    const report: IterationReport = {
      head: head.latest.number,
      safeHeight,
      scanned: null,
      forkPoint: null,
      recorded: 0,
      credited: 0,
      orphaned: 0,
      reversed: 0,
      ignored: 0,
      booked: 0,
      awaitingPrice: null,
      caughtUp: false,
    };

    const db = this.db(pool);
    let cursor = await this.loadCursor(db, head);
    // First start: the block before the first one scanned is a checkpoint too, so that a reorg
    // of the first range scanned finds its fork point rather than no checkpoint at all.
    const startCheckpoint = cursor.firstStart && cursor.hash !== '' ? cursor : null;
    if (cursor.number >= 0n) {
      const canonical = await adapter.getBlock(cursor.number);
      if (!canonical) {
        // The endpoint that answered is not as high as we have scanned: a fallback host that
        // lags, not a reorg (a chain that really got shorter grows back past the cursor, and
        // its hash is compared then). Rewinding would move the cursor back and re-check every
        // deposit above the rewind; crediting could trust blocks not re-checked. Wait instead.
        this.options.logger.warn(
          { network, cursor: String(cursor.number), head: String(head.latest.number) },
          'the endpoint has no block at the cursor (it is behind); waiting for it',
        );
        report.caughtUp = true;
        return report;
      }
      if (canonical.hash !== cursor.hash) {
        const forkPoint = await this.findForkPoint(db, cursor.number);
        this.options.logger.warn(
          { network, cursor: String(cursor.number), forkPoint: String(forkPoint) },
          'chain reorganised under the cursor; rescanning from the fork point',
        );
        report.forkPoint = forkPoint;
        const forkBlock = forkPoint >= 0n ? await adapter.getBlock(forkPoint) : null;
        cursor = { number: forkPoint, hash: forkBlock?.hash ?? '' };
      }
    }

    // Addresses are read after the head: a deposit in any block up to that head was sent to an
    // address assigned before it, so it is in this set.
    const addresses = await watchedAddresses(db, this.family);
    const from = cursor.number + 1n;
    const to = minBig(head.latest.number, from + BigInt(this.network.maxBlockRange) - 1n);
    let transfers: ObservedTransfer[] = [];
    let newCursor = cursor;
    let confirmedHead = head.latest.number;
    let confirmedFinalized = head.finalized;
    if (from <= to) {
      const result = await adapter.scan({
        fromBlock: from,
        toBlock: to,
        // The treasuries too: a transfer from one to a deposit address (a top-up) is ours to
        // book, with the fee the treasury paid, which a scan reports only for a watched sender.
        addresses: new Set([...addresses.keys(), ...this.treasury]),
        ...(cursor.hash === '' ? {} : { parentHash: cursor.hash }),
      });
      transfers = result.transfers;
      newCursor = { number: result.toBlockRef.number, hash: result.toBlockRef.hash };
      report.scanned = { from, to };
      // The endpoint that answered the scan may not be the one that gave the head: one ahead
      // on another fork, whose blocks confirm nothing on this one. A deposit's confirmations
      // are blocks of the chain it was seen on, so no more than that endpoint has.
      if (result.endpointHead !== undefined)
        confirmedHead = minBig(confirmedHead, result.endpointHead);
      // Likewise what is final: final on the other fork is nothing on this one.
      if (result.endpointFinalized !== undefined)
        confirmedFinalized = minBig(confirmedFinalized ?? -1n, result.endpointFinalized);
    }
    report.caughtUp = newCursor.number >= head.latest.number;
    report.safeHeight = this.safeHeightOf(head, confirmedHead, confirmedFinalized);
    const creditHeight = minBig(report.safeHeight, newCursor.number);
    const pricing = await this.quotePrices(
      db,
      transfers,
      addresses,
      creditHeight,
      head.latest.number,
    );

    const client = await pool.connect();
    try {
      await client.query('begin');
      // One iteration at a time per network, even if two watchers ever ran at once.
      await client.query('select pg_advisory_xact_lock(hashtext($1))', [
        `lingxi:watcher-iteration:${network}`,
      ]);
      const tx = this.db(client);
      if (report.forkPoint !== null) await this.markForRecheck(tx, report.forkPoint);
      // Deposits recorded before this iteration now count as confirming; new ones start as seen.
      await this.updateConfirmations(tx, confirmedHead);
      const changed = await this.changedCredits(tx, transfers, addresses);
      report.recorded = await this.record(
        tx,
        transfers.filter((t) => !changed.transfers.has(t)),
        addresses,
        confirmedHead,
      );
      const vanished = await this.settleRechecks(tx, client, newCursor.number, changed);
      report.orphaned = vanished.orphaned;
      report.reversed = vanished.reversed;
      // Reversed just now, they start over with what the chain says of them now.
      report.recorded += await this.record(tx, [...changed.transfers], addresses, confirmedHead);
      const credit = await this.credit(tx, client, creditHeight, confirmedHead, pricing);
      report.credited = credit.credited;
      report.ignored = credit.ignored;
      report.awaitingPrice = credit.awaitingPrice;
      report.booked = await this.bookOutgoing(tx, client, creditHeight);
      if (startCheckpoint)
        await tx
          .insertInto('watcher_checkpoints')
          .values({
            network,
            block_number: startCheckpoint.number.toString(),
            block_hash: startCheckpoint.hash,
          })
          .onConflict((oc) => oc.columns(['network', 'block_number']).doNothing())
          .execute();
      await this.saveCursor(tx, newCursor, creditHeight);
      await client.query('commit');
    } catch (error) {
      await client.query('rollback').catch(() => {});
      throw error;
    } finally {
      client.release();
    }
    this.reportPricing(pricing, creditHeight);
    for (const line of [
      report.credited && `credited ${report.credited} deposits`,
      report.reversed && `reversed ${report.reversed} credited deposits that a reorg removed`,
    ]) {
      if (!line) continue;
      const level = report.reversed ? 'error' : 'info';
      this.options.logger[level]({ network, head: String(report.head) }, line);
    }
    return report;
  }

  /**
   * `latest`: the head confirmations are counted against (`head.latest` unless lower);
   * `finalized`: the final block credited at (`head.finalized` unless lower).
   */
  private safeHeightOf(
    head: ChainHead,
    latest = head.latest.number,
    finalized = head.finalized,
  ): bigint {
    const required = this.network.confirmations;
    if (typeof required === 'number') return latest - BigInt(Math.max(required, 1)) + 1n;
    // `finalized` / `solidified`: what the network says is final; nothing when it says nothing.
    return finalized ?? -1n;
  }

  /** From one of the network's treasury addresses to one of our deposit addresses. */
  private isTopUp(t: ObservedTransfer, addresses: Map<string, string>): boolean {
    return this.treasury.has(t.from) && addresses.has(t.to);
  }

  private confirmationsRequired(): string {
    return String(this.network.confirmations);
  }

  private async loadCursor(
    db: Kysely<WatcherTables>,
    head: ChainHead,
  ): Promise<{ number: bigint; hash: string; firstStart?: true }> {
    const row = await db
      .selectFrom('watcher_cursors')
      .select(['block_number', 'block_hash'])
      .where('network', '=', this.network.name)
      .executeTakeFirst();
    if (row) return { number: BigInt(row.block_number), hash: row.block_hash };
    // First start: from the configured block, or from the head at this moment.
    const start =
      this.network.startBlock !== undefined ? BigInt(this.network.startBlock) : head.latest.number;
    const before = start - 1n;
    const block = before >= 0n ? await this.options.adapter.getBlock(before) : null;
    return { number: before, hash: block?.hash ?? '', firstStart: true };
  }

  /**
   * The newest checkpoint still on the canonical chain; scanning resumes after it. Every
   * checkpoint kept (`saveCursor` keeps 4 x reorgDepthMax blocks of them) is a candidate, so a
   * reorg somewhat deeper than reorgDepthMax is still rewound to where it began: the
   * checkpoints, all of the chain the watcher followed, are on the canonical chain up to the
   * fork and off it above, so a binary search finds the newest in a few block reads. When
   * none is on the chain, throws `ChainDivergedError`: the iteration changes nothing.
   */
  private async findForkPoint(db: Kysely<WatcherTables>, cursorNumber: bigint): Promise<bigint> {
    const checkpoints = await db
      .selectFrom('watcher_checkpoints')
      .select(['block_number', 'block_hash'])
      .where('network', '=', this.network.name)
      .where('block_number', '<', cursorNumber.toString())
      .orderBy('block_number', 'desc')
      .execute();
    const onChain = async (checkpoint: (typeof checkpoints)[number]) =>
      (await this.options.adapter.getBlock(BigInt(checkpoint.block_number)))?.hash ===
      checkpoint.block_hash;
    // Newest first: the first on the chain; `low` ends at checkpoints.length when none is.
    let low = 0;
    let high = checkpoints.length;
    while (low < high) {
      const middle = Math.floor((low + high) / 2);
      if (await onChain(checkpoints[middle]!)) high = middle;
      else low = middle + 1;
    }
    if (low < checkpoints.length) return BigInt(checkpoints[low]!.block_number);
    // None is on the chain: a reorg deeper than every checkpoint kept, or an endpoint on
    // another chain. Rescanning from below them would leave what the reorg removed further
    // down credited, and on another chain would credit its transfers: stop instead.
    const oldest = checkpoints.at(-1);
    const answer = oldest ? await this.options.adapter.getBlock(BigInt(oldest.block_number)) : null;
    throw new ChainDivergedError({
      network: this.network.name,
      cursor: cursorNumber,
      oldestCheckpoint: oldest
        ? { number: BigInt(oldest.block_number), hash: oldest.block_hash }
        : null,
      endpointHash: answer?.hash ?? null,
    });
  }

  /** After a reorg, every transfer above the fork point must be seen again on the new chain. */
  private async markForRecheck(tx: Kysely<WatcherTables>, forkPoint: bigint): Promise<void> {
    const network = this.network.name;
    await tx
      .updateTable('deposits')
      .set({ needs_recheck: true, updated_at: new Date() })
      .where('network', '=', network)
      .where('block_number', '>', forkPoint.toString())
      .where('status', 'not in', ['orphaned', 'reversed'])
      .execute();
    await tx
      .updateTable('outgoing_transfers')
      .set({ needs_recheck: true, updated_at: new Date() })
      .where('network', '=', network)
      .where('block_number', '>', forkPoint.toString())
      .where('status', '<>', 'orphaned')
      .execute();
    await tx
      .deleteFrom('watcher_checkpoints')
      .where('network', '=', network)
      .where('block_number', '>', forkPoint.toString())
      .execute();
  }

  /** Records what a scan saw: deposits (to our addresses) and outgoing transfers (from them). */
  private async record(
    tx: Kysely<WatcherTables>,
    transfers: ObservedTransfer[],
    addresses: Map<string, string>,
    latest: bigint,
  ): Promise<number> {
    const network = this.network.name;
    // A treasury sending to a deposit address (gas for a sweep, funds returned) is our own
    // move, not a customer's deposit: it is recorded and booked with the outgoing transfers.
    // Whatever else a treasury sends or receives is not this watcher's to record.
    const incoming = transfers.filter((t) => addresses.has(t.to) && !this.isTopUp(t, addresses));
    const outgoing = transfers.filter((t) => addresses.has(t.from) || this.isTopUp(t, addresses));
    for (const chunk of chunks(incoming, 500)) {
      await tx
        .insertInto('deposits')
        .values(
          chunk.map((t) => {
            const asset = t.asset;
            const config = asset ? this.assetsBySymbol.get(asset.symbol) : undefined;
            const amount = asset ? fromBaseUnits(t.amountBaseUnits, asset.decimals) : null;
            const ignoreReason = !t.success
              ? FAILED_TRANSACTION
              : !asset
                ? `not an accepted asset (contract ${t.contract ?? 'native'})`
                : config && amount!.lt(config.minDeposit)
                  ? `below the minimum of ${config.minDeposit} ${asset.symbol}`
                  : null;
            return {
              network,
              tx_hash: t.txHash,
              log_index: t.logIndex,
              user_id: addresses.get(t.to)!,
              address: t.to,
              from_address: t.from,
              contract: t.contract,
              asset: asset?.symbol ?? null,
              currency: asset?.currency ?? null,
              decimals: asset?.decimals ?? null,
              amount_base_units: t.amountBaseUnits.toString(),
              amount: amount?.toString() ?? null,
              block_number: t.blockNumber.toString(),
              block_hash: t.blockHash,
              block_time: new Date(Number(t.blockTimestamp) * 1000),
              status: ignoreReason ? 'ignored' : 'seen',
              confirmations: Number(maxBig(0n, latest - t.blockNumber + 1n)),
              confirmations_required: this.confirmationsRequired(),
              ignore_reason: ignoreReason,
              // Mined again to another address after a reorg removed it from this one: a deposit
              // of its own (another user's), credited under a key no earlier row used.
              reincluded: sql<number>`coalesce(${reincludedDeposit(sql`${network}`, sql`${t.txHash}`, sql`${t.logIndex}::int`)}, 0)`,
            };
          }),
        )
        // A row per address: the same transfer mined again paying another of our addresses (a
        // contract call whose recipient depends on the chain's state) is another user's
        // deposit; the row it left keeps its user and what happened to it (orphaned, reversed).
        .onConflict((oc) =>
          oc.columns(['network', 'tx_hash', 'log_index', 'address']).doUpdateSet({
            block_number: sql`excluded.block_number`,
            block_hash: sql`excluded.block_hash`,
            block_time: sql`excluded.block_time`,
            needs_recheck: false,
            // Until it is credited, a transfer is what the chain says now: a transaction mined
            // again on a new branch can have another outcome (it reverts there, or no longer
            // does) or, for a contract call, other amounts. Only a credit is kept as it was.
            ...Object.fromEntries(
              DEPOSIT_OBSERVED.map((column) => [column, ifNotCredited(column)]),
            ),
            // A transfer a reorg removed (orphaned, or credited and reversed) that is mined again
            // on the new chain starts over: it is credited afresh under a new key (`reincluded`);
            // the ledger keeps the earlier credit and its reversal.
            reincluded: ifRemoved(
              'deposits',
              'reincluded',
              reincludedDeposit(
                sql`deposits.network`,
                sql`deposits.tx_hash`,
                sql`deposits.log_index`,
              ),
            ),
            entry_id: ifRemoved('deposits', 'entry_id', sql`null`),
            credited_at: ifRemoved('deposits', 'credited_at', sql`null`),
            amount_usd: ifRemoved('deposits', 'amount_usd', sql`null`),
            rate: ifRemoved('deposits', 'rate', sql`null`),
            rate_source: ifRemoved('deposits', 'rate_source', sql`null`),
            rate_details: ifRemoved('deposits', 'rate_details', sql`null`),
            reversal_entry_id: ifRemoved('deposits', 'reversal_entry_id', sql`null`),
            updated_at: new Date(),
          }),
        )
        .execute();
    }
    for (const chunk of chunks(outgoing, 500)) {
      await tx
        .insertInto('outgoing_transfers')
        .values(
          chunk.map((t) => ({
            network,
            tx_hash: t.txHash,
            log_index: t.logIndex,
            from_address: t.from,
            to_address: t.to,
            contract: t.contract,
            asset: t.asset?.symbol ?? null,
            currency: t.asset?.currency ?? null,
            amount_base_units: t.amountBaseUnits.toString(),
            amount: t.asset ? fromBaseUnits(t.amountBaseUnits, t.asset.decimals).toString() : null,
            fee_base_units: t.feeBaseUnits?.toString() ?? null,
            block_number: t.blockNumber.toString(),
            block_hash: t.blockHash,
            block_time: new Date(Number(t.blockTimestamp) * 1000),
            kind: this.isTopUp(t, addresses)
              ? ('topup' as const)
              : this.treasury.has(t.to)
                ? ('sweep' as const)
                : ('unexpected' as const),
            status: t.success ? 'seen' : 'failed',
            // A transaction whose other rows a reorg removed (a sweep that reverts on the new
            // branch has no log: its row there is another one): its fee is booked afresh.
            reincluded: sql<number>`coalesce(${reincludedAfter(sql`${network}`, sql`${t.txHash}`)}, 0)`,
          })),
        )
        .onConflict((oc) =>
          oc.columns(['network', 'tx_hash', 'log_index']).doUpdateSet({
            block_number: sql`excluded.block_number`,
            block_hash: sql`excluded.block_hash`,
            block_time: sql`excluded.block_time`,
            needs_recheck: false,
            // Until it is booked, what the chain says now (a transaction mined again on a new
            // branch may fail there, or no longer fail, with another fee).
            ...Object.fromEntries(OUTGOING_OBSERVED.map((column) => [column, ifNotBooked(column)])),
            // Mined again after a reorg orphaned it: booked afresh under new keys; the earlier
            // sweep and fee entries were reversed when it was orphaned.
            entry_id: ifRemoved('outgoing_transfers', 'entry_id', sql`null`),
            fee_entry_id: ifRemoved('outgoing_transfers', 'fee_entry_id', sql`null`),
            reincluded: ifRemoved(
              'outgoing_transfers',
              'reincluded',
              reincludedAfter(sql`outgoing_transfers.network`, sql`outgoing_transfers.tx_hash`),
            ),
            updated_at: new Date(),
          }),
        )
        .execute();
    }
    return incoming.length + outgoing.length;
  }

  /**
   * Credited deposits, and booked outgoing transfers, that a reorg put up for recheck and that
   * this scan sees again with another outcome (the same transaction mined again on the new
   * branch, where it reverts, or moves another amount, or pays another address or fee): what
   * was booked is gone as surely as if the transaction were, so they are reversed like one (by
   * `settleRechecks`) and then recorded afresh. An outgoing transaction is compared as a whole,
   * its rows together (they share its fee): a sweep that reverts on the new branch leaves no
   * log, and is seen there as another row (log index -1, failed).
   */
  private async changedCredits(
    tx: Kysely<WatcherTables>,
    transfers: ObservedTransfer[],
    addresses: Map<string, string>,
  ): Promise<ChangedOutcomes> {
    const changed: ChangedOutcomes = { transfers: new Set(), deposits: [], outgoing: [] };
    const outgoing = transfers.filter((t) => addresses.has(t.from) || this.isTopUp(t, addresses));
    if (outgoing.length > 0) await this.changedBookings(tx, outgoing, changed);
    const incoming = transfers.filter((t) => addresses.has(t.to));
    if (incoming.length === 0) return changed;
    const credited = await tx
      .selectFrom('deposits')
      .select(['id', 'tx_hash', 'log_index', 'address', 'contract', 'amount_base_units'])
      .where('network', '=', this.network.name)
      .where('status', '=', 'credited')
      .where('needs_recheck', '=', true)
      .execute();
    const byKey = new Map(credited.map((d) => [`${d.tx_hash}:${d.log_index}`, d]));
    for (const t of incoming) {
      const stored = byKey.get(`${t.txHash}:${t.logIndex}`);
      if (!stored) continue;
      const same =
        t.success &&
        stored.address === t.to &&
        stored.contract === t.contract &&
        BigInt(stored.amount_base_units) === t.amountBaseUnits;
      if (!same) {
        changed.transfers.add(t);
        changed.deposits.push(stored.id);
      }
    }
    return changed;
  }

  /** `changedCredits` for outgoing transactions already booked (transfer or fee entry). */
  private async changedBookings(
    tx: Kysely<WatcherTables>,
    outgoing: ObservedTransfer[],
    changed: ChangedOutcomes,
  ): Promise<void> {
    const booked = await tx
      .selectFrom('outgoing_transfers')
      .select([
        'id',
        'tx_hash',
        'log_index',
        'status',
        'to_address',
        'contract',
        'amount_base_units',
        'fee_base_units',
      ])
      .where('network', '=', this.network.name)
      .where('needs_recheck', '=', true)
      .where('tx_hash', 'in', [...new Set(outgoing.map((t) => t.txHash))])
      .where((eb) =>
        eb.or([eb('status', 'in', ['booked', 'unbooked']), eb('fee_entry_id', 'is not', null)]),
      )
      .execute();
    for (const txHash of new Set(booked.map((o) => o.tx_hash))) {
      const stored = booked.filter((o) => o.tx_hash === txHash);
      const seen = outgoing.filter((t) => t.txHash === txHash);
      const same =
        stored.length === seen.length &&
        seen.every((t) => {
          const o = stored.find((row) => row.log_index === t.logIndex);
          return (
            o !== undefined &&
            (o.status !== 'failed') === t.success &&
            o.to_address === t.to &&
            o.contract === t.contract &&
            BigInt(o.amount_base_units) === t.amountBaseUnits &&
            (o.fee_base_units === null ? null : BigInt(o.fee_base_units)) === t.feeBaseUnits
          );
        });
      if (same) continue;
      for (const t of seen) changed.transfers.add(t);
      changed.outgoing.push(...stored.map((o) => o.id));
    }
  }

  /**
   * Transfers above a fork point that the rescan has passed without seeing again are gone:
   * not yet credited, they are orphaned; already credited, they are reversed (with the part
   * the customer already spent booked as a receivable) and reported at error level.
   */
  private async settleRechecks(
    tx: Kysely<WatcherTables>,
    client: pg.PoolClient,
    scannedTo: bigint,
    changed: Pick<ChangedOutcomes, 'deposits' | 'outgoing'> = { deposits: [], outgoing: [] },
  ): Promise<{ orphaned: number; reversed: number }> {
    const changedIds = changed.deposits;
    const network = this.network.name;
    const gone = await tx
      .selectFrom('deposits')
      .select(['id', 'status', 'entry_id', 'user_id', 'tx_hash', 'log_index'])
      .where('network', '=', network)
      .where('needs_recheck', '=', true)
      .where((eb) =>
        changedIds.length === 0
          ? eb('block_number', '<=', scannedTo.toString())
          : eb.or([eb('block_number', '<=', scannedTo.toString()), eb('id', 'in', changedIds)]),
      )
      .execute();
    const credited = gone.filter((d) => d.status === 'credited' && d.entry_id);
    // The liability the credit went to: the customer's, or (a deposit that arrived after its
    // user was erased) their unclaimed balance. What of it is already gone is owed to us.
    const owners = await Promise.all(
      credited.map(async (d) => {
        const unclaimed = accountCodes.unclaimed(d.user_id!);
        const entry = await this.options.ledger.getEntry(d.entry_id!);
        return entry?.postings.some((p) => p.account === unclaimed)
          ? unclaimed
          : accountCodes.customer(d.user_id!);
      }),
    );
    const reversals = await this.options.ledger.within(client).reverseEntries(
      credited.map((d, i) => ({
        entryId: d.entry_id!,
        kind: 'deposit.reversal',
        description: `deposit ${d.tx_hash}:${d.log_index} on ${network} was removed by a reorg`,
        metadata: { reason: 'reorg', chain: { network, txHash: d.tx_hash, logIndex: d.log_index } },
        shortfallAccounts: { [owners[i]!]: accountCodes.receivable(d.user_id!) },
        // By the entry it reverses: a deposit credited again after a reorg can be reversed again.
        idempotencyKey: `deposit-reversal:${d.entry_id}`,
      })),
    );
    for (const [i, deposit] of credited.entries()) {
      const result = reversals[i]!;
      if (result instanceof LedgerError) throw result;
      await tx
        .updateTable('deposits')
        .set({
          status: 'reversed',
          reversal_entry_id: result.entryId,
          needs_recheck: false,
          updated_at: new Date(),
        })
        .where('id', '=', deposit.id)
        .execute();
      this.options.logger.error(
        {
          network,
          txHash: deposit.tx_hash,
          logIndex: deposit.log_index,
          reversal: result.entryId,
          shortfalls: result.shortfalls,
        },
        'a credited deposit was reorged away and has been reversed',
      );
    }
    const orphans = gone
      .filter((d) => d.status !== 'credited' && d.status !== 'reversed')
      .map((d) => d.id);
    if (orphans.length > 0) {
      await tx
        .updateTable('deposits')
        .set({ status: 'orphaned', needs_recheck: false, updated_at: new Date() })
        .where('id', 'in', orphans)
        .execute();
    }

    const goneOut = await tx
      .selectFrom('outgoing_transfers')
      .select(['id', 'kind', 'status', 'entry_id', 'fee_entry_id', 'tx_hash', 'log_index'])
      .where('network', '=', network)
      .where('needs_recheck', '=', true)
      .where((eb) =>
        changed.outgoing.length === 0
          ? eb('block_number', '<=', scannedTo.toString())
          : eb.or([
              eb('block_number', '<=', scannedTo.toString()),
              eb('id', 'in', changed.outgoing),
            ]),
      )
      .execute();
    // The sweeps and the network fees (one per transaction, on each of its rows) that were
    // booked; keyed by the entry they reverse, so a transfer booked again can be reversed again.
    const bookedOut = goneOut.filter((o) => o.status === 'booked' && o.entry_id);
    const fees = new Map(
      goneOut.flatMap((o) => (o.fee_entry_id ? [[o.fee_entry_id, o.tx_hash] as const] : [])),
    );
    const outReversals = await this.options.ledger.within(client).reverseEntries([
      ...bookedOut.map((o) =>
        o.kind === 'topup'
          ? {
              entryId: o.entry_id!,
              kind: 'topup.reversal',
              description: `top-up ${o.tx_hash}:${o.log_index} on ${network} was removed by a reorg`,
              metadata: {
                reason: 'reorg',
                chain: { network, txHash: o.tx_hash, logIndex: o.log_index },
              },
              idempotencyKey: `topup-reversal:${o.entry_id}`,
            }
          : {
              entryId: o.entry_id!,
              kind: 'sweep.reversal',
              description: `sweep ${o.tx_hash}:${o.log_index} on ${network} was removed by a reorg`,
              metadata: {
                reason: 'reorg',
                chain: { network, txHash: o.tx_hash, logIndex: o.log_index },
              },
              idempotencyKey: `sweep-reversal:${o.entry_id}`,
            },
      ),
      ...[...fees].map(([entryId, txHash]) => ({
        entryId,
        kind: 'network-fee.reversal',
        description: `network fee for ${txHash} on ${network}: the transaction was removed by a reorg`,
        metadata: { reason: 'reorg', chain: { network, txHash } },
        idempotencyKey: `network-fee-reversal:${entryId}`,
      })),
    ]);
    for (const result of outReversals) if (result instanceof LedgerError) throw result;
    for (const o of bookedOut)
      this.options.logger.error(
        { network, txHash: o.tx_hash, logIndex: o.log_index, kind: o.kind, entry: o.entry_id },
        `a booked ${o.kind} was reorged away (or mined again otherwise) and has been reversed`,
      );
    if (goneOut.length > 0) {
      await tx
        .updateTable('outgoing_transfers')
        .set({ status: 'orphaned', needs_recheck: false, updated_at: new Date() })
        .where(
          'id',
          'in',
          goneOut.map((o) => o.id),
        )
        .execute();
    }
    return { orphaned: orphans.length, reversed: credited.length };
  }

  private async updateConfirmations(tx: Kysely<WatcherTables>, latest: bigint): Promise<void> {
    await sql`
      update deposits set confirmations = greatest(0, ${latest.toString()}::bigint - block_number + 1)::int,
             status = case when status = 'seen' then 'confirming' else status end, updated_at = now()
       where network = ${this.network.name} and status in ('seen', 'confirming')`.execute(tx);
  }

  /**
   * Prices every asset that may be credited now, at the block that confirmed it (memoised).
   * A price the source refuses there for good (a stale, incomplete or non-positive round, a
   * feed call that reverts, a node without that block's state) is tried once more at the
   * latest block: a feed that was stale when the deposit confirmed and has been updated since
   * prices it at its new round. A read that failed in passing (a timeout, HTTP 5xx, a dropped
   * connection, rate limiting) is not: it says nothing of the round at the confirming block,
   * which is read again on the next iteration. Either way, unpriced, the asset's deposits wait
   * (in `refused`) while everything else on the network goes on.
   */
  private async quotePrices(
    db: Kysely<WatcherTables>,
    transfers: ObservedTransfer[],
    addresses: Map<string, string>,
    creditHeight: bigint,
    latest: bigint,
  ): Promise<Pricing> {
    const due = await db
      .selectFrom('deposits')
      .select(['asset', 'block_number'])
      .where('network', '=', this.network.name)
      .where('status', 'in', ['seen', 'confirming'])
      .where('needs_recheck', '=', false)
      .where('block_number', '<=', creditHeight.toString())
      .execute();
    const wanted = due.map((d) => ({ asset: d.asset!, block: BigInt(d.block_number) }));
    for (const t of transfers) {
      if (
        t.asset &&
        t.success &&
        addresses.has(t.to) &&
        !this.isTopUp(t, addresses) &&
        t.blockNumber <= creditHeight
      )
        wanted.push({ asset: t.asset.symbol, block: t.blockNumber });
    }
    const quotes = new Map<string, PriceQuote>();
    const refused = new Map<string, PriceRefusal>();
    const atLatest = new Map<string, Promise<PriceQuote | PriceUnavailableError>>();
    const attempt = (source: PriceSource, block: bigint) =>
      source.quote(block).catch((error: unknown) => {
        if (error instanceof PriceUnavailableError) return error;
        throw error;
      });
    for (const { asset, block } of wanted) {
      const at = this.confirmingBlock(block, creditHeight);
      const key = priceKey(asset, at);
      if (quotes.has(key)) continue;
      const known = refused.get(key);
      if (known) {
        known.depositBlocks.add(block);
        continue;
      }
      const source = this.options.priceSources.get(asset);
      if (!source) throw new Error(`no price source for ${asset} on ${this.network.name}`);
      const quote = await attempt(source, at);
      if (!(quote instanceof PriceUnavailableError)) {
        quotes.set(key, quote);
        continue;
      }
      if (quote.definitive && at < latest) {
        if (!atLatest.has(asset)) atLatest.set(asset, attempt(source, latest));
        const later = await atLatest.get(asset)!;
        if (!(later instanceof PriceUnavailableError)) {
          quotes.set(key, {
            ...later,
            details: {
              ...later.details,
              confirmingBlock: at.toString(),
              refusedAtConfirmingBlock: quote.message,
            },
          });
          continue;
        }
      }
      refused.set(key, {
        asset,
        block: at,
        reason: quote.message,
        kind: quote.kind,
        depositBlocks: new Set([block]),
      });
    }
    return { quotes, refused };
  }

  /**
   * Logs what pricing left waiting, without a line per poll: `price unavailable` when an
   * asset's deposits start waiting or the cause changes, then again every
   * `priceWarningIntervalMs` while they wait; one info line when waiting deposits are priced.
   * The gauge (`awaitingPrice`) still counts them every iteration.
   */
  private reportPricing(pricing: Pricing, creditHeight: bigint): void {
    const network = this.network.name;
    const nowMs = (this.options.nowMs ?? Date.now)();
    const intervalMs = this.options.priceWarningIntervalMs ?? PRICE_WARNING_INTERVAL_MS;
    for (const [asset, waiting] of this.waitingForPrice) {
      const priced = [...waiting.depositBlocks]
        .sort(compareBig)
        .map((block) =>
          pricing.quotes.get(priceKey(asset, this.confirmingBlock(block, creditHeight))),
        )
        .filter((quote) => quote !== undefined);
      if (priced.length === 0) continue;
      this.options.logger.info(
        {
          network,
          asset,
          depositBlocks: priced.length,
          rate: priced[0]!.rate.toString(),
          blockNumber: priced[0]!.details['blockNumber'],
          waitedS: Math.round((nowMs - waiting.sinceMs) / 1000),
        },
        'price available: deposits of this asset that waited for a price are priced and credited',
      );
    }
    const byAsset = new Map<string, PriceRefusal[]>();
    for (const refusal of pricing.refused.values()) {
      byAsset.set(refusal.asset, [...(byAsset.get(refusal.asset) ?? []), refusal]);
    }
    const next = new Map<string, WaitingForPrice>();
    for (const [asset, refusals] of byAsset) {
      refusals.sort((a, b) => compareBig(a.block, b.block));
      const depositBlocks = new Set(refusals.flatMap((r) => [...r.depositBlocks]));
      const kinds = [...new Set(refusals.map((r) => r.kind))].sort().join(',');
      const before = this.waitingForPrice.get(asset);
      const due =
        !before ||
        before.kinds !== kinds ||
        [...depositBlocks].some((block) => !before.depositBlocks.has(block)) ||
        nowMs - before.warnedAtMs >= intervalMs;
      const first = refusals[0]!;
      if (due)
        // Crediting of this asset waits, never at a refused rate.
        this.options.logger.warn(
          {
            network,
            asset,
            confirmingBlock: String(first.block),
            confirmingBlocks: refusals.length,
            kind: first.kind,
            reason: first.reason,
          },
          'price unavailable: confirmed deposits of this asset wait uncredited until their price source answers',
        );
      next.set(asset, {
        depositBlocks,
        kinds,
        sinceMs: before?.sinceMs ?? nowMs,
        warnedAtMs: due ? nowMs : before.warnedAtMs,
      });
    }
    this.waitingForPrice = next;
  }

  /**
   * The block at which a deposit reached its required confirmations: its own block plus the
   * confirmations less one, the same whenever (and however often) the watcher gets to it. With
   * `finalized`/`solidified`, the finalized height the watcher credits it at.
   */
  private confirmingBlock(block: bigint, creditHeight: bigint): bigint {
    const required = this.network.confirmations;
    if (typeof required !== 'number') return creditHeight;
    return block + BigInt(Math.max(required, 1)) - 1n;
  }

  /** Credits every deposit with its confirmations: custody and trading legs, the rate on the entry. */
  private async credit(
    tx: Kysely<WatcherTables>,
    client: pg.PoolClient,
    creditHeight: bigint,
    latest: bigint,
    pricing: Pricing,
  ): Promise<{ credited: number; ignored: number; awaitingPrice: number }> {
    const network = this.network.name;
    const due = await tx
      .selectFrom('deposits')
      .selectAll()
      .where('network', '=', network)
      .where('status', 'in', ['seen', 'confirming'])
      .where('needs_recheck', '=', false)
      .where('block_number', '<=', creditHeight.toString())
      .orderBy('block_number')
      .orderBy('id')
      .forUpdate()
      .execute();
    // A deposit to the address of a user who has since been erased is still owed to them:
    // it goes where erasure put the rest of their balance (docs/privacy.md), not to a
    // customer account nobody can sign in to any more. Read under the users' rows (FOR SHARE,
    // in id order) until this iteration commits: an erasure running now (it takes the row FOR
    // UPDATE) either finishes first and this credit goes to unclaimed, or waits and then
    // moves this credit with the rest of the balance. Read without the lock, a credit could
    // land in the customer account just after the erasure emptied it.
    const userIds = [...new Set(due.flatMap((d) => (d.user_id ? [d.user_id] : [])))];
    const erased = new Set(
      userIds.length === 0
        ? []
        : (
            await tx
              .selectFrom('users')
              .select(['id', 'status'])
              .where('id', 'in', userIds)
              .orderBy('id')
              .forShare()
              .execute()
          )
            .filter((u) => u.status === 'erased')
            .map((u) => u.id),
    );
    // Every row of the due deposits' transactions: a transfer a reorg removed can come back at
    // another log index (its position in the new block), as another row of the transaction.
    const txHashes = [...new Set(due.map((d) => d.tx_hash))];
    const siblings =
      txHashes.length === 0
        ? []
        : await tx
            .selectFrom('deposits')
            .select(['id', 'tx_hash', 'log_index', 'user_id', 'reincluded'])
            .where('network', '=', network)
            .where('tx_hash', 'in', txHashes)
            .execute();
    const ledgerTx = this.options.ledger.within(client);
    // Reversals whose receivable a credit of this iteration repays: each repaid once.
    const claimed = new Set<string>();
    const entries: PostEntryParameters[] = [];
    const credited: Array<{
      id: string;
      quote: PriceQuote;
      usd: Decimal;
      txHash: string;
      logIndex: number;
      /** The unclaimed account it was booked to (an erased user's deposit), else null. */
      toUnclaimed: string | null;
    }> = [];
    let ignored = 0;
    let awaitingPrice = 0;
    for (const deposit of due) {
      // Recorded as a deposit before top-ups were told apart (a treasury sending to a deposit
      // address is our own move, recorded with the outgoing transfers since): never credited.
      if (this.treasury.has(deposit.from_address)) {
        await tx
          .updateTable('deposits')
          .set({
            status: 'ignored',
            ignore_reason:
              'sent by a treasury address: an internal transfer (a top-up), not a deposit; recorded before top-ups were booked, so an operator books it by hand',
            updated_at: new Date(),
          })
          .where('id', '=', deposit.id)
          .execute();
        ignored += 1;
        continue;
      }
      const key = priceKey(
        deposit.asset!,
        this.confirmingBlock(BigInt(deposit.block_number), creditHeight),
      );
      const quote = pricing.quotes.get(key);
      if (!quote) {
        if (pricing.refused.has(key)) awaitingPrice += 1;
        continue; // priced in the next iteration
      }
      const amount = new Decimal(deposit.amount!);
      const exact = amount.mul(quote.rate);
      const usd = exact.toDecimalPlaces(USD_SCALE, Decimal.ROUND_HALF_EVEN);
      // Not credited, and not left to stop the watcher on every iteration either: too small to
      // be worth a cent's fraction, or (an asset with a vast supply, a wild price) beyond the
      // amounts the ledger holds exactly, which an operator must look at.
      const ignoreReason = usd.isZero()
        ? 'worth less than the smallest USD unit'
        : amount.abs().gte(AMOUNT_LIMIT) || usd.gte(AMOUNT_LIMIT)
          ? `more than the ledger holds (${AMOUNT_LIMIT.toFixed()} units or more); needs an operator`
          : null;
      if (ignoreReason) {
        await tx
          .updateTable('deposits')
          .set({ status: 'ignored', ignore_reason: ignoreReason, updated_at: new Date() })
          .where('id', '=', deposit.id)
          .execute();
        ignored += 1;
        continue;
      }
      const currency = deposit.currency!;
      const customer = erased.has(deposit.user_id!)
        ? accountCodes.unclaimed(deposit.user_id!)
        : accountCodes.customer(deposit.user_id!);
      const receivable = accountCodes.receivable(deposit.user_id!);
      const previous = await this.previousReversal(
        ledgerTx,
        deposit,
        siblings.filter((r) => r.tx_hash === deposit.tx_hash && r.user_id === deposit.user_id),
        receivable,
        claimed,
      );
      entries.push({
        kind: 'deposit',
        description: `${amount.toString()} ${deposit.asset} deposit on ${network}`,
        effectiveAt: deposit.block_time ? new Date(deposit.block_time) : new Date(),
        idempotencyKey: keyOf(
          `deposit:${network}:${deposit.tx_hash}:${deposit.log_index}`,
          deposit.reincluded,
        ),
        metadata: {
          userId: deposit.user_id,
          asset: deposit.asset,
          amount: amount.toString(),
          rate: quote.rate.toString(),
          rateSource: quote.source,
          priceDetails: quote.details,
          ...(exact.eq(usd) ? {} : { usdRoundingResidue: exact.sub(usd).toString() }),
          ...(previous
            ? {
                previousReversal: {
                  entryId: previous.entryId,
                  receivableBooked: previous.receivableBooked.toString(),
                },
              }
            : {}),
          chain: {
            network,
            txHash: deposit.tx_hash,
            logIndex: deposit.log_index,
            blockNumber: deposit.block_number,
            blockHash: deposit.block_hash,
          },
        },
        postings: [
          {
            account: accountCodes.custody(network, deposit.asset!, deposit.address),
            amount,
            currency,
          },
          { account: accountCodes.trading(currency), amount: amount.neg() },
          { account: accountCodes.trading('USD'), amount: usd },
          { account: customer, amount: usd.neg() },
        ],
        // Mined again after a reversal that booked what the customer had spent of it to their
        // receivable: that debt is repaid first (as far as it is still owed), the rest credited.
        ...(previous
          ? {
              repayReceivable: {
                from: customer,
                receivable,
                amountMax: previous.receivableBooked,
              },
            }
          : {}),
      });
      credited.push({
        id: deposit.id,
        quote,
        usd,
        txHash: deposit.tx_hash,
        logIndex: deposit.log_index,
        toUnclaimed: erased.has(deposit.user_id!) ? customer : null,
      });
    }
    const results = await this.options.ledger.within(client).postEntries(entries);
    for (const [i, deposit] of credited.entries()) {
      const result = results[i]!;
      if (result instanceof LedgerError) throw result;
      if (deposit.toUnclaimed && !result.replayed)
        this.options.logger.warn(
          {
            network,
            txHash: deposit.txHash,
            logIndex: deposit.logIndex,
            entryId: result.entryId,
            account: deposit.toUnclaimed,
            amountUsd: deposit.usd.toString(),
          },
          "a deposit reached an erased user's address: booked to their unclaimed liability, for an operator to settle",
        );
      await tx
        .updateTable('deposits')
        .set({
          status: 'credited',
          entry_id: result.entryId,
          rate: deposit.quote.rate.toString(),
          rate_source: deposit.quote.source,
          rate_details: JSON.stringify(deposit.quote.details),
          amount_usd: deposit.usd.toString(),
          credited_at: new Date(),
          confirmations: sql`greatest(0, ${latest.toString()}::bigint - block_number + 1)::int`,
          updated_at: new Date(),
        })
        .where('id', '=', deposit.id)
        .execute();
      if (result.receivableRepaid && !result.replayed)
        this.options.logger.warn(
          {
            network,
            txHash: deposit.txHash,
            logIndex: deposit.logIndex,
            entryId: result.entryId,
            receivableRepaid: result.receivableRepaid,
          },
          'a deposit reversed after a reorg was mined again: its credit repaid the receivable its reversal booked',
        );
    }
    return { credited: credited.length, ignored, awaitingPrice };
  }

  /**
   * For a deposit credited before, reversed after a reorg and now mined again: the reversal of
   * its latest credit, and what that reversal debited to the customer's receivable (the part of
   * the deposit the customer had spent; after a repayment, the repayment given back too). Null
   * when the deposit never came back, or its reversal booked nothing to the receivable.
   *
   * Its earlier credits are those of every row of the transaction for this user (`rows`, this
   * one included): an EVM log index is the log's position in its block, so the transfer mined
   * again in another block is often another row. When the transaction paid this user more than
   * once (a TRX payout and a USDT transfer, two Transfer logs), the credit of this very transfer
   * is the one whose reversal it repays: first one of the same asset and amount (at the same
   * log index before another), then one at the same log index, then the latest; never one a
   * later credit already repaid, nor one a credit of this iteration did (`claimed`). Taking the
   * latest alone let a 10 USD credit claim a 100 USD reversal and the 100 USD credit the 10 USD
   * one: 20 repaid of 110 owed. Read through the iteration's transaction: a reversal it has
   * just booked counts.
   */
  private async previousReversal(
    ledger: LedgerTransaction,
    deposit: {
      id: string;
      network: string;
      tx_hash: string;
      log_index: number;
      reincluded: number;
      user_id: string | null;
      asset: string | null;
      amount: string | null;
    },
    rows: ReadonlyArray<{ id: string; log_index: number; reincluded: number }>,
    receivable: string,
    claimed: Set<string>,
  ): Promise<{ entryId: string; receivableBooked: Decimal } | null> {
    // Every key a credit of these rows was booked under (not this row's own next one).
    const keys = rows.flatMap((row) =>
      Array.from({ length: row.id === deposit.id ? row.reincluded : row.reincluded + 1 }, (_, n) =>
        keyOf(`deposit:${deposit.network}:${deposit.tx_hash}:${row.log_index}`, n),
      ),
    );
    if (keys.length === 0) return null;
    const ids = [...new Set((await ledger.entryIdsByKey(keys)).values())];
    const credits = (await Promise.all(ids.map((id) => ledger.getEntry(id))))
      // A return of the transfer that paid another of our addresses was not this user's.
      .filter((entry) => entry !== null && entry.metadata['userId'] === deposit.user_id)
      .map((entry) => entry!);
    const repaid = new Set(
      credits.flatMap((entry) => {
        const previous = entry.metadata['previousReversal'] as { entryId?: string } | undefined;
        return previous?.entryId ? [previous.entryId] : [];
      }),
    );
    // This transfer's own credit first (see above), then newest first.
    const amount = deposit.amount === null ? null : new Decimal(deposit.amount);
    const likeness = (entry: (typeof credits)[number]): number => {
      const sameTransfer =
        entry.metadata['asset'] === deposit.asset &&
        amount !== null &&
        typeof entry.metadata['amount'] === 'string' &&
        amount.eq(entry.metadata['amount']);
      const chain = entry.metadata['chain'] as { logIndex?: unknown } | undefined;
      return (sameTransfer ? 2 : 0) + (chain?.logIndex === deposit.log_index ? 1 : 0);
    };
    credits.sort(
      (a, b) => likeness(b) - likeness(a) || b.createdAt.getTime() - a.createdAt.getTime(),
    );
    for (const credit of credits) {
      const reversal = await ledger.getReversalOf(credit.id);
      if (!reversal || repaid.has(reversal.id) || claimed.has(reversal.id)) continue;
      claimed.add(reversal.id);
      const receivableBooked = reversal.postings
        .filter((p) => p.account === receivable)
        .reduce((sum, p) => sum.add(p.amount), new Decimal(0));
      return receivableBooked.gt(0) ? { entryId: reversal.id, receivableBooked } : null;
    }
    return null;
  }

  /**
   * Books confirmed transfers out of our addresses: a sweep to the treasury moves custody to
   * custody; the network fee (once per transaction) goes to expenses:network-fees. A transfer
   * to anyone else is left unbooked for reconciliation to report.
   */
  private async bookOutgoing(
    tx: Kysely<WatcherTables>,
    client: pg.PoolClient,
    creditHeight: bigint,
  ): Promise<number> {
    const network = this.network.name;
    const due = await tx
      .selectFrom('outgoing_transfers')
      .selectAll()
      .where('network', '=', network)
      .where('status', 'in', ['seen', 'failed'])
      .where('entry_id', 'is', null)
      // A failed transfer stays `failed` once its fee is booked.
      .where('fee_entry_id', 'is', null)
      .where('needs_recheck', '=', false)
      .where('block_number', '<=', creditHeight.toString())
      .orderBy('block_number')
      .orderBy('id')
      .forUpdate()
      .execute();
    if (due.length === 0) return 0;
    const entries: PostEntryParameters[] = [];
    const booked: string[] = [];
    const feeByTx = new Map<
      string,
      {
        from: string;
        fee: bigint;
        blockTime: Date | null;
        blockNumber: string;
        reincluded: number;
      }
    >();
    for (const transfer of due) {
      const fee = transfer.fee_base_units ? BigInt(transfer.fee_base_units) : 0n;
      const known = feeByTx.get(transfer.tx_hash);
      if (fee > (known?.fee ?? 0n))
        feeByTx.set(transfer.tx_hash, {
          from: transfer.from_address,
          fee,
          blockTime: transfer.block_time ? new Date(transfer.block_time) : null,
          blockNumber: transfer.block_number,
          // The rows of one transaction leave and return to the chain together.
          reincluded: transfer.reincluded,
        });
      // Custody to custody, both ours: a sweep (a deposit address to a treasury) or a top-up
      // (a treasury to a deposit address: gas for a sweep, or funds returned).
      if (transfer.kind === 'unexpected' || transfer.status !== 'seen' || !transfer.asset) continue;
      const amount = new Decimal(transfer.amount!);
      entries.push({
        kind: transfer.kind,
        description:
          transfer.kind === 'sweep'
            ? `sweep of ${amount.toString()} ${transfer.asset} to the treasury on ${network}`
            : `top-up of ${amount.toString()} ${transfer.asset} from the treasury to ${transfer.to_address} on ${network}`,
        effectiveAt: transfer.block_time ? new Date(transfer.block_time) : new Date(),
        idempotencyKey: keyOf(
          `${transfer.kind}:${network}:${transfer.tx_hash}:${transfer.log_index}`,
          transfer.reincluded,
        ),
        metadata: {
          chain: {
            network,
            txHash: transfer.tx_hash,
            logIndex: transfer.log_index,
            blockNumber: transfer.block_number,
            blockHash: transfer.block_hash,
          },
        },
        postings: [
          {
            account: accountCodes.custody(network, transfer.asset, transfer.to_address),
            amount,
            currency: transfer.currency!,
          },
          {
            account: accountCodes.custody(network, transfer.asset, transfer.from_address),
            amount: amount.neg(),
            currency: transfer.currency!,
          },
        ],
      });
      booked.push(transfer.id);
    }
    const feeSymbol = this.network.assets.find((a) => a.native)?.symbol ?? this.feeCurrency;
    const feeDecimals =
      this.network.assets.find((a) => a.native)?.decimals ?? (this.network.kind === 'evm' ? 18 : 6);
    const feeTxHashes: string[] = [];
    for (const [txHash, { from, fee, blockTime, blockNumber, reincluded }] of feeByTx) {
      if (fee === 0n) continue;
      const amount = fromBaseUnits(fee, feeDecimals);
      entries.push({
        kind: 'network-fee',
        description: `network fee of ${amount.toString()} ${this.feeCurrency} for ${txHash} on ${network}`,
        effectiveAt: blockTime ?? new Date(),
        idempotencyKey: keyOf(`network-fee:${network}:${txHash}`, reincluded),
        metadata: { chain: { network, txHash, blockNumber } },
        postings: [
          { account: accountCodes.networkFees(network), amount, currency: this.feeCurrency },
          {
            account: accountCodes.custody(network, feeSymbol, from),
            amount: amount.neg(),
            currency: this.feeCurrency,
          },
        ],
      });
      feeTxHashes.push(txHash);
    }
    const results = await this.options.ledger.within(client).postEntries(entries);
    for (const result of results) if (result instanceof LedgerError) throw result;
    // Each row of the transaction names its fee entry, for a reorg to reverse it.
    for (const [i, txHash] of feeTxHashes.entries()) {
      await tx
        .updateTable('outgoing_transfers')
        .set({ fee_entry_id: (results[booked.length + i] as { entryId: string }).entryId })
        .where(
          'id',
          'in',
          due.filter((t) => t.tx_hash === txHash).map((t) => t.id),
        )
        .execute();
    }
    for (const [i, id] of booked.entries()) {
      await tx
        .updateTable('outgoing_transfers')
        .set({
          status: 'booked',
          entry_id: (results[i] as { entryId: string }).entryId,
          updated_at: new Date(),
        })
        .where('id', '=', id)
        .execute();
    }
    const rest = due.filter((t) => !booked.includes(t.id)).map((t) => t.id);
    if (rest.length > 0) {
      await tx
        .updateTable('outgoing_transfers')
        .set({
          status: sql`case when status = 'failed' then 'failed' else 'unbooked' end`,
          updated_at: new Date(),
        })
        .where('id', 'in', rest)
        .execute();
    }
    return entries.length;
  }

  /** Saves how far this iteration scanned, and up to which block it could credit deposits. */
  private async saveCursor(
    tx: Kysely<WatcherTables>,
    cursor: { number: bigint; hash: string },
    creditHeight: bigint,
  ): Promise<void> {
    const network = this.network.name;
    if (cursor.number < 0n) return;
    const row = {
      block_number: cursor.number.toString(),
      block_hash: cursor.hash,
      credited_to: creditHeight < 0n ? null : creditHeight.toString(),
    };
    await tx
      .insertInto('watcher_cursors')
      .values({ network, ...row })
      .onConflict((oc) => oc.column('network').doUpdateSet({ ...row, updated_at: new Date() }))
      .execute();
    await tx
      .insertInto('watcher_checkpoints')
      .values({ network, block_number: cursor.number.toString(), block_hash: cursor.hash })
      .onConflict((oc) =>
        oc.columns(['network', 'block_number']).doUpdateSet({ block_hash: cursor.hash }),
      )
      .execute();
    const keepFrom = cursor.number - BigInt(this.network.reorgDepthMax) * 4n;
    await tx
      .deleteFrom('watcher_checkpoints')
      .where('network', '=', network)
      .where('block_number', '<', keepFrom.toString())
      .execute();
  }

  /** Kysely over a pool, or over one connection (the iteration's transaction). */
  private db(connection: pg.Pool | pg.PoolClient): Kysely<WatcherTables> {
    if ('totalCount' in connection)
      return new Kysely<WatcherTables>({ dialect: new PostgresDialect({ pool: connection }) });
    // Kysely asks a pool for a connection and releases it after each query: hand it this
    // transaction's connection every time, and never let it go.
    const client = { query: connection.query.bind(connection), release: () => {} };
    const single = { connect: async () => client, end: async () => {} };
    return new Kysely<WatcherTables>({
      dialect: new PostgresDialect({ pool: single as unknown as pg.Pool }),
    });
  }
}

/**
 * What a scan observes of a deposit: refreshed on every sighting until it is credited. Its
 * address (and so its user) is the row's identity: a sighting at another address is another row.
 */
const DEPOSIT_OBSERVED = [
  'from_address',
  'contract',
  'asset',
  'currency',
  'decimals',
  'amount_base_units',
  'amount',
  'status',
  'confirmations',
  'ignore_reason',
] as const;

/** What a scan observes of an outgoing transfer: refreshed on every sighting until it is booked. */
const OUTGOING_OBSERVED = [
  'to_address',
  'contract',
  'asset',
  'currency',
  'amount_base_units',
  'amount',
  'fee_base_units',
  'kind',
  'status',
] as const;

/**
 * In the deposits upsert: the new sighting's `column` while the stored row has not been credited
 * (seen, confirming, ignored, or removed by a reorg), else the stored value: a credit keeps what
 * it credited. (On Tron a credited deposit is solidified and cannot change; a credited EVM
 * deposit mined again with another outcome never reaches here credited: `changedCredits`.)
 */
function ifNotCredited(column: string): RawBuilder<never> {
  return sql<never>`case when deposits.status in ('seen', 'confirming', 'ignored', 'orphaned', 'reversed') then ${sql.ref(`excluded.${column}`)} else ${sql.ref(`deposits.${column}`)} end`;
}

/** In the outgoing transfers upsert: as `ifNotCredited`, until the transfer is booked. */
function ifNotBooked(column: string): RawBuilder<never> {
  return sql<never>`case when outgoing_transfers.status in ('seen', 'failed', 'orphaned') then ${sql.ref(`excluded.${column}`)} else ${sql.ref(`outgoing_transfers.${column}`)} end`;
}

/**
 * In an upsert into `table`: `then` when the stored row is one a reorg removed (orphaned, or
 * credited and reversed), else the stored `column` unchanged.
 */
function ifRemoved(
  table: 'deposits' | 'outgoing_transfers',
  column: string,
  then: RawBuilder<unknown>,
): RawBuilder<never> {
  return sql<never>`case when ${sql.ref(`${table}.status`)} in ('orphaned', 'reversed') then ${then} else ${sql.ref(`${table}.${column}`)} end`;
}

/** What `changedCredits` found mined again with another outcome: to reverse, then record again. */
interface ChangedOutcomes {
  /** Recorded after the reversals, as the chain has them now. */
  transfers: Set<ObservedTransfer>;
  /** Credited deposits to reverse. */
  deposits: string[];
  /** Booked outgoing transfers to reverse (every booked row of a changed transaction). */
  outgoing: string[];
}

/**
 * An outgoing row's `reincluded` when it is recorded (again) after a reorg removed rows of its
 * transaction: one more than any of them had, so that the transaction's fee, keyed by the
 * transaction, is booked under a key its reversed fee did not use (null: none was removed).
 */
function reincludedAfter(
  network: RawBuilder<unknown>,
  txHash: RawBuilder<unknown>,
): RawBuilder<number> {
  return sql<number>`(select max(removed.reincluded) + 1 from outgoing_transfers removed where removed.network = ${network} and removed.tx_hash = ${txHash} and removed.status = 'orphaned')`;
}

/**
 * A deposit row's `reincluded` when the transfer is recorded again after a reorg removed it: one
 * more than any row of the transfer has (at this address or another), so that its credit's key
 * is one no earlier credit of the transfer used (null: the transfer has no row yet).
 */
function reincludedDeposit(
  network: RawBuilder<unknown>,
  txHash: RawBuilder<unknown>,
  logIndex: RawBuilder<unknown>,
): RawBuilder<number> {
  return sql<number>`(select max(earlier.reincluded) + 1 from deposits earlier where earlier.network = ${network} and earlier.tx_hash = ${txHash} and earlier.log_index = ${logIndex})`;
}

/** The idempotency key of a transfer's entry: a new one each time a reorg removed it and it came back. */
function keyOf(base: string, reincluded: number): string {
  return reincluded === 0 ? base : `${base}:reincluded-${reincluded}`;
}

/** What an iteration's price sources said: quotes by asset and confirming block, and refusals. */
interface Pricing {
  quotes: Map<string, PriceQuote>;
  refused: Map<string, PriceRefusal>;
}

interface PriceRefusal {
  asset: string;
  /** The confirming block it was asked for. */
  block: bigint;
  reason: string;
  kind: PriceUnavailableKind;
  /** The blocks of the deposits it holds back (with `finalized`, the confirming block moves). */
  depositBlocks: Set<bigint>;
}

/** An asset whose deposits wait for a price, as last warned about. */
interface WaitingForPrice {
  depositBlocks: Set<bigint>;
  /** The kinds of refusal, sorted and joined: a change is warned about at once. */
  kinds: string;
  sinceMs: number;
  warnedAtMs: number;
}

function priceKey(asset: string, block: bigint): string {
  return `${asset}@${block}`;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
