// Retention: cohort heatmap (rows = cohorts, columns = periods since) with period and mode.
import { api } from '../api.js';
import { rangeQuery, updateParams, zonedMidnight } from '../state.js';
import { chartCard, emptyState, errorBox, escapeHtml, fmt, h } from '../ui.js';
import { EVENT_TYPES } from './funnels.js';

const PERIODS = ['day', 'week', 'month'];
const MODES = { exact: 'Returned in that period', on_or_after: 'Returned in that period or later' };

export function cohortBody(options, range) {
  const body = { period: options.period, periods: Number(options.periods), mode: options.mode, ...rangeQuery(range) };
  if (options.start) body.start_event = { condition_type: options.start, condition_value: '' };
  if (options.ret) body.return_event = { condition_type: options.ret, condition_value: '' };
  return body;
}

function field(label, control) { return h('label', {}, label, control); }
function options(values, current) {
  const entries = Array.isArray(values) ? values.map((v) => [v, v]) : Object.entries(values);
  return entries.map(([v, t]) => h('option', { value: v, selected: String(v) === String(current) }, t));
}

export async function render(view, { params, range }) {
  view.append(h('h1', {}, 'Retention'));
  const state = {
    period: PERIODS.includes(params.get('period')) ? params.get('period') : 'week',
    periods: Math.min(400, Math.max(1, Number(params.get('periods')) || 8)),
    mode: MODES[params.get('mode')] ? params.get('mode') : 'exact',
    start: EVENT_TYPES.includes(params.get('start')) ? params.get('start') : '',
    ret: EVENT_TYPES.includes(params.get('return')) ? params.get('return') : '',
  };
  const anyType = { '': 'any event', ...Object.fromEntries(EVENT_TYPES.map((t) => [t, t])) };
  const period = h('select', { id: 'cohort-period' }, options(PERIODS, state.period));
  const periods = h('input', { id: 'cohort-periods', type: 'number', min: 1, max: 400, value: state.periods });
  const mode = h('select', { id: 'cohort-mode' }, options(MODES, state.mode));
  const start = h('select', { id: 'cohort-start' }, options(anyType, state.start));
  const ret = h('select', { id: 'cohort-return' }, options(anyType, state.ret));
  const form = h('form', { class: 'card row', 'aria-label': 'Retention settings' },
    field('Period', period), field('Periods', periods), field('Mode', mode),
    field('Cohort starts with', start), field('Returns with', ret),
    h('button', { type: 'submit', id: 'cohort-run' }, 'Show retention'));
  const results = h('div', { class: 'grid' });
  view.append(form, results);

  const run = async () => {
    Object.assign(state, { period: period.value, periods: periods.value, mode: mode.value, start: start.value, ret: ret.value });
    updateParams({ period: state.period, periods: state.periods, mode: state.mode, start: state.start, return: state.ret });
    results.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      const cohort = await api('/api/v1/analytics/cohort', { method: 'POST', body: cohortBody(state, range) });
      results.replaceChildren();
      draw(results, cohort, range);
    } catch (err) {
      results.replaceChildren(errorBox(err));
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); run(); });
  await run();
}

// 'YYYY-MM-DD' of the start of period k of a cohort that began on `first` (a local day).
function periodStart(first, period, k) {
  const [y, m, d] = first.split('-').map(Number);
  const day = period === 'month'
    ? new Date(Date.UTC(y, m - 1 + k, d))
    : new Date(Date.UTC(y, m - 1, d + k * (period === 'week' ? 7 : 1)));
  return day.toISOString().slice(0, 10);
}

function draw(results, cohort, range) {
  if (!cohort.cohorts.length) {
    results.append(emptyState('No cohorts in this range.'));
    return;
  }
  const n = Math.max(...cohort.cohorts.map((c) => c.rates.length));
  const labels = cohort.cohorts.map((c) => c.cohort_start.slice(0, 10));
  // Periods k >= periods_observed (the API's count of a cohort's periods that began before the
  // range's end) have not been lived: their 0 is no measurement, so those cells stay empty, as
  // "0 % retained" would be a claim about the future. A period still running at the end of the
  // range is shown and called "so far".
  const tz = cohort.timezone || range.tz;
  const end = Date.parse(range.end);
  const begins = (y, k) => zonedMidnight(periodStart(labels[y], cohort.period, k), tz).getTime();
  const lived = (y, k) => k < cohort.cohorts[y].periods_observed;
  const running = (y, k) => k === cohort.cohorts[y].periods_observed - 1 && begins(y, k + 1) > end;
  const data = [];
  cohort.cohorts.forEach((c, y) => c.rates.forEach((r, x) => {
    if (lived(y, x)) data.push([x, y, Math.round(r * 1000) / 10]);
  }));
  const columns = [
    { key: 'cohort', label: 'Cohort' }, { key: 'size', label: 'Users', num: true },
    ...Array.from({ length: n }, (_, k) => ({
      key: `p${k}`, label: `${cohort.period} ${k}`, num: true,
      format: (v, row) => (v === null || v === undefined ? '' : `${fmt.pct(v)} (${row[`n${k}`]})`),
    })),
  ];
  const rows = cohort.cohorts.map((c, y) => {
    const row = { cohort: labels[y], size: c.size };
    c.rates.forEach((r, k) => {
      row[`p${k}`] = lived(y, k) ? r : null;
      row[`n${k}`] = lived(y, k) ? c.retained[k] : null;
    });
    return row;
  });
  results.append(chartCard({
    title: 'Cohort retention', name: 'retention', tall: true, columns, rows,
    note: 'Empty cells: periods that begin after the end of the range.',
    option: {
      tooltip: {
        formatter: (p) => escapeHtml(`${labels[p.value[1]]}, ${cohort.period} ${p.value[0]}: ${p.value[2]} %${running(p.value[1], p.value[0]) ? ' (so far: the period is not over)' : ''}`),
      },
      grid: { left: 8, right: 16, top: 8, bottom: 60, containLabel: true },
      xAxis: { type: 'category', data: Array.from({ length: n }, (_, k) => `${k}`), name: `${cohort.period}s since`, nameLocation: 'middle', nameGap: 24 },
      yAxis: { type: 'category', data: labels, inverse: true },
      visualMap: { min: 0, max: 100, orient: 'horizontal', left: 'center', bottom: 0, itemHeight: 120, inRange: { color: ['#f4f6f9', '#2456a6'] }, text: ['100 %', '0 %'] },
      series: [{ type: 'heatmap', data, label: { show: n <= 14, fontSize: 10 } }],
    },
  }).card);
}
