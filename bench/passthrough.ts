/**
 * A bare pass-through for bench:gateway, as its own process: forwards each request to the
 * upstream given as its argument over keep-alive connections and pipes the answer back,
 * with no parsing, no keys, no metering. It is what "through a proxy at all" costs on this
 * machine, the baseline the gateway's throughput is compared with. Prints its URL.
 */
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';

const upstream = new URL(process.argv[2] ?? '');
const agent = new Agent({ keepAlive: true, maxSockets: 1024, scheduling: 'lifo' });

const server = createServer((req, res) => {
  const forward = request(
    {
      host: upstream.hostname,
      port: upstream.port,
      path: `${upstream.pathname.replace(/\/+$/, '')}${req.url!.replace(/^\/v1/, '')}`,
      method: req.method,
      agent,
      headers: {
        'content-type': req.headers['content-type'] ?? 'application/json',
        'content-length': req.headers['content-length'] ?? '0',
        authorization: 'Bearer bench-upstream',
      },
    },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  forward.on('error', () => res.destroy());
  req.pipe(forward);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
