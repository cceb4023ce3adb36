// Sensor health: sensors worst first (silent, degraded, healthy) with what is wrong with
// each, and the open sensor-health findings by kind (silent, gap, reset, stopped,
// tampered, source lost, skew), each linking to its findings.

import { api } from "./api.js";
import { $, ago, fill, h, levelBadge, say } from "./dom.js";
import { href } from "./route.js";

const PAGE = 50;

function stateBadge(state) {
  const s = ["silent", "degraded", "healthy"].includes(state) ? state : "unknown";
  return h("span", { class: `badge sensor-${s}` }, state || "?");
}

export async function showSensors(params) {
  const status = $("#sensors-status");
  say(status, "loading…");
  const state = params.get("state") || "";
  const page = Math.max(1, Number(params.get("page")) || 1);
  const q = new URLSearchParams({ page: String(page), size: String(PAGE) });
  if (state) q.set("state", state);
  let data;
  try {
    data = await api(`/api/sensors?${q}`);
  } catch (e) {
    say(status, `error: ${e.message}`, true);
    return;
  }
  const all = Object.values(data.counts).reduce((a, b) => a + b, 0);
  fill($("#s-cards"),
    h("a", { class: `card${state ? "" : " current"}`, href: href("sensors"), "aria-current": state ? null : "true" },
      h("span", { class: "card-value" }, all.toLocaleString()), h("span", { class: "card-label" }, "sensors")),
    ...Object.entries(data.counts).map(([s, n]) =>
      h("a", { class: `card card-${s}${state === s ? " current" : ""}`, href: href("sensors", { state: s }), "aria-current": state === s ? "true" : null },
        h("span", { class: "card-value" }, n.toLocaleString()), h("span", { class: "card-label" }, s))));

  const problems = data.health.filter((k) => k.count > 0);
  fill($("#s-health"), problems.length
    ? h("table", { id: "s-health-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Problem"), h("th", {}, "Level"), h("th", { class: "num" }, "Open findings"),
        h("th", {}, "Hosts"), h("th", {}, "Latest"))),
      h("tbody", {}, ...problems.map((k) => h("tr", { dataset: { kind: k.kind } },
        h("td", {}, h("a", { href: href("findings", { rule: k.rule_id, status: "open" }) }, k.name),
          h("div", { class: "sub" }, k.description)),
        h("td", {}, levelBadge(k.level)),
        h("td", { class: "num" }, k.count.toLocaleString()),
        h("td", {}, ...k.hosts.flatMap((x, i) => [i ? ", " : "", h("a", { href: href("findings", { rule: k.rule_id, host: x.key }) }, x.key)])),
        h("td", {}, k.latest ? h("a", { href: `#/finding/${encodeURIComponent(k.latest.sigstream.finding.id)}` },
          `${ago(k.latest["@timestamp"])} on ${k.latest.host?.name || "?"}`) : "")))))
    : h("p", { class: "empty" }, "No open sensor-health findings."));

  // Open health findings per host: what the status document alone does not say
  // (a tampered sensor stays "healthy" while it keeps sending).
  const openByHost = new Map();
  for (const k of data.health) for (const x of k.hosts) {
    openByHost.set(x.key, [...(openByHost.get(x.key) || []), k.name.replace(/^Sensor /, "").toLowerCase()]);
  }
  const problemsOf = (s) => [...s.problems, ...(openByHost.get(s.host) || []).map((n) => `open finding: ${n}`)];
  const tbody = $("#sensors tbody");
  fill(tbody, ...data.sensors.map((s) => h("tr", { dataset: { sensor: s.sensor_id } },
    h("td", {}, stateBadge(s.state)),
    h("td", { class: "mono" }, s.sensor_id),
    h("td", {}, s.host ? h("a", { href: href("findings", { host: s.host }) }, s.host) : ""),
    h("td", { class: "time", title: s.last_seen || "" }, ago(s.last_seen)),
    h("td", { class: "num" }, (s.events || 0).toLocaleString()),
    h("td", { class: "num" }, `${(s.rate || 0).toFixed(2)}/s`),
    h("td", {}, problemsOf(s).length ? h("ul", { class: "problems" }, ...problemsOf(s).map((p) => h("li", {}, p))) : h("span", { class: "ok" }, "ok")),
    h("td", {}, s.agent_version || ""))));
  if (!data.sensors.length) {
    tbody.append(h("tr", { class: "empty-row" }, h("td", { colspan: "8", class: "empty" },
      all ? "No sensors in this state." : "No sensors reported yet: the detect job writes them once events arrive (sensor health on).")));
  }
  const pages = Math.max(1, Math.ceil(data.total / PAGE));
  fill($("#s-pager"),
    page > 1 ? h("a", { href: href("sensors", { state, page: page > 2 ? page - 1 : "" }) }, "‹ Prev") : null,
    ` page ${page} of ${pages} `,
    page < pages ? h("a", { href: href("sensors", { state, page: page + 1 }) }, "Next ›") : null);
  say(status, `${data.total.toLocaleString()} sensors`);
}
