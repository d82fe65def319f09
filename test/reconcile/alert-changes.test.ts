import { expect, test } from 'vitest';
import {
  alertChanges,
  failureCause,
  failureChanges,
  failureFingerprint,
  hasChanges,
} from '../../src/reconcile/alerts.js';
import type { ReportedFinding } from '../../src/reconcile/fingerprint.js';

/**
 * Run failures in the alert state: a failure is recovered only by a run that checked its
 * network (or, for the ledger checks, any run that got through them), never by one that was
 * told to check other networks only.
 */

const noon = new Date('2026-11-27T12:00:00Z');
const tronDown = failureChanges(
  {},
  { network: 'tron', error: 'tron: getHead failed on every endpoint' },
  { ledger: true, networks: new Set(['ethereum']) },
  noon,
);

test('a new failure is news; the same cause again is not, and keeps when it began', () => {
  expect(tronDown.failed).toMatchObject({
    network: 'tron',
    alert: 'new',
    since: noon.toISOString(),
  });
  const again = failureChanges(
    tronDown.state,
    { network: 'tron', error: 'tron: getHead failed on every endpoint' },
    { ledger: true, networks: new Set(['ethereum']) },
    new Date('2026-11-27T12:10:00Z'),
  );
  expect(again.failed).toMatchObject({ alert: 'ongoing', since: noon.toISOString() });
  expect(hasChanges(again)).toBe(false);
});

test('a run of other networks only does not recover the failure; one that checks it does', () => {
  const ethereumOnly = alertChanges(tronDown.state, [], {
    ledger: true,
    networks: new Set(['ethereum']),
  });
  expect(ethereumOnly.recovered).toEqual([]);
  expect(hasChanges(ethereumOnly)).toBe(false);
  expect(Object.keys(ethereumOnly.state)).toEqual([failureFingerprint('tron')]);

  const all = alertChanges(ethereumOnly.state, [], {
    ledger: true,
    networks: new Set(['ethereum', 'tron']),
  });
  expect(all.recovered).toEqual([
    {
      fingerprint: failureFingerprint('tron'),
      network: 'tron',
      error: 'tron: getHead failed on every endpoint',
      since: noon.toISOString(),
    },
  ]);
  expect(all.resolved).toEqual([]);
  expect(all.state).toEqual({});
});

test('a failure of the ledger checks is recovered by the next run that gets through them', () => {
  const ledgerDown = failureChanges(
    {},
    { error: 'connection terminated' },
    { ledger: false, networks: new Set() },
    noon,
  );
  // Failing later, on a network: the ledger checks passed this time.
  const later = failureChanges(
    ledgerDown.state,
    { network: 'tron', error: 'tron: getHead failed on every endpoint' },
    { ledger: true, networks: new Set() },
    noon,
  );
  expect(later.recovered).toEqual([
    {
      fingerprint: failureFingerprint(undefined),
      error: 'connection terminated',
      since: noon.toISOString(),
    },
  ]);
  expect(later.failed).toMatchObject({ network: 'tron', alert: 'new' });
});

/** An error finding of a network (a custody mismatch), or of the ledger checks (no network). */
function mismatch(network: string | undefined, difference: string): ReportedFinding {
  return {
    severity: 'error',
    kind: network ? 'custody_mismatch' : 'cached_balance_mismatch',
    ...(network ? { network, asset: 'USDT', address: '0xA11CE' } : {}),
    account: network ? `assets:custody:${network}:USDT:0xA11CE` : 'liabilities:customers:u1',
    currency: 'USDT',
    expected: '0',
    actual: difference,
    difference,
    details: {},
  };
}

test('a run limited to some networks resolves only what it checked: its networks and the ledger', () => {
  const all = { ledger: true, networks: new Set(['ethereum', 'tron']) };
  const configured = new Set(['ethereum', 'tron']);
  const open = alertChanges(
    {},
    [mismatch('ethereum', '1'), mismatch('tron', '2'), mismatch(undefined, '3')],
    { ...all, configured },
  );
  expect(open.opened).toHaveLength(3);

  // `--network ethereum`, everything put right: ethereum's and the ledger's findings are
  // resolved (the ledger checks run in every run); tron's, not checked, stays open unsaid.
  const ethereumOnly = alertChanges(open.state, [], {
    ledger: true,
    networks: new Set(['ethereum']),
    configured,
  });
  expect(ethereumOnly.resolved.map((f) => [f.network, f.kind])).toEqual([
    ['ethereum', 'custody_mismatch'],
    [undefined, 'cached_balance_mismatch'],
  ]);
  expect(Object.values(ethereumOnly.state).map((f) => f.network)).toEqual(['tron']);

  // The next full run still has tron's: nothing new to say about it.
  const full = alertChanges(ethereumOnly.state, [mismatch('tron', '2')], { ...all, configured });
  expect(hasChanges(full)).toBe(false);

  // A network removed from the config is never checked again: any run closes its findings.
  const removed = alertChanges(full.state, [], {
    ledger: true,
    networks: new Set(['ethereum']),
    configured: new Set(['ethereum']),
  });
  expect(removed.resolved.map((f) => f.network)).toEqual(['tron']);
  expect(removed.state).toEqual({});
});

test('a failure whose message changes only by a number or a hash is the same cause', () => {
  const pruned = (block: number, hash: string) =>
    `tron: https://api.trongrid.io has no block ${block} below its head ${block + 20} (request ${hash})`;
  const first = failureChanges(
    {},
    { network: 'tron', error: pruned(71234567, '3f2a9c1e-77b1-4c2d-9e0a-1b2c3d4e5f60') },
    { ledger: true, networks: new Set() },
    noon,
  );
  const later = failureChanges(
    first.state,
    { network: 'tron', error: pruned(71234590, '0c1d2e3f-0000-4abc-8def-123456789abc') },
    { ledger: true, networks: new Set() },
    new Date('2026-11-27T12:10:00Z'),
  );
  expect(later.failed).toMatchObject({
    alert: 'ongoing',
    error: pruned(71234590, '0c1d2e3f-0000-4abc-8def-123456789abc'),
  });
  expect(hasChanges(later)).toBe(false);
  // What the webhook was told stays the message it was told.
  expect(later.state[failureFingerprint('tron')]!.state).toBe(first.failed!.error);

  // Another host, or another HTTP status, is another cause.
  expect(failureCause('https://a.example: HTTP 503')).not.toBe(
    failureCause('https://a.example: HTTP 401'),
  );
  expect(failureCause('https://a.example:8545 /x: HTTP 503')).not.toBe(
    failureCause('https://b.example:8545 /x: HTTP 503'),
  );
  const otherStatus = failureChanges(
    later.state,
    { network: 'tron', error: 'tron: https://api.trongrid.io /wallet/getnowblock: HTTP 401' },
    { ledger: true, networks: new Set() },
    noon,
  );
  expect(otherStatus.failed).toMatchObject({ alert: 'changed', previous: first.failed!.error });
});
