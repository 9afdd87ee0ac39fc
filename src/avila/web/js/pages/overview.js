// Overview: KPI tiles, the trend with its interval, top pages, referrers, devices, countries.
import { api } from '../api.js';
import { currencyOf } from '../people.js';
import { rangeQuery, updateParams } from '../state.js';
import { chartCard, emptyState, errorBox, escapeHtml, fmt, h, tiles } from '../ui.js';

const INTERVALS = ['hour', 'day', 'week', 'month'];

function barOption(labels, values, name) {
  return {
    grid: { left: 8, right: 24, top: 8, bottom: 8, containLabel: true },
    tooltip: { trigger: 'axis' },
    xAxis: { type: 'value', minInterval: 1 }, // counts: no 0.5 ticks
    yAxis: { type: 'category', data: labels, inverse: true, axisLabel: { width: 160, overflow: 'truncate' } },
    series: [{ type: 'bar', name, data: values }],
  };
}

export function trendOption(points, extraSeries = []) {
  return {
    grid: { left: 8, right: 16, top: 30, bottom: 8, containLabel: true },
    tooltip: { trigger: 'axis' },
    legend: { top: 0 },
    xAxis: { type: 'category', data: points.map((p) => p.time) },
    yAxis: [{ type: 'value', name: '', minInterval: 1 }], // events and users: whole numbers
    series: [
      { type: 'line', name: 'Events', data: points.map((p) => p.count), showSymbol: false, areaStyle: { opacity: 0.12 } },
      { type: 'line', name: 'Users', data: points.map((p) => p.users), showSymbol: false },
      ...extraSeries,
    ],
  };
}

export async function render(view, { params, range }) {
  const interval = INTERVALS.includes(params.get('interval')) ? params.get('interval') : 'day';
  view.append(h('h1', {}, 'Overview'));
  const query = rangeQuery(range);
  // Conversion = users with a purchase in the range / users in the range. RFM scores exactly
  // the users with a purchase in [reference_date - window_days, reference_date).
  const days = Math.max(1, Math.round((Date.parse(range.end) - Date.parse(range.start)) / 86400000));
  const [overview, buyers, currency] = await Promise.all([
    api('/api/v1/analytics/overview', { query: { ...query, top_n: 10 } }),
    api('/api/v1/analytics/rfm', { method: 'POST', body: { reference_date: range.end, window_days: days } }),
    currencyOf(range.start, range.end),
  ]);
  if (!overview.total_events) {
    view.append(emptyState());
    return;
  }
  view.append(tiles([
    ['Events', fmt.int(overview.total_events), 'events'],
    ['Users', fmt.int(overview.unique_users), 'users'],
    ['Sessions', fmt.int(overview.sessions), 'sessions'],
    ['Revenue', fmt.money(overview.revenue, currency), 'revenue'],
    ['Conversion', fmt.pct(buyers.users_scored / overview.unique_users), 'conversion'],
    ['Bounce rate', fmt.pct(overview.bounce_rate), 'bounce'],
  ]));

  const intervalSelect = h('select', { id: 'trend-interval', 'aria-label': 'Trend interval' },
    INTERVALS.map((i) => h('option', { value: i, selected: i === interval }, i)));
  const controls = h('div', { class: 'row' }, h('label', {}, 'Interval', intervalSelect));
  view.append(controls);
  const trendHolder = h('div');
  view.append(trendHolder);
  const columns = [{ key: 'time', label: 'Period' }, { key: 'count', label: 'Events', num: true }, { key: 'users', label: 'Users', num: true }];
  const drawTrend = async (every) => {
    try {
      const trend = await api('/api/v1/analytics/trends', { query: { ...query, interval: every } });
      const points = trend.series[0]?.data || [];
      const card = chartCard({ title: `Trend per ${every}`, name: 'trend', option: trendOption(points), columns, rows: points });
      trendHolder.replaceChildren(card.card);
    } catch (err) {
      trendHolder.replaceChildren(errorBox(err));
    }
  };
  intervalSelect.addEventListener('change', () => {
    updateParams({ interval: intervalSelect.value });
    drawTrend(intervalSelect.value);
  });
  await drawTrend(interval);

  const grid = h('div', { class: 'grid two' });
  view.append(grid);
  const pages = overview.top_pages;
  grid.append(chartCard({
    title: 'Top pages', option: barOption(pages.map((p) => p.url), pages.map((p) => p.views), 'Views'),
    columns: [{ key: 'url', label: 'URL' }, { key: 'views', label: 'Views', num: true }], rows: pages,
  }).card);
  const refs = overview.top_referrers || [];
  grid.append(chartCard({
    title: 'Referrers', option: barOption(refs.map((r) => r.referrer), refs.map((r) => r.events), 'Events'),
    columns: [{ key: 'referrer', label: 'Referrer' }, { key: 'events', label: 'Events', num: true }], rows: refs,
  }).card);
  const devices = overview.devices || [];
  grid.append(chartCard({
    title: 'Devices',
    option: {
      // The names are in the legend, not around the ring: outside labels ran out of a phone's
      // card. A legend wider than the card scrolls (arrows) instead of being cut.
      tooltip: { trigger: 'item', formatter: (p) => escapeHtml(`${p.name}: ${fmt.int(p.value)} users (${fmt.num(p.percent)} %)`) },
      legend: { type: 'scroll', bottom: 0, left: 'center', width: '90%' },
      series: [{
        type: 'pie', radius: ['38%', '66%'], center: ['50%', '45%'], label: { show: false }, labelLine: { show: false },
        data: devices.map((d) => ({ name: d.device_type, value: d.users })),
      }],
    },
    columns: [{ key: 'device_type', label: 'Device' }, { key: 'users', label: 'Users', num: true }], rows: devices,
  }).card);
  const countries = overview.countries || [];
  grid.append(chartCard({
    title: 'Countries', option: barOption(countries.map((c) => c.country), countries.map((c) => c.users), 'Users'),
    columns: [{ key: 'country', label: 'Country' }, { key: 'users', label: 'Users', num: true }], rows: countries,
  }).card);
}
