// One finding: facts, triage actions, why it matched, the rule beside it (description,
// false positives, references, ATT&CK), a correlation's base findings, the raw event as
// JSON, matching events, ancestry, related events, notes and history.

import { api, ApiError } from "./api.js";
import { tacticUrl, techniqueUrl } from "./attack.js";
import { $, extLink, fill, h, kindBadge, kindOf, levelBadge, say, short, statusBadge } from "./dom.js";

export const detail = { id: null, data: null, rawChoices: [] };

function fact(dl, name, value, id) {
  dl.append(h("dt", {}, name), h("dd", { id: `fact-${id || name.replace(/\W+/g, "-")}` }, value ?? ""));
}

function section(id, title, ...body) {
  return h("section", { class: "panel", id, "aria-labelledby": `${id}-h` }, h("h3", { id: `${id}-h` }, title), ...body);
}

/** `value` as text with the part `pattern` matched marked (case-insensitive; wildcards
 * and regular expressions are not marked: the value is shown as it is). */
export function marked(value, pattern, modifier) {
  const v = String(value ?? "");
  const p = String(pattern ?? "").replace(/^\*+|\*+$/g, "");
  const literal = !/(^|\|)re$/.test(modifier || "") && p && !/[*?]/.test(p);
  const at = literal ? v.toLowerCase().indexOf(p.toLowerCase()) : -1;
  if (at < 0) return h("span", { class: "val" }, v);
  return h("span", { class: "val" }, v.slice(0, at), h("mark", {}, v.slice(at, at + p.length)), v.slice(at + p.length));
}

/** "Why it matched": selections with field, modifier, pattern and the value that
 * satisfied it; keywords that matched. Null when the finding has no match details. */
export function whyMatched(match) {
  if (!match || (!match.selections?.length && !match.keywords?.length)) return null;
  const out = h("div", { class: "why" });
  for (const sel of match.selections || []) {
    const rows = (sel.fields || []).map((f) => h("tr", {},
      h("td", { class: "mono" }, f.field), h("td", {}, f.modifier || "equals"),
      h("td", { class: "mono" }, f.pattern ?? ""), h("td", {}, h("div", { class: "mono wrap clip" }, marked(f.value, f.pattern, f.modifier)))));
    out.append(h("h4", {}, "Selection ", h("code", {}, sel.name)),
      h("table", { class: "why-table" }, h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Modifier"),
        h("th", {}, "Pattern"), h("th", {}, "Value in the event"))), h("tbody", {}, ...rows)));
  }
  if (match.keywords?.length) {
    out.append(h("h4", {}, "Keywords found"), h("ul", { class: "keywords" }, ...match.keywords.map((k) => h("li", {}, h("code", {}, k)))));
  }
  return out;
}

/** One line: "Image|endswith \\powershell.exe; keyword mimikatz". */
export function matchSummary(match) {
  const parts = [];
  for (const sel of match.selections || []) {
    for (const f of sel.fields || []) parts.push(`${f.field}|${f.modifier || "equals"} ${f.pattern ?? ""}`);
  }
  for (const k of match.keywords || []) parts.push(`keyword ${k}`);
  return parts.join("; ");
}

function ruleAside(f) {
  const r = f.rule || {};
  const dl = h("dl", { class: "rule-facts" });
  fact(dl, "level", levelBadge(r.level), "rule-level");
  if (r.status) fact(dl, "status", r.status, "rule-status");
  if (r.author) fact(dl, "author", r.author, "rule-author");
  fact(dl, "rule id", h("code", {}, r.id), "rule-id");
  const fps = r.falsepositives || [];
  const refs = r.references || [];
  const tactics = f.threat?.tactic?.name || [];
  const techniques = f.threat?.technique?.id || [];
  return h("aside", { id: "d-rule", class: "panel rule", "aria-labelledby": "d-rule-h" },
    h("h3", { id: "d-rule-h" }, "Rule"),
    h("p", { class: "rule-name" }, r.name),
    h("p", { id: "d-description", class: r.description ? "" : "empty" }, r.description || "No description in the rule."),
    dl,
    h("h4", {}, "False positives"),
    fps.length ? h("ul", { id: "d-falsepositives" }, ...fps.map((x) => h("li", {}, x)))
      : h("p", { id: "d-falsepositives", class: "empty" }, "None listed."),
    h("h4", {}, "References"),
    refs.length ? h("ul", { id: "d-references", class: "refs" }, ...refs.map((u) => h("li", {}, extLink(u))))
      : h("p", { id: "d-references", class: "empty" }, "None listed."),
    h("h4", {}, "ATT&CK"),
    tactics.length || techniques.length
      ? h("ul", { id: "d-attack", class: "attack" },
        ...tactics.map((t) => h("li", {}, "tactic ", extLink(tacticUrl(t) || "", t))),
        ...techniques.map((t) => h("li", {}, "technique ", extLink(techniqueUrl(t) || "", t))))
      : h("p", { id: "d-attack", class: "empty" }, "No ATT&CK tags."),
  );
}

function baseTable(items, missing) {
  const rows = items.map((b) => {
    const match = b.match;
    const why = whyMatched(match);
    return h("tr", { dataset: { id: b.finding_id } },
      h("td", { class: "time" }, short(b.time)),
      h("td", {}, levelBadge(b.level), " ",
        h("a", { href: `#/finding/${encodeURIComponent(b.finding_id)}`, class: "base-link" }, b.rule || b.rule_id || b.id)),
      h("td", {}, b.host || ""),
      h("td", {}, h("div", { class: "mono wrap" }, b.process?.command_line || b.process?.executable || ""),
        why ? h("div", { class: "sub matched" }, "matched: ", matchSummary(match)) : null));
  });
  return [
    h("table", { id: "d-base-table" }, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Base finding"),
      h("th", {}, "Host"), h("th", {}, "Process and why it matched"))), h("tbody", {}, ...rows)),
    missing?.length ? h("p", { class: "empty", id: "d-base-missing" },
      `${missing.length} base finding(s) no longer in the index: ${missing.join(", ")}`) : null,
  ];
}

function correlationPanel(f, data) {
  const c = f.sigstream.correlation;
  const bases = data.base_findings || [];  // resolved with the detail (the first 100)
  const total = new Set(c.base_findings || []).size;
  return section("d-correlation", "Correlation: base findings",
    h("p", {}, `${c.type}: ${c.condition}; value ${c.value}; window ${short(c.window_start)} – ${short(c.window_end)} UTC`,
      Object.keys(c.group_by || {}).length ? `; grouped by ${Object.entries(c.group_by).map(([k, v]) => `${k}=${v}`).join(", ")}` : ""),
    h("div", {}, total > bases.length ? h("p", {}, `The first ${bases.length} of ${total} base findings:`) : null,
      ...baseTable(bases.filter((b) => b.found), bases.filter((b) => !b.found).map((b) => b.id))));
}

function rawPanel(data) {
  const f = data.finding;
  const choices = [];
  if (f.sigstream.event && Object.keys(f.sigstream.event).length) choices.push(["first match (the finding)", f.sigstream.event]);
  for (const m of data.matches.items || []) {
    if (m.sigstream?.event && m.event?.id !== f.event?.id) choices.push([`match ${short(m["@timestamp"])} ${m.event.id}`, m.sigstream.event]);
  }
  choices.push(["the whole finding document", f]);
  detail.rawChoices = choices;
  const pre = h("pre", { id: "d-raw", class: "json", tabindex: "0", "aria-label": "Raw event as JSON" });
  const pick = h("select", { id: "d-raw-pick", "aria-label": "Which event" },
    ...choices.map(([label], i) => h("option", { value: String(i) }, label)));
  const show = (i) => { pre.textContent = JSON.stringify(choices[i]?.[1] ?? {}, null, 2); };
  pick.addEventListener("change", () => show(Number(pick.value)));
  const copy = h("button", { type: "button", id: "d-raw-copy" }, "Copy JSON");
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(pre.textContent); copy.textContent = "Copied"; } catch { copy.textContent = "Select and copy"; }
    setTimeout(() => { copy.textContent = "Copy JSON"; }, 1500);
  });
  show(0);
  return section("d-raw-panel", "Raw event", h("div", { class: "raw-tools" }, h("label", {}, "Show ", pick), copy), pre);
}

export function showRaw(i) {
  const pick = $("#d-raw-pick");
  if (pick) { pick.value = String(i); pick.dispatchEvent(new Event("change")); }
  $("#d-raw-panel")?.scrollIntoView({ block: "start" });
}

function listOf(id, items, text, empty) {
  return items.length ? h("ul", { id }, ...items.map((x) => h("li", {}, text(x)))) : h("ul", { id }, h("li", { class: "empty" }, empty));
}

export async function showDetail(id) {
  const status = $("#detail-status");
  say(status, "loading…");
  detail.id = id;
  let data;
  try {
    data = await api(`/api/findings/${encodeURIComponent(id)}`);
  } catch (e) {
    fill($("#d-body"));
    fill($("#d-aside"));
    $("#d-title").textContent = e instanceof ApiError && e.status === 404 ? "Finding not found" : "Could not load the finding";
    say(status, e instanceof ApiError && e.status === 404
      ? "No finding with this id in your tenant. It may have been removed by retention, or the link is for another tenant." : `error: ${e.message}`, true);
    return;
  }
  if (detail.id !== id) return;
  detail.data = data;
  render(data);
  say(status, "");
}

function render(data) {
  const f = data.finding;
  const st = f.sigstream.finding;
  const g = f.sigstream.group || {};
  $("#detail").dataset.id = st.id;
  fill($("#d-title"), f.rule.name);
  fill($("#d-badges"), levelBadge(f.rule.level), " ", statusBadge(st.status), " ", kindBadge(f));
  const dl = h("dl", { id: "d-facts" });
  fact(dl, "status", st.status + (st.resolution ? ` (${st.resolution})` : ""));
  fact(dl, "assignee", st.assignee || "-");
  fact(dl, "host", f.host.name);
  fact(dl, "sensor", f.sigstream.sensor_id);
  fact(dl, "count", g.count ?? 1);
  fact(dl, "first seen", `${short(g.first_seen)} UTC`);
  fact(dl, "last seen", `${short(g.last_seen)} UTC`);
  fact(dl, "process", f.process?.command_line || f.process?.executable || "-");
  if (f.process?.parent?.executable) fact(dl, "parent", f.process.parent.command_line || f.process.parent.executable);
  fact(dl, "finding id", h("code", {}, st.id));
  const why = whyMatched(f.sigstream.match);
  const body = [
    section("d-facts-panel", "Finding", dl),
    kindOf(f) === "correlation" && f.sigstream.correlation ? null
      : section("d-why", "Why it matched", why || h("p", { class: "empty" },
        kindOf(f) === "sensor health" ? "A sensor-health observation: see the raw event below for what was observed."
          : "No match details recorded with this finding (matched before match details were recorded).")),
    rawPanel(data),
    section("d-matches-panel", ["Matching events ", h("span", { id: "d-match-count" }, `(${data.matches.total})`)],
      data.matches.total > data.matches.items.length ? h("p", {}, `The first ${data.matches.items.length} shown.`) : null,
    h("table", { id: "d-matches" }, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Event id"), h("th", {}, "Process"), h("th", {}, ""))),
      h("tbody", {}, ...data.matches.items.map((m) => {
        const i = detail.rawChoices.findIndex(([, ev]) => ev === m.sigstream?.event);
        return h("tr", {}, h("td", { class: "time" }, short(m["@timestamp"])), h("td", { class: "mono" }, m.event.id),
          h("td", {}, h("div", { class: "mono wrap clip" }, m.process?.command_line || m.process?.executable || "")),
          h("td", {}, h("button", { type: "button", class: "link", onclick: () => showRaw(i < 0 ? 0 : i) }, "raw event")));
      })))),
    kindOf(f) ? null : section("d-ancestry-panel", "Process ancestry",
      data.ancestry.length ? h("ol", { id: "d-ancestry" }, ...data.ancestry.map((e) => h("li", { class: "mono wrap clip" }, `${e.Image || "?"} ${e.CommandLine || ""}`)))
        : h("ol", { id: "d-ancestry" }, h("li", { class: "empty" }, "Unknown (needs the events index: detect --index-events)."))),
    section("d-related-panel", "Related events on this host",
      h("table", { id: "d-related" }, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Type"), h("th", {}, "Image"), h("th", {}, "Detail"))),
        h("tbody", {}, ...data.related_events.map((e) => h("tr", {}, h("td", { class: "time" }, short(e.event_time)), h("td", {}, e.event_type),
          h("td", {}, h("div", { class: "mono wrap clip" }, e.Image || e.SourceImage || "")),
          h("td", {}, h("div", { class: "mono wrap clip" }, e.CommandLine || e.TargetImage || e.TargetFilename || e.QueryName || e.DestinationIp || ""))))))),
    section("d-notes-panel", "Notes", listOf("d-notes", st.notes || [], (n) => `${short(n.at)} ${n.author}: ${n.text}`, "No notes.")),
    section("d-history-panel", "History", listOf("d-history", st.history || [],
      (x) => `${short(x.at)} ${x.actor} ${x.action} ${x.field || ""}: ${x.old ?? ""} → ${x.new ?? ""}`, "No changes yet.")),
  ];
  fill($("#d-body"), ...body);
  fill($("#d-aside"), ruleAside(f));
  if (kindOf(f) === "correlation" && f.sigstream.correlation) {
    $("#d-facts-panel").after(correlationPanel(f, data));
  }
  const canWrite = document.body.dataset.role === "analyst";
  $("#btn-ack").disabled = !canWrite || st.status !== "open";
  $("#btn-close").disabled = !canWrite || st.status === "closed";
  $("#btn-reopen").disabled = !canWrite || st.status === "open";
  for (const b of ["#btn-assign", "#btn-note"]) $(b).disabled = !canWrite;
}

/** A triage action on the shown finding, then show it again. */
export async function act(path, body) {
  const status = $("#action-status");
  try {
    await api(`/api/findings/${encodeURIComponent(detail.id)}/${path}`, {
      method: "POST", body: body ? JSON.stringify(body) : undefined,
    });
    say(status, `${path}: done`);
    await showDetail(detail.id);
  } catch (e) {
    say(status, `${path}: ${e.message}`, true);
  }
}
