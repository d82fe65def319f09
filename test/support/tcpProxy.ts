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
  /**
   * A link that dies without a reset (a network partition, a failover behind a virtual IP):
   * while on, no byte moves either way, and neither end hears that the other closed; no socket
   * is closed. By default on the connections open now and on new ones (a new connection gets
   * no answer); with `openOnly`, new connections work (the failover's new server answers).
   * Off: the link is back, as TCP would bring it: what was kept back is delivered, in order,
   * and a close that happened meanwhile reaches the other end.
   */
  blackhole(on: boolean, options?: { openOnly?: boolean }): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<Socket>();
  let refusing = false;
  let swallowing = false;
  let holding = false;
  const held: Array<{ to: Socket; chunk: Buffer }> = [];
  /** A connection's two sockets and, while it is blackholed, what waits to cross it. */
  interface Link {
    dead: boolean;
    parked: Array<() => void>;
  }
  const links = new Set<Link>();
  let blackholingNew = false;
  const server = createServer((client) => {
    if (refusing) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    const link: Link = { dead: blackholingNew, parked: [] };
    links.add(link);
    const across = (action: () => void) => (link.dead ? link.parked.push(action) : action());
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      open.add(from);
      if (from === upstream)
        from.on('data', (chunk: Buffer) => {
          if (link.dead) return void link.parked.push(() => to.write(chunk));
          if (swallowing) return;
          if (holding) held.push({ to, chunk });
          else to.write(chunk);
        });
      else {
        from.on('data', (chunk: Buffer) => across(() => to.write(chunk)));
        from.on('end', () => across(() => to.end()));
      }
      from.on('error', () => across(() => to.destroy()));
      from.on('close', () => {
        open.delete(from);
        across(() => to.destroy());
        if (!open.has(to)) links.delete(link);
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
    blackhole(on, options = {}) {
      if (on) {
        for (const link of links) link.dead = true;
        blackholingNew = !options.openOnly;
        return;
      }
      blackholingNew = false;
      for (const link of links) {
        link.dead = false;
        for (const action of link.parked.splice(0)) action();
      }
    },
    async close() {
      for (const socket of open) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
