import type { Kysely } from 'kysely';
import pg from 'pg';
import type { Database } from '../db/schema.js';
import { assertAccountUsable } from '../auth/sessions.js';
import { unauthorized } from '../errors.js';
import type { Logger } from '../log.js';
import { hashApiKey, hashesEqual, looksLikeApiKey, onLocalKeyChange } from './apiKeys.js';

export interface ApiCaller {
  keyId: string;
  userId: string;
  allowedModels: string[] | null;
  spendLimitUsd: string | null;
}

interface Cached {
  caller: ApiCaller;
  keyHash: string;
  expiresAt: number;
}

const CACHE_TTL_MS = 60_000;
const CACHE_MAX = 50_000;
/** How often the LISTEN session is asked to answer, and how long it has to. */
const PING_MS = 5_000;

export interface KeyAuthenticatorOptions {
  /**
   * The LISTEN session answers a query this often, within this long, or it is taken for lost
   * (a link that died without a word, which no error reports): nothing is cached until a new
   * session listens. Default 5 s.
   */
  pingMs?: number;
  /** How long a new LISTEN session may take to connect (0: for ever). Default 10 s. */
  connectTimeoutMs?: number;
}

/**
 * Looks up API keys by the SHA-256 of the key (one indexed lookup, never the key itself),
 * and caches what it found for a minute. A revocation, a key's new limit or model list, a
 * suspension or an erasure sends NOTIFY `lingxi_keys` in its own transaction (delivered exactly
 * when it commits), which empties every other process's cache, and empties this process's
 * after the commit, before it answers; while
 * the LISTEN connection is down nothing is cached, so a revoked key never outlives its
 * revocation by more than the notification's trip. A LISTEN connection whose link died
 * silently is found out by a query it must answer every `pingMs` within `pingMs`: a revoked key
 * outlives its revocation by at most twice that there.
 */
export class KeyAuthenticator {
  private readonly cache = new Map<string, Cached>();
  /**
   * Counts invalidations: a lookup that read its row before one (a revocation committing
   * while the lookup's answer was on its way) must not cache what it read.
   */
  private generation = 0;
  private listener: pg.Client | null = null;
  private listening = false;
  private closed = false;
  private readonly lastUsedWritten = new Map<string, number>();
  private stopLocalChanges: (() => void) | null = null;

  private readonly pingMs: number;
  private readonly connectTimeoutMs: number;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly databaseUrl: string,
    private readonly logger: Logger,
    options: KeyAuthenticatorOptions = {},
  ) {
    this.pingMs = options.pingMs ?? PING_MS;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  }

  async start(): Promise<void> {
    this.stopLocalChanges = onLocalKeyChange(() => this.invalidate());
    await this.listen();
  }

  async close(): Promise<void> {
    this.stopLocalChanges?.();
    this.closed = true;
    this.listening = false;
    await this.listener?.end().catch(() => {});
  }

  /** The caller behind `Authorization: Bearer <key>`; 401 `invalid_api_key` otherwise. */
  async authenticate(authorization: string | undefined): Promise<ApiCaller> {
    const key = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1];
    if (!key) throw unauthorized('missing API key: send "Authorization: Bearer <key>"');
    if (!looksLikeApiKey(key)) throw unauthorized('invalid API key');
    const keyHash = hashApiKey(key);
    const cached = this.cache.get(keyHash);
    if (
      cached &&
      cached.expiresAt > Date.now() &&
      this.listening &&
      hashesEqual(cached.keyHash, keyHash)
    ) {
      this.touch(cached.caller.keyId);
      return cached.caller;
    }
    const generation = this.generation;
    const row = await this.db
      .selectFrom('api_keys as k')
      .innerJoin('users as u', 'u.id', 'k.user_id')
      .select([
        'k.id',
        'k.user_id',
        'k.key_hash',
        'k.allowed_models',
        'k.spend_limit_usd',
        'k.revoked_at',
        'u.status',
      ])
      .where('k.key_hash', '=', keyHash)
      .executeTakeFirst();
    if (!row || !hashesEqual(row.key_hash, keyHash)) throw unauthorized('invalid API key');
    // An erasure revokes the account's keys: their holder is told why (a client retrying a
    // DELETE /api/me whose answer was lost), 403 `account_erased`, as a session is.
    if (row.status === 'erased') assertAccountUsable(row.status);
    if (row.revoked_at) throw unauthorized('this API key was revoked', 'invalid_api_key');
    // 403 `account_suspended` or `account_erased`, as a session of the same account answers.
    assertAccountUsable(row.status);
    const caller: ApiCaller = {
      keyId: row.id,
      userId: row.user_id,
      allowedModels: row.allowed_models,
      spendLimitUsd: row.spend_limit_usd,
    };
    if (this.listening && generation === this.generation) {
      if (this.cache.size >= CACHE_MAX) this.cache.clear();
      this.cache.set(keyHash, { caller, keyHash, expiresAt: Date.now() + CACHE_TTL_MS });
    }
    this.touch(caller.keyId);
    return caller;
  }

  /** Forgets every cached key (also done on NOTIFY lingxi_keys). */
  invalidate(): void {
    this.generation += 1;
    this.cache.clear();
  }

  /** Records last use at most once a minute per key, off the request path. */
  private touch(keyId: string): void {
    const now = Date.now();
    if ((this.lastUsedWritten.get(keyId) ?? 0) > now - 60_000) return;
    this.lastUsedWritten.set(keyId, now);
    void this.db
      .updateTable('api_keys')
      .set({ last_used_at: new Date(now) })
      .where('id', '=', keyId)
      .execute()
      .catch((error: unknown) => this.logger.warn({ err: error }, 'could not record key use'));
  }

  /**
   * One LISTEN session at a time: a lost one (pg reports a loss as 'error' and as 'end', often
   * both, sometimes twice) schedules exactly one new try, and so does a try that fails.
   */
  private async listen(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({
      connectionString: this.databaseUrl,
      connectionTimeoutMillis: this.connectTimeoutMs,
    });
    let lost = false;
    const timers: { ping?: NodeJS.Timeout } = {};
    const lose = () => {
      if (lost) return;
      lost = true;
      clearInterval(timers.ping);
      if (this.listener === client) this.listener = null;
      this.listening = false;
      this.invalidate();
      void client.end().catch(() => {});
      if (!this.closed) setTimeout(() => void this.listen().catch(() => {}), 1000).unref();
    };
    client.on('error', lose);
    client.on('end', lose);
    client.on('notification', () => this.invalidate());
    try {
      await client.connect();
      await client.query('listen lingxi_keys');
    } catch (error) {
      this.logger.warn(
        { err: error },
        'key cache disabled: cannot LISTEN for key changes; retrying',
      );
      lose();
      return;
    }
    // Lost while it was set up (lose() has scheduled the next try), or closed meanwhile.
    if (lost) return;
    if (this.closed) {
      lose();
      return;
    }
    this.listener = client;
    this.invalidate();
    this.listening = true;
    // A session whose link died silently (no reset: a failover, a dropped NAT entry) reports
    // nothing and hears no NOTIFY: one that does not answer in time is lost.
    timers.ping = setInterval(() => {
      const late = setTimeout(lose, this.pingMs);
      late.unref();
      client.query('select 1').then(
        () => clearTimeout(late),
        () => {
          clearTimeout(late);
          lose();
        },
      );
    }, this.pingMs);
    timers.ping.unref();
  }
}
