// Funnels: a builder (steps, window, mode, breakdown) whose state is in the URL, the funnel
// chart with conversion and drop-off per step, a breakdown table, and the users who dropped
// after a step (POST /api/v1/analytics/funnel/dropped for the same query).
import { api } from '../api.js';
import { rangeQuery, updateParams } from '../state.js';
import { chartCard, download, errorBox, fmt, h, idLink, table, toCsv } from '../ui.js';

export const EVENT_TYPES = ['page_view', 'click', 'search', 'product_view', 'add_to_cart', 'remove_from_cart',
  'checkout', 'purchase', 'sign_up', 'login', 'logout', 'form_submit', 'video_play', 'custom'];
const MODES = { ordered: 'Ordered', strict_increase: 'Strictly increasing time', strict_order: 'Strict order (nothing in between)', unordered: 'Any order' };
const MATCHES = ['exact', 'prefix', 'contains', 'regex'];
const WINDOWS = { 3600: '1 hour', 86400: '1 day', 604800: '7 days', 1209600: '14 days', 2592000: '30 days' };
const BREAKDOWNS = { '': 'None', 'context.device.device_type': 'Device', 'context.device.browser': 'Browser', 'context.device.os': 'OS', 'context.location.country': 'Country' };
const DEFAULT_STEPS = [['page_view', '', 'exact'], ['product_view', '', 'exact'], ['add_to_cart', '', 'exact'], ['checkout', '', 'exact'], ['purchase', '', 'exact']];

function readSteps(params) {
  try {
    const steps = JSON.parse(params.get('steps') || 'null');
    if (Array.isArray(steps) && steps.length >= 2) return steps.map(([t, v = '', m = 'exact']) => [t, v, m]);
  } catch { /* a hand-edited URL: fall back to the default funnel */ }
  return DEFAULT_STEPS.map((s) => [...s]);
}

export function funnelBody(steps, options, range) {
  const body = {
    funnel_name: 'Dashboard funnel',
    steps: steps.map(([type, value, match], i) => ({
      name: `${i + 1}. ${type}${value ? ` ${value}` : ''}`, condition_type: type, condition_value: value, match,
    })),
    conversion_window_seconds: Number(options.window),
    mode: options.mode,
    ...rangeQuery(range),
  };
  if (options.breakdown) body.breakdown = options.breakdown;
  return body;
}

function select(label, values, current, attrs = {}) {
  const entries = Array.isArray(values) ? values.map((v) => [v, v]) : Object.entries(values);
  return h('label', {}, label, h('select', attrs, entries.map(([v, text]) => h('option', { value: v, selected: String(v) === String(current) }, text))));
}

const DROPPED_LIMIT = 1000;
const DROPPED_COLUMNS = [
  { key: 'user_id', label: 'User', format: (v) => idLink(v, `#/users?user=${encodeURIComponent(v)}`) },
];

// A step row's drop-off (users who reached the previous step and not this one) is a button.
function stepColumns(showDropped) {
  return [
    { key: 'step', label: 'Step', num: true },
    { key: 'name', label: 'Name' },
    { key: 'count', label: 'Users', num: true },
    { key: 'conversion_rate', label: 'Conversion', num: true, format: fmt.pct },
    { key: 'step_conversion_rate', label: 'From previous', num: true, format: fmt.pct },
    {
      key: 'drop_off', label: 'Dropped', num: true,
      format: (v, row) => (row.step > 1 && v > 0
        ? h('button', { type: 'button', class: 'link', 'data-dropped': row.step - 1, 'aria-label': `List the ${v} users who dropped after step ${row.step - 1}`, onclick: () => showDropped(row.step - 1) }, fmt.int(v))
        : fmt.int(v)),
    },
    { key: 'median_time_to_convert_seconds', label: 'Median time', num: true, format: fmt.secs },
  ];
}

export async function render(view, { params, range }) {
  view.append(h('h1', {}, 'Funnels'));
  const steps = readSteps(params);
  const options = {
    window: WINDOWS[params.get('window')] ? params.get('window') : '1209600',
    mode: MODES[params.get('mode')] ? params.get('mode') : 'ordered',
    breakdown: BREAKDOWNS[params.get('breakdown')] !== undefined ? params.get('breakdown') || '' : '',
  };
  // Suggestions: the event types and pages seen in the range.
  const overview = await api('/api/v1/analytics/overview', { query: { ...rangeQuery(range), top_n: 50 } });
  const seen = Object.keys(overview.events_by_type || {});
  view.append(h('datalist', { id: 'page-suggestions' }, (overview.top_pages || []).map((p) => h('option', { value: p.url }))));

  const list = h('div', { class: 'steps' });
  const form = h('form', { class: 'card builder', 'aria-label': 'Funnel builder' }, h('h2', {}, 'Steps'), list);
  const drawSteps = () => {
    list.replaceChildren(...steps.map(([type, value, match], i) => h('div', { class: 'step', 'data-step': i },
      h('span', { class: 'n', 'aria-hidden': 'true' }, i + 1),
      select(`Step ${i + 1} event`, EVENT_TYPES.map((t) => [t, seen.includes(t) ? t : `${t} (none in range)`]).reduce((o, [k, v]) => ({ ...o, [k]: v }), {}), type,
        { 'data-field': 'type', onchange: (e) => { steps[i][0] = e.target.value; } }),
      h('label', {}, 'Value (empty = any)', h('input', {
        value, list: type === 'page_view' ? 'page-suggestions' : null, 'data-field': 'value', placeholder: 'any',
        oninput: (e) => { steps[i][1] = e.target.value; },
      })),
      select('Match', MATCHES, match, { 'data-field': 'match', onchange: (e) => { steps[i][2] = e.target.value; } }),
      h('button', {
        type: 'button', class: 'secondary', 'aria-label': `Remove step ${i + 1}`, disabled: steps.length <= 2,
        onclick: () => { steps.splice(i, 1); drawSteps(); },
      }, 'Remove'))));
  };
  drawSteps();
  const windowSel = select('Conversion window', WINDOWS, options.window, { id: 'funnel-window' });
  const modeSel = select('Mode', MODES, options.mode, { id: 'funnel-mode' });
  const breakdownSel = select('Breakdown', BREAKDOWNS, options.breakdown, { id: 'funnel-breakdown' });
  form.append(h('div', { class: 'row' },
    h('button', { type: 'button', class: 'secondary', disabled: false, onclick: () => { if (steps.length < 20) { steps.push(['purchase', '', 'exact']); drawSteps(); } } }, 'Add step'),
    windowSel, modeSel, breakdownSel,
    h('button', { type: 'submit', id: 'funnel-run' }, 'Show funnel')));
  view.append(form);
  const results = h('div', { class: 'grid', id: 'funnel-results' });
  const droppedView = h('div', { id: 'funnel-dropped-view' });
  view.append(results, droppedView);

  // `after`: the 1-based step the listed users reached last.
  const showDropped = async (after, names, query) => {
    updateParams({ dropped: after });
    const title = `Dropped after step ${after}${names ? ` (${names[after - 1]})` : ''}`;
    droppedView.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      const body = { ...query, step: after, limit: DROPPED_LIMIT };
      delete body.breakdown;
      const dropped = await api('/api/v1/analytics/funnel/dropped', { method: 'POST', body });
      const rows = dropped.users;
      const slug = `funnel-dropped-step-${after}`;
      droppedView.replaceChildren(h('section', { class: 'card', 'data-chart': 'funnel-dropped', id: 'funnel-dropped', 'data-total': dropped.total },
        h('div', { class: 'card-head' }, h('h2', {}, `${title}: `, h('span', { id: 'funnel-dropped-total' }, fmt.int(dropped.total)), ' users'),
          h('div', { class: 'actions' },
            h('button', { type: 'button', class: 'secondary', onclick: () => download(`${slug}.csv`, toCsv(DROPPED_COLUMNS, rows)) }, 'CSV'))),
        rows.length < dropped.total ? h('p', { class: 'muted' }, `Showing the first ${fmt.int(rows.length)} by user id.`) : null,
        rows.length ? h('div', { class: 'table-wrap' }, table(DROPPED_COLUMNS, rows)) : h('p', { class: 'muted' }, 'No users dropped at this step.')));
    } catch (err) {
      droppedView.replaceChildren(errorBox(err));
    }
  };

  let sharedDropped = params.get('dropped');
  const run = async () => {
    options.window = windowSel.querySelector('select').value;
    options.mode = modeSel.querySelector('select').value;
    options.breakdown = breakdownSel.querySelector('select').value;
    updateParams({ steps: JSON.stringify(steps), window: options.window, mode: options.mode, breakdown: options.breakdown, dropped: null });
    results.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    droppedView.replaceChildren();
    try {
      const query = funnelBody(steps, options, range);
      const funnel = await api('/api/v1/analytics/funnel', { method: 'POST', body: query });
      results.replaceChildren();
      if (!funnel.total_users) {
        // Nobody did step 1: a chart of zeros (and "0 % conversion") would look like a result.
        results.append(h('div', { class: 'empty', 'data-empty': '' }, h('p', {},
          h('strong', {}, 'No user did step 1 in this range.'),
          ' Check the first step\u2019s event and value, or choose a longer date range.')));
        return;
      }
      const names = funnel.steps.map((st) => st.name);
      const pick = (after) => showDropped(after, names, query);
      drawFunnel(results, funnel, pick);
      const after = Number(sharedDropped);
      sharedDropped = null; // a shared URL's list is shown once; a new query starts without one
      if (Number.isInteger(after) && after >= 1 && after < steps.length) await pick(after);
    } catch (err) {
      results.replaceChildren(errorBox(err));
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); run(); });
  await run();
}

function drawFunnel(results, funnel, showDropped) {
  const rows = funnel.steps.map((s, i) => ({ step: i + 1, ...s }));
  results.append(h('p', { id: 'funnel-summary' },
    `${fmt.int(funnel.total_users)} users entered; overall conversion `,
    h('strong', { 'data-overall': funnel.overall_conversion_rate }, fmt.pct(funnel.overall_conversion_rate)), '.'));
  const names = rows.map((r) => r.name);
  const card = chartCard({
    title: 'Funnel', name: 'funnel', tall: true, columns: stepColumns(showDropped), rows,
    note: 'Select a drop-off (a grey bar, or a Dropped number in the table) to list its users.',
    onClick: (p) => { if (p.seriesName === 'Dropped' && p.dataIndex > 0) showDropped(p.dataIndex); },
    option: {
      grid: { left: 8, right: 16, top: 30, bottom: 8, containLabel: true },
      tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
      legend: { top: 0 },
      xAxis: { type: 'category', data: names, axisLabel: { interval: 0, width: 110, overflow: 'truncate' } },
      yAxis: { type: 'value', minInterval: 1 }, // users
      series: [
        { type: 'bar', name: 'Converted', stack: 'f', data: rows.map((r) => r.count), label: { show: true, position: 'inside', formatter: (p) => fmt.pct(rows[p.dataIndex].conversion_rate) } },
        { type: 'bar', name: 'Dropped', stack: 'f', data: rows.map((r, i) => (i === 0 ? 0 : rows[i - 1].count - r.count)), itemStyle: { color: '#d8dde6' } },
      ],
    },
  });
  results.append(card.card);
  if (funnel.breakdowns && funnel.breakdowns.length) {
    const columns = [{ key: 'value', label: 'Value' }, ...names.map((n, i) => ({ key: `s${i}`, label: n, num: true })), { key: 'rate', label: 'Conversion', num: true, format: fmt.pct }];
    const bRows = funnel.breakdowns.map((b) => {
      const row = { value: b.value ?? '(none)' };
      b.steps.forEach((s, i) => { row[`s${i}`] = s.count; });
      row.rate = b.steps.at(-1).conversion_rate;
      return row;
    });
    results.append(chartCard({
      title: 'Breakdown', name: 'funnel-breakdown', columns, rows: bRows,
      option: {
        grid: { left: 8, right: 16, top: 30, bottom: 8, containLabel: true },
        tooltip: { trigger: 'axis' }, legend: { top: 0, type: 'scroll' },
        xAxis: { type: 'category', data: names, axisLabel: { interval: 0, width: 110, overflow: 'truncate' } },
        yAxis: { type: 'value', minInterval: 1 }, // users
        series: bRows.map((r) => ({ type: 'bar', name: String(r.value), data: names.map((_, i) => r[`s${i}`]) })),
      },
    }).card);
  }
}
