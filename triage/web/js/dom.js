// DOM helpers. Every piece of data becomes a text node or an attribute value, never
// markup: findings carry strings an attacker chose (command lines, paths, host names).

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** An element with attributes and children (strings become text nodes). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element (for the chart), same rules as h(). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "href") el.setAttribute("href", v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A URL only if it is http(s): references come from rule files, and a `javascript:`
 * link must never become clickable. */
export function safeUrl(u) {
  return typeof u === "string" && /^https?:\/\//i.test(u.trim()) ? u.trim() : null;
}

/** An external link (new tab, no referrer), or plain text when the URL is not http(s). */
export function extLink(url, label) {
  const ok = safeUrl(url);
  if (!ok) return h("span", { class: "unsafe-url", title: "not an http(s) link" }, label ?? String(url));
  return h("a", { href: ok, target: "_blank", rel: "noopener noreferrer" }, label ?? ok);
}

/** "2026-11-20 10:01:00" (UTC) from an ISO time. */
export const short = (ts) => (ts ? String(ts).slice(0, 19).replace("T", " ") : "");

/** "42s ago", "5m ago", "3h ago", "2d ago". */
export function ago(ts, now = Date.now()) {
  if (!ts) return "never";
  const s = Math.max(0, (now - Date.parse(ts)) / 1000);
  for (const [u, n] of [["d", 86400], ["h", 3600], ["m", 60]]) if (s >= n) return `${Math.floor(s / n)}${u} ago`;
  return `${Math.floor(s)}s ago`;
}

export const LEVELS = ["critical", "high", "medium", "low", "informational"];

export function levelBadge(level) {
  const lv = level || "none";
  return h("span", { class: `badge level level-${LEVELS.includes(lv) ? lv : "none"}` }, lv);
}

export function statusBadge(status) {
  const st = ["open", "acknowledged", "closed"].includes(status) ? status : "unknown";
  return h("span", { class: `badge status status-${st}` }, status || "?");
}

/** "correlation", "sensor health" or null (a Sigma finding). */
export function kindOf(f) {
  if (f?.event?.category === "correlation" || f?.sigstream?.correlation) return "correlation";
  if ((f?.rule?.tags || []).includes("sigstream.sensor_health")) return "sensor health";
  return null;
}

export function kindBadge(f) {
  const kind = kindOf(f);
  return kind ? h("span", { class: `badge kind kind-${kind.replace(" ", "-")}` }, kind) : null;
}

/** A status line: text, and whether it is an error (styled, announced). */
export function say(el, text, error = false) {
  el.textContent = text;
  el.classList.toggle("error", error);
}
