/**
 * Directives let a test steer the stub through the real SDK: they ride inside the prompt
 * (`"hello [[tokens=3]] [[cached=2]]"`), so the request the gateway forwards is the one
 * the test wrote. The exact semantics are documented in ../upstream-stub.ts.
 */
import { SSE_SHAPES, type SseShape } from './sse-shapes.js';

/** What the stub does with one request; every field absent means "the default". */
export interface StubBehaviour {
  /** Visible completion tokens wanted (still capped by max_tokens / max_completion_tokens). */
  tokens?: number;
  /** `usage.prompt_tokens_details.cached_tokens` (clamped to the prompt tokens). */
  cachedTokens?: number;
  /** `usage.completion_tokens_details.reasoning_tokens`, added to completion_tokens. */
  reasoningTokens?: number;
  /** The reasoning tokens are reported beside completion_tokens, not in it (as xAI does). */
  reasoningApart?: boolean;
  /** Thinking tokens counted in total_tokens only (as Gemini's OpenAI-compatible endpoint may). */
  hiddenReasoningTokens?: number;
  /**
   * Cache reads reported as DeepSeek does: `usage.prompt_cache_hit_tokens` (clamped to the
   * prompt tokens) and `prompt_cache_miss_tokens` (the rest), and no `prompt_tokens_details`.
   */
  cacheHitTokens?: number;
  /** `usage.prompt_tokens_details.cache_write_tokens` (part of the prompt tokens). */
  cacheWriteTokens?: number;
  /** `usage.cache_creation_input_tokens` (Anthropic's name; part of the prompt tokens). */
  cacheCreationTokens?: number;
  /** Of a request's prediction, the tokens the answer keeps (the rest are rejected). */
  acceptedPredictionTokens?: number;
  /** Replaces the computed prompt tokens. */
  promptTokens?: number;
  /** Answer with this HTTP status and an OpenAI error body instead of a completion. */
  failStatus?: number;
  /** Accept the request and never send a status line, until the client goes away. */
  stall?: boolean;
  /** Send this many SSE events (headers only, when not streaming), then go silent. */
  stallAfterChunks?: number;
  /** 200 with a body that is not JSON; in a stream, a broken `data:` line. */
  malformed?: boolean;
  /** Leave `usage` out, even when the client asked for it. */
  noUsage?: boolean;
  /** In a stream, after the visible tokens: an event whose data is JSON `null`, then the end. */
  nullEvent?: boolean;
  /** Send the token counts of a non-streamed answer's `usage` as strings of digits. */
  usageStrings?: boolean;
  /** The visible tokens are the arguments of one tool call instead of `content`. */
  toolCall?: boolean;
  /** Answer a stream request with one plain JSON completion (application/json), as if unasked. */
  jsonStream?: boolean;
  /** Wait before answering; in a stream, before every event. */
  delayMs?: number;
  /** With `failStatus`: a `retry-after` header of this many seconds. */
  retryAfterS?: number;
  /** The project's default service tier is Priority: a request without a tier is served at it. */
  projectPriority?: boolean;
  /** In a stream, the events reshaped (framing, order, usage): see `SSE_SHAPES`. */
  sseShape?: SseShape;
  /** In a stream, the first token's event padded to this many characters (its line, `data: ` included). */
  eventChars?: number;
  /** With `eventChars`: that event written in two writes, cut after this many bytes (0: one write). */
  eventSplit?: number;
  /** The `content-type` of a chat answer, whatever it is (`none`: no such header). */
  contentType?: (typeof CONTENT_TYPES)[number];
}

/** The content types `[[content-type=...]]` may give a chat answer. */
export const CONTENT_TYPES = ['text/plain', 'application/octet-stream', 'none'] as const;

// Bounds keep a typo (`[[tokens=1000000000]]`) from turning into a hung test run.
export const MAX_TOKENS_DIRECTIVE = 100_000;
export const MAX_DELAY_MS = 60_000;

type DirectiveSpec =
  | { range: readonly [number, number]; set: (behaviour: StubBehaviour, value: number) => void }
  | { range?: undefined; set: (behaviour: StubBehaviour) => void };

/** Directives whose value is one of a list of names: `[[sse=crlf]]`. */
const CHOICE_DIRECTIVES: Readonly<
  Record<string, { values: readonly string[]; set: (b: StubBehaviour, value: string) => void }>
> = {
  sse: { values: SSE_SHAPES, set: (b, v) => void (b.sseShape = v as SseShape) },
  'content-type': {
    values: CONTENT_TYPES,
    set: (b, v) => void (b.contentType = v as (typeof CONTENT_TYPES)[number]),
  },
};

const COUNT: readonly [number, number] = [0, MAX_TOKENS_DIRECTIVE];

const DIRECTIVES: Readonly<Record<string, DirectiveSpec>> = {
  tokens: { range: COUNT, set: (b, v) => void (b.tokens = v) },
  cached: { range: COUNT, set: (b, v) => void (b.cachedTokens = v) },
  reasoning: { range: COUNT, set: (b, v) => void (b.reasoningTokens = v) },
  'reasoning-apart': { set: (b) => void (b.reasoningApart = true) },
  'hidden-reasoning': { range: COUNT, set: (b, v) => void (b.hiddenReasoningTokens = v) },
  'cache-hit': { range: COUNT, set: (b, v) => void (b.cacheHitTokens = v) },
  'cache-write': { range: COUNT, set: (b, v) => void (b.cacheWriteTokens = v) },
  'cache-creation': { range: COUNT, set: (b, v) => void (b.cacheCreationTokens = v) },
  accepted: { range: COUNT, set: (b, v) => void (b.acceptedPredictionTokens = v) },
  'prompt-tokens': { range: COUNT, set: (b, v) => void (b.promptTokens = v) },
  fail: { range: [400, 599], set: (b, v) => void (b.failStatus = v) },
  stall: { set: (b) => void (b.stall = true) },
  'stall-after': { range: COUNT, set: (b, v) => void (b.stallAfterChunks = v) },
  malformed: { set: (b) => void (b.malformed = true) },
  'no-usage': { set: (b) => void (b.noUsage = true) },
  'null-event': { set: (b) => void (b.nullEvent = true) },
  'usage-strings': { set: (b) => void (b.usageStrings = true) },
  'tool-call': { set: (b) => void (b.toolCall = true) },
  'json-stream': { set: (b) => void (b.jsonStream = true) },
  delay: { range: [0, MAX_DELAY_MS], set: (b, v) => void (b.delayMs = v) },
  'retry-after': { range: [0, 86_400], set: (b, v) => void (b.retryAfterS = v) },
  'project-priority': { set: (b) => void (b.projectPriority = true) },
  'event-chars': { range: [1, MAX_TOKENS_DIRECTIVE], set: (b, v) => void (b.eventChars = v) },
  'event-split': { range: COUNT, set: (b, v) => void (b.eventSplit = v) },
};

/** Directives that mean something for an embeddings request. */
export const EMBEDDING_DIRECTIVES: ReadonlySet<string> = new Set([
  'prompt-tokens',
  'fail',
  'stall',
  'malformed',
  'no-usage',
  'delay',
  'retry-after',
  'project-priority',
]);

const DIRECTIVE_PATTERN = /\[\[([a-z-]+)(?:=([^\]]*))?\]\]/g;

export type ParseDirectivesResult =
  { ok: true; behaviour: StubBehaviour; names: string[] } | { ok: false; message: string };

/**
 * Reads every `[[name]]` / `[[name=value]]` in `text`. An unknown name or a bad value is an
 * error, not something to ignore: a test with a typo should fail loudly, not pass quietly.
 */
export function parseDirectives(text: string): ParseDirectivesResult {
  const behaviour: StubBehaviour = {};
  const names: string[] = [];
  if (!text.includes('[[')) return { ok: true, behaviour, names };
  for (const match of text.matchAll(DIRECTIVE_PATTERN)) {
    const name = match[1] ?? '';
    const raw = match[2];
    const choice = CHOICE_DIRECTIVES[name];
    if (choice) {
      if (raw === undefined || !choice.values.includes(raw))
        return {
          ok: false,
          message: `Stub directive [[${name}=${raw ?? ''}]] needs one of: ${choice.values.join(', ')}.`,
        };
      choice.set(behaviour, raw);
      names.push(name);
      continue;
    }
    const spec = DIRECTIVES[name];
    if (!spec) return { ok: false, message: `Unknown stub directive [[${name}]].` };
    if (!spec.range) {
      if (raw !== undefined)
        return { ok: false, message: `Stub directive [[${name}]] takes no value.` };
      spec.set(behaviour);
    } else {
      const value = raw === undefined || !/^\d+$/.test(raw) ? Number.NaN : Number(raw);
      const [min, max] = spec.range;
      if (!Number.isSafeInteger(value) || value < min || value > max) {
        return {
          ok: false,
          message: `Stub directive [[${name}=${raw ?? ''}]] needs an integer from ${min} to ${max}.`,
        };
      }
      spec.set(behaviour, value);
    }
    names.push(name);
  }
  return { ok: true, behaviour, names };
}

/** The text of a message's content: a string, or the `text` of its text parts. */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  let text = '';
  for (const part of content as unknown[]) {
    if (typeof part === 'object' && part !== null && 'text' in part) {
      const partText: unknown = part.text;
      if (typeof partText === 'string') text += partText;
    }
  }
  return text;
}

/** The text of the last message whose role is `user`, or '' when there is none. */
export function lastUserText(messages: readonly unknown[]): string {
  for (let index = messages.length - 1; index >= 0; index--) {
    const message = messages[index];
    if (typeof message === 'object' && message !== null && 'role' in message) {
      if (message.role === 'user') return contentText((message as { content?: unknown }).content);
    }
  }
  return '';
}
