import { z } from 'zod';
import { badRequest } from '../errors.js';

const tokenCount = z.number().int('must be a whole number').positive('must be positive');

/** What the gateway needs to know of a chat request; every other field passes through untouched. */
export const chatRequestSchema = z.looseObject({
  model: z.string().min(1).max(200),
  messages: z
    .array(
      z.looseObject({
        role: z.string().min(1).max(64),
        content: z.union([z.string(), z.array(z.unknown()), z.null()]).optional(),
      }),
    )
    .min(1, 'must contain at least one message')
    .max(10_000),
  max_tokens: tokenCount.nullish(),
  max_completion_tokens: tokenCount.nullish(),
  n: z.number().int().min(1).max(16).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional() }).nullish(),
});
export type ChatRequest = z.infer<typeof chatRequestSchema>;

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
  const issue = result.error.issues[0]!;
  const param = issue.path.map(String).join('.') || null;
  throw badRequest(`${param ? `${param}: ` : ''}${issue.message}`, param);
}
