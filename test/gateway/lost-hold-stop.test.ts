import { expect, test } from 'vitest';
import { abortableSleep } from '../../src/gateway/meter.js';

/**
 * A lost hold's background release waits between tries with `abortableSleep`, which a
 * shutdown (`Meter.stopReleases`) cuts short. A stop that comes while a try is under way (a
 * connect to an unreachable database can take its whole connect timeout) finds the signal
 * already aborted when the wait after that try begins: the wait must not happen at all.
 * Before, it ran its whole backoff (up to 5 s) on a timer the abort could no longer end,
 * past the shutdown's last drain, and kept the stopping process alive.
 */

function timers(): number {
  return process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
}

test('a wait that begins after the stop ends at once, and leaves no timer behind', async () => {
  const stopping = new AbortController();
  stopping.abort();
  const before = timers();
  const wait = abortableSleep(5000, stopping.signal);
  const leftRunning = timers() - before;
  // Settled before the event loop turns once: no timer could have ended it.
  const first = await Promise.race([
    wait.then(() => 'ended'),
    new Promise((resolve) => setImmediate(() => resolve('still waiting'))),
  ]);
  expect({ first, leftRunning }).toEqual({ first: 'ended', leftRunning: 0 });
});
