/**
 * Response bodies in the shapes OpenAI sends today (chat.completion, chat.completion.chunk,
 * list/embedding, list/model, error), field for field, so a gateway parses the stub exactly
 * as it would parse the provider.
 */
import type { CompletionPlan } from './usage.js';
import { completionText } from './usage.js';

export const SYSTEM_FINGERPRINT = 'fp_stub';

export const MODEL_IDS: readonly string[] = [
  'gpt-4o-mini',
  'gpt-4o',
  'o3-mini',
  'text-embedding-3-small',
];
/** A fixed creation time for the model list, so it is the same on every run. */
const MODELS_CREATED = 1_700_000_000;

export interface OpenAIErrorBody {
  error: { message: string; type: string; code: string | null; param: string | null };
}

/** The error body OpenAI sends for a status, with the `type` and `code` it uses for it. */
export function errorBody(
  status: number,
  message: string,
  options: { code?: string | null; param?: string | null } = {},
): OpenAIErrorBody {
  let type = 'invalid_request_error';
  let code: string | null = null;
  if (status === 429) {
    type = 'requests';
    code = 'rate_limit_exceeded';
  } else if (status >= 500) {
    type = 'server_error';
  }
  return {
    error: { message, type, code: options.code ?? code, param: options.param ?? null },
  };
}

export interface ChatIdentity {
  id: string;
  created: number;
  model: string;
  /** The `service_tier` the answer reports serving the request at. */
  serviceTier: string;
}

export function usageBody(plan: CompletionPlan) {
  const completionTokens =
    plan.contentTokens +
    (plan.reasoningApart ? 0 : plan.reasoningTokens) +
    plan.rejectedPredictionTokens;
  const generated =
    plan.contentTokens +
    plan.reasoningTokens +
    plan.rejectedPredictionTokens +
    plan.hiddenReasoningTokens;
  return {
    prompt_tokens: plan.promptTokens,
    completion_tokens: completionTokens,
    total_tokens: plan.promptTokens + generated,
    ...(plan.cacheCreationTokens > 0
      ? { cache_creation_input_tokens: plan.cacheCreationTokens }
      : {}),
    // DeepSeek's shape: hits and misses beside the prompt count, no prompt_tokens_details.
    ...(plan.cacheHitTokens === null
      ? {
          prompt_tokens_details: {
            cached_tokens: plan.cachedTokens,
            audio_tokens: 0,
            ...(plan.cacheWriteTokens > 0 ? { cache_write_tokens: plan.cacheWriteTokens } : {}),
          },
        }
      : {
          prompt_cache_hit_tokens: plan.cacheHitTokens,
          prompt_cache_miss_tokens: plan.promptTokens - plan.cacheHitTokens,
        }),
    completion_tokens_details: {
      reasoning_tokens: plan.reasoningTokens,
      audio_tokens: 0,
      accepted_prediction_tokens: plan.acceptedPredictionTokens,
      rejected_prediction_tokens: plan.rejectedPredictionTokens,
    },
  };
}

/** The one tool call a `[[tool-call]]` answer makes: function `TOOL_NAME`, the text as its arguments. */
export const TOOL_CALL_ID = 'call_stub';
export const TOOL_NAME = 'f';

export function chatCompletionBody(
  identity: ChatIdentity,
  plan: CompletionPlan,
  withUsage: boolean,
  toolCall = false,
) {
  const text = completionText(plan.contentTokens);
  const output = toolCall
    ? {
        content: null,
        tool_calls: [
          { id: TOOL_CALL_ID, type: 'function', function: { name: TOOL_NAME, arguments: text } },
        ],
      }
    : { content: text };
  return {
    id: identity.id,
    object: 'chat.completion',
    created: identity.created,
    model: identity.model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', ...output, refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: toolCall && plan.finishReason === 'stop' ? 'tool_calls' : plan.finishReason,
      },
    ],
    ...(withUsage ? { usage: usageBody(plan) } : {}),
    service_tier: identity.serviceTier,
    system_fingerprint: SYSTEM_FINGERPRINT,
  };
}

/** Formats one `data:` chunk event around a fixed prefix: it runs once per streamed token. */
function chunkFormatter(identity: ChatIdentity, usageRequested: boolean) {
  const prefix =
    `{"id":${JSON.stringify(identity.id)},"object":"chat.completion.chunk",` +
    `"created":${identity.created},"model":${JSON.stringify(identity.model)},` +
    `"service_tier":${JSON.stringify(identity.serviceTier)},"system_fingerprint":"${SYSTEM_FINGERPRINT}","choices":[`;
  const suffix = usageRequested ? '],"usage":null}' : ']}';
  return {
    prefix,
    choice: (delta: string, finishReason: string) =>
      `data: ${prefix}{"index":0,"delta":${delta},"logprobs":null,"finish_reason":${finishReason}}${suffix}\n\n`,
  };
}

const ROLE_DELTA = '{"role":"assistant","content":"","refusal":null}';
const TOOL_CALL_ROLE_DELTA =
  `{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"${TOOL_CALL_ID}",` +
  `"type":"function","function":{"name":"${TOOL_NAME}","arguments":""}}],"refusal":null}`;

/**
 * The SSE events of one streamed completion, in order: the role chunk, one chunk per visible
 * token, the finish_reason chunk, the usage chunk (only when `withUsage`), `[DONE]`. Like
 * OpenAI, every chunk carries `usage: null` when usage was asked for. With `toolCall`, the
 * role chunk opens the tool call and each token is a piece of its arguments.
 */
export function* chatCompletionEvents(
  identity: ChatIdentity,
  plan: CompletionPlan,
  usageRequested: boolean,
  withUsage: boolean,
  toolCall = false,
): Generator<string> {
  const { prefix, choice } = chunkFormatter(identity, usageRequested);
  yield choice(toolCall ? TOOL_CALL_ROLE_DELTA : ROLE_DELTA, 'null');
  for (let index = 0; index < plan.contentTokens; index++) {
    yield choice(
      toolCall
        ? `{"tool_calls":[{"index":0,"function":{"arguments":"tok${index} "}}]}`
        : `{"content":"tok${index} "}`,
      'null',
    );
  }
  const finishReason = toolCall && plan.finishReason === 'stop' ? 'tool_calls' : plan.finishReason;
  yield choice('{}', `"${finishReason}"`);
  if (usageRequested && withUsage) {
    yield `data: ${prefix}],"usage":${JSON.stringify(usageBody(plan))}}\n\n`;
  }
  yield 'data: [DONE]\n\n';
}

/** The role chunk, then a `data:` line whose JSON breaks off mid-object; no [DONE]. */
export function malformedChatEvents(identity: ChatIdentity, usageRequested: boolean): string[] {
  const { choice } = chunkFormatter(identity, usageRequested);
  return [
    choice(ROLE_DELTA, 'null'),
    `data: {"id":${JSON.stringify(identity.id)},"object":"chat.completion.chunk","choices":[{"delta":{"content":"tok\n\n`,
  ];
}

/** A 200 body that starts as a completion and breaks off: not JSON. */
export function malformedBody(identity: ChatIdentity): string {
  return `{"id":${JSON.stringify(identity.id)},"object":"chat.completion","choices":[{"index":0,"message":`;
}

export function embeddingsBody(
  model: string,
  embeddings: readonly (readonly number[] | string)[],
  promptTokens: number,
  withUsage: boolean,
  serviceTier: string | null = null,
) {
  return {
    object: 'list',
    data: embeddings.map((embedding, index) => ({ object: 'embedding', index, embedding })),
    model,
    ...(withUsage ? { usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } } : {}),
    ...(serviceTier === null ? {} : { service_tier: serviceTier }),
  };
}

export function modelBody(id: string) {
  return { id, object: 'model', created: MODELS_CREATED, owned_by: 'lingxi-stub' };
}

export function modelsBody() {
  return { object: 'list', data: MODEL_IDS.map(modelBody) };
}
