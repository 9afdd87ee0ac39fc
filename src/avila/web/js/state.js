// Page state lives in the URL hash: #/funnels?preset=30d&tz=UTC&steps=... so a link can be
// shared. The API key is never part of it.
export const PRESETS = { '1d': 1, '7d': 7, '30d': 30, '90d': 90 };
const DAY_MS = 86400000;

export function parseHash(hash = location.hash) {
  const text = hash.replace(/^#\/?/, '');
  const [page, query = ''] = text.split('?');
  return { page: page || 'overview', params: new URLSearchParams(query) };
}

export function buildHash(page, params) {
  const query = params.toString();
  return `#/${page}${query ? `?${query}` : ''}`;
}

// Replace some params of the current page's URL without adding history entries per keystroke.
export function updateParams(changes, { push = false } = {}) {
  const { page, params } = parseHash();
  for (const [name, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === '') params.delete(name);
    else params.set(name, value);
  }
  const hash = buildHash(page, params);
  if (push) history.pushState(null, '', hash);
  else history.replaceState(null, '', hash);
}

// Offset (ms) of `timeZone` from UTC at instant `utcMs`.
function zoneOffset(utcMs, timeZone) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit',
    }).formatToParts(new Date(utcMs)).map((p) => [p.type, p.value]),
  );
  const asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
  return asUtc - Math.floor(utcMs / 1000) * 1000;
}

// Local midnight of 'YYYY-MM-DD' in `timeZone`, as a UTC instant.
export function zonedMidnight(day, timeZone) {
  const [y, m, d] = day.split('-').map(Number);
  const guess = Date.UTC(y, m - 1, d);
  let instant = guess - zoneOffset(guess, timeZone);
  instant = guess - zoneOffset(instant, timeZone); // second pass settles DST edges
  return new Date(instant);
}

export function localDay(date, timeZone) {
  return new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(date);
}

function addDays(day, n) {
  const [y, m, d] = day.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d) + n * DAY_MS).toISOString().slice(0, 10);
}

// The shared date range of every page: a preset (rolling, ends now) or whole local days
// [from 00:00, to + 1 day 00:00) in the chosen time zone.
export function currentRange(params = parseHash().params) {
  const tz = params.get('tz') || 'UTC';
  const from = params.get('from');
  const to = params.get('to');
  if (from && to) {
    return {
      preset: 'custom', tz, from, to,
      start: zonedMidnight(from, tz).toISOString(),
      end: zonedMidnight(addDays(to, 1), tz).toISOString(),
    };
  }
  const preset = PRESETS[params.get('preset')] ? params.get('preset') : '30d';
  const end = new Date();
  const start = new Date(end.getTime() - PRESETS[preset] * DAY_MS);
  return {
    preset, tz, from: localDay(start, tz), to: localDay(end, tz),
    start: start.toISOString(), end: end.toISOString(),
  };
}

export function rangeQuery(range = currentRange()) {
  return { start_time: range.start, end_time: range.end, timezone: range.tz };
}
