/**
 * A deterministic, OpenAI-compatible model provider for tests, the demo and the gateway
 * benchmark. Plain `node:http`; nothing is logged and nothing waits unless asked to.
 *
 * Routes (under `url`, which ends in /v1):
 *   POST /v1/chat/completions  chat.completion, or SSE chat.completion.chunk with `stream: true`
 *   POST /v1/embeddings        list of embeddings; `encoding_format` 'float' or 'base64'
 *   GET  /v1/models            list of MODEL_IDS;  GET /v1/models/{id}  one of them
 *   anything else              404; a body that is not JSON: 400; over 4 MiB: 413
 * With `apiKey` set, every route needs `Authorization: Bearer <apiKey>` (else 401). Errors
 * are OpenAI's shape: {"error":{"message","type","code","param"}}.
 *
 * Prompt tokens (countPromptTokens):
 *   ceil(UTF-8 bytes of the text of all messages / 4) + 3 × number of messages,
 *   where a message's text is its string content or the concatenated `text` of its parts.
 * Embedding tokens (countEmbeddingTokens): Σ ceil(UTF-8 bytes of each input / 4).
 * Completion: N visible tokens = [[tokens]] ?? 16, capped by max_completion_tokens ??
 *   max_tokens; content is completionText(N) = "tok0 tok1 … tok{N-1} " (each word plus one
 *   space; streamed as one delta "tokK " per token); finish_reason 'length' when the cap cut
 *   N, else 'stop'. completion_tokens = N + reasoning tokens; total_tokens = prompt_tokens +
 *   every generated token (reported apart or hidden ones included).
 *
 * Like OpenAI, reasoning models (o1, o3-mini, o4-mini, gpt-5…) answer 400
 * `unsupported_parameter` (param `max_tokens`) to a request with `max_tokens`; so do their
 * routed names (`openai/o3-mini`: the last path segment counts).
 *
 * Directives, read from the text of the LAST user message (for embeddings: from all string
 * inputs), override setDefault()'s behaviour field by field. Unknown or out-of-range ones
 * are answered with 400, so a typo fails the test instead of being ignored.
 *   [[tokens=N]]        N visible completion tokens (0..100000; still capped by the limits)
 *   [[cached=N]]        prompt_tokens_details.cached_tokens = min(N, prompt_tokens)
 *   [[reasoning=N]]     completion_tokens_details.reasoning_tokens = N, added to completion_tokens
 *   [[reasoning-apart]] with [[reasoning=N]]: N is NOT added to completion_tokens, only to
 *                       total_tokens (xAI reports reasoning beside completion_tokens)
 *   [[hidden-reasoning=N]] N more generated tokens in total_tokens only, in no other count
 *                       (thinking tokens as Gemini's OpenAI-compatible endpoint may report them)
 *   [[cache-hit=N]]     cache reads in DeepSeek's shape: prompt_cache_hit_tokens =
 *                       min(N, prompt_tokens), prompt_cache_miss_tokens = the rest, and no
 *                       prompt_tokens_details (so [[cached]] and [[cache-write]] go unsent)
 *   [[cache-write=N]]   prompt_tokens_details.cache_write_tokens = min(N, prompt_tokens), part
 *                       of prompt_tokens (OpenRouter's and OpenAI's field)
 *   [[cache-creation=N]] cache_creation_input_tokens = min(N, prompt_tokens) at the top of
 *                       usage, part of prompt_tokens (Anthropic's name, as routers pass it on)
 *   [[prompt-tokens=N]] prompt_tokens = N instead of the formula
 *   [[accepted=N]]      with a `prediction` (Predicted Outputs, its text's tokens counted as a
 *                       prompt's): N of them are accepted (at most the visible tokens), the
 *                       rest rejected; completion_tokens_details says both, and the rejected
 *                       ones are added to completion_tokens (OpenAI bills them as output)
 *   [[fail=S]]          status S (400..599) with an OpenAI error body; streaming too (no SSE)
 *   [[stall]]           accept and never send even a status line, until the client leaves
 *   [[stall-after=K]]   stream K SSE events (the role chunk is the first), then go silent;
 *                       without `stream`, send 200 headers and no body, then go silent;
 *                       with [[fail=S]], send status S and headers, no body, then go silent
 *   [[malformed]]       200 application/json whose body is cut-off JSON; streaming: the role
 *                       chunk, then a `data:` line of cut-off JSON, then the end
 *   [[no-usage]]        no `usage`, even with stream_options.include_usage
 *   [[null-event]]      streaming: the role chunk and the visible tokens, then `data: null`
 *                       (JSON, but no chunk), then the end; no [DONE]
 *   [[usage-strings]]   (not streaming) the counts in `usage` as strings of digits: "12"
 *   [[tool-call]]       the answer is one tool call (function `f`, id `call_stub`) whose
 *                       arguments are the completion text (streamed: a piece per token);
 *                       content null, finish_reason 'tool_calls' (or 'length')
 *   [[retry-after=S]]   with [[fail=S]]: the error carries `retry-after: S` (0..86400)
 *   [[json-stream]]     with `stream: true`, answer as without it: one application/json
 *                       chat.completion (usage included unless [[no-usage]]), no SSE
 *   [[delay=MS]]        wait MS (0..60000) before answering (failures included); streaming:
 *                       headers at once, then MS before every SSE event
 *   [[project-priority]] the project's default tier is Priority: a request without
 *                       `service_tier` (or with "auto") is served, and reported, at "priority";
 *                       an embeddings answer then reports its `service_tier` too (no other
 *                       embeddings answer has the field: OpenAI's have none)
 *   [[sse=SHAPE]]       streaming: the events reshaped (CRLF, multi-line data, comments,
 *                       split UTF-8, usage twice or early, no [DONE], an error event...): the
 *                       shapes are listed in upstream-stub/sse-shapes.ts; each of its writes
 *                       is one socket write (and one of `chunksSent`)
 *   [[content-type=T]]  chat: every answer (stream, JSON, error) sent with content-type T:
 *                       text/plain, application/octet-stream, or none (no such header)
 *   [[event-chars=N]]   streaming: the first token's event padded with `x` after "tok0 " so
 *                       that its line (`data: ` included, line breaks not) is N characters
 *                       (ASCII); 400 when N is below its own size, or with [[sse]]/[[malformed]]
 *   [[event-split=K]]   with [[event-chars]]: that event (its "\n\n" included) written in two
 *                       writes cut after its K-th byte, 2 ms apart (two reads at the other
 *                       end); 0, or K at least its length: one write
 * Every answer and chunk reports `service_tier`: the request's "default", "flex", "priority"
 * or "scale" as asked; otherwise (none, "auto", anything else) the project's default tier,
 * "default" unless [[project-priority]].
 * Precedence: fail, then stall, then malformed, then the normal answer. stall-after and
 * delay combine with the normal (and the malformed) answer.
 *
 * The request log (`requests`) records each request once its body is in, and then its
 * fate: the status sent, SSE events sent, and whether the client left before the end
 * (`clientDisconnected`), which is how tests see that an abort reached the upstream.
 */
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  EMBEDDING_DIRECTIVES,
  lastUserText,
  parseDirectives,
  type StubBehaviour,
} from './upstream-stub/directives.js';
import {
  chatCompletionBody,
  chatCompletionEvents,
  embeddingsBody,
  errorBody,
  malformedBody,
  malformedChatEvents,
  MODEL_IDS,
  modelBody,
  modelsBody,
  type ChatIdentity,
} from './upstream-stub/responses.js';
import { PAUSE, shapeEvents, sizedEvent, type StubWrite } from './upstream-stub/sse-shapes.js';
import {
  countEmbeddingTokens,
  DEFAULT_EMBEDDING_DIMENSIONS,
  embedText,
  encodeEmbeddingBase64,
  MAX_EMBEDDING_DIMENSIONS,
  planCompletion,
} from './upstream-stub/usage.js';

export type { StubBehaviour } from './upstream-stub/directives.js';
export { parseDirectives } from './upstream-stub/directives.js';
export {
  completionText,
  countEmbeddingTokens,
  countPromptTokens,
  embedText,
  planCompletion,
  type CompletionPlan,
} from './upstream-stub/usage.js';
export { MODEL_IDS } from './upstream-stub/responses.js';

export interface StartUpstreamStubOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** When set, requests need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Oldest entries are dropped beyond this many (default 10 000), so a benchmark stays flat. */
  requestLogLimit?: number;
  /** Larger request bodies get 413 (default 4 MiB). */
  maxBodyBytes?: number;
}

export interface UpstreamRequest {
  method: string;
  /** Path without the query string, e.g. /v1/chat/completions. */
  path: string;
  /** As Node gives them: names in lower case. */
  headers: IncomingHttpHeaders;
  /** The parsed JSON body; the raw text when it was not JSON; undefined when empty. */
  body: unknown;
  time: Date;
  /** The status sent; null while none has been (a stall, or still waiting). */
  status: number | null;
  /** SSE `data:` events written, the role chunk and [DONE] included. */
  chunksSent: number;
  /** The client closed the connection before the response was complete. */
  clientDisconnected: boolean;
  /** The response is over: completed or abandoned by the client. */
  settled: boolean;
}

export interface UpstreamStub {
  /** Base URL ending in /v1, ready for `new OpenAI({ baseURL })`. */
  url: string;
  port: number;
  /** Received requests, oldest first; the same array for the stub's life. */
  requests: readonly UpstreamRequest[];
  /** Resolves when no request is in flight; rejects after `timeoutMs` (default 5000). */
  waitForIdle(timeoutMs?: number): Promise<void>;
  /** Behaviour for requests whose directives do not say otherwise; a string is parsed as directives. */
  setDefault(behaviour: StubBehaviour | string): void;
  /** Clears the request log, the default behaviour and the id counter. */
  reset(): void;
  /** Stops listening and cuts open connections, stalled ones included. */
  close(): Promise<void>;
}

const DEFAULT_REQUEST_LOG_LIMIT = 10_000;
const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
const DEFAULT_WAIT_FOR_IDLE_MS = 5_000;

/** One request in flight: what the handlers need to write, wait and notice a departure. */
interface Exchange {
  res: ServerResponse;
  entry: UpstreamRequest;
  requestId: string;
  /** Set when the connection closes; cancels a pending delay. */
  closed: AbortController;
  /** `[[content-type]]`: the content type of every answer instead of its own (null: none). */
  contentType?: string | null;
}

/**
 * Starts the stub and resolves once it listens.
 *
 * @example
 * const stub = await startUpstreamStub({ apiKey: 'sk-test' });
 * const client = new OpenAI({ baseURL: stub.url, apiKey: 'sk-test', maxRetries: 0 });
 * await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi [[tokens=3]]' }] });
 * await stub.close();
 */
export async function startUpstreamStub(
  options: StartUpstreamStubOptions = {},
): Promise<UpstreamStub> {
  const host = options.host ?? '127.0.0.1';
  const requestLogLimit = options.requestLogLimit ?? DEFAULT_REQUEST_LOG_LIMIT;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const expectedAuthorization =
    options.apiKey === undefined ? undefined : `Bearer ${options.apiKey}`;
  const requests: UpstreamRequest[] = [];
  let defaults: StubBehaviour = {};
  let sequence = 0;
  let inFlight = 0;
  let idleWaiters: (() => void)[] = [];

  const settle = (exchange: Exchange): void => {
    if (exchange.entry.settled) return;
    exchange.entry.settled = true;
    exchange.closed.abort();
    inFlight--;
    if (inFlight === 0 && idleWaiters.length > 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const wake of waiters) wake();
    }
  };

  const handle = (req: IncomingMessage, res: ServerResponse, rawBody: Buffer | null): void => {
    const url = req.url ?? '/';
    const queryAt = url.indexOf('?');
    const entry: UpstreamRequest = {
      method: req.method ?? 'GET',
      path: queryAt === -1 ? url : url.slice(0, queryAt),
      headers: req.headers,
      body: undefined,
      time: new Date(),
      status: null,
      chunksSent: 0,
      clientDisconnected: false,
      settled: false,
    };
    requests.push(entry);
    if (requests.length > requestLogLimit) requests.shift();
    sequence++;
    const exchange: Exchange = {
      res,
      entry,
      requestId: `req_stub${sequence}`,
      closed: new AbortController(),
    };
    inFlight++;
    res.on('close', () => {
      if (!res.writableFinished) entry.clientDisconnected = true;
      settle(exchange);
    });

    if (rawBody === null) {
      sendError(exchange, 413, `Request body is larger than ${maxBodyBytes} bytes.`);
      return;
    }
    let body: unknown;
    if (rawBody.length > 0) {
      const text = rawBody.toString('utf8');
      try {
        body = JSON.parse(text);
      } catch {
        entry.body = text;
        sendError(exchange, 400, 'We could not parse the JSON body of your request.');
        return;
      }
      entry.body = body;
    }

    if (
      expectedAuthorization !== undefined &&
      req.headers.authorization !== expectedAuthorization
    ) {
      const message =
        req.headers.authorization === undefined
          ? "You didn't provide an API key. Provide it in an Authorization header (Bearer auth)."
          : 'Incorrect API key provided.';
      sendError(exchange, 401, message, { code: 'invalid_api_key' });
      return;
    }

    const route = `${entry.method} ${entry.path}`;
    if (route === 'POST /v1/chat/completions') {
      handleChat(exchange, body, sequence, defaults).catch(crash(exchange));
    } else if (route === 'POST /v1/embeddings') {
      handleEmbeddings(exchange, body, defaults).catch(crash(exchange));
    } else if (route === 'GET /v1/models') {
      sendJson(exchange, 200, modelsBody());
    } else if (entry.method === 'GET' && entry.path.startsWith('/v1/models/')) {
      const id = safeDecode(entry.path.slice('/v1/models/'.length));
      if (MODEL_IDS.includes(id)) {
        sendJson(exchange, 200, modelBody(id));
      } else {
        sendError(exchange, 404, `The model '${id}' does not exist`, {
          code: 'model_not_found',
          param: 'model',
        });
      }
    } else {
      sendError(exchange, 404, `Invalid URL (${route})`);
    }
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBodyBytes) tooLarge = true;
      else chunks.push(chunk);
    });
    req.on('end', () => {
      handle(req, res, tooLarge ? null : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${port}/v1`,
    port,
    requests,
    waitForIdle(timeoutMs = DEFAULT_WAIT_FOR_IDLE_MS) {
      if (inFlight === 0) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          idleWaiters = idleWaiters.filter((wake) => wake !== done);
          reject(
            new Error(
              `upstream stub: ${inFlight} request(s) still in flight after ${timeoutMs} ms`,
            ),
          );
        }, timeoutMs);
        const done = (): void => {
          clearTimeout(timer);
          resolve();
        };
        idleWaiters.push(done);
      });
    },
    setDefault(behaviour) {
      if (typeof behaviour !== 'string') {
        defaults = { ...behaviour };
        return;
      }
      const parsed = parseDirectives(behaviour);
      if (!parsed.ok) throw new Error(`upstream stub: ${parsed.message}`);
      defaults = parsed.behaviour;
    },
    reset() {
      requests.length = 0;
      defaults = {};
      sequence = 0;
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}

/** A bug in the stub: cut the connection and let the test runner report the rejection. */
function crash(exchange: Exchange): (error: unknown) => never {
  return (error) => {
    exchange.res.destroy();
    throw error;
  };
}

/** A path segment decoded, or as sent when its escapes are broken (it then matches nothing). */
function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** Models that, at OpenAI, take `max_completion_tokens` and refuse `max_tokens`. */
const REASONING_MODEL = /^(o\d|gpt-5)/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function handleChat(
  exchange: Exchange,
  body: unknown,
  sequence: number,
  defaults: StubBehaviour,
): Promise<void> {
  if (!isRecord(body) || !Array.isArray(body['messages'])) {
    sendError(exchange, 400, "Missing required parameter: 'messages'.", { param: 'messages' });
    return;
  }
  const model = body['model'];
  if (typeof model !== 'string') {
    sendError(exchange, 400, "Missing required parameter: 'model'.", { param: 'model' });
    return;
  }
  // As OpenAI does: its reasoning models (o1, o3, o4-mini, gpt-5) refuse the older cap; so
  // does a router for them by their routed name (OpenRouter style: `openai/o3-mini`).
  if (REASONING_MODEL.test(model.slice(model.lastIndexOf('/') + 1)) && body['max_tokens'] != null) {
    sendError(
      exchange,
      400,
      "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
      { code: 'unsupported_parameter', param: 'max_tokens' },
    );
    return;
  }
  const messages = body['messages'] as unknown[];
  const directives = parseDirectives(lastUserText(messages));
  if (!directives.ok) {
    sendError(exchange, 400, directives.message, { param: 'messages' });
    return;
  }
  const behaviour: StubBehaviour = { ...defaults, ...directives.behaviour };
  if (behaviour.contentType !== undefined)
    exchange.contentType = behaviour.contentType === 'none' ? null : behaviour.contentType;
  const plan = planCompletion(
    {
      messages: messages.map((message) => (isRecord(message) ? message : {})),
      max_tokens: body['max_tokens'],
      max_completion_tokens: body['max_completion_tokens'],
      prediction: body['prediction'],
    },
    behaviour,
  );
  const identity: ChatIdentity = {
    id: `chatcmpl-stub${sequence}`,
    created: Math.floor(Date.now() / 1000),
    model,
    serviceTier: servedTier(body['service_tier'], behaviour),
  };
  // [[json-stream]]: a provider that ignores `stream` and answers one JSON completion.
  const streaming = body['stream'] === true && !behaviour.jsonStream;
  const delayMs = behaviour.delayMs ?? 0;

  // A stream answers its headers at once and paces its events; anything else waits first.
  if (!streaming || behaviour.failStatus !== undefined || behaviour.stall) {
    if (delayMs > 0 && !(await sleep(delayMs, exchange))) return;
  }
  if (behaviour.failStatus !== undefined && behaviour.stallAfterChunks !== undefined) {
    writeHead(exchange, behaviour.failStatus, 'application/json');
    exchange.res.flushHeaders();
    return;
  }
  if (behaviour.failStatus !== undefined) {
    if (behaviour.retryAfterS !== undefined)
      exchange.res.setHeader('retry-after', String(behaviour.retryAfterS));
    sendError(
      exchange,
      behaviour.failStatus,
      `Stub failure requested: [[fail=${behaviour.failStatus}]].`,
    );
    return;
  }
  if (behaviour.stall) return;

  if (!streaming) {
    if (behaviour.stallAfterChunks !== undefined) {
      writeHead(exchange, 200, 'application/json');
      exchange.res.flushHeaders();
      return;
    }
    if (behaviour.malformed) {
      sendText(exchange, 200, 'application/json', malformedBody(identity));
      return;
    }
    const answer = chatCompletionBody(identity, plan, !behaviour.noUsage, behaviour.toolCall);
    sendJson(exchange, 200, behaviour.usageStrings ? countsAsStrings(answer) : answer);
    return;
  }

  const streamOptions = body['stream_options'];
  const usageRequested = isRecord(streamOptions) && streamOptions['include_usage'] === true;
  const events = behaviour.malformed
    ? malformedChatEvents(identity, usageRequested)
    : behaviour.nullEvent
      ? [...chatCompletionEvents(identity, plan, usageRequested, false, behaviour.toolCall)]
          .slice(0, 1 + plan.contentTokens)
          .concat('data: null\n\n')
      : chatCompletionEvents(
          identity,
          plan,
          usageRequested,
          !behaviour.noUsage,
          behaviour.toolCall,
        );
  let writes: Iterable<StubWrite> =
    behaviour.sseShape && !behaviour.malformed && !behaviour.nullEvent
      ? shapeEvents(behaviour.sseShape, [...events])
      : events;
  if (behaviour.eventChars !== undefined) {
    const sized = sizedEvent([...events], behaviour.eventChars, behaviour.eventSplit ?? 0);
    if (sized === null || plan.contentTokens === 0 || behaviour.sseShape || behaviour.malformed) {
      sendError(
        exchange,
        400,
        `Stub directive [[event-chars=${behaviour.eventChars}]] needs a token to pad, no other shape, and at least the event's own size.`,
        { param: 'messages' },
      );
      return;
    }
    writes = sized;
  }
  await stream(exchange, writes, behaviour.stallAfterChunks, delayMs);
}

/** The tier OpenAI reports serving a request at: the one it asked for, else the project's default. */
function servedTier(requested: unknown, behaviour: StubBehaviour): string {
  if (typeof requested === 'string' && ['default', 'flex', 'priority', 'scale'].includes(requested))
    return requested;
  return behaviour.projectPriority ? 'priority' : 'default';
}

/** The answer with every number in its `usage` (details included) written as a string. */
function countsAsStrings(answer: Record<string, unknown>): Record<string, unknown> {
  const strings = (value: unknown): unknown =>
    typeof value === 'number'
      ? String(value)
      : isRecord(value)
        ? Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, strings(inner)]))
        : value;
  return { ...answer, usage: strings(answer['usage']) };
}

async function handleEmbeddings(
  exchange: Exchange,
  body: unknown,
  defaults: StubBehaviour,
): Promise<void> {
  if (!isRecord(body) || typeof body['model'] !== 'string') {
    sendError(exchange, 400, "Missing required parameter: 'model'.", { param: 'model' });
    return;
  }
  const model = body['model'];
  const input = body['input'];
  const inputs: readonly unknown[] | undefined =
    typeof input === 'string' ? [input] : Array.isArray(input) ? input : undefined;
  if (inputs === undefined || inputs.length === 0) {
    sendError(exchange, 400, "'input' must be a non-empty string or array.", { param: 'input' });
    return;
  }
  const texts: string[] = [];
  if (typeof inputs[0] === 'number') {
    texts.push(inputs.join(','));
  } else {
    for (const item of inputs) {
      if (typeof item === 'string') texts.push(item);
      else if (Array.isArray(item)) texts.push(item.join(','));
      else {
        sendError(exchange, 400, "'input' must be strings or arrays of token ids.", {
          param: 'input',
        });
        return;
      }
    }
  }
  const dimensions = body['dimensions'] ?? DEFAULT_EMBEDDING_DIMENSIONS;
  if (
    !Number.isSafeInteger(dimensions) ||
    (dimensions as number) < 1 ||
    (dimensions as number) > MAX_EMBEDDING_DIMENSIONS
  ) {
    sendError(
      exchange,
      400,
      `'dimensions' must be an integer from 1 to ${MAX_EMBEDDING_DIMENSIONS}.`,
      {
        param: 'dimensions',
      },
    );
    return;
  }
  const encoding = body['encoding_format'] ?? 'float';
  if (encoding !== 'float' && encoding !== 'base64') {
    sendError(exchange, 400, "'encoding_format' must be 'float' or 'base64'.", {
      param: 'encoding_format',
    });
    return;
  }

  const directives = parseDirectives(
    texts.filter((_, index) => typeof inputs[index] === 'string').join('\n'),
  );
  if (!directives.ok) {
    sendError(exchange, 400, directives.message, { param: 'input' });
    return;
  }
  const unsupported = directives.names.find((name) => !EMBEDDING_DIRECTIVES.has(name));
  if (unsupported !== undefined) {
    sendError(exchange, 400, `Stub directive [[${unsupported}]] does not apply to embeddings.`, {
      param: 'input',
    });
    return;
  }
  const behaviour: StubBehaviour = { ...defaults, ...directives.behaviour };
  if (
    behaviour.delayMs !== undefined &&
    behaviour.delayMs > 0 &&
    !(await sleep(behaviour.delayMs, exchange))
  ) {
    return;
  }
  if (behaviour.failStatus !== undefined) {
    if (behaviour.retryAfterS !== undefined)
      exchange.res.setHeader('retry-after', String(behaviour.retryAfterS));
    sendError(
      exchange,
      behaviour.failStatus,
      `Stub failure requested: [[fail=${behaviour.failStatus}]].`,
    );
    return;
  }
  if (behaviour.stall) return;
  if (behaviour.malformed) {
    sendText(exchange, 200, 'application/json', '{"object":"list","data":[{"object":"embedding"');
    return;
  }
  const embeddings = texts.map((text) => {
    const vector = embedText(text, dimensions as number);
    return encoding === 'base64' ? encodeEmbeddingBase64(vector) : vector;
  });
  const promptTokens =
    behaviour.promptTokens ??
    countEmbeddingTokens({ input: inputs as readonly string[] | readonly number[] });
  sendJson(
    exchange,
    200,
    embeddingsBody(
      model,
      embeddings,
      promptTokens,
      !behaviour.noUsage,
      behaviour.projectPriority ? servedTier(body['service_tier'], behaviour) : null,
    ),
  );
}

/**
 * Writes SSE events one by one, each flushed as it is written (Node's `res.write` on a
 * keep-alive socket with Nagle off). Stops at the first sign the client left.
 */
async function stream(
  exchange: Exchange,
  events: Iterable<StubWrite>,
  stallAfterChunks: number | undefined,
  delayMs: number,
): Promise<void> {
  const { res, entry } = exchange;
  writeHead(exchange, 200, 'text/event-stream; charset=utf-8', { 'cache-control': 'no-cache' });
  res.flushHeaders();
  for (const event of events) {
    if (event === PAUSE) {
      if (!(await sleep(2, exchange))) return;
      continue;
    }
    if (stallAfterChunks !== undefined && entry.chunksSent >= stallAfterChunks) return;
    if (delayMs > 0 && !(await sleep(delayMs, exchange))) return;
    if (exchange.closed.signal.aborted || res.destroyed) return;
    const flushed = res.write(event);
    entry.chunksSent++;
    if (!flushed && !(await drained(exchange))) return;
  }
  res.end();
}

/** Resolves true after `ms`, or false as soon as the client leaves. */
function sleep(ms: number, exchange: Exchange): Promise<boolean> {
  const signal = exchange.closed.signal;
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Resolves true once the socket drains, or false if the client leaves first. */
function drained(exchange: Exchange): Promise<boolean> {
  const signal = exchange.closed.signal;
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = (): void => resolve(false);
    exchange.res.once('drain', () => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    });
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function writeHead(
  exchange: Exchange,
  status: number,
  contentType: string,
  extra: Record<string, string | number> = {},
): void {
  exchange.entry.status = status;
  const type = exchange.contentType === undefined ? contentType : exchange.contentType;
  exchange.res.writeHead(status, {
    ...(type === null ? {} : { 'content-type': type }),
    'x-request-id': exchange.requestId,
    ...extra,
  });
}

function sendText(exchange: Exchange, status: number, contentType: string, text: string): void {
  if (exchange.res.destroyed) return;
  writeHead(exchange, status, contentType, { 'content-length': Buffer.byteLength(text) });
  exchange.res.end(text);
}

function sendJson(exchange: Exchange, status: number, body: unknown): void {
  sendText(exchange, status, 'application/json', JSON.stringify(body));
}

function sendError(
  exchange: Exchange,
  status: number,
  message: string,
  options: { code?: string | null; param?: string | null } = {},
): void {
  sendJson(exchange, status, errorBody(status, message, options));
}
