import { contentText, type StubBehaviour } from './directives.js';

/** Visible completion tokens when neither a directive nor a limit says otherwise. */
export const DEFAULT_COMPLETION_TOKENS = 16;
export const PROMPT_TOKENS_PER_MESSAGE = 3;
export const UTF8_BYTES_PER_TOKEN = 4;
export const DEFAULT_EMBEDDING_DIMENSIONS = 8;
export const MAX_EMBEDDING_DIMENSIONS = 4096;

/** The part of a chat request the token count reads; an SDK request body fits it. */
export interface CountPromptTokensParameters {
  messages: readonly { role?: unknown; content?: unknown }[];
}

/**
 * The stub's prompt tokens: ceil(UTF-8 bytes of every message's text / 4) + 3 per message.
 * The text of a message is its string content, or the concatenated `text` of its parts
 * (image and audio parts count nothing). Directive text counts like any other text.
 *
 * @example
 * countPromptTokens({ messages: [{ role: 'user', content: 'hello' }] }); // ceil(5/4) + 3 = 5
 */
export function countPromptTokens(body: CountPromptTokensParameters): number {
  let bytes = 0;
  for (const message of body.messages) bytes += Buffer.byteLength(contentText(message.content));
  return Math.ceil(bytes / UTF8_BYTES_PER_TOKEN) + PROMPT_TOKENS_PER_MESSAGE * body.messages.length;
}

export interface CountEmbeddingTokensParameters {
  input: string | readonly string[] | readonly number[] | readonly (readonly number[])[];
}

/**
 * The stub's embedding tokens: the sum over inputs of ceil(UTF-8 bytes / 4) for a string,
 * or the array's length for an input already given as token ids. No per-input overhead.
 */
export function countEmbeddingTokens(body: CountEmbeddingTokensParameters): number {
  const inputs: readonly unknown[] = typeof body.input === 'string' ? [body.input] : body.input;
  if (inputs.length > 0 && typeof inputs[0] === 'number') return inputs.length;
  let tokens = 0;
  for (const input of inputs) {
    if (typeof input === 'string') {
      tokens += Math.ceil(Buffer.byteLength(input) / UTF8_BYTES_PER_TOKEN);
    } else if (Array.isArray(input)) {
      tokens += input.length;
    }
  }
  return tokens;
}

/**
 * The assistant text of `tokens` visible tokens: "tok0 tok1 ... tok{N-1} " (every word
 * followed by one space, so the streamed deltas "tokK " concatenate to exactly this).
 */
export function completionText(tokens: number): string {
  let text = '';
  for (let index = 0; index < tokens; index++) text += `tok${index} `;
  return text;
}

export interface CompletionPlan {
  promptTokens: number;
  cachedTokens: number;
  /**
   * Read from the prompt cache, reported as DeepSeek does (`prompt_cache_hit_tokens` and
   * `prompt_cache_miss_tokens`, no `prompt_tokens_details`); null: OpenAI's shape.
   */
  cacheHitTokens: number | null;
  /** Written to the prompt cache, reported as OpenRouter does (0: not reported). */
  cacheWriteTokens: number;
  /** Written to the prompt cache, reported under Anthropic's name (0: not reported). */
  cacheCreationTokens: number;
  contentTokens: number;
  reasoningTokens: number;
  /** The reasoning tokens are not in completion_tokens (only in total_tokens). */
  reasoningApart: boolean;
  /** Generated, and in total_tokens only. */
  hiddenReasoningTokens: number;
  /** Of a Predicted Output: tokens of the prediction that are in the answer (part of contentTokens). */
  acceptedPredictionTokens: number;
  /** Of a Predicted Output: tokens of the prediction that are not (billed on top, as OpenAI does). */
  rejectedPredictionTokens: number;
  finishReason: 'stop' | 'length';
}

export interface PlanCompletionParameters extends CountPromptTokensParameters {
  max_tokens?: unknown;
  max_completion_tokens?: unknown;
  /** Predicted Outputs: `{type: 'content', content: string | text parts}`. */
  prediction?: unknown;
}

/** A prediction's tokens: ceil(UTF-8 bytes of its text / 4); 0 without one. */
export function countPredictionTokens(prediction: unknown): number {
  if (typeof prediction !== 'object' || prediction === null) return 0;
  const text = contentText((prediction as { content?: unknown }).content);
  return Math.ceil(Buffer.byteLength(text) / UTF8_BYTES_PER_TOKEN);
}

/**
 * The numbers one chat completion reports. Visible tokens are `[[tokens]]` (default 16),
 * capped by max_completion_tokens ?? max_tokens; finish_reason is 'length' exactly when the
 * cap cut them. Reasoning tokens come on top and are not capped. With a prediction, the
 * answer keeps `[[accepted]]` (default 0) of its tokens (at most the visible ones); the rest
 * are rejected, and come on top of completion_tokens, uncapped, as OpenAI bills them.
 */
export function planCompletion(
  body: PlanCompletionParameters,
  behaviour: StubBehaviour,
): CompletionPlan {
  const limit = body.max_completion_tokens ?? body.max_tokens;
  const wanted = behaviour.tokens ?? DEFAULT_COMPLETION_TOKENS;
  const contentTokens = typeof limit === 'number' && limit >= 0 ? Math.min(wanted, limit) : wanted;
  const promptTokens = behaviour.promptTokens ?? countPromptTokens(body);
  const predictionTokens = countPredictionTokens(body.prediction);
  const accepted = Math.min(
    behaviour.acceptedPredictionTokens ?? 0,
    predictionTokens,
    contentTokens,
  );
  return {
    promptTokens,
    cachedTokens: Math.min(behaviour.cachedTokens ?? 0, promptTokens),
    cacheHitTokens:
      behaviour.cacheHitTokens === undefined
        ? null
        : Math.min(behaviour.cacheHitTokens, promptTokens),
    cacheWriteTokens: Math.min(behaviour.cacheWriteTokens ?? 0, promptTokens),
    cacheCreationTokens: Math.min(behaviour.cacheCreationTokens ?? 0, promptTokens),
    contentTokens,
    reasoningTokens: behaviour.reasoningTokens ?? 0,
    reasoningApart: behaviour.reasoningApart === true,
    hiddenReasoningTokens: behaviour.hiddenReasoningTokens ?? 0,
    acceptedPredictionTokens: accepted,
    rejectedPredictionTokens: predictionTokens - accepted,
    finishReason: contentTokens < wanted ? 'length' : 'stop',
  };
}

/**
 * A deterministic embedding of `text`: component i is (FNV-1a(text, seeded by i) mod 2001
 * - 1000) / 1024, a value in [-0.977, 0.977] that a float32 holds exactly, so the base64
 * and the float encodings decode to the same numbers.
 */
export function embedText(text: string, dimensions = DEFAULT_EMBEDDING_DIMENSIONS): number[] {
  const bytes = Buffer.from(text);
  const vector: number[] = [];
  for (let component = 0; component < dimensions; component++) {
    let hash = (0x811c9dc5 ^ component) >>> 0;
    for (const byte of bytes) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
    vector.push(((hash % 2001) - 1000) / 1024);
  }
  return vector;
}

/** Little-endian float32 bytes in base64, as OpenAI sends for `encoding_format: 'base64'`. */
export function encodeEmbeddingBase64(vector: readonly number[]): string {
  const buffer = Buffer.allocUnsafe(vector.length * 4);
  vector.forEach((value, index) => buffer.writeFloatLE(value, index * 4));
  return buffer.toString('base64');
}
