/**
 * Paces requests to at most `perSecond`, evenly spaced (TronGrid counts requests per key per
 * second and suspends a key that exceeds it, so bursts are not worth the risk). FIFO: each
 * caller reserves the next free slot. `pauseUntil` pushes every later slot back after the
 * server said "slow down".
 */
export class RateLimiter {
  private nextSlotAtMs = 0;
  private readonly intervalMs: number;

  constructor(
    perSecond: number,
    private readonly sleep: (ms: number) => Promise<void>,
    private readonly now: () => number = Date.now,
  ) {
    if (!(perSecond > 0)) throw new RangeError('requests per second must be positive');
    this.intervalMs = 1_000 / perSecond;
  }

  async take(): Promise<void> {
    const now = this.now();
    const slot = Math.max(now, this.nextSlotAtMs);
    this.nextSlotAtMs = slot + this.intervalMs;
    if (slot > now) await this.sleep(slot - now);
  }

  pauseUntil(atMs: number): void {
    this.nextSlotAtMs = Math.max(this.nextSlotAtMs, atMs);
  }
}
