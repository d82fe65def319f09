import { sql, type Kysely } from 'kysely';
import { Decimal } from '../../ledger/index.js';
import type { ModelConfig } from '../config/schema.js';
import type { Database } from '../db/schema.js';
import { minOf } from './tokens.js';

/** One version of a model's prices, in USD per 1M tokens. Usage records point at the version they paid. */
export interface PriceVersion {
  id: string;
  modelId: string;
  provider: string;
  upstreamModel: string;
  inputPer1M: Decimal;
  cachedInputPer1M: Decimal;
  /** Prompt tokens written to the provider's prompt cache. */
  cacheWritePer1M: Decimal;
  outputPer1M: Decimal;
  reasoningPer1M: Decimal;
}

export interface TokenUsage {
  promptTokens: bigint;
  /** Part of promptTokens: read from the provider's prompt cache. */
  cachedTokens: bigint;
  /** Part of promptTokens: written to the provider's prompt cache. */
  cacheWriteTokens: bigint;
  completionTokens: bigint;
  /** Part of completionTokens (as OpenAI reports it). */
  reasoningTokens: bigint;
}

const MILLION = new Decimal(1_000_000);

/**
 * Makes the price table match the config: a model whose prices changed gets a new version;
 * old versions stay (usage records point at them), so a price change never rewrites history.
 */
export async function syncPrices(
  db: Kysely<Database>,
  models: ReadonlyArray<ModelConfig>,
): Promise<Map<string, PriceVersion>> {
  return db.transaction().execute(async (trx) => {
    // Two processes starting at once must not both add the same new version.
    await sql`select pg_advisory_xact_lock(hashtext('lingxi:model_prices'))`.execute(trx);
    const prices = new Map<string, PriceVersion>();
    for (const model of models) {
      const wanted = {
        model_id: model.id,
        provider: model.provider,
        upstream_model: model.upstreamModel,
        input_per_1m: model.pricePer1M.input,
        cached_input_per_1m: model.pricePer1M.cachedInput ?? model.pricePer1M.input,
        cache_write_per_1m: model.pricePer1M.cacheWrite ?? model.pricePer1M.input,
        output_per_1m: model.pricePer1M.output,
        reasoning_per_1m: model.pricePer1M.reasoning ?? model.pricePer1M.output,
      };
      let row = await trx
        .selectFrom('model_prices')
        .selectAll()
        .where('model_id', '=', model.id)
        .orderBy('id', 'desc')
        .limit(1)
        .executeTakeFirst();
      const same =
        row &&
        row.provider === wanted.provider &&
        row.upstream_model === wanted.upstream_model &&
        new Decimal(row.input_per_1m).eq(wanted.input_per_1m) &&
        new Decimal(row.cached_input_per_1m).eq(wanted.cached_input_per_1m) &&
        new Decimal(cacheWritePer1M(row)).eq(wanted.cache_write_per_1m) &&
        new Decimal(row.output_per_1m).eq(wanted.output_per_1m) &&
        new Decimal(row.reasoning_per_1m).eq(wanted.reasoning_per_1m);
      if (!same)
        row = await trx
          .insertInto('model_prices')
          .values(wanted)
          .returningAll()
          .executeTakeFirstOrThrow();
      prices.set(model.id, {
        id: row!.id,
        modelId: model.id,
        provider: row!.provider,
        upstreamModel: row!.upstream_model,
        inputPer1M: new Decimal(row!.input_per_1m),
        cachedInputPer1M: new Decimal(row!.cached_input_per_1m),
        cacheWritePer1M: new Decimal(cacheWritePer1M(row!)),
        outputPer1M: new Decimal(row!.output_per_1m),
        reasoningPer1M: new Decimal(row!.reasoning_per_1m),
      });
    }
    return prices;
  });
}

/**
 * A price version's cache-write price. Versions from before cache writes had a price of their
 * own (the column is null) billed them as prompt tokens, at the input price.
 */
function cacheWritePer1M(row: { input_per_1m: string; cache_write_per_1m: string | null }): string {
  return row.cache_write_per_1m ?? row.input_per_1m;
}

/**
 * The exact USD cost of a call: uncached input, cache reads, cache writes, visible output and
 * reasoning tokens, each at its price per 1M tokens. The parts of the prompt are taken in that
 * order of trust: cache reads, then cache writes, each at most what is left of the prompt, so
 * no token is billed twice. No rounding: prices have at most 12 decimals, so the result fits
 * USD's 18.
 */
export function costOf(usage: TokenUsage, price: PriceVersion): Decimal {
  const cached = minOf(usage.cachedTokens, usage.promptTokens);
  const written = minOf(usage.cacheWriteTokens, usage.promptTokens - cached);
  const reasoning = minOf(usage.reasoningTokens, usage.completionTokens);
  const d = (n: bigint) => new Decimal(n.toString());
  return d(usage.promptTokens - cached - written)
    .mul(price.inputPer1M)
    .add(d(cached).mul(price.cachedInputPer1M))
    .add(d(written).mul(price.cacheWritePer1M))
    .add(d(usage.completionTokens - reasoning).mul(price.outputPer1M))
    .add(d(reasoning).mul(price.reasoningPer1M))
    .div(MILLION);
}

/**
 * The most a call can cost: every prompt token at the dearest prompt price (a cache write
 * usually costs more than plain input), every output token at the dearer output price.
 */
export function maxCostOf(
  promptTokensMax: bigint,
  outputTokensMax: bigint,
  price: PriceVersion,
): Decimal {
  const d = (n: bigint) => new Decimal(n.toString());
  return d(promptTokensMax)
    .mul(Decimal.max(price.inputPer1M, price.cachedInputPer1M, price.cacheWritePer1M))
    .add(d(outputTokensMax).mul(Decimal.max(price.outputPer1M, price.reasoningPer1M)))
    .div(MILLION);
}

/** Prices on the wire (GET /v1/models): decimal strings per 1M tokens. */
export function priceJson(price: PriceVersion) {
  return {
    currency: 'USD',
    per: '1M tokens',
    input: price.inputPer1M.toString(),
    cached_input: price.cachedInputPer1M.toString(),
    cache_write: price.cacheWritePer1M.toString(),
    output: price.outputPer1M.toString(),
    reasoning: price.reasoningPer1M.toString(),
    version: price.id,
  };
}
