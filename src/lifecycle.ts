/**
 * Work that outlives the request that started it (a stream's settlement) registers here,
 * so that a graceful shutdown waits for it instead of dropping a charge.
 */
export class WorkTracker {
  private readonly pending = new Set<Promise<unknown>>();

  track<T>(work: Promise<T>): Promise<T> {
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work)).catch(() => {});
    return work;
  }

  get size(): number {
    return this.pending.size;
  }

  /** Waits for tracked work, at most `timeoutMs`; resolves to whether everything finished. */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending.size > 0) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.pending]),
        new Promise((resolve) => (timer = setTimeout(resolve, left))),
      ]);
      // A timer left running would keep a stopping process alive until it fires.
      clearTimeout(timer);
    }
    return true;
  }
}
