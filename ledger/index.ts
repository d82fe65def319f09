/**
 * The ledger's public face. Everything a caller needs: the money type, typed errors,
 * the chart of accounts and the PostgreSQL ledger.
 */
export {
  Decimal,
  ZERO,
  AMOUNT_LIMIT,
  parseAmount,
  formatAmount,
  fromBaseUnits,
  toBaseUnits,
  type AmountInput,
} from './money.js';
export * from './errors.js';
export * from './types.js';
export {
  DEFAULT_CHART,
  accountCodes,
  accountSpecFromChart,
  type AccountTemplate,
  type AccountSpec,
} from './chart.js';
export { isUuid } from './ids.js';
export {
  DatabaseStalledError,
  guardPoolClients,
  isWatched,
  noteStall,
} from './postgres/connectionErrors.js';
export type { Attachment, AttachmentColumnType } from './attachments.js';
export type { PostEntryParameters, PostEntryResult } from './commands/postEntry.js';
export type { CreateHoldParameters, CreateHoldResult } from './commands/createHold.js';
export type { PostHoldParameters, PostHoldResult } from './commands/postHold.js';
export type { VoidHoldParameters, VoidHoldResult } from './commands/voidHold.js';
export type { ExpireHoldsParameters, ExpireHoldsResult } from './commands/expireHolds.js';
export type { ReverseEntryParameters, ReverseEntryResult } from './commands/reverseEntry.js';
export {
  PostgresLedger,
  balanceFromRow,
  type PostgresLedgerOptions,
  type AccountEntriesPage,
  type AccountEntryLine,
  type TrialBalance,
  type BalanceMismatch,
  type LedgerTransaction,
} from './postgres/ledger.js';
export type { LedgerTables } from './postgres/tables.js';
export type { BatchInfo } from './postgres/batcher.js';
