import { z } from 'zod';
import { badRequest } from '../errors.js';

const tokenCount = z.number().int('must be a whole number').positive('must be positive');

/** A content part is an object (`{"type": "text", "text": ...}`); its fields pass through. */
const contentPart = z.looseObject({}, { error: 'must be a content part (an object)' });

/** What the gateway needs to know of a chat request; every other field passes through untouched. */
export const chatRequestSchema = z.looseObject({
  model: z.string().min(1).max(200),
  messages: z
    .array(
      z.looseObject({
        role: z.string().min(1).max(64),
        content: z.union([z.string(), z.array(contentPart), z.null()]).optional(),
      }),
    )
    .min(1, 'must contain at least one message')
    .max(10_000),
  max_tokens: tokenCount.nullish(),
  max_completion_tokens: tokenCount.nullish(),
  // OpenAI's own limit; the hold multiplies the output cap by it.
  n: z.number().int().min(1).max(128).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional() }).nullish(),
});
export type ChatRequest = z.infer<typeof chatRequestSchema>;

/**
 * The `service_tier` values a request may ask for: the price table holds a model's standard
 * prices. `auto` (or no field) is the provider project's default tier, kept at `default` (see
 * docs/operating.md); OpenAI bills `flex` below standard, so the table's prices are safe for it;
 * `on_demand` is Groq's name for its standard tier.
 * Any other value is refused: `priority` is billed above standard, `scale` draws on prepaid
 * Scale Tier units, and a tier we do not know of has no price we could trust.
 */
const PRICED_REQUEST_TIERS: ReadonlySet<string> = new Set(['auto', 'default', 'flex', 'on_demand']);

/**
 * The `service_tier` values an answer may report for a call charged at table prices: the
 * standard tier (under OpenAI's name, and those of providers that name it otherwise: Google's
 * `standard`, Groq's `on_demand`) and flex. Any other reported tier may have been billed to us
 * above the table's prices.
 */
const PRICED_SERVED_TIERS: ReadonlySet<string> = new Set([
  'default',
  'flex',
  'standard',
  'on_demand',
]);

/** The tier an answer reports, when table prices may undercharge it (at most 64 characters); else null. */
export function unpricedServedTier(reported: unknown): string | null {
  if (reported == null) return null;
  if (typeof reported === 'string' && PRICED_SERVED_TIERS.has(reported)) return null;
  return typeof reported === 'string'
    ? reported.slice(0, 64)
    : JSON.stringify(reported).slice(0, 64);
}

/**
 * The first feature of a chat request whose fees the price table cannot express (it prices
 * text, cached, output and reasoning tokens only, at the provider's standard tier), with the
 * field that asks for it: audio in or out (billed per audio token, at several times the text
 * price), web search (a fee per call, on top of tokens; OpenRouter's `plugins` too) and a
 * service tier billed above standard (`service_tier: "priority"`). Such a call would be
 * undercharged, so it is refused; null when there is none.
 */
export function unpricedFeature(body: ChatRequest): { param: string; feature: string } | null {
  const modalities = body['modalities'];
  if (Array.isArray(modalities) && modalities.some((modality) => modality !== 'text'))
    return { param: 'modalities', feature: `output modalities other than text (audio)` };
  if (body['audio'] != null) return { param: 'audio', feature: 'audio output' };
  for (const [i, message] of body.messages.entries()) {
    if (!Array.isArray(message.content)) continue;
    for (const [j, part] of message.content.entries())
      if (part['type'] === 'input_audio')
        return { param: `messages.${i}.content.${j}`, feature: 'audio input (`input_audio`)' };
  }
  if (body['web_search_options'] != null)
    return { param: 'web_search_options', feature: 'web search' };
  // OpenRouter's plugins: web search (a fee per result) and file parsing (OCR, a fee per page).
  const plugins = body['plugins'];
  if (plugins != null && !(Array.isArray(plugins) && plugins.length === 0))
    return { param: 'plugins', feature: 'a provider plugin (web search, file parsing)' };
  return unpricedRequestTier(body);
}

/**
 * A request's `service_tier` when the price table does not price it (see
 * PRICED_REQUEST_TIERS), with its field; null when there is none or it is priced. The same
 * rule for every endpoint: no route may buy a dearer tier at standard prices.
 */
export function unpricedRequestTier(
  body: Record<string, unknown>,
): { param: string; feature: string } | null {
  const tier = body['service_tier'];
  if (tier != null && !(typeof tier === 'string' && PRICED_REQUEST_TIERS.has(tier)))
    return {
      param: 'service_tier',
      feature: `the service tier ${JSON.stringify(tier).slice(0, 64)} (only \`auto\`, \`default\`, \`flex\` and \`on_demand\` are priced)`,
    };
  return null;
}

export const embeddingRequestSchema = z.looseObject({
  model: z.string().min(1).max(200),
  input: z.union([
    z.string(),
    z.array(z.string()).min(1).max(4096),
    z.array(z.number().int()).min(1),
    z.array(z.array(z.number().int()).min(1)).min(1).max(4096),
  ]),
  encoding_format: z.enum(['float', 'base64']).optional(),
  dimensions: z.number().int().positive().optional(),
});
export type EmbeddingRequest = z.infer<typeof embeddingRequestSchema>;

/** Parses a JSON body against a schema; the first problem becomes a 400 naming the field. */
export function parseRequest<T>(schema: z.ZodType<T>, body: unknown): T {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest('the request body must be a JSON object');
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = deepestIssue(result.error.issues[0]!);
  const param = issue.path.map(String).join('.') || null;
  throw badRequest(`${param ? `${param}: ` : ''}${issue.message}`, param);
}

/**
 * For a value no option of a union accepts, the problem of the option that got furthest
 * into it (`messages.0.content.0`, not just `messages.0.content`), if one got in at all.
 */
function deepestIssue(issue: z.core.$ZodIssue): { path: PropertyKey[]; message: string } {
  if (issue.code !== 'invalid_union') return issue;
  let deepest: { path: PropertyKey[]; message: string } = issue;
  for (const option of issue.errors) {
    const first = option[0];
    if (!first || first.path.length === 0) continue;
    const inner = deepestIssue(first);
    if (inner.path.length + issue.path.length > deepest.path.length)
      deepest = { path: [...issue.path, ...inner.path], message: inner.message };
  }
  return deepest;
}
