import { AppError } from '../errors.js';

export interface RateLimits {
  requestsPerMinute: number;
  tokensPerMinute: number;
}

interface Bucket {
  requests: number;
  tokens: number;
  updatedMs: number;
}

const MAX_KEYS = 100_000;

/**
 * Per-key token buckets for requests and tokens per minute, refilled continuously. Limits
 * hold per gateway process (like most API gateways without a shared cache): with N
 * processes, configure each for 1/N of the intended rate.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly limits: RateLimits) {}

  /** Takes one request and `tokens` tokens, or throws 429 `rate_limit_exceeded` with retry-after. */
  take(keyId: string, tokens: number, nowMs = Date.now()): void {
    const bucket = this.refill(keyId, nowMs);
    const wantTokens = Math.min(tokens, this.limits.tokensPerMinute);
    if (bucket.requests < 1 || bucket.tokens < wantTokens) {
      const waitRequests =
        bucket.requests < 1 ? ((1 - bucket.requests) * 60) / this.limits.requestsPerMinute : 0;
      const waitTokens =
        bucket.tokens < wantTokens
          ? ((wantTokens - bucket.tokens) * 60) / this.limits.tokensPerMinute
          : 0;
      const retryAfterS = Math.max(1, Math.ceil(Math.max(waitRequests, waitTokens)));
      const what =
        bucket.requests < 1
          ? `${this.limits.requestsPerMinute} requests`
          : `${this.limits.tokensPerMinute} tokens`;
      throw new AppError(
        'rate_limit_exceeded',
        `rate limit of ${what} per minute reached for this key; retry after ${retryAfterS} s`,
        {
          status: 429,
          type: 'requests',
          headers: { 'retry-after': String(retryAfterS) },
        },
      );
    }
    bucket.requests -= 1;
    bucket.tokens -= wantTokens;
  }

  /** Gives back tokens taken for an estimate that turned out larger than the call. */
  refund(keyId: string, tokens: number): void {
    const bucket = this.buckets.get(keyId);
    if (bucket)
      bucket.tokens = Math.min(this.limits.tokensPerMinute, bucket.tokens + Math.max(0, tokens));
  }

  private refill(keyId: string, nowMs: number): Bucket {
    let bucket = this.buckets.get(keyId);
    if (!bucket) {
      if (this.buckets.size >= MAX_KEYS) this.buckets.clear();
      bucket = {
        requests: this.limits.requestsPerMinute,
        tokens: this.limits.tokensPerMinute,
        updatedMs: nowMs,
      };
      this.buckets.set(keyId, bucket);
      return bucket;
    }
    const elapsedMin = Math.max(0, nowMs - bucket.updatedMs) / 60_000;
    bucket.requests = Math.min(
      this.limits.requestsPerMinute,
      bucket.requests + elapsedMin * this.limits.requestsPerMinute,
    );
    bucket.tokens = Math.min(
      this.limits.tokensPerMinute,
      bucket.tokens + elapsedMin * this.limits.tokensPerMinute,
    );
    bucket.updatedMs = nowMs;
    return bucket;
  }
}
