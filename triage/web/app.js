// Sigstream triage page: plain DOM, no framework. Data is always inserted as text
// (never as HTML): command lines and paths come from endpoints an attacker controls.
"use strict";

const state = { page: 1, size: 25, total: 0, current: null };
const $ = (sel) => document.querySelector(sel);

function key() { return localStorage.getItem("sigstream-api-key") || ""; }

async function api(path, options = {}) {
  const headers = { "X-API-Key": key(), ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const resp = await fetch(path, { ...options, headers });
  const body = resp.headers.get("content-type")?.includes("json") ? await resp.json() : {};
  if (!resp.ok) throw new Error(body.detail ? JSON.stringify(body.detail) : resp.statusText);
  return body;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.textContent = text == null ? "" : String(text);
  if (cls) span.className = cls;
  td.appendChild(span);
  row.appendChild(td);
  return td;
}

const short = (ts) => (ts || "").slice(0, 19).replace("T", " ");

function isoFrom(input) {
  return input.value ? new Date(input.value).toISOString() : "";
}

function filterParams() {
  const p = new URLSearchParams();
  const add = (name, value) => { if (value) p.append(name, value); };
  add("since", isoFrom($("#f-since")));
  add("until", isoFrom($("#f-until")));
  add("level", $("#f-level").value);
  add("status", $("#f-status").value);
  add("rule", $("#f-rule").value.trim());
  add("host", $("#f-host").value.trim());
  add("q", $("#f-text").value.trim());
  p.set("sort", $("#f-sort").value);
  p.set("page", state.page);
  p.set("size", state.size);
  return p;
}

async function loadList() {
  const status = $("#list-status");
  status.textContent = "loading…";
  status.className = "";
  const tbody = $("#findings tbody");
  try {
    const data = await api(`/api/findings?${filterParams()}`);
    state.total = data.total;
    tbody.replaceChildren();
    for (const f of data.findings) {
      const tr = document.createElement("tr");
      tr.dataset.id = f.sigstream.finding.id;
      const level = f.rule.level || "";
      cell(tr, level, `level-${level}`);
      cell(tr, f.rule.name);
      cell(tr, f.host.name);
      cell(tr, (f.sigstream.group?.count ?? 1).toLocaleString());
      cell(tr, short(f.sigstream.group?.first_seen));
      cell(tr, short(f.sigstream.group?.last_seen));
      cell(tr, f.sigstream.finding.status, `status-${f.sigstream.finding.status}`).className = "status";
      cell(tr, f.sigstream.finding.assignee || "");
      tr.addEventListener("click", () => openFinding(tr.dataset.id));
      tbody.appendChild(tr);
    }
    const pages = Math.max(1, Math.ceil(data.total / state.size));
    $("#page-info").textContent = `page ${state.page} of ${pages}`;
    $("#prev").disabled = state.page <= 1;
    $("#next").disabled = state.page >= pages;
    status.textContent = `${data.total.toLocaleString()} findings`;
    status.dataset.total = data.total;
  } catch (e) {
    status.textContent = `error: ${e.message}`;
    status.className = "error";
  }
}

function fact(dl, name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value == null ? "" : String(value);
  dd.id = `fact-${name.replace(/\W+/g, "-")}`;
  dl.append(dt, dd);
}

function fillList(sel, items, text) {
  const el = $(sel);
  el.replaceChildren();
  for (const item of items) {
    const li = document.createElement("li");
    li.textContent = text(item);
    el.appendChild(li);
  }
}

async function openFinding(id) {
  const data = await api(`/api/findings/${encodeURIComponent(id)}`);
  state.current = id;
  renderDetail(data);
  $("#list-pane").hidden = true;
  $("#detail").hidden = false;
}

function renderDetail(data) {
  const f = data.finding;
  const st = f.sigstream.finding;
  const g = f.sigstream.group || {};
  $("#detail").dataset.id = st.id;
  $("#d-title").textContent = `${f.rule.name} (${f.rule.level || "no level"})`;
  const dl = $("#d-facts");
  dl.replaceChildren();
  fact(dl, "status", st.status + (st.resolution ? ` (${st.resolution})` : ""));
  fact(dl, "assignee", st.assignee || "-");
  fact(dl, "host", f.host.name);
  fact(dl, "count", g.count ?? 1);
  fact(dl, "first seen", short(g.first_seen));
  fact(dl, "last seen", short(g.last_seen));
  fact(dl, "ATT&CK", [...f.threat.tactic.name, ...f.threat.technique.id].join(", "));
  fact(dl, "process", f.process?.command_line || f.process?.executable || "-");
  fact(dl, "rule id", f.rule.id);
  fact(dl, "finding id", st.id);
  $("#d-match-count").textContent = `(${data.matches.total})`;
  const mt = $("#d-matches tbody");
  mt.replaceChildren();
  for (const m of data.matches.items) {
    const tr = document.createElement("tr");
    cell(tr, short(m["@timestamp"]));
    cell(tr, m.event.id);
    cell(tr, m.process?.command_line || m.process?.executable || "");
    mt.appendChild(tr);
  }
  fillList("#d-ancestry", data.ancestry, (e) => `${e.Image || "?"} ${e.CommandLine || ""}`);
  const rt = $("#d-related tbody");
  rt.replaceChildren();
  for (const e of data.related_events) {
    const tr = document.createElement("tr");
    cell(tr, short(e.event_time));
    cell(tr, e.event_type);
    cell(tr, e.Image || e.SourceImage || "");
    cell(tr, e.CommandLine || e.TargetImage || e.TargetFilename || e.QueryName || "");
    rt.appendChild(tr);
  }
  fillList("#d-notes", st.notes || [], (n) => `${short(n.at)} ${n.author}: ${n.text}`);
  fillList("#d-history", st.history || [],
    (h) => `${short(h.at)} ${h.actor} ${h.action} ${h.field || ""}: ${h.old ?? ""} → ${h.new ?? ""}`);
}

async function act(path, body) {
  const status = $("#action-status");
  try {
    await api(`/api/findings/${encodeURIComponent(state.current)}/${path}`, {
      method: "POST", body: body ? JSON.stringify(body) : undefined,
    });
    status.textContent = `${path}: done`;
    status.className = "";
    await openFinding(state.current);
  } catch (e) {
    status.textContent = `${path}: ${e.message}`;
    status.className = "error";
  }
}

async function whoami() {
  try {
    const me = await api("/api/me");
    $("#whoami").textContent = `${me.user} (${me.role}, tenant ${me.tenant})`;
    for (const b of document.querySelectorAll("#actions button")) b.disabled = me.role !== "analyst";
    return true;
  } catch (e) {
    $("#whoami").textContent = "enter a valid API key";
    return false;
  }
}

function init() {
  $("#api-key").value = key();
  $("#key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    localStorage.setItem("sigstream-api-key", $("#api-key").value.trim());
    if (await whoami()) { state.page = 1; await loadList(); }
  });
  $("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); state.page = 1; loadList(); });
  $("#prev").addEventListener("click", () => { state.page -= 1; loadList(); });
  $("#next").addEventListener("click", () => { state.page += 1; loadList(); });
  $("#close-detail").addEventListener("click", () => {
    $("#detail").hidden = true; $("#list-pane").hidden = false; loadList();
  });
  $("#btn-ack").addEventListener("click", () => act("ack"));
  $("#btn-close").addEventListener("click", () => act("close", { resolution: $("#resolution").value }));
  $("#btn-reopen").addEventListener("click", () => act("reopen"));
  $("#btn-assign").addEventListener("click", () => act("assign", { assignee: $("#assignee").value.trim() }));
  $("#btn-note").addEventListener("click", async () => {
    await act("notes", { text: $("#note-text").value });
    $("#note-text").value = "";
  });
  if (key()) whoami().then((ok) => ok && loadList());
}

init();
