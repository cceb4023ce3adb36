// The findings list: filters from the URL, one page at a time (the API caps pages at
// 200 and paging at 10,000 findings), keyboard selection (roving tabindex).

import { api } from "./api.js";
import { $, $$, fill, h, kindBadge, levelBadge, say, short, statusBadge } from "./dom.js";
import { LIST_PARAMS, go, timeBounds } from "./route.js";

export const PAGE_SIZE = 50;
export const list = { rows: [], selected: -1, total: 0, page: 1, params: new URLSearchParams() };

/** Put the URL's filters into the form. */
function toForm(params) {
  $("#f-level").value = params.get("level") || "";
  $("#f-status").value = params.get("status") || "";
  $("#f-rule").value = params.get("rule") || "";
  $("#f-host").value = params.get("host") || "";
  $("#f-text").value = params.get("q") || "";
  $("#f-range").value = params.get("range") || "";
  $("#f-since").value = params.get("since") || "";
  $("#f-until").value = params.get("until") || "";
  $("#f-sort").value = params.get("sort") || "last_seen";
  $("#custom-range").hidden = $("#f-range").value !== "custom";
}

/** The form's filters as URL params (page back to 1). */
export function fromForm() {
  const range = $("#f-range").value;
  return {
    level: $("#f-level").value,
    status: $("#f-status").value,
    rule: $("#f-rule").value.trim(),
    host: $("#f-host").value.trim(),
    q: $("#f-text").value.trim(),
    range,
    since: range === "custom" ? $("#f-since").value : "",
    until: range === "custom" ? $("#f-until").value : "",
    sort: $("#f-sort").value === "last_seen" ? "" : $("#f-sort").value,
  };
}

function apiQuery(params) {
  const q = new URLSearchParams();
  for (const k of ["level", "status", "rule", "host", "q"]) if (params.get(k)) q.append(k, params.get(k));
  const bounds = timeBounds(params);
  for (const [k, v] of Object.entries(bounds)) q.set(k, v);
  const sort = params.get("sort") || "last_seen";
  q.set("sort", sort);
  if (sort === "rule" || sort === "host") q.set("order", "asc");
  q.set("page", String(list.page));
  q.set("size", String(PAGE_SIZE));
  return q;
}

function row(f, i) {
  const st = f.sigstream.finding;
  const g = f.sigstream.group || {};
  const cmd = f.process?.command_line || f.process?.executable || "";
  const tr = h("tr", { dataset: { id: st.id, index: i }, tabindex: "-1", "aria-selected": "false" },
    h("td", {}, levelBadge(f.rule.level)),
    h("td", { class: "rule-cell" }, h("a", { href: `#/finding/${encodeURIComponent(st.id)}`, class: "rule-link" }, f.rule.name),
      " ", kindBadge(f), cmd ? h("div", { class: "sub cmd" }, cmd) : null),
    h("td", {}, f.host.name),
    h("td", { class: "num" }, (g.count ?? 1).toLocaleString()),
    h("td", { class: "time", title: g.first_seen || "" }, short(g.first_seen).slice(0, 16)),
    h("td", { class: "time", title: g.last_seen || "" }, short(g.last_seen).slice(0, 16)),
    h("td", {}, statusBadge(st.status)),
    h("td", {}, st.assignee || ""),
  );
  tr.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) return; // the link navigates itself
    go("finding", {}, st.id);
  });
  return tr;
}

export async function showList(params) {
  list.params = params;
  list.page = Math.max(1, Number(params.get("page")) || 1);
  toForm(params);
  const status = $("#list-status");
  say(status, "loading…");
  const tbody = $("#findings tbody");
  try {
    const data = await api(`/api/findings?${apiQuery(params)}`);
    list.rows = data.findings;
    list.total = data.total;
    fill(tbody, ...data.findings.map(row));
    if (!data.findings.length) {
      tbody.append(h("tr", { class: "empty-row" }, h("td", { colspan: "8", class: "empty" },
        "No findings match these filters. Clear a filter or choose a longer time range.")));
    }
    const pages = Math.max(1, Math.ceil(Math.min(data.total, 10000) / PAGE_SIZE));
    $("#page-info").textContent = `page ${list.page} of ${pages.toLocaleString()}`;
    $("#prev").disabled = list.page <= 1;
    $("#next").disabled = list.page >= pages;
    say(status, `${data.total.toLocaleString()} findings` + (data.timed_out ? " (partial: the search hit its time budget)" : ""));
    status.dataset.total = data.total;
    select(Math.min(Math.max(list.selected, 0), data.findings.length - 1), false);
  } catch (e) {
    fill(tbody);
    say(status, `error: ${e.message}`, true);
  }
}

/** Select row `i` (and focus it when asked, for keyboard users). */
export function select(i, focus = true) {
  const rows = $$("#findings tbody tr[data-id]");
  if (!rows.length) { list.selected = -1; return; }
  i = Math.max(0, Math.min(i, rows.length - 1));
  for (const r of rows) { r.classList.remove("selected"); r.setAttribute("aria-selected", "false"); r.tabIndex = -1; }
  const r = rows[i];
  r.classList.add("selected");
  r.setAttribute("aria-selected", "true");
  r.tabIndex = 0;
  list.selected = i;
  if (focus) { r.focus(); r.scrollIntoView({ block: "nearest" }); }
}

export function selectedId() {
  const r = $$("#findings tbody tr[data-id]")[list.selected];
  return r ? r.dataset.id : null;
}

export function page(delta) {
  const p = Object.fromEntries([...list.params].filter(([k]) => LIST_PARAMS.includes(k)));
  const next = list.page + delta;
  if (next < 1) return;
  list.selected = 0;
  go("findings", { ...p, page: next > 1 ? String(next) : "" });
}
