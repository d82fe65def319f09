/**
 * Token bounds and estimates without a tokenizer.
 *
 * Upper bound: a token is at least `bytesPerTokenMin` bytes of text (1 unless configured:
 * `gateway.bytesPerTokenMin`), so a prompt has at most its JSON's UTF-8 bytes divided by it
 * in tokens (the JSON also covers roles, names and per-message overhead), plus a fixed
 * allowance per image (the model's `imageTokensMax`), whose cost does not show in its URL's
 * length. A `file` part (a PDF: its text and an image per page, or a `file_id`) cannot be
 * bounded from the request: a call that costs more than was held is charged in full, the
 * difference booked as the user's receivable.
 *
 * Estimate (used only when upstream sent no usage, and then the usage record says so):
 * about four bytes of text per token, rounded up.
 */

/**
 * The default allowance per image: above OpenAI's dearest, gpt-4o-mini's 2 833 + 5 667 per
 * 512 px tile, at most 8 tiles in high detail (48 169 tokens).
 */
export const IMAGE_TOKENS_MAX = 50_000;
const FIXED_OVERHEAD_TOKENS = 16;

export function promptTokensUpperBound(
  body: Record<string, unknown>,
  bytesPerTokenMin = 1,
  imageTokensMax = IMAGE_TOKENS_MAX,
): bigint {
  const relevant = {
    messages: body['messages'],
    tools: body['tools'],
    functions: body['functions'],
    tool_choice: body['tool_choice'],
    response_format: body['response_format'],
  };
  const json = JSON.stringify(relevant);
  const images = countImages(body['messages']);
  return BigInt(
    Math.ceil(Buffer.byteLength(json, 'utf8') / bytesPerTokenMin) +
      images * imageTokensMax +
      FIXED_OVERHEAD_TOKENS,
  );
}

/**
 * The most output tokens a Predicted Output (`prediction`) may add to one answer: OpenAI bills
 * the prediction's rejected tokens as completion tokens, on top of the answer (and its cap),
 * and at most all of them are rejected. Counted as the prompt is: its JSON's UTF-8 bytes
 * divided by `bytesPerTokenMin`; 0 without a prediction.
 */
export function predictionTokensUpperBound(prediction: unknown, bytesPerTokenMin = 1): bigint {
  if (prediction === undefined || prediction === null) return 0n;
  return BigInt(
    Math.ceil(Buffer.byteLength(JSON.stringify(prediction), 'utf8') / bytesPerTokenMin),
  );
}

/**
 * A prediction's text (its `content`: a string, or the `text` of its parts), for an estimate of
 * its tokens when upstream sends no usage: the gateway cannot tell which were rejected, so it
 * counts them all, as the provider may bill them.
 */
export function predictionText(prediction: unknown): string {
  return isRecord(prediction) ? textsOf(prediction['content']).join('\n') : '';
}

/** Embedding input: strings count their bytes (per `bytesPerTokenMin`); token-id arrays their length. */
export function embeddingTokensUpperBound(input: unknown, bytesPerTokenMin = 1): bigint {
  const items = Array.isArray(input) ? input : [input];
  let total = 0;
  for (const item of items) {
    if (typeof item === 'string')
      total += Math.ceil(Buffer.byteLength(item, 'utf8') / bytesPerTokenMin);
    else if (typeof item === 'number') total += 1;
    else if (Array.isArray(item)) total += item.length;
  }
  return BigInt(total + FIXED_OVERHEAD_TOKENS);
}

export function estimateTokens(text: string): bigint {
  return BigInt(Math.ceil(Buffer.byteLength(text, 'utf8') / 4));
}

/**
 * Embedding input's tokens when upstream sends no usage: a token id is one token (exactly,
 * as the hold counts it: its digits are not text), strings are estimated.
 */
export function estimateEmbeddingTokens(input: unknown): bigint {
  const texts: string[] = [];
  let ids = 0;
  for (const item of Array.isArray(input) ? input : [input]) {
    if (typeof item === 'string') texts.push(item);
    else if (typeof item === 'number') ids += 1;
    else if (Array.isArray(item)) ids += item.length;
  }
  return BigInt(ids) + (texts.length === 0 ? 0n : estimateTokens(texts.join('\n')));
}

/** The text of a chat request's messages (for an estimate of its prompt tokens). */
export function messagesText(messages: unknown): string {
  return contents(messages).flatMap(textsOf).join('\n');
}

/** A content's texts: the string, or the `text` of each of its parts. */
function textsOf(content: unknown): string[] {
  if (typeof content === 'string') return [content];
  if (!Array.isArray(content)) return [];
  return content.flatMap((part) =>
    isRecord(part) && typeof part['text'] === 'string' ? [part['text']] : [],
  );
}

function countImages(messages: unknown): number {
  let images = 0;
  for (const content of contents(messages))
    if (Array.isArray(content))
      for (const part of content) if (isRecord(part) && part['type'] === 'image_url') images += 1;
  return images;
}

/** The `content` of each message that is an object. */
function contents(messages: unknown): unknown[] {
  if (!Array.isArray(messages)) return [];
  return messages.filter(isRecord).map((message) => message['content']);
}

/**
 * What chat choices generated, as text for an estimate: of an answer's `message` or a chunk's
 * `delta`, its content, refusal and reasoning text, and the name and arguments of each tool
 * or function call (all of it output the provider bills).
 */
export function choicesText(choices: unknown): string {
  if (!Array.isArray(choices)) return '';
  let text = '';
  for (const choice of choices) {
    if (!isRecord(choice)) continue;
    const output = isRecord(choice['delta']) ? choice['delta'] : choice['message'];
    if (!isRecord(output)) continue;
    for (const key of ['content', 'refusal', 'reasoning_content', 'reasoning']) {
      const value = output[key];
      if (typeof value === 'string') text += value;
    }
    const calls = Array.isArray(output['tool_calls']) ? output['tool_calls'] : [];
    for (const call of calls) if (isRecord(call)) text += callText(call['function']);
    text += callText(output['function_call']);
  }
  return text;
}

function callText(call: unknown): string {
  if (!isRecord(call)) return '';
  const name = typeof call['name'] === 'string' ? call['name'] : '';
  const args = typeof call['arguments'] === 'string' ? call['arguments'] : '';
  return name + args;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The smaller of two token counts. */
export function minOf(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

/** The larger of two token counts. */
export function maxOf(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}
