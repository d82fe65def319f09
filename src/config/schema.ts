import { z } from 'zod';
import { parseAccountKey, type ChainFamily } from '../../chain-watchers/addresses/accountKey.js';
import { deriveEvmAddress } from '../../chain-watchers/addresses/deriveEvmAddress.js';
import { deriveTronAddress } from '../../chain-watchers/addresses/deriveTronAddress.js';
import { networkSchema } from '../../chain-watchers/config.js';
import { IMAGE_TOKENS_MAX } from '../gateway/tokens.js';
import { cronScheduleNeverDue, cronScheduleSyntaxProblem } from './cronSchedule.js';

/** A non-negative decimal amount written as a string: "0.15", "1", "3000.5". */
const decimalString = z
  .string()
  .regex(/^\d+(\.\d+)?$/, 'must be a decimal string of digits, such as "0.15"');

const positiveInt = z.number().int().positive();

const httpSchema = z
  .strictObject({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8080),
    /** Largest request body the gateway and APIs accept. */
    bodyLimitBytes: positiveInt.default(1_048_576),
    /** Trust X-Forwarded-For for the client IP (only behind a proxy you run). */
    trustProxy: z.boolean().default(false),
    /**
     * After SIGTERM/SIGINT, how long the server keeps answering (with /readyz at 503) before
     * it stops accepting connections: time for a load balancer to take it out of rotation.
     */
    shutdownDelayMs: z.number().int().min(0).max(300_000).default(0),
    /** After that, how long requests in flight (streams included) may take to finish. */
    shutdownGraceMs: z.number().int().min(0).max(3_600_000).default(30_000),
    /** How long an unanswered Idempotency-Key claim outlives its last heartbeat. */
    idempotencyLeaseMs: z.number().int().min(1000).max(3_600_000).default(30_000),
  })
  .prefault({});

const databaseSchema = z
  .strictObject({
    /** When absent, an embedded PostgreSQL under `embedded.dir` is started. */
    url: z.string().optional(),
    poolSize: positiveInt.max(200).default(10),
    connectTimeoutMs: z.number().int().min(0).max(600_000).default(10_000),
    /** TCP keepalive on the pool's connections: idle time before the first probe; 0 turns it off. */
    keepAliveMs: z.number().int().min(0).max(3_600_000).default(10_000),
    /** How long a query on the pool waits for its answer before its connection is closed (0: for ever). */
    queryTimeoutMs: z.number().int().min(0).max(600_000).default(30_000),
    embedded: z
      .strictObject({
        dir: z.string().default('./data/pg'),
        port: z.number().int().min(1).max(65535).default(54329),
      })
      .prefault({}),
  })
  .prefault({});

const currencySchema = z.strictObject({
  code: z.string().regex(/^[A-Z][A-Z0-9-]{1,15}$/, 'must be upper case, such as "USDT"'),
  scale: z.number().int().min(0).max(30),
});

const providerSchema = z.strictObject({
  name: z.string().min(1),
  baseUrl: z.url(),
  apiKey: z.string().optional(),
  timeoutMs: positiveInt.default(120_000),
});

const priceSchema = z.strictObject({
  input: decimalString,
  cachedInput: decimalString.optional(),
  /** Prompt tokens written to the provider's prompt cache bill as input unless priced here. */
  cacheWrite: decimalString.optional(),
  output: decimalString,
  /** Reasoning tokens bill as output unless priced here. */
  reasoning: decimalString.optional(),
});

const modelSchema = z.strictObject({
  id: z.string().min(1),
  provider: z.string().min(1),
  upstreamModel: z.string().min(1),
  kind: z.enum(['chat', 'embedding']).default('chat'),
  pricePer1M: priceSchema,
  maxOutputTokensDefault: positiveInt.default(4096),
  /** Largest output a caller may ask for; above it the request is refused. */
  maxOutputTokensLimit: positiveInt.default(1_000_000),
  /**
   * The parameter `maxOutputTokensDefault` is sent as when a request sets no cap. Absent:
   * `max_completion_tokens` for OpenAI's reasoning models (o1, o3, o4, gpt-5, also by a routed
   * name such as `openai/o3-mini`: they refuse
   * `max_tokens`), else `max_tokens`.
   */
  outputCapParam: z.enum(['max_tokens', 'max_completion_tokens']).optional(),
  /** Most input tokens one image part may bill; the hold counts this much per image. */
  imageTokensMax: positiveInt.default(IMAGE_TOKENS_MAX),
});

const rateLimitSchema = z
  .strictObject({
    requestsPerMinute: positiveInt.default(600),
    tokensPerMinute: positiveInt.default(2_000_000),
  })
  .prefault({});

const gatewaySchema = z
  .strictObject({
    rateLimit: rateLimitSchema,
    /** A call (a stream included) is cut off after this long. */
    maxCallDurationMs: positiveInt.default(600_000),
    /** How long a hold outlives the longest possible call before it may be expired. */
    holdGraceMs: positiveInt.default(300_000),
    /** How long a stream whose client left still waits for the provider's headers. */
    clientGoneGraceMs: z.number().int().min(0).max(600_000).default(5000),
    /** Upper bound on tokens a prompt may have: used by the cost estimate. */
    bytesPerTokenMin: z.number().positive().default(1),
    /** Largest SSE event a provider's stream may send; past it the stream is cut as malformed. */
    maxStreamEventChars: positiveInt.default(8_388_608),
  })
  .prefault({});

const ledgerSchema = z
  .strictObject({
    /** Operations grouped into one database transaction at most. */
    batchMaxSize: positiveInt.max(10_000).default(500),
    /** Database writes in flight at once per process (1: they all meet on the revenue account, so one lane batches best). */
    batchConcurrency: positiveInt.max(64).default(1),
    /** How long a ledger write waits for the database's answer before its connection is closed (0: for ever). */
    writeTimeoutMs: z.number().int().min(0).max(600_000).default(15_000),
  })
  .prefault({});

const CRON_SCHEDULE =
  'must be a cron schedule (five fields, or six with seconds first), e.g. "17 3 * * *"';

const cronSchedule = z.string().superRefine((schedule, ctx) => {
  const problem = cronScheduleSyntaxProblem(schedule);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: `${CRON_SCHEDULE}: ${problem}` });
});

const CRON_JOBS = ['reconcile', 'expireHolds', 'seal', 'retention'] as const;

const cronSchema = z
  .strictObject({
    reconcile: cronSchedule.default('*/10 * * * *'),
    expireHolds: cronSchedule.default('* * * * *'),
    seal: cronSchedule.default('* * * * *'),
    retention: cronSchedule.default('17 3 * * *'),
    /** The IANA time zone the schedules are read in, the same for every cron process. */
    timezone: z.string().default('UTC').refine(isTimeZone, {
      message: 'must be an IANA time zone such as "UTC" or "Asia/Shanghai"',
    }),
  })
  .superRefine((schedules, ctx) => {
    // Each schedule as the cron role creates it, in the configured zone: whether one ever falls
    // due can depend on the zone (a time its change to summer time skips). A schedule or a zone
    // refused above is not tried.
    if (!isTimeZone(schedules.timezone)) return;
    for (const job of CRON_JOBS) {
      if (cronScheduleSyntaxProblem(schedules[job]) !== null) continue;
      const problem = cronScheduleNeverDue(schedules[job], schedules.timezone);
      if (problem !== null)
        ctx.addIssue({
          code: 'custom',
          path: [job],
          message: `must be a cron schedule that falls due read in cron.timezone (${schedules.timezone}), e.g. "17 3 * * *": ${problem}`,
        });
    }
  })
  .prefault({});

function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name });
    return name.length > 0;
  } catch {
    return false;
  }
}

/**
 * A token clients send as `Authorization: Bearer <token>`: printable ASCII without spaces. Any
 * other character could never be sent and compared (a trailing newline from a secret file, a
 * space, a letter outside ASCII that a client sends as UTF-8 bytes), so every request would be
 * refused with no hint why.
 */
const bearerTokenSchema = z
  .string()
  .min(16, 'must be at least 16 characters')
  .regex(
    /^[\x21-\x7e]*$/,
    'must be printable ASCII without spaces, tabs or line breaks (a trailing newline from a secret file counts): no client can send anything else as "Authorization: Bearer <token>"',
  );

/**
 * An account-level xpub, checked with the code that derives the deposit addresses from it
 * (parsed, and its first address derived): a key that does not parse stops the service at
 * start, naming the field, rather than leaving its family's deposits unavailable. The message
 * never repeats the key; an xprv is refused saying it must be treated as exposed.
 */
function xpubSchema(family: ChainFamily | 'any') {
  return z.string().superRefine((xpub, ctx) => {
    const problem = xpubProblem(xpub, family);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  });
}

function xpubProblem(xpub: string, family: ChainFamily | 'any'): string | null {
  try {
    // A retired key may be of either family: what is checked of it is the same.
    const as = family === 'any' ? 'evm' : family;
    parseAccountKey(xpub, as);
    if (as === 'evm') deriveEvmAddress(xpub, 0);
    else deriveTronAddress(xpub, 0);
    return null;
  } catch (error) {
    const reason = (error as Error).message;
    return family === 'any'
      ? reason.replace(/^the EVM extended public key/, 'the extended public key')
      : reason;
  }
}

export const configSchema = z.strictObject({
  http: httpSchema,
  database: databaseSchema,
  adminToken: bearerTokenSchema.optional(),
  metricsToken: bearerTokenSchema.optional(),
  currencies: z.array(currencySchema).default([]),
  providers: z.array(providerSchema).default([]),
  models: z.array(modelSchema).default([]),
  wallets: z
    .strictObject({
      evmXpub: xpubSchema('evm').optional(),
      tronXpub: xpubSchema('tron').optional(),
      retiredXpubs: z.array(xpubSchema('any')).default([]),
    })
    .prefault({}),
  networks: z.array(networkSchema).default([]),
  telegram: z
    .strictObject({
      // An empty token would leave Telegram sign-in off: refuse it rather than start without.
      botToken: z
        .string()
        .regex(/^\S+$/, 'must be the token from @BotFather (no spaces); leave the key out for none')
        .optional(),
      /** The bot's public username (no @): the dashboard's Login Widget needs it. */
      botUsername: z
        .string()
        .regex(
          /^[A-Za-z][A-Za-z0-9_]{3,31}$/,
          'must be a bot username without @, such as "lingxi_bot"',
        )
        .optional(),
      /**
       * The development sign-in (POST /api/auth/dev: any Telegram id, no proof, loopback
       * clients only). Off unless asked for: a config file must say so; only a service on
       * embedded defaults (no config file) turns it on, for trying the dashboard locally.
       */
      devSignIn: z.boolean().default(false),
      maxAuthAgeS: positiveInt.default(86_400),
      /** How far in the future a login's auth_date may be (clock skew) before it is refused. */
      maxClockSkewS: positiveInt.max(3600).default(60),
    })
    .prefault({}),
  retention: z
    .strictObject({
      usageLogDays: positiveInt.default(90),
      requestMetaDays: positiveInt.default(30),
    })
    .prefault({}),
  gateway: gatewaySchema,
  ledger: ledgerSchema,
  cron: cronSchema,
  alerts: z
    .strictObject({
      webhookUrl: z.url().optional(),
      /** Tries per run to post an alert; what still fails is posted again by the next run. */
      attempts: positiveInt.max(10).default(3),
      /** Deadline of one try. */
      timeoutMs: positiveInt.max(60_000).default(5000),
    })
    .prefault({}),
  reconcile: z
    .strictObject({
      /**
       * How long a reconciliation run waits for one already running (runs take turns) before it
       * gives up with `reconciliation_running` (0: it gives up at once).
       */
      lockWaitMs: z.number().int().min(0).max(3_600_000).default(300_000),
    })
    .prefault({}),
  sessions: z.strictObject({ ttlS: positiveInt.default(30 * 86_400) }).prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
export type ModelConfig = z.infer<typeof modelSchema>;
export type ProviderConfig = z.infer<typeof providerSchema>;
export type {
  NetworkConfig,
  EvmNetworkConfig,
  TronNetworkConfig,
  AssetConfig,
  PriceSourceConfig,
} from '../../chain-watchers/config.js';
