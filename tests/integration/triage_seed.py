"""A small, realistic triage data set written through the production write path:
events via ``index_events``, matches via ``write_findings`` (which builds the groups).

Tenant ``acme``, host WS01: explorer -> winword -> five encoded PowerShell launches (one
finding of 5 matches) and a network connection nearby; tenant ``globex`` has a finding
on a host with the same name, which acme must never see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch

from detections.sinks.elasticsearch import (
    connect,
    drop_findings_index,
    ensure_findings_index,
    write_findings,
)
from detections.sinks.events import ensure_events_index, index_events
from detections.sinks.finding_docs import build_finding
from detections.sinks.grouping import GroupingConfig
from schemas.events import EVENT_ADAPTER
from schemas.findings import RuleInfo

ENCODED_PS = RuleInfo(
    id="ps-encoded-0001",
    name="Encoded PowerShell Command Line",
    level="high",
    tags=["attack.execution", "attack.t1059.001"],
)
LSASS = RuleInfo(
    id="lsass-0002",
    name="LSASS Memory Read",
    level="critical",
    tags=["attack.credential_access", "attack.t1003.001"],
)
GROUPING = GroupingConfig(default_window_s=3600)


def _proc(
    tenant: str,
    n: str,
    t: str,
    image: str,
    cmd: str,
    guid: str,
    parent: str | None,
    parent_image: str | None = None,
) -> dict[str, Any]:
    raw = {
        "tenant_id": tenant,
        "sensor_id": f"{tenant}-s1",
        "host": "WS01",
        "event_id": n,
        "seq": 1,
        "event_time": f"2026-11-20T10:{t}Z",
        "event_type": "process_creation",
        "logsource": {"product": "windows", "category": "process_creation"},
        "Image": image,
        "CommandLine": cmd,
        "ProcessGuid": guid,
        "ParentProcessGuid": parent,
        "ParentImage": parent_image,
        "User": "ACME\\bob",
    }
    return EVENT_ADAPTER.validate_python(raw).model_dump(mode="json")


def events() -> list[dict[str, Any]]:
    out = [
        _proc("acme", "a-1", "00:00", r"C:\Windows\explorer.exe", "explorer.exe", "P1", None),
        _proc(
            "acme",
            "a-2",
            "00:10",
            r"C:\Office\WINWORD.EXE",
            "winword.exe invoice.docm",
            "P2",
            "P1",
            r"C:\Windows\explorer.exe",
        ),
    ]
    for i in range(5):
        out.append(
            _proc(
                "acme",
                f"a-ps-{i}",
                f"0{i + 1}:00",
                r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
                f"powershell.exe -nop -w hidden -enc SQBFAFgA{i}",
                f"P3{i}",
                "P2",
                r"C:\Office\WINWORD.EXE",
            )
        )
    out.append(
        EVENT_ADAPTER.validate_python(
            {
                "tenant_id": "acme",
                "sensor_id": "acme-s1",
                "host": "WS01",
                "event_id": "a-net",
                "event_time": "2026-11-20T10:02:30Z",
                "event_type": "network_connection",
                "logsource": {"product": "windows", "category": "network_connection"},
                "Image": r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
                "DestinationIp": "203.0.113.7",
                "DestinationPort": "443",
            }
        ).model_dump(mode="json")
    )
    out.append(
        _proc(
            "globex",
            "g-ps-1",
            "03:00",
            r"C:\Windows\powershell.exe",
            "powershell.exe -enc GLOBEXSECRET",
            "G1",
            None,
        )
    )
    return out


def matches() -> list[tuple[RuleInfo, dict[str, Any]]]:
    return [(ENCODED_PS, e) for e in events() if "-ps-" in e["event_id"]]


@dataclass
class Seeded:
    index: str
    events_index: str
    acme_id: str  # the acme finding (5 grouped matches)
    globex_id: str
    #: The web page's second data set when a test added it (``triage_page_seed``).
    page: Any = None


def seed(hosts: list[str], index: str, events_index: str) -> Seeded:
    """Write the data set; returns the two findings' ids."""
    es: Elasticsearch = connect(hosts)
    try:
        ensure_findings_index(es, index)
        ensure_events_index(es, events_index)
        index_events(es, events_index, events())
        found = [build_finding(rule, e, grouping=GROUPING) for rule, e in matches()]
        write_findings(es, index, found)
        es.indices.refresh(index=f"{index},{index}-groups,{events_index}")
    finally:
        es.close()
    ids = {f.sigstream.tenant_id: f.sigstream.group.id for f in found if f.sigstream.group}
    return Seeded(index, events_index, ids["acme"], ids["globex"])


def drop(hosts: list[str], seeded: Seeded) -> None:
    """Delete what ``seed`` made: indices and their templates."""
    es = connect(hosts)
    try:
        drop_findings_index(es, seeded.index)
        es.options(ignore_status=404).indices.delete(index=seeded.events_index)
        es.options(ignore_status=404).indices.delete_index_template(
            name=f"{seeded.events_index}-template"
        )
    finally:
        es.close()
