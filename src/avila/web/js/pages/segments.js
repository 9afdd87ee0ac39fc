// Segments: the RFM segments (users, share, revenue) as a treemap, and a drill-down into a
// segment's users. RFM is scored over the 365 days before the range's end.
import { api } from '../api.js';
import { currencyOf } from '../people.js';
import { updateParams } from '../state.js';
import { chartCard, emptyState, escapeHtml, fmt, h, idLink, table } from '../ui.js';

const WINDOW_DAYS = 365;
const DRILL_LIMIT = 200; // users listed per segment in the drill-down, highest revenue first

export async function render(view, { params, range }) {
  view.append(h('h1', {}, 'Segments'));
  const reference = range.end;
  // One request: the segments with their revenue and their most valuable members.
  // The purchases scored: [reference - WINDOW_DAYS, reference), and the currency they are in.
  const since = new Date(Date.parse(reference) - WINDOW_DAYS * 86400000).toISOString();
  const [rfm, currency] = await Promise.all([
    api('/api/v1/analytics/rfm', {
      method: 'POST', body: { reference_date: reference, window_days: WINDOW_DAYS, members: DRILL_LIMIT },
    }),
    currencyOf(since, reference),
  ]);
  const money = (v) => fmt.money(v, currency);
  if (!rfm.users_scored) {
    view.append(emptyState('No purchases in the 365 days before the end of this range.'));
    return;
  }
  const members = new Map(rfm.segments.map((s) => [s.segment, s.members]));
  const rows = rfm.segments;
  view.append(h('p', { class: 'muted' },
    `${fmt.int(rfm.users_scored)} buyers scored as of ${fmt.time(reference)} over ${WINDOW_DAYS} days.`));
  const drill = h('div', { id: 'segment-users' });
  const showSegment = (name) => {
    updateParams({ segment: name });
    const users = members.get(name) || [];
    const total = (rows.find((r) => r.segment === name) || { users: users.length }).users;
    const shown = users.length < total ? `, the ${fmt.int(users.length)} with the most revenue` : '';
    drill.replaceChildren(h('section', { class: 'card' }, h('h2', {}, `${name}: ${fmt.int(total)} users${shown}`),
      users.length ? h('div', { class: 'table-wrap' }, table([
        { key: 'user_id', label: 'User', format: (v) => idLink(v, `#/users?user=${encodeURIComponent(v)}`) },
        { key: 'rfm_score', label: 'RFM' }, { key: 'recency_days', label: 'Days since purchase', num: true, format: fmt.num },
        { key: 'frequency', label: 'Orders', num: true }, { key: 'monetary', label: 'Revenue', num: true, format: money },
      ], users)) : h('p', { class: 'muted' }, 'No users in this segment.')));
  };
  const card = chartCard({
    title: 'RFM segments', name: 'rfm', tall: true,
    columns: [
      { key: 'segment', label: 'Segment', format: (v) => h('button', { type: 'button', class: 'link', onclick: () => showSegment(v) }, v) },
      { key: 'users', label: 'Users', num: true }, { key: 'share', label: 'Share', num: true, format: fmt.pct },
      { key: 'revenue', label: 'Revenue', num: true, format: money },
    ],
    rows,
    option: {
      tooltip: { formatter: (p) => escapeHtml(`${p.name}: ${fmt.int(p.value)} users, revenue ${money(p.data.revenue)}`) },
      series: [{
        type: 'treemap', roam: false, nodeClick: false, breadcrumb: { show: false },
        label: { lineHeight: 16, formatter: (p) => `${p.name}\n${fmt.int(p.value)} users · ${money(p.data.revenue)}` },
        data: rows.filter((r) => r.users > 0).map((r) => ({ name: r.segment, value: r.users, revenue: r.revenue })),
      }],
    },
    showTable: true,
    onClick: (p) => showSegment(p.name),
    note: 'Select a segment (in the chart or the table) to list its users.',
  });
  view.append(card.card, drill);
  const chosen = params.get('segment');
  if (chosen && members.has(chosen)) showSegment(chosen);
}
