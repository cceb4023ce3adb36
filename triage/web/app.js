// Sigstream triage page: plain JS modules, no framework, no build step, nothing from a CDN.
// Data is always inserted as text (never as HTML): command lines and paths come from
// endpoints an attacker controls. The view and its filters live in the URL hash.

import { api, KEY_NAME, key } from "./js/api.js";
import { act, detail, showDetail } from "./js/detail.js";
import { $, $$, say } from "./js/dom.js";
import { fromForm, list, page, select, selectedId, showList } from "./js/list.js";
import { showOverview } from "./js/overview.js";
import { current, go, href, rangeParams } from "./js/route.js";
import { showSensors } from "./js/sensors.js";

const VIEW_SECTIONS = { overview: "#overview-view", findings: "#list-pane", finding: "#detail", sensors: "#sensors-view" };
const nav = { fromList: false, lastList: "#/findings" };

async function whoami() {
  try {
    const me = await api("/api/me");
    $("#whoami").textContent = `${me.user} (${me.role}, tenant ${me.tenant})`;
    document.body.dataset.role = me.role;
    for (const b of $$("#actions button")) b.disabled = me.role !== "analyst";
    $("#no-key").hidden = true;
    return true;
  } catch (e) {
    $("#whoami").textContent = "enter a valid API key";
    document.body.dataset.role = "";
    $("#no-key").hidden = false;
    return false;
  }
}

function showSection(view) {
  for (const [v, sel] of Object.entries(VIEW_SECTIONS)) $(sel).hidden = v !== view;
  for (const a of $$("header nav a")) {
    const on = a.dataset.view === (view === "finding" ? "findings" : view);
    a.classList.toggle("current", on);
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (!document.body.dataset.role) { showSection(null); return; }
  const { view, id, params } = current();
  const titles = { overview: "Overview", findings: "Findings", finding: "Finding", sensors: "Sensors" };
  document.title = `${titles[view]} · Sigstream findings`;
  // A finding is shown once it is loaded (never the previous one's facts meanwhile).
  if (view !== "finding") showSection(view);
  const carry = rangeParams(view === "finding" ? new URLSearchParams() : params);
  $("#nav-overview").href = href("overview", carry);
  if (view === "overview") await showOverview(params);
  else if (view === "findings") { nav.lastList = location.hash || "#/findings"; await showList(params); }
  else if (view === "finding" && id) { await showDetail(id); showSection(view); $("#d-title").focus(); }
  else if (view === "sensors") await showSensors(params);
  else go("findings");
}

function back() {
  if (nav.fromList) history.back();
  else location.hash = nav.lastList;
}

// --- confirmation and help dialogs --------------------------------------------------

let answer = null; // resolves the open confirmation

/** The dialog's answer. A dialog's "close" event is queued, so the one of a dialog closed
 * just before it was shown again can arrive while it is open: that one is ignored. */
function onConfirmClosed() {
  const dlg = $("#confirm");
  if (dlg.open || !answer) return;
  const resolve = answer;
  answer = null;
  resolve(dlg.returnValue === "ok" ? { resolution: $("#confirm-resolution").value } : null);
}

function confirmDialog(message, withResolution) {
  const dlg = $("#confirm");
  $("#confirm-text").textContent = message;
  $("#confirm-resolution-row").hidden = !withResolution;
  return new Promise((resolve) => {
    answer = resolve;
    dlg.returnValue = "";
    dlg.showModal();
    (withResolution ? $("#confirm-resolution") : $("#confirm-ok")).focus();
  });
}

async function triage(action) {
  if (document.body.dataset.role !== "analyst") return;
  const inDetail = current().view === "finding";
  const id = inDetail ? detail.id : selectedId();
  if (!id) return;
  const f = inDetail ? detail.data?.finding : list.rows.find((r) => r.sigstream.finding.id === id);
  const name = f ? `"${f.rule.name}" on ${f.host.name}` : id;
  const ok = await confirmDialog(action === "ack" ? `Acknowledge ${name}?` : `Close ${name}?`, action === "close");
  if (!ok) return;
  if (inDetail) {
    await act(action, action === "close" ? ok : undefined);
  } else {
    try {
      await api(`/api/findings/${encodeURIComponent(id)}/${action}`, {
        method: "POST", body: action === "close" ? JSON.stringify(ok) : undefined,
      });
      await showList(list.params);
      select(list.selected);
      say($("#list-status"), `${$("#list-status").textContent} · ${action}: done`);
    } catch (e) {
      say($("#list-status"), `${action}: ${e.message}`, true);
    }
  }
}

// --- keyboard ----------------------------------------------------------------------------

function typing(el) {
  return el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));
}

function neighbour(delta) {
  const i = list.rows.findIndex((r) => r.sigstream.finding.id === detail.id);
  const next = list.rows[i + delta];
  if (i >= 0 && next) { list.selected = i + delta; location.replace(href("finding", {}, next.sigstream.finding.id)); }
}

function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if ($("#confirm").open || $("#help").open) return; // the dialog handles its own keys
  const { view } = current();
  if (typing(ev.target)) {
    if (ev.key === "Escape") ev.target.blur();
    return;
  }
  const k = ev.key;
  if (k === "Enter" && ev.target.closest?.("a, button, summary")) return; // their own action
  let done = true;
  if (k === "?") $("#help").showModal();
  else if (k === "/") { if (view !== "findings") go("findings", rangeParams(current().params)); setTimeout(() => $("#f-text").focus(), 0); }
  else if (k === "o") go("overview", rangeParams(current().params));
  else if (k === "f") location.hash = nav.lastList;
  else if (k === "s") go("sensors");
  else if (view === "findings" && (k === "j" || k === "ArrowDown")) select(list.selected + 1);
  else if (view === "findings" && (k === "k" || k === "ArrowUp")) select(list.selected - 1);
  else if (view === "findings" && k === "Enter" && selectedId()) { nav.fromList = true; go("finding", {}, selectedId()); }
  else if (view === "findings" && (k === "n" || k === "]")) page(1);
  else if (view === "findings" && (k === "p" || k === "[")) page(-1);
  else if (view === "finding" && k === "Escape") back();
  else if (view === "finding" && (k === "j" || k === "ArrowDown") && ev.target === document.body) neighbour(1);
  else if (view === "finding" && (k === "k" || k === "ArrowUp") && ev.target === document.body) neighbour(-1);
  else if ((view === "finding" || view === "findings") && k === "a") triage("ack");
  else if ((view === "finding" || view === "findings") && k === "c") triage("close");
  else done = false;
  if (done) ev.preventDefault();
}

// --- wiring -----------------------------------------------------------------------------

function init() {
  $("#api-key").value = key();
  $("#key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    localStorage.setItem(KEY_NAME, $("#api-key").value.trim());
    if (await whoami()) await route();
  });
  $("#filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    list.selected = 0;
    go("findings", fromForm());
  });
  $("#f-range").addEventListener("change", () => { $("#custom-range").hidden = $("#f-range").value !== "custom"; });
  $("#clear-filters").addEventListener("click", () => go("findings"));
  $("#o-range").addEventListener("change", () => go("overview", { range: $("#o-range").value }));
  $("#prev").addEventListener("click", () => page(-1));
  $("#next").addEventListener("click", () => page(1));
  $("#close-detail").addEventListener("click", back);
  $("#btn-ack").addEventListener("click", () => act("ack"));
  $("#btn-close").addEventListener("click", () => act("close", { resolution: $("#resolution").value }));
  $("#btn-reopen").addEventListener("click", () => act("reopen"));
  $("#btn-assign").addEventListener("click", () => act("assign", { assignee: $("#assignee").value.trim() }));
  $("#btn-note").addEventListener("click", async () => {
    await act("notes", { text: $("#note-text").value });
    $("#note-text").value = "";
  });
  $("#help-btn").addEventListener("click", () => $("#help").showModal());
  $("#confirm").addEventListener("close", onConfirmClosed);
  $("#findings tbody").addEventListener("click", () => { nav.fromList = true; });
  $("#findings tbody").addEventListener("focusin", (ev) => {
    const tr = ev.target.closest("tr[data-id]");
    if (tr) select(Number(tr.dataset.index), false);
  });
  window.addEventListener("hashchange", () => {
    if (current().view !== "finding") nav.fromList = false;
    route();
  });
  document.addEventListener("keydown", onKey);
  if (key()) whoami().then((ok) => ok && route());
  else $("#no-key").hidden = false;
}

init();
