// Which users to list: the API has profiles by id but no user index, so lists are built from
// the purchases in a time range (POST /api/v1/export, ndjson, purchase events only).
import { api, request } from './api.js';
import { MIXED } from './ui.js';

// [{user_id, last_purchase, purchases}] newest purchase first, at most `limit`.
export async function purchasers(start, end, limit = 200) {
  // Through api.js like every call: errors in words, and a 401 (a revoked key) signs out.
  const { data: text } = await request('/api/v1/export', {
    method: 'POST',
    body: { format: 'ndjson', filters: { event_types: ['purchase'], start_time: start, end_time: end } },
    raw: true,
  });
  const byUser = new Map();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const row = JSON.parse(line);
    const seen = byUser.get(row.user_id) || { user_id: row.user_id, last_purchase: '', purchases: 0 };
    seen.purchases += 1;
    if (row.timestamp > seen.last_purchase) seen.last_purchase = row.timestamp;
    byUser.set(row.user_id, seen);
  }
  return [...byUser.values()].sort((a, b) => b.last_purchase.localeCompare(a.last_purchase)).slice(0, limit);
}

// Run `task` over `items` with at most `width` requests in flight.
export async function mapLimited(items, width, task) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await task(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return out;
}

// The currency of the purchases in [start, end) (of one user when `userId` is given): their ISO
// code when every purchase that names a currency names the same one, MIXED when they differ
// (a sum of them has no currency), null when none names one. Revenue sums only purchases.
export async function currencyOf(start, end, userId) {
  const query = { event_type: 'purchase', breakdown: 'currency', breakdown_limit: 10, interval: 'month', start_time: start, end_time: end };
  if (userId !== undefined) query.filters = JSON.stringify([{ property: 'user_id', operator: 'eq', value: userId }]);
  const trend = await api('/api/v1/analytics/trends', { query });
  const codes = new Set((trend.series || []).filter((s) => s.breakdown_value && s.total > 0).map((s) => s.breakdown_value));
  if (codes.size > 1) return MIXED;
  return codes.size ? [...codes][0] : null;
}
