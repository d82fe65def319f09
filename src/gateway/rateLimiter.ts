import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { AppError } from '../errors.js';

export interface RateLimits {
  requestsPerMinute: number;
  tokensPerMinute: number;
}

/** What this process holds of a key's bucket, taken from the shared one. */
interface Slice {
  requests: number;
  tokens: number;
  takenAtMs: number;
  /** The shared bucket cannot have a whole request before this (no trip to ask it again). */
  emptyUntilMs: number;
}

/** A slice is a twentieth of the per-minute budget (three seconds at the full rate). */
const SLICES_PER_MINUTE = 20;
/** A slice left unused this long is dropped, so old slices never add up to a burst. */
const SLICE_TTL_MS = 60_000;
const MAX_KEYS = 100_000;

/**
 * Per-key limits on requests and tokens per minute, shared by every gateway process. The
 * bucket of each key lives in PostgreSQL (`rate_limit_take`, refilled continuously); a
 * process takes a slice of it at a time and serves calls from that slice in memory, so one
 * database round trip covers many calls, and however many processes serve a key, together
 * they never serve more than its budget. What a process leaves unused of a slice is lost to
 * the key for at most a minute (at most a twentieth of the budget per process).
 */
export class RateLimiter {
  private readonly slices = new Map<string, Slice>();
  private readonly taking = new Map<string, Promise<void>>();

  constructor(
    private readonly limits: RateLimits,
    private readonly db: Kysely<Database>,
  ) {}

  /** Takes one request and `tokens` tokens, or throws 429 `rate_limit_exceeded` with retry-after. */
  async take(keyId: string, tokens: number): Promise<void> {
    const wantTokens = Math.min(tokens, this.limits.tokensPerMinute);
    for (;;) {
      const slice = this.slice(keyId);
      if (slice.requests >= 1 && slice.tokens >= wantTokens) {
        slice.requests -= 1;
        slice.tokens -= wantTokens;
        return;
      }
      const now = Date.now();
      if (slice.requests < 1 && now < slice.emptyUntilMs)
        throw this.exceeded(`${this.limits.requestsPerMinute} requests`, slice.emptyUntilMs - now);
      // One trip to the shared bucket per key at a time; the others look again after it.
      const inFlight = this.taking.get(keyId);
      if (inFlight) {
        await inFlight.catch(() => {});
        continue;
      }
      const trip = this.takeShared(keyId, slice, wantTokens);
      this.taking.set(keyId, trip);
      try {
        await trip;
      } finally {
        this.taking.delete(keyId);
      }
    }
  }

  private slice(keyId: string): Slice {
    const now = Date.now();
    let slice = this.slices.get(keyId);
    if (!slice || now - slice.takenAtMs > SLICE_TTL_MS) {
      if (!slice && this.slices.size >= MAX_KEYS) this.slices.clear();
      slice = { requests: 0, tokens: 0, takenAtMs: now, emptyUntilMs: slice?.emptyUntilMs ?? 0 };
      this.slices.set(keyId, slice);
    }
    return slice;
  }

  /** Adds a slice of the shared bucket to `slice`, or throws 429 when it cannot cover the call. */
  private async takeShared(keyId: string, slice: Slice, wantTokens: number): Promise<void> {
    const { requestsPerMinute, tokensPerMinute } = this.limits;
    const needRequests = Math.max(0, 1 - slice.requests);
    const needTokens = Math.max(0, wantTokens - slice.tokens);
    const { rows } = await sql<{
      granted_requests: number;
      granted_tokens: number;
      left_requests: number;
      left_tokens: number;
    }>`select * from rate_limit_take(${keyId}::uuid, ${requestsPerMinute}, ${tokensPerMinute},
         ${needRequests}, ${needTokens},
         ${Math.ceil(requestsPerMinute / SLICES_PER_MINUTE)}, ${Math.ceil(tokensPerMinute / SLICES_PER_MINUTE)})`.execute(
      this.db,
    );
    const taken = rows[0]!;
    if (taken.granted_requests > 0 || taken.granted_tokens > 0) {
      slice.requests += taken.granted_requests;
      slice.tokens += taken.granted_tokens;
      slice.takenAtMs = Date.now();
      return;
    }
    const waitRequestsMs =
      Math.max(0, (needRequests - taken.left_requests) * 60_000) / requestsPerMinute;
    const waitTokensMs = Math.max(0, (needTokens - taken.left_tokens) * 60_000) / tokensPerMinute;
    if (waitRequestsMs > 0) slice.emptyUntilMs = Date.now() + waitRequestsMs;
    throw this.exceeded(
      waitRequestsMs > 0 ? `${requestsPerMinute} requests` : `${tokensPerMinute} tokens`,
      Math.max(waitRequestsMs, waitTokensMs),
    );
  }

  private exceeded(what: string, waitMs: number): AppError {
    const retryAfterS = Math.max(1, Math.ceil(waitMs / 1000));
    return new AppError(
      'rate_limit_exceeded',
      `rate limit of ${what} per minute reached for this key; retry after ${retryAfterS} s`,
      { status: 429, type: 'requests', headers: { 'retry-after': String(retryAfterS) } },
    );
  }
}
