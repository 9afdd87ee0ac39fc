// Which users to list: the API has profiles by id but no user index, so lists are built from
// the purchases in a time range (POST /api/v1/export, ndjson, purchase events only).
import { request } from './api.js';

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
