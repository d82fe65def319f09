import { createHash } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import QRCode from 'qrcode';
import { depositsUnavailable, getDepositAddresses } from '../../deposits/deposits.js';
import { badRequest, notFound } from '../../errors.js';
import type { Services } from '../../services.js';
import { publicConfig } from '../dashboard/publicConfig.js';
import { dashboardStaticDir, loadStaticFiles, type StaticFile } from '../dashboard/staticFiles.js';
import { accountAuth, currentAccount } from '../middleware/accountAuth.js';

/**
 * No inline script or style anywhere; the only foreign code is Telegram's Login Widget,
 * whose button is an iframe from oauth.telegram.org. QR codes arrive as blob: URLs (they are
 * fetched with the session token, which an <img src> cannot send).
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self' https://telegram.org",
  "style-src 'self'",
  "img-src 'self' blob:",
  "connect-src 'self'",
  'frame-src https://oauth.telegram.org',
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** Side of the QR image in CSS pixels: scannable from a phone held at a screen. */
const QR_SIZE_PX = 240;

/**
 * The user dashboard: the page and its assets at `/`, `GET /api/config` (what the page needs
 * before sign-in), and `GET /api/me/deposit-addresses/:network/qr.svg` (the caller's deposit
 * address as a QR code). Mounted last: it claims only these paths.
 */
export function dashboardRoutes(services: Services): Router {
  const { config, database, logger } = services.runtime;
  const files = loadStaticFiles(dashboardStaticDir());
  const pageConfig = publicConfig(config);
  if (config.telegram.botToken && !config.telegram.botUsername)
    logger.warn(
      'telegram.botToken is set but telegram.botUsername is not: the dashboard cannot show the Telegram Login Widget',
    );
  const router = new Router();

  router.get('/', (ctx) => serveFile(ctx, files.get('index.html')));
  for (const [name, file] of files) {
    if (name !== 'index.html') router.get(`/${name}`, (ctx) => serveFile(ctx, file));
  }

  router.get('/api/config', (ctx) => {
    ctx.set('cache-control', 'no-cache');
    ctx.body = pageConfig;
  });

  router.get('/api/me/deposit-addresses/:network/qr.svg', accountAuth(services), async (ctx) => {
    const networkName = ctx.params['network'] ?? '';
    if (!/^[a-z0-9-]{1,64}$/.test(networkName))
      throw badRequest('network must be a configured network name', 'network');
    // As GET /api/me/deposit-addresses shows it: EVM with its EIP-55 checksum.
    const addresses = await getDepositAddresses(database.db, config, currentAccount(ctx).userId, {
      form: 'display',
      logger,
    });
    const view = addresses.find((a) => a.network === networkName);
    if (!view) throw notFound(`no network named ${networkName}`, 'network_not_found', 'network');
    if (view.address === null) throw depositsUnavailable(view);
    // Per user behind one URL: the browser must not hand one user's code to another.
    ctx.set('cache-control', 'private, no-cache');
    ctx.set('vary', 'authorization');
    ctx.set('content-security-policy', "default-src 'none'");
    ctx.set('x-content-type-options', 'nosniff');
    ctx.status = 200;
    ctx.etag = `"${createHash('sha256').update(view.address).digest('base64url').slice(0, 27)}"`;
    if (ctx.fresh) {
      ctx.status = 304;
      return;
    }
    ctx.type = 'image/svg+xml';
    // The bare address: every wallet scans it; payment-URI schemes differ between wallets.
    ctx.body = await QRCode.toString(view.address, {
      type: 'svg',
      errorCorrectionLevel: 'M',
      margin: 2,
      width: QR_SIZE_PX,
    });
  });

  return router;
}

function serveFile(ctx: Context, file: StaticFile | undefined): void {
  if (!file) throw notFound('no such page');
  ctx.set('content-security-policy', DASHBOARD_CSP);
  ctx.set('x-content-type-options', 'nosniff');
  ctx.set('referrer-policy', 'no-referrer');
  ctx.set('cache-control', file.cacheControl);
  ctx.status = 200;
  ctx.etag = file.etag;
  if (ctx.fresh) {
    ctx.status = 304;
    return;
  }
  ctx.type = file.contentType;
  ctx.body = file.body;
}
