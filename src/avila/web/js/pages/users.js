// Users: look a user up (suggestions: recent buyers), their profile, timeline, sessions,
// revenue, segment and predictions; GDPR erasure behind a typed confirmation (admin keys).
import { api, ApiError } from '../api.js';
import { currencyOf, purchasers } from '../people.js';
import { rangeQuery, updateParams } from '../state.js';
import { chartCard, emptyState, errorBox, fmt, h, idLink, table } from '../ui.js';

export function confirmTyped({ title, text, expected }) {
  const dialog = document.getElementById('confirm');
  dialog.querySelector('#confirm-title').textContent = title;
  dialog.querySelector('#confirm-text').textContent = text;
  dialog.querySelector('#confirm-label').textContent = `Type ${expected} to confirm`;
  const input = dialog.querySelector('#confirm-input');
  const ok = dialog.querySelector('#confirm-ok');
  input.value = '';
  ok.disabled = true;
  input.oninput = () => { ok.disabled = input.value !== expected; };
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok' && input.value === expected), { once: true });
  });
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-field': k }, v)]));
}

export async function render(view, { params, range, admin }) {
  view.append(h('h1', {}, 'Users'));
  const query = rangeQuery(range);
  const weekAgo = new Date(Math.max(Date.parse(range.start), Date.parse(range.end) - 7 * 86400000)).toISOString();
  const recent = await purchasers(weekAgo, range.end, 50);
  const input = h('input', { id: 'user-id', name: 'user', list: 'user-suggestions', value: params.get('user') || '', required: true, autocomplete: 'off' });
  const form = h('form', { class: 'card row', role: 'search', 'aria-label': 'Find a user' },
    h('label', {}, 'User id', input),
    h('datalist', { id: 'user-suggestions' }, recent.map((u) => h('option', { value: u.user_id }))),
    h('button', { type: 'submit' }, 'Show user'));
  const out = h('div', { id: 'user-profile' });
  view.append(form, out);

  const show = async (userId) => {
    updateParams({ user: userId });
    out.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    const path = `/api/v1/users/${encodeURIComponent(userId)}`;
    try {
      const [profile, sessions, predictions, segment] = await Promise.all([
        api(path), api(`${path}/sessions`, { query }), api(`${path}/predictions`), api(`${path}/segment`),
      ]);
      // The currency of this user's purchases, over their whole history (total_revenue is).
      const last = new Date(Date.parse(profile.last_seen) + 1000).toISOString();
      const currency = profile.total_revenue ? await currencyOf(profile.first_seen, last, profile.user_id) : null;
      out.replaceChildren();
      drawProfile(out, { profile, sessions, predictions, segment, admin, path, currency });
    } catch (err) {
      out.replaceChildren(err instanceof ApiError && err.status === 404
        ? h('p', { class: 'error', role: 'alert' }, `No user "${userId}" in this project (${err.code}).`)
        : errorBox(err));
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); show(input.value.trim()); });

  if (params.get('user')) await show(params.get('user'));
  else if (recent.length) {
    out.append(chartCard({
      title: 'Recent buyers (last 7 days of the range)', name: 'recent-buyers',
      columns: [{ key: 'user_id', label: 'User', format: (v) => idLink(v, `#/users?user=${encodeURIComponent(v)}`) }, { key: 'purchases', label: 'Purchases', num: true }, { key: 'last_purchase', label: 'Last purchase', format: fmt.time, wrap: true }],
      rows: recent,
      showTable: true,
      option: {
        grid: { left: 8, right: 16, top: 8, bottom: 8, containLabel: true }, tooltip: { trigger: 'axis' },
        xAxis: { type: 'value', minInterval: 1 }, yAxis: { type: 'category', inverse: true, data: recent.slice(0, 15).map((u) => u.user_id) },
        series: [{ type: 'bar', name: 'Purchases', data: recent.slice(0, 15).map((u) => u.purchases) }],
      },
    }).card);
  } else {
    out.append(emptyState('No purchases in the last 7 days of this range.'));
  }
}

function drawProfile(out, { profile, sessions, predictions, segment, admin, path, currency }) {
  out.append(h('h2', {}, profile.user_id));
  out.append(h('div', { class: 'grid two' },
    h('section', { class: 'card' }, h('h2', {}, 'Profile'), kv([
      ['First seen', fmt.time(profile.first_seen)], ['Last seen', fmt.time(profile.last_seen)],
      ['Events', fmt.int(profile.total_events)], ['Sessions', fmt.int(profile.sessions)],
      ['Revenue', fmt.money(profile.total_revenue, currency)], ['Segment', segment.segment || '—'],
      ['RFM score', segment.rfm_score || '—'],
      ['Devices', (profile.devices || []).map((d) => `${d.device_type} ${d.os} ${d.browser}`).join(', ') || '—'],
      ['Locations', (profile.locations || []).map((l) => `${l.city || ''} ${l.country || ''}`.trim()).join(', ') || '—'],
    ])),
    h('section', { class: 'card' }, h('h2', {}, 'Predictions'), kv([
      ['Churn probability', fmt.pct(predictions.churn_probability)],
      ['Conversion probability', fmt.pct(predictions.conversion_probability)],
      ['Next best action', `${predictions.next_best_action?.action || '—'}: ${predictions.next_best_action?.reason || ''}`],
      ['12-month value', fmt.money(predictions.clv?.clv_12m, currency)],
      ['Recommended', (predictions.recommendations || []).slice(0, 5).map((r) => r.product_id).join(', ') || '—'],
      ['Models', predictions.baseline ? 'baseline (no trained model yet)' : Object.values(predictions.model_versions || {})[0] || '—'],
    ]))));
  const types = Object.entries(profile.events_by_type || {}).map(([type, events]) => ({ type, events }));
  const days = sessions.by_day || [];
  out.append(h('div', { class: 'grid two' },
    chartCard({
      title: 'Events by type', name: 'user-events', columns: [{ key: 'type', label: 'Type' }, { key: 'events', label: 'Events', num: true }], rows: types,
      option: { grid: { left: 8, right: 16, top: 8, bottom: 8, containLabel: true }, tooltip: { trigger: 'axis' }, xAxis: { type: 'value', minInterval: 1 }, yAxis: { type: 'category', inverse: true, data: types.map((t) => t.type) }, series: [{ type: 'bar', name: 'Events', data: types.map((t) => t.events) }] },
    }).card,
    chartCard({
      title: 'Sessions per day (range)', name: 'user-sessions',
      columns: [{ key: 'date', label: 'Day' }, { key: 'sessions', label: 'Sessions', num: true }, { key: 'avg_duration_seconds', label: 'Avg duration', num: true, format: fmt.secs }], rows: days,
      option: { grid: { left: 8, right: 16, top: 8, bottom: 8, containLabel: true }, tooltip: { trigger: 'axis' }, xAxis: { type: 'category', data: days.map((d) => d.date) }, yAxis: { type: 'value', minInterval: 1 }, series: [{ type: 'bar', name: 'Sessions', data: days.map((d) => d.sessions) }] },
    }).card));
  const timeline = (profile.recent_events || []).map((e) => ({ ...e, what: e.url || e.product_id || e.event_name || (e.revenue !== null && e.revenue !== undefined ? fmt.money(e.revenue, currency) : '') }));
  out.append(h('section', { class: 'card' }, h('h2', {}, 'Timeline (most recent events)'), h('div', { class: 'table-wrap' }, table(
    [{ key: 'timestamp', label: 'Time', format: fmt.time, wrap: true }, { key: 'event_type', label: 'Event' }, { key: 'what', label: 'Detail' }, { key: 'session_id', label: 'Session' }], timeline))));
  if (admin) {
    const result = h('p', { role: 'status' });
    out.append(h('section', { class: 'card' }, h('h2', {}, 'Erase (GDPR)'),
      h('p', {}, 'Deletes every stored event and profile of this user. This cannot be undone.'),
      h('button', {
        type: 'button', class: 'danger', 'data-admin-action': 'erase-user',
        onclick: async () => {
          const ok = await confirmTyped({ title: 'Erase user', text: `Erase every event of ${profile.user_id}?`, expected: profile.user_id });
          if (!ok) return;
          try {
            const done = await api(path, { method: 'DELETE' });
            result.replaceChildren(`Erased ${fmt.int(done.deleted_events)} events of ${profile.user_id}.`);
          } catch (err) {
            result.replaceChildren(errorBox(err));
          }
        },
      }, 'Erase this user…'), result));
  }
}
