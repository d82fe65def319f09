import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one process, served at GET /metrics. */
export class Metrics {
  readonly registry = new Registry();

  readonly httpRequests = new Counter({
    name: 'lingxi_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });

  readonly calls = new Counter({
    name: 'lingxi_gateway_calls_total',
    help: 'API calls by model and outcome',
    labelNames: ['endpoint', 'model', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly callDuration = new Histogram({
    name: 'lingxi_gateway_call_duration_seconds',
    help: 'Whole API call, request to last byte',
    labelNames: ['endpoint', 'model', 'stream'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });

  readonly upstreamDuration = new Histogram({
    name: 'lingxi_gateway_upstream_first_byte_seconds',
    help: 'Time from sending upstream to its response headers',
    labelNames: ['provider'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  /** Observability only: the exact amounts are in the ledger; a float here is fine. */
  readonly chargedUsd = new Counter({
    name: 'lingxi_gateway_charged_usd_total',
    help: 'USD charged for API calls (approximate float; the ledger is exact)',
    labelNames: ['model'] as const,
    registers: [this.registry],
  });

  readonly unpricedServiceTier = new Counter({
    name: 'lingxi_gateway_unpriced_service_tier_total',
    help: 'Chat calls whose answer reports a service tier above the price table (priority, scale), charged at table prices',
    labelNames: ['provider', 'model', 'tier'] as const,
    registers: [this.registry],
  });

  readonly chargedOverHold = new Counter({
    name: 'lingxi_gateway_charged_over_hold_total',
    help: 'Calls charged more than their hold (usage as reported; the part the balance could not cover is booked to the user receivable): a provider misreporting usage, or prompts the bound cannot see',
    labelNames: ['provider', 'model'] as const,
    registers: [this.registry],
  });

  readonly lostHolds = new Counter({
    name: 'lingxi_gateway_lost_holds_total',
    help: 'Holds whose creation lost its answer (the database went away; the call answered 503, never forwarded), by what their background release found: released (it had been created), never_created, expired, gave_up (the database stayed away until its expiry), stopped (shutdown), failed',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly ledgerBatchSize = new Histogram({
    name: 'lingxi_ledger_batch_size',
    help: 'Ledger operations per database write',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    registers: [this.registry],
  });

  readonly ledgerBatchDuration = new Histogram({
    name: 'lingxi_ledger_batch_duration_seconds',
    help: 'Ledger batch from taking the queue to commit, retries included',
    labelNames: ['mode'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });

  readonly watcherHead = new Gauge({
    name: 'lingxi_watcher_head_block',
    help: 'Latest block the watcher saw, per network',
    labelNames: ['network'] as const,
    registers: [this.registry],
  });

  readonly depositsCredited = new Counter({
    name: 'lingxi_watcher_deposits_credited_total',
    help: 'Deposits credited, per network',
    labelNames: ['network'] as const,
    registers: [this.registry],
  });

  readonly depositsAwaitingPrice = new Gauge({
    name: 'lingxi_watcher_deposits_awaiting_price',
    help: 'Confirmed deposits left uncredited by the last iteration because their price source refused (stale or bad feed), per network',
    labelNames: ['network'] as const,
    registers: [this.registry],
  });

  readonly watcherChainDiverged = new Gauge({
    name: 'lingxi_watcher_chain_diverged',
    help: 'Per network, 1 while the watcher has stopped because no checkpoint it kept is on the chain its endpoint serves (a reorg deeper than they reach, or another chain): nothing is credited until an operator acts',
    labelNames: ['network'] as const,
    registers: [this.registry],
  });

  readonly watcherLastIteration = new Gauge({
    name: 'lingxi_watcher_last_iteration_timestamp_seconds',
    help: 'When the watcher last finished an iteration, per network (alert when it stops moving)',
    labelNames: ['network'] as const,
    registers: [this.registry],
  });

  readonly cronRuns = new Counter({
    name: 'lingxi_cron_job_runs_total',
    help: 'Cron job turns by outcome: ok, failed, or skipped (another process had the job)',
    labelNames: ['job', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly cronLastSuccess = new Gauge({
    name: 'lingxi_cron_job_last_success_timestamp_seconds',
    help: 'When a cron job last finished without error in this process',
    labelNames: ['job'] as const,
    registers: [this.registry],
  });

  readonly retentionIncomplete = new Gauge({
    name: 'lingxi_retention_incomplete',
    help: '1 when the last retention run this process made stopped at its per-run bound with rows left for the next run, else 0',
    registers: [this.registry],
  });

  /**
   * Summed over the cron processes, unlike the gauge above (a process that has not run
   * retention since keeps its last value): what alerts on retention falling behind read.
   */
  readonly retentionStopped = new Counter({
    name: 'lingxi_retention_runs_stopped_total',
    help: 'Retention runs (cron) that stopped at their per-run bound with rows left for the next run, by table and step (scrub, roll-up)',
    labelNames: ['table', 'step'] as const,
    registers: [this.registry],
  });

  readonly reconcileFindings = new Gauge({
    name: 'lingxi_reconcile_findings',
    help: 'Findings of the last reconciliation this process ran (cron, admin or CLI), by severity',
    labelNames: ['severity'] as const,
    registers: [this.registry],
  });

  readonly holdsOpen: Gauge;

  constructor(countOpenHolds: () => Promise<number>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'lingxi_' });
    this.holdsOpen = new Gauge({
      name: 'lingxi_ledger_holds_open',
      help: 'Pending holds (all processes), read at scrape time',
      registers: [this.registry],
      async collect() {
        this.set(await countOpenHolds());
      },
    });
  }
}
