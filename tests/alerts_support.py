"""Finding documents for the alerts tests, built by the detection pass's own code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from detections.sinks.finding_docs import build_finding, finding_document
from schemas.findings import RuleInfo

MATCH = {
    "selections": [
        {
            "name": "selection_img",
            "fields": [
                {
                    "field": "Image",
                    "modifier": "endswith",
                    "pattern": "\\powershell.exe",
                    "value": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                }
            ],
        }
    ],
    "keywords": ["mimikatz"],
}


def finding_doc(
    *,
    tenant: str = "acme",
    host: str = "WS-0042",
    rule_id: str = "rule-ps",
    name: str = "Suspicious PowerShell",
    level: str = "high",
    tags: list[str] | None = None,
    event_id: str = "e1",
    when: datetime | None = None,
    ingested: datetime | None = None,
    with_match: bool = False,
) -> tuple[str, dict[str, Any]]:
    """(document id, body) as the findings sink writes it; ``with_match`` adds the match
    details and false-positive notes other stages are adding to findings."""
    when = when or datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    rule = RuleInfo(
        id=rule_id,
        name=name,
        level=level,
        tags=tags if tags is not None else ["attack.execution", "attack.t1059.001"],
        description="PowerShell started by an Office application.",
        references=["https://example.org/ps"],
    )
    event = {
        "event_id": event_id,
        "event_time": when.isoformat(),
        "host": host,
        "tenant_id": tenant,
        "sensor_id": "sensor-1",
        "event_type": "process_creation",
        "Image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "CommandLine": "powershell -enc SQBFAFgA",
    }
    doc_id, body = finding_document(build_finding(rule, event, ingested=ingested or when))
    if with_match:
        body["sigstream"]["match"] = MATCH
        body["rule"]["falsepositives"] = ["Administrators running scripts"]
    return doc_id, body
