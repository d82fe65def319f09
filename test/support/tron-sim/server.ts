import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { TronChain, type Json, type SimBlock, type TronChainOptions } from './chain.js';
import { selectorOf, toBase58, toHex41 } from './encoding.js';

/**
 * A TronGrid-compatible HTTP server for tests, started in-process on 127.0.0.1 with a free
 * port. It serves the `/wallet/*`, `/walletsolidity/*` and `/v1/*` endpoints the watchers and
 * TronWeb use, in TronGrid's own JSON, from a `TronChain`. Several servers may share one chain
 * (a primary and a fallback host) with their own faults.
 *
 * Test controls are a JS API, not HTTP: `chain` (blocks, transfers, reorgs, solidity lag),
 * `addFault`/`failNext` (HTTP 429/403/500, stalls, resets, empty answers), `rateLimit` (a
 * real requests-per-second limit), `setHeadLag` (a node that lags the chain), `requests`.
 */

export type Fault =
  /** Answer with this HTTP status (TronGrid-style JSON body unless one is given). */
  | { kind: 'status'; status: number; body?: unknown; headers?: Record<string, string> }
  /** Never answer: the client must time out. */
  | { kind: 'stall' }
  /** Answer correctly, but only after `ms`. */
  | { kind: 'delay'; ms: number }
  /** Close the connection without an answer. */
  | { kind: 'reset' }
  /** Answer `{}`, as a load-balanced node that does not (yet) know the block or transaction. */
  | { kind: 'empty' }
  /** Answer 200 with java-tron's `{"Error": ...}` body. */
  | { kind: 'error-body'; message: string };

export interface FaultRule {
  /** The endpoint (`wallet/getnowblock`, leading slash optional), a pattern, or all when absent. */
  path?: string | RegExp;
  /** How many matching requests the fault hits; every one when absent. */
  times?: number;
  fault: Fault;
}

export interface RecordedRequest {
  method: string;
  /** Without the leading slash: `wallet/getblockbylimitnext`. */
  path: string;
  params: Record<string, unknown>;
  apiKey: string | null;
  status: number;
  /** The fault that answered it, if any. */
  fault: Fault['kind'] | 'rate-limit' | null;
  atMs: number;
}

export interface TronSimulatorOptions {
  /** Share a chain with another simulator; otherwise a new one is made from `chainOptions`. */
  chain?: TronChain;
  chainOptions?: TronChainOptions;
}

export interface TronSimulator {
  /** `http://127.0.0.1:<port>`: what TronWeb takes as `fullHost`. */
  readonly url: string;
  readonly chain: TronChain;
  readonly requests: ReadonlyArray<RecordedRequest>;
  /** Requests received (answered or not), optionally for one endpoint or pattern. */
  count(path?: string | RegExp): number;
  resetRequests(): void;
  /** Adds a fault; returns a function that removes it. */
  addFault(rule: FaultRule): () => void;
  /** The next `times` requests (to `path`, or any) hit `fault`. */
  failNext(times: number, fault: Fault, path?: string | RegExp): void;
  clearFaults(): void;
  /** Refuses requests beyond `perSecond` in any one-second window, as TronGrid does; null lifts it. */
  rateLimit(limit: { perSecond: number; status?: 403 | 429 } | null): void;
  /** This server's node trails the chain by `blocks`: newer blocks and receipts are unknown to it. */
  setHeadLag(blocks: number): void;
  close(): Promise<void>;
}

const BLOCK_LIMIT_NUM = 100;
const EVENTS_PAGE_MAX = 200;

export async function startTronSimulator(
  options: TronSimulatorOptions = {},
): Promise<TronSimulator> {
  const chain = options.chain ?? new TronChain(options.chainOptions);
  const requests: RecordedRequest[] = [];
  let faults: Array<FaultRule & { remaining: number }> = [];
  let limit: { perSecond: number; status: 403 | 429 } | null = null;
  let acceptedAtMs: number[] = [];
  let headLag = 0;
  const sockets = new Set<Socket>();

  const view = (): View => {
    const head = Math.max(chain.firstBlockNumber, chain.headNumber - headLag);
    return { head, solidified: Math.min(head, chain.solidifiedNumber) };
  };

  const takeFault = (path: string): Fault | null => {
    for (const rule of faults) {
      if (rule.remaining <= 0 || !pathMatches(rule.path, path)) continue;
      rule.remaining -= 1;
      return rule.fault;
    }
    return null;
  };

  const overRateLimit = (): boolean => {
    if (!limit) return false;
    const now = Date.now();
    acceptedAtMs = acceptedAtMs.filter((at) => now - at < 1_000);
    if (acceptedAtMs.length >= limit.perSecond) return true;
    acceptedAtMs.push(now);
    return false;
  };

  const server = createServer((req, res) => {
    void handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) send(res, 500, { Error: String(error) });
      else res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = url.pathname.replace(/^\/+|\/+$/g, '');
    const body = await readBody(req);
    const params: Record<string, unknown> = { ...Object.fromEntries(url.searchParams) };
    if (body.trim() !== '') {
      try {
        Object.assign(params, JSON.parse(body) as Record<string, unknown>);
      } catch {
        return void record(200, null, send(res, 200, { Error: 'INVALID_JSON' }));
      }
    }
    const header = req.headers['tron-pro-api-key'];
    const entry: RecordedRequest = {
      method: req.method ?? 'GET',
      path,
      params,
      apiKey: typeof header === 'string' ? header : null,
      status: 0,
      fault: null,
      atMs: Date.now(),
    };
    requests.push(entry);
    function record(status: number, fault: RecordedRequest['fault'], _sent?: void): void {
      entry.status = status;
      entry.fault = fault;
    }

    const fault = takeFault(path);
    if (fault) {
      switch (fault.kind) {
        case 'status': {
          const bodyOut = fault.body ?? tronGridErrorBody(fault.status);
          res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
          res.end(typeof bodyOut === 'string' ? bodyOut : JSON.stringify(bodyOut));
          return record(fault.status, 'status');
        }
        case 'stall':
          return record(0, 'stall'); // the socket stays open until the client gives up
        case 'reset':
          req.socket.destroy();
          return record(0, 'reset');
        case 'empty':
          return record(200, 'empty', send(res, 200, {}));
        case 'error-body':
          return record(200, 'error-body', send(res, 200, { Error: fault.message }));
        case 'delay':
          await new Promise((resolve) => setTimeout(resolve, fault.ms));
          entry.fault = 'delay';
          break;
      }
    }
    if (overRateLimit()) {
      const status = limit!.status;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          Error: `request rate exceeded the allowed_rps(${limit!.perSecond}), and the query server is suspended for 1 s`,
        }),
      );
      return record(status, 'rate-limit');
    }
    const answer = route(chain, view(), path, params);
    send(res, answer.status, answer.body);
    entry.status = answer.status;
  }

  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    chain,
    requests,
    count: (path) => requests.filter((r) => pathMatches(path, r.path)).length,
    resetRequests: () => void requests.splice(0, requests.length),
    addFault(rule) {
      const entry = { ...rule, remaining: rule.times ?? Number.POSITIVE_INFINITY };
      faults.push(entry);
      return () => void (faults = faults.filter((candidate) => candidate !== entry));
    },
    failNext(times, fault, path) {
      faults.push({ fault, times, remaining: times, ...(path === undefined ? {} : { path }) });
    },
    clearFaults: () => void (faults = []),
    rateLimit(next) {
      limit = next ? { perSecond: next.perSecond, status: next.status ?? 429 } : null;
      acceptedAtMs = [];
    },
    setHeadLag(blocks) {
      headLag = blocks;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve, reject) =>
        server.close((error) => (error ? reject(error) : resolve())),
      );
    },
  };
}

interface View {
  /** The newest block this node serves. */
  head: number;
  solidified: number;
}

interface Answer {
  status: number;
  body: unknown;
}

function route(
  chain: TronChain,
  view: View,
  path: string,
  params: Record<string, unknown>,
): Answer {
  const ok = (body: unknown): Answer => ({ status: 200, body });
  const solidity = path.startsWith('walletsolidity/');
  const limitNumber = solidity ? view.solidified : view.head;
  const visible = (block: SimBlock | undefined): SimBlock | undefined =>
    block && block.number <= limitNumber ? block : undefined;
  const located = (txID: unknown) => {
    const where = typeof txID === 'string' ? chain.locate(txID) : undefined;
    return where && where.block.number <= limitNumber ? where : undefined;
  };
  const endpoint = path.replace(/^walletsolidity\//, 'wallet/');

  if (path.startsWith('wallet/') || solidity) {
    switch (endpoint) {
      case 'wallet/getnowblock':
        return ok(chain.blockJson(chain.block(limitNumber)!));
      case 'wallet/getblock': {
        const detail = params['detail'] === true || params['detail'] === 'true';
        const idOrNum = params['id_or_num'];
        let block: SimBlock | undefined;
        if (idOrNum === undefined || idOrNum === '') block = chain.block(limitNumber);
        else if (/^\d+$/.test(String(idOrNum))) block = visible(chain.block(Number(idOrNum)));
        else block = visible(chain.blockById(String(idOrNum)));
        return ok(block ? chain.blockJson(block, { detail }) : {});
      }
      case 'wallet/getblockbynum': {
        const block = visible(chain.block(toInt(params['num']) ?? -1));
        return ok(block ? chain.blockJson(block) : {});
      }
      case 'wallet/getblockbyid': {
        const block = visible(chain.blockById(String(params['value'] ?? '')));
        return ok(block ? chain.blockJson(block) : {});
      }
      case 'wallet/getblockbylimitnext': {
        const start = toInt(params['startNum']) ?? 0;
        const end = toInt(params['endNum']) ?? 0;
        if (!(end > start && end - start <= BLOCK_LIMIT_NUM)) return ok({});
        const blocks: Json[] = [];
        for (let n = Math.max(start, chain.firstBlockNumber); n < end && n <= limitNumber; n++) {
          blocks.push(chain.blockJson(chain.block(n)!));
        }
        return ok(blocks.length > 0 ? { block: blocks } : {});
      }
      case 'wallet/gettransactionbyid': {
        const where = located(params['value']);
        return ok(where ? where.block.transactions[where.position]!.json : {});
      }
      case 'wallet/gettransactioninfobyid': {
        const where = located(params['value']);
        return ok(where ? where.block.transactions[where.position]!.info : {});
      }
      case 'wallet/gettransactioninfobyblocknum': {
        const block = visible(chain.block(toInt(params['num']) ?? -1));
        return ok(block ? block.transactions.map((tx) => tx.info) : []);
      }
      case 'wallet/triggerconstantcontract':
      case 'wallet/triggersmartcontract':
        return ok(trigger(chain, limitNumber, params));
      case 'wallet/getaccount': {
        const address = params['address'];
        if (typeof address !== 'string' || !isTronAddress(address)) return ok({});
        const hex = toHex41(address);
        // java-tron knows only activated accounts (ones that ever received TRX).
        if (!chain.isActivated(hex, limitNumber)) return ok({});
        const balance = chain.trxBalance(hex, limitNumber);
        return ok({
          address: hex,
          ...(balance > 0n ? { balance: Number(balance) } : {}),
          create_time: chain.genesisTimestampMs,
          net_window_size: 28_800_000,
          account_resource: { energy_window_size: 28_800_000 },
        });
      }
      default:
        return { status: 404, body: `Not Found: /${path}` };
    }
  }

  const events = /^v1\/contracts\/([^/]+)\/events$/.exec(path);
  if (events) return contractEvents(chain, view, events[1]!, params);
  const trc20 = /^v1\/accounts\/([^/]+)\/transactions\/trc20$/.exec(path);
  if (trc20) return accountTrc20(chain, view, trc20[1]!, params);
  return { status: 404, body: `Not Found: /${path}` };
}

function trigger(chain: TronChain, blockNumber: number, params: Record<string, unknown>): Json {
  const contract = String(params['contract_address'] ?? '');
  const owner = String(params['owner_address'] ?? '');
  if (!isTronAddress(contract) || !isTronAddress(owner)) {
    return { result: { code: 'OTHER_ERROR', message: hexText('invalid address') } };
  }
  let data = typeof params['data'] === 'string' ? params['data'] : '';
  if (typeof params['function_selector'] === 'string') {
    const selector = params['function_selector'].replace(/\s+/g, '');
    data = selectorOf(selector) + String(params['parameter'] ?? '');
  }
  const transaction = chain.triggerTransactionJson(owner, contract, data);
  const outcome = chain.constantCall(contract, data, blockNumber);
  if (!outcome.ok) {
    if (outcome.code === 'CONTRACT_VALIDATE_ERROR') {
      return { result: { code: outcome.code, message: hexText(outcome.message) } };
    }
    return {
      result: { code: outcome.code, message: hexText(outcome.message) },
      energy_used: 283,
      constant_result: [''],
      transaction: { ...transaction, ret: [{ ret: 'FAILED' }] },
    };
  }
  return {
    result: { result: true },
    energy_used: 935,
    constant_result: [outcome.result],
    transaction,
  };
}

function contractEvents(
  chain: TronChain,
  view: View,
  address: string,
  params: Record<string, unknown>,
): Answer {
  if (!isTronAddress(address)) return badRequest('invalid address');
  const contract = toHex41(address);
  const eventName = params['event_name'];
  if (eventName !== undefined && eventName !== 'Transfer') return page([], params, (e) => e);
  const blockNumber = toInt(params['block_number']);
  const items = [...chain.transferEvents()]
    .filter((event) => event.token.hex41 === contract && event.block.number <= view.head)
    .filter((event) => blockNumber === undefined || event.block.number === blockNumber)
    .filter((event) => confirmationFilter(params, event.block.number <= view.solidified))
    .filter((event) =>
      timestampFilter(params, 'min_block_timestamp', 'max_block_timestamp', event.block.timestamp),
    )
    .map((event) => ({
      block_number: event.block.number,
      block_timestamp: event.block.timestamp,
      caller_contract_address: event.token.address,
      contract_address: event.token.address,
      event_index: event.logIndex,
      event_name: 'Transfer',
      result: {
        '0': `0x${toHex41(event.from).slice(2)}`,
        '1': `0x${toHex41(event.to).slice(2)}`,
        '2': event.amount.toString(),
        from: `0x${toHex41(event.from).slice(2)}`,
        to: `0x${toHex41(event.to).slice(2)}`,
        value: event.amount.toString(),
      },
      result_type: { from: 'address', to: 'address', value: 'uint256' },
      event: 'Transfer(address indexed from, address indexed to, uint256 value)',
      transaction_id: event.tx.txID,
      ...(event.block.number > view.solidified ? { _unconfirmed: true } : {}),
    }));
  return page(items, params, (item) => item);
}

function accountTrc20(
  chain: TronChain,
  view: View,
  address: string,
  params: Record<string, unknown>,
): Answer {
  if (!isTronAddress(address)) return badRequest('invalid address');
  const holder = toBase58(address);
  const contractFilter =
    typeof params['contract_address'] === 'string' ? toHex41(params['contract_address']) : null;
  const onlyTo = params['only_to'] === true || params['only_to'] === 'true';
  const onlyFrom = params['only_from'] === true || params['only_from'] === 'true';
  const items = [...chain.transferEvents()]
    .filter((event) => event.block.number <= view.head)
    .filter((event) =>
      onlyTo
        ? event.to === holder
        : onlyFrom
          ? event.from === holder
          : event.to === holder || event.from === holder,
    )
    .filter((event) => contractFilter === null || event.token.hex41 === contractFilter)
    .filter((event) => confirmationFilter(params, event.block.number <= view.solidified))
    .filter((event) =>
      timestampFilter(params, 'min_timestamp', 'max_timestamp', event.block.timestamp),
    )
    .map((event) => ({
      transaction_id: event.tx.txID,
      token_info: {
        symbol: event.token.symbol,
        address: event.token.address,
        decimals: event.token.decimals,
        name: event.token.name,
      },
      block_timestamp: event.block.timestamp,
      from: event.from,
      to: event.to,
      type: 'Transfer',
      value: event.amount.toString(),
    }));
  return page(items, params, (item) => item);
}

/** TronGrid v1 paging: newest first unless `order_by=...,asc`; `meta.fingerprint` for the next page. */
function page<T>(items: T[], params: Record<string, unknown>, map: (item: T) => T): Answer {
  const ascending = String(params['order_by'] ?? '').endsWith(',asc');
  const ordered = ascending ? items : [...items].reverse();
  const limit = Math.min(Math.max(toInt(params['limit']) ?? 20, 1), EVENTS_PAGE_MAX);
  let offset = 0;
  if (typeof params['fingerprint'] === 'string' && params['fingerprint'] !== '') {
    const decoded = Number(
      Buffer.from(params['fingerprint'], 'base64url').toString('utf8').replace(/^o:/, ''),
    );
    if (!Number.isSafeInteger(decoded) || decoded < 0) return badRequest('invalid fingerprint');
    offset = decoded;
  }
  const data = ordered.slice(offset, offset + limit).map(map);
  const next =
    offset + limit < ordered.length
      ? Buffer.from(`o:${offset + limit}`).toString('base64url')
      : null;
  return {
    status: 200,
    body: {
      data,
      success: true,
      meta: {
        at: Date.now(),
        page_size: data.length,
        ...(next ? { fingerprint: next, links: { next: `?fingerprint=${next}` } } : {}),
      },
    },
  };
}

function confirmationFilter(params: Record<string, unknown>, confirmed: boolean): boolean {
  if (params['only_confirmed'] === true || params['only_confirmed'] === 'true') return confirmed;
  if (params['only_unconfirmed'] === true || params['only_unconfirmed'] === 'true')
    return !confirmed;
  return true;
}

function timestampFilter(
  params: Record<string, unknown>,
  minKey: string,
  maxKey: string,
  timestamp: number,
): boolean {
  const min = toInt(params[minKey]);
  const max = toInt(params[maxKey]);
  return (min === undefined || timestamp >= min) && (max === undefined || timestamp <= max);
}

function badRequest(error: string): Answer {
  return { status: 400, body: { success: false, error, statusCode: 400 } };
}

function tronGridErrorBody(status: number): Json {
  if (status === 429 || status === 403) {
    return {
      Error: 'The key exceeds the frequency limit(15), and the query server is suspended for 1s',
    };
  }
  return { Error: `HTTP ${status}` };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/plain' : 'application/json',
  });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function pathMatches(pattern: string | RegExp | undefined, path: string): boolean {
  if (pattern === undefined) return true;
  if (typeof pattern === 'string') return pattern.replace(/^\/+/, '') === path;
  return pattern.test(path);
}

function toInt(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return Number(value);
  return undefined;
}

function isTronAddress(address: string): boolean {
  try {
    toHex41(address);
    return true;
  } catch {
    return false;
  }
}

function hexText(text: string): string {
  return Buffer.from(text, 'utf8').toString('hex');
}
