// Live: events arriving over the WebSocket (single `Event` and batched `Events` frames), events
// per minute, live metrics and alerts as they fire. The key travels as a subprotocol
// (["avila.v1", "avila.key.<KEY>"]), never in the URL; a server that does not speak it yet gets
// polled over REST instead.
import { api, session } from '../api.js';
import { chartCard, displayZone, errorBox, fmt, h, tiles } from '../ui.js';

const FEED_LIMIT = 100;
const POLL_MS = 5000;
const MINUTES = 30;
const RETRY_MIN_MS = 1000; // reconnect backoff after the stream drops: 1 s doubling to 15 s
const RETRY_MAX_MS = 15000;

function describe(event) {
  const type = event.event_type || {};
  const data = type.data || {};
  const what = data.url || data.product_id || data.name || data.query || data.order_id || '';
  return [type.type || '?', what].filter(Boolean).join(' ');
}

export async function render(view) {
  view.append(h('h1', {}, 'Live'));
  const status = h('p', { id: 'live-status', role: 'status', class: 'muted' }, 'Connecting…');
  const counters = h('div', { id: 'live-counters' });
  view.append(status, counters);
  const setCounters = (minute, fiveMin, users, perSecond) => counters.replaceChildren(tiles([
    ['Events last minute', fmt.int(minute), 'minute'],
    ['Events last 5 min', fmt.int(fiveMin), 'five'],
    ['Active users (5 min)', fmt.int(users), 'active'],
    ['Events per second', fmt.num(perSecond), 'eps'],
  ]));
  const [realtime, history] = await Promise.all([
    api('/api/v1/analytics/realtime'),
    api('/api/v1/alerts/history', { query: { limit: 20 } }),
  ]);
  setCounters(realtime.events_last_minute, realtime.events_last_5_minutes, realtime.active_users_last_5_minutes, realtime.events_per_second);

  // Per-minute buckets of the events this page has received.
  const perMinute = new Map();
  // Minutes and times of day in the time zone of the range bar (fmt.clock).
  const zone = displayZone();
  const minuteKey = (ms) => fmt.clock(Math.floor(ms / 60000) * 60000, { seconds: false });
  const series = () => {
    const now = Date.now();
    const rows = [];
    for (let i = MINUTES - 1; i >= 0; i--) {
      const key = minuteKey(now - i * 60000);
      rows.push({ minute: key, events: perMinute.get(key) || 0 });
    }
    return rows;
  };
  const option = (rows) => ({
    grid: { left: 8, right: 16, top: 16, bottom: 8, containLabel: true },
    tooltip: { trigger: 'axis' },
    xAxis: { type: 'category', data: rows.map((r) => r.minute) },
    yAxis: { type: 'value', minInterval: 1 },
    series: [{ type: 'bar', name: 'Events', data: rows.map((r) => r.events) }],
  });
  const columns = [{ key: 'minute', label: `Minute (${zone})` }, { key: 'events', label: 'Events received', num: true }];
  const rows0 = series();
  const chart = chartCard({ title: `Events per minute (this page, ${zone})`, name: 'events-per-minute', option: option(rows0), columns, rows: rows0 });
  const feed = h('ul', { class: 'feed', id: 'live-feed', 'aria-live': 'polite' });
  const alerts = h('ul', { class: 'feed', id: 'live-alerts' });
  const dropped = h('p', { class: 'muted', id: 'live-dropped' });
  view.append(chart.card, h('div', { class: 'grid two' },
    h('section', { class: 'card' }, h('h2', {}, 'Events'), dropped, feed),
    h('section', { class: 'card' }, h('h2', {}, 'Alerts (recent firings first, then live)'), alerts)));
  feed.append(h('li', { class: 'muted', 'data-placeholder': '' }, 'Waiting for events…'));
  // Recent firings of the alert rules (docs/alerts.md), then new alerts as they arrive.
  const fired = (history.firings || []).map((f) => h('li', { 'data-firing': f.id },
    h('span', { class: 'muted' }, fmt.time(f.fired_at)), h('strong', {}, f.rule),
    h('span', {}, `${fmt.num(f.value)} ${f.op} ${fmt.num(f.threshold)}`),
    h('span', { class: 'muted' }, (f.deliveries || []).map((d) => `${d.type} ${d.status}`).join(', '))));
  if (fired.length) alerts.append(...fired);
  else alerts.append(h('li', { class: 'muted', 'data-placeholder': '' }, 'No alerts have fired.'));

  let redraw = null;
  const addEvents = (events) => {
    feed.querySelector('[data-placeholder]')?.remove();
    for (const event of events) {
      const at = Date.parse(event.received_at || event.timestamp) || Date.now();
      const key = minuteKey(Date.now());
      perMinute.set(key, (perMinute.get(key) || 0) + 1);
      feed.prepend(h('li', { 'data-event-id': event.event_id },
        h('span', { class: 'muted' }, fmt.clock(at)),
        h('strong', {}, describe(event)), h('span', {}, event.user_id || '')));
    }
    while (feed.children.length > FEED_LIMIT) feed.lastChild.remove();
    if (!redraw) redraw = setTimeout(() => { redraw = null; const rows = series(); chart.update(option(rows), rows); }, 500);
  };
  const addAlert = (alert) => {
    alerts.querySelector('[data-placeholder]')?.remove();
    const name = alert.rule || alert.type || 'alert';
    const detail = [alert.device_id, alert.metric, alert.value !== undefined ? `value ${fmt.num(alert.value)}` : '', alert.state].filter(Boolean).join(' · ');
    alerts.prepend(h('li', {}, h('span', { class: 'muted' }, fmt.clock(Date.now())), h('strong', {}, name), h('span', {}, detail)));
    while (alerts.children.length > FEED_LIMIT) alerts.lastChild.remove();
  };

  let socket = null;
  let poller = null;
  let closed = false;
  let reconnect = null;
  let everOpened = false; // once the server spoke the protocol, a failed connect is an outage
  let retryMs = RETRY_MIN_MS;
  const reconnectLater = () => {
    status.textContent = `The live stream was interrupted; reconnecting in ${Math.round(retryMs / 1000)} s…`;
    status.dataset.mode = 'reconnecting';
    reconnect = setTimeout(() => {
      reconnect = null;
      if (closed) return;
      // A key revoked meanwhile: the REST answer (401) signs out instead of retrying forever.
      api('/api/v1/me').then(() => { if (!closed) connect(); }, (err) => { if (!closed && err.status !== 401) connect(); });
    }, retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  };
  const poll = () => {
    if (poller) return;
    poller = setInterval(async () => {
      try {
        const r = await api('/api/v1/analytics/realtime');
        setCounters(r.events_last_minute, r.events_last_5_minutes, r.active_users_last_5_minutes, r.events_per_second);
      } catch (err) {
        status.replaceChildren(errorBox(err));
      }
    }, POLL_MS);
  };
  const connect = () => {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let opened = false;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/ws`, ['avila.v1', `avila.key.${session.key}`]);
    } catch {
      // A key with characters a subprotocol cannot carry: poll instead.
      status.textContent = 'The live stream cannot carry this key; the counters refresh every 5 seconds.';
      status.dataset.mode = 'polling';
      poll();
      return;
    }
    socket.addEventListener('open', () => {
      opened = true;
      everOpened = true;
      retryMs = RETRY_MIN_MS;
      status.textContent = 'Live: connected over the WebSocket.';
      status.dataset.mode = 'websocket';
      socket.send(JSON.stringify({ type: 'Subscribe', payload: { channels: ['events', 'metrics', 'alerts'] } }));
    });
    socket.addEventListener('message', (message) => {
      let frame;
      try { frame = JSON.parse(message.data); } catch { return; }
      const payload = frame.payload || {};
      if (frame.type === 'Event') addEvents([payload]);
      else if (frame.type === 'Events') {
        addEvents(payload.events || []);
        if (payload.dropped || (payload.sampled ?? 1) < 1) {
          dropped.textContent = `Under load: ${fmt.int(payload.dropped || 0)} events skipped, ${fmt.pct(payload.sampled ?? 1)} sampled.`;
        }
      } else if (frame.type === 'Metrics') {
        setCounters(payload.events_last_minute, undefined, payload.active_users, payload.events_per_second);
        counters.querySelector('[data-kpi="five"]')?.remove();
      } else if (frame.type === 'Alert') addAlert(payload);
      else if (frame.type === 'Error') status.replaceChildren(h('span', { class: 'error' }, `${payload.message} (${payload.code})`));
    });
    socket.addEventListener('close', (event) => {
      if (closed) return;
      if (!opened && everOpened) {
        // The server is restarting or unreachable: keep trying (backoff) rather than settle
        // for polling, which is only for servers without the key subprotocol.
        reconnectLater();
      } else if (!opened) {
        status.textContent = 'The live stream is not available on this server; the counters refresh every 5 seconds.';
        status.dataset.mode = 'polling';
        poll();
      } else if (event.code >= 4400) {
        status.textContent = `The live stream closed: ${event.reason || event.code}.`;
        status.dataset.mode = 'closed';
      } else {
        reconnectLater();
      }
    });
  };
  connect();
  return () => {
    closed = true;
    if (socket) socket.close(1000);
    clearInterval(poller);
    clearTimeout(redraw);
    clearTimeout(reconnect);
  };
}
