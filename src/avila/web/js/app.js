// The shell: sign-in, navigation (hash routes, one module per page), the shared date range.
import { api, session, whenUnauthorized } from './api.js';
import { currentRange, parseHash, updateParams } from './state.js';
import { disposeCharts, errorBox, h, markBusy } from './ui.js';

const PAGES = ['overview', 'live', 'funnels', 'retention', 'users', 'segments', 'ml', 'factory', 'keys'];
const $ = (id) => document.getElementById(id);
let cleanup = null;
let generation = 0;

function showSignIn(message) {
  session.key = null;
  session.me = null;
  $('shell').hidden = true;
  $('signin').hidden = false;
  const error = $('signin-error');
  error.hidden = !message;
  error.textContent = message || '';
  $('signin-key').focus();
}

async function signIn(key) {
  // GET /api/v1/me with the candidate key: its project and scopes (read is required).
  session.me = await api('/api/v1/me', { key });
  session.key = key;
  $('project').textContent = session.me.project;
  $('scopes').textContent = session.me.scopes.join(', ');
  document.body.dataset.admin = String(session.isAdmin);
  for (const el of document.querySelectorAll('[data-admin-only]')) el.hidden = !session.isAdmin;
  $('signin').hidden = true;
  $('shell').hidden = false;
  await route();
}

function syncRangeForm(range) {
  $('range-preset').value = range.preset;
  $('range-from').value = range.from;
  $('range-to').value = range.to;
  const tz = $('range-tz');
  if (![...tz.options].some((o) => o.value === range.tz)) tz.append(h('option', { value: range.tz }, range.tz));
  tz.value = range.tz;
}

function fillTimeZones() {
  const here = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : [];
  const names = ['UTC', ...new Set([here, ...zones].filter((z) => z && z !== 'UTC'))];
  $('range-tz').replaceChildren(...names.map((z) => h('option', { value: z }, z)));
}

async function route() {
  if (!session.key) return showSignIn();
  let { page, params } = parseHash();
  if (!PAGES.includes(page)) {
    page = 'overview';
    history.replaceState(null, '', '#/overview');
    params = new URLSearchParams();
  }
  const range = currentRange(params);
  syncRangeForm(range);
  for (const link of document.querySelectorAll('nav a')) {
    if (link.getAttribute('href') === `#/${page}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (cleanup) cleanup();
  cleanup = null;
  disposeCharts();
  const mine = ++generation;
  const main = $('main');
  const view = h('div', { 'data-page': page });
  main.replaceChildren(view);
  main.dataset.page = page;
  markBusy(main, true);
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · Avila Analytics`;
  try {
    const module = await import(`./pages/${page}.js`);
    const result = await module.render(view, {
      params, range, admin: session.isAdmin, scopes: session.me.scopes, stale: () => mine !== generation,
    });
    if (typeof result === 'function') {
      if (mine === generation) cleanup = result;
      else result();
    }
  } catch (err) {
    if (mine === generation) view.append(errorBox(err));
  } finally {
    if (mine === generation) markBusy(main, false);
  }
}

function onRangeChange(event) {
  const preset = $('range-preset').value;
  const daysChanged = event.target.id === 'range-from' || event.target.id === 'range-to';
  if (!daysChanged && preset !== 'custom') {
    updateParams({ preset, from: null, to: null, tz: $('range-tz').value }, { push: true });
  } else {
    updateParams({ preset: null, from: $('range-from').value, to: $('range-to').value, tz: $('range-tz').value }, { push: true });
  }
  route();
}

function start() {
  fillTimeZones();
  whenUnauthorized((err) => showSignIn(`Signed out: ${err.words}`));
  $('signin-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = event.submitter || event.target.querySelector('button');
    button.disabled = true;
    try {
      await signIn($('signin-key').value.trim());
      $('signin-key').value = '';
    } catch (err) {
      showSignIn(err.words || err.message);
    } finally {
      button.disabled = false;
    }
  });
  $('signout').addEventListener('click', () => {
    if (cleanup) cleanup();
    cleanup = null;
    disposeCharts();
    $('main').replaceChildren();
    showSignIn();
  });
  // The skip link must not change the hash (the hash is the route).
  document.querySelector('.skip').addEventListener('click', (event) => {
    event.preventDefault();
    $('main').focus();
  });
  $('range').addEventListener('change', onRangeChange);
  $('range').addEventListener('submit', (e) => e.preventDefault());
  window.addEventListener('hashchange', () => { if (session.me) route(); });
  if (session.key) signIn(session.key).catch((err) => showSignIn(err.words || err.message));
  else showSignIn();
}

start();
