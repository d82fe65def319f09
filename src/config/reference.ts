import { z } from 'zod';
import { DEFAULT_CURRENCIES } from './load.js';
import { configSchema } from './schema.js';

/**
 * docs/config-reference.md, generated from the zod schema (`npm run docs:config`): every
 * field with its type, bounds and default come from the schema itself; what a field is for
 * comes from the schema's `.describe()` when it has one, else from FIELD_NOTES below. The
 * test test/config-reference.test.ts fails when the committed file differs from this output
 * or a note names a field that no longer exists.
 */

type Schema = { [keyword: string]: unknown };

/** What each section is about, by its path. */
const SECTION_NOTES: Record<string, string> = {
  http: 'The http role: where it listens, request limits, and how it shuts down.',
  database:
    'PostgreSQL. With no `url` (and no `DATABASE_URL` in the environment, which fills `url` when the file has none), an embedded server is started under `embedded.dir`.',
  adminToken:
    'The bearer token of the admin API (`/admin`). Without it the admin API answers 403 `admin_disabled`; the CLI works regardless.',
  'currencies[]': `Ledger currencies and their scale (fractional digits). Built in: ${DEFAULT_CURRENCIES.map((c) => `${c.code} ${c.scale}`).join(', ')}. An entry here adds a currency or overrides a scale. A scale may be widened later, never narrowed: a narrower one is ignored (the books keep the wider scale, so amounts booked with more digits still move exactly). An asset's \`decimals\` may not exceed its currency's scale: BSC's USDT has 18 decimals, so a config with BSC needs \`{"code": "USDT", "scale": 18}\`.`,
  'providers[]':
    'Upstream model APIs (OpenAI-compatible: `{baseUrl}/chat/completions`, `/embeddings`, `/models`).',
  'models[]':
    'The models the gateway sells, with their prices in USD per million tokens. A changed price becomes a new price version; usage rows keep the version they were charged at.',
  wallets:
    'Account-level extended public keys: deposit addresses are derived from them (docs/deposits.md). Never an extended private key: it is refused.',
  'networks[]':
    'The chains watched for deposits: one watcher per network (`lingxi watch --network NAME`). Fields common to both kinds first, then those of each kind. Examples for ethereum, bsc, polygon, arbitrum, base and tron: lingxi.config.example.json and docs/operating.md.',
  'networks[].assets[]':
    'What a network accepts. Tokens are matched by contract address, never by symbol.',
  telegram: 'Telegram Login Widget sign-in (docs/api-account.md).',
  retention: 'How long request data is kept (docs/privacy.md).',
  gateway: 'Limits of the OpenAI-compatible gateway.',
  ledger: 'How the ledger batches its writes.',
  cron: 'Schedules of the cron role (cron syntax: five fields, or six with seconds first), read in `cron.timezone`. Each is checked when the config loads (every command, `lingxi doctor` too) by creating it as the cron role does: one that does not parse, or never falls due in that zone (`0 0 31W 4 *`; `30 2 * 3 0#2` in `America/New_York`, a time skipped by summer time), is refused naming its field. Each scheduled tick runs at most once across the cron processes (docs/operating.md, the roles): give every cron process the same schedules.',
  reconcile:
    'Reconciliation runs, however started (the cron role, `lingxi reconcile`, the admin API).',
  alerts: 'Where reconciliation findings are sent.',
  sessions: 'Account sessions (sign-in tokens).',
  log: 'Structured JSON logs on stderr.',
};

/** What each field is for, by its path (used when the schema has no `.describe()`). */
export const FIELD_NOTES: Record<string, string> = {
  'http.host':
    'Address to listen on. `0.0.0.0` in a container; keep `127.0.0.1` behind a proxy on the same machine.',
  'http.port': 'Port to listen on; 0 picks a free one. `--port` overrides it.',
  'http.bodyLimitBytes': 'Largest request body accepted (413 above).',
  'http.trustProxy':
    'Take the client IP from X-Forwarded-For. Only behind a proxy you run, which sets it.',
  'http.shutdownDelayMs':
    'After SIGTERM/SIGINT: how long the server keeps answering, with `/readyz` at 503, before it stops accepting connections. Set it to what your load balancer needs to notice (its health-check interval times its failure threshold).',
  'http.shutdownGraceMs':
    'Then: how long requests in flight, streams included, may take to finish before their connections are cut (a cut stream is charged for what was generated; a call still waiting for upstream is stopped, its hold released, nothing charged).',
  'http.idempotencyLeaseMs':
    'A POST with an `Idempotency-Key` (or a CLI command with `--idempotency-key`) keeps its claim alive (a heartbeat every third of this) while it runs; a claim left by a process that died mid-request is taken over by the next request with the key once this long has passed without a heartbeat. Before that, a retry answers 409 `idempotency_in_progress` (the CLI: exit 1).',
  'database.url': 'A PostgreSQL URL, usually `"env:DATABASE_URL"`. Unset: the embedded server.',
  'database.poolSize': 'Connections per process.',
  'database.connectTimeoutMs':
    'How long a query waits for a connection (a new one, or a free one of the pool) before it fails; 0 waits for ever. A database host that hangs then answers 503 instead of holding requests.',
  'database.keepAliveMs':
    "TCP keepalive on the pool's connections (and a cron process's lock connection): how long a connection is idle, or waits for an answer, before the first probe (the interval and count of probes are the system's, see docs/operating.md). A link that died without a reset is then closed, and a NAT or load balancer in the way does not drop a quiet connection. 0: off.",
  'database.queryTimeoutMs':
    "How long a query on the pool (an API key's lookup, a balance, the rate limiter, an admin or account read) waits for the database's answer before its connection is closed, so that a link that died without a reset (a partition, a failover behind a virtual IP) fails the request with 503 `service_unavailable` in that time instead of holding it for the kernel's keepalive (about 11 minutes). The closed connection is never reused; the request's other work (a write it had sent) may or may not have committed, as on any broken connection. Not for the ledger's writes (`ledger.writeTimeoutMs`) nor for long jobs, which have no bound: exports and statements' CSV, reconciliation and the ledger-integrity checks, sealing, the retention purge, migrations. Keep it above the slowest read or the longest wait on a row lock a request may have. 0: for ever.",
  'database.embedded': 'The embedded PostgreSQL, used when there is no `url`.',
  'database.embedded.dir': 'Data directory of the embedded server.',
  'database.embedded.port': 'Port of the embedded server (127.0.0.1 only).',
  adminToken:
    'At least 16 characters, printable ASCII with no space, tab or line break (a trailing newline from a secret file is refused: no client could send it); use 32 or more random ones (`openssl rand -hex 32`).',
  metricsToken:
    'When set, `GET /metrics` needs `Authorization: Bearer <metricsToken>` (Prometheus: `authorization.credentials`); unset, it answers anyone. Printable ASCII with no space, tab or line break, as `adminToken`.',
  'currencies[].code': 'Currency code, upper case.',
  'currencies[].scale': 'Fractional digits kept for amounts in this currency.',
  'providers[].name': 'Name that models refer to.',
  'providers[].baseUrl': 'Base URL including the version, such as `https://api.openai.com/v1`.',
  'providers[].apiKey': 'Sent as `Authorization: Bearer`; usually `"env:OPENAI_API_KEY"`.',
  'providers[].timeoutMs':
    'Longest wait for the provider to start answering, and between stream events.',
  'models[].id': 'The model name API clients send.',
  'models[].provider': 'One of `providers[].name`.',
  'models[].upstreamModel': 'The model name sent to the provider.',
  'models[].kind': '`chat` (/v1/chat/completions) or `embedding` (/v1/embeddings).',
  'models[].pricePer1M':
    'USD per million tokens, decimal strings with at most 12 fractional digits; not all 0 (a call is held for the most it can cost first). Text tokens only: a request for audio (`modalities` with `audio`, `audio`, an `input_audio` part) web search (`web_search_options`, OpenRouter `plugins`) or a service tier billed above standard (`service_tier` other than `auto`, `default`, `flex`, `on_demand`) is refused with 400 `feature_not_priced`, as their fees (audio tokens, a fee per search, priority rates) have no price here. Do not sell a model that always bills them (`*-search-preview`, `*-audio-preview` used for audio).',
  'models[].pricePer1M.input': 'Prompt tokens.',
  'models[].pricePer1M.cachedInput': 'Cached prompt tokens; the input price when absent.',
  'models[].pricePer1M.cacheWrite':
    "Prompt tokens the provider reports as written to its prompt cache (`prompt_tokens_details.cache_write_tokens`, or Anthropic's `cache_creation_input_tokens`); the input price when absent, never free. Anthropic bills them at 1.25x input (2x for a 1-hour cache); the hold counts every prompt token at the dearest prompt price.",
  'models[].pricePer1M.output': 'Completion tokens.',
  'models[].pricePer1M.reasoning': 'Reasoning tokens; billed as output when absent.',
  'models[].maxOutputTokensDefault':
    'Output cap sent upstream when the request sets none; the hold covers it.',
  'models[].maxOutputTokensLimit': 'Largest output a request may ask for (400 above).',
  'models[].imageTokensMax':
    "Most prompt tokens one image may bill; the hold counts this much per `image_url` part. The default covers OpenAI's dearest (gpt-4o-mini, up to 48169); set the model's own to hold less.",
  'models[].outputCapParam':
    'How that default cap is sent upstream; absent: `max_completion_tokens` for o1/o3/o4/gpt-5 upstream models, routed names included (`openai/o3-mini`: the last path segment counts; they refuse `max_tokens`), else `max_tokens`.',
  'wallets.evmXpub':
    "xpub of `m/44'/60'/0'`: one deposit address per user serves every EVM network. Checked at start as the deposit addresses are derived (parsed, its first address derived): one that does not parse (or an xprv) stops every command, naming this field.",
  'wallets.tronXpub':
    "xpub of `m/44'/195'/0'`. Checked at start like `evmXpub`: one that does not parse stops every command, naming this field.",
  'wallets.retiredXpubs':
    'Every xpub (EVM or Tron) that deposit addresses were assigned under before `evmXpub` or `tronXpub` was changed (docs/operating.md, rotating keys). The last address assigned must derive from the configured xpub or one listed here; otherwise no new address is assigned (`deposit_key_mismatch`), since the configured xpub may not be the wallet the last one came from. Each entry is checked at start like `evmXpub`, naming its index.',
  'networks[].name': 'Lower case; what `--network` and the API use.',
  'networks[].kind': 'Which fields follow: `evm` (any EVM chain) or `tron`.',
  'networks[].confirmations':
    'When a deposit is credited: a count of confirmations (its own block counts as one: `head - block + 1`; 0 acts as 1), `"finalized"` (EVM: the node\'s finalized block) or `"solidified"` (Tron).',
  'networks[].pollIntervalMs': 'Wait between iterations once caught up.',
  'networks[].maxBlockRange':
    'Most blocks scanned per iteration (lower it for providers that limit eth_getLogs ranges).',
  'networks[].reorgDepthMax':
    "Deepest reorg expected. The watcher keeps checkpoints (block hashes) for 4 x this many blocks behind its cursor and finds a reorg's fork point among them; a reorg deeper than they reach stops the watcher on that network (nothing credited, the cursor kept) until an operator acts: see docs/operating.md. With a count of `confirmations`, must be at least that count: a reorg that removes a credited deposit is at least that deep, and this is how far back the watcher is sure to re-check.",
  'networks[].rpcTimeoutMs': 'Timeout of every RPC call.',
  'networks[].rpcRetries': 'Rounds over all endpoints after the first, with backoff.',
  'networks[].startBlock':
    'Where scanning begins on first start; the head at that moment when absent.',
  'networks[].treasuryAddresses':
    'Outgoing transfers to these addresses are sweeps to our treasury (booked with their fee); a transfer from one of them to a deposit address is a top-up (gas for a sweep), never credited to the customer.',
  'networks[].nativeCurrency':
    "Currency of network fees (ETH, BNB, POL, TRX); by default the native asset's, else ETH on EVM and TRX on Tron.",
  'networks[].chainId': 'Checked against every endpoint: one serving another chain is dropped.',
  'networks[].rpcUrls':
    'JSON-RPC endpoints, tried in turn with failover. They often carry a key: use `"env:..."`.',
  'networks[].fullHost': 'TronGrid (or compatible) base URL, such as `https://api.trongrid.io`.',
  'networks[].fallbackHosts': 'More TronGrid-compatible hosts, tried when the first fails.',
  'networks[].apiKey': 'TronGrid API key (`TRON-PRO-API-KEY`); usually `"env:TRONGRID_API_KEY"`.',
  'networks[].discovery':
    'How a scan finds TRC-20 transfers: `calldata` reads the receipt of each transaction sent by one of our addresses or whose call data names one (one request per such transaction); `receipts` reads every receipt of every block with a contract call (one request per block, more quota) and also sees tokens a contract pays to an address its call data does not name (a router, an exchange payout). See docs/deposits.md.',
  'networks[].assets': 'What the network accepts: see the next section.',
  'networks[].assets[].symbol': 'Display symbol, such as `USDT`.',
  'networks[].assets[].currency': 'Ledger currency code; the symbol when absent.',
  'networks[].assets[].contract':
    'Token contract (EVM `0x...`, Tron `T...`); required unless `native`. Checked: `lingxi doctor`.',
  'networks[].assets[].native': "The chain's own coin (ETH, BNB, POL, TRX): no contract.",
  'networks[].assets[].decimals':
    "The token's `decimals()`: the watcher refuses to start when the chain says otherwise. USDT is 6 on Ethereum, Tron, Polygon and Arbitrum but 18 on BSC.",
  'networks[].assets[].price':
    'The USD rate a deposit is credited at: exactly one of `fixed` or `chainlink`.',
  'networks[].assets[].price.fixed':
    'A fixed rate, such as `"1"` for a stablecoin: USDT so configured is credited at exactly 1 USD whatever its market price.',
  'networks[].assets[].price.chainlink':
    "A Chainlink aggregator, read at the confirming block (the deposit's block + `confirmations` - 1; on another network: its latest round when the deposit is credited); the feed address, round and time are stored on the entry. A round refused there (stale, incomplete, not positive) or a node without that block's state is tried at the latest block; refused there too, or a read that failed in passing (timeout, HTTP 5xx, dropped connection), the deposit waits uncredited and the confirming block is read again next iteration (a warning when it starts waiting, then every 5 minutes; `lingxi_watcher_deposits_awaiting_price`).",
  'networks[].assets[].price.chainlink.network':
    "The configured network the feed lives on (L2 ETH may use the ethereum feed). Block numbers of two networks do not match, so a feed on another network is read at that network's latest block, not at the deposit's confirming block; `maxAgeS` still applies.",
  'networks[].assets[].price.chainlink.maxAgeS':
    'A round older than this (at the block read) is refused, as is a non-positive answer or an incomplete round (`answeredInRound` < `roundId`).',
  'networks[].assets[].price.chainlink.feed': 'Aggregator address.',
  'networks[].assets[].minDeposit': 'Smaller deposits are recorded as ignored (never credited).',
  'telegram.botToken':
    'From @BotFather. Unset: Telegram sign-in is off (the dashboard says sign-in is unavailable unless `devSignIn` is on).',
  'telegram.botUsername': "The bot's username, without @, for the dashboard's Login Widget.",
  'telegram.devSignIn':
    'The development sign-in `POST /api/auth/dev`: signs in any Telegram id with no proof, from clients on this machine only. Off unless a config file says `true` (a service with no config file, on embedded defaults, has it on). Cannot be `true` beside `botToken` (a config error). Never on a machine others reach through a proxy or tunnel.',
  'telegram.maxAuthAgeS': 'Oldest login payload accepted.',
  'telegram.maxClockSkewS': 'How far in the future a payload may be dated.',
  'retention.usageLogDays': 'Usage rows older than this are rolled into daily aggregates.',
  'retention.requestMetaDays':
    'Client IP and user agent are removed from usage rows after this; sessions ended, `Idempotency-Key` records finished and spend-limit reservations released longer ago than this are deleted.',
  'gateway.rateLimit':
    'Token buckets per API key, shared by every http process (429 `rate_limit_exceeded` when empty).',
  'gateway.rateLimit.requestsPerMinute': 'Per API key, across all http processes.',
  'gateway.rateLimit.tokensPerMinute':
    'Per API key, across all http processes (the estimate before the call).',
  'gateway.maxCallDurationMs':
    'A call, a stream included, is cut off this long after it came in, the wait for the provider included (504 `deadline_exceeded` before a stream starts, nothing charged; an error event in a stream, charged for what was generated).',
  'gateway.holdGraceMs': 'How long a hold outlives the longest possible call before it may expire.',
  'gateway.clientGoneGraceMs':
    "How long a stream whose client left before the provider's headers came still waits for them (to learn whether the provider answers one JSON completion, which is then read and charged); then the provider's request is aborted (recorded `client_disconnected`, 499, nothing charged). Also how long a stream whose client left once every choice had its `finish_reason` is still read for the usage the provider sends after it (the call is then charged that usage, else an estimate). Never past the provider's `timeoutMs` or the call's `maxCallDurationMs`. 0: abort at once.",
  'gateway.bytesPerTokenMin': 'Used to bound the prompt tokens of the cost estimate.',
  'gateway.maxStreamEventChars':
    "The largest event a provider's stream may send, counted exactly and the same however its bytes arrive: every character of the event's lines (field names and the `data: ` prefix included, comment, `event:` and `id:` lines too) from its first line to the blank line that ends it, line breaks not counted; characters of the decoded text as UTF-16 code units (most count 1, an emoji 2). An event of exactly this size passes, one character more is cut (an event still arriving is cut as soon as it is longer). Past it the stream is cut as malformed: the client gets the `upstream_malformed` error event, and the call is charged for what was generated. A stream's events are a few KB; the default (8,388,608) only stops an event that never ends from growing memory until the call's time limit.",
  'ledger.batchMaxSize': 'Ledger operations grouped into one database transaction at most.',
  'ledger.batchConcurrency': 'Ledger transactions in flight at once per process.',
  'ledger.writeTimeoutMs':
    "How long a ledger write (a batch) waits for the database's answers on its connection before the connection is closed, so that a link that died without a reset (a partition, a failover behind a virtual IP) does not hold every write behind it for the kernel's 15 minutes. A write sent and not answered in time fails as lost (a hold's call answers 503, the hold is released in the background); the next writes go on new connections. Keep it above the longest a write may wait on a lock. 0: for ever.",
  'cron.reconcile': 'Reconciliation: chains against custody accounts, ledger integrity.',
  'cron.expireHolds': 'Expiry of holds past their deadline.',
  'cron.seal': 'Sealing newly committed entries into the hash chain.',
  'cron.retention': 'The retention purge.',
  'cron.timezone':
    "The IANA time zone the schedules are read in (`UTC`, `Asia/Shanghai`), not the machine's: every cron process computes the same ticks wherever it runs.",
  'reconcile.lockWaitMs':
    'Runs take turns: how long a run waits for one already running before it gives up with `reconciliation_running` (HTTP 409, nothing stored). 0: it gives up at once.',
  'alerts.webhookUrl':
    'Error-level reconciliation findings are POSTed here as JSON when they appear, change or are resolved, and a run that fails (an RPC down, any error) when it starts failing, fails another way, and recovers (see accounting.md).',
  'alerts.attempts':
    'Tries per run to post an alert (1 s apart); an alert still not delivered is posted again by the next run.',
  'alerts.timeoutMs': 'Deadline of one try to post an alert.',
  'sessions.ttlS': 'Lifetime of a session token.',
  'log.level': 'Lowest level written.',
};

interface Row {
  /** The field's full path, such as `networks[].assets[].decimals`. */
  path: string;
  field: string;
  type: string;
  default: string;
  note: string;
}

interface Section {
  path: string;
  rows: Row[];
}

/** Every field path of the schema, with `[]` for list items, and whether it has a note. */
export function configFields(): Array<{ path: string; documented: boolean }> {
  return collectSections().flatMap((section) =>
    section.rows.map((row) => ({ path: row.path, documented: row.note !== '' })),
  );
}

/** The Markdown of docs/config-reference.md. */
export function renderConfigReference(): string {
  const lines = [
    '# Configuration reference',
    '',
    '<!-- Generated by scripts/gen-config-docs.ts from src/config/schema.ts and chain-watchers/config.ts: do not edit by hand; run `npm run docs:config`. -->',
    '',
    'The configuration is one JSON file: `--config FILE`, else `$LINGXI_CONFIG`, else',
    '`./lingxi.config.json` when it exists, else the defaults below (embedded PostgreSQL, no',
    'providers, no networks). It is validated when a command starts; an invalid file stops the',
    'process with the path of the bad field. A key that is not one of those below is such a',
    'field (a misspelt key is refused, not dropped). `lingxi doctor` checks it against the',
    'world too (database, RPC endpoints, token decimals, providers, keys).',
    '',
    'Secrets stay out of the file: any string value `"env:NAME"` is read from the environment',
    'variable NAME, and an unset variable is an error naming it (except `database.url`, which',
    'then falls back to the embedded server). `DATABASE_URL` fills `database.url` when the file',
    'has none. In a number or true/false field the variable is read as one',
    '(`"port": "env:PORT"` with `PORT=9090`); text that is none is an error naming the field. A',
    'complete example: `lingxi.config.example.json`, with `.env.example`.',
    '',
    'Amounts and prices are decimal strings (`"0.15"`), never JSON numbers. Durations end in',
    '`Ms` (milliseconds) or `S` (seconds). "default" shows what an absent field becomes;',
    '"required" fields have none.',
    '',
  ];
  for (const section of collectSections()) {
    const title = section.path === '' ? 'Top level' : `\`${section.path}\``;
    lines.push(`## ${title}`, '');
    const note = SECTION_NOTES[section.path] ?? SECTION_NOTES[section.path.replace(/\[\]$/, '')];
    if (note) lines.push(note, '');
    lines.push('| field | type | default | what it is |', '|---|---|---|---|');
    for (const row of section.rows)
      lines.push(`| \`${row.field}\` | ${row.type} | ${row.default} | ${escape(row.note)} |`);
    lines.push('');
  }
  return `${lines.join('\n').trimEnd()}\n`;
}

function collectSections(): Section[] {
  const root = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Schema;
  const sections: Section[] = [];
  const top: Row[] = [];
  sections.push({ path: '', rows: top });
  for (const [name, schema] of Object.entries(properties(root))) {
    const required = requiredOf(root).includes(name);
    if (isObject(schema)) {
      const section: Section = { path: name, rows: [] };
      sections.push(section);
      addObjectRows(section, schema, '', name, sections);
    } else if (isObjectArray(schema)) {
      addArraySection(name, schema, sections);
    } else {
      top.push(row(name, schema, required, name));
    }
  }
  // Sections without rows (an object whose fields all went to sub-sections) say nothing.
  return sections.filter((section) => section.rows.length > 0 || section.path === '');
}

/** Rows for an object's fields, nested objects flattened with dotted names. */
function addObjectRows(
  section: Section,
  schema: Schema,
  prefix: string,
  path: string,
  sections: Section[],
  variant = false,
): void {
  for (const [name, field] of Object.entries(properties(schema))) {
    const fieldName = prefix ? `${prefix}.${name}` : name;
    const fieldPath = `${path}.${name}`;
    // A variant's own key is not required of the object, it picks the variant.
    const required = !variant && requiredOf(schema).includes(name);
    if (isObject(field)) {
      section.rows.push(row(fieldName, field, required, fieldPath, 'object'));
      addObjectRows(section, field, fieldName, fieldPath, sections);
    } else if (isObjectArray(field)) {
      section.rows.push(row(fieldName, field, required, fieldPath, `list: see \`${fieldPath}[]\``));
      addArraySection(fieldPath, field, sections);
    } else if (isObjectUnion(field)) {
      section.rows.push(row(fieldName, field, required, fieldPath, 'object (one of below)'));
      for (const variant of field['anyOf'] as Schema[])
        addObjectRows(section, variant, fieldName, fieldPath, sections, true);
    } else {
      section.rows.push(row(fieldName, field, required, fieldPath));
    }
  }
}

function addArraySection(path: string, schema: Schema, sections: Section[]): void {
  const items = schema['items'] as Schema;
  const section: Section = { path: `${path}[]`, rows: [] };
  sections.push(section);
  const variants = (items['oneOf'] ?? items['anyOf']) as Schema[] | undefined;
  if (!variants) {
    addObjectRows(section, items, '', `${path}[]`, sections);
    return;
  }
  // A union by `kind`: fields common to every variant, then each variant's own.
  const names = variants.map((v) => Object.keys(properties(v)));
  const common = names[0]!.filter((n) => names.every((list) => list.includes(n)) && n !== 'kind');
  const commonSchema: Schema = {
    properties: Object.fromEntries(common.map((n) => [n, properties(variants[0]!)[n]])),
    required: requiredOf(variants[0]!).filter((n) => common.includes(n)),
  };
  const kinds = variants.map((v) => (properties(v)['kind'] as Schema)['const']);
  section.rows.push(row('kind', { enum: kinds }, true, `${path}[].kind`));
  addObjectRows(section, commonSchema, '', `${path}[]`, sections);
  for (const [i, variant] of variants.entries()) {
    const own = Object.keys(properties(variant)).filter((n) => !common.includes(n) && n !== 'kind');
    for (const name of own) {
      const field = properties(variant)[name] as Schema;
      section.rows.push(
        row(
          `${name} (${String(kinds[i])})`,
          field,
          requiredOf(variant).includes(name),
          `${path}[].${name}`,
        ),
      );
    }
  }
}

function row(field: string, schema: Schema, required: boolean, path: string, type?: string): Row {
  const description = typeof schema['description'] === 'string' ? schema['description'] : null;
  return {
    path,
    field,
    type: type ?? typeOf(schema),
    default:
      schema['default'] !== undefined && !isEmptyContainer(schema['default'])
        ? `\`${JSON.stringify(schema['default'])}\``
        : required
          ? 'required'
          : '',
    note: description ?? FIELD_NOTES[path] ?? '',
  };
}

function typeOf(schema: Schema): string {
  if (schema['const'] !== undefined) return `\`${JSON.stringify(schema['const'])}\``;
  if (Array.isArray(schema['enum']))
    return (schema['enum'] as unknown[]).map((v) => `\`${JSON.stringify(v)}\``).join(' or ');
  const union = (schema['anyOf'] ?? schema['oneOf']) as Schema[] | undefined;
  if (union) return union.map(typeOf).join(' or ');
  switch (schema['type']) {
    case 'string':
      return stringType(schema);
    case 'integer':
    case 'number':
      return numberType(schema);
    case 'boolean':
      return 'boolean';
    case 'array': {
      const items = schema['items'] as Schema;
      const min = schema['minItems'] === 1 ? 'non-empty ' : '';
      const item = typeOf(items);
      return `${min}list of ${item.endsWith('string') ? `${item}s` : item}`;
    }
    case 'object':
      return 'object';
    default:
      return 'any';
  }
}

function stringType(schema: Schema): string {
  if (schema['pattern'] === '^\\d+(\\.\\d+)?$') return 'decimal string';
  if (schema['format'] === 'uri') return 'URL';
  const parts = [schema['minLength'] === 1 ? 'non-empty string' : 'string'];
  if (typeof schema['pattern'] === 'string') parts.push(`matching \`${schema['pattern']}\``);
  if (typeof schema['minLength'] === 'number' && schema['minLength'] > 1)
    parts.push(`of at least ${schema['minLength']} characters`);
  return parts.join(' ');
}

function numberType(schema: Schema): string {
  const kind = schema['type'] === 'integer' ? 'integer' : 'number';
  const max =
    typeof schema['maximum'] === 'number' && schema['maximum'] < Number.MAX_SAFE_INTEGER
      ? schema['maximum']
      : null;
  if (schema['exclusiveMinimum'] === 0)
    return max === null ? `positive ${kind}` : `${kind} 1 to ${format(max)}`;
  if (typeof schema['minimum'] === 'number')
    return max === null
      ? `${kind} ≥ ${format(schema['minimum'])}`
      : `${kind} ${format(schema['minimum'])} to ${format(max)}`;
  return kind;
}

const format = (n: number) => n.toLocaleString('en-US').replaceAll(',', '_');

function properties(schema: Schema): Record<string, Schema> {
  return (schema['properties'] as Record<string, Schema> | undefined) ?? {};
}

function requiredOf(schema: Schema): string[] {
  return (schema['required'] as string[] | undefined) ?? [];
}

function isObject(schema: Schema): boolean {
  return schema['type'] === 'object' && schema['properties'] !== undefined;
}

function isObjectArray(schema: Schema): boolean {
  if (schema['type'] !== 'array') return false;
  const items = schema['items'] as Schema;
  return isObject(items) || Array.isArray(items['oneOf']) || Array.isArray(items['anyOf']);
}

function isObjectUnion(schema: Schema): boolean {
  const union = schema['anyOf'] as Schema[] | undefined;
  return Array.isArray(union) && union.every(isObject);
}

function isEmptyContainer(value: unknown): boolean {
  return (
    (Array.isArray(value) && value.length === 0) ||
    (typeof value === 'object' && value !== null && Object.keys(value).length === 0)
  );
}

function escape(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}
