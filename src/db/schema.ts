import type { Generated } from 'kysely';
import type { LedgerTables } from '../../ledger/index.js';

/** Every table the application reads through Kysely. One interface per table, declared once. */
export interface Database extends LedgerTables {
  users: {
    id: Generated<string>;
    telegram_id: string | null;
    username: string | null;
    status: Generated<string>;
    created_at: Generated<Date>;
    updated_at: Generated<Date>;
  };
}
