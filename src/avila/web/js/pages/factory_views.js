// Plant views of the Factory page: OEE gauges with the six losses, SPC X̄-R from recent
// readings, energy, maintenance RUL and an optimised schedule (Gantt). Each view fails alone:
// its error is shown in words in its own card.
import { api } from '../api.js';
import { mapLimited } from '../people.js';
import { updateParams } from '../state.js';
import { chartCard, errorBox, escapeHtml, fmt, h, tiles } from '../ui.js';

const SUBGROUP = 5;
const SUBGROUPS = 30;
const LOSSES = [
  ['equipment_failure_hours', 'Equipment failure'], ['setup_and_adjustments_hours', 'Setup and adjustments'],
  ['idling_and_minor_stops_hours', 'Idling and minor stops'], ['reduced_speed_hours', 'Reduced speed'],
  ['process_defects_hours', 'Process defects'], ['reduced_yield_hours', 'Reduced yield'],
];

async function guarded(holder, title, draw) {
  holder.append(h('p', { class: 'muted', 'data-loading': '' }, `${title}: loading…`));
  try {
    await draw(holder);
    holder.querySelector('[data-loading]')?.remove();
  } catch (err) {
    holder.querySelector('[data-loading]')?.remove();
    holder.append(h('section', { class: 'card' }, h('h2', {}, title), errorBox(err)));
  }
}

export async function drawPlant(out, { devices, range, params, device }) {
  const machines = devices.filter((d) => d.device_id === (d.machine || d.device_id) && d.attributes?.ideal_cycle_time_ms);
  const machine = machines.find((m) => m.device_id === device) || machines[0];
  const sensor = devices.find((d) => d.machine === machine?.device_id && d.device_id !== machine?.device_id) || devices.find((d) => d.device_id === device);
  out.append(h('h2', {}, `Plant${machine ? ` · machine ${machine.device_id}` : ''}`));
  // Views load in parallel, each into its own slot so the layout keeps its order.
  const grid = h('div', { class: 'grid two' });
  const wide = h('div');
  out.append(grid, wide);
  const slot = (parent) => parent.appendChild(h('div', { class: 'slot' }));
  const views = [];
  if (machine) views.push(guarded(slot(grid), 'OEE', (el) => drawOee(el, machine, range)));
  if (sensor) views.push(guarded(slot(grid), 'SPC', (el) => drawSpc(el, sensor, range)));
  if (machine) views.push(guarded(slot(grid), 'Energy', (el) => drawEnergy(el, machine, range, params)));
  views.push(guarded(slot(wide), 'Maintenance', (el) => drawMaintenance(el, devices)));
  if (machines.length) views.push(guarded(slot(wide), 'Schedule', (el) => drawSchedule(el, machines)));
  await Promise.all(views);
}

async function drawOee(grid, machine, range) {
  const oee = await api('/api/v1/industry40/oee/calculate', { method: 'POST', body: { device_id: machine.device_id, start_time: range.start, end_time: range.end } });
  const gauges = [['Availability', oee.availability], ['Performance', oee.performance], ['Quality', oee.quality], ['OEE', oee.oee]];
  const losses = LOSSES.map(([key, label]) => ({ loss: label, hours: oee.losses?.[key] }));
  const card = chartCard({
    title: `OEE ${fmt.pct(oee.oee)} (${oee.classification})`, name: 'oee',
    note: `Six big losses (hours): ${losses.map((l) => `${l.loss} ${l.hours === null || l.hours === undefined ? 'n/a' : fmt.num(l.hours)}`).join(' · ')}`,
    columns: [{ key: 'loss', label: 'Measure' }, { key: 'hours', label: 'Value', num: true, format: fmt.num }],
    rows: [...gauges.map(([loss, value]) => ({ loss, hours: value })), ...losses],
    option: {
      series: gauges.map(([name, value], i) => ({
        type: 'gauge', name, min: 0, max: 100, radius: '42%', center: [`${25 + (i % 2) * 50}%`, `${i < 2 ? 28 : 76}%`],
        startAngle: 210, endAngle: -30, progress: { show: true, width: 8 }, axisLine: { lineStyle: { width: 8 } },
        axisTick: { show: false }, splitLine: { show: false }, axisLabel: { show: false }, pointer: { show: false },
        title: { offsetCenter: [0, '70%'], fontSize: 12 }, detail: { offsetCenter: [0, 0], fontSize: 16, formatter: '{value} %' },
        data: [{ name, value: Math.round((value ?? 0) * 1000) / 10 }],
      })),
    },
  });
  grid.append(card.card);
}

async function drawSpc(grid, sensor, range) {
  const metric = Object.keys((await api(`/api/v1/industry40/twin/${encodeURIComponent(sensor.device_id)}`)).reported || {}).find((m) => m !== 'state');
  if (!metric) return;
  const end = new Date(range.end);
  const start = new Date(Math.max(Date.parse(range.start), end.getTime() - 6 * 3600000));
  const history = await api(`/api/v1/industry40/twin/${encodeURIComponent(sensor.device_id)}/history`, { query: { metric, start_time: start.toISOString(), end_time: end.toISOString(), resolution: 'raw' } });
  const values = (history.series?.[metric] || []).map((p) => p.value ?? p.avg);
  const usable = values.slice(-SUBGROUP * SUBGROUPS);
  const subgroups = [];
  for (let i = 0; i + SUBGROUP <= usable.length; i += SUBGROUP) subgroups.push(usable.slice(i, i + SUBGROUP));
  if (subgroups.length < 2) {
    grid.append(h('section', { class: 'card' }, h('h2', {}, `SPC ${metric}`), h('p', { class: 'muted' }, 'Too few readings in the last 6 hours of the range for an X̄-R chart.')));
    return;
  }
  const spc = await api('/api/v1/industry40/quality/inspect', { method: 'POST', body: { subgroups, chart: 'xbar_r', rules: 'western_electric' } });
  const means = subgroups.map((g) => g.reduce((a, b) => a + b, 0) / g.length);
  const flagged = new Set(spc.violations.map((v) => v.index));
  const rows = means.map((mean, i) => ({ subgroup: i + 1, mean, range: Math.max(...subgroups[i]) - Math.min(...subgroups[i]), rules: spc.violations.filter((v) => v.index === i).map((v) => v.rule).join(', ') }));
  const limit = (name, value) => ({ name, yAxis: value, label: { formatter: `${name} ${fmt.num(value)}`, position: 'insideEndTop' } });
  grid.append(chartCard({
    title: `SPC X̄-R · ${sensor.device_id} ${metric}`, name: 'spc',
    note: `Subgroups of ${SUBGROUP} consecutive readings (last 6 h of the range); ${spc.violations.length} run-rule violations (Western Electric).`,
    columns: [{ key: 'subgroup', label: 'Subgroup', num: true }, { key: 'mean', label: 'X̄', num: true, format: fmt.num }, { key: 'range', label: 'R', num: true, format: fmt.num }, { key: 'rules', label: 'Violations' }],
    rows,
    option: {
      grid: [{ left: 8, right: 60, top: 16, height: '52%', containLabel: true }, { left: 8, right: 60, top: '72%', bottom: 8, containLabel: true }],
      tooltip: { trigger: 'axis' },
      xAxis: [{ type: 'category', data: rows.map((r) => r.subgroup), gridIndex: 0 }, { type: 'category', data: rows.map((r) => r.subgroup), gridIndex: 1 }],
      yAxis: [{ type: 'value', scale: true, gridIndex: 0 }, { type: 'value', scale: true, gridIndex: 1 }],
      series: [
        {
          type: 'line', name: 'X̄', data: means.map((m, i) => ({ value: m, itemStyle: flagged.has(i) ? { color: '#b3261e' } : undefined, symbolSize: flagged.has(i) ? 10 : 4 })),
          markLine: { symbol: 'none', lineStyle: { type: 'dashed' }, data: [limit('UCL', spc.ucl), limit('CL', spc.center_line), limit('LCL', spc.lcl)] },
        },
        {
          type: 'line', name: 'R', xAxisIndex: 1, yAxisIndex: 1, data: rows.map((r) => r.range), symbolSize: 3,
          markLine: { symbol: 'none', lineStyle: { type: 'dashed' }, data: [limit('UCL', spc.dispersion.ucl), limit('R̄', spc.dispersion.center_line)] },
        },
      ],
    },
    tall: true,
  }).card);
}

function energyOption(days) {
  return {
    grid: { left: 8, right: 16, top: 30, bottom: 8, containLabel: true }, tooltip: { trigger: 'axis' }, legend: { top: 0 },
    xAxis: { type: 'category', data: days.map((d) => d.date) }, yAxis: { type: 'value', name: 'kWh' },
    series: [{ type: 'bar', name: 'Producing', stack: 'e', data: days.map((d) => Math.max(0, d.kwh - (d.idle_kwh || 0))) }, { type: 'bar', name: 'Idle', stack: 'e', data: days.map((d) => d.idle_kwh || 0) }],
  };
}

function energyTiles(device, energy, co2) {
  const co2kg = device.co2_kg ?? energy.co2_kg ?? device.kwh * co2;
  return tiles([
    ['kWh', fmt.num(device.kwh), 'kwh'], ['Peak 15 min (kW)', fmt.num(device.peak_demand_kw), 'peak'],
    ['kWh per good unit', fmt.num(device.specific_energy_kwh_per_unit), 'sec'], ['CO₂ (kg)', fmt.num(co2kg), 'co2'],
  ]);
}

async function drawEnergy(grid, machine, range, params) {
  // No readings exist before the device was first seen: asking from then on gives the same
  // kWh and days and spares the store a scan of the empty part of a long range.
  const from = machine.first_seen && machine.first_seen > range.start ? machine.first_seen : range.start;
  const ask = (co2) => api('/api/v1/industry40/energy/consumption', { query: { device_id: machine.device_id, start_time: from, end_time: range.end, tz: range.tz, co2_kg_per_kwh: co2 } });
  const co2 = Number(params.get('co2')) || 0.4;
  const energy = await ask(co2);
  const device = energy.devices?.[0];
  const card = h('section', { class: 'card', 'data-section': 'energy' });
  const factor = h('input', { id: 'co2-factor', type: 'number', step: '0.01', min: '0', max: '10', value: co2 });
  if (!device) {
    grid.append(card);
    card.append(h('h2', {}, 'Energy'), h('p', { class: 'muted' }, 'No energy readings in this range.'));
    return;
  }
  const days = device.days || [];
  const chart = chartCard({
    title: `Energy · ${machine.device_id}`, name: 'energy',
    columns: [{ key: 'date', label: 'Day' }, { key: 'kwh', label: 'kWh', num: true, format: fmt.num }, { key: 'idle_kwh', label: 'Idle kWh', num: true, format: fmt.num }],
    rows: days,
    option: energyOption(days),
  });
  grid.append(chart.card);
  const figures = h('div', {}, energyTiles(device, energy, co2));
  const message = h('div', { role: 'status' });
  // A new factor asks the API again (it computes the CO₂) and redraws the figures in place.
  let asked = 0;
  factor.addEventListener('change', async () => {
    const next = Number(factor.value);
    if (factor.value === '' || !factor.checkValidity() || !(next >= 0)) return;
    updateParams({ co2: factor.value });
    const mine = ++asked;
    try {
      const again = await ask(next);
      const now = again.devices?.[0];
      if (mine !== asked || !now) return;
      chart.update(energyOption(now.days || []), now.days || []);
      figures.replaceChildren(energyTiles(now, again, next));
      message.replaceChildren();
    } catch (err) {
      if (mine === asked) message.replaceChildren(errorBox(err));
    }
  });
  chart.card.append(figures, h('label', {}, 'kg CO₂ per kWh', factor), message);
}

async function drawMaintenance(out, devices) {
  const withRules = devices.filter((d) => d.device_id !== d.machine || !d.attributes?.ideal_cycle_time_ms);
  const predictions = await mapLimited(withRules, 4, (d) => api('/api/v1/industry40/maintenance/predict', { method: 'POST', body: { device_id: d.device_id } }));
  const rows = predictions.map((p) => ({ ...p, low: p.rul_interval_hours?.[0], high: p.rul_interval_hours?.[1] }))
    .sort((a, b) => (a.rul_hours ?? Infinity) - (b.rul_hours ?? Infinity));
  const shown = rows.filter((r) => r.rul_hours !== null && r.rul_hours !== undefined);
  out.append(chartCard({
    title: 'Maintenance: remaining useful life', name: 'maintenance',
    columns: [{ key: 'device_id', label: 'Device' }, { key: 'risk_level', label: 'Risk', format: (v) => h('span', { class: `badge ${v}` }, v) },
      { key: 'rul_hours', label: 'RUL (h)', num: true, format: fmt.num }, { key: 'low', label: '5 %', num: true, format: fmt.num }, { key: 'high', label: '95 %', num: true, format: fmt.num },
      { key: 'failure_probability', label: `Failure within ${predictions[0]?.horizon_hours ?? 168} h`, num: true, format: fmt.pct }, { key: 'recommendation', label: 'Recommendation' }],
    rows, showTable: true,
    option: {
      grid: { left: 8, right: 16, top: 8, bottom: 28, containLabel: true }, tooltip: { trigger: 'axis' },
      xAxis: { type: 'value', name: 'hours', nameLocation: 'middle', nameGap: 24 }, yAxis: { type: 'category', inverse: true, data: shown.map((r) => r.device_id) },
      series: [{ type: 'bar', name: 'RUL (h)', data: shown.map((r) => ({ value: r.rul_hours, itemStyle: { color: { critical: '#b3261e', high: '#e07b39', medium: '#a68a24' }[r.risk_level] || '#3a9d5d' } })) }],
    },
  }).card);
}

// An example order book for the plant's machines: 8 orders of 200-900 units, each eligible on
// every machine at its ideal cycle time, due every 90 minutes.
export function exampleOrders(machines) {
  return Array.from({ length: 8 }, (_, i) => ({
    id: `order-${i + 1}`,
    processing_minutes: Object.fromEntries(machines.map((m) => [m.device_id, Math.max(1, Math.round(((200 + (i * 100) % 700) * m.attributes.ideal_cycle_time_ms) / 60000))])),
    due_minute: 90 * (i + 1),
  }));
}

async function drawSchedule(out, machines) {
  const orders = exampleOrders(machines);
  const plan = await api('/api/v1/industry40/optimize/production', { method: 'POST', body: { orders, objective: 'total_tardiness', time_limit_s: 5 } });
  const lanes = machines.map((m) => m.device_id);
  const rows = plan.schedule.map((s) => ({ ...s, lane: lanes.indexOf(s.machine_id) }));
  out.append(chartCard({
    title: `Schedule (${plan.status}, ${plan.objective} ${fmt.num(plan.objective_value)}, makespan ${fmt.int(plan.makespan)} min)`, name: 'schedule',
    note: 'An example order book of 8 orders on the plant\'s machines (processing time = units × ideal cycle time), solved by the optimiser.',
    columns: [{ key: 'order_id', label: 'Order' }, { key: 'machine_id', label: 'Machine' }, { key: 'start', label: 'Start (min)', num: true }, { key: 'end', label: 'End (min)', num: true }, { key: 'tardiness', label: 'Tardiness', num: true }],
    rows,
    option: {
      // A string formatter is HTML to ECharts: the device id (any text) is escaped.
      tooltip: { formatter: (p) => escapeHtml(`${p.value[3]} on ${lanes[p.value[0]]}: ${p.value[1]}–${p.value[2]} min`) },
      grid: { left: 8, right: 16, top: 8, bottom: 28, containLabel: true },
      xAxis: { type: 'value', name: 'minutes', nameLocation: 'middle', nameGap: 24 }, yAxis: { type: 'category', data: lanes },
      series: [{
        type: 'custom',
        renderItem: (params, api2) => {
          const start = api2.coord([api2.value(1), api2.value(0)]);
          const end = api2.coord([api2.value(2), api2.value(0)]);
          const height = api2.size([0, 1])[1] * 0.6;
          return {
            type: 'rect', shape: { x: start[0], y: start[1] - height / 2, width: Math.max(1, end[0] - start[0]), height },
            style: { fill: ['#2456a6', '#e07b39', '#3a9d5d', '#b83b5e', '#7a5cc7', '#2c9fb0', '#a68a24', '#6b7785'][params.dataIndex % 8], stroke: '#fff' },
          };
        },
        encode: { x: [1, 2], y: 0 },
        data: rows.map((r) => [r.lane, r.start, r.end, r.order_id]),
      }],
    },
  }).card);
}
