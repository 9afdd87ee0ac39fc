// Small DOM helpers shared by the pages: elements, numbers, chart cards (chart + table + CSV),
// empty states and errors in words.
import { ApiError } from './api.js';
import { parseHash } from './state.js';

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'text') el.textContent = value;
    else el.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A value that rounds to zero (-0.001, -0) is "0", never "-0" (signDisplay 'negative'; browsers
// older than that option get the same by removing the sign of a zero).
function numberFormat(options) {
  try {
    return new Intl.NumberFormat('en-US', { ...options, signDisplay: 'negative' });
  } catch {
    const plain = new Intl.NumberFormat('en-US', options);
    return { format: (n) => plain.format(n).replace(/^-(?=0(\.0*)?$)/, '') };
  }
}
const integer = numberFormat({ maximumFractionDigits: 0 });
const decimal = numberFormat({ maximumFractionDigits: 2 });
export const fmt = {
  int: (n) => (n === null || n === undefined ? '—' : integer.format(n)),
  num: (n) => (n === null || n === undefined ? '—' : decimal.format(n)),
  pct: (r) => (r === null || r === undefined ? '—' : `${decimal.format(r * 100)} %`),
  // An amount in `currency` (an ISO 4217 code, from currencyOf in people.js): "R$49.90",
  // "€12.00". Without one (the events name none) the bare number; MIXED says the sum adds
  // amounts in different currencies.
  money: (n, currency) => {
    if (n === null || n === undefined) return '—';
    if (currency === MIXED) return `${decimal.format(n)} (mixed currencies)`;
    if (!currency) return decimal.format(n);
    return moneyFormat(currency).format(n);
  },
  secs: (s) => {
    if (s === null || s === undefined) return '—';
    if (s < 90) return `${decimal.format(s)} s`;
    if (s < 5400) return `${decimal.format(s / 60)} min`;
    if (s < 172800) return `${decimal.format(s / 3600)} h`;
    return `${decimal.format(s / 86400)} d`;
  },
  // In the time zone chosen in the range bar (the URL's tz), named: "02/12/2026, 09:14:58 GMT-3".
  time: (iso) => (iso ? new Date(iso).toLocaleString('en-GB', { timeZone: displayZone(), timeZoneName: 'short' }) : '—'),
  // An axis tick in that zone: "09:14" in a range of a day or less, "02/12 09:14" beyond.
  axisTime: (ms, spanHours) => (spanHours > 24
    ? new Date(ms).toLocaleString('en-GB', { timeZone: displayZone(), hourCycle: 'h23', day: '2-digit', month: '2-digit', hour: '2-digit', minute: '2-digit' })
    : fmt.clock(ms, { seconds: false })),
  // A time of day in that zone: "09:14:58" (seconds: false gives "09:14").
  clock: (ms, { seconds = true } = {}) => new Date(ms).toLocaleTimeString('en-GB', {
    timeZone: displayZone(), hourCycle: 'h23', hour: '2-digit', minute: '2-digit', second: seconds ? '2-digit' : undefined,
  }),
};

// The time zone picked in the range bar; UTC when none is set or the URL names an unknown one.
export function displayZone() {
  const tz = parseHash().params.get('tz') || 'UTC';
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone: tz });
    return tz;
  } catch {
    return 'UTC';
  }
}

export const MIXED = 'mixed';
const moneyFormats = new Map();
function moneyFormat(currency) {
  if (!moneyFormats.has(currency)) {
    let format;
    try {
      format = numberFormat({ style: 'currency', currency });
    } catch {
      // Not a code Intl knows: the number, then the code as the events wrote it.
      format = { format: (n) => `${decimal.format(n)} ${currency}` };
    }
    moneyFormats.set(currency, format);
  }
  return moneyFormats.get(currency);
}

// An id from the data (a user id can be 200 characters with no place to break): one line, cut
// with an ellipsis to fit its table column, whole in the tooltip and in the link.
export function idLink(id, href) {
  return h('a', { href, class: 'id', title: id }, id);
}

export function tiles(items) {
  return h('div', { class: 'tiles' }, items.map(([label, value, id]) =>
    h('div', { class: 'tile', 'data-kpi': id },
      h('div', { class: 'label' }, label), h('div', { class: 'value' }, value))));
}

// Text for a place ECharts renders as HTML (a tooltip `formatter` that returns a string):
// names and ids come from the data (user, device and event names) and must stay text.
const HTML_ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export function escapeHtml(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

export function errorBox(err) {
  const words = err instanceof ApiError ? err.words : `Something went wrong in the page: ${err.message}`;
  return h('p', { class: 'error', role: 'alert' }, words);
}

// "Nothing here yet" with the two ways to send the first event.
export function emptyState(what = 'No events in this range yet.') {
  const origin = location.origin;
  return h('div', { class: 'empty', 'data-empty': '' },
    h('p', {}, h('strong', {}, what), ' Send your first event:'),
    h('pre', {}, `curl -X POST ${origin}/api/v1/events \\\n  -H "Content-Type: application/json" -H "x-api-key: YOUR_INGEST_KEY" \\\n  -d '{"event": {"user_id": "user_1", "event_type": {"type": "PageView", "data": {"url": "/"}}}}'`),
    h('p', {}, 'or add the tracker to your site:'),
    h('pre', {}, `<script src="${origin}/avila.js" data-api-key="YOUR_INGEST_KEY" defer></script>`));
}

// ---- tables and CSV -------------------------------------------------------------------
// columns: [{key, label, num?, format?, wrap?}]; wrap lets a long value (a time) take two lines.
export function table(columns, rows, caption) {
  return h('table', {},
    caption ? h('caption', { class: 'muted' }, caption) : null,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((c) => {
      const value = row[c.key];
      return h('td', { class: [c.num ? 'num' : '', c.wrap ? 'wrap' : ''].join(' ').trim() || null, 'data-col': c.key },
        c.format ? c.format(value, row) : value ?? '—');
    })))));
}

function csvCell(value) {
  const text = value === null || value === undefined ? '' : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCsv(columns, rows) {
  const lines = [columns.map((c) => csvCell(c.label)).join(',')];
  for (const row of rows) lines.push(columns.map((c) => csvCell(row[c.key])).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

export function download(name, text, type = 'text/csv') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h('a', { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---- charts ---------------------------------------------------------------------------
const live = new Set();
export function disposeCharts() {
  for (const chart of live) chart.dispose();
  live.clear();
}
window.addEventListener('resize', () => { for (const chart of live) chart.resize(); });

// Axis labels that fit the chart's width. Category labels on a y axis are names from the data
// (users, devices, pages): each gets at most a third of the width, cut with an ellipsis (the
// tooltip has it whole), so one long id cannot squeeze every bar to nothing or run out of the
// card. On an x axis that shows every category (interval 0, e.g. funnel steps) each label gets its
// column's width, so on a phone the names are cut instead of written over each other. Value
// axes drop the tick labels that would overlap ("0 2,0004,0006,000" on a phone).
function fitAxisLabels(option, width) {
  const cap = Math.max(48, Math.round(width / 3));
  for (const axis of [].concat(option.yAxis ?? [])) {
    if (!axis || axis.type !== 'category') continue;
    const label = axis.axisLabel || {};
    axis.axisLabel = { overflow: 'truncate', ...label, width: Math.min(label.width ?? cap, cap) };
  }
  for (const axis of [].concat(option.xAxis ?? [])) {
    const label = axis?.axisLabel || {};
    if (axis?.type !== 'category' || label.interval !== 0 || !axis.data?.length) continue;
    const column = Math.max(24, Math.floor((width * 0.9) / axis.data.length) - 6);
    axis.axisLabel = { overflow: 'truncate', ...label, width: Math.min(label.width ?? column, column) };
  }
  for (const axis of [...[].concat(option.xAxis ?? []), ...[].concat(option.yAxis ?? [])]) {
    if (axis && axis.type === 'value') axis.axisLabel = { hideOverlap: true, ...(axis.axisLabel || {}) };
  }
}

export const palette = ['#2456a6', '#e07b39', '#3a9d5d', '#b83b5e', '#7a5cc7', '#2c9fb0', '#a68a24', '#6b7785'];

// A card with a chart, a "Table" toggle and a "CSV" download of the same numbers.
export function chartCard({ title, name, option, columns, rows, tall = false, note, showTable = false, onClick }) {
  const slug = name || title.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  const tableWrap = h('div', { class: 'table-wrap', hidden: !showTable });
  const plot = h('div', { class: `chart${tall ? ' tall' : ''}`, role: 'img', 'aria-label': `${title} chart; use Table for the numbers` });
  const toggle = h('button', { type: 'button', class: 'secondary', 'aria-expanded': String(showTable) }, 'Table');
  const card = h('section', { class: 'card', 'data-chart': slug },
    h('div', { class: 'card-head' }, h('h2', {}, title),
      h('div', { class: 'actions' }, toggle,
        h('button', { type: 'button', class: 'secondary', onclick: () => download(`${slug}.csv`, toCsv(state.columns, state.rows)) }, 'CSV'))),
    note ? h('p', { class: 'muted' }, note) : null,
    plot, tableWrap);
  const state = { columns, rows };
  toggle.addEventListener('click', () => {
    const open = tableWrap.hidden;
    tableWrap.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
  });
  let chart = null;
  const render = () => {
    tableWrap.replaceChildren(table(state.columns, state.rows));
    if (!chart) {
      chart = window.echarts.init(plot, null, { renderer: 'svg' });
      live.add(chart);
      if (onClick) chart.on('click', onClick);
    }
    fitAxisLabels(state.option, plot.clientWidth || 300);
    chart.setOption(state.option, true);
  };
  state.option = { color: palette, animation: false, animationDuration: 0, animationDurationUpdate: 0, ...option };
  // Draw once attached (ECharts needs the element's size).
  queueMicrotask(render);
  return {
    card,
    get chart() { return chart; },
    update(nextOption, nextRows, nextColumns) {
      state.option = { color: palette, animation: false, animationDuration: 0, animationDurationUpdate: 0, ...nextOption };
      state.rows = nextRows;
      if (nextColumns) state.columns = nextColumns;
      render();
    },
  };
}

// Page-level busy/ready marker the tests and the benchmark wait on.
export function markBusy(main, busy) {
  main.setAttribute('aria-busy', busy ? 'true' : 'false');
}
