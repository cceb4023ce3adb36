"""A finding as an OCSF Detection Finding (class_uid 2004, OCSF 1.5.0). Pure.

For SOAR and SIEM consumers of the findings topic. The mapping fills the class's required
attributes (activity, category, class, type, severity, time, metadata with product and
version, finding_info with uid) and what an analyst needs: title, description, the rule as
the analytic, ATT&CK techniques and tactics, the host as the device, the triage link as
``finding_info.src_url`` and the match details as evidence. Sigma-specific notes (false
positives, references, level, kind) go in ``unmapped``, OCSF's place for them.
tests/unit/test_alerts_ocsf.py validates the output against the OCSF 1.5.0 JSON schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from triage.alerts.render import Notification
from triage.explain import attack_url

OCSF_VERSION = "1.5.0"
CLASS_UID = 2004
CATEGORY_UID = 2
ACTIVITY_CREATE = 1
#: Sigma level -> OCSF severity_id (1 Informational ... 5 Critical).
SEVERITY_ID = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
SEVERITY_NAME = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}


def _epoch_ms(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _attacks(n: Notification) -> list[dict[str, Any]]:
    attacks: list[dict[str, Any]] = []
    for technique, url in n.technique_links:
        base, _, sub = technique.upper().partition(".")
        entry: dict[str, Any] = {
            "technique": {"uid": base, "src_url": attack_url(base)},
            "version": "v16",
        }
        if sub:
            entry["sub_technique"] = {"uid": technique.upper(), "src_url": url}
        attacks.append(entry)
    if not attacks:
        attacks = [{"tactic": {"name": tactic}} for tactic in n.tactics]
    return attacks


def detection_finding(n: Notification, product_version: str = "1") -> dict[str, Any]:
    severity_id = SEVERITY_ID.get(n.level, 1)
    time_ms = _epoch_ms(n.time)
    info: dict[str, Any] = {
        "uid": n.finding_id or n.link,
        "title": n.headline if n.digest_count is not None else n.title,
        "created_time": time_ms,
        "first_seen_time": time_ms,
        "analytic": {"type_id": 1, "type": "Rule", "uid": n.rule_id, "name": n.title},
        "src_url": n.link,
        "types": [n.kind],
    }
    if n.description:
        info["desc"] = n.description
    attacks = _attacks(n)
    if attacks:
        info["attacks"] = attacks
    record: dict[str, Any] = {
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": SEVERITY_NAME[severity_id],
        "status_id": 1,
        "status": "New",
        "is_alert": True,
        "time": time_ms,
        "message": n.headline,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "Sigstream",
                "vendor_name": "Sigstream",
                "version": product_version,
            },
            "uid": n.finding_id,
            "tenant_uid": n.tenant,
        },
        "finding_info": info,
        "device": {"type_id": 0, "hostname": n.host, "name": n.host},
        "unmapped": {
            "sigstream": {
                "level": n.level,
                "kind": n.kind,
                "falsepositives": n.falsepositives,
                "references": n.references,
                "route": n.route,
            }
        },
    }
    if n.digest_count is not None:
        record["count"] = n.digest_count
    if n.has_match:
        record["evidences"] = [
            {
                "name": "sigma match",
                "data": {
                    "selections": [
                        {"name": s.name, "fields": [vars(f) for f in s.fields]}
                        for s in n.selections
                    ],
                    "keywords": n.keywords,
                },
            }
        ]
    if n.command_line:
        record.setdefault("evidences", []).append(
            {"name": "command line", "data": {"command_line": n.command_line}}
        )
    return record
