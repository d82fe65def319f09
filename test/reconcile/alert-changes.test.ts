import { expect, test } from 'vitest';
import {
  alertChanges,
  failureChanges,
  failureFingerprint,
  hasChanges,
} from '../../src/reconcile/alerts.js';

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
