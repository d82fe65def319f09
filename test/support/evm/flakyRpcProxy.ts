import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * An HTTP proxy in front of a real JSON-RPC node that fails chosen requests in one of the ways
 * a provider does: an HTTP error status (a 503 from an overloaded gateway, a 429), a connection
 * dropped without an answer, or a JSON-RPC error from the node (a pruned node's "missing trie
 * node"). Everything else is forwarded as it is, batches included.
 */
export type RpcFault =
  | { httpStatus: number }
  | { dropConnection: true }
  | { rpcError: { code: number; message: string } };

export interface RpcCall {
  method: string;
  params: unknown[];
}

export interface FlakyRpcProxy {
  url: string;
  /**
   * Fails the next `times` requests holding a call that `match` picks. An HTTP status or a
   * dropped connection fails the whole request (a batch with it); an RPC error answers only
   * the matching calls of it.
   */
  failNext(match: (call: RpcCall) => boolean, fault: RpcFault, times?: number): void;
  /** Armed failures not yet used. */
  pendingFaults(): number;
  close(): Promise<void>;
}

/** An `eth_call` to `address` (any block). */
export function ethCallTo(address: string): (call: RpcCall) => boolean {
  return (call) =>
    call.method === 'eth_call' &&
    String((call.params[0] as { to?: string } | undefined)?.to).toLowerCase() ===
      address.toLowerCase();
}

export async function startFlakyRpcProxy(targetUrl: string): Promise<FlakyRpcProxy> {
  let armed: { match: (call: RpcCall) => boolean; fault: RpcFault; times: number } | null = null;
  const sockets = new Set<Socket>();
  const server = createServer((request, response) => {
    void (async () => {
      const body = await readBody(request);
      const parsed = JSON.parse(body) as
        (RpcCall & { id: unknown }) | Array<RpcCall & { id: unknown }>;
      const calls = Array.isArray(parsed) ? parsed : [parsed];
      const fault = armed && calls.some(armed.match) ? armed : null;
      if (fault) {
        fault.times -= 1;
        if (fault.times === 0) armed = null;
        if ('dropConnection' in fault.fault) {
          request.socket.destroy();
          return;
        }
        if ('httpStatus' in fault.fault) {
          response.writeHead(fault.fault.httpStatus, { 'content-type': 'text/html' });
          response.end(`<html><body>${fault.fault.httpStatus} failing on purpose</body></html>`);
          return;
        }
      }
      const upstream = await fetch(targetUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      let answer = await upstream.text();
      if (fault && 'rpcError' in fault.fault) {
        const error = fault.fault.rpcError;
        const replies = JSON.parse(answer) as Array<{ id: unknown }> | { id: unknown };
        const rewrite = (reply: { id: unknown }) => {
          const call = calls.find((c) => c.id === reply.id);
          return call && fault.match(call) ? { jsonrpc: '2.0', id: reply.id, error } : reply;
        };
        answer = JSON.stringify(Array.isArray(replies) ? replies.map(rewrite) : rewrite(replies));
      }
      response.writeHead(upstream.status, { 'content-type': 'application/json' });
      response.end(answer);
    })().catch((error: unknown) => {
      response.writeHead(500, { 'content-type': 'text/plain' });
      response.end(String(error));
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    failNext(match, fault, times = 1) {
      armed = { match, fault, times };
    },
    pendingFaults: () => armed?.times ?? 0,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
