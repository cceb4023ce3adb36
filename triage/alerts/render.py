"""What a notification says, and how each destination writes it. Pure and self-contained.

:func:`notification` reads a finding document (``schemas/findings.py`` shape, tolerant of
fields other stages add later: ``rule.falsepositives``, ``sigstream.match``) into a
:class:`Notification`; one function per format renders it. Everything an analyst needs is
in every format: rule title, level, host, time, tenant, description, false-positive notes,
references, ATT&CK technique links, the deep link into the triage page and, when the
finding has them, the match details (which selection, field, modifier, pattern, value).

Values come from endpoints an attacker controls: every rendering bounds their length and
escapes them for its format (Slack mrkdwn, HTML mail, CEF, RFC 5424 structured data).
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from triage.explain import attack_url

#: Characters kept of one value (a command line can be 32 KiB).
MAX_VALUE = 500
MAX_SELECTIONS = 10
MAX_FIELDS = 20
MAX_LIST = 20
LEVEL_COLORS = {
    "critical": "#7a0019",
    "high": "#d9534f",
    "medium": "#f0ad4e",
    "low": "#5bc0de",
    "informational": "#777777",
}


def _clip(value: Any, limit: int = MAX_VALUE) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _strings(value: Any, limit: int = MAX_LIST) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [_clip(value)]
    if isinstance(value, list | tuple):
        return [_clip(v) for v in value[:limit] if v is not None and str(v).strip()]
    return [_clip(value)]


#: One ATT&CK link builder for the project (None for anything not a technique id).
technique_url = attack_url


@dataclass(frozen=True)
class MatchedField:
    field: str
    modifier: str | None
    pattern: str | None
    value: str


@dataclass(frozen=True)
class MatchedSelection:
    name: str
    fields: list[MatchedField]


@dataclass(frozen=True)
class Notification:
    """One message about one finding (or, with ``digest_count``, about the findings a
    throttled route held back in one window)."""

    finding_id: str
    link: str
    kind: str
    tenant: str
    rule_id: str
    title: str
    level: str
    host: str
    time: str
    description: str = ""
    falsepositives: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)
    tactics: list[str] = field(default_factory=list)
    selections: list[MatchedSelection] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    command_line: str = ""
    route: str = ""
    digest_count: int | None = None
    digest_window: tuple[str, str] | None = None

    @property
    def technique_links(self) -> list[tuple[str, str]]:
        """(technique, ATT&CK page) of each well-formed technique id (others dropped)."""
        return [(t, url) for t in self.techniques if (url := attack_url(t))]

    @property
    def headline(self) -> str:
        if self.digest_count is not None:
            return f"{self.digest_count} more: {self.title} on {self.host}"
        return f"[{self.level.upper()}] {self.title} on {self.host}"

    @property
    def has_match(self) -> bool:
        return bool(self.selections or self.keywords)


def _match_details(raw: Any) -> tuple[list[MatchedSelection], list[str]]:
    """``sigstream.match`` -> selections and keywords; anything malformed is left out."""
    if not isinstance(raw, dict):
        return [], []
    selections: list[MatchedSelection] = []
    for sel in (raw.get("selections") or [])[:MAX_SELECTIONS]:
        if not isinstance(sel, dict):
            continue
        fields = [
            MatchedField(
                field=_clip(f.get("field"), 128),
                modifier=_clip(f["modifier"], 64) if f.get("modifier") else None,
                pattern=_clip(f["pattern"]) if f.get("pattern") is not None else None,
                value=_clip(f.get("value")),
            )
            for f in (sel.get("fields") or [])[:MAX_FIELDS]
            if isinstance(f, dict)
        ]
        selections.append(MatchedSelection(name=_clip(sel.get("name"), 128), fields=fields))
    return selections, _strings(raw.get("keywords"))


def finding_link(base_url: str, doc: dict[str, Any]) -> str:
    """The finding in the triage page: the group an analyst triages, else the match."""
    sig = doc.get("sigstream") or {}
    target = (sig.get("group") or {}).get("id") or (sig.get("finding") or {}).get("id") or ""
    return f"{base_url.rstrip('/')}/#/finding/{target}"


def notification(doc: dict[str, Any], base_url: str, kind: str, route: str = "") -> Notification:
    rule = doc.get("rule") or {}
    sig = doc.get("sigstream") or {}
    threat = doc.get("threat") or {}
    selections, keywords = _match_details(sig.get("match"))
    return Notification(
        finding_id=str((sig.get("finding") or {}).get("id") or ""),
        link=finding_link(base_url, doc),
        kind=kind,
        tenant=str(sig.get("tenant_id") or ""),
        rule_id=_clip(rule.get("id"), 128),
        title=_clip(rule.get("name") or rule.get("id") or "finding", 256),
        level=str(rule.get("level") or "informational").lower(),
        host=_clip((doc.get("host") or {}).get("name"), 256),
        time=str(doc.get("@timestamp") or ""),
        description=_clip(rule.get("description"), 2000),
        falsepositives=_strings(rule.get("falsepositives")),
        references=_strings(rule.get("references")),
        techniques=_strings((threat.get("technique") or {}).get("id"))[:MAX_LIST],
        tactics=_strings((threat.get("tactic") or {}).get("name")),
        selections=selections,
        keywords=keywords,
        command_line=_clip((doc.get("process") or {}).get("command_line")),
        route=route,
    )


# --- plain text (mail, syslog message, Teams/Slack fallback) --------------------------


def match_lines(n: Notification) -> list[str]:
    lines = []
    for sel in n.selections:
        lines.append(f"{sel.name}:")
        for f in sel.fields:
            mod = f"|{f.modifier}" if f.modifier else ""
            pattern = f" {f.pattern!r}" if f.pattern is not None else ""
            lines.append(f"  {f.field}{mod}{pattern} matched {f.value!r}")
    if n.keywords:
        lines.append("keywords: " + ", ".join(repr(k) for k in n.keywords))
    return lines


def text(n: Notification) -> str:
    lines = [n.headline, ""]
    lines += [
        f"Level:    {n.level}",
        f"Host:     {n.host}",
        f"Time:     {n.time}",
        f"Tenant:   {n.tenant}",
        f"Rule:     {n.rule_id} ({n.kind})",
    ]
    if n.digest_window:
        lines.append(f"Window:   {n.digest_window[0]} - {n.digest_window[1]}")
    if n.command_line:
        lines.append(f"Command:  {n.command_line}")
    if n.description:
        lines += ["", n.description]
    if n.has_match:
        lines += ["", "Why it matched:", *("  " + ln for ln in match_lines(n))]
    if n.falsepositives:
        lines += ["", "False positives:", *(f"  - {fp}" for fp in n.falsepositives)]
    if n.technique_links:
        lines += ["", "ATT&CK:", *(f"  {t} {url}" for t, url in n.technique_links)]
    if n.references:
        lines += ["", "References:", *(f"  {r}" for r in n.references)]
    lines += ["", f"Open in triage: {n.link}"]
    return "\n".join(lines)


# --- generic webhook ------------------------------------------------------------------


def webhook_body(n: Notification) -> dict[str, Any]:
    """The generic webhook's JSON: every field, stable names (documented in docs/alerts.md)."""
    body = asdict(n)
    body["technique_links"] = [url for _, url in n.technique_links]
    body["headline"] = n.headline
    body["match"] = (
        {"selections": body.pop("selections"), "keywords": body.pop("keywords")}
        if n.has_match
        else None
    )
    body.pop("selections", None)
    body.pop("keywords", None)
    body["type"] = "digest" if n.digest_count is not None else "finding"
    return body


# --- Slack ----------------------------------------------------------------------------


def _slack_escape(value: str) -> str:
    """Slack mrkdwn control characters (&, <, >) as its entities: no injected links or
    mentions from event data."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_code(value: str) -> str:
    return _slack_escape(value).replace("`", "ˋ")


def slack_payload(n: Notification) -> dict[str, Any]:
    """Incoming-webhook payload with Block Kit blocks (``text`` is the notification
    fallback). Section texts stay under Slack's 3,000-character limit."""
    e = _slack_escape
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(e(n.headline), 150)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Level*\n{e(n.level)}"},
                {"type": "mrkdwn", "text": f"*Host*\n{e(n.host)}"},
                {"type": "mrkdwn", "text": f"*Time*\n{e(n.time)}"},
                {"type": "mrkdwn", "text": f"*Tenant*\n{e(n.tenant)}"},
            ],
        },
    ]
    if n.description:
        blocks.append(_slack_section(e(n.description)))
    if n.has_match:
        body = "\n".join(match_lines(n))
        blocks.append(_slack_section(f"*Why it matched*\n```{_clip(_slack_code(body), 2800)}```"))
    if n.falsepositives:
        fps = "\n".join(f"• {e(fp)}" for fp in n.falsepositives)
        blocks.append(_slack_section(f"*False positives*\n{fps}"))
    links = [f"<{url}|{e(t)}>" for t, url in n.technique_links]
    links += [f"<{_slack_escape(r)}|reference>" for r in n.references if r.startswith("http")]
    if links:
        blocks.append(_slack_section("*ATT&amp;CK and references*\n" + " · ".join(links)))
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open in triage"},
                    "url": n.link,
                }
            ],
        }
    )
    return {"text": _clip(e(n.headline), 300), "blocks": blocks}


def _slack_section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn, 2990)}}


# --- Microsoft Teams ------------------------------------------------------------------


def _facts(n: Notification) -> list[tuple[str, str]]:
    facts = [("Level", n.level), ("Host", n.host), ("Time", n.time), ("Tenant", n.tenant)]
    facts.append(("Rule", f"{n.rule_id} ({n.kind})"))
    if n.falsepositives:
        facts.append(("False positives", "; ".join(n.falsepositives)))
    if n.techniques:
        facts.append(("ATT&CK", ", ".join(n.techniques)))
    return facts


def teams_messagecard(n: Notification) -> dict[str, Any]:
    """Office 365 connector MessageCard (legacy incoming webhooks)."""
    sections: list[dict[str, Any]] = [
        {"activityTitle": n.headline, "facts": [{"name": k, "value": v} for k, v in _facts(n)]}
    ]
    if n.description:
        sections.append({"text": html.escape(n.description)})
    if n.has_match:
        sections.append(
            {
                "title": "Why it matched",
                "text": "<br>".join(html.escape(ln) for ln in match_lines(n)),
            }
        )
    actions = [
        {
            "@type": "OpenUri",
            "name": "Open in triage",
            "targets": [{"os": "default", "uri": n.link}],
        }
    ]
    actions += [
        {"@type": "OpenUri", "name": t, "targets": [{"os": "default", "uri": url}]}
        for t, url in n.technique_links[:4]
    ]
    if n.references:
        sections.append(
            {"title": "References", "text": "<br>".join(html.escape(r) for r in n.references)}
        )
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": _clip(n.headline, 200),
        "themeColor": LEVEL_COLORS.get(n.level, "#777777").lstrip("#"),
        "title": _clip(n.headline, 200),
        "sections": sections,
        "potentialAction": actions,
    }


def teams_adaptive(n: Notification) -> dict[str, Any]:
    """A message with one Adaptive Card (Teams workflows / Power Automate webhooks)."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
            "text": n.headline,
        },
        {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(n)]},
    ]
    if n.description:
        body.append({"type": "TextBlock", "wrap": True, "text": n.description})
    if n.has_match:
        body.append({"type": "TextBlock", "weight": "Bolder", "text": "Why it matched"})
        body += [
            {"type": "TextBlock", "wrap": True, "fontType": "Monospace", "text": ln}
            for ln in match_lines(n)[:40]
        ]
    if n.references:
        body.append(
            {"type": "TextBlock", "wrap": True, "text": "References: " + " ".join(n.references)}
        )
    actions = [{"type": "Action.OpenUrl", "title": "Open in triage", "url": n.link}]
    actions += [
        {"type": "Action.OpenUrl", "title": t, "url": url} for t, url in n.technique_links[:4]
    ]
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": actions,
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


# --- e-mail ---------------------------------------------------------------------------


def email_message(n: Notification, sender: str, to: list[str], delivery_id: str) -> EmailMessage:
    """Plain text and HTML alternatives; ``delivery_id`` is in ``Message-ID``'s left part
    and ``X-Sigstream-Delivery`` so a mail system can spot a repeat."""
    msg = EmailMessage()
    msg["Subject"] = _clip(n.headline.replace("\n", " ").replace("\r", " "), 200)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(idstring=delivery_id[:32], domain="sigstream")
    msg["X-Sigstream-Delivery"] = delivery_id
    msg["X-Sigstream-Tenant"] = n.tenant.replace("\n", " ")
    msg.set_content(text(n))
    msg.add_alternative(email_html(n), subtype="html")
    return msg


def email_html(n: Notification) -> str:
    h = html.escape
    color = LEVEL_COLORS.get(n.level, "#777777")
    rows = "".join(f"<tr><th align='left'>{h(k)}</th><td>{h(v)}</td></tr>" for k, v in _facts(n))
    parts = [
        f"<h2 style='color:{color}'>{h(n.headline)}</h2>",
        f"<table>{rows}</table>",
    ]
    if n.description:
        parts.append(f"<p>{h(n.description)}</p>")
    if n.has_match:
        parts.append("<h3>Why it matched</h3><pre>" + h("\n".join(match_lines(n))) + "</pre>")
    if n.falsepositives:
        parts.append(
            "<h3>False positives</h3><ul>"
            + "".join(f"<li>{h(x)}</li>" for x in n.falsepositives)
            + "</ul>"
        )
    if n.technique_links:
        parts.append(
            "<h3>ATT&amp;CK</h3><ul>"
            + "".join(f"<li><a href='{h(url)}'>{h(t)}</a></li>" for t, url in n.technique_links)
            + "</ul>"
        )
    if n.references:
        parts.append(
            "<h3>References</h3><ul>" + "".join(f"<li>{h(r)}</li>" for r in n.references) + "</ul>"
        )
    parts.append(f"<p><a href='{h(n.link)}'>Open in triage</a></p>")
    return "<html><body>" + "".join(parts) + "</body></html>"


# --- syslog RFC 5424 and CEF ----------------------------------------------------------

#: Sigma level -> syslog severity (RFC 5424: 2 critical, 3 error, 4 warning, 5 notice, 6 info).
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "informational": 6}
#: Sigma level -> CEF severity 0-10.
CEF_SEVERITY = {"critical": 10, "high": 8, "medium": 5, "low": 3, "informational": 1}
#: Our private enterprise number placeholder for SD-IDs (RFC 5424 7.2.2: name@number).
SD_ID = "sigstream@32473"


def _sd_value(value: str) -> str:
    """RFC 5424 PARAM-VALUE: escape ``"``, ``\\`` and ``]``; no newlines."""
    value = " ".join(value.split())
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    token = "".join(ch for ch in value if "!" <= ch <= "~")[:limit]
    return token or "-"


def syslog_5424(
    n: Notification,
    *,
    app_name: str,
    facility: int,
    hostname: str,
    msgid: str = "finding",
    body: str | None = None,
) -> bytes:
    """One RFC 5424 message: header, structured data with the finding's fields, and as
    MSG ``body`` (a CEF record) or the one-line summary with the deep link (UTF-8 with
    BOM, as the RFC asks)."""
    pri = facility * 8 + SYSLOG_SEVERITY.get(n.level, 6)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    params = {
        "finding": n.finding_id,
        "rule": n.rule_id,
        "title": n.title,
        "level": n.level,
        "host": n.host,
        "time": n.time,
        "tenant": n.tenant,
        "kind": n.kind,
        "techniques": ",".join(n.techniques),
        "link": n.link,
    }
    if n.digest_count is not None:
        params["count"] = str(n.digest_count)
    if n.has_match:
        params["match"] = _clip("; ".join(match_lines(n)), 1000)
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items() if v) + "]"
    msg = (
        f"{n.headline} | {n.description} | {n.link}"
        if n.description
        else f"{n.headline} | {n.link}"
    )
    if body is not None:
        msg = body
    header = (
        f"<{pri}>1 {now} {_header_token(hostname, 255)} {_header_token(app_name, 48)} - "
        f"{_header_token(msgid, 32)} "
    )
    return header.encode() + sd.encode() + b" \xef\xbb\xbf" + " ".join(msg.split()).encode()


def _cef_header(value: str) -> str:
    return " ".join(value.split()).replace("\\", "\\\\").replace("|", "\\|")


def _cef_ext(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("=", "\\=")
    return value.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def cef(n: Notification, version: str = "1") -> str:
    """ArcSight CEF:0 (the SIEM's syslog payload): header then key=value extensions."""
    ext = {
        "rt": n.time,
        "dhost": n.host,
        "cs1Label": "tenant",
        "cs1": n.tenant,
        "cs2Label": "techniques",
        "cs2": ",".join(n.techniques),
        "cs3Label": "findingLink",
        "cs3": n.link,
        "cs4Label": "level",
        "cs4": n.level,
        "cat": n.kind,
        "cs5Label": "match",
        "cs5": _clip("; ".join(match_lines(n)), 1000) if n.has_match else "",
        "cs6Label": "ruleId",
        "cs6": n.rule_id,
        "externalId": n.finding_id,
        "msg": _clip(n.description, 1000),
        "request": n.link,
    }
    if n.digest_count is not None:
        ext["cnt"] = str(n.digest_count)
    header = "|".join(
        [
            "CEF:0",
            "Sigstream",
            "Sigstream",
            _cef_header(version),
            _cef_header(n.rule_id or "finding"),
            _cef_header(n.title),
            str(CEF_SEVERITY.get(n.level, 1)),
        ]
    )
    return header + "|" + " ".join(f"{k}={_cef_ext(v)}" for k, v in ext.items() if v)


def json_line(n: Notification) -> str:
    return json.dumps(webhook_body(n), sort_keys=True)
