/**
 * Whether an error says the database could not be reached or went away mid-way (a refused
 * or reset connection, a pool that could not connect in time, a server shutting down), as
 * opposed to the database refusing what was asked. Only the first kind is worth trying again.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) {
    // SQLSTATE: connection exceptions, the server shutting down or not yet up, no free slot.
    return code.startsWith('08') || ['57P01', '57P02', '57P03', '53300'].includes(code);
  }
  if (typeof code === 'string') return /^E[A-Z]+$/.test(code); // ECONNREFUSED, ECONNRESET...
  // node-postgres' own: "Connection terminated unexpectedly", "timeout exceeded when trying
  // to connect", "Client has encountered a connection error and is not queryable".
  return error.constructor === Error && /connect|terminated|queryable/i.test(error.message);
}

/**
 * Runs `operation` until it succeeds, fails for a reason other than the database being
 * unavailable, or `deadlineMs` has passed; waits 100 ms after the first failure, doubling up
 * to 2 s. Only for operations that are safe to repeat (their second run replays the first).
 */
export async function retryWhileUnavailable<T>(
  operation: () => Promise<T>,
  options: { deadlineMs: number; onRetry?: (error: unknown, attempt: number) => void },
): Promise<T> {
  const giveUpAt = Date.now() + options.deadlineMs;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await operation();
    } catch (error) {
      const delayMs = Math.min(2000, 100 * 2 ** (attempt - 1));
      if (!isDatabaseUnavailable(error) || Date.now() + delayMs > giveUpAt) throw error;
      options.onRetry?.(error, attempt);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}
