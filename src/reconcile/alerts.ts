import type { Logger } from '../log.js';

/**
 * Posts error-level findings to the configured webhook as JSON. Best effort with a short
 * timeout: an unreachable webhook is logged, never fails the run (the findings are stored).
 */
export async function sendAlert(
  url: string,
  payload: { runId: string; findings: unknown[] },
  logger: Logger,
): Promise<void> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        source: 'lingxi-ledger',
        event: 'reconciliation.findings',
        ...payload,
      }),
      signal: AbortSignal.timeout(5000),
    });
    if (!response.ok) logger.warn({ status: response.status }, 'alert webhook refused the alert');
  } catch (error) {
    logger.warn(
      { err: error instanceof Error ? error.message : String(error) },
      'alert webhook unreachable',
    );
  }
}
