import type { Migration } from 'kysely';
import * as ledger from './2026-11-27T0001_ledger.js';
import * as users from './2026-11-27T0002_users.js';
import * as gateway from './2026-11-27T0003_gateway.js';
import * as admin from './2026-11-27T0004_admin.js';
import * as deposits from './2026-11-27T0005_deposits.js';
import * as seals from './2026-11-27T0006_seals.js';
import * as accounts from './2026-11-27T0007_accounts.js';
import * as reconciliation from './2026-11-27T0008_reconciliation.js';
import * as rateLimits from './2026-11-27T0009_rate_limits.js';
import * as keyReservations from './2026-11-27T0010_key_reservations.js';
import * as batchFences from './2026-11-27T0011_batch_fences.js';
import * as rateLimitTake from './2026-11-27T0012_rate_limit_take.js';
import * as reincludedTransfers from './2026-11-27T0013_reincluded_transfers.js';
import * as usageReservations from './2026-11-27T0014_usage_reservations.js';
import * as cursorCreditedTo from './2026-11-27T0015_cursor_credited_to.js';
import * as treasuryTopups from './2026-11-27T0016_treasury_topups.js';
import * as depositPerAddress from './2026-11-27T0017_deposit_per_address.js';
import * as cronTicks from './2026-11-27T0018_cron_ticks.js';
import * as reconAlerts from './2026-11-27T0019_recon_alerts.js';
import * as usageCacheWrites from './2026-11-27T0020_usage_cache_writes.js';
import * as cheaperReferenceChecks from './2026-11-27T0021_cheaper_reference_checks.js';
import * as usageOfErasedUsers from './2026-11-27T0022_usage_of_erased_users.js';
import * as reservationHolds from './2026-11-27T0023_reservation_holds.js';
import * as depositIndexGapless from './2026-11-27T0024_deposit_index_gapless.js';

/**
 * Every migration, by name; applied in name order. A new schema step is a new dated file
 * listed here (test/ops/migrations.test.ts checks nothing is left out). Never edit one that
 * has landed.
 */
export const migrations: Record<string, Migration> = {
  '2026-11-27T0001_ledger': ledger,
  '2026-11-27T0002_users': users,
  '2026-11-27T0003_gateway': gateway,
  '2026-11-27T0004_admin': admin,
  '2026-11-27T0005_deposits': deposits,
  '2026-11-27T0006_seals': seals,
  '2026-11-27T0007_accounts': accounts,
  '2026-11-27T0008_reconciliation': reconciliation,
  '2026-11-27T0009_rate_limits': rateLimits,
  '2026-11-27T0010_key_reservations': keyReservations,
  '2026-11-27T0011_batch_fences': batchFences,
  '2026-11-27T0012_rate_limit_take': rateLimitTake,
  '2026-11-27T0013_reincluded_transfers': reincludedTransfers,
  '2026-11-27T0014_usage_reservations': usageReservations,
  '2026-11-27T0015_cursor_credited_to': cursorCreditedTo,
  '2026-11-27T0016_treasury_topups': treasuryTopups,
  '2026-11-27T0017_deposit_per_address': depositPerAddress,
  '2026-11-27T0018_cron_ticks': cronTicks,
  '2026-11-27T0019_recon_alerts': reconAlerts,
  '2026-11-27T0020_usage_cache_writes': usageCacheWrites,
  '2026-11-27T0021_cheaper_reference_checks': cheaperReferenceChecks,
  '2026-11-27T0022_usage_of_erased_users': usageOfErasedUsers,
  '2026-11-27T0023_reservation_holds': reservationHolds,
  '2026-11-27T0024_deposit_index_gapless': depositIndexGapless,
};
