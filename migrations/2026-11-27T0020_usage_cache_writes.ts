import { sql, type Kysely } from 'kysely';

/**
 * Prompt-cache writes get a price and a count of their own. `model_prices.cache_write_per_1m`
 * is the price of a version (`models[].pricePer1M.cacheWrite`, the input price when unset);
 * versions from before it stay as they were (append-only: null, read as their input price,
 * which is what they billed cache writes at). `usage_records.cache_write_tokens`: the part of
 * `prompt_tokens` the provider said it wrote to its cache (0 on older rows: not reported then),
 * and its daily sum in `usage_daily.cache_write_tokens` once rows are rolled up.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    alter table model_prices
      add column cache_write_per_1m numeric check (cache_write_per_1m >= 0);
    alter table usage_records
      add column cache_write_tokens bigint not null default 0;
    alter table usage_daily
      add column cache_write_tokens numeric not null default 0;
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    alter table usage_daily drop column cache_write_tokens;
    alter table usage_records drop column cache_write_tokens;
    alter table model_prices drop column cache_write_per_1m;
  `.execute(db);
}
