import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { ConfigError, parseConfig } from '../../src/config/load.js';

/**
 * The production files agree with each other and with the code: the example config is valid
 * with the example environment, every secret it names is in .env.example, compose runs one
 * watcher per network of the example, and the Dockerfile copies what the build compiles.
 */

const read = (path: string) => readFileSync(path, 'utf8');

function envExample(): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of read('.env.example').split('\n')) {
    const match = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (match) vars.set(match[1]!, match[2]!);
    else expect(line === '' || line.startsWith('#'), `.env.example line: ${line}`).toBe(true);
  }
  return vars;
}

const exampleConfig = JSON.parse(read('lingxi.config.example.json')) as {
  networks: Array<{ name: string }>;
};

function composeCommands(): Map<string, string[]> {
  const commands = new Map<string, string[]>();
  let service: string | null = null;
  for (const line of read('docker-compose.yml').split('\n')) {
    const header = /^ {2}([a-z0-9-]+):\s*$/.exec(line);
    if (header) service = header[1]!;
    const command = /^ {4}command: (\[.*\])\s*$/.exec(line);
    if (command && service) commands.set(service, JSON.parse(command[1]!.replaceAll("'", '"')));
  }
  return commands;
}

test('the example config is valid with the example environment (its xpubs filled in), and names no secret .env.example lacks', () => {
  const env = envExample();
  // The placeholder xpubs stop the service, naming the field, until they are replaced.
  expect(() => parseConfig(exampleConfig, Object.fromEntries(env))).toThrow(ConfigError);
  expect(() => parseConfig(exampleConfig, Object.fromEntries(env))).toThrow(
    /^config wallets\.evmXpub: the EVM extended public key is not a Base58Check extended key/,
  );
  const xpubs = mnemonicToAccountXpubs(
    'test test test test test test test test test test test junk',
  );
  const config = parseConfig(exampleConfig, {
    ...Object.fromEntries(env),
    EVM_XPUB: xpubs.evmXpub,
    TRON_XPUB: xpubs.tronXpub,
  });
  expect(config.networks.map((n) => n.name)).toEqual([
    'ethereum',
    'bsc',
    'polygon',
    'arbitrum',
    'base',
    'tron',
  ]);
  // BSC's USDT has 18 decimals: USDT's scale must be widened for it.
  const bscUsdt = config.networks
    .find((n) => n.name === 'bsc')!
    .assets.find((a) => a.symbol === 'USDT')!;
  expect(bscUsdt.decimals).toBe(18);
  expect(config.currencies).toContainEqual({ code: 'USDT', scale: 18 });

  const named = new Set(
    [...read('lingxi.config.example.json').matchAll(/"env:([A-Z0-9_]+)"/g)].map((m) => m[1]!),
  );
  for (const name of named) expect(env.has(name), `${name} in .env.example`).toBe(true);
  // The rest of .env.example is what compose itself reads.
  expect([...env.keys()].filter((name) => !named.has(name))).toEqual(['POSTGRES_PASSWORD']);
  expect(read('docker-compose.yml')).toContain('${POSTGRES_PASSWORD:?');
});

test('compose runs two http instances, one watcher per network of the example, and one cron', () => {
  const commands = composeCommands();
  expect(commands.get('http-1')).toEqual(['serve']);
  expect(commands.get('http-2')).toEqual(['serve']);
  // Watchers and cron serve /metrics and the probe the shared healthcheck asks for on 9464.
  expect(commands.get('cron')).toEqual(['cron', '--metrics-port', '9464']);
  const watched = [...commands.values()]
    .filter((command) => command[0] === 'watch')
    .map((command) => {
      expect(command).toHaveLength(5);
      expect(command[1]).toBe('--network');
      expect(command.slice(3)).toEqual(['--metrics-port', '9464']);
      return command[2];
    });
  expect(watched.sort()).toEqual(exampleConfig.networks.map((n) => n.name).sort());
  const compose = read('docker-compose.yml');
  expect(compose).toContain("- '8080:8080'");
  expect(compose).toContain("- '8081:8080'");
  expect(compose).toContain('./lingxi.config.json:/app/lingxi.config.json:ro');
  expect(compose).toContain('env_file: .env');
  expect(compose).toContain("fetch('http://127.0.0.1:9464/livez')");
});

test('the Dockerfile builds what tsconfig.build.json compiles and runs bin/lingxi.js as a non-root user', () => {
  const dockerfile = read('Dockerfile');
  const build = JSON.parse(read('tsconfig.build.json')) as { include: string[] };
  for (const dir of build.include) expect(dockerfile).toContain(`COPY ${dir} ./${dir}`);
  expect(dockerfile).toContain('COPY bin ./bin');
  // The dashboard's static files are not TypeScript: they are copied beside the build.
  expect(dockerfile).toContain('cp -r src/http/dashboard/static dist/src/http/dashboard/static');
  expect(dockerfile).toMatch(/^FROM \$\{NODE_IMAGE\} AS runtime$/m);
  expect(dockerfile).toContain('ARG NODE_IMAGE=node:20-bookworm-slim');
  expect(dockerfile).toContain('npm ci --omit=dev');
  expect(dockerfile).toMatch(/^USER node$/m);
  expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "bin\/lingxi\.js"\]$/m);
  expect(dockerfile).toMatch(/^HEALTHCHECK .*\n.*\/livez/m);
  // The build context keeps what the build needs and never carries secrets.
  const ignored = read('.dockerignore')
    .split('\n')
    .filter((line) => line && !line.startsWith('#'));
  for (const needed of [...build.include, 'bin', 'package.json', 'package-lock.json'])
    expect(ignored).not.toContain(needed);
  for (const secret of ['.env', 'lingxi.config.json']) expect(ignored).toContain(secret);
});
