// Segments: the RFM segments (users, share, revenue) as a treemap, and a drill-down into a
// segment's users. RFM is scored over the 365 days before the range's end.
import { api } from '../api.js';
import { mapLimited, purchasers } from '../people.js';
import { updateParams } from '../state.js';
import { chartCard, emptyState, escapeHtml, fmt, h, table } from '../ui.js';

const WINDOW_DAYS = 365;
const DRILL_LIMIT = 500; // users scored one by one for the drill-down

export async function render(view, { params, range }) {
  view.append(h('h1', {}, 'Segments'));
  const reference = range.end;
  const windowStart = new Date(Date.parse(reference) - WINDOW_DAYS * 86400000).toISOString();
  const [rfm, buyers] = await Promise.all([
    api('/api/v1/analytics/rfm', { method: 'POST', body: { reference_date: reference, window_days: WINDOW_DAYS } }),
    purchasers(windowStart, reference, DRILL_LIMIT),
  ]);
  if (!rfm.users_scored) {
    view.append(emptyState('No purchases in the 365 days before the end of this range.'));
    return;
  }
  // The API has no "users of a segment" list: score each buyer (bounded) and group them.
  const scored = await mapLimited(buyers, 6, (b) => api(`/api/v1/users/${encodeURIComponent(b.user_id)}/segment`,
    { query: { reference_date: reference, window_days: WINDOW_DAYS } }));
  const complete = scored.length === rfm.users_scored;
  const members = new Map();
  for (const s of scored) {
    if (!s.segment) continue;
    if (!members.has(s.segment)) members.set(s.segment, []);
    members.get(s.segment).push(s);
  }
  const rows = rfm.segments.map((s) => ({
    ...s,
    revenue: (members.get(s.segment) || []).reduce((sum, u) => sum + (u.monetary || 0), 0),
  }));
  view.append(h('p', { class: 'muted' },
    `${fmt.int(rfm.users_scored)} buyers scored as of ${fmt.time(reference)} over ${WINDOW_DAYS} days.`,
    complete ? '' : ` Revenue and members come from the ${fmt.int(scored.length)} most recent buyers.`));
  const drill = h('div', { id: 'segment-users' });
  const showSegment = (name) => {
    updateParams({ segment: name });
    const users = (members.get(name) || []).sort((a, b) => b.monetary - a.monetary);
    drill.replaceChildren(h('section', { class: 'card' }, h('h2', {}, `${name}: ${fmt.int(users.length)} users`),
      users.length ? h('div', { class: 'table-wrap' }, table([
        { key: 'user_id', label: 'User', format: (v) => h('a', { href: `#/users?user=${encodeURIComponent(v)}` }, v) },
        { key: 'rfm_score', label: 'RFM' }, { key: 'recency_days', label: 'Days since purchase', num: true, format: fmt.num },
        { key: 'frequency', label: 'Orders', num: true }, { key: 'monetary', label: 'Revenue', num: true, format: fmt.money },
      ], users)) : h('p', { class: 'muted' }, 'No users in this segment.')));
  };
  const card = chartCard({
    title: 'RFM segments', name: 'rfm', tall: true,
    columns: [
      { key: 'segment', label: 'Segment', format: (v) => h('button', { type: 'button', class: 'link', onclick: () => showSegment(v) }, v) },
      { key: 'users', label: 'Users', num: true }, { key: 'share', label: 'Share', num: true, format: fmt.pct },
      { key: 'revenue', label: 'Revenue', num: true, format: fmt.money },
    ],
    rows,
    option: {
      tooltip: { formatter: (p) => escapeHtml(`${p.name}: ${fmt.int(p.value)} users, revenue ${fmt.money(p.data.revenue)}`) },
      series: [{
        type: 'treemap', roam: false, nodeClick: false, breadcrumb: { show: false },
        label: { lineHeight: 16, formatter: (p) => `${p.name}\n${fmt.int(p.value)} users · ${fmt.money(p.data.revenue)}` },
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
