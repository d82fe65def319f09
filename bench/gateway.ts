/**
 * bench:gateway: the same chat calls straight to the upstream stub, through a bare
 * pass-through proxy, and through the gateway, at 1, 64 and 256 concurrent clients, streaming
 * and not. Reports per-call latency p50/p99, the latency the gateway adds (gateway minus
 * direct), and throughput (gateway / pass-through, gateway / direct). The stub, the
 * pass-through (bench/passthrough.ts) and the gateway (`lingxi serve`) run as their own
 * processes; this process only generates load. Then the same at a fixed rate (BENCH_PACED_RATE
 * calls/s, default 100, from 64 callers) that no path saturates: the latency a hop adds to a
 * call, rather than how long calls queue when the machine is full. Uses DATABASE_URL's server (default: the local PostgreSQL).
 * BENCH_SECONDS (default 5) sets the length of each cell.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'node:http';
import {
  closedLoop,
  fmt,
  freshDatabase,
  measureCpu,
  pacedLoop,
  type LoadResult,
} from './support.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 5);
const CONCURRENCY = [1, 64, 256];
/** Calls per second of the paced cells: well below what each path sustains here. */
const PACED_RATE = Number(process.env['BENCH_PACED_RATE'] ?? 100);
const ADMIN = 'bench-admin-token-0123456789';
const children: ChildProcess[] = [];

const agent = new Agent({ keepAlive: true, maxSockets: 512 });

/** POSTs with a keep-alive agent and reads the whole answer (an SSE stream to its end). */
function post(
  url: string,
  key: string,
  payload: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent,
        headers: {
          authorization: `Bearer ${key}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function startProcess(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ child: ChildProcess; firstLine: Promise<string> }> {
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const firstLine = new Promise<string>((resolve) => {
    let buffer = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      if (buffer.includes('\n')) resolve(buffer.split('\n')[0]!.trim());
    });
  });
  return { child, firstLine };
}

try {
  const stub = await startProcess(['--import', 'tsx', 'bench/stub-server.ts']);
  const stubUrl = await stub.firstLine;
  const passthrough = await startProcess(['--import', 'tsx', 'bench/passthrough.ts', stubUrl]);
  const passthroughUrl = await passthrough.firstLine;

  const databaseUrl = await freshDatabase('lingxi_bench_gateway');
  const dir = mkdtempSync(join(tmpdir(), 'lingxi-bench-'));
  const configFile = join(dir, 'lingxi.config.json');
  const port = 18_000 + Math.floor(Math.random() * 1000);
  writeFileSync(
    configFile,
    JSON.stringify({
      http: { host: '127.0.0.1', port },
      database: { url: databaseUrl, poolSize: 20 },
      adminToken: ADMIN,
      log: { level: 'warn' },
      providers: [{ name: 'stub', baseUrl: stubUrl, apiKey: 'bench-upstream', timeoutMs: 30_000 }],
      models: [
        {
          id: 'gpt-4o-mini',
          provider: 'stub',
          upstreamModel: 'gpt-4o-mini',
          pricePer1M: { input: '0.15', cachedInput: '0.075', output: '0.6' },
          maxOutputTokensDefault: 64,
        },
      ],
      gateway: { rateLimit: { requestsPerMinute: 10_000_000, tokensPerMinute: 1_000_000_000 } },
      ...(process.env['BENCH_LEDGER_LANES']
        ? { ledger: { batchConcurrency: Number(process.env['BENCH_LEDGER_LANES']) } }
        : {}),
    }),
  );
  const gatewayProcess = await startProcess(
    [
      ...(process.env['GATEWAY_NODE_OPTIONS']?.split(' ') ?? []),
      'bin/lingxi.js',
      'serve',
      '--config',
      configFile,
    ],
    {
      LINGXI_FROM_SOURCE: '1',
      DATABASE_URL: '',
    },
  );
  const gateway = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i += 1) {
    const ready = await fetch(`${gateway}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (i > 300) throw new Error('the gateway did not start');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  void gatewayProcess;

  // 64 customers with a large balance each; clients take keys round-robin.
  const admin = (path: string, body: unknown) =>
    fetch(`${gateway}/admin${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    }).then((r) => r.json() as Promise<Record<string, string>>);
  const keys: string[] = [];
  for (let i = 0; i < 64; i += 1) {
    const user = await admin('/users', { telegramId: 500_000 + i });
    await admin(`/users/${user['id']}/adjustments`, { amount: '1000000', reason: 'bench funds' });
    keys.push((await admin(`/users/${user['id']}/keys`, {}))['key']!);
  }

  const body = (stream: boolean) =>
    JSON.stringify({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Say hi [[tokens=16]]' }],
      max_tokens: 32,
      stream,
    });
  const call = async (base: string, key: string, stream: boolean) => {
    const { status, text } = await post(`${base}/chat/completions`, key, body(stream));
    if (status !== 200 || (stream && !text.includes('[DONE]'))) throw new Error(`status ${status}`);
  };

  const rows: Array<{
    stream: boolean;
    callers: number;
    direct: LoadResult;
    passthrough: LoadResult;
    gateway: LoadResult;
    /** Cores each process used during the measured run of each path. */
    cpu: Record<'passthrough' | 'gateway', Record<string, number | null>>;
  }> = [];
  // BENCH_CELLS=json:64,stream:1 runs only those cells (for profiling).
  const only = process.env['BENCH_CELLS']?.split(',');
  for (const stream of [false, true]) {
    for (const callers of CONCURRENCY) {
      if (only && !only.includes(`${stream ? 'stream' : 'json'}:${callers}`)) continue;
      // Warm both paths (connections, JIT) before measuring.
      await closedLoop(callers, 1, () => call(stubUrl, 'bench-upstream', stream));
      const direct = await closedLoop(callers, SECONDS, () =>
        call(stubUrl, 'bench-upstream', stream),
      );
      await closedLoop(callers, 1, () => call(passthroughUrl, 'bench-upstream', stream));
      const bare = await measureCpu(
        { proxy: passthrough.child.pid!, stub: stub.child.pid!, load: process.pid },
        () => closedLoop(callers, SECONDS, () => call(passthroughUrl, 'bench-upstream', stream)),
      );
      await closedLoop(callers, 1, (c) => call(`${gateway}/v1`, keys[c % keys.length]!, stream));
      const through = await measureCpu(
        { proxy: gatewayProcess.child.pid!, stub: stub.child.pid!, load: process.pid },
        () =>
          closedLoop(callers, SECONDS, (c) =>
            call(`${gateway}/v1`, keys[c % keys.length]!, stream),
          ),
      );
      rows.push({
        stream,
        callers,
        direct,
        passthrough: bare.result,
        gateway: through.result,
        cpu: { passthrough: bare.cores, gateway: through.cores },
      });
      console.error(
        `${stream ? 'stream' : 'json'} x${callers}: direct ${fmt(direct.perSecond, 0)}/s, pass-through ${fmt(bare.result.perSecond, 0)}/s, gateway ${fmt(through.result.perSecond, 0)}/s (errors ${bare.result.errors + through.result.errors})`,
      );
    }
  }

  const paced: Array<{
    stream: boolean;
    direct: LoadResult;
    passthrough: LoadResult;
    gateway: LoadResult;
  }> = [];
  for (const stream of [false, true]) {
    if (only && !only.includes(`${stream ? 'stream' : 'json'}:paced`)) continue;
    // Each path warmed first (connections, JIT, caches), as in the cells above.
    const run = async (work: (c: number) => Promise<void>) => {
      await closedLoop(64, 1, work);
      return pacedLoop(64, SECONDS, PACED_RATE, work);
    };
    const direct = await run(() => call(stubUrl, 'bench-upstream', stream));
    const bare = await run(() => call(passthroughUrl, 'bench-upstream', stream));
    const through = await run((c) => call(`${gateway}/v1`, keys[c % keys.length]!, stream));
    paced.push({ stream, direct, passthrough: bare, gateway: through });
    console.error(
      `${stream ? 'stream' : 'json'} paced ${PACED_RATE}/s: gateway p50 ${fmt(through.p50Ms, 2)} ms (direct ${fmt(direct.p50Ms, 2)})`,
    );
  }

  const cell = (r: LoadResult) =>
    `${fmt(r.perSecond, 0)} | ${fmt(r.p50Ms, 2)} / ${fmt(r.p99Ms, 2)}`;
  console.log(
    '| mode | clients | direct calls/s | p50 / p99 ms | pass-through calls/s | p50 / p99 ms | gateway calls/s | p50 / p99 ms | added p50 / p99 ms | gateway / pass-through | gateway / direct | errors |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(
      `| ${r.stream ? 'stream' : 'json'} | ${r.callers} | ${cell(r.direct)} | ${cell(r.passthrough)} | ${cell(r.gateway)} | ${fmt(r.gateway.p50Ms - r.direct.p50Ms, 2)} / ${fmt(r.gateway.p99Ms - r.direct.p99Ms, 2)} | ${fmt((100 * r.gateway.perSecond) / r.passthrough.perSecond, 0)}% | ${fmt((100 * r.gateway.perSecond) / r.direct.perSecond, 0)}% | ${r.passthrough.errors + r.gateway.errors} |`,
    );
  }
  if (rows.some((r) => r.cpu.gateway['proxy'] != null)) {
    console.log(
      "\nCPU by process during each measured run (cores, from /proc), and the proxy process's CPU per call.\n",
    );
    console.log(
      '| mode | clients | path | proxy process | PostgreSQL | stub | load generator | proxy CPU ms / call |',
    );
    console.log('|---|---:|---|---:|---:|---:|---:|---:|');
    const cores = (value: number | null | undefined) => (value == null ? '-' : fmt(value, 2));
    for (const r of rows) {
      for (const path of ['passthrough', 'gateway'] as const) {
        const used = r.cpu[path];
        const perCall = used['proxy'] == null ? null : (1000 * used['proxy']) / r[path].perSecond;
        console.log(
          `| ${r.stream ? 'stream' : 'json'} | ${r.callers} | ${path === 'gateway' ? 'gateway' : 'pass-through'} | ${cores(used['proxy'])} | ${cores(used['postgres'])} | ${cores(used['stub'])} | ${cores(used['load'])} | ${perCall === null ? '-' : fmt(perCall, 3)} |`,
        );
      }
    }
  }
  if (paced.length > 0) {
    const latency = (r: LoadResult) => `${fmt(r.p50Ms, 2)} / ${fmt(r.p99Ms, 2)}`;
    console.log(
      `\nPaced: ${PACED_RATE} calls/s from 64 callers (latency from when each call was due).\n`,
    );
    console.log(
      '| mode | direct p50 / p99 ms | pass-through p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms | errors |',
    );
    console.log('|---|---:|---:|---:|---:|---:|');
    for (const r of paced) {
      console.log(
        `| ${r.stream ? 'stream' : 'json'} | ${latency(r.direct)} | ${latency(r.passthrough)} | ${latency(r.gateway)} | ${fmt(r.gateway.p50Ms - r.direct.p50Ms, 2)} / ${fmt(r.gateway.p99Ms - r.direct.p99Ms, 2)} | ${r.direct.errors + r.passthrough.errors + r.gateway.errors} |`,
      );
    }
  }
} finally {
  for (const child of children) {
    child.kill('SIGTERM');
    await Promise.race([once(child, 'exit'), new Promise((resolve) => setTimeout(resolve, 5000))]);
  }
}
