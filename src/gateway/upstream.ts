import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { ProviderConfig } from '../config/schema.js';
import type { TokenUsage } from './pricing.js';
import { maxOf, minOf } from './tokens.js';

export class UpstreamError extends Error {
  override name = 'UpstreamError';
  constructor(
    /** `deadline`: the call's own time limit (`gateway.maxCallDurationMs`) passed first. */
    readonly kind: 'timeout' | 'deadline' | 'unreachable' | 'status' | 'malformed' | 'aborted',
    message: string,
    readonly status: number | null = null,
    /** The request field upstream blamed, when it named one. */
    readonly param: string | null = null,
    /** How long upstream asked us to wait before trying again (its `retry-after`), in seconds. */
    readonly retryAfterS: number | null = null,
  ) {
    super(message);
  }
}

/** An upstream call in flight: its response, and a way to stop it (which also ends its body). */
export interface UpstreamCall {
  status: number;
  /** The response's `content-type`, lower-cased ('' when absent). */
  contentType: string;
  /** The response body as it arrives. */
  body: AsyncIterable<Buffer>;
  firstByteAt: Date;
  abort(reason: StopReason): void;
  /** Why it was stopped, if it was. */
  readonly stoppedBy: StopReason | null;
}

/** Why an upstream call was stopped: upstream too slow, the call's deadline, the client gone. */
export type StopReason = 'timeout' | 'deadline' | 'aborted';

// Keep-alive connections to each provider, reused across calls.
const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 1024, scheduling: 'lifo' });
const httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 1024, scheduling: 'lifo' });

/**
 * POSTs JSON to a provider over a keep-alive connection. `headersTimeoutMs` bounds the wait
 * for response headers; after that the caller bounds the body (a deadline for a JSON answer,
 * an idle gap for a stream) and may `abort` at any time; the client's signal (client gone,
 * shutdown) aborts too. Non-2xx answers are an UpstreamError carrying upstream's message.
 */
export async function postUpstream(params: {
  provider: ProviderConfig;
  path: string;
  body: unknown;
  signal: AbortSignal;
  headersTimeoutMs: number;
  /** The call's deadline (epoch ms): waiting for upstream stops there too, as `deadline`. */
  deadlineAt: number;
}): Promise<UpstreamCall> {
  const { provider } = params;
  const url = new URL(`${provider.baseUrl.replace(/\/+$/, '')}${params.path}`);
  const payload = JSON.stringify(params.body);
  const secure = url.protocol === 'https:';
  let stoppedBy: StopReason | null = null;
  let response: IncomingMessage | null = null;

  const req = (secure ? httpsRequest : httpRequest)(url, {
    method: 'POST',
    agent: secure ? httpsAgent : httpAgent,
    headers: {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(payload),
      accept: 'application/json, text/event-stream',
      ...(provider.apiKey ? { authorization: `Bearer ${provider.apiKey}` } : {}),
    },
  });
  const abort = (reason: StopReason) => {
    stoppedBy ??= reason;
    req.destroy(new Error(reason));
    response?.destroy(new Error(reason));
  };
  const onClientAbort = () => abort('aborted');
  params.signal.addEventListener('abort', onClientAbort, { once: true });
  const headersTimer = boundedWait(params.headersTimeoutMs, params.deadlineAt, abort);

  try {
    response = await new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
      if (params.signal.aborted) abort('aborted');
      req.end(payload);
    });
  } catch (error) {
    params.signal.removeEventListener('abort', onClientAbort);
    if (stoppedBy === 'deadline')
      throw new UpstreamError('deadline', 'the call reached its time limit');
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
  response.once('close', () => params.signal.removeEventListener('abort', onClientAbort));
  const status = response.statusCode ?? 0;
  if (status < 200 || status >= 300) {
    // An error body is read under the same bound as the headers: one that stalls must not
    // hold the call (and its hold) open.
    const errorBodyTimer = boundedWait(params.headersTimeoutMs, params.deadlineAt, abort);
    const text = await readText(response)
      .catch(() => '')
      .finally(() => clearTimeout(errorBodyTimer));
    let message = text.slice(0, 300);
    let param: string | null = null;
    try {
      const parsed = JSON.parse(text) as { error?: { message?: unknown; param?: unknown } };
      if (typeof parsed.error?.message === 'string') message = parsed.error.message.slice(0, 300);
      if (typeof parsed.error?.param === 'string') param = parsed.error.param.slice(0, 200);
    } catch {
      // not JSON: keep the start of the text
    }
    throw new UpstreamError(
      'status',
      `${provider.name} answered ${status}${message ? `: ${message}` : ''}`,
      status,
      param,
      retryAfterSeconds(response.headers['retry-after']),
    );
  }
  const body = response;
  return {
    status,
    contentType: (response.headers['content-type'] ?? '').toLowerCase(),
    body,
    firstByteAt,
    abort,
    get stoppedBy() {
      return stoppedBy;
    },
  };
}

/**
 * A wait for upstream of at most `timeoutMs`, and not past the call's deadline: stops the
 * call as `timeout` or `deadline`, whichever comes first.
 */
export function boundedWait(
  timeoutMs: number,
  deadlineAt: number,
  stop: (reason: StopReason) => void,
): NodeJS.Timeout {
  const toDeadline = Math.max(0, deadlineAt - Date.now());
  return toDeadline < timeoutMs
    ? setTimeout(() => stop('deadline'), toDeadline)
    : setTimeout(() => stop('timeout'), timeoutMs);
}

/** Longest wait passed on from upstream's `retry-after`: a day (beyond that it is a mistake). */
const RETRY_AFTER_MAX_S = 86_400;

/**
 * A `retry-after` header (delay-seconds or an HTTP-date, RFC 9110 §10.2.3) as whole seconds
 * from now, at most a day; null when absent or unreadable.
 */
export function retryAfterSeconds(
  header: string | undefined,
  now: number = Date.now(),
): number | null {
  const value = header?.trim();
  if (!value) return null;
  if (/^\d+$/.test(value)) return Math.min(Number(value), RETRY_AFTER_MAX_S);
  // An HTTP-date starts with the day's name (all three of RFC 9110's formats do).
  const at = /^[A-Za-z]{3}/.test(value) ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(at)) return null;
  return Math.min(Math.max(0, Math.ceil((at - now) / 1000)), RETRY_AFTER_MAX_S);
}

/** The whole body as UTF-8 text. */
export async function readText(body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Upstream usage numbers, read exactly. A count is a non-negative integer: a JSON number
 * JavaScript holds exactly (at most 2^53 - 1), or a string of at most 18 digits (what the
 * usage row's bigint columns hold). An absent count (or null) is 0: an embedding has no
 * completion tokens. Any other count (a fraction, a negative, a number already rounded by
 * JSON.parse, text) makes the whole usage unreadable: null, so the call is charged on an
 * estimate marked as such, never on a count silently read as 0.
 *
 * Providers do not all count alike, so the usage is read as a whole and the charge is never
 * lower than what any of its counts says was used:
 * - Output outside `completion_tokens`. OpenAI counts reasoning tokens inside
 *   `completion_tokens`; xAI reports them beside it (`completion_tokens_details.reasoning_tokens`
 *   not in `completion_tokens`, but in `total_tokens`), and Gemini's thinking tokens can be in
 *   `total_tokens` only. Tokens that `total_tokens` has beyond prompt + completion, or
 *   reasoning tokens beyond `completion_tokens`, were generated outside `completion_tokens`:
 *   they are added to the completion tokens as reasoning tokens (billed at the reasoning price).
 * - Cache writes: `prompt_tokens_details.cache_write_tokens` (OpenRouter, OpenAI) or
 *   `cache_creation_input_tokens` (Anthropic's name, passed on by routers), the larger when
 *   both are there. They are part of `prompt_tokens`; a prompt smaller than its cache reads
 *   and writes together is raised to their sum.
 * - Cache reads: `prompt_tokens_details.cached_tokens` (OpenAI), or, when that is absent,
 *   `prompt_cache_hit_tokens` (DeepSeek's name, beside `prompt_cache_miss_tokens`; the two
 *   add up to `prompt_tokens`). A prompt smaller than DeepSeek's hits and misses together is
 *   raised to their sum, so cached tokens are never more than the prompt's.
 */
export function readUsage(usage: unknown): TokenUsage | null {
  if (typeof usage !== 'object' || usage === null) return null;
  const u = usage as Record<string, unknown>;
  const details = (key: string) =>
    typeof u[key] === 'object' && u[key] !== null ? (u[key] as Record<string, unknown>) : {};
  const promptDetails = details('prompt_tokens_details');
  const counts = [
    u['prompt_tokens'],
    // DeepSeek reports its cache reads beside the prompt count, under its own name.
    promptDetails['cached_tokens'] ?? u['prompt_cache_hit_tokens'],
    u['prompt_cache_hit_tokens'],
    u['prompt_cache_miss_tokens'],
    promptDetails['cache_write_tokens'],
    promptDetails['cache_creation_input_tokens'],
    u['cache_creation_input_tokens'],
    u['completion_tokens'],
    details('completion_tokens_details')['reasoning_tokens'],
    u['total_tokens'],
  ].map(readCount);
  if (counts.some((count) => count === null)) return null;
  const [
    prompt,
    cached,
    cacheHit,
    cacheMiss,
    cacheWrite,
    cacheCreation,
    cacheCreationTop,
    completion,
    reasoning,
    total,
  ] = counts as bigint[];
  const cacheWriteTokens = maxOf(cacheWrite!, maxOf(cacheCreation!, cacheCreationTop!));
  const promptTokens = maxOf(maxOf(prompt!, cached! + cacheWriteTokens), cacheHit! + cacheMiss!);
  // Generated beyond `completion_tokens`: by the total, or by a reasoning count above it.
  const outside = maxOf(
    total! > promptTokens + completion! ? total! - promptTokens - completion! : 0n,
    reasoning! > completion! ? reasoning! : 0n,
  );
  // Reasoning tokens not explained by those outside are inside `completion_tokens` (OpenAI).
  const inside = reasoning! > outside ? reasoning! - outside : 0n;
  return {
    promptTokens,
    cachedTokens: cached!,
    cacheWriteTokens,
    completionTokens: completion! + outside,
    reasoningTokens: outside + minOf(inside, completion!),
  };
}

function readCount(value: unknown): bigint | null {
  if (value === undefined || value === null) return 0n;
  if (typeof value === 'number')
    return Number.isSafeInteger(value) && value >= 0 ? BigInt(value) : null;
  if (typeof value === 'string' && /^\d{1,18}$/.test(value)) return BigInt(value);
  return null;
}

/**
 * The usage of a stream that reported it more than once, as one usage object for `readUsage`:
 * each count (details included) the largest any report gave. Providers repeat it in two ways:
 * cumulative on every chunk (each report at least the one before: the largest is the last),
 * or split (the prompt's counts early, e.g. from Anthropic's `message_start`, the completion's
 * in the last chunk, its `prompt_tokens` 0 or absent). A count a report leaves out (or null)
 * never lowers or clears one reported before, and a group of counts (`*_details`) is merged,
 * never replaced by what is not one. Pass only usage `readUsage` reads (the others are
 * ignored, as before); `seen` is the merge so far (null at first), never changed.
 */
export function maxUsage(
  seen: Record<string, unknown> | null,
  usage: Record<string, unknown>,
): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...seen };
  for (const [key, value] of Object.entries(usage)) {
    const before = merged[key];
    if (value === undefined || value === null) continue;
    if (isRecord(before) && isRecord(value)) merged[key] = maxUsage(before, value);
    else if (before === undefined || before === null) merged[key] = value;
    else if (isRecord(before)) continue;
    else {
      const [was, now] = [readCount(before), readCount(value)];
      merged[key] = was !== null && now !== null && was > now ? before : value;
    }
  }
  return merged;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
