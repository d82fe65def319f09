import { z } from 'zod';
import {
  accountSpecFromChart,
  CurrencyMismatchError,
  Decimal,
  DEFAULT_CHART,
  InsufficientFundsError,
  InvalidAmountError,
  LedgerError,
  normalSide,
  parseAmount,
  UnbalancedEntryError,
  UnknownAccountError,
  ZERO,
  type PostEntryParameters,
  type PostgresLedger,
} from '../../ledger/index.js';
import { auditWithin, type AuditEvent } from '../audit.js';
import { AppError, badRequest } from '../errors.js';
import { withUsersLocked, type LedgerDeps } from './withUsersLocked.js';

/**
 * Manual journal entries and reversals, for operators (docs/accounting.md, "Manual entries"):
 * booking an ignored dust deposit into custody, a refund sent from a deposit address, a custody
 * correction, or reversing a mistaken entry. The ledger validates the entry (balanced per
 * currency, amounts in the currency's scale, accounts the chart allows); this adds what the
 * ledger does not know: no posting to revenue:usage (law 7: it changes only with metered
 * calls), none to the customer account of an erased user, and the actor on the entry.
 */

export const MANUAL_KIND = 'manual';
export const MANUAL_REVERSAL_KIND = 'manual.reversal';

/** Who is told why an erased user's customer account takes no manual posting. */
export const ERASED_NO_MANUAL_ENTRIES =
  'its balance is kept as liabilities:unclaimed and its customer account takes no manual entries';

const LOCK_OPTIONS = { erasedConsequence: ERASED_NO_MANUAL_ENTRIES, param: 'account' };

const text = (field: string) =>
  z
    .string({ error: `${field} must be a text of 1-500 characters` })
    .trim()
    .min(1, { error: `${field} must be a text of 1-500 characters` })
    .max(500, { error: `${field} must be a text of 1-500 characters` });

const integerLike = (min: number) =>
  z.union([
    z.number().int().min(min).max(Number.MAX_SAFE_INTEGER),
    z.string().regex(min < 0 ? /^-?\d{1,30}$/ : /^\d{1,30}$/),
  ]);

/**
 * `metadata.chain` as reconciliation reads it (src/reconcile/reconcileNetwork.ts): the entry
 * counts as of `blockNumber`, and names a deposit by network, txHash and logIndex. Checked so
 * that a typo cannot break the reconciliation's numeric cast; kept exactly as given.
 */
const chainSchema = z.looseObject({
  network: z.string().min(1).max(100),
  txHash: z.string().min(1).max(200),
  // -1: a native transfer; -2 and below: TRX a contract paid (a Tron internal transaction).
  logIndex: integerLike(Number.MIN_SAFE_INTEGER),
  blockNumber: integerLike(0),
});

const entrySchema = z.strictObject({
  description: text('description'),
  postings: z
    .array(
      z.strictObject({
        account: z.string({ error: 'account must be an account code' }),
        amount: z.unknown(),
        currency: z.string().min(1).max(20).optional(),
      }),
      { error: 'postings must be a list of {account, amount, currency?}' },
    )
    .max(100),
  metadata: z
    .record(z.string(), z.unknown(), { error: 'metadata must be a JSON object' })
    .optional(),
  effectiveAt: z.iso
    .datetime({ offset: true, error: 'effectiveAt must be an ISO 8601 date-time' })
    .optional(),
});

export interface ManualEntryRequest {
  description: string;
  postings: Array<{ account: string; amount: string; currency?: string }>;
  metadata: Record<string, unknown>;
  effectiveAt?: Date;
}

/** Validates a manual entry request (HTTP body or CLI file); a 400 naming the bad field. */
export function parseManualEntry(body: unknown): ManualEntryRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw badRequest('the entry must be a JSON object');
  const parsed = entrySchema.safeParse(body);
  if (!parsed.success) throw zodError(parsed.error);
  const { description, postings, metadata, effectiveAt } = parsed.data;
  for (const [i, posting] of postings.entries()) {
    // Amounts are decimal strings, never JSON numbers (a float may already have lost digits).
    if (typeof posting.amount !== 'string')
      throw new InvalidAmountError(`postings[${i}].amount`, 'must be a decimal string');
  }
  if (metadata?.['chain'] !== undefined) {
    const chain = chainSchema.safeParse(metadata['chain']);
    if (!chain.success) throw zodError(chain.error, ['metadata', 'chain']);
  }
  return {
    description,
    postings: postings.map((p) => ({
      account: p.account,
      amount: p.amount as string,
      ...(p.currency !== undefined ? { currency: p.currency } : {}),
    })),
    metadata: metadata ?? {},
    ...(effectiveAt !== undefined ? { effectiveAt: new Date(effectiveAt) } : {}),
  };
}

/** Validates a reversal request: `{reason}`. */
export function parseReversal(body: unknown): { reason: string } {
  const parsed = z.strictObject({ reason: text('reason') }).safeParse(body);
  if (!parsed.success) throw zodError(parsed.error);
  return parsed.data;
}

function zodError(error: z.ZodError, prefix: Array<string | number> = []): AppError {
  const issue = error.issues[0]!;
  const path = [...prefix, ...issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p))];
  const param = path
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`))
    .join('');
  const message =
    issue.message.startsWith('Invalid') && param ? `${param}: ${issue.message}` : issue.message;
  return badRequest(message, param || null);
}

/** The kinds of entry a person booked, which a person may reverse: manual entries and adjustments. */
const REVERSIBLE_BY_HAND = new Set(['manual', 'manual.reversal', 'adjustment']);

/** True for revenue:usage and its sub-accounts: only metered calls post there (law 7). */
export function isUsageRevenue(account: string): boolean {
  return account === 'revenue:usage' || account.startsWith('revenue:usage:');
}

const CUSTOMER = /^liabilities:customers:(.+)$/;

export interface ManualEntryResult {
  entryId: string;
  replayed: boolean;
}

export interface ManualReversalResult extends ManualEntryResult {
  reversedEntryId: string;
}

type Deps = LedgerDeps;

/**
 * How a manual write is recorded: `actor`, the ledger key, and the audit record written in the
 * entry's transaction when the entry is new, so a write is audited once, and only if it commits.
 */
export interface ManualWriteOptions<Written> {
  actor: string;
  idempotencyKey?: string | undefined;
  audit?: (written: Written) => AuditEvent;
}

function checkKey(key: string | undefined): void {
  if (key !== undefined && (key.length === 0 || key.length > 200))
    throw badRequest('the idempotency key must be 1-200 characters', 'idempotencyKey');
}

/**
 * Posts a manual entry (kind `manual`), the actor and the description in its metadata. Refused
 * before anything is written: a posting to revenue:usage (400 `account_not_allowed`), to the
 * customer account of a user that does not exist (404 `user_not_found`) or was erased (409
 * `user_erased`, decided under the user's row lock as adjustments are), and whatever the
 * ledger refuses (its typed error: 400s, 402 `insufficient_balance` below zero, 409 conflict).
 */
export async function postManualEntry(
  deps: Deps,
  request: ManualEntryRequest,
  options: ManualWriteOptions<{ entryId: string }>,
): Promise<ManualEntryResult> {
  checkKey(options.idempotencyKey);
  const users = new Set<string>();
  for (const [i, posting] of request.postings.entries()) {
    if (isUsageRevenue(posting.account))
      throw new AppError(
        'account_not_allowed',
        `${posting.account} changes only with metered calls (usage equals revenue); post a correction elsewhere`,
        { status: 400, param: `postings[${i}].account` },
      );
    const customer = CUSTOMER.exec(posting.account);
    if (customer) users.add(customer[1]!);
  }
  await preflight(deps.ledger, request.postings).catch((error: unknown) => {
    throw error instanceof LedgerError ? asRequestError(error) : error;
  });
  const entry: PostEntryParameters = {
    kind: MANUAL_KIND,
    description: request.description,
    metadata: { ...request.metadata, description: request.description, actor: options.actor },
    postings: request.postings,
    ...(request.effectiveAt ? { effectiveAt: request.effectiveAt } : {}),
    ...(options.idempotencyKey ? { idempotencyKey: `manual:${options.idempotencyKey}` } : {}),
  };
  return withUsersLocked(deps, [...users], LOCK_OPTIONS, async (ledger, client) => {
    const [result] = await ledger.postEntries([entry]).catch((error: unknown) => {
      // Accounts are resolved before the write: an unknown one is thrown, not returned.
      throw error instanceof LedgerError ? asRequestError(error) : error;
    });
    if (result instanceof LedgerError) throw asRequestError(result);
    if (options.audit && !result!.replayed)
      await auditWithin(client, options.audit({ entryId: result!.entryId }));
    return { entryId: result!.entryId, replayed: result!.replayed };
  });
}

/**
 * Reverses an entry (kind `manual.reversal`, the reason and the actor in its metadata). Only an
 * entry a person booked (manual, adjustment) is reversed by hand (400 `entry_not_reversible`
 * otherwise). Refused as a manual entry is: an entry that posted to revenue:usage or to an erased
 * user's customer account; the ledger refuses an unknown entry (404 `entry_not_found`), one
 * already reversed (409 `already_reversed`) and one whose reversal would take a customer below
 * zero (402).
 */
export async function reverseManually(
  deps: Deps,
  entryId: string,
  reason: string,
  options: ManualWriteOptions<{ entryId: string; reversedEntryId: string }>,
): Promise<ManualReversalResult> {
  checkKey(options.idempotencyKey);
  const original = await deps.ledger.getEntry(entryId);
  // Entries the service books from the chain (deposits, sweeps, top-ups, fees, their
  // reversals) are reversed by the watcher when a reorg removes them, and an entry is reversed
  // once: a reversal by hand would stop that. Those are corrected with a manual entry.
  if (original && !REVERSIBLE_BY_HAND.has(original.kind))
    throw new AppError(
      'entry_not_reversible',
      `entry ${entryId} (kind ${original.kind}) was booked by the service and is reversed by it when the chain says so; correct it with a manual entry instead`,
      { status: 400, param: 'entryId' },
    );
  // (A charged call is of kind usage: refused above, so revenue stays equal to usage.)
  const users = new Set<string>();
  for (const posting of original?.postings ?? []) {
    const customer = CUSTOMER.exec(posting.account);
    if (customer) users.add(customer[1]!);
  }
  return withUsersLocked(deps, [...users], LOCK_OPTIONS, async (ledger, client) => {
    const [result] = await ledger.reverseEntries([
      {
        entryId,
        kind: MANUAL_REVERSAL_KIND,
        description: reason,
        metadata: { reason, actor: options.actor },
        ...(options.idempotencyKey
          ? { idempotencyKey: `manual-reversal:${options.idempotencyKey}` }
          : {}),
      },
    ]);
    if (result instanceof LedgerError) throw asRequestError(result);
    if (options.audit && !result!.replayed)
      await auditWithin(
        client,
        options.audit({ entryId: result!.entryId, reversedEntryId: result!.reversedEntryId }),
      );
    return {
      entryId: result!.entryId,
      reversedEntryId: result!.reversedEntryId,
      replayed: result!.replayed,
    };
  });
}

/**
 * The ledger creates an account the chart allows when an entry first names it, before it
 * decides on the entry: a refused entry could leave a new, empty account behind. The checks
 * that need no lock are made here first, with the ledger's own errors, so that a bad entry
 * writes nothing: accounts and currencies, amounts in the currency's scale, balance per
 * currency, and (on the balances now) a no-overdraft account taken below zero. The ledger
 * checks all of it again under its lock when it writes.
 */
async function preflight(
  ledger: PostgresLedger,
  postings: ManualEntryRequest['postings'],
): Promise<void> {
  const sums = new Map<string, Decimal>();
  const reductions = new Map<string, { exists: boolean; amount: Decimal }>();
  for (const [i, posting] of postings.entries()) {
    let account: {
      code: string;
      type: Parameters<typeof normalSide>[0];
      currency: string;
      noNegative: boolean;
    };
    let exists = true;
    try {
      account = await ledger.resolveAccount(posting.account, { create: false });
    } catch (error) {
      if (!(error instanceof UnknownAccountError)) throw error;
      account = accountSpecFromChart(DEFAULT_CHART, posting.account, posting.currency);
      exists = false;
    }
    if (posting.currency && posting.currency !== account.currency)
      throw new CurrencyMismatchError(account.code, account.currency, posting.currency);
    const amount = parseAmount(posting.amount, {
      scale: ledger.scaleOf(account.currency),
      currency: account.currency,
      field: `postings[${i}].amount`,
      allowNegative: true,
    });
    sums.set(account.currency, (sums.get(account.currency) ?? ZERO).add(amount));
    if (account.noNegative) {
      const reduction = normalSide(account.type) === 'credit' ? amount : amount.neg();
      const before = reductions.get(account.code)?.amount ?? ZERO;
      reductions.set(account.code, { exists, amount: before.add(reduction) });
    }
  }
  for (const [currency, sum] of sums)
    if (!sum.isZero()) throw new UnbalancedEntryError(currency, sum.toString());
  for (const [code, { exists, amount }] of reductions) {
    if (!amount.isPositive()) continue;
    const available = exists ? (await ledger.getBalance(code)).available : ZERO;
    if (available.lt(amount))
      throw new InsufficientFundsError(code, available.toString(), amount.toString());
  }
}

/**
 * An unknown account named in a request body is bad input (400), not a missing resource: the
 * ledger's code is kept.
 */
function asRequestError(error: LedgerError): Error {
  if (error.code === 'unknown_account')
    return new AppError(error.code, error.shortMessage, { status: 400, param: error.param });
  return error;
}
