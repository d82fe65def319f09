import { SingleBar } from 'cli-progress';

/** How the demo talks: a line per step with its time, details under it, a bar while waiting. */
export interface Narrator {
  step<T>(title: string, work: () => Promise<T>): Promise<T>;
  detail(text: string): void;
  /** Runs `work`, showing a bar of `total`; `work` reports progress and a status line. */
  progress<T>(
    title: string,
    total: number,
    work: (update: (done: number, status: string) => void) => Promise<T>,
  ): Promise<T>;
  done(lines: string[]): void;
}

export function createNarrator(options: {
  interactive: boolean;
  write: (text: string) => void;
}): Narrator {
  const { write, interactive } = options;
  const green = (text: string) => (interactive ? `\u001b[32m${text}\u001b[0m` : text);
  const dim = (text: string) => (interactive ? `\u001b[2m${text}\u001b[0m` : text);
  let count = 0;
  return {
    async step(title, work) {
      count += 1;
      const started = performance.now();
      if (interactive) write(`  …  ${count}. ${title}`);
      try {
        const result = await work();
        const ms = Math.round(performance.now() - started);
        write(
          `${interactive ? '\r' : ''}${green('  ✔')}  ${count}. ${title} ${dim(`(${ms} ms)`)}\n`,
        );
        return result;
      } catch (error) {
        write(`${interactive ? '\r' : ''}  ✘  ${count}. ${title}\n`);
        throw error;
      }
    },
    detail(text) {
      write(dim(`        ${text}\n`));
    },
    async progress(title, total, work) {
      count += 1;
      const started = performance.now();
      const bar = interactive
        ? new SingleBar({
            format: `  …  ${count}. ${title} [{bar}] {value}/{total} credited  {status}`,
            hideCursor: true,
            clearOnComplete: true,
            barsize: 20,
          })
        : null;
      bar?.start(total, 0, { status: '' });
      let last = '';
      const result = await work((done, status) => {
        bar?.update(done, { status: status.slice(0, 90) });
        if (!interactive && status !== last) write(dim(`        ${status}\n`));
        last = status;
      });
      bar?.stop();
      write(
        `${green('  ✔')}  ${count}. ${title} ${dim(`(${Math.round(performance.now() - started)} ms)`)}\n`,
      );
      return result;
    },
    done(lines) {
      write('\n');
      for (const line of lines) write(`  ${line}\n`);
    },
  };
}
