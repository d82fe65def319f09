import type { Writable } from 'node:stream';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { Decimal } from '../../ledger/index.js';
import type { Config, ModelConfig, ProviderConfig } from '../config/schema.js';
import { AppError, notFound } from '../errors.js';
import type { ApiCaller } from '../keys/keyAuthenticator.js';
import type { WorkTracker } from '../lifecycle.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { CallOutcome, CallRecord, HeldCall, Meter } from './meter.js';
import { costOf, maxCostOf, priceJson, type PriceVersion, type TokenUsage } from './pricing.js';
import type { RateLimiter } from './rateLimiter.js';
import {
  chatRequestSchema,
  embeddingRequestSchema,
  parseRequest,
  unpricedFeature,
  unpricedRequestTier,
  unpricedServedTier,
  type ChatRequest,
} from './requests.js';
import {
  choicesText,
  embeddingTokensUpperBound,
  estimateEmbeddingTokens,
  estimateTokens,
  minOf,
  messagesText,
  predictionText,
  predictionTokensUpperBound,
  promptTokensUpperBound,
} from './tokens.js';
import { StreamEventBound } from './sseBound.js';
import {
  boundedWait,
  maxUsage,
  postUpstream,
  readText,
  readUsage,
  UpstreamError,
  type UpstreamCall,
} from './upstream.js';

/** One API call as the HTTP layer hands it over. */
export interface GatewayCall {
  requestId: string;
  caller: ApiCaller;
  body: unknown;
  clientIp: string | null;
  userAgent: string | null;
  startedAt: Date;
  /** Aborted when the client goes away. */
  clientSignal: AbortSignal;
}

export type GatewayResponse =
  | { kind: 'json'; status: number; headers: Record<string, string>; body: unknown }
  | {
      kind: 'stream';
      headers: Record<string, string>;
      /** Writes the SSE frames to `sink`, ends it, and settles the call; never throws. */
      pump(sink: Writable): Promise<void>;
    };

interface Model {
  config: ModelConfig;
  provider: ProviderConfig;
  price: PriceVersion;
}

/**
 * Upstream statuses that blame the request itself (a bad parameter, an unknown model or
 * route): the caller gets a 400. Others (401, 403, 429, 5xx) are our or upstream's problem: 502.
 */
const UPSTREAM_REJECTED_REQUEST = new Set([400, 404, 422]);

const ZERO_USAGE: TokenUsage = {
  promptTokens: 0n,
  cachedTokens: 0n,
  cacheWriteTokens: 0n,
  completionTokens: 0n,
  reasoningTokens: 0n,
};

/**
 * The metering gateway: for each call, price it, hold the most it can cost, forward it,
 * meter the real usage and settle the hold for exactly what it cost. Upstream failures
 * release the hold and answer in OpenAI's error shape; nothing is charged for them.
 */
export class Gateway {
  private readonly models = new Map<string, Model>();
  /** Calls waiting for upstream (its headers, or a JSON answer): `stopCalls` aborts them. */
  private readonly waiting = new Set<AbortController>();
  private stopped = false;

  constructor(
    private readonly deps: {
      config: Config;
      prices: Map<string, PriceVersion>;
      meter: Meter;
      rateLimiter: RateLimiter;
      metrics: Metrics;
      logger: Logger;
      work: WorkTracker;
    },
  ) {
    const providers = new Map(deps.config.providers.map((p) => [p.name, p]));
    for (const model of deps.config.models) {
      const provider = providers.get(model.provider)!;
      const price = deps.prices.get(model.id)!;
      this.models.set(model.id, { config: model, provider, price });
    }
  }

  /**
   * Stops the wait for upstream of every call in flight, and of any that comes after: a
   * shutdown whose grace is over. Each such call fails as its client having gone (499), and
   * its hold is released (nothing charged); its client, cut off, got no answer. Streams
   * under way are not stopped here: cutting their clients ends them, charged for what was
   * generated.
   */
  stopCalls(): void {
    this.stopped = true;
    for (const controller of this.waiting) controller.abort();
  }

  /** `signal`, also aborted by `stopCalls`; `disarm` once the call no longer waits for upstream. */
  private untilStopped(signal: AbortSignal): { signal: AbortSignal; disarm(): void } {
    const controller = new AbortController();
    const abort = () => controller.abort();
    if (signal.aborted || this.stopped) abort();
    signal.addEventListener('abort', abort, { once: true });
    this.waiting.add(controller);
    return {
      signal: controller.signal,
      disarm: () => {
        signal.removeEventListener('abort', abort);
        this.waiting.delete(controller);
      },
    };
  }

  /** GET /v1/models: the priced models the caller may call (its key's list), with their prices. */
  listModels(caller: ApiCaller) {
    const { allowedModels } = caller;
    return {
      object: 'list',
      data: [...this.models.values()]
        .filter((m) => !allowedModels || allowedModels.includes(m.config.id))
        .map((m) => ({
          id: m.config.id,
          object: 'model',
          created: Math.floor(new Date('2026-01-01T00:00:00Z').getTime() / 1000),
          owned_by: m.provider.name,
          type: m.config.kind,
          pricing: priceJson(m.price),
        })),
    };
  }

  async chatCompletion(call: GatewayCall): Promise<GatewayResponse> {
    const body = parseRequest(chatRequestSchema, call.body);
    const model = this.modelFor(body.model, call.caller, 'chat');
    refuseUnpriced(unpricedFeature(body), model);
    // Both caps go upstream, and a provider may honour either: hold for the larger.
    const caps = (['max_completion_tokens', 'max_tokens'] as const).filter(
      (param) => body[param] != null,
    );
    for (const param of caps) {
      if (body[param]! > model.config.maxOutputTokensLimit)
        throw new AppError(
          'invalid_request',
          `${param}: at most ${model.config.maxOutputTokensLimit} for ${model.config.id}`,
          { param },
        );
    }
    const requested = caps.length === 0 ? null : Math.max(...caps.map((param) => body[param]!));
    const { bytesPerTokenMin } = this.deps.config.gateway;
    // A Predicted Output's rejected tokens are billed as output on top of the answer's own.
    const outputTokensMax =
      (BigInt(requested ?? model.config.maxOutputTokensDefault) +
        predictionTokensUpperBound(body['prediction'], bytesPerTokenMin)) *
      BigInt(body.n ?? 1);
    const promptTokensMax = promptTokensUpperBound(
      body,
      bytesPerTokenMin,
      model.config.imageTokensMax,
    );
    const stream = body.stream === true;
    const record = this.newRecord(call, model, 'chat.completions', stream);
    const held = await this.admit(call, model, record, promptTokensMax, outputTokensMax);

    const upstreamBody: Record<string, unknown> = { ...body, model: model.price.upstreamModel };
    // A cap upstream must honour, so the call cannot cost more than was held.
    if (requested === null)
      upstreamBody[outputCapParam(model)] = model.config.maxOutputTokensDefault;
    if (stream)
      upstreamBody['stream_options'] = { ...(body.stream_options ?? {}), include_usage: true };

    // A stream too: whether upstream streams is known only from its answer's headers. But a
    // stream's provider sends those at once, so one whose client left waits for them only
    // `gateway.clientGoneGraceMs`, not until the provider timeout or the deadline.
    const untilHeaders = stream
      ? untilGraceAfterClientGone(call.clientSignal, this.deps.config.gateway.clientGoneGraceMs)
      : { signal: untilForwarded(call.clientSignal), disarm: () => {} };
    const untilStopped = this.untilStopped(untilHeaders.signal);
    const bounds = { promptTokensMax, outputTokensMax };
    let upstream: UpstreamCall;
    let json: Record<string, unknown>;
    let jsonForStream: boolean;
    // A stream request's answer that says it is neither an event stream nor JSON, and does not
    // start as an event stream: read as the JSON answer it must be, else it is malformed.
    let unlabelledNotStream = false;
    try {
      try {
        upstream = await postUpstream({
          provider: model.provider,
          path: '/chat/completions',
          body: upstreamBody,
          signal: untilStopped.signal,
          headersTimeoutMs: model.provider.timeoutMs,
          deadlineAt: this.deadlineAt(call),
        });
        if (
          stream &&
          !isJsonContentType(upstream.contentType) &&
          !isEventStreamContentType(upstream.contentType)
        )
          unlabelledNotStream = !(await startsAsEventStream(
            upstream,
            model.provider.timeoutMs,
            this.deadlineAt(call),
          ));
      } catch (error) {
        return await this.failed(error, held, record, call.clientSignal);
      } finally {
        untilHeaders.disarm();
      }
      record.firstByteAt = upstream.firstByteAt;
      this.deps.metrics.upstreamDuration.observe(
        { provider: model.provider.name },
        (upstream.firstByteAt.getTime() - call.startedAt.getTime()) / 1000,
      );
      // A provider may ignore `stream` and answer one JSON completion: it generated the answer,
      // so it is charged as one (read to the end even if the client has left, as a non-streamed
      // call is), and the client gets it as the stream it asked for. So is one that sends it
      // as `text/plain` (or with no content type); a body that is no JSON object either is a
      // malformed answer, as it would be without `stream`: 502, nothing charged.
      jsonForStream = stream && (isJsonContentType(upstream.contentType) || unlabelledNotStream);
      if (stream && !jsonForStream) {
        // A real stream stops when its client leaves: what it did not generate is not billed.
        if (call.clientSignal.aborted) {
          upstream.abort('aborted');
          return await this.failed(
            new UpstreamError('aborted', 'the client went away'),
            held,
            record,
            call.clientSignal,
          );
        }
        return this.streamed(body, model, held, record, upstream, this.deadlineAt(call), bounds, {
          clientSignal: call.clientSignal,
        });
      }
      try {
        json = await this.readJson(upstream, model.provider.timeoutMs, this.deadlineAt(call));
      } catch (error) {
        const notStream =
          jsonForStream && error instanceof UpstreamError && error.kind === 'malformed'
            ? new UpstreamError(
                'malformed',
                `upstream answered a stream request with ${upstream.contentType ? `\`${upstream.contentType.slice(0, 100)}\`` : 'no content type'}, and neither an event stream nor a JSON object`,
              )
            : error;
        return await this.failed(notStream, held, record, call.clientSignal);
      }
    } finally {
      untilStopped.disarm();
    }
    this.noteServedTier(json['service_tier'], model, record);
    const usage = readUsage(json['usage']);
    record.usage = usage ?? estimatedChatUsage(body, choicesText(json['choices']), bounds);
    record.estimated = usage === null;
    return this.answered(
      held,
      record,
      model,
      json,
      call.clientSignal,
      jsonForStream ? { includeUsage: body.stream_options?.include_usage === true } : null,
    );
  }

  /**
   * Settles a non-streamed answer for its usage, and returns it. A client that left after the
   * request was forwarded is charged too (the answer was generated, and the provider bills
   * for it): recorded `client_disconnected` with status 499, nobody to read the answer.
   * With `asStream` (a stream was asked for, upstream answered JSON), the answer goes out as
   * SSE chunks and `[DONE]`, once settled (a client that left is charged the same way).
   */
  private async answered(
    held: HeldCall,
    record: CallRecord,
    model: Model,
    json: Record<string, unknown>,
    clientSignal: AbortSignal,
    asStream: { includeUsage: boolean } | null = null,
  ): Promise<GatewayResponse> {
    const cost = costOf(record.usage, model.price);
    const gone = clientSignal.aborted;
    await this.settle(held, cost, record, gone ? 499 : 200, gone ? 'client_disconnected' : 'ok');
    if (json['model'] === model.price.upstreamModel) json['model'] = model.config.id;
    if (asStream && !gone) {
      const frames = completionAsChunks(json, asStream.includeUsage);
      const pump = async (sink: Writable): Promise<void> => {
        for (const frame of frames) {
          if (sink.destroyed) return;
          sink.write(frame);
        }
        if (!sink.destroyed) sink.end();
      };
      return {
        kind: 'stream',
        headers: { ...SSE_HEADERS, 'x-lingxi-cost': cost.toString() },
        pump: (sink) => this.deps.work.track(pump(sink)),
      };
    }
    return { kind: 'json', status: 200, headers: { 'x-lingxi-cost': cost.toString() }, body: json };
  }

  async embedding(call: GatewayCall): Promise<GatewayResponse> {
    const body = parseRequest(embeddingRequestSchema, call.body);
    const model = this.modelFor(body.model, call.caller, 'embedding');
    // Refused as a chat request's is: an embedding at a dearer tier is billed above the table.
    refuseUnpriced(unpricedRequestTier(body), model);
    const promptTokensMax = embeddingTokensUpperBound(
      body.input,
      this.deps.config.gateway.bytesPerTokenMin,
    );
    const record = this.newRecord(call, model, 'embeddings', false);
    const held = await this.admit(call, model, record, promptTokensMax, 0n);
    let upstream: UpstreamCall;
    let json: Record<string, unknown>;
    const untilStopped = this.untilStopped(untilForwarded(call.clientSignal));
    try {
      upstream = await postUpstream({
        provider: model.provider,
        path: '/embeddings',
        body: { ...body, model: model.price.upstreamModel },
        signal: untilStopped.signal,
        headersTimeoutMs: model.provider.timeoutMs,
        deadlineAt: this.deadlineAt(call),
      });
      record.firstByteAt = upstream.firstByteAt;
      json = await this.readJson(upstream, model.provider.timeoutMs, this.deadlineAt(call));
    } catch (error) {
      return this.failed(error, held, record, call.clientSignal);
    } finally {
      untilStopped.disarm();
    }
    // As a chat answer's: a tier above the table's prices is charged at them, but noted.
    this.noteServedTier(json['service_tier'], model, record);
    const usage = readUsage(json['usage']);
    // Never more than was held for: a larger `bytesPerTokenMin` makes the hold's bound smaller.
    const estimatedPrompt = minOf(estimateEmbeddingTokens(body.input), promptTokensMax);
    record.usage = usage
      ? { ...usage, completionTokens: 0n, reasoningTokens: 0n }
      : { ...ZERO_USAGE, promptTokens: estimatedPrompt };
    record.estimated = usage === null;
    return this.answered(held, record, model, json, call.clientSignal);
  }

  private modelFor(id: string, caller: ApiCaller, kind: 'chat' | 'embedding'): Model {
    const model = this.models.get(id);
    if (!model || model.config.kind !== kind) {
      throw notFound(
        `The model \`${id}\` does not exist or you do not have access to it.`,
        'model_not_found',
        'model',
      );
    }
    if (caller.allowedModels && !caller.allowedModels.includes(id)) {
      throw new AppError('model_not_allowed', `this API key may not use \`${id}\``, {
        status: 403,
        param: 'model',
      });
    }
    return model;
  }

  private newRecord(
    call: GatewayCall,
    model: Model,
    endpoint: CallRecord['endpoint'],
    stream: boolean,
  ): CallRecord {
    return {
      requestId: call.requestId,
      caller: call.caller,
      endpoint,
      model: model.config.id,
      provider: model.provider.name,
      priceId: model.price.id,
      stream,
      usage: ZERO_USAGE,
      estimated: false,
      startedAt: call.startedAt,
      firstByteAt: null,
      finishedAt: call.startedAt,
      httpStatus: 0,
      outcome: 'ok',
      clientIp: call.clientIp,
      userAgent: call.userAgent,
    };
  }

  /** Rate limit, then hold the most the call can cost. Refusals are recorded, then thrown. */
  private async admit(
    call: GatewayCall,
    model: Model,
    record: CallRecord,
    promptTokensMax: bigint,
    outputTokensMax: bigint,
  ): Promise<HeldCall> {
    const maxCost = maxCostOf(promptTokensMax, outputTokensMax, model.price);
    try {
      await this.deps.rateLimiter.take(
        call.caller.keyId,
        Number(promptTokensMax + outputTokensMax),
      );
      const holdMs =
        model.provider.timeoutMs +
        this.deps.config.gateway.maxCallDurationMs +
        this.deps.config.gateway.holdGraceMs;
      return await this.deps.meter.hold({
        caller: call.caller,
        requestId: call.requestId,
        model: model.config.id,
        maxCost,
        holdMs,
      });
    } catch (error) {
      if (error instanceof AppError && (error.status === 402 || error.status === 429)) {
        const outcome: CallOutcome =
          error.status === 429
            ? 'rate_limited'
            : error.code === 'spend_limit_exceeded'
              ? 'spend_limit'
              : 'insufficient_balance';
        this.finish(record, error.status, outcome);
        await this.deps.meter
          .recordRefused(record)
          .catch((e: unknown) =>
            this.deps.logger.error(
              { err: e, requestId: record.requestId },
              'could not record a refused call',
            ),
          );
      }
      throw error;
    }
  }

  /** When a call must be over: `gateway.maxCallDurationMs` after it came in. */
  private deadlineAt(call: GatewayCall): number {
    return call.startedAt.getTime() + this.deps.config.gateway.maxCallDurationMs;
  }

  private async readJson(
    upstream: UpstreamCall,
    deadlineMs: number,
    callDeadlineAt: number,
  ): Promise<Record<string, unknown>> {
    const timer = boundedWait(deadlineMs, callDeadlineAt, upstream.abort);
    let text: string;
    try {
      text = await readText(upstream.body);
    } catch {
      throw bodyReadError(upstream, deadlineMs);
    } finally {
      clearTimeout(timer);
    }
    try {
      const json: unknown = JSON.parse(text);
      if (typeof json === 'object' && json !== null && !Array.isArray(json))
        return json as Record<string, unknown>;
    } catch {
      // fall through
    }
    throw new UpstreamError(
      'malformed',
      'upstream answered with something that is not a JSON object',
    );
  }

  /**
   * Releases the hold for a call that failed before anything was generated, and says why. A
   * call whose client had left before it ended is recorded `client_disconnected` (499), as
   * other departures are, whatever then ended the wait for upstream (its timeout, the
   * deadline, an error): the client saw none of it. What upstream did is logged.
   */
  private async failed(
    error: unknown,
    held: HeldCall,
    record: CallRecord,
    clientSignal: AbortSignal,
  ): Promise<GatewayResponse> {
    if (!(error instanceof UpstreamError)) {
      this.finish(record, 500, 'upstream_error');
      await this.deps.meter
        .release(held, record)
        .catch((e: unknown) =>
          this.deps.logger.error(
            { err: e, requestId: record.requestId },
            'could not release a hold',
          ),
        );
      throw error;
    }
    const gone = clientSignal.aborted;
    if (gone && error.kind !== 'aborted')
      this.deps.logger.info(
        // Upstream's message is left out: it can quote the request.
        { requestId: record.requestId, upstream: error.kind, upstreamStatus: error.status },
        'upstream failed after the client left',
      );
    if (!gone && error.kind === 'status' && UPSTREAM_REJECTED_REQUEST.has(error.status ?? 0)) {
      // The caller's request is at fault: a 502 would have SDKs send it again, twice.
      this.finish(record, 400, 'upstream_error');
      await this.deps.meter.release(held, record);
      return {
        kind: 'json',
        status: 400,
        headers: { 'x-lingxi-cost': '0' },
        body: {
          error: {
            message: `${error.message}; nothing was charged`,
            type: 'invalid_request_error',
            code: 'upstream_rejected_request',
            param: error.param,
          },
        },
      };
    }
    const status =
      gone || error.kind === 'aborted'
        ? 499
        : error.kind === 'timeout' || error.kind === 'deadline'
          ? 504
          : 502;
    const outcome: CallOutcome =
      gone || error.kind === 'aborted'
        ? 'client_disconnected'
        : error.kind === 'timeout'
          ? 'upstream_timeout'
          : error.kind === 'deadline'
            ? 'deadline_exceeded'
            : error.kind === 'malformed'
              ? 'upstream_malformed'
              : 'upstream_error';
    this.finish(record, status, outcome);
    await this.deps.meter.release(held, record);
    const code =
      error.kind === 'timeout'
        ? 'upstream_timeout'
        : error.kind === 'deadline'
          ? 'deadline_exceeded'
          : 'upstream_error';
    const message =
      error.kind === 'deadline'
        ? `the call reached its time limit of ${this.deps.config.gateway.maxCallDurationMs} ms while waiting for upstream`
        : error.message;
    // A provider that said when to come back (429, 503): clients (the OpenAI SDKs) wait that long.
    const retryAfter =
      error.retryAfterS === null ? {} : { 'retry-after': String(error.retryAfterS) };
    return {
      kind: 'json',
      status,
      headers: { 'x-lingxi-cost': '0', ...retryAfter },
      body: {
        error: {
          message: `${message}; nothing was charged`,
          type: 'api_error',
          code,
          param: null,
        },
      },
    };
  }

  /**
   * An answer that reports a tier billed above the table's prices (the provider project's
   * default tier set to Priority, say: a request without `service_tier` gets it) is still
   * charged at table prices, but never quietly: it is logged and counted for the operator.
   */
  private noteServedTier(reported: unknown, model: Model, record: CallRecord): void {
    const tier = unpricedServedTier(reported);
    if (tier === null) return;
    this.deps.metrics.unpricedServiceTier.inc({
      provider: model.provider.name,
      model: model.config.id,
      tier: KNOWN_UNPRICED_TIERS.has(tier) ? tier : 'other',
    });
    this.deps.logger.warn(
      {
        requestId: record.requestId,
        model: model.config.id,
        provider: model.provider.name,
        serviceTier: tier,
      },
      'upstream served a call at a service tier the price table does not cover; charged at table prices (keep the provider project default tier at `default`)',
    );
  }

  private async settle(
    held: HeldCall,
    cost: Decimal,
    record: CallRecord,
    status: number,
    outcome: CallOutcome,
  ): Promise<void> {
    this.finish(record, status, outcome);
    const { shortfall } = await this.deps.meter.settle(held, cost, record);
    this.deps.metrics.chargedUsd.inc({ model: record.model }, cost.toNumber());
    if (cost.gt(held.maxCost)) this.noteChargedOverHold(held, cost, shortfall, record);
  }

  /**
   * A call charged more than its hold is charged as reported (a `file` part's prompt, which
   * the bound cannot see, is one honest case), but never quietly: a provider reporting usage
   * far beyond the cap it was given would otherwise book its error to the user's receivable
   * unseen. Logged and counted for the operator.
   */
  private noteChargedOverHold(
    held: HeldCall,
    cost: Decimal,
    shortfall: Decimal,
    record: CallRecord,
  ): void {
    this.deps.metrics.chargedOverHold.inc({
      provider: record.provider ?? 'unknown',
      model: record.model,
    });
    const { usage } = record;
    this.deps.logger.warn(
      {
        requestId: record.requestId,
        model: record.model,
        provider: record.provider,
        heldUsd: held.maxCost.toString(),
        costUsd: cost.toString(),
        shortfallUsd: shortfall.toString(),
        estimated: record.estimated,
        promptTokens: usage.promptTokens.toString(),
        cachedTokens: usage.cachedTokens.toString(),
        cacheWriteTokens: usage.cacheWriteTokens.toString(),
        completionTokens: usage.completionTokens.toString(),
        reasoningTokens: usage.reasoningTokens.toString(),
      },
      'a call was charged more than its hold (usage as the provider reported it; what the balance could not cover is owed on the receivable)',
    );
  }

  private finish(record: CallRecord, status: number, outcome: CallOutcome): void {
    record.finishedAt = new Date();
    record.httpStatus = status;
    record.outcome = outcome;
    const labels = { endpoint: record.endpoint, model: record.model };
    this.deps.metrics.calls.inc({ ...labels, outcome });
    this.deps.metrics.callDuration.observe(
      { ...labels, stream: String(record.stream) },
      (record.finishedAt.getTime() - record.startedAt.getTime()) / 1000,
    );
  }

  /**
   * Passes upstream's SSE events to the client as they arrive, hides the usage chunk from a
   * client that did not ask for it, and settles when the stream ends however it ends: for
   * the reported usage, or for an estimate of what was generated (marked estimated).
   */
  private streamed(
    body: ChatRequest,
    model: Model,
    held: HeldCall,
    record: CallRecord,
    upstream: UpstreamCall,
    deadlineAt: number,
    bounds: HoldBounds,
    { clientSignal }: { clientSignal: AbortSignal },
  ): GatewayResponse {
    const clientWantsUsage = body.stream_options?.include_usage === true;
    const idleMs = model.provider.timeoutMs;
    // Once every choice has its `finish_reason` the answer is generated, and the provider bills
    // it whole: a client that leaves then, before the usage chunk (the SDK's reader breaking
    // out at the finish), must not make it free but for the words it saw. Its stream is read
    // on for that usage, at most `gateway.clientGoneGraceMs`; before that, it stops at once.
    const finishedChoices = new Set<unknown>();
    let usageAfterFinish = false;
    const awaitingUsage = () => finishedChoices.size >= (body.n ?? 1) && !usageAfterFinish;
    let usageGrace: NodeJS.Timeout | undefined;
    const stopUpstream = () => {
      if (!awaitingUsage()) upstream.abort('aborted');
      else
        usageGrace ??= setTimeout(
          () => upstream.abort('aborted'),
          this.deps.config.gateway.clientGoneGraceMs,
        );
    };
    clientSignal.addEventListener('abort', stopUpstream, { once: true });
    const pump = async (sink: Writable): Promise<void> => {
      let text = '';
      let usage: TokenUsage | null = null;
      // Every usage upstream reported so far, merged (`maxUsage`); `usage` is it read.
      let reported: Record<string, unknown> | null = null;
      // The first tier above the table's prices that any chunk reports (each chunk repeats the
      // tier, and a later one may say otherwise than the first): noted once, after the stream.
      let unpricedTier: unknown = null;
      let done = false;
      let malformed = false;
      let clientGone = false;
      let deadlinePassed = false;
      // Ends the current wait for the client to drain, if there is one.
      let stopWaiting: (() => void) | null = null;
      // The client left, or stopped reading: stop upstream, and cut the client's stream.
      const leave = () => {
        if (clientGone) return;
        clientGone = true;
        stopWaiting?.();
        stopUpstream();
        if (!sink.destroyed) sink.destroy();
      };
      sink.on('close', () => {
        if (!sink.writableFinished) leave();
      });
      // A client that does not take a frame within the idle limit (or by the deadline) is
      // treated as gone; waiting longer would hold its call open past its hold's expiry.
      const write = async (frame: string) => {
        if (clientGone || sink.destroyed) return;
        if (sink.write(frame)) return;
        const drained =
          !deadlinePassed &&
          (await new Promise<boolean>((resolve) => {
            const finish = (ok: boolean) => {
              clearTimeout(timer);
              sink.off('drain', onDrain);
              stopWaiting = null;
              resolve(ok);
            };
            const onDrain = () => finish(true);
            const timer = setTimeout(() => finish(false), idleMs);
            sink.once('drain', onDrain);
            stopWaiting = () => finish(false);
          }));
        if (!drained) leave();
      };
      const frames: string[] = [];
      let oversized = false;
      // An event that never ends would grow the parser's buffer until the call's deadline:
      // the text is bounded before the parser sees it, the same however the reads fell.
      const bound = new StreamEventBound(this.deps.config.gateway.maxStreamEventChars);
      const parser = createParser({
        onEvent(event: EventSourceMessage) {
          // Nothing after [DONE] is read: not passed on, not charged, however the reads fell.
          if (malformed || done) return;
          if (isDoneEvent(event.data)) {
            done = true;
            return;
          }
          let parsed: unknown;
          try {
            parsed = JSON.parse(event.data);
          } catch {
            malformed = true;
            return;
          }
          // JSON that is no chunk (`null`, a number) is as broken as JSON cut off; reading it
          // as one would throw out of the parser, losing the frames parsed before it.
          if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
            malformed = true;
            return;
          }
          const chunk = parsed as Record<string, unknown>;
          if (unpricedTier === null && unpricedServedTier(chunk['service_tier']) !== null)
            unpricedTier = chunk['service_tier'];
          const choices = Array.isArray(chunk['choices']) ? (chunk['choices'] as unknown[]) : [];
          text += choicesText(choices);
          for (const choice of choices as Record<string, unknown>[])
            if (choice?.['finish_reason'] != null) finishedChoices.add(choice['index'] ?? 0);
          let rewrite = false;
          if (chunk['usage'] != null) {
            // Each report counts (an unreadable one is ignored): the usage is their field-wise
            // largest, right for reports that repeat it cumulatively and for ones that split it.
            if (readUsage(chunk['usage']) !== null) {
              reported = maxUsage(reported, chunk['usage'] as Record<string, unknown>);
              usage = readUsage(reported);
              if (finishedChoices.size >= (body.n ?? 1)) usageAfterFinish = true;
            }
            if (!clientWantsUsage) {
              if (choices.length === 0) return;
              delete chunk['usage'];
              rewrite = true;
            }
          }
          if (
            chunk['model'] === model.price.upstreamModel &&
            model.price.upstreamModel !== model.config.id
          ) {
            chunk['model'] = model.config.id;
            rewrite = true;
          }
          // An event upstream spread over several `data:` lines goes out as one: its newlines,
          // passed on in one `data:` field, would cut the chunk short for the client.
          if (event.data.includes('\n')) rewrite = true;
          frames.push(`data: ${rewrite ? JSON.stringify(chunk) : event.data}\n\n`);
        },
      });
      let idle: NodeJS.Timeout | undefined;
      const armIdle = () => {
        clearTimeout(idle);
        idle = setTimeout(() => upstream.abort('timeout'), idleMs);
      };
      let failure: CallOutcome | null = null;
      const deadline = setTimeout(
        () => {
          deadlinePassed = true;
          upstream.abort('timeout');
          stopWaiting?.();
        },
        Math.max(0, deadlineAt - Date.now()),
      );
      try {
        // The idle timer runs only while waiting for upstream, never while waiting for the client.
        armIdle();
        const decoder = new TextDecoder();
        for await (const bytes of upstream.body) {
          clearTimeout(idle);
          const text = decoder.decode(bytes, { stream: true });
          const fits = bound.take(text);
          parser.feed(fits === text.length ? text : text.slice(0, fits));
          // What came before the event too large is read; a `[DONE]` there ends the stream.
          if (fits < text.length && !done && !malformed) oversized = malformed = true;
          for (const frame of frames.splice(0)) await write(frame);
          if (malformed || done || (clientGone && !awaitingUsage())) break;
          armIdle();
        }
        if (malformed) failure = 'upstream_malformed';
        else if (!done && !clientGone) failure = 'upstream_error';
        if (oversized)
          this.deps.logger.warn(
            {
              requestId: record.requestId,
              model: record.model,
              provider: record.provider,
              maxStreamEventChars: this.deps.config.gateway.maxStreamEventChars,
            },
            'upstream sent a stream event larger than gateway.maxStreamEventChars; the stream was cut',
          );
      } catch {
        failure = upstream.stoppedBy === 'timeout' ? 'upstream_timeout' : 'upstream_error';
      } finally {
        clearTimeout(idle);
        clearTimeout(deadline);
        clearTimeout(usageGrace);
      }
      // The deadline ended the call, whoever it was waiting for (a client cut while it did
      // not read is not one that left, nor did upstream stop sending).
      if (deadlinePassed) failure = 'deadline_exceeded';
      else if (clientGone) failure = null;
      this.noteServedTier(unpricedTier, model, record);
      const estimate = estimatedChatUsage(body, text, bounds);
      // A usage reported before the answer was over (a running count, the prompt's alone)
      // does not count what came after it: a stream cut before its last report is charged
      // at least the estimate of what was generated.
      const read = usage as TokenUsage | null;
      const cutShort =
        read !== null &&
        !(done as boolean) &&
        !usageAfterFinish &&
        estimate.completionTokens > read.completionTokens;
      const finalUsage: TokenUsage =
        read === null
          ? estimate
          : cutShort
            ? { ...read, completionTokens: estimate.completionTokens }
            : read;
      record.usage = finalUsage;
      record.estimated = read === null || cutShort;
      const outcome: CallOutcome =
        failure === 'deadline_exceeded'
          ? failure
          : clientGone
            ? 'client_disconnected'
            : (failure ?? 'ok');
      const nothingGenerated = usage === null && text === '';
      try {
        if (nothingGenerated && outcome !== 'ok') {
          // Nothing is charged, so the row claims no tokens (as a failure before the stream).
          record.usage = ZERO_USAGE;
          record.estimated = false;
          this.finish(record, 200, outcome);
          await this.deps.meter.release(held, record);
        } else {
          await this.settle(held, costOf(finalUsage, model.price), record, 200, outcome);
        }
      } catch (error) {
        this.deps.logger.error(
          { err: error, requestId: record.requestId },
          'could not settle a streamed call; its hold will expire',
        );
      }
      // The stream's end ([DONE], or the error event) goes out only once the call is settled,
      // as a JSON answer does: a client that saw its call end has been charged for it, even if
      // this process dies right after. A stream cut without its end was left in flight.
      if (failure && !clientGone) {
        const message =
          failure === 'deadline_exceeded'
            ? `the call reached its time limit of ${this.deps.config.gateway.maxCallDurationMs} ms`
            : failure === 'upstream_timeout'
              ? 'upstream stopped sending'
              : 'upstream stream failed';
        await write(
          `data: ${JSON.stringify({ error: { message: `${message}; charged only for what was generated`, type: 'api_error', code: failure, param: null } })}\n\n`,
        );
      }
      if (!failure && !clientGone) await write('data: [DONE]\n\n');
      if (!sink.destroyed) sink.end();
    };
    return {
      kind: 'stream',
      headers: SSE_HEADERS,
      pump: (sink) => this.deps.work.track(pump(sink)),
    };
  }
}

const SSE_HEADERS: Record<string, string> = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no',
};

/**
 * The unpriced tiers an answer may report that the metric names in its `tier` label (OpenAI's
 * tiers above standard, and `auto`, which an answer should never report); any other is counted
 * as `other`, so a provider's odd value cannot grow the label set.
 */
const KNOWN_UNPRICED_TIERS: ReadonlySet<string> = new Set([
  'priority',
  'scale',
  'fast',
  'ultrafast',
  'auto',
]);

/** The token counts a chat call's hold was computed from. */
interface HoldBounds {
  promptTokensMax: bigint;
  outputTokensMax: bigint;
}

/**
 * A chat call's usage when upstream sent none: its messages' text and what was generated,
 * estimated; a Predicted Output counts in full (which of its tokens were rejected, and so
 * billed, is not known; a stream cut before anything was generated is not charged at all).
 * Each part is capped at what the hold counted for it (four bytes a token can be more tokens
 * than a `gateway.bytesPerTokenMin` above 4 allows, or than the output cap upstream was
 * given), so an estimated charge never exceeds its hold.
 */
function estimatedChatUsage(body: ChatRequest, generated: string, bounds: HoldBounds): TokenUsage {
  return {
    promptTokens: minOf(estimateTokens(messagesText(body.messages)), bounds.promptTokensMax),
    cachedTokens: 0n,
    cacheWriteTokens: 0n,
    completionTokens: minOf(
      estimateTokens(generated) + estimateTokens(predictionText(body['prediction'])),
      bounds.outputTokensMax,
    ),
    reasoningTokens: 0n,
  };
}

/**
 * Whether an event's data ends the stream: the openai SDK's rule (data that starts with
 * `[DONE]`, so `[DONE] ` with a trailing space ends it too), with any whitespace around it
 * ignored. A provider tested only against the SDK may send it so; reading it as a broken
 * chunk would end a finished stream as malformed.
 */
function isDoneEvent(data: string): boolean {
  return data.trimStart().startsWith('[DONE]');
}

/** Why reading an upstream answer's body failed, from what stopped it (a timeout of `timeoutMs`). */
function bodyReadError(upstream: UpstreamCall, timeoutMs: number): UpstreamError {
  if (upstream.stoppedBy === 'deadline')
    return new UpstreamError('deadline', 'the call reached its time limit');
  if (upstream.stoppedBy === 'timeout')
    return new UpstreamError(
      'timeout',
      `upstream did not finish its answer within ${timeoutMs} ms`,
    );
  if (upstream.stoppedBy === 'aborted') return new UpstreamError('aborted', 'the client went away');
  return new UpstreamError('unreachable', 'upstream closed the connection mid-answer');
}

/** `text/event-stream`: an answer that says it is a stream. */
function isEventStreamContentType(contentType: string): boolean {
  return contentType.split(';')[0]!.trim() === 'text/event-stream';
}

/** The start of an event stream: a comment, or a field's name followed by `:` or the line's end. */
const EVENT_STREAM_START = /^(?::|(?:data|event|id|retry)(?:[:\r\n]|$))/;

/** The most of an unlabelled answer read to learn whether it is an event stream. */
const SNIFF_MAX_BYTES = 65_536;

/**
 * Whether the answer to a stream request whose content type is neither an event stream's nor
 * JSON (`text/plain`, none: some proxies label streams so) starts as an event stream: its
 * first line, after any blank space, is an SSE comment or field. Reads the body until that
 * line is in (at most 64 KiB, within `timeoutMs` and the call's deadline, as a stream's first
 * event), and puts back what it read: `upstream.body` then yields the whole body again.
 */
async function startsAsEventStream(
  upstream: UpstreamCall,
  timeoutMs: number,
  deadlineAt: number,
): Promise<boolean> {
  const rest = upstream.body[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let bytes = 0;
  let ended = false;
  let start = '';
  const timer = boundedWait(timeoutMs, deadlineAt, upstream.abort);
  try {
    for (;;) {
      const next = await rest.next();
      if (next.done) {
        ended = true;
        break;
      }
      head.push(next.value);
      bytes += next.value.length;
      start = Buffer.concat(head)
        .toString('utf8')
        .replace(/^[\uFEFF\s]+/, '');
      if (/[\r\n]/.test(start) || start.length >= 7 || bytes >= SNIFF_MAX_BYTES) break;
    }
  } catch {
    throw bodyReadError(upstream, timeoutMs);
  } finally {
    clearTimeout(timer);
  }
  upstream.body = {
    async *[Symbol.asyncIterator]() {
      try {
        yield* head;
        if (ended) return;
        for (;;) {
          const next = await rest.next();
          if (next.done) return;
          yield next.value;
        }
      } finally {
        // A reader that stops early ends the response, as it would reading it directly.
        await rest.return?.();
      }
    },
  };
  return EVENT_STREAM_START.test(start);
}

/** `application/json` or any `+json` type: a provider's answer that is no event stream. */
function isJsonContentType(contentType: string): boolean {
  const type = contentType.split(';')[0]!.trim();
  return type === 'application/json' || type.endsWith('+json');
}

/**
 * A chat completion as the SSE frames of its stream: a chunk per choice whose delta is the
 * whole message (tool calls numbered by `index`, as deltas carry them), the usage chunk when
 * the client asked for usage and upstream sent it, then `[DONE]`.
 */
function completionAsChunks(json: Record<string, unknown>, includeUsage: boolean): string[] {
  const head = {
    id: json['id'] ?? null,
    object: 'chat.completion.chunk',
    created: json['created'] ?? Math.floor(Date.now() / 1000),
    model: json['model'] ?? null,
    ...('service_tier' in json ? { service_tier: json['service_tier'] } : {}),
    ...('system_fingerprint' in json ? { system_fingerprint: json['system_fingerprint'] } : {}),
  };
  const frame = (chunk: unknown) => `data: ${JSON.stringify(chunk)}\n\n`;
  const frames: string[] = [];
  const choices = Array.isArray(json['choices']) ? (json['choices'] as unknown[]) : [];
  choices.forEach((choice, position) => {
    if (typeof choice !== 'object' || choice === null) return;
    const c = choice as Record<string, unknown>;
    const message =
      typeof c['message'] === 'object' && c['message'] !== null
        ? (c['message'] as Record<string, unknown>)
        : {};
    const delta: Record<string, unknown> = { ...message };
    if (Array.isArray(message['tool_calls']))
      delta['tool_calls'] = (message['tool_calls'] as unknown[]).map((call, index) =>
        typeof call === 'object' && call !== null ? { index, ...call } : call,
      );
    frames.push(
      frame({
        ...head,
        choices: [
          {
            index: typeof c['index'] === 'number' ? c['index'] : position,
            delta,
            logprobs: c['logprobs'] ?? null,
            finish_reason: c['finish_reason'] ?? null,
          },
        ],
        ...(includeUsage ? { usage: null } : {}),
      }),
    );
  });
  if (includeUsage && json['usage'] != null)
    frames.push(frame({ ...head, choices: [], usage: json['usage'] }));
  frames.push('data: [DONE]\n\n');
  return frames;
}

/**
 * The signal an upstream call is stopped by until its answer's headers: the client's while the
 * request has not been forwarded yet (a client already gone costs nothing), none after. Once
 * forwarded, a JSON answer is generated whole and billed to us whether or not the client
 * waits for it, so it is read and charged; a stream is stopped when its client leaves, once
 * its headers show it streams, and charged for what it sent (a stream's wait for its headers
 * is bounded after its client left: `untilGraceAfterClientGone`).
 */
function untilForwarded(clientSignal: AbortSignal): AbortSignal {
  return clientSignal.aborted ? clientSignal : new AbortController().signal;
}

/**
 * The signal a stream's wait for upstream's headers is stopped by: the client's at once when
 * it is already gone (nothing was forwarded, nothing is owed), else one that stops the wait
 * `graceMs` after the client leaves. A provider that streams sends its headers at once; one
 * still silent after the client left has stalled, or is generating a whole JSON answer (read
 * and charged if it comes within the grace, see `untilForwarded`). Keeping the request open
 * longer would keep the provider's connection and the call's hold for a client that is gone.
 * `disarm` once the wait is over: from the headers on, the stream (or the JSON read) decides.
 */
function untilGraceAfterClientGone(
  clientSignal: AbortSignal,
  graceMs: number,
): { signal: AbortSignal; disarm(): void } {
  if (clientSignal.aborted) return { signal: clientSignal, disarm: () => {} };
  const controller = new AbortController();
  let grace: NodeJS.Timeout | undefined;
  const onGone = () => {
    grace = setTimeout(() => controller.abort(), graceMs);
  };
  clientSignal.addEventListener('abort', onGone, { once: true });
  return {
    signal: controller.signal,
    disarm: () => {
      clientSignal.removeEventListener('abort', onGone);
      clearTimeout(grace);
    },
  };
}

/** A request asking for a feature the price table does not price: 400 `feature_not_priced`. */
function refuseUnpriced(unpriced: { param: string; feature: string } | null, model: Model): void {
  if (unpriced)
    throw new AppError(
      'feature_not_priced',
      `${unpriced.param}: ${unpriced.feature} has no price on \`${model.config.id}\`, so it is not served; nothing was charged`,
      { param: unpriced.param },
    );
}

/** OpenAI's reasoning models: they refuse `max_tokens` (400) and take `max_completion_tokens`. */
const REASONING_MODEL = /^(o\d|gpt-5)/;

/**
 * Whether an upstream model name is one of OpenAI's reasoning models, routed names included:
 * a router (OpenRouter: `openai/o3-mini`) prefixes the vendor, so the last path segment counts.
 */
export function isReasoningModel(upstreamModel: string): boolean {
  return REASONING_MODEL.test(upstreamModel.slice(upstreamModel.lastIndexOf('/') + 1));
}

/** The parameter the gateway's own output cap goes upstream as. */
function outputCapParam(model: Model): 'max_tokens' | 'max_completion_tokens' {
  return (
    model.config.outputCapParam ??
    (isReasoningModel(model.price.upstreamModel) ? 'max_completion_tokens' : 'max_tokens')
  );
}
