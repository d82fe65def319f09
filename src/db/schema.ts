import type { ColumnType, Generated } from 'kysely';
import type { LedgerTables } from '../../ledger/index.js';
import type { WatcherTables } from '../../chain-watchers/pipeline/tables.js';

type Timestamp = ColumnType<Date, Date | string, Date | string>;

/** Every table the application reads through Kysely. One interface per table, declared once. */
export interface Database extends LedgerTables, WatcherTables {
  users: {
    id: Generated<string>;
    telegram_id: string | null;
    username: string | null;
    status: Generated<string>;
    created_at: Generated<Date>;
    updated_at: Generated<Date>;
    first_name: string | null;
    last_name: string | null;
    photo_url: string | null;
    last_login_at: Timestamp | null;
    suspended_at: Timestamp | null;
    suspension_reason: string | null;
    erased_at: Timestamp | null;
  };
  sessions: {
    id: string;
    user_id: string;
    token_hash: string;
    method: 'telegram' | 'dev';
    created_at: Generated<Date>;
    expires_at: Timestamp;
    last_used_at: Timestamp | null;
    revoked_at: Timestamp | null;
  };
  telegram_login_replays: {
    payload_hash: string;
    expires_at: Timestamp;
  };
  usage_daily: {
    /** `date`: pg reads it as a local-midnight Date, so queries read it with to_char. */
    day: ColumnType<Date, string, string>;
    user_id: string;
    model: string;
    calls: string;
    prompt_tokens: string;
    cached_tokens: string;
    cache_write_tokens: Generated<string>;
    completion_tokens: string;
    reasoning_tokens: string;
    cost_usd: string;
    shortfall_usd: string;
    outcomes: ColumnType<Record<string, number>, string, string>;
  };
  api_keys: {
    id: string;
    user_id: string;
    name: Generated<string>;
    prefix: string;
    key_hash: string;
    spend_limit_usd: string | null;
    spent_usd: Generated<string>;
    reserved_usd: Generated<string>;
    allowed_models: string[] | null;
    created_at: Generated<Date>;
    last_used_at: Timestamp | null;
    revoked_at: Timestamp | null;
  };
  api_key_reservations: {
    id: string;
    key_id: string;
    amount: string;
    expires_at: Timestamp;
    created_at: Generated<Date>;
    released_at: Timestamp | null;
    charged_usd: string | null;
    /** The call's hold (null on reservations made before migration 0023). */
    hold_id: string | null;
  };
  model_prices: {
    id: Generated<string>;
    model_id: string;
    provider: string;
    upstream_model: string;
    input_per_1m: string;
    cached_input_per_1m: string;
    /** Null on versions from before cache writes had a price: those billed them at `input_per_1m`. */
    cache_write_per_1m: string | null;
    output_per_1m: string;
    reasoning_per_1m: string;
    effective_from: Generated<Date>;
  };
  usage_records: {
    id: Generated<string>;
    request_id: string;
    key_id: string | null;
    user_id: string;
    endpoint: string;
    model: string;
    provider: string | null;
    price_id: string | null;
    stream: boolean;
    prompt_tokens: string;
    cached_tokens: string;
    cache_write_tokens: Generated<string>;
    completion_tokens: string;
    reasoning_tokens: string;
    cost_usd: string;
    shortfall_usd: string;
    estimated: boolean;
    hold_id: string | null;
    entry_id: string | null;
    reservation_id: string | null;
    started_at: Timestamp;
    first_byte_at: Timestamp | null;
    finished_at: Timestamp;
    latency_ms: number;
    http_status: number;
    outcome: string;
    client_ip: string | null;
    user_agent: string | null;
  };
  reconciliation_runs: {
    id: Generated<string>;
    started_at: Generated<Date>;
    finished_at: Timestamp | null;
    trigger: string;
    status: string;
    blocks: ColumnType<Record<string, string>, string, string>;
    stats: ColumnType<Record<string, unknown>, string, string>;
    error: string | null;
    /** What the alert webhook has been told is open after this run (by fingerprint). */
    alert_state: ColumnType<Record<string, unknown> | null, string | null, string | null>;
    alert_status: string | null;
    alert_error: string | null;
  };
  reconciliation_acknowledgements: {
    fingerprint: string;
    kind: string;
    finding: ColumnType<Record<string, unknown>, string, string>;
    reason: string;
    actor: string;
    run_id: string;
    created_at: Generated<Date>;
  };
  reconciliation_findings: {
    id: Generated<string>;
    run_id: string;
    severity: string;
    kind: string;
    network: string | null;
    asset: string | null;
    address: string | null;
    account: string | null;
    currency: string | null;
    expected: string | null;
    actual: string | null;
    difference: string | null;
    details: ColumnType<Record<string, unknown>, string, string>;
  };
  http_idempotency: {
    key: string;
    method: string;
    path: string;
    request_hash: string;
    status: number | null;
    response: ColumnType<unknown, string | null, string | null>;
    created_at: Generated<Date>;
  };
  audit_log: {
    id: Generated<string>;
    at: Generated<Date>;
    actor: string;
    action: string;
    target: string | null;
    details: ColumnType<Record<string, unknown>, string, never>;
    ip: string | null;
    request_id: string | null;
  };
  ledger_seals: {
    seal: string;
    /** xid8 as text. */
    from_tx_id: string;
    to_tx_id: string;
    entry_count: string;
    first_entry_id: string;
    last_entry_id: string;
    entries_hash: string;
    previous_hash: string;
    hash: string;
    algorithm: string;
    created_at: Generated<Date>;
  };
  cron_ticks: {
    job: string;
    /** The schedule's time of the turn (not a clock reading). */
    tick: Timestamp;
    /** hostname:pid of the cron process that ran it. */
    runner: string;
    started_at: Generated<Date>;
    finished_at: Timestamp | null;
    outcome: 'ok' | 'failed' | null;
  };
}
