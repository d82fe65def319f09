import type { ProviderConfig } from '../config/schema.js';

export class UpstreamError extends Error {
  override name = 'UpstreamError';
  constructor(
    readonly kind: 'timeout' | 'unreachable' | 'status' | 'malformed' | 'aborted',
    message: string,
    readonly status: number | null = null,
  ) {
    super(message);
  }
}

/** An upstream call in flight: its response, and a way to stop it (which also ends its body). */
export interface UpstreamCall {
  response: Response;
  firstByteAt: Date;
  abort(reason: 'timeout' | 'aborted'): void;
  /** Why it was stopped, if it was. */
  readonly stoppedBy: 'timeout' | 'aborted' | null;
}

/**
 * POSTs JSON to a provider. `headersTimeoutMs` bounds the wait for response headers; after
 * that the caller bounds the body (a deadline for a JSON answer, an idle gap for a stream)
 * and may `abort` at any time; the client's signal (client gone, shutdown) aborts too.
 * Non-2xx answers are an UpstreamError carrying upstream's message.
 */
export async function postUpstream(params: {
  provider: ProviderConfig;
  path: string;
  body: unknown;
  signal: AbortSignal;
  headersTimeoutMs: number;
}): Promise<UpstreamCall> {
  const { provider } = params;
  const controller = new AbortController();
  let stoppedBy: 'timeout' | 'aborted' | null = null;
  const abort = (reason: 'timeout' | 'aborted') => {
    stoppedBy ??= reason;
    controller.abort();
  };
  const onClientAbort = () => abort('aborted');
  params.signal.addEventListener('abort', onClientAbort, { once: true });
  if (params.signal.aborted) abort('aborted');
  const headersTimer = setTimeout(() => abort('timeout'), params.headersTimeoutMs);
  let response: Response;
  try {
    response = await fetch(`${provider.baseUrl.replace(/\/+$/, '')}${params.path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        ...(provider.apiKey ? { authorization: `Bearer ${provider.apiKey}` } : {}),
      },
      body: JSON.stringify(params.body),
      signal: controller.signal,
    });
  } catch (error) {
    params.signal.removeEventListener('abort', onClientAbort);
    if (stoppedBy === 'timeout')
      throw new UpstreamError(
        'timeout',
        `${provider.name} did not answer within ${params.headersTimeoutMs} ms`,
      );
    if (stoppedBy === 'aborted') throw new UpstreamError('aborted', 'the client went away');
    throw new UpstreamError(
      'unreachable',
      `${provider.name} is unreachable: ${(error as Error).message}`,
    );
  } finally {
    clearTimeout(headersTimer);
  }
  const firstByteAt = new Date();
  if (response.status < 200 || response.status >= 300) {
    const text = await response.text().catch(() => '');
    params.signal.removeEventListener('abort', onClientAbort);
    let message = text.slice(0, 300);
    try {
      const parsed = JSON.parse(text) as { error?: { message?: unknown } };
      if (typeof parsed.error?.message === 'string') message = parsed.error.message.slice(0, 300);
    } catch {
      // not JSON: keep the start of the text
    }
    throw new UpstreamError(
      'status',
      `${provider.name} answered ${response.status}: ${message}`,
      response.status,
    );
  }
  return {
    response,
    firstByteAt,
    abort,
    get stoppedBy() {
      return stoppedBy;
    },
  };
}

/** Upstream usage numbers, read defensively: anything not a non-negative integer is 0. */
export function readUsage(usage: unknown): {
  promptTokens: bigint;
  cachedTokens: bigint;
  completionTokens: bigint;
  reasoningTokens: bigint;
} | null {
  if (typeof usage !== 'object' || usage === null) return null;
  const u = usage as Record<string, unknown>;
  const int = (value: unknown): bigint =>
    typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? BigInt(value) : 0n;
  const details = (key: string) =>
    typeof u[key] === 'object' && u[key] !== null ? (u[key] as Record<string, unknown>) : {};
  return {
    promptTokens: int(u['prompt_tokens']),
    cachedTokens: int(details('prompt_tokens_details')['cached_tokens']),
    completionTokens: int(u['completion_tokens']),
    reasoningTokens: int(details('completion_tokens_details')['reasoning_tokens']),
  };
}
