import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/**
 * Misbehaving JSON-RPC endpoints for failover tests: a server that always answers an HTTP
 * error, and a proxy in front of a real node that rewrites chosen calls (a lagging head, a
 * provider's range limit, another chain id).
 */

export interface JsonRpcCall {
  id: number | string | null;
  method: string;
  params: unknown[];
}

/** What an interceptor answers instead of the node: a result or a JSON-RPC error. */
export type InterceptAnswer =
  { result: unknown } | { error: { code: number; message: string; data?: unknown } };

export interface TestRpcServer {
  url: string;
  /** Methods received, in order (each call of a batch counted). */
  readonly methods: string[];
  close(): Promise<void>;
}

/** Answers every request with `status` (500 by default) and a short text body. */
export async function startFailingRpcServer(status = 500): Promise<TestRpcServer> {
  const methods: string[] = [];
  const server = createServer((request, response) => {
    void readCalls(request).then((calls) => {
      methods.push(...calls.map((call) => call.method));
      response.writeHead(status, { 'content-type': 'text/plain' });
      response.end(`failing on purpose (${status})`);
    });
  });
  return listen(server, methods);
}

/** Accepts requests and never answers them: for timeouts. */
export async function startHangingRpcServer(): Promise<TestRpcServer> {
  const methods: string[] = [];
  const server = createServer((request) => {
    void readCalls(request).then((calls) => methods.push(...calls.map((call) => call.method)));
  });
  return listen(server, methods);
}

/**
 * Forwards JSON-RPC (single and batch) to `targetUrl`; a call for which `intercept` returns
 * an answer gets that answer instead and never reaches the node.
 */
export async function startRpcProxy(
  targetUrl: string,
  intercept: (
    call: JsonRpcCall,
  ) => InterceptAnswer | undefined | Promise<InterceptAnswer | undefined>,
): Promise<TestRpcServer> {
  const methods: string[] = [];
  const server = createServer((request, response) => {
    void handle(request, response).catch((error: unknown) => {
      response.writeHead(502, { 'content-type': 'text/plain' });
      response.end(String(error));
    });
  });

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const { calls, batch } = await readBody(request);
    methods.push(...calls.map((call) => call.method));
    const answers: Array<Record<string, unknown> | null> = await Promise.all(
      calls.map(async (call) => {
        const answer = await intercept(call);
        return answer ? { jsonrpc: '2.0', id: call.id, ...answer } : null;
      }),
    );
    const forwarded = calls.filter((_, index) => answers[index] === null);
    if (forwarded.length > 0) {
      const upstream = await fetch(targetUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(forwarded.map((call) => ({ jsonrpc: '2.0', ...call }))),
      });
      const replies = (await upstream.json()) as Array<
        { id: JsonRpcCall['id'] } & Record<string, unknown>
      >;
      for (const reply of replies) {
        const index = calls.findIndex(
          (call, position) => call.id === reply.id && answers[position] === null,
        );
        if (index >= 0) answers[index] = reply;
      }
    }
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify(batch ? answers : answers[0]));
  }

  return listen(server, methods);
}

/**
 * A load balancer in front of several nodes: each HTTP request (a single call or a whole batch)
 * goes to the one node `choose` picks from its calls, as a real balancer routes requests, never
 * the calls of one batch to different nodes.
 */
export async function startLoadBalancer(
  targetUrls: ReadonlyArray<string>,
  choose: (calls: ReadonlyArray<JsonRpcCall>) => number | Promise<number>,
): Promise<TestRpcServer> {
  const methods: string[] = [];
  const server = createServer((request, response) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      const body = Buffer.concat(chunks).toString('utf8');
      const parsed = JSON.parse(body) as JsonRpcCall | JsonRpcCall[];
      const calls = Array.isArray(parsed) ? parsed : [parsed];
      methods.push(...calls.map((call) => call.method));
      const upstream = await fetch(targetUrls[await choose(calls)]!, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      response.writeHead(upstream.status, { 'content-type': 'application/json' });
      response.end(await upstream.text());
    })().catch((error: unknown) => {
      response.writeHead(502, { 'content-type': 'text/plain' });
      response.end(String(error));
    });
  });
  return listen(server, methods);
}

async function readBody(
  request: IncomingMessage,
): Promise<{ calls: JsonRpcCall[]; batch: boolean }> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as
    Partial<JsonRpcCall> | Array<Partial<JsonRpcCall>>;
  const batch = Array.isArray(body);
  const calls = (batch ? body : [body]).map((call) => ({
    id: call.id ?? null,
    method: call.method ?? '',
    params: call.params ?? [],
  }));
  return { calls, batch };
}

async function readCalls(request: IncomingMessage): Promise<JsonRpcCall[]> {
  try {
    return (await readBody(request)).calls;
  } catch {
    return [];
  }
}

async function listen(server: Server, methods: string[]): Promise<TestRpcServer> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return {
    url: `http://127.0.0.1:${address.port}`,
    methods,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A URL nothing listens on (port 9 on loopback: connection refused at once). */
export const DEAD_RPC_URL = 'http://127.0.0.1:9';
