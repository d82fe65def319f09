import { sql, type Kysely } from 'kysely';
import type { ChainAdapter, TrackedAsset } from '../../chain-watchers/adapter.js';
import type { NetworkConfig } from '../../chain-watchers/config.js';
import { FAILED_TRANSACTION } from '../../chain-watchers/pipeline/depositWatcher.js';
import { accountCodes, Decimal, fromBaseUnits } from '../../ledger/index.js';
import type { Database } from '../db/schema.js';
import type { Finding } from '../integrity/findings.js';

/** A finding about a chain: which network, asset and address it concerns. */
export interface ChainFinding extends Finding {
  network: string;
  asset?: string;
  address?: string;
}

export interface NetworkReconciliation {
  findings: ChainFinding[];
  /** The block the balances were compared at. */
  block: bigint;
  stats: { addresses: number; balancesCompared: number; creditedChecked: number };
}

export interface ReconcileNetworkParameters {
  db: Kysely<Database>;
  network: NetworkConfig;
  adapter: ChainAdapter;
  /** How far back credited deposits are re-checked against the canonical chain (blocks). */
  recheckBlocks?: number;
  /**
   * When the previous completed run started: a deposit reversal that owes nothing is reported
   * (as info) only if it was booked since. Absent: all of them.
   */
  reportSince?: Date;
  /** Most findings of each listed kind (stuck, reversed deposits, outflows) per run. Default 100. */
  findingsListed?: number;
}

/**
 * An acknowledged finding of `kind` about the row `alias` (network, tx_hash, log_index and the
 * address column given): the same one its fingerprint names (acknowledgeFinding stores the
 * finding), listed after every live one, so acknowledged rows cannot crowd live ones out of the limit
 * (the run still leaves them out, and counts them).
 */
function acknowledged(kind: string, alias: string, addressColumn: string) {
  return sql<boolean>`exists (
    select 1 from reconciliation_acknowledgements ack
     where ack.kind = ${kind}
       and ack.finding ->> 'network' = ${sql.ref(`${alias}.network`)}
       and ack.finding ->> 'address' = ${sql.ref(`${alias}.${addressColumn}`)}
       and ack.finding -> 'details' ->> 'txHash' = ${sql.ref(`${alias}.tx_hash`)}
       and ack.finding -> 'details' ->> 'logIndex' = ${sql.ref(`${alias}.log_index`)}::text)`;
}

/**
 * Chain against ledger for one network (law 8). For every asset and every address of ours
 * (deposit addresses, and any custody account on the network, treasuries included), the
 * on-chain balance at block B equals the custody account as of B, plus deposits the chain
 * has that are still confirming and sweeps and top-ups in not yet booked, minus transfers out not yet
 * booked and (native coin) the network fees of transactions not yet booked, once per
 * transaction, plus deposits it holds that the watcher recorded `ignored` and that nobody booked
 * (named in an `uncredited_deposits` warning), minus the transfers out this run reports as
 * `unexpected_outflow` (one event, one finding: the mismatch is only what no finding explains);
 * any difference is a finding with the numbers. B is the highest block both
 * confirmed and scanned by the watcher. Tron cannot answer at a chosen block: its balances
 * are read at the latest solidified block (where the watcher credits), and when that is above
 * what the watcher has scanned they are not compared (a `watcher_behind` warning says so).
 * Also reported:
 * deposits past their confirmations but not credited, credited deposits whose block is no
 * longer on the canonical chain, deposits reversed after a reorg (an error while the
 * receivable their reversal booked is owed, else info once), and transfers out of our
 * addresses to anyone but the treasury.
 */
export async function reconcileNetwork(
  params: ReconcileNetworkParameters,
): Promise<NetworkReconciliation> {
  const { db, network, adapter } = params;
  const name = network.name;
  const listed = params.findingsListed ?? 100;
  const findings: ChainFinding[] = [];
  const head = await adapter.getHead();
  const safe =
    typeof network.confirmations === 'number'
      ? head.latest.number - BigInt(Math.max(network.confirmations, 1)) + 1n
      : (head.finalized ?? -1n);
  const cursorRow = await db
    .selectFrom('watcher_cursors')
    .select(['block_number', 'credited_to'])
    .where('network', '=', name)
    .executeTakeFirst();
  const cursor = cursorRow ? BigInt(cursorRow.block_number) : null;
  if (cursor === null) {
    findings.push({
      severity: 'warning',
      kind: 'watcher_not_started',
      network: name,
      expected: null,
      actual: null,
      difference: null,
      details: { head: head.latest.number.toString() },
    });
  }
  const block = cursor === null ? safe : cursor < safe ? cursor : safe;

  // Every (asset, address) pair we hold: deposit addresses times accepted assets, plus custody accounts already in the ledger.
  const family = network.kind === 'evm' ? 'evm' : 'tron';
  const addressRows = await db
    .selectFrom('deposit_addresses')
    .select('address')
    .where('family', '=', family)
    .execute();
  const pairs = new Map<string, { asset: TrackedAsset; address: string }>();
  for (const { address } of addressRows)
    for (const asset of adapter.assets) pairs.set(`${asset.symbol}:${address}`, { asset, address });
  const custodyRows = await db
    .selectFrom('ledger_accounts')
    .select('code')
    .where('code', 'like', `assets:custody:${name}:%`)
    .execute();
  for (const { code } of custodyRows) {
    const [, , , symbol, address] = code.split(':');
    const asset = adapter.assets.find((a) => a.symbol === symbol);
    if (asset && address) pairs.set(`${symbol}:${address}`, { asset, address });
  }

  // Transfers out of our addresses that nobody booked: each is reported as an
  // `unexpected_outflow` (below). Read first, because the custody comparison takes off what
  // these findings already report, so that one event is one finding.
  const outflows = await db
    .selectFrom('outgoing_transfers')
    .select([
      'tx_hash',
      'log_index',
      'from_address',
      'to_address',
      'asset',
      'amount',
      'block_number',
      acknowledged('unexpected_outflow', 'outgoing_transfers', 'from_address').as('acknowledged'),
    ])
    .where('network', '=', name)
    .where('status', '=', 'unbooked')
    // A treasury's transfer to a deposit address moves nothing out of our hands; one of a
    // token we do not accept is left unbooked (its fee is booked): not an outflow.
    .where('kind', '<>', 'topup')
    // Something of ours left (an accepted asset, a non-zero amount), or one of our addresses
    // paid for the transaction (our key signed it). Not: a Transfer log "from" our address
    // that anyone can make without our key and that moves nothing we hold: USDT's zero-value
    // transferFrom (address-poisoning spam, needs no allowance), a token we do not accept.
    .where((eb) =>
      eb.or([
        eb.and([eb('asset', 'is not', null), eb('amount', '>', '0')]),
        eb('fee_base_units', '>', '0'),
      ]),
    )
    // Booked by hand once explained (as a deposit the watcher ignored is): an entry, not
    // reversed, posting to the custody account it left and naming it in `metadata.chain`.
    .where(
      sql<boolean>`not exists (
        select 1
          from ledger_entries e
          join ledger_postings p on p.entry_id = e.id
          join ledger_accounts a on a.id = p.account_id
         where a.code = 'assets:custody:' || outgoing_transfers.network || ':'
                        || outgoing_transfers.asset || ':' || outgoing_transfers.from_address
           and e.metadata -> 'chain' ->> 'network' = outgoing_transfers.network
           and e.metadata -> 'chain' ->> 'txHash' = outgoing_transfers.tx_hash
           and e.metadata -> 'chain' ->> 'logIndex' = outgoing_transfers.log_index::text
           and not exists (select 1 from ledger_entries r where r.reverses_entry_id = e.id))`,
    )
    .orderBy(sql`${acknowledged('unexpected_outflow', 'outgoing_transfers', 'from_address')}`)
    .orderBy('block_number')
    .orderBy('id')
    .limit(listed)
    .execute();
  // The amounts those findings report, per asset and address (an acknowledged one is left out
  // of the run, so it explains nothing: the custody account still counts that money).
  const reportedOutflows = new Map<string, Array<{ amount: Decimal; block: bigint }>>();
  for (const o of outflows) {
    if (o.acknowledged || !o.asset || o.amount === null) continue;
    const key = `${o.asset}:${o.from_address}`;
    const list = reportedOutflows.get(key) ?? [];
    list.push({ amount: new Decimal(o.amount), block: BigInt(o.block_number) });
    reportedOutflows.set(key, list);
  }

  let compared = 0;
  const notScanned = { pairs: 0, at: 0n };
  for (const { asset, address } of pairs.values()) {
    const onChain = await adapter.getBalance(address, asset, block);
    const at = onChain.blockNumber;
    // A chain that answers only at its own point (Tron: the latest solidified block) may answer
    // above what the watcher has scanned: what arrived in between is unknown to the books yet.
    if (cursor !== null && at > cursor) {
      notScanned.pairs += 1;
      if (at > notScanned.at) notScanned.at = at;
      continue;
    }
    const account = accountCodes.custody(name, asset.symbol, address);
    const custody = await custodyAsOf(db, account, at);
    const pendingIn = await pendingDeposits(db, name, address, asset.symbol, at);
    const sweepsIn = await unbookedTransfers(db, name, address, asset.symbol, at, 'sweepsIn');
    const pendingOut = await unbookedTransfers(db, name, address, asset.symbol, at, 'out');
    // Fees are paid in the native coin and booked to its custody account (see bookOutgoing).
    const fees = asset.native
      ? fromBaseUnits(await pendingFees(db, name, address, at), asset.decimals)
      : new Decimal(0);
    const uncredited = await uncreditedDeposits(db, name, address, asset.symbol, account, at);
    // Mined at or below the block the chain answered at: above it, the balance still holds them.
    const outflowsReported = (reportedOutflows.get(`${asset.symbol}:${address}`) ?? [])
      .filter((o) => o.block <= at)
      .reduce((total, o) => total.add(o.amount), new Decimal(0));
    const actual = fromBaseUnits(onChain.amountBaseUnits, asset.decimals);
    const expected = custody
      .add(pendingIn)
      .add(sweepsIn)
      .sub(pendingOut)
      .sub(fees)
      .add(uncredited.total)
      .sub(outflowsReported);
    compared += 1;
    if (!actual.eq(expected)) {
      findings.push({
        severity: 'error',
        kind: 'custody_mismatch',
        network: name,
        asset: asset.symbol,
        address,
        account,
        currency: asset.currency,
        expected: expected.toString(),
        actual: actual.toString(),
        difference: actual.sub(expected).toString(),
        details: {
          block: at.toString(),
          custody: custody.toString(),
          confirmingDeposits: pendingIn.toString(),
          unbookedSweepsIn: sweepsIn.toString(),
          unbookedOutgoing: pendingOut.toString(),
          ...(asset.native ? { unbookedFees: fees.toString() } : {}),
          uncreditedDeposits: uncredited.total.toString(),
          unexpectedOutflows: outflowsReported.toString(),
        },
      });
    }
    // In custody, never booked: named, so that it is not an anonymous mismatch for ever.
    if (uncredited.count > 0) {
      findings.push({
        severity: 'warning',
        kind: 'uncredited_deposits',
        network: name,
        asset: asset.symbol,
        address,
        account,
        currency: asset.currency,
        expected: '0',
        actual: uncredited.total.toString(),
        difference: uncredited.total.toString(),
        details: {
          block: at.toString(),
          count: uncredited.count,
          deposits: uncredited.listed,
          ...(uncredited.count > uncredited.listed.length
            ? { listed: uncredited.listed.length }
            : {}),
        },
      });
    }
  }

  if (notScanned.pairs > 0) {
    findings.push({
      severity: 'warning',
      kind: 'watcher_behind',
      network: name,
      expected: null,
      actual: null,
      difference: null,
      details: {
        balancesAt: notScanned.at.toString(),
        scannedTo: cursor!.toString(),
        balancesNotCompared: notScanned.pairs,
      },
    });
  }

  // Past their confirmations and scanned, yet not credited: the watcher is stuck on them. Only
  // what the watcher's last iteration could already credit counts: a deposit that reached its
  // confirmations since then is credited on its next poll.
  const creditedTo = cursorRow?.credited_to == null ? null : BigInt(cursorRow.credited_to);
  const stuckUpTo = creditedTo !== null && creditedTo < block ? creditedTo : block;
  const stuck = await db
    .selectFrom('deposits')
    .select(['tx_hash', 'log_index', 'address', 'asset', 'amount', 'block_number', 'status'])
    .where('network', '=', name)
    .where('status', 'in', ['seen', 'confirming'])
    .where('needs_recheck', '=', false)
    .where('block_number', '<=', stuckUpTo.toString())
    .orderBy('block_number')
    .orderBy('id')
    .limit(listed)
    .execute();
  for (const d of stuck) {
    findings.push({
      severity: 'error',
      kind: 'deposit_not_credited',
      network: name,
      ...(d.asset ? { asset: d.asset } : {}),
      address: d.address,
      expected: 'credited',
      actual: d.status,
      difference: d.amount,
      details: { txHash: d.tx_hash, logIndex: d.log_index, blockNumber: d.block_number },
    });
  }

  // Credited deposits must still be on the canonical chain (recent ones: older blocks are final).
  const recheckFrom = head.latest.number - BigInt(params.recheckBlocks ?? 10_000);
  const credited = await db
    .selectFrom('deposits')
    .select([
      'tx_hash',
      'log_index',
      'address',
      'asset',
      'amount_usd',
      'block_number',
      'block_hash',
    ])
    .where('network', '=', name)
    .where('status', '=', 'credited')
    .where('block_number', '>', recheckFrom.toString())
    .execute();
  const canonical = new Map<string, string | null>();
  for (const d of credited) {
    if (!canonical.has(d.block_number))
      canonical.set(d.block_number, (await adapter.getBlock(BigInt(d.block_number)))?.hash ?? null);
    if (canonical.get(d.block_number) !== d.block_hash) {
      findings.push({
        severity: 'error',
        kind: 'credited_deposit_not_canonical',
        network: name,
        ...(d.asset ? { asset: d.asset } : {}),
        address: d.address,
        expected: d.block_hash,
        actual: canonical.get(d.block_number) ?? null,
        difference: null,
        details: {
          txHash: d.tx_hash,
          logIndex: d.log_index,
          blockNumber: d.block_number,
          creditedUsd: d.amount_usd,
        },
      });
    }
  }

  // A reversal is booked (reversal entry, and a receivable for what the customer had spent):
  // it needs someone only while that receivable is owed (an error); else it is reported once,
  // in the first run after it, for information. Acknowledged ones are left out by the run.
  // Owed: what it booked, less what a credit of the transaction mined again repaid of it (at
  // another log index that credit is another row; its metadata names the reversal it repaid),
  // at most the customer's receivable balance (which other debts of theirs may fill: those are
  // not this reversal's). A repaying credit that a later reorg reversed does not make this one
  // owed again: that reversal mirrored the repayment, and is reported with it.
  // A transfer mined again at the same log index (and address) reuses its row, which then
  // names only its latest credit and reversal: the reversals of its earlier credits are found
  // by their keys (`deposit:{network}:{tx}:{logIndex}`, then `:reincluded-{n}`), so that a
  // receivable the new credit did not repay in full (credited at a lower rate) stays reported.
  const { rows: reversed } = await sql<{
    tx_hash: string;
    log_index: number;
    address: string;
    asset: string | null;
    amount_usd: string | null;
    reversal_entry_id: string | null;
    earlier_credit_id: string | null;
    reversed_at: Date | null;
    receivable_booked: string;
    receivable_repaid: string;
    receivable_owed: string;
  }>`
    with reversals as (
      select d.network, d.tx_hash, d.log_index, d.address, d.asset, d.user_id, d.id,
             d.amount_usd, d.reversal_entry_id, null::uuid as earlier_credit_id
        from deposits d
       where d.network = ${name}
         and d.status = 'reversed'
      union all
      select d.network, d.tx_hash, d.log_index, d.address, d.asset, d.user_id, d.id,
             (select p.amount
                from ledger_postings p
                join ledger_accounts a on a.id = p.account_id
               where p.entry_id = c.id
                 and a.code = 'equity:trading:USD'),
             r.id, c.id
        from deposits d
        cross join lateral generate_series(0, d.reincluded - 1) as n(n)
        join ledger_idempotency k
          on k.key = 'deposit:' || d.network || ':' || d.tx_hash || ':' || d.log_index
                     || case when n.n = 0 then '' else ':reincluded-' || n.n end
        join ledger_entries c on c.id = (k.result ->> 'entryId')::uuid
        join ledger_entries r on r.reverses_entry_id = c.id
       where d.network = ${name}
         and d.reincluded > 0
         -- The same key on another address's row of the transfer: another user's credit.
         and c.metadata ->> 'userId' = d.user_id::text
         and r.id is distinct from d.reversal_entry_id
    )
    select d.tx_hash, d.log_index, d.address, d.asset, d.amount_usd::text as amount_usd,
           d.reversal_entry_id, d.earlier_credit_id, r.created_at as reversed_at,
           receivable.booked::text as receivable_booked,
           receivable.repaid::text as receivable_repaid,
           greatest(least(receivable.booked - receivable.repaid, receivable.balance), 0)::text
             as receivable_owed
      from reversals d
      left join ledger_entries r on r.id = d.reversal_entry_id
      cross join lateral (
        select coalesce((select sum(p.amount)
                           from ledger_postings p
                           join ledger_accounts a on a.id = p.account_id
                          where p.entry_id = d.reversal_entry_id
                            and a.code = 'assets:receivables:customers:' || d.user_id), 0) as booked,
               coalesce((select a.debits_posted - a.credits_posted
                           from ledger_accounts a
                          where a.code = 'assets:receivables:customers:' || d.user_id), 0) as balance,
               coalesce((select sum((c.metadata -> 'receivableRepaid' ->> 'amount')::numeric)
                           from deposits s
                           join ledger_entries c on c.id = s.entry_id
                          where s.network = d.network
                            and s.tx_hash = d.tx_hash
                            and s.user_id = d.user_id
                            and c.metadata -> 'previousReversal' ->> 'entryId'
                                = d.reversal_entry_id::text), 0) as repaid
      ) receivable
     where (least(receivable.booked - receivable.repaid, receivable.balance) > 0
            or ${params.reportSince ?? null}::timestamptz is null
            or r.created_at >= ${params.reportSince ?? null}::timestamptz)
     order by ${acknowledged('deposit_reversed', 'd', 'address')},
              least(receivable.booked - receivable.repaid, receivable.balance) > 0 desc,
              r.created_at desc, d.id desc
     limit ${listed}`.execute(db);
  for (const d of reversed) {
    const owed = new Decimal(d.receivable_owed);
    findings.push({
      severity: owed.gt(0) ? 'error' : 'info',
      kind: 'deposit_reversed',
      network: name,
      ...(d.asset ? { asset: d.asset } : {}),
      address: d.address,
      expected: null,
      actual: null,
      difference: d.amount_usd ? new Decimal(d.amount_usd).neg().toString() : null,
      details: {
        txHash: d.tx_hash,
        logIndex: d.log_index,
        // An earlier credit of a row mined again since: named, so that its finding is not
        // taken for the row's latest reversal (an acknowledgement is one finding's).
        ...(d.earlier_credit_id ? { entryId: d.earlier_credit_id } : {}),
        reversalEntryId: d.reversal_entry_id,
        reversedAt: d.reversed_at ? new Date(d.reversed_at).toISOString() : null,
        receivableBooked: d.receivable_booked,
        ...(new Decimal(d.receivable_repaid).gt(0)
          ? { receivableRepaid: d.receivable_repaid }
          : {}),
        receivableOwed: owed.toString(),
        why: 'credited, then removed by a reorg',
      },
    });
  }

  for (const o of outflows) {
    findings.push({
      severity: 'error',
      kind: 'unexpected_outflow',
      network: name,
      ...(o.asset ? { asset: o.asset } : {}),
      address: o.from_address,
      expected: null,
      actual: o.amount,
      difference: o.amount ? `-${o.amount}` : null,
      details: {
        txHash: o.tx_hash,
        logIndex: o.log_index,
        to: o.to_address,
        blockNumber: o.block_number,
      },
    });
  }

  return {
    findings,
    block,
    stats: {
      addresses: addressRows.length,
      balancesCompared: compared,
      creditedChecked: credited.length,
    },
  };
}

/** A custody account as of a block: postings of entries whose chain event is at or below it (a reversal counts at its original's block). */
async function custodyAsOf(db: Kysely<Database>, account: string, block: bigint): Promise<Decimal> {
  const { rows } = await sql<{ total: string }>`
    select coalesce(sum(p.amount), 0)::text as total
      from ledger_postings p
      join ledger_accounts a on a.id = p.account_id
      join ledger_entries e on e.id = p.entry_id
      left join ledger_entries o on o.id = e.reverses_entry_id
     where a.code = ${account}
       and coalesce((e.metadata -> 'chain' ->> 'blockNumber')::numeric, (o.metadata -> 'chain' ->> 'blockNumber')::numeric, 0)
           <= ${block.toString()}::numeric`.execute(db);
  return new Decimal(rows[0]!.total);
}

async function pendingDeposits(
  db: Kysely<Database>,
  network: string,
  address: string,
  asset: string,
  block: bigint,
): Promise<Decimal> {
  const row = await db
    .selectFrom('deposits')
    .select(sql<string>`coalesce(sum(amount), 0)::text`.as('total'))
    .where('network', '=', network)
    .where('address', '=', address)
    .where('asset', '=', asset)
    .where('status', 'in', ['seen', 'confirming'])
    .where('needs_recheck', '=', false)
    .where('block_number', '<=', block.toString())
    .executeTakeFirstOrThrow();
  return new Decimal(row.total);
}

/** How many uncredited deposits an `uncredited_deposits` finding lists (the oldest first). */
const UNCREDITED_LISTED = 20;

/**
 * Deposits the address holds that the books never will by themselves: successful transfers of
 * an accepted asset, confirmed, recorded `ignored` (below `minDeposit`, worth less than the
 * smallest USD unit, more than the ledger holds, sent by a treasury before top-ups were told
 * apart). Not counted: a failed transaction (it moved nothing), a token we do not accept (no
 * asset), a transfer also recorded as a top-up (booked, or counted, with those), and one an
 * operator has booked by hand: an entry posting to this custody account whose
 * `metadata.chain` names the deposit (network, txHash, logIndex) and that is not reversed.
 */
async function uncreditedDeposits(
  db: Kysely<Database>,
  network: string,
  address: string,
  asset: string,
  account: string,
  block: bigint,
): Promise<{
  total: Decimal;
  count: number;
  listed: Array<{
    txHash: string;
    logIndex: number;
    blockNumber: string;
    amount: string;
    reason: string | null;
  }>;
}> {
  const matching = sql`
      from deposits d
     where d.network = ${network}
       and d.address = ${address}
       and d.asset = ${asset}
       and d.status = 'ignored'
       and d.ignore_reason is distinct from ${FAILED_TRANSACTION}
       and d.needs_recheck = false
       and d.block_number <= ${block.toString()}::bigint
       and not exists (
             select 1 from outgoing_transfers o
              where o.network = d.network and o.tx_hash = d.tx_hash and o.log_index = d.log_index
                and o.status in ('seen', 'booked'))
       and not exists (
             select 1
               from ledger_entries e
               join ledger_postings p on p.entry_id = e.id
               join ledger_accounts a on a.id = p.account_id
              where a.code = ${account}
                and e.metadata -> 'chain' ->> 'network' = d.network
                and e.metadata -> 'chain' ->> 'txHash' = d.tx_hash
                and e.metadata -> 'chain' ->> 'logIndex' = d.log_index::text
                and not exists (select 1 from ledger_entries r where r.reverses_entry_id = e.id))`;
  const { rows: totals } = await sql<{ total: string; count: number }>`
    select coalesce(sum(d.amount), 0)::text as total, count(*)::int as count ${matching}`.execute(
    db,
  );
  const { rows } = await sql<{
    tx_hash: string;
    log_index: number;
    block_number: string;
    amount: string;
    ignore_reason: string | null;
  }>`
    select d.tx_hash, d.log_index, d.block_number::text as block_number, d.amount::text as amount,
           d.ignore_reason
    ${matching}
     order by d.block_number, d.id
     limit ${UNCREDITED_LISTED}`.execute(db);
  return {
    total: new Decimal(totals[0]!.total),
    count: totals[0]!.count,
    listed: rows.map((r) => ({
      txHash: r.tx_hash,
      logIndex: r.log_index,
      blockNumber: r.block_number,
      amount: r.amount,
      reason: r.ignore_reason,
    })),
  };
}

/**
 * Transfers mined but not booked yet: out of this address (`out`: a treasury's top-ups
 * included), or transfers into it from another of our addresses (`sweepsIn`: a sweep into a
 * treasury, or a treasury's top-up of a deposit address).
 */
async function unbookedTransfers(
  db: Kysely<Database>,
  network: string,
  address: string,
  asset: string,
  block: bigint,
  direction: 'out' | 'sweepsIn',
): Promise<Decimal> {
  let query = db
    .selectFrom('outgoing_transfers')
    .select(sql<string>`coalesce(sum(amount), 0)::text`.as('total'))
    .where('network', '=', network)
    .where(direction === 'out' ? 'from_address' : 'to_address', '=', address)
    .where('asset', '=', asset)
    .where('status', '=', 'seen')
    .where('needs_recheck', '=', false)
    .where('block_number', '<=', block.toString());
  // Into a deposit address: a top-up from a treasury; into a treasury: a sweep.
  if (direction === 'sweepsIn') query = query.where('kind', 'in', ['sweep', 'topup']);
  const row = await query.executeTakeFirstOrThrow();
  return new Decimal(row.total);
}

/**
 * Network fees (native base units) this address paid for transactions mined but whose fee is
 * not booked yet: failed ones included (they pay too). A transaction's rows each carry its fee,
 * so it is counted once per transaction, as the watcher books it.
 */
async function pendingFees(
  db: Kysely<Database>,
  network: string,
  address: string,
  block: bigint,
): Promise<bigint> {
  const { rows } = await sql<{ total: string }>`
    select coalesce(sum(fee), 0)::text as total
      from (select max(fee_base_units) as fee
              from outgoing_transfers
             where network = ${network}
               and from_address = ${address}
               and status in ('seen', 'failed')
               and fee_entry_id is null
               and needs_recheck = false
               and block_number <= ${block.toString()}::bigint
             group by tx_hash) per_transaction`.execute(db);
  return BigInt(rows[0]!.total);
}
