// The view and its filters live in the URL hash, so reload, back and forward restore
// them and any view can be linked: #/overview?range=7d, #/findings?level=high&status=open
// &host=WS01&rule=…&q=…&range=24h&sort=severity&page=2, #/finding/<id>, #/sensors?state=silent.

export const VIEWS = ["overview", "findings", "finding", "sensors"];
/** Filters a findings URL may carry (what the list form edits). */
export const LIST_PARAMS = ["level", "status", "rule", "host", "q", "range", "since", "until", "sort", "page"];
/** Time ranges the page offers; "custom" uses since/until. */
export const RANGES = { "24h": 864e5, "7d": 6048e5, "30d": 2592e6, "90d": 7776e6 };

export function current() {
  const raw = location.hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const [view, ...rest] = path.split("/");
  const id = rest.length ? decodeURIComponent(rest.join("/")) : null;
  return { view: VIEWS.includes(view) ? view : "overview", id, params };
}

/** "#/findings?…" with empty values left out. */
export function href(view, params = {}, id = null) {
  const p = new URLSearchParams();
  const entries = params instanceof URLSearchParams ? [...params] : Object.entries(params);
  for (const [k, v] of entries) if (v !== "" && v != null) p.append(k, v);
  const qs = p.toString();
  return `#/${view}${id ? `/${encodeURIComponent(id)}` : ""}${qs ? `?${qs}` : ""}`;
}

export function go(view, params = {}, id = null) {
  const target = href(view, params, id);
  if (location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = target;
}

/** The API's since/until for a range (and custom bounds) from URL params. */
export function timeBounds(params) {
  const range = params.get("range") || "";
  const out = {};
  if (RANGES[range]) out.since = new Date(Date.now() - RANGES[range]).toISOString();
  else if (range === "custom") {
    if (params.get("since")) out.since = new Date(params.get("since")).toISOString();
    if (params.get("until")) out.until = new Date(params.get("until")).toISOString();
  }
  return out;
}

/** The time-range params of a URL, to carry from one view to another. */
export function rangeParams(params) {
  const out = {};
  for (const k of ["range", "since", "until"]) if (params.get(k)) out[k] = params.get(k);
  return out;
}
