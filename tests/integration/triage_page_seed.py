"""A second triage data set for the web page (tenant ``initech``), written through the
production write path, with times relative to now so time-range filters mean something:

* Sigma findings of every level on four hosts, with match details (``sigstream.match``)
  and rule false positives, one of them with an attacker's ``<img onerror>`` and a very
  long command line (rendering must show both as text, wrapped);
* a correlation finding whose base findings are two of those matches;
* sensor-health findings of six kinds and the sensors index documents behind them;
* one finding acknowledged and one closed.

``sigstream.match`` and ``rule.falsepositives`` are added to the test indices' mappings
when the schema does not have them yet (the match-details work adds them to the schema).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch

from detections.health.finding_docs import health_finding, sensor_doc_id, sensors_mappings
from detections.health.state import Observation
from detections.sinks.elasticsearch import connect, groups_index, write_documents
from detections.sinks.events import index_events
from detections.sinks.finding_docs import build_finding, finding_document
from schemas.events import EVENT_ADAPTER
from schemas.findings import (
    LEVEL_SEVERITY,
    CorrelationInfo,
    EventInfo,
    Finding,
    FindingState,
    GroupInfo,
    HostInfo,
    RuleInfo,
    SigstreamInfo,
    attack_from_tags,
    finding_id,
    group_id,
)
from tests.integration.triage_seed import GROUPING

TENANT = "initech"
XSS = "<img src=x onerror=window.__xss=1>"
LONG_TAIL = "A" * 700  # an encoded payload: a line no layout may let overflow

ENC_PS = RuleInfo(
    id="init-ps-enc-0001",
    name="Suspicious Encoded PowerShell Command Line",
    level="high",
    tags=["attack.execution", "attack.t1059.001", "attack.defense_evasion", "attack.t1027"],
    author="Sigstream tests",
    description="Detects PowerShell started with an encoded command, a common way to hide "
    "a downloader from command-line logging.",
    status="test",
    references=["https://attack.mitre.org/techniques/T1059/001/", "javascript:alert(1)"],
)
MIMIKATZ = RuleInfo(
    id="init-mimikatz-0002",
    name="Mimikatz Keywords",
    level="critical",
    tags=["attack.credential_access", "attack.t1003.001"],
    description="Mimikatz module names on a command line.",
    references=["https://github.com/gentilkiwi/mimikatz"],
)
SCRIPT_HOST = RuleInfo(
    id="init-wscript-0003",
    name="Script Host Running Markup",
    level="medium",
    tags=["attack.execution", "attack.t1059.005"],
    description="wscript or mshta with markup on the command line.",
)
DISCOVERY = RuleInfo(
    id="init-netuser-0004",
    name="Local Account Discovery",
    level="low",
    tags=["attack.discovery", "attack.t1087.001"],
)
INVENTORY = RuleInfo(
    id="init-inventory-0005",
    name="Software Inventory Query",
    level="informational",
    tags=["attack.discovery", "attack.t1518"],
)
CORRELATION = RuleInfo(
    id="init-corr-0006",
    name="Credential Theft After Encoded PowerShell",
    level="critical",
    tags=["attack.credential_access", "attack.t1003"],
    description="An encoded PowerShell launch followed by Mimikatz on the same host within "
    "10 minutes.",
)

FALSE_POSITIVES = {
    ENC_PS.id: ["Software deployment tools that encode their scripts (SCCM, Intune)"],
    MIMIKATZ.id: ["Red-team exercises"],
    SCRIPT_HOST.id: [],
}


@dataclass
class PageSeeded:
    tenant: str
    sensors_index: str
    ps_id: str  # high, WS07, with match details; acknowledged: no
    mimikatz_id: str
    xss_id: str  # the script-host finding with markup and a long command line
    correlation_id: str
    acked_id: str
    closed_id: str
    old_id: str  # the only finding older than 24 hours
    ids: list[str] = field(default_factory=list)  # every initech finding


def _event(
    eid: str, host: str, when: datetime, image: str, cmd: str, sensor: str | None = None
) -> dict[str, Any]:
    raw = {
        "tenant_id": TENANT,
        "sensor_id": sensor or f"{TENANT}-{host.lower()}",
        "host": host,
        "event_id": eid,
        "seq": 1,
        "event_time": when.isoformat(),
        "event_type": "process_creation",
        "logsource": {"product": "windows", "category": "process_creation"},
        "Image": image,
        "CommandLine": cmd,
        "ProcessGuid": f"G-{eid}",
        "ParentImage": r"C:\Windows\explorer.exe",
        "User": "INITECH\\peter",
    }
    return EVENT_ADAPTER.validate_python(raw).model_dump(mode="json")


def _sel(name: str, *fields: tuple[str, str | None, str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "fields": [{"field": f, "modifier": m, "pattern": p, "value": v} for f, m, p, v in fields],
    }


PS = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"


def _ensure_extra_mappings(es: Elasticsearch, index: str) -> None:
    """Add ``sigstream.match`` and ``rule.falsepositives`` where the schema lacks them."""
    for name in (index, groups_index(index)):
        props = next(iter(es.indices.get_mapping(index=name).values()))["mappings"]["properties"]
        extra: dict[str, Any] = {}
        if "match" not in props["sigstream"]["properties"]:
            extra["sigstream"] = {"properties": {"match": {"type": "object", "enabled": False}}}
        if "falsepositives" not in props["rule"]["properties"]:
            extra["rule"] = {"properties": {"falsepositives": {"type": "keyword"}}}
        if extra:
            es.indices.put_mapping(index=name, properties=extra)


def _doc(f: Finding, match: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    fid, body = finding_document(f)
    if match is not None:
        body["sigstream"]["match"] = match
    fps = FALSE_POSITIVES.get(f.rule.id)
    if fps is not None:
        body["rule"]["falsepositives"] = fps
    return fid, body


def seed_page(hosts: list[str], index: str, events_index: str, sensors_index: str) -> PageSeeded:
    """Write the initech data set into indices ``triage_seed.seed`` made."""
    now = datetime.now(UTC).replace(microsecond=0)
    at = lambda minutes: now - timedelta(minutes=minutes)  # noqa: E731
    ps_cmd = "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA"
    events = {
        "ps": _event("i-ps", "FIN-WS07", at(50), PS, ps_cmd),
        "mimi": _event(
            "i-mimi",
            "FIN-WS07",
            at(45),
            r"C:\Users\peter\AppData\Local\Temp\m.exe",
            'm.exe "privilege::debug" "sekurlsa::logonpasswords" exit # mimikatz',
        ),
        "xss": _event(
            "i-xss",
            "FIN-WS08",
            at(120),
            r"C:\Windows\System32\mshta.exe",
            f'mshta.exe "javascript:{XSS}" /payload:{LONG_TAIL}',
        ),
        "net": _event("i-net", "DC01", at(200), r"C:\Windows\System32\net.exe", "net user /domain"),
        "net2": _event("i-net2", "BUILD02", at(300), r"C:\Windows\System32\net.exe", "net user"),
        "inv": _event(
            "i-inv", "DC01", at(400), r"C:\Windows\System32\wbem\WMIC.exe", "wmic product get"
        ),
        "old": _event(
            "i-old", "BUILD02", at(60 * 50), r"C:\Windows\System32\net.exe", "net localgroup"
        ),
    }
    ps_match = {
        "selections": [
            _sel("selection_img", ("Image", "endswith", "\\powershell.exe", PS)),
            _sel("selection_enc", ("CommandLine", "contains", " -enc ", ps_cmd)),
        ],
        "keywords": [],
    }
    mimi_match = {"selections": [], "keywords": ["sekurlsa::logonpasswords", "mimikatz"]}
    xss_match = {
        "selections": [
            _sel(
                "selection",
                ("Image", "endswith", "\\mshta.exe", events["xss"]["Image"]),
                ("CommandLine", "contains", "javascript:", events["xss"]["CommandLine"]),
            )
        ],
        "keywords": [],
    }
    plan: list[tuple[RuleInfo, str, dict[str, Any] | None]] = [
        (ENC_PS, "ps", ps_match),
        (MIMIKATZ, "mimi", mimi_match),
        (SCRIPT_HOST, "xss", xss_match),
        (DISCOVERY, "net", None),
        (DISCOVERY, "net2", None),
        (INVENTORY, "inv", None),
        (DISCOVERY, "old", None),
    ]
    built = {key: build_finding(rule, events[key], grouping=GROUPING) for rule, key, _ in plan}
    docs = [_doc(built[key], match) for _, key, match in plan]

    # The correlation: its base findings are the two WS07 matches (match ids).
    base = [built["ps"], built["mimi"]]
    cid = finding_id(CORRELATION.id, TENANT, "corr", "window-1")
    corr = Finding(
        timestamp=at(45),
        rule=CORRELATION,
        threat=attack_from_tags(CORRELATION.tags),
        host=HostInfo(name="FIN-WS07"),
        event=EventInfo(
            id=cid,
            category="correlation",
            created=at(45),
            severity=LEVEL_SEVERITY["critical"],
        ),
        message=f"{CORRELATION.name} | {CORRELATION.id} | FIN-WS07 | temporal 2",
        sigstream=SigstreamInfo(
            tenant_id=TENANT,
            sensor_id=f"{TENANT}-fin-ws07",
            finding=FindingState(id=cid),
            group=GroupInfo(
                id=group_id(TENANT, CORRELATION.id, "FIN-WS07", f"correlation:{cid}"),
                window_s=600,
                window_start=at(50),
                first_seen=at(50),
                last_seen=at(45),
            ),
            correlation=CorrelationInfo(
                type="temporal",
                group_key="FIN-WS07",
                group_by={"host": "FIN-WS07"},
                window_start=at(50),
                window_end=at(40),
                value=2,
                condition="all rules within 10m",
                rules=[ENC_PS.id, MIMIKATZ.id],
                base_findings=[b.sigstream.finding.id for b in base] + ["gone-from-the-index"],
                base_events=[b.event.id for b in base],
            ),
        ),
    )
    docs.append(_doc(corr, None))

    # Sensor health: one finding of six kinds.
    health = [
        ("BUILD02", "silent", at(30), {"silent_for_s": 1800, "expected_interval_s": 60}),
        ("BUILD02", "stopped", at(35), {"reason": "SIGTERM"}),
        ("FIN-WS08", "gap", at(90), {"first": 1200, "last": 1450, "missing": 251}),
        ("FIN-WS08", "skew", at(95), {"skew_s": -3605.0}),
        ("DC01", "tampered", at(150), {"what": "config_sha256", "old": "ab12", "new": "cd34"}),
        ("FIN-WS07", "source_lost", at(20), {"source": "file", "status": "unavailable"}),
    ]
    for host, kind, when, details in health:
        sensor = f"{TENANT}-{host.lower()}"
        obs = Observation(kind=kind, at=when.timestamp(), key=f"{kind}-1", details=details)  # type: ignore[arg-type]
        docs.append(_doc(health_finding(TENANT, sensor, host, obs, GROUPING), None))

    es = connect(hosts)
    try:
        _ensure_extra_mappings(es, index)
        index_events(es, events_index, list(events.values()))
        result = write_documents(es, index, docs)
        assert result.created == len(docs), result
        _sensors(es, sensors_index, now)
        gid = lambda f: f.sigstream.group.id  # noqa: E731
        acked, closed = gid(built["net"]), gid(built["inv"])
        groups = groups_index(index)
        es.indices.refresh(index=f"{index},{groups},{events_index},{sensors_index}")
        es.update(
            index=groups, id=acked, doc={"sigstream": {"finding": {"status": "acknowledged"}}}
        )
        es.update(
            index=groups,
            id=closed,
            doc={"sigstream": {"finding": {"status": "closed", "resolution": "benign"}}},
        )
        es.indices.refresh(index=groups)
        ids = [
            h["_id"]
            for h in es.search(
                index=groups, size=100, query={"term": {"sigstream.tenant_id": TENANT}}
            )["hits"]["hits"]
        ]
    finally:
        es.close()
    return PageSeeded(
        tenant=TENANT,
        sensors_index=sensors_index,
        ps_id=gid(built["ps"]),
        mimikatz_id=gid(built["mimi"]),
        xss_id=gid(built["xss"]),
        correlation_id=corr.sigstream.group.id,  # type: ignore[union-attr]
        acked_id=acked,
        closed_id=closed,
        old_id=gid(built["old"]),
        ids=ids,
    )


def _sensors(es: Elasticsearch, index: str, now: datetime) -> None:
    """Status documents as the sensor-health query writes them."""
    es.options(ignore_status=400).indices.create(
        index=index,
        mappings=sensors_mappings(),
        settings={"number_of_shards": 1, "number_of_replicas": 0},
    )
    base = {"tenant_id": TENANT, "updated": now.isoformat(), "expected_interval_s": 60.0}
    rows = [
        {
            "sensor_id": f"{TENANT}-build02",
            "host": "BUILD02",
            "state": "silent",
            "last_seen": (now - timedelta(minutes=35)).isoformat(),
            "silent_since": (now - timedelta(minutes=30)).isoformat(),
            "events": 5120,
            "silences": 1,
            "stop_reason": "SIGTERM",
        },
        {
            "sensor_id": f"{TENANT}-fin-ws08",
            "host": "FIN-WS08",
            "state": "degraded",
            "last_seen": (now - timedelta(seconds=20)).isoformat(),
            "events": 88000,
            "rate": 3.2,
            "gaps": 1,
            "missing": 251,
            "skew_s": -3605.0,
            "skewed": "behind",
        },
        {
            "sensor_id": f"{TENANT}-fin-ws07",
            "host": "FIN-WS07",
            "state": "degraded",
            "last_seen": (now - timedelta(seconds=5)).isoformat(),
            "events": 120400,
            "rate": 7.5,
            "sources": {"exec": "ok", "file": "unavailable", "network": "ok"},
        },
        {
            "sensor_id": f"{TENANT}-dc01",
            "host": "DC01",
            "state": "healthy",
            "last_seen": (now - timedelta(seconds=8)).isoformat(),
            "events": 990000,
            "rate": 25.0,
            "config_sha256": "cd34",
        },
    ]
    for row in rows:
        doc = {**base, **row}
        es.index(index=index, id=sensor_doc_id(TENANT, doc["sensor_id"]), document=doc)


def drop_page(hosts: list[str], seeded: PageSeeded) -> None:
    es = connect(hosts)
    try:
        es.options(ignore_status=404).indices.delete(index=seeded.sensors_index)
    finally:
        es.close()
