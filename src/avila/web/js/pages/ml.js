// ML: model cards (version, training time, metrics), training with progress (admin keys), the
// churn-risk list among recent buyers, recommendations for a user, anomalies on the trend.
import { api } from '../api.js';
import { mapLimited, purchasers } from '../people.js';
import { rangeQuery, updateParams } from '../state.js';
import { chartCard, errorBox, fmt, h, idLink, table } from '../ui.js';
import { trendOption } from './overview.js';

const CHURN_SAMPLE = 40;

// 'YYYY-MM-DDTHH' of an instant in a time zone: the trend's hourly buckets are local.
function localHour(iso, timeZone) {
  if (!iso) return '';
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit',
  }).formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}`;
}

function headlineMetrics(metrics) {
  return Object.entries(metrics || {})
    .filter(([, v]) => typeof v === 'number')
    .slice(0, 6)
    .map(([k, v]) => [k, Number.isInteger(v) ? fmt.int(v) : fmt.num(v)]);
}

function modelCards(models) {
  const run = models.versions?.[0];
  if (!run) {
    return h('p', { class: 'notice', id: 'no-models' }, 'No model trained yet: predictions use store base rates and product popularity.');
  }
  return h('div', { class: 'cards', id: 'model-cards' }, Object.entries(run.models || {}).map(([name, model]) =>
    h('section', { class: 'card', 'data-model': name },
      h('h3', {}, name),
      h('p', { class: 'muted' }, `${run.version || models.current_version || ''} · trained ${fmt.time(run.trained_at)}`),
      h('dl', { class: 'kv' }, headlineMetrics(model.metrics).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      model.metrics?.baseline?.name ? h('p', { class: 'muted' }, `compared with ${model.metrics.baseline.name}`) : null)));
}

export async function render(view, { params, range, admin }) {
  view.append(h('h1', {}, 'Machine learning'));
  const query = rangeQuery(range);
  const [models, anomalies, trend, buyers] = await Promise.all([
    api('/api/v1/ml/models'),
    api('/api/v1/ml/anomalies', { query: { since: range.start, until: range.end, limit: 500 } }),
    api('/api/v1/analytics/trends', { query: { ...query, interval: 'hour' } }),
    purchasers(range.start, range.end, 500),
  ]);

  const cards = h('div', {}, modelCards(models));
  const modelsSection = h('section', { class: 'card' }, h('h2', {}, 'Models'), cards);
  if (admin) {
    const progress = h('div', { role: 'status', id: 'train-status' });
    const button = h('button', { type: 'button', 'data-admin-action': 'train-models' }, 'Train models');
    button.addEventListener('click', async () => {
      button.disabled = true;
      const started = Date.now();
      const bar = h('progress', { 'aria-label': 'Training' });
      const label = h('span', { class: 'muted' }, 'Training…');
      progress.replaceChildren(bar, label);
      const tick = setInterval(() => { label.textContent = `Training… ${Math.round((Date.now() - started) / 1000)} s`; }, 1000);
      try {
        const run = await api('/api/v1/ml/train', { method: 'POST', body: {} });
        progress.replaceChildren(`Trained ${run.version} in ${Math.round((Date.now() - started) / 1000)} s; ${fmt.int(run.users_scored)} users scored.`);
        cards.replaceChildren(modelCards(await api('/api/v1/ml/models')));
      } catch (err) {
        progress.replaceChildren(errorBox(err));
      } finally {
        clearInterval(tick);
        button.disabled = false;
      }
    });
    modelsSection.append(h('div', { class: 'row' }, button), progress);
  }
  view.append(modelsSection);

  // Anomalies of the "all events" series on the hourly trend.
  const points = trend.series[0]?.data || [];
  const found = (anomalies.anomalies || []).filter((a) => !a.metric || /all|events/.test(a.metric));
  const marks = [];
  for (const a of found) {
    const hour = localHour(a.bucket_start, range.tz);
    const index = points.findIndex((p) => String(p.time).slice(0, 13) === hour);
    if (index >= 0) marks.push({ coord: [index, points[index].count], value: '!', name: `${a.detector} ${fmt.num(a.score)}` });
  }
  view.append(chartCard({
    title: 'Events per hour with anomalies', name: 'anomalies', tall: false,
    columns: [{ key: 'bucket_start', label: 'Bucket', format: fmt.time }, { key: 'metric', label: 'Metric' }, { key: 'detector', label: 'Detector' }, { key: 'value', label: 'Value', num: true, format: fmt.num }, { key: 'expected', label: 'Expected', num: true, format: fmt.num }, { key: 'score', label: 'Score', num: true, format: fmt.num }],
    rows: anomalies.anomalies || [],
    note: `${fmt.int(anomalies.count ?? (anomalies.anomalies || []).length)} anomalies in the range (table); those on all events are marked. Times are in ${range.tz}.`,
    option: (() => {
      const option = trendOption(points);
      option.series[0].markPoint = { symbol: 'pin', symbolSize: 34, itemStyle: { color: '#b3261e' }, data: marks };
      return option;
    })(),
  }).card);

  // Churn risk: predictions of the buyers of the range who bought least recently.
  const sample = buyers.slice(-CHURN_SAMPLE);
  const predictions = await mapLimited(sample, 6, (b) => api(`/api/v1/users/${encodeURIComponent(b.user_id)}/predictions`)
    .then((p) => ({ ...p, last_purchase: b.last_purchase })));
  predictions.sort((a, b) => b.churn_probability - a.churn_probability);
  const risky = predictions.slice(0, 15);
  view.append(chartCard({
    title: 'Churn risk', name: 'churn-risk',
    note: `The ${fmt.int(sample.length)} buyers of the range whose last purchase is oldest, by churn probability.`,
    columns: [{ key: 'user_id', label: 'User', format: (v) => idLink(v, `#/users?user=${encodeURIComponent(v)}`) }, { key: 'churn_probability', label: 'Churn', num: true, format: fmt.pct }, { key: 'conversion_probability', label: 'Conversion', num: true, format: fmt.pct }, { key: 'last_purchase', label: 'Last purchase', format: fmt.time, wrap: true }],
    rows: predictions,
    option: {
      // right: room for half of the "100 %" label centred on the axis end
      grid: { left: 8, right: 28, top: 8, bottom: 8, containLabel: true }, tooltip: { trigger: 'axis' },
      xAxis: { type: 'value', max: 1, axisLabel: { formatter: (v) => `${Math.round(v * 100)} %` } },
      yAxis: { type: 'category', inverse: true, data: risky.map((p) => p.user_id) },
      series: [{ type: 'bar', name: 'Churn probability', data: risky.map((p) => p.churn_probability), itemStyle: { color: '#b83b5e' } }],
    },
  }).card);

  // Recommendations for one user.
  const input = h('input', { id: 'rec-user', list: 'rec-suggestions', value: params.get('user') || buyers[0]?.user_id || '', required: true, autocomplete: 'off' });
  const recOut = h('div');
  const form = h('form', { class: 'row' }, h('label', {}, 'User id', input),
    h('datalist', { id: 'rec-suggestions' }, buyers.slice(0, 50).map((b) => h('option', { value: b.user_id }))),
    h('button', { type: 'submit' }, 'Recommend'));
  view.append(h('section', { class: 'card', 'data-section': 'recommendations' }, h('h2', {}, 'Recommendations'), form, recOut));
  const recommend = async (userId) => {
    if (!userId) return;
    updateParams({ user: userId });
    try {
      const p = await api(`/api/v1/users/${encodeURIComponent(userId)}/predictions`);
      recOut.replaceChildren(
        h('p', {}, `Next best action: `, h('strong', {}, p.next_best_action?.action || '—'), ` — ${p.next_best_action?.reason || ''}`),
        h('div', { class: 'table-wrap' }, table([{ key: 'product_id', label: 'Product' }, { key: 'score', label: 'Score', num: true, format: fmt.num }], p.recommendations || [])));
    } catch (err) {
      recOut.replaceChildren(errorBox(err));
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); recommend(input.value.trim()); });
  await recommend(input.value.trim());
}
