/** How one doctor check came out: `fail` stops a deployment, `warn` deserves a look. */
export type CheckStatus = 'ok' | 'warn' | 'fail';

/** One line of the doctor's report: what was checked, how it went, and what to do about it. */
export interface DoctorCheck {
  /** What part of the deployment: `config`, `database`, a network's name, `provider openai`... */
  area: string;
  status: CheckStatus;
  /** What was found, in plain words. */
  message: string;
  /** What to do about a warning or a failure. */
  fix?: string;
}

export function ok(area: string, message: string): DoctorCheck {
  return { area, status: 'ok', message };
}

export function warn(area: string, message: string, fix: string): DoctorCheck {
  return { area, status: 'warn', message, fix };
}

export function fail(area: string, message: string, fix: string): DoctorCheck {
  return { area, status: 'fail', message, fix };
}

/**
 * The first line of an error's message and of its causes (a fetch error's reason sits two
 * causes deep: "HTTP request failed: fetch failed: connect ECONNREFUSED 127.0.0.1:8545").
 * Enough to act on; never a stack, a request body or a full URL.
 */
export function reasonOf(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current !== undefined && current !== null; depth += 1) {
    const text = (current instanceof Error ? current.message : String(current))
      .split('\n')[0]!
      .trim()
      .replace(/\.$/, '');
    if (text && !parts.some((part) => part.includes(text))) parts.push(text);
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(': ') || 'unknown error';
}

/** Scheme and host of a URL: paths and queries often carry API keys, so they are never shown. */
export function hostOf(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return '(not a URL)';
  }
}

/** Rejects after `timeoutMs` with a message naming what did not answer. */
export async function withTimeout<T>(
  work: Promise<T>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${what} did not answer within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
