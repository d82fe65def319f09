// Lingxi Ledger dashboard. Plain ES module, no build step, no dependencies.
//
// Money arrives as decimal strings and is shown exactly as the API gives it; the only sums
// (the daily spend chart) are done on BigInt, never on JS numbers.
// The session token lives in sessionStorage and travels as a bearer header: no cookies, so
// no cross-site request can act as the user.

const TOKEN_KEY = 'lingxi.session';
/** Deposits are re-read this often while one is seen or confirming... */
const POLL_ACTIVE_MS = 2500;
/** ...and this often otherwise, so a new deposit shows without a reload. */
const POLL_IDLE_MS = 5000;
const USAGE_PAGE_SIZE = 20;
const DEPOSITS_PAGE_SIZE = 50;
const CHART_DAYS = 14;
/** The chart reads at most this many pages of 500 usage rows. */
const CHART_PAGES_MAX = 20;
const TELEGRAM_AUTH_FRAGMENT = '#telegram-auth';
/** sessionStorage: the nonce in this tab's widget return URL (see mountTelegramWidget). */
const TELEGRAM_NONCE_KEY = 'lingxi.telegramNonce';
const DEPOSIT_PENDING = new Set(['seen', 'confirming']);

const $ = (id) => {
  const node = document.getElementById(id);
  if (!node) throw new Error(`missing #${id}`);
  return node;
};

const state = {
  config: null,
  me: null,
  balanceKey: '',
  pollTimer: 0,
  pollGeneration: 0,
  usageCursors: [null],
  usageNextCursor: null,
  /** The cursor of each deposits page shown so far (null: the newest); the last is on screen. */
  depositCursors: [null],
  depositNextCursor: null,
  qrUrls: new Map(),
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, error) {
    super(error?.message ?? `request failed (HTTP ${status})`);
    this.status = status;
    this.code = error?.code ?? null;
  }
}

async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    cache: 'no-store',
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data?.error);
    if (response.status === 401 && token && path.startsWith('/api/me')) sessionLost(error);
    throw error;
  }
  return data;
}

// ---------------------------------------------------------------- DOM helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function timeEl(iso) {
  if (!iso) return el('span', { class: 'muted', text: '—' });
  const date = new Date(iso);
  return el('time', {
    datetime: iso,
    title: iso,
    text: date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }),
  });
}

function notice(message) {
  $('notice').textContent = message;
}

function showError(message) {
  const node = $('error');
  node.textContent = message;
  node.hidden = !message;
}

function errorText(error) {
  return error instanceof ApiError ? error.message : `Network error: ${error.message}`;
}

async function copyText(text, button) {
  const original = button.textContent;
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch {
    copied = false;
  }
  button.textContent = copied ? 'Copied' : 'Copy failed: select and copy by hand';
  notice(copied ? 'Copied to the clipboard.' : '');
  setTimeout(() => {
    button.textContent = original;
    if ($('notice').textContent === 'Copied to the clipboard.') notice('');
  }, 2000);
}

// ---------------------------------------------------------------- decimals (exact)

/** "12.340" → { units: 12340n, scale: 3 }; null for anything that is not a decimal string. */
function parseDecimal(text) {
  const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(text));
  if (!match) return null;
  const fraction = match[3] ?? '';
  return { units: BigInt(`${match[1]}${match[2]}${fraction}`), scale: fraction.length };
}

function alignDecimals(a, b) {
  const scale = Math.max(a.scale, b.scale);
  return [
    a.units * 10n ** BigInt(scale - a.scale),
    b.units * 10n ** BigInt(scale - b.scale),
    scale,
  ];
}

function addDecimal(a, b) {
  const [x, y, scale] = alignDecimals(a, b);
  return { units: x + y, scale };
}

function formatDecimal({ units, scale }) {
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(scale + 1, '0');
  let whole = digits.slice(0, digits.length - scale);
  let fraction = scale > 0 ? digits.slice(digits.length - scale) : '';
  fraction = fraction.replace(/0+$/, '');
  whole = whole.replace(/^0+(?=\d)/, '');
  return `${negative ? '-' : ''}${whole}${fraction ? `.${fraction}` : ''}`;
}

/** a / b as a number in [0, 1] for drawing (never for showing money). */
function decimalRatio(a, b) {
  const [x, y] = alignDecimals(a, b);
  if (y <= 0n) return 0;
  return Number((x * 10000n) / y) / 10000;
}

const ZERO = { units: 0n, scale: 0 };

// ---------------------------------------------------------------- sign-in

function showOnly(section) {
  for (const id of ['loading', 'signin', 'dashboard']) $(id).hidden = id !== section;
  $('account-bar').hidden = section !== 'dashboard';
}

function showSignIn(message) {
  stopPolling();
  showOnly('signin');
  const { config } = state;
  $('dev-signin').hidden = !config?.devSignIn;
  $('telegram-login').hidden = !config?.telegramBot;
  $('signin-unavailable').hidden = Boolean(config?.devSignIn || config?.telegramBot);
  if (config?.telegramBot) mountTelegramWidget(config.telegramBot);
  if (message) notice(message);
}

/**
 * Telegram's widget evaluates `data-onauth` with eval(), which this page's CSP forbids. With
 * `data-auth-url` it navigates to that URL with the signed fields appended instead; pointing it
 * at a fragment of this page keeps them in the browser (a fragment is never sent to a server).
 *
 * The fragment carries a random nonce kept in this tab's sessionStorage: signed fields that
 * arrive without it did not come from the widget this tab showed. Someone could put their own
 * fresh login in a link (or move a tab they opened to one) and sign the page in to their
 * account, whose deposit address it would then show: login CSRF. Such fields are not used.
 */
function mountTelegramWidget(bot) {
  const container = $('telegram-login');
  if (container.querySelector('script')) return;
  const script = el('script', {
    async: true,
    src: 'https://telegram.org/js/telegram-widget.js?22',
    'data-telegram-login': bot,
    'data-size': 'large',
    'data-userpic': 'false',
    'data-auth-url': `${location.origin}${location.pathname}${TELEGRAM_AUTH_FRAGMENT}-${telegramNonce()}`,
  });
  container.append(script);
}

/** This tab's nonce for the widget's return URL (crypto.randomUUID needs https; this does not). */
function telegramNonce() {
  let nonce = sessionStorage.getItem(TELEGRAM_NONCE_KEY);
  if (!nonce || !/^[0-9a-f]{32}$/.test(nonce)) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    nonce = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    sessionStorage.setItem(TELEGRAM_NONCE_KEY, nonce);
  }
  return nonce;
}

/**
 * The widget's fields from `#telegram-auth-<nonce>?id=..&hash=..`, or null when there are
 * none; `{ foreign: true }` when they did not come from this tab's widget (no or another nonce).
 */
function telegramAuthFromFragment() {
  const { hash } = location;
  if (!hash.startsWith(TELEGRAM_AUTH_FRAGMENT)) return null;
  const rest = hash.slice(TELEGRAM_AUTH_FRAGMENT.length);
  const separator = rest.search(/[?&]/);
  const tag = separator < 0 ? rest : rest.slice(0, separator);
  const query = separator < 0 ? '' : rest.slice(separator + 1);
  history.replaceState(null, '', `${location.pathname}${location.search}`);
  const fields = {};
  for (const [name, value] of new URLSearchParams(query)) fields[name] = value;
  if (!fields.hash) return null;
  const expected = sessionStorage.getItem(TELEGRAM_NONCE_KEY);
  if (!expected || tag !== `-${expected}`) return { foreign: true };
  return { fields };
}

async function signInWithTelegramFragment() {
  const received = telegramAuthFromFragment();
  if (!received) return false;
  if (received.foreign) {
    // Whoever is signed in here stays signed in.
    if (sessionStorage.getItem(TOKEN_KEY) && state.me === null)
      await openDashboard({ focus: false });
    else if (!sessionStorage.getItem(TOKEN_KEY)) showSignIn();
    showError(
      'This Telegram sign-in was not started on this page, so it was not used. Sign in with the Telegram button.',
    );
    return true;
  }
  try {
    const session = await api('POST', '/api/auth/telegram', received.fields);
    await startSession(session.token);
  } catch (error) {
    showSignIn();
    showError(`Telegram sign-in failed: ${errorText(error)}`);
  }
  return true;
}

async function onDevSignIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!form.reportValidity()) return;
  const telegramId = $('dev-telegram-id').value.trim();
  const username = $('dev-username').value.trim();
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  showError('');
  try {
    const session = await api('POST', '/api/auth/dev', {
      telegramId,
      ...(username ? { username } : {}),
    });
    await startSession(session.token);
  } catch (error) {
    showError(`Sign-in failed: ${errorText(error)}`);
  } finally {
    button.disabled = false;
  }
}

async function startSession(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  showError('');
  notice('');
  await openDashboard({ focus: true });
}

async function signOut() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  stopPolling();
  if (token) {
    try {
      await api('POST', '/api/auth/logout');
    } catch {
      // Signed out here either way; the session also ends on its own at expiry.
    }
  }
  endSession();
  showSignIn('You are signed out.');
  $('signin-title').focus();
}

function sessionLost(error) {
  endSession();
  showSignIn();
  showError(`Please sign in again: ${error.message}`);
}

function endSession() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.me = null;
  state.balanceKey = '';
  state.usageCursors = [null];
  state.usageNextCursor = null;
  state.depositCursors = [null];
  state.depositNextCursor = null;
  for (const url of state.qrUrls.values()) URL.revokeObjectURL(url);
  state.qrUrls.clear();
  for (const id of ['addresses', 'spend-chart']) $(id).replaceChildren();
  for (const id of ['deposits-table', 'usage-table', 'keys-table'])
    $(id).querySelector('tbody').replaceChildren();
  $('key-secret-value').value = '';
  $('key-secret').hidden = true;
  $('who').textContent = '';
}

// ---------------------------------------------------------------- the dashboard

async function openDashboard({ focus }) {
  let me;
  try {
    me = await api('GET', '/api/me');
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // sessionLost took over
    showOnly('signin');
    showError(`Could not load your account: ${errorText(error)}`);
    return;
  }
  state.me = me;
  $('who').textContent = me.username
    ? `@${me.username}`
    : me.firstName || `Telegram ${me.telegramId}`;
  renderBalance(me.balance);
  showOnly('dashboard');
  if (focus) $('balance-title').focus();
  await Promise.all([loadAddresses(), loadDeposits(), loadUsage(), loadChart(), loadKeys()]);
  schedulePoll();
}

function renderBalance(balance) {
  $('balance-available').textContent = balance.available;
  $('balance-posted').textContent = balance.posted;
  $('balance-held').textContent = balance.held;
  state.balanceKey = `${balance.available}|${balance.posted}|${balance.held}`;
}

// ---------------------------------------------------------------- deposit addresses

function confirmationsText(required) {
  if (required === 'solidified') return 'Credited once the block is solidified (about a minute).';
  if (required === 'finalized') return 'Credited once the block is finalized.';
  if (required === '0') return 'Credited as soon as it is seen.';
  return `Credited after ${required} confirmation${required === '1' ? '' : 's'}.`;
}

async function loadAddresses() {
  const container = $('addresses');
  const problem = $('addresses-error');
  let views;
  try {
    views = await api('GET', '/api/me/deposit-addresses');
  } catch (error) {
    problem.textContent = `Deposit addresses are not available: ${errorText(error)}`;
    problem.hidden = false;
    return;
  }
  problem.hidden = !(views.length === 0);
  problem.textContent = views.length === 0 ? 'No networks are configured for deposits.' : '';
  const cards = views.map((view) => {
    const addressId = `address-${view.network}`;
    // A network the service cannot give an address on (no xpub configured for it): said so,
    // with no address to copy; the other networks' cards are shown as usual.
    if (view.address === null)
      return el(
        'article',
        {
          class: 'card unavailable',
          'data-network': view.network,
          'aria-labelledby': `${addressId}-title`,
        },
        el('h3', { id: `${addressId}-title`, text: networkTitle(view.network) }),
        el('p', {
          class: 'warning',
          text: `Deposits on ${networkTitle(view.network)} are not available at the moment; do not send anything on this network.`,
        }),
      );
    const qr = el('img', {
      class: 'qr',
      width: 200,
      height: 200,
      alt: `QR code of your ${view.network} deposit address`,
      'data-network': view.network,
    });
    loadQr(view, qr);
    return el(
      'article',
      { class: 'card', 'data-network': view.network, 'aria-labelledby': `${addressId}-title` },
      el('h3', { id: `${addressId}-title`, text: networkTitle(view.network) }),
      el('span', { class: 'muted', text: 'Your deposit address' }),
      el('code', { id: addressId, class: 'address', text: view.address }),
      el(
        'div',
        { class: 'copy-row' },
        el('button', {
          type: 'button',
          class: 'secondary',
          'aria-describedby': addressId,
          text: 'Copy address',
          onclick: (event) => copyText(view.address, event.currentTarget),
        }),
      ),
      qr,
      el(
        'ul',
        { class: 'assets', 'aria-label': `Accepted on ${view.network}` },
        view.assets.map((asset) =>
          el(
            'li',
            {},
            el('strong', { text: asset.symbol }),
            asset.minDeposit === '0'
              ? ' — any amount'
              : ` — minimum ${asset.minDeposit} ${asset.symbol}`,
          ),
        ),
      ),
      el('p', { class: 'muted', text: confirmationsText(view.confirmations) }),
      el('p', {
        class: 'muted',
        text: `Send only the assets listed, on ${networkTitle(view.network)}. Anything else is not credited.`,
      }),
    );
  });
  container.replaceChildren(...cards);
}

function networkTitle(name) {
  return name.charAt(0).toUpperCase() + name.slice(1);
}

/** An <img> cannot send the bearer token, so the QR code is fetched and shown as a blob: URL. */
async function loadQr(view, img) {
  let url = state.qrUrls.get(view.address);
  if (!url) {
    try {
      const token = sessionStorage.getItem(TOKEN_KEY);
      const response = await fetch(
        `/api/me/deposit-addresses/${encodeURIComponent(view.network)}/qr.svg`,
        { headers: { authorization: `Bearer ${token}` } },
      );
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      url = URL.createObjectURL(await response.blob());
      state.qrUrls.set(view.address, url);
    } catch {
      img.replaceWith(el('p', { class: 'muted', text: 'The QR code could not be loaded.' }));
      return;
    }
  }
  img.src = url;
}

// ---------------------------------------------------------------- deposits

const DEPOSIT_STATUS_TEXT = {
  seen: 'Seen',
  confirming: 'Confirming',
  credited: 'Credited',
  ignored: 'Not credited',
  orphaned: 'Dropped (chain reorganised)',
  reversed: 'Reversed',
};

/** States in which a deposit is never credited (unless the chain brings it back). */
const DEPOSIT_ENDED = new Set(['ignored', 'orphaned', 'reversed']);

/** What an ended state means, when the API gives no reason of its own. */
const DEPOSIT_ENDED_TEXT = {
  orphaned: 'Its block left the chain before it was credited; not credited.',
  reversed: 'Its block left the chain after it was credited; the credit was taken back.',
};

async function loadDeposits() {
  const cursor = state.depositCursors[state.depositCursors.length - 1];
  const query = new URLSearchParams({ limit: String(DEPOSITS_PAGE_SIZE) });
  if (cursor) query.set('cursor', cursor);
  let page;
  try {
    page = await api('GET', `/api/me/deposits?${query}`);
  } catch (error) {
    $('deposits-status').textContent = `Could not load deposits: ${errorText(error)}`;
    return { pending: false };
  }
  const rows = page.data.map((deposit) => {
    const required = Number.parseInt(deposit.confirmationsRequired, 10);
    // A deposit that will never be credited (ignored, or its block left the chain) is not on
    // its way to the required count: no progress bar that reads as "still confirming".
    const counted =
      Number.isInteger(required) && required > 0 && !DEPOSIT_ENDED.has(deposit.status);
    const why = deposit.ignoreReason ?? DEPOSIT_ENDED_TEXT[deposit.status] ?? null;
    const done = Math.min(deposit.confirmations, counted ? required : deposit.confirmations);
    return el(
      'tr',
      { 'data-deposit-id': deposit.id, 'data-status': deposit.status },
      el('td', {}, timeEl(deposit.firstSeenAt)),
      el('td', { text: networkTitle(deposit.network) }),
      el('td', { class: 'num amount' }, deposit.amount ?? '—', ' ', deposit.asset ?? ''),
      el(
        'td',
        { class: 'confirmations' },
        counted
          ? el('progress', {
              max: required,
              value: done,
              'aria-label': `${deposit.confirmations} of ${required} confirmations`,
            })
          : null,
        el(
          'span',
          { class: 'count' },
          DEPOSIT_ENDED.has(deposit.status)
            ? '—'
            : counted
              ? `${deposit.confirmations} / ${deposit.confirmationsRequired}`
              : `${deposit.confirmations} (${deposit.confirmationsRequired})`,
        ),
      ),
      el(
        'td',
        {},
        el('span', {
          class: `badge status status-${deposit.status}`,
          text: DEPOSIT_STATUS_TEXT[deposit.status] ?? deposit.status,
        }),
        // Why it was not credited, in words (a tooltip alone is lost on a touch screen).
        why ? el('small', { class: 'reason muted', text: why }) : null,
      ),
      el(
        'td',
        { class: 'num credited' },
        deposit.amountUsd === null ? '—' : `${deposit.amountUsd} USD`,
      ),
      el('td', { class: 'mono', title: deposit.txHash }, shortHash(deposit.txHash)),
    );
  });
  $('deposits-table')
    .querySelector('tbody')
    .replaceChildren(...rows);
  $('deposits-empty').hidden = rows.length > 0 || state.depositCursors.length > 1;
  state.depositNextCursor = page.nextCursor;
  $('deposits-newer').disabled = state.depositCursors.length === 1;
  $('deposits-older').disabled = !page.nextCursor;
  $('deposits-pager').hidden = state.depositCursors.length === 1 && !page.nextCursor;
  $('deposits-page').textContent = rows.length ? `Page ${state.depositCursors.length}` : '';
  const pending = page.data.some((d) => DEPOSIT_PENDING.has(d.status));
  $('deposits-status').textContent = pending
    ? 'Waiting for confirmations; this list updates by itself.'
    : '';
  return { pending };
}

/** Older deposits: the API's cursor, as the usage pager does. */
async function depositsOlder() {
  if (!state.depositNextCursor) return;
  state.depositCursors.push(state.depositNextCursor);
  await loadDeposits();
}

async function depositsNewer() {
  if (state.depositCursors.length === 1) return;
  state.depositCursors.pop();
  await loadDeposits();
}

function shortHash(hash) {
  return hash.length > 18 ? `${hash.slice(0, 10)}…${hash.slice(-6)}` : hash;
}

// ---------------------------------------------------------------- polling

function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = 0;
  state.pollGeneration += 1;
}

function schedulePoll(pending = false) {
  clearTimeout(state.pollTimer);
  const generation = state.pollGeneration;
  state.pollTimer = setTimeout(() => poll(generation), pending ? POLL_ACTIVE_MS : POLL_IDLE_MS);
}

async function poll(generation) {
  if (generation !== state.pollGeneration || !sessionStorage.getItem(TOKEN_KEY)) return;
  let pending = false;
  if (!document.hidden) {
    const [deposits] = await Promise.all([loadDeposits(), refreshBalance()]);
    pending = deposits.pending;
  }
  if (generation === state.pollGeneration) schedulePoll(pending);
}

/** Re-reads the balance; when it moved (a credit, a charge), usage and keys' spend moved too. */
async function refreshBalance() {
  let balance;
  try {
    balance = await api('GET', '/api/me/balance');
  } catch {
    return;
  }
  const before = state.balanceKey;
  renderBalance(balance);
  if (before === state.balanceKey) return;
  const work = [loadChart()];
  // Leave a page the user is reading, and a revocation they are confirming, as they are.
  if (state.usageCursors.length === 1) work.push(loadUsage());
  if (!document.querySelector('#keys-table button.confirm')) work.push(loadKeys());
  await Promise.all(work);
}

async function refreshNow() {
  const generation = state.pollGeneration;
  clearTimeout(state.pollTimer);
  await poll(generation);
}

// ---------------------------------------------------------------- usage

async function loadUsage() {
  const cursor = state.usageCursors[state.usageCursors.length - 1];
  const query = new URLSearchParams({ limit: String(USAGE_PAGE_SIZE) });
  if (cursor) query.set('cursor', cursor);
  let page;
  try {
    page = await api('GET', `/api/me/usage?${query}`);
  } catch (error) {
    $('usage-page').textContent = `Could not load usage: ${errorText(error)}`;
    return;
  }
  const rows = page.data.map((row) =>
    el(
      'tr',
      { 'data-usage-id': row.id },
      el('td', {}, timeEl(row.startedAt)),
      el('td', { class: 'model', text: row.model }),
      el('td', { text: row.endpoint }),
      el('td', { class: 'num', text: row.promptTokens }),
      el('td', { class: 'num', text: row.completionTokens }),
      el(
        'td',
        { class: 'num cost', title: row.estimated ? 'estimated' : '' },
        row.costUsd,
        row.estimated ? '*' : '',
      ),
      el(
        'td',
        {},
        el('span', {
          class: `badge status-${row.outcome === 'ok' ? 'ok' : 'error'}`,
          text: `${row.outcome}${row.httpStatus ? ` (${row.httpStatus})` : ''}`,
        }),
      ),
    ),
  );
  $('usage-table')
    .querySelector('tbody')
    .replaceChildren(...rows);
  $('usage-empty').hidden = rows.length > 0 || state.usageCursors.length > 1;
  state.usageNextCursor = page.nextCursor;
  $('usage-newer').disabled = state.usageCursors.length === 1;
  $('usage-older').disabled = !page.nextCursor;
  $('usage-page').textContent = rows.length ? `Page ${state.usageCursors.length}` : '';
}

async function usageOlder() {
  if (!state.usageNextCursor) return;
  state.usageCursors.push(state.usageNextCursor);
  await loadUsage();
}

async function usageNewer() {
  if (state.usageCursors.length === 1) return;
  state.usageCursors.pop();
  await loadUsage();
}

// ---------------------------------------------------------------- daily spend chart

function utcDay(date) {
  return date.toISOString().slice(0, 10);
}

async function loadChart() {
  const today = new Date();
  const days = [];
  for (let back = CHART_DAYS - 1; back >= 0; back -= 1)
    days.push(utcDay(new Date(today.getTime() - back * 86_400_000)));
  const totals = new Map(days.map((day) => [day, ZERO]));
  let cursor = null;
  let truncated = false;
  try {
    for (let page = 0; ; page += 1) {
      if (page === CHART_PAGES_MAX) {
        truncated = true;
        break;
      }
      const query = new URLSearchParams({ from: days[0], limit: '500' });
      if (cursor) query.set('cursor', cursor);
      const result = await api('GET', `/api/me/usage?${query}`);
      for (const row of result.data) {
        const day = row.startedAt.slice(0, 10);
        const cost = parseDecimal(row.costUsd);
        if (totals.has(day) && cost) totals.set(day, addDecimal(totals.get(day), cost));
      }
      cursor = result.nextCursor;
      if (!cursor) break;
    }
  } catch (error) {
    $('chart-summary').textContent = `Could not load the chart: ${errorText(error)}`;
    return;
  }
  drawChart(days, totals, truncated);
}

function drawChart(days, totals, truncated) {
  const width = 700;
  const height = 200;
  const top = 18;
  const bottom = 24;
  const plot = height - top - bottom;
  const slot = width / days.length;
  let max = ZERO;
  let total = ZERO;
  for (const day of days) {
    const value = totals.get(day);
    total = addDecimal(total, value);
    const [a, b] = alignDecimals(value, max);
    if (a > b) max = value;
  }
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-labelledby': 'chart-caption chart-summary',
    preserveAspectRatio: 'xMidYMid meet',
  });
  chart.append(svg('line', { class: 'axis', x1: 0, x2: width, y1: top + plot, y2: top + plot }));
  days.forEach((day, index) => {
    const value = totals.get(day);
    const ratio = decimalRatio(value, max);
    const barHeight = value.units > 0n ? Math.max(2, ratio * plot) : 0;
    const x = index * slot + slot * 0.15;
    const bar = svg(
      'rect',
      {
        class: 'bar',
        x: x.toFixed(1),
        y: (top + plot - barHeight).toFixed(1),
        width: (slot * 0.7).toFixed(1),
        height: barHeight.toFixed(1),
        'data-day': day,
        'data-usd': formatDecimal(value),
      },
      svg('title', {}, `${day}: ${formatDecimal(value)} USD`),
    );
    chart.append(bar);
    if (index % 2 === days.length % 2 || index === days.length - 1) {
      chart.append(
        svg(
          'text',
          { x: (index * slot + slot / 2).toFixed(1), y: height - 6, 'text-anchor': 'middle' },
          day.slice(5),
        ),
      );
    }
  });
  if (max.units > 0n)
    chart.append(svg('text', { x: 2, y: 12 }, `max ${formatDecimal(max)} USD / day`));
  $('spend-chart').replaceChildren(chart);
  $('chart-summary').textContent =
    total.units > 0n
      ? `${formatDecimal(total)} USD spent in the last ${days.length} days${truncated ? ' (the most recent calls only)' : ''}.`
      : `Nothing spent in the last ${days.length} days.`;
}

// ---------------------------------------------------------------- API keys

async function loadKeys() {
  let page;
  try {
    page = await api('GET', '/api/me/keys');
  } catch (error) {
    $('keys-empty').textContent = `Could not load keys: ${errorText(error)}`;
    $('keys-empty').hidden = false;
    return;
  }
  const keys = [...page.data].sort((a, b) => {
    if (Boolean(a.revokedAt) !== Boolean(b.revokedAt)) return a.revokedAt ? 1 : -1;
    return b.createdAt.localeCompare(a.createdAt);
  });
  const rows = keys.map((key) =>
    el(
      'tr',
      { 'data-key-id': key.id, 'data-state': key.revokedAt ? 'revoked' : 'active' },
      el('td', { class: 'name', text: key.name ?? '—' }),
      el('td', { class: 'mono', text: `${key.prefix}…` }),
      el('td', {}, timeEl(key.createdAt)),
      el('td', {}, timeEl(key.lastUsedAt)),
      el('td', { class: 'num' }, key.spentUsd ?? '0', ' / ', key.spendLimitUsd ?? 'no limit'),
      el(
        'td',
        {},
        el('span', {
          class: `badge status-${key.revokedAt ? 'revoked' : 'active'}`,
          text: key.revokedAt ? 'Revoked' : 'Active',
        }),
      ),
      el('td', {}, key.revokedAt ? null : revokeControl(key)),
    ),
  );
  $('keys-table')
    .querySelector('tbody')
    .replaceChildren(...rows);
  $('keys-empty').textContent = 'No keys yet.';
  $('keys-empty').hidden = rows.length > 0;
}

/** Revoking takes two clicks: "Revoke", then "Revoke now" (or "Cancel"). */
function revokeControl(key) {
  const label = key.name ? `key ${key.name}` : `key ${key.prefix}`;
  const wrap = el('span', { class: 'copy-row' });
  const ask = el('button', {
    type: 'button',
    class: 'danger',
    'aria-label': `Revoke ${label}`,
    text: 'Revoke',
  });
  ask.addEventListener('click', () => {
    const confirm = el('button', {
      type: 'button',
      class: 'danger confirm',
      'aria-label': `Revoke ${label} now: it stops working at once`,
      text: 'Revoke now',
    });
    const cancel = el('button', { type: 'button', class: 'secondary', text: 'Cancel' });
    confirm.addEventListener('click', async () => {
      confirm.disabled = true;
      try {
        await api('DELETE', `/api/me/keys/${encodeURIComponent(key.id)}`);
        notice(`Revoked ${label}.`);
      } catch (error) {
        showError(`Could not revoke ${label}: ${errorText(error)}`);
      }
      await loadKeys();
    });
    cancel.addEventListener('click', () => {
      wrap.replaceChildren(ask);
      ask.focus();
    });
    wrap.replaceChildren(confirm, cancel);
    confirm.focus();
  });
  wrap.append(ask);
  return wrap;
}

async function onCreateKey(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!form.reportValidity()) return;
  const name = $('key-name').value.trim();
  const spendLimitUsd = $('key-limit').value.trim();
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  showError('');
  try {
    const created = await api('POST', '/api/me/keys', {
      ...(name ? { name } : {}),
      ...(spendLimitUsd ? { spendLimitUsd } : {}),
    });
    form.reset();
    $('key-secret-value').value = created.key;
    $('key-secret').hidden = false;
    $('key-secret-value').focus();
    $('key-secret-value').select();
    await loadKeys();
  } catch (error) {
    showError(`Could not create the key: ${errorText(error)}`);
  } finally {
    button.disabled = false;
  }
}

function dismissSecret() {
  $('key-secret-value').value = '';
  $('key-secret').hidden = true;
  $('key-name').focus();
}

// ---------------------------------------------------------------- start

async function main() {
  $('dev-signin').addEventListener('submit', onDevSignIn);
  $('sign-out').addEventListener('click', signOut);
  $('deposits-refresh').addEventListener('click', refreshNow);
  $('usage-refresh').addEventListener('click', () => Promise.all([loadUsage(), loadChart()]));
  $('usage-older').addEventListener('click', usageOlder);
  $('deposits-older').addEventListener('click', depositsOlder);
  $('deposits-newer').addEventListener('click', depositsNewer);
  $('usage-newer').addEventListener('click', usageNewer);
  $('key-create').addEventListener('submit', onCreateKey);
  $('key-secret-copy').addEventListener('click', (event) =>
    copyText($('key-secret-value').value, event.currentTarget),
  );
  $('key-secret-done').addEventListener('click', dismissSecret);
  $('api-base').textContent = `${location.origin}/v1`;
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.me) refreshNow();
  });
  window.addEventListener('hashchange', () => {
    if (location.hash.startsWith(TELEGRAM_AUTH_FRAGMENT)) signInWithTelegramFragment();
  });

  try {
    state.config = await api('GET', '/api/config');
  } catch (error) {
    showOnly('signin');
    showError(`The server did not answer: ${errorText(error)}`);
    return;
  }
  if (await signInWithTelegramFragment()) return;
  if (sessionStorage.getItem(TOKEN_KEY)) await openDashboard({ focus: false });
  else showSignIn();
}

main();
