import { parseAccountKey, type ChainFamily } from '../../chain-watchers/addresses/accountKey.js';
import { deriveEvmAddress } from '../../chain-watchers/addresses/deriveEvmAddress.js';
import { deriveTronAddress } from '../../chain-watchers/addresses/deriveTronAddress.js';
import { PrivateExtendedKeyRefusedError } from '../../chain-watchers/addresses/errors.js';
import type { Config } from '../config/schema.js';
import { fail, ok, reasonOf, warn, type DoctorCheck } from './check.js';

/** Long enough that guessing is hopeless: 32 characters of a random token. */
const ADMIN_TOKEN_GOOD_LENGTH = 32;
const PLACEHOLDER = /change-?me|example|placeholder|xxxx/i;

/**
 * The deposit keys (each family a network needs has an xpub that parses; an xprv is refused),
 * the admin token, and the Telegram bot token.
 */
export function checkKeys(config: Config): DoctorCheck[] {
  return [...checkWallets(config), checkAdminToken(config), ...checkTelegram(config)];
}

function checkWallets(config: Config): DoctorCheck[] {
  const checks: DoctorCheck[] = [];
  const families: Array<{ family: ChainFamily; key: string | undefined; field: string }> = [
    { family: 'evm', key: config.wallets.evmXpub, field: 'wallets.evmXpub' },
    { family: 'tron', key: config.wallets.tronXpub, field: 'wallets.tronXpub' },
  ];
  for (const { family, key, field } of families) {
    const networks = config.networks.filter((n) => n.kind === family).map((n) => n.name);
    const area = `wallet ${family}`;
    if (key === undefined) {
      if (networks.length > 0)
        checks.push(
          fail(
            area,
            `${field} is not set, but ${networks.join(', ')} need deposit addresses`,
            `set ${field} to the account-level xpub (m/44'/${family === 'evm' ? 60 : 195}'/0') of your wallet`,
          ),
        );
      continue;
    }
    try {
      parseAccountKey(key, family);
      const first = family === 'evm' ? deriveEvmAddress(key, 0) : deriveTronAddress(key, 0);
      const used = networks.length > 0 ? `for ${networks.join(', ')}` : 'no network uses it yet';
      checks.push(
        ok(
          area,
          `${field} is an xpub (${used}); the first deposit address, ${first.derivationPath}, is ${first.address}: check your wallet shows the same`,
        ),
      );
    } catch (error) {
      checks.push(
        error instanceof PrivateExtendedKeyRefusedError
          ? fail(
              area,
              `${field} is an extended PRIVATE key (xprv): refused`,
              `remove it from the config and the environment now, configure the xpub instead, and treat the key as exposed: move the funds it controls`,
            )
          : fail(
              area,
              `${field}: ${reasonOf(error)}`,
              `set ${field} to the account-level xpub (m/44'/${family === 'evm' ? 60 : 195}'/0'), an "xpub..." string of 111 characters`,
            ),
      );
    }
  }
  return checks;
}

function checkAdminToken(config: Config): DoctorCheck {
  const token = config.adminToken;
  const area = 'admin token';
  const fix = 'set adminToken (ADMIN_TOKEN) to a random secret: openssl rand -hex 32';
  if (token === undefined)
    return warn(area, 'not set: the admin API (/admin) is off; the CLI still works', fix);
  if (PLACEHOLDER.test(token)) return fail(area, 'still the example value', fix);
  if (token.length < ADMIN_TOKEN_GOOD_LENGTH)
    return warn(area, `${token.length} characters: short for a token that moves money`, fix);
  return ok(area, `set, ${token.length} characters`);
}

function checkTelegram(config: Config): DoctorCheck[] {
  const area = 'telegram';
  const token = config.telegram.botToken;
  if (token === undefined && config.telegram.devSignIn)
    return [
      warn(
        area,
        'no bot token: Telegram sign-in is off and the development sign-in (telegram.devSignIn) signs in any Telegram id from loopback clients',
        'for a service others use, remove telegram.devSignIn and set telegram.botToken (TELEGRAM_BOT_TOKEN) to the token @BotFather gave your bot',
      ),
    ];
  if (token === undefined)
    return [
      warn(
        area,
        'no bot token: Telegram sign-in is off and the development sign-in is off: nobody can sign in to the dashboard (users and keys come from the CLI or the admin API)',
        'set telegram.botToken (TELEGRAM_BOT_TOKEN) to the token @BotFather gave your bot',
      ),
    ];
  if (!/^\d{5,}:[A-Za-z0-9_-]{30,}$/.test(token))
    return [
      fail(
        area,
        'the bot token does not look like one ("<bot id>:<secret>" from @BotFather)',
        'set telegram.botToken (TELEGRAM_BOT_TOKEN) to the token @BotFather gave your bot',
      ),
    ];
  return [
    ok(area, `bot token set (bot id ${token.split(':')[0]}); the development sign-in is off`),
  ];
}
