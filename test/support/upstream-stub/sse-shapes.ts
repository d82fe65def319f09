/**
 * `[[sse=SHAPE]]`: a streamed answer's events (as `chatCompletionEvents` writes them: the role
 * chunk, a chunk per visible token, the finish_reason chunk, the usage chunk when asked for,
 * `[DONE]`) reshaped the way some provider (or proxy in front of one) sends them. Each element
 * of the result is one write on the socket (with [[delay=MS]] before each), so a shape can
 * cut an event where it likes.
 *
 *   crlf           every line ends in CRLF
 *   no-space       `data:` with no space after the colon
 *   multiline      each JSON chunk spread over several `data:` lines (one event still)
 *   comments       `: keep-alive` comment lines before every event
 *   fields         `event: message`, `id:` and `retry:` lines in every event
 *   split-utf8     each token's text ends in "é€😀", and every event is written in two
 *                  parts cut inside the "€" (a multi-byte UTF-8 character)
 *   long-event     the first token's text is followed by 500 000 "é" (1 MB in one event)
 *   usage-early    the usage chunk comes before the last token's chunk
 *   usage-twice    a usage chunk counting 1 completion token after the first token (as a
 *                  provider reporting usage as it goes), and the final one as usual
 *   usage-split    usage reported in two parts (as proxies mapping Anthropic's message_start
 *                  and message_delta send it): the role chunk carries the prompt's counts
 *                  (prompt_tokens and its details, completion_tokens 0, total_tokens the
 *                  prompt's), the usage chunk the completion's (completion_tokens and its
 *                  details, total_tokens the same), without prompt_tokens
 *   done-twice     `[DONE]` twice
 *   done-spaced    `data: [DONE] \t` (whitespace after it, which the openai SDK accepts)
 *   no-done        no `[DONE]`: the stream just ends after the usage chunk
 *   after-done     in the same write as `[DONE]`, after it: a token chunk "late " and a usage
 *                  chunk counting 1000 more completion tokens
 *   error-event    the role chunk and the first two tokens, then an OpenAI error object as a
 *                  data event (`{"error":{...}}`), then the end
 *   two-choices    every token chunk also for choice 1 (its text "alt0 alt1 …"), interleaved
 *   usage-strings  the usage chunk's counts as strings of digits
 *   usage-negative the usage chunk's completion_tokens is -5
 *   usage-huge     the usage chunk's completion_tokens is 10^15 (far beyond any hold)
 *   endless-event  the role chunk and the first token, then an event that never ends: its
 *                  `data:` line grows by 64 KiB a write, without end, until the client leaves
 *   tier-late      the role chunk reports the tier served as usual ("default" unless asked
 *                  otherwise); every later chunk (the usage chunk too) reports "priority"
 */
export const SSE_SHAPES = [
  'crlf',
  'no-space',
  'multiline',
  'comments',
  'fields',
  'split-utf8',
  'long-event',
  'usage-early',
  'usage-twice',
  'usage-split',
  'done-twice',
  'done-spaced',
  'no-done',
  'after-done',
  'error-event',
  'two-choices',
  'usage-strings',
  'usage-negative',
  'usage-huge',
  'endless-event',
  'tier-late',
] as const;

export type SseShape = (typeof SSE_SHAPES)[number];

/** The text each token of a `split-utf8` stream carries after its usual "tokK". */
export const MULTIBYTE_SUFFIX = 'é€😀';
/** What a `long-event` stream adds to its first token's text. */
export const LONG_EVENT_TEXT = 'é'.repeat(500_000);

const DONE = 'data: [DONE]\n\n';

/** A token's chunk event, as `chatCompletionEvents` writes it. */
const isToken = (event: string) => /"delta":\{"content":"tok\d+ "\}/.test(event);

/** Among a stream's writes: a pause (2 ms) before the next, so the writes around it arrive as two reads. */
export const PAUSE: unique symbol = Symbol('pause');
export type StubWrite = string | Buffer | typeof PAUSE;

/**
 * `[[event-chars=N]]`: the first token's event padded with `x` after its text, so that its
 * line (`data: ` included, its line breaks not) is N characters (all ASCII: N bytes too);
 * with `[[event-split=K]]` (0 < K < the event's bytes, its "\n\n" included) it is written in
 * two writes, cut after its K-th byte, with a `PAUSE` between them; else in one. Null when N
 * is below the event's own size.
 */
export function sizedEvent(
  events: readonly string[],
  chars: number,
  splitAt: number,
): StubWrite[] | null {
  const first = events.findIndex(isToken);
  const event = events[first]!;
  const pad = chars - event.indexOf('\n');
  if (pad < 0) return null;
  const sized = event.replace(/"content":"(tok\d+ )"/, `"content":"$1${'x'.repeat(pad)}"`);
  const writes: StubWrite[] =
    splitAt > 0 && splitAt < sized.length
      ? [sized.slice(0, splitAt), PAUSE, sized.slice(splitAt)]
      : [sized];
  return [...events.slice(0, first), ...writes, ...events.slice(first + 1)];
}

export function shapeEvents(shape: SseShape, events: readonly string[]): Iterable<string | Buffer> {
  const usageAt = events.findIndex((event) => event.includes('"usage":{'));
  const withUsage = (rewrite: (usage: Record<string, unknown>) => Record<string, unknown>) => {
    const usageEvent = events[usageAt]!;
    const chunk = JSON.parse(usageEvent.slice('data: '.length)) as Record<string, unknown>;
    const usage = rewrite(chunk['usage'] as Record<string, unknown>);
    return `data: ${JSON.stringify({ ...chunk, usage })}\n\n`;
  };
  const replaced = (index: number, event: string) =>
    events.map((original, at) => (at === index ? event : original));
  switch (shape) {
    case 'crlf':
      return events.map((event) => event.replace(/\n/g, '\r\n'));
    case 'no-space':
      return events.map((event) => event.replace(/^data: /gm, 'data:'));
    case 'multiline':
      return events.map((event) =>
        event.startsWith('data: {') ? event.replace(/,"/g, ',\ndata: "') : event,
      );
    case 'comments':
      return [
        ': OPENROUTER PROCESSING\n\n',
        ...events.flatMap((event) => [': keep-alive\n', event]),
      ];
    case 'fields':
      return events.map((event, index) => `event: message\nid: ${index}\nretry: 3000\n${event}`);
    case 'split-utf8':
      return events.flatMap((event) => {
        const bytes = Buffer.from(
          event.replace(/"content":"(tok\d+) "/, `"content":"$1${MULTIBYTE_SUFFIX} "`),
          'utf8',
        );
        const euro = bytes.indexOf(Buffer.from('€', 'utf8'));
        return euro === -1 ? [bytes] : [bytes.subarray(0, euro + 1), bytes.subarray(euro + 1)];
      });
    case 'long-event': {
      const first = events.findIndex(isToken);
      return replaced(
        first,
        events[first]!.replace(/"content":"tok0 "/, `"content":"tok0 ${LONG_EVENT_TEXT}"`),
      );
    }
    case 'usage-early': {
      const lastToken = events.findLastIndex(isToken);
      const moved = events.filter((_, index) => index !== usageAt);
      moved.splice(lastToken, 0, events[usageAt]!);
      return moved;
    }
    case 'usage-twice': {
      const early = withUsage((usage) => ({
        ...usage,
        completion_tokens: 1,
        total_tokens: (usage['prompt_tokens'] as number) + 1,
      }));
      const first = events.findIndex(isToken);
      return [...events.slice(0, first + 1), early, ...events.slice(first + 1)];
    }
    case 'usage-split': {
      const chunkOf = (event: string) =>
        JSON.parse(event.slice('data: '.length)) as Record<string, unknown>;
      const full = chunkOf(events[usageAt]!)['usage'] as Record<string, unknown>;
      const prompt = full['prompt_tokens'] as number;
      const completion = full['completion_tokens'] as number;
      const first = {
        ...chunkOf(events[0]!),
        usage: {
          prompt_tokens: prompt,
          completion_tokens: 0,
          total_tokens: prompt,
          ...pick(full, 'prompt_tokens_details'),
        },
      };
      const last = withUsage(() => ({
        completion_tokens: completion,
        total_tokens: completion,
        ...pick(full, 'completion_tokens_details'),
      }));
      return replaced(usageAt, last).map((event, index) =>
        index === 0 ? `data: ${JSON.stringify(first)}\n\n` : event,
      );
    }
    case 'done-twice':
      return [...events, DONE];
    case 'done-spaced':
      return events.map((event) => (event === DONE ? 'data: [DONE] \t\n\n' : event));
    case 'no-done':
      return events.filter((event) => event !== DONE);
    case 'after-done': {
      const late = events.find(isToken)!.replace(/"content":"tok\d+ "/, '"content":"late "');
      const more = withUsage((usage) => ({
        ...usage,
        completion_tokens: (usage['completion_tokens'] as number) + 1000,
        total_tokens: (usage['total_tokens'] as number) + 1000,
      }));
      return [...events.filter((event) => event !== DONE), DONE + late + more];
    }
    case 'error-event': {
      const error = {
        error: {
          message: 'The server had an error while processing your request.',
          type: 'server_error',
          param: null,
          code: null,
        },
      };
      return [...events.slice(0, 3), `data: ${JSON.stringify(error)}\n\n`];
    }
    case 'two-choices':
      return events.flatMap((event) =>
        event.includes('"choices":[{"index":0,')
          ? [
              event,
              event
                .replace('"choices":[{"index":0,', '"choices":[{"index":1,')
                .replace(/"content":"tok(\d+) "/, '"content":"alt$1 "'),
            ]
          : [event],
      );
    case 'usage-strings':
      return replaced(
        usageAt,
        withUsage(
          (usage) =>
            JSON.parse(JSON.stringify(usage).replace(/:(\d+)/g, ':"$1"')) as Record<
              string,
              unknown
            >,
        ),
      );
    case 'usage-negative':
      return replaced(
        usageAt,
        withUsage((usage) => ({ ...usage, completion_tokens: -5 })),
      );
    case 'endless-event': {
      const first = events.findIndex(isToken);
      return endlessEvent(events.slice(0, first + 1));
    }
    case 'usage-huge':
      return replaced(
        usageAt,
        withUsage((usage) => ({ ...usage, completion_tokens: 10 ** 15 })),
      );
    case 'tier-late':
      return events.map((event, index) =>
        index === 0 ? event : event.replace(/"service_tier":"[^"]*"/, '"service_tier":"priority"'),
      );
  }
}

/** `{[key]: record[key]}`, or `{}` when the record has no such key. */
function pick(record: Record<string, unknown>, key: string): Record<string, unknown> {
  return key in record ? { [key]: record[key] } : {};
}

/** `before`, then one `data:` line that never ends (the stub stops writing when the client leaves). */
function* endlessEvent(before: readonly string[]): Generator<string | Buffer> {
  yield* before;
  yield 'data: {"choices":[{"index":0,"delta":{"content":"';
  const filler = Buffer.alloc(64 * 1024, 'x');
  for (;;) yield filler;
}
