import { connect, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/** A TCP proxy a test can break: to stand for a database host that goes away and comes back. */
export interface TcpProxy {
  /** host:port to connect to instead of the target. */
  address: string;
  /** Resets every connection open now (both sides). */
  cut(): void;
  /** While true, every new connection is reset at once (the host is unreachable). */
  refuse(on: boolean): void;
  /**
   * While true, what the target sends is dropped: requests still reach it and run (and
   * commit), but their answers never arrive, as when a link dies just after a commit.
   */
  swallowAnswers(on: boolean): void;
  /**
   * While true, what the target sends is kept back: requests reach it and run, and their
   * answers arrive, in order, once this is set to false again (a slow link).
   */
  holdAnswers(on: boolean): void;
  /** How many pieces of answer are kept back now (so a test can wait for one to arrive). */
  heldAnswers(): number;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<Socket>();
  let refusing = false;
  let swallowing = false;
  let holding = false;
  const held: Array<{ to: Socket; chunk: Buffer }> = [];
  const server = createServer((client) => {
    if (refusing) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      open.add(from);
      if (from === upstream)
        from.on('data', (chunk: Buffer) => {
          if (swallowing) return;
          if (holding) held.push({ to, chunk });
          else to.write(chunk);
        });
      else from.pipe(to);
      from.on('error', () => to.destroy());
      from.on('close', () => {
        open.delete(from);
        to.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    cut() {
      for (const socket of open) socket.resetAndDestroy();
    },
    refuse(on) {
      refusing = on;
    },
    swallowAnswers(on) {
      swallowing = on;
    },
    holdAnswers(on) {
      holding = on;
      if (!on) for (const { to, chunk } of held.splice(0)) to.write(chunk);
    },
    heldAnswers() {
      return held.length;
    },
    async close() {
      for (const socket of open) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
