// Factory: devices with status and last seen; the selected device's twin (reported, desired,
// delta) with an editor that honours ETags; telemetry per metric; then the plant views in
// factory_views.js (OEE, SPC, energy, maintenance, schedule).
import { api, ApiError, request } from '../api.js';
import { mapLimited } from '../people.js';
import { updateParams } from '../state.js';
import { chartCard, emptyState, errorBox, fmt, h, table } from '../ui.js';
import { drawPlant } from './factory_views.js';

const RESERVED = new Set(['state']);

export async function render(view, { params, range, scopes }) {
  const canWrite = scopes.includes('ingest');
  view.append(h('h1', {}, 'Factory'));
  const { devices } = await api('/api/v1/industry40/devices');
  if (!devices.length) {
    view.append(h('div', { class: 'empty' }, h('p', {}, h('strong', {}, 'No devices yet.'), ' Send a reading:'),
      h('pre', {}, `curl -X POST ${location.origin}/api/v1/industry40/iot/ingest -H "x-api-key: YOUR_INGEST_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '{"device_id": "press_1", "device_type": "press", "metrics": {"temperature": 71.5}}'`)));
    return;
  }
  const [twins, active] = await Promise.all([
    mapLimited(devices, 6, (d) => api(`/api/v1/industry40/twin/${encodeURIComponent(d.device_id)}`)),
    api('/api/v1/industry40/alarms/active'),
  ]);
  const alarmCount = new Map();
  for (const a of active.alarms || active.active || []) alarmCount.set(a.device_id, (alarmCount.get(a.device_id) || 0) + 1);
  const rows = devices.map((d, i) => ({
    ...d, status: twins[i].health?.status || '—', health: twins[i].health_score, alarms: alarmCount.get(d.device_id) || 0,
  }));
  const selected = devices.some((d) => d.device_id === params.get('device')) ? params.get('device') : devices[0].device_id;
  const choose = h('select', { id: 'device-select' }, devices.map((d) => h('option', { value: d.device_id, selected: d.device_id === selected }, `${d.device_id} (${d.device_type})`)));
  view.append(h('section', { class: 'card' }, h('h2', {}, 'Devices'), h('div', { class: 'table-wrap' }, table([
    { key: 'device_id', label: 'Device', format: (v) => h('a', { href: `#/factory?device=${encodeURIComponent(v)}`, onclick: (e) => { e.preventDefault(); choose.value = v; choose.dispatchEvent(new Event('change')); } }, v) },
    { key: 'device_type', label: 'Type' }, { key: 'line', label: 'Line' },
    { key: 'status', label: 'Status', format: (v) => h('span', { class: `badge ${v}` }, v) },
    { key: 'health', label: 'Health', num: true, format: fmt.num }, { key: 'alarms', label: 'Active alarms', num: true },
    { key: 'last_seen', label: 'Last seen', format: fmt.time },
  ], rows))));
  const deviceView = h('div', { id: 'device-view' });
  view.append(h('div', { class: 'row' }, h('label', {}, 'Device', choose)), deviceView);
  const show = async (deviceId) => {
    updateParams({ device: deviceId });
    deviceView.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      deviceView.replaceChildren();
      await drawDevice(deviceView, deviceId, range, canWrite);
    } catch (err) {
      deviceView.replaceChildren(errorBox(err));
    }
  };
  choose.addEventListener('change', () => show(choose.value));
  await show(selected);
  const plant = h('div', { id: 'plant' });
  view.append(plant);
  await drawPlant(plant, { devices, range, params, device: selected });
}

async function drawDevice(out, deviceId, range, canWrite) {
  const path = `/api/v1/industry40/twin/${encodeURIComponent(deviceId)}`;
  const twinCard = h('section', { class: 'card', id: 'twin' });
  const telemetry = h('div', { class: 'grid two' });
  out.append(twinCard, telemetry);

  const drawTwin = async () => {
    const { data: twin, etag } = await request(path);
    const metrics = Object.entries(twin.reported || {}).map(([metric, r]) => ({ metric, value: r.value, timestamp: r.timestamp, desired: twin.desired?.[metric], delta: twin.delta?.[metric] }));
    const editor = h('textarea', { id: 'twin-desired', 'aria-label': 'Desired state (JSON)', spellcheck: 'false', readonly: !canWrite }, JSON.stringify(twin.desired || {}, null, 2));
    const message = h('p', { role: 'status', id: 'twin-message' });
    const save = h('button', { type: 'submit', id: 'twin-save' }, 'Save desired state');
    const form = h('form', {}, h('h3', {}, 'Desired state'), editor, h('div', { class: 'row' },
      canWrite ? save : h('span', { class: 'muted' }, 'Changing the desired state needs a key with the ingest scope.'),
      h('span', { class: 'muted', id: 'twin-version', 'data-etag': etag }, `version ${twin.version} (ETag ${etag})`)), message);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      let desired;
      try { desired = JSON.parse(editor.value); } catch (err) {
        message.replaceChildren(h('span', { class: 'error' }, `The desired state is not valid JSON: ${err.message}`));
        return;
      }
      save.disabled = true;
      try {
        await request(`${path}/desired`, { method: 'PUT', body: desired, headers: { 'if-match': etag } });
        await drawTwin();
        twinCard.querySelector('#twin-message').textContent = 'Saved.';
      } catch (err) {
        const words = err instanceof ApiError && err.status === 412
          ? `Someone else changed this twin since you loaded it: ${err.words}. Reload to see their version.`
          : null;
        message.replaceChildren(words ? h('span', { class: 'error' }, words, ' ', h('button', { type: 'button', class: 'link', onclick: () => drawTwin() }, 'Reload')) : errorBox(err));
      } finally {
        save.disabled = false;
      }
    });
    twinCard.replaceChildren(
      h('h2', {}, `Twin ${twin.device_id}`),
      h('p', {}, h('span', { class: `badge ${twin.health?.status || ''}` }, twin.health?.status || '—'),
        ` health ${fmt.num(twin.health_score)} · last seen ${fmt.time(twin.last_seen)}`,
        (twin.health?.explanation || []).length ? h('span', { class: 'muted' }, ` · ${twin.health.explanation.map((x) => x.detail || x.factor).join('; ')}`) : ''),
      h('div', { class: 'table-wrap' }, table([
        { key: 'metric', label: 'Metric' }, { key: 'value', label: 'Reported', num: true, format: fmt.num },
        { key: 'desired', label: 'Desired', num: true, format: (v) => (v === undefined ? '' : JSON.stringify(v)) },
        { key: 'delta', label: 'Delta', num: true, format: (v) => (v === undefined ? '' : JSON.stringify(v)) },
        { key: 'timestamp', label: 'At', format: fmt.time },
      ], metrics)),
      form);
    return twin;
  };
  const twin = await drawTwin();

  const hours = (Date.parse(range.end) - Date.parse(range.start)) / 3600000;
  const resolution = hours <= 24 ? '1m' : '1h';
  const names = Object.keys(twin.reported || {}).filter((m) => !RESERVED.has(m));
  if (!names.length) {
    telemetry.append(emptyState('No telemetry from this device in this range.'));
    return;
  }
  const histories = await mapLimited(names, 4, (metric) => api(`${path}/history`, { query: { metric, start_time: range.start, end_time: range.end, resolution } }));
  names.forEach((metric, i) => {
    const points = histories[i].series?.[metric] || [];
    const value = (p) => p.avg ?? p.value;
    telemetry.append(chartCard({
      title: `${metric} (${resolution} means)`, name: `telemetry-${metric}`,
      columns: [{ key: 'timestamp', label: 'Time', format: fmt.time }, { key: 'avg', label: 'Mean', num: true, format: fmt.num }, { key: 'min', label: 'Min', num: true, format: fmt.num }, { key: 'max', label: 'Max', num: true, format: fmt.num }],
      rows: points,
      option: {
        grid: { left: 8, right: 16, top: 16, bottom: 8, containLabel: true }, tooltip: { trigger: 'axis' },
        // Times in the range bar's time zone (ECharts would use the browser's own).
        xAxis: { type: 'time', axisLabel: { formatter: (v) => fmt.axisTime(v, hours) }, axisPointer: { label: { formatter: (p) => fmt.time(p.value) } } },
        yAxis: { type: 'value', scale: true },
        series: [{ type: 'line', name: metric, showSymbol: false, data: points.map((p) => [p.timestamp, value(p)]) }],
      },
    }).card);
  });
}
