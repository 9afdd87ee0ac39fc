/*! Avila Analytics browser tracker. docs/tracker.md
 * <script src="https://HOST/avila.js" data-api-key="INGEST_KEY" defer></script>
 * Records a PageView on load and on SPA navigation; window.avila.track(name, properties),
 * .identify(userId, traits), .flush(), .reset(), .variant(experimentKey) (a Promise of the A/B
 * variant; records an $exposure event). Events go to POST {endpoint}/api/v1/events/batch
 * with the x-api-key header (fetch; keepalive when the page is hidden or unloads).
 */
(function () {
  "use strict";
  var VERSION = "1";
  var existing = window.avila;
  if (existing && existing.__avila) return; // loaded twice
  var preload = Array.isArray(existing) ? existing : []; // calls made before we loaded

  var SESSION_IDLE_MS = 30 * 60 * 1000; // GA4 / Plausible / PostHog session cut
  var FLUSH_DELAY_MS = 1000;
  var MAX_BATCH = 50;
  var MAX_QUEUE = 1000;
  // Browsers cap the keepalive bodies in flight, all requests together, at 64 KiB (UTF-8
  // bytes, not characters): a request past the cap fails whole.
  var KEEPALIVE_BYTES = 60000;
  // The server refuses an event over 32 KB of JSON (docs/ingestion.md): the page's own strings
  // are clipped so a long URL (state in the query) or title never costs the page view.
  var MAX_URL = 4096; // url, path and referrer: ASCII (the browser percent-encodes them)
  var MAX_TEXT = 1024; // title, user agent, locale: up to 3 UTF-8 bytes a character
  var KEY_ANON = "avila_anonymous_id";
  var KEY_USER = "avila_user_id";
  var KEY_SESSION = "avila_session";
  var KEY_QUEUE = "avila_queue";

  var script =
    document.currentScript ||
    document.querySelector('script[src*="avila.js"][data-api-key]');
  var attr = function (name) {
    return script ? script.getAttribute(name) : null;
  };
  var apiKey = attr("data-api-key");
  var origin = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  var endpoint = (attr("data-endpoint") || origin).replace(/\/+$/, "");
  var batchUrl = endpoint + "/api/v1/events/batch";
  var autoPageviews = attr("data-auto-pageview") !== "false";

  // --- storage (localStorage may be missing or throw: fall back to memory) ------------------
  var memory = {};
  function load(key) {
    try {
      var v = window.localStorage.getItem(key);
      return v === null ? memory[key] || null : v;
    } catch (e) {
      return memory[key] || null;
    }
  }
  function save(key, value) {
    memory[key] = value;
    try {
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, value);
    } catch (e) {
      /* private mode or quota: the in-memory copy still works for this page */
    }
  }

  function uuid() {
    var c = window.crypto;
    if (c && typeof c.randomUUID === "function") {
      try {
        return c.randomUUID();
      } catch (e) {
        /* insecure context */
      }
    }
    var b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) {
      return (x + 0x100).toString(16).slice(1);
    }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" +
      h.slice(16, 20) + "-" + h.slice(20);
  }

  // --- identity and session ------------------------------------------------------------------
  function anonymousId() {
    var id = load(KEY_ANON);
    if (!id) {
      id = uuid();
      save(KEY_ANON, id);
    }
    return id;
  }
  function sessionId(now) {
    var s = null;
    try {
      s = JSON.parse(load(KEY_SESSION) || "null");
    } catch (e) {
      s = null;
    }
    if (!s || typeof s.id !== "string" || !(now - s.last < SESSION_IDLE_MS)) {
      s = { id: uuid(), last: now };
    }
    s.last = now;
    save(KEY_SESSION, JSON.stringify(s));
    return s.id;
  }

  // The first `max` UTF-16 units of `text`, never half of a surrogate pair (JSON cannot carry
  // a lone one to the server's decoder).
  function clip(text, max) {
    if (typeof text !== "string" || text.length <= max) return text;
    var code = text.charCodeAt(max - 1);
    return text.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
  }

  // --- context (same coarse rules as avila.ingest.segment.user_agent_fields) -----------------
  function uaFields(ua) {
    var browsers = [
      ["Edge", /Edg(?:e|A|iOS)?\//], ["Opera", /OPR\/|Opera/],
      ["Samsung Internet", /SamsungBrowser\//], ["Firefox", /Firefox\/|FxiOS\//],
      ["Chrome", /Chrome\/|CriOS\/|Chromium\//], ["Safari", /Safari\//]
    ];
    var oses = [
      ["iOS", /iPhone|iPad|iPod/], ["Android", /Android/], ["Windows", /Windows/],
      ["macOS", /Mac OS X|Macintosh/], ["ChromeOS", /CrOS/], ["Linux", /Linux|X11/]
    ];
    var out = {};
    var i;
    for (i = 0; i < browsers.length; i++) {
      if (browsers[i][1].test(ua)) { out.browser = browsers[i][0]; break; }
    }
    for (i = 0; i < oses.length; i++) {
      if (oses[i][1].test(ua)) { out.os = oses[i][0]; break; }
    }
    if (/iPad|Tablet/.test(ua) || (/Android/.test(ua) && !/Mobile/.test(ua))) out.device_type = "tablet";
    else if (/Mobi|iPhone|iPod/.test(ua)) out.device_type = "mobile";
    else out.device_type = "desktop";
    return out;
  }
  function context(referrer) {
    var ua = navigator.userAgent || "";
    var device = uaFields(ua);
    var scr = window.screen;
    if (scr && scr.width >= 0 && scr.height >= 0) {
      device.screen_resolution = [Math.round(scr.width), Math.round(scr.height)];
    }
    var ctx = {
      device: device,
      user_agent: clip(ua, MAX_TEXT),
      viewport: {
        width: Math.max(0, Math.round(window.innerWidth || 0)),
        height: Math.max(0, Math.round(window.innerHeight || 0))
      },
      locale: clip(navigator.language, MAX_TEXT) || undefined
    };
    try {
      var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (tz) ctx.location = { timezone: tz };
    } catch (e) {
      /* no Intl */
    }
    if (referrer) ctx.referrer = clip(referrer, MAX_URL);
    return ctx;
  }

  // --- queue, persisted so events survive a navigation that beat the request -----------------
  var queue = [];
  try {
    queue = JSON.parse(load(KEY_QUEUE) || "[]");
    if (!Array.isArray(queue)) queue = [];
  } catch (e) {
    queue = [];
  }
  var inflight = {}; // event_id -> true while a request carries it
  var kept = {}; // event_id -> true while a keepalive request carries it
  var keepaliveBytes = 0; // bytes of keepalive bodies in flight
  var timer = null;
  var backoffMs = 0;

  function persist() {
    save(KEY_QUEUE, queue.length ? JSON.stringify(queue) : null);
  }
  function settle(ids) {
    var done = {};
    ids.forEach(function (id) { done[id] = true; delete inflight[id]; });
    queue = queue.filter(function (e) { return !done[e.event_id]; });
    persist();
  }
  function release(ids) {
    ids.forEach(function (id) { delete inflight[id]; });
  }
  function utf8Length(text) {
    if (typeof TextEncoder === "function") return new TextEncoder().encode(text).length;
    return encodeURIComponent(text).replace(/%[0-9A-F]{2}/gi, "x").length;
  }

  function post(events, keepalive) {
    var ids = events.map(function (e) { return e.event_id; });
    var body = JSON.stringify({ events: events });
    var bytes = keepalive ? utf8Length(body) : 0;
    if (keepalive) {
      keepaliveBytes += bytes;
      ids.forEach(function (id) { kept[id] = true; });
    }
    var done = function () {
      if (!keepalive) return;
      keepaliveBytes -= bytes;
      ids.forEach(function (id) { delete kept[id]; });
    };
    var init = {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": apiKey },
      body: body,
      credentials: "omit",
      mode: "cors",
      keepalive: !!keepalive
    };
    var sent;
    try {
      sent = fetch(batchUrl, init);
    } catch (e) {
      sent = Promise.reject(e);
    }
    return sent.then(
      function (res) {
        done();
        return res;
      },
      function (err) {
        done();
        throw err;
      }
    ).then(
      function (res) {
        // 2xx: stored (or rejected as invalid, which a retry cannot fix); other 4xx but
        // 408/429: a bad key or request, equally hopeless. Retry the rest later; event ids make
        // a re-send a duplicate, never a second event.
        if (res.ok || (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429)) {
          if (!res.ok && window.console) console.warn("avila: events refused with HTTP " + res.status);
          settle(ids);
          backoffMs = 0;
          // A 202 lists the events it refused (invalid, too large): say so, as for a 4xx.
          if (res.ok && !keepalive) {
            return res.json().then(function (body) {
              var refused = (body && body.rejected) || [];
              if (refused.length && window.console) {
                console.warn("avila: " + refused.length + " events refused: " +
                  refused.map(function (r) { return r.code + " (" + r.message + ")"; }).join("; "));
              }
            }, function () {});
          }
        } else {
          release(ids);
          retryLater();
        }
      },
      function () {
        release(ids);
        retryLater();
      }
    );
  }

  function retryLater() {
    backoffMs = Math.min(backoffMs ? backoffMs * 2 : 2000, 60000);
    schedule(backoffMs);
  }
  function schedule(delay) {
    if (timer === null) {
      timer = setTimeout(function () {
        timer = null;
        flush();
      }, delay);
    }
  }

  /** Send every queued event now. With keepalive the requests outlive the page. */
  function flush(keepalive) {
    if (!apiKey) return Promise.resolve();
    if (timer !== null && !keepalive) {
      clearTimeout(timer);
      timer = null;
    }
    // A normal request may be cancelled by an unload, so keepalive re-sends what it carries
    // (event ids make that a duplicate at worst), but never what another keepalive carries.
    var pending = queue.filter(function (e) {
      return keepalive ? !kept[e.event_id] : !inflight[e.event_id];
    });
    var sends = [];
    var chunk = [];
    var budget = KEEPALIVE_BYTES - keepaliveBytes;
    var skipped = false;
    function emit() {
      if (!chunk.length) return;
      chunk.forEach(function (e) { inflight[e.event_id] = true; });
      sends.push(post(chunk, keepalive));
      chunk = [];
    }
    pending.forEach(function (e) {
      if (chunk.length >= MAX_BATCH) emit();
      if (keepalive) {
        // What does not fit in the keepalive budget stays queued (localStorage) and is sent
        // by the next page load. 16: the body's {"events":[...]} around a chunk.
        var size = utf8Length(JSON.stringify(e)) + 1 + (chunk.length ? 0 : 16);
        if (size > budget) {
          skipped = true;
          return;
        }
        budget -= size;
      }
      chunk.push(e);
    });
    emit();
    if (skipped) schedule(FLUSH_DELAY_MS); // if the page lives on (only hidden), send the rest
    return Promise.all(sends).then(function () {});
  }

  function enqueue(event) {
    queue.push(event);
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    persist();
    if (queue.length - Object.keys(inflight).length >= MAX_BATCH) flush();
    else schedule(FLUSH_DELAY_MS);
  }

  function build(type, data, referrer, extraMetadata) {
    var now = Date.now();
    var anon = anonymousId();
    var metadata = { source: "avila.js", version: VERSION, anonymous_id: anon };
    for (var k in extraMetadata || {}) metadata[k] = extraMetadata[k];
    return {
      event_id: uuid(),
      user_id: load(KEY_USER) || anon,
      session_id: sessionId(now),
      timestamp: new Date(now).toISOString(),
      event_type: { type: type, data: data },
      metadata: metadata,
      context: context(referrer)
    };
  }

  // --- page views, including SPA navigation --------------------------------------------------
  var lastUrl = null;
  function page() {
    var url = location.href;
    if (url === lastUrl) return; // replaceState to the same URL, or a hashchange after popstate
    var referrer = lastUrl || document.referrer || null;
    lastUrl = url;
    var data = { url: clip(url, MAX_URL), path: clip(location.pathname, MAX_URL) };
    if (document.title) data.title = clip(document.title, MAX_TEXT);
    enqueue(build("PageView", data, referrer));
  }
  function onNavigate() {
    // Let the app update document.title for the new route first.
    setTimeout(page, 0);
  }
  if (autoPageviews) {
    ["pushState", "replaceState"].forEach(function (name) {
      var original = history[name];
      if (typeof original !== "function") return;
      history[name] = function () {
        var result = original.apply(this, arguments);
        onNavigate();
        return result;
      };
    });
    window.addEventListener("popstate", onNavigate);
    window.addEventListener("hashchange", onNavigate);
  }

  // --- A/B experiments -------------------------------------------------------------------------
  // The server assigns (md5 of project, key and user id, by weight), so every client and the
  // results agree. One request and one $exposure event per experiment and user per page load.
  var assignments = {};
  function variant(key) {
    if (typeof key !== "string" || !key) throw new TypeError("avila.variant needs an experiment key");
    var user = load(KEY_USER) || anonymousId();
    var slot = key + "\u001f" + user;
    if (assignments[slot]) return assignments[slot];
    var url = endpoint + "/api/v1/experiments/" + encodeURIComponent(key) +
      "/assignment?user_id=" + encodeURIComponent(user);
    var request = fetch(url, {
      headers: { "x-api-key": apiKey },
      credentials: "omit",
      mode: "cors"
    }).then(function (res) {
      if (!res.ok) throw new Error("HTTP " + res.status);
      return res.json();
    }).then(
      function (body) {
        enqueue(build("Custom", {
          name: "$exposure",
          properties: { experiment: key, variant: body.variant }
        }, null));
        return body.variant;
      },
      function (err) {
        // Show the default experience; a later call asks again.
        delete assignments[slot];
        if (window.console) console.warn("avila: no variant for experiment " + key + ": " + err.message);
        return null;
      }
    );
    assignments[slot] = request;
    return request;
  }

  // --- public API ----------------------------------------------------------------------------
  // The server's limit on ids and event names, in characters (a surrogate pair is one).
  var MAX_ID = 256;
  function characters(text) {
    return text.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, "_").length;
  }

  var api = {
    __avila: VERSION,
    /** A Custom event {name, properties}. */
    track: function (name, properties) {
      if (typeof name !== "string" || !name) throw new TypeError("avila.track needs an event name");
      if (characters(name) > MAX_ID) {
        throw new RangeError("avila.track: an event name is at most " + MAX_ID + " characters");
      }
      enqueue(build("Custom", { name: name, properties: properties || {} }, null));
    },
    /** Tie this browser's anonymous id (and its past events) to userId; later events use it. */
    identify: function (userId, traits) {
      if (userId === null || userId === undefined || userId === "") {
        throw new TypeError("avila.identify needs a user id");
      }
      // Checked before it is kept: every later event of this browser would carry it, and the
      // server refuses events whose user id is longer.
      if (characters(String(userId)) > MAX_ID) {
        throw new RangeError("avila.identify: a user id is at most " + MAX_ID + " characters");
      }
      save(KEY_USER, String(userId));
      enqueue(build("Custom", { name: "$identify", properties: traits || {} }, null));
    },
    /** Record a page view now (automatic unless data-auto-pageview="false"). */
    page: function () {
      lastUrl = null;
      page();
    },
    /** Forget the user (logout): a new anonymous id and session. */
    reset: function () {
      save(KEY_USER, null);
      save(KEY_ANON, null);
      save(KEY_SESSION, null);
    },
    /** Send queued events now; resolves when the requests have answered. */
    flush: function () {
      return flush(false);
    },
    /** A Promise of this user's variant name of experiment `key` (null if it cannot be had);
     * records an $exposure event the first time per page. */
    variant: variant,
    anonymousId: anonymousId,
    userId: function () {
      return load(KEY_USER);
    }
  };
  window.avila = api;

  if (!apiKey) {
    if (window.console) console.warn("avila: no data-api-key on the <script> tag; nothing is sent");
  }

  // Hidden or unloading: hand everything to keepalive requests, which outlive the page.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") flush(true);
  });
  window.addEventListener("pagehide", function () {
    flush(true);
  });

  preload.forEach(function (call) {
    if (call && typeof api[call[0]] === "function") api[call[0]].apply(api, call.slice(1));
  });
  if (autoPageviews) page();
  if (queue.length) schedule(0); // left over from an earlier page
})();
