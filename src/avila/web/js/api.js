// The only door to the server: every call sends the key in the x-api-key header (never in a
// URL) and turns the API's error shape into an ApiError whose message is readable words.
const KEY_ITEM = 'avila.key';

export const session = {
  get key() { return sessionStorage.getItem(KEY_ITEM); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    else sessionStorage.removeItem(KEY_ITEM);
  },
  me: null, // {project, scopes} from GET /api/v1/me
  get isAdmin() { return Boolean(this.me && this.me.scopes.includes('admin')); },
};

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  // "this key lacks the 'admin' scope (missing_scope, HTTP 403): steps[1].condition_type ..."
  get words() {
    const where = (this.details || [])
      .map((d) => [d.path, d.message].filter(Boolean).join(': '))
      .filter(Boolean);
    const tail = where.length ? ` — ${where.join('; ')}` : '';
    return `${this.message} (${this.code}, HTTP ${this.status})${tail}`;
  }
}

// The API's one error shape, {"error": {"code", "message", "details"}}, as an ApiError.
export function errorFrom(response, data) {
  const error = (data && data.error) || {};
  return new ApiError(
    response.status,
    error.code || 'http_error',
    error.message || `the server answered ${response.status} ${response.statusText}`,
    error.details || [],
  );
}

let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

function queryString(query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') params.set(name, value);
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

// api('/api/v1/analytics/funnel', {method: 'POST', body}) → {data, etag}; with `raw` the
// body of a success is returned as text (ndjson exports), errors are handled the same way.
export async function request(path, { method = 'GET', body, query, headers = {}, key, raw = false } = {}) {
  const sent = { 'x-api-key': key || session.key, ...headers };
  if (body !== undefined) sent['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(path + queryString(query), {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (err) {
    throw new ApiError(0, 'network_error', `the server could not be reached (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  if (raw && response.ok) return { data: text, etag: response.headers.get('etag') };
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    const failure = errorFrom(response, data);
    if (response.status === 401 && !key) onUnauthorized(failure);
    throw failure;
  }
  return { data, etag: response.headers.get('etag') };
}

export async function api(path, options) {
  return (await request(path, options)).data;
}
