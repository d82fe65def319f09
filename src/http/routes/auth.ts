import Router from '@koa/router';
import type { Context } from 'koa';
import { revokeSession } from '../../auth/sessions.js';
import {
  devSignInDisabled,
  signInDev,
  signInWithTelegram,
  telegramNotConfigured,
  type SignInResult,
} from '../../auth/signIn.js';
import { AppError, badRequest } from '../../errors.js';
import type { Services } from '../../services.js';
import { accountAuth, currentAccount } from '../middleware/accountAuth.js';
import { jsonBody } from '../middleware/jsonBody.js';
import { objectBody } from '../objectBody.js';

/**
 * /api/auth: sign in with Telegram (a session token out), sign out. Without a bot token the
 * Telegram route answers 503. The development sign-in exists only when the config asks for
 * it (`telegram.devSignIn`, which a bot token excludes), and then answers loopback clients
 * only; otherwise the route does not exist at all.
 */
export function authRoutes(services: Services): Router {
  const { config, database, logger } = services.runtime;
  const { db } = database;
  const router = new Router({ prefix: '/api/auth' });
  router.use(jsonBody(config.http.bodyLimitBytes));

  router.post('/telegram', async (ctx) => {
    if (!config.telegram.botToken) throw telegramNotConfigured();
    const result = await signInWithTelegram(db, config, ctx.state['body'], new Date());
    answerSignIn(ctx, result);
  });

  if (config.telegram.devSignIn) {
    logger.warn(
      'telegram.devSignIn is on: POST /api/auth/dev signs in any Telegram id, with no proof, from loopback clients',
    );
    router.post('/dev', async (ctx) => {
      // Checked again per request: the route must never work unless asked for, nor beside a bot token.
      if (!config.telegram.devSignIn || config.telegram.botToken) throw devSignInDisabled();
      if (!isLocalClient(ctx))
        throw new AppError(
          'dev_sign_in_local_only',
          'the development sign-in only answers clients on this machine, not through a proxy',
          { status: 403 },
        );
      const body = objectBody(ctx);
      const result = await signInDev(
        db,
        config,
        { telegramId: body['telegramId'], username: body['username'] },
        new Date(),
      );
      answerSignIn(ctx, result);
    });
  }

  router.post('/logout', accountAuth(services), async (ctx) => {
    const account = currentAccount(ctx);
    if (account.via !== 'session' || !account.sessionId)
      throw badRequest(
        'logout signs out a session token; revoke an API key with DELETE /api/me/keys/:id',
        null,
        'not_a_session',
      );
    ctx.body = await revokeSession(db, {
      sessionId: account.sessionId,
      userId: account.userId,
      now: new Date(),
    });
  });

  return router;
}

function answerSignIn(ctx: Context, result: SignInResult): void {
  ctx.set('cache-control', 'no-store');
  ctx.status = 200;
  ctx.body = {
    token: result.token,
    tokenType: 'Bearer',
    sessionId: result.sessionId,
    expiresAt: result.expiresAt,
    userId: result.userId,
    created: result.created,
  };
}

/**
 * A client on this machine talking to us directly: the socket's own peer is loopback (not
 * `ctx.ip`, which `http.trustProxy` takes from X-Forwarded-For, a header any client writes),
 * and the request carries no forwarding header (a reverse proxy on this machine would make
 * every remote client's socket look local). And it is not a web page using the browser of
 * someone on this machine: the Host it called must be a loopback name (a page on a name that
 * resolves to 127.0.0.1 for a moment, DNS rebinding, calls us by that name), and an Origin,
 * when the browser sends one, must be a loopback origin too (a page elsewhere posting here).
 */
function isLocalClient(ctx: Context): boolean {
  const peer = ctx.req.socket.remoteAddress ?? '';
  const loopback = peer === '::1' || peer.startsWith('127.') || peer.startsWith('::ffff:127.');
  const forwarded = ['forwarded', 'x-forwarded-for', 'x-real-ip'].some(
    (header) => ctx.get(header) !== '',
  );
  const origin = ctx.get('origin');
  return (
    loopback &&
    !forwarded &&
    isLoopbackHost(ctx.req.headers.host ?? '') &&
    (origin === '' || isLoopbackOrigin(origin))
  );
}

/** `localhost`, `127.x.y.z` or `[::1]`, with an optional port. */
const LOOPBACK_HOST = /^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d{1,5})?$/i;

function isLoopbackHost(host: string): boolean {
  return LOOPBACK_HOST.test(host);
}

function isLoopbackOrigin(origin: string): boolean {
  const match = /^https?:\/\/([^/]+)$/i.exec(origin);
  return match !== null && isLoopbackHost(match[1]!);
}
