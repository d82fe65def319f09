import { runCli } from '../../src/cli/main.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  json: () => Record<string, unknown>;
}

/** Runs `lingxi <args> --config <file>` in-process and captures what a shell would see. */
export async function runLingxi(configFile: string, args: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await runCli([...args, '--config', configFile], {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
  });
  return { code, stdout, stderr, json: () => JSON.parse(stdout) as Record<string, unknown> };
}
