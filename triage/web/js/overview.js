// The overview: what is happening in the chosen time range. Counts by status and kind,
// findings over time by level (stacked bars), top rules, hosts, tactics and techniques.
// Everything links to the findings list with the matching filter (same time range).

import { api } from "./api.js";
import { tacticUrl, techniqueUrl } from "./attack.js";
import { stackedBars } from "./chart.js";
import { $, LEVELS, extLink, fill, h, levelBadge, say, short } from "./dom.js";
import { href, rangeParams, timeBounds } from "./route.js";

function card(label, value, link, cls = "") {
  const body = [h("span", { class: "card-value" }, Number(value).toLocaleString()), h("span", { class: "card-label" }, label)];
  return link
    ? h("a", { class: `card ${cls}`, href: link, "aria-label": `${label}: ${value}` }, ...body)
    : h("div", { class: `card ${cls}` }, ...body);
}

function topList(title, rows, render, empty = "none in this range") {
  const list = h("ol", { class: "top" });
  const max = Math.max(1, ...rows.map((r) => r.count));
  for (const r of rows) {
    list.append(h("li", {},
      h("span", { class: "top-label" }, render(r)),
      h("span", { class: "top-bar", "aria-hidden": "true" }, h("span", { class: "top-fill", style: null, dataset: { w: r.count / max } })),
      h("span", { class: "top-count" }, r.count.toLocaleString())));
  }
  return h("section", { class: "panel", "aria-label": title }, h("h3", {}, title),
    rows.length ? list : h("p", { class: "empty" }, empty));
}

/** Bar widths without inline style attributes (the CSP forbids inline style): set the
 * CSSOM property, which the policy allows. */
function sizeBars(root) {
  for (const el of root.querySelectorAll(".top-fill")) el.style.width = `${Math.round(Number(el.dataset.w) * 100)}%`;
}

export async function showOverview(params) {
  const status = $("#overview-status");
  say(status, "loading…");
  const range = params.get("range") || "";
  $("#o-range").value = range;
  const carry = rangeParams(params);
  const q = new URLSearchParams(timeBounds(params));
  let data;
  try {
    data = await api(`/api/overview?${q}`);
  } catch (e) {
    say(status, `error: ${e.message}`, true);
    return;
  }
  const link = (extra) => href("findings", { ...extra, ...carry });
  fill($("#o-cards"),
    card("findings", data.total, link({}), "card-total"),
    card("open", data.status.open, link({ status: "open" }), "card-open"),
    card("acknowledged", data.status.acknowledged, link({ status: "acknowledged" }), "card-ack"),
    card("closed", data.status.closed, link({ status: "closed" }), "card-closed"),
    card("Sigma", data.kinds.sigma, null, "card-kind"),
    card("correlations", data.kinds.correlation, null, "card-kind"),
    card("sensor health", data.kinds.sensor_health, href("sensors"), "card-kind"),
    data.kinds.detection_health ? card("detection health", data.kinds.detection_health, null, "card-kind") : null,
  );
  const chart = $("#o-chart");
  if (!data.total) {
    fill(chart, h("p", { class: "empty" }, range
      ? "No findings in this time range. Choose a longer range above."
      : "No findings in this time range: none have been written for your tenant yet."));
  } else {
    fill(chart, stackedBars(data.series, data.interval, "Findings over time by level"));
  }
  fill($("#o-legend"), ...LEVELS.map((lv) =>
    h("a", { href: link({ level: lv }), class: "legend-item" }, h("span", { class: `swatch seg-${lv}`, "aria-hidden": "true" }),
      `${lv} `, h("span", { class: "legend-count" }, (data.levels[lv] || 0).toLocaleString()))));
  $("#o-span").textContent = data.since && data.total
    ? `${short(data.since)} – ${short(data.until)} UTC, one bar per ${data.interval}` : "";
  const tops = $("#o-tops");
  fill(tops,
    topList("Top rules", data.top_rules, (r) => [levelBadge(r.level), " ", h("a", { href: link({ rule: r.id }) }, r.name)]),
    topList("Top hosts", data.top_hosts, (r) => h("a", { href: link({ host: r.key }) }, r.key)),
    topList("Top ATT&CK tactics", data.top_tactics, (r) => extLink(tacticUrl(r.key) || "", r.key)),
    topList("Top ATT&CK techniques", data.top_techniques, (r) => extLink(techniqueUrl(r.key) || "", r.key)),
  );
  sizeBars(tops);
  say(status, data.timed_out ? "partial results: the search hit its time budget" : "", data.timed_out);
  status.dataset.total = data.total;
}
