"""Triage logic without services: workflow, grouping, suppression, keys, query bodies."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from detections.sinks.finding_docs import build_finding
from detections.sinks.grouping import GroupingConfig, group_key, parse_config, window_start
from detections.sinks.suppression import Suppression, suppressed_by
from schemas.findings import RuleInfo
from triage import workflow
from triage.auth import Caller, KeyStore
from triage.store import ListFilters, list_query

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
RULE = RuleInfo(id="r1", name="Encoded PowerShell", level="high", tags=["attack.t1059.001"])


def _event(n: int, minute: int, host: str = "WS01", tenant: str = "acme") -> dict:
    return {
        "tenant_id": tenant,
        "sensor_id": "s1",
        "host": host,
        "event_id": f"e{n}",
        "event_time": (T0 + timedelta(minutes=minute)).isoformat(),
        "event_type": "process_creation",
        "Image": r"C:\ps.exe",
        "CommandLine": "powershell -enc AAAA",
    }


# --- workflow --------------------------------------------------------------------------


def test_workflow_ack_close_reopen_with_history() -> None:
    s0 = {"id": "f", "status": "open", "notes": [], "history": []}
    s1 = workflow.apply(s0, "ack", "alice", T0)
    assert s1["status"] == "acknowledged" and s0["status"] == "open"
    s2 = workflow.apply(s1, "close", "bob", T0, resolution="benign")
    assert (s2["status"], s2["resolution"]) == ("closed", "benign")
    s3 = workflow.apply(s2, "reopen", "bob", T0)
    assert (s3["status"], s3["resolution"]) == ("open", None)
    actions = [(h["actor"], h["action"], h["field"], h["new"]) for h in s3["history"]]
    assert actions == [
        ("alice", "ack", "status", "acknowledged"),
        ("bob", "close", "resolution", "benign"),
        ("bob", "close", "status", "closed"),
        ("bob", "reopen", "status", "open"),
    ]


def test_workflow_refuses_bad_transitions_and_arguments() -> None:
    open_ = {"id": "f", "status": "open"}
    closed = workflow.apply(open_, "close", "a", T0, resolution="false_positive")
    with pytest.raises(workflow.WorkflowError, match="cannot ack"):
        workflow.apply(closed, "ack", "a", T0)
    with pytest.raises(workflow.WorkflowError, match="resolution"):
        workflow.apply(open_, "close", "a", T0)
    with pytest.raises(workflow.WorkflowError, match="resolution"):
        workflow.apply(open_, "close", "a", T0, resolution="maybe")
    with pytest.raises(workflow.WorkflowError):
        workflow.apply(open_, "note", "a", T0, text="   ")
    with pytest.raises(workflow.WorkflowError):
        workflow.apply(open_, "delete", "a", T0)


def test_notes_and_assignment_keep_author_and_time() -> None:
    s = workflow.apply({"id": "f", "status": "open"}, "note", "carol", T0, text=" looks odd ")
    s = workflow.apply(s, "assign", "carol", T0, assignee="dave")
    assert s["notes"] == [{"author": "carol", "at": T0.isoformat(), "text": "looks odd"}]
    assert s["assignee"] == "dave" and s["updated"] == T0.isoformat()
    assert [h["action"] for h in s["history"]] == ["note", "assign"]


# --- grouping --------------------------------------------------------------------------


def test_windows_are_aligned_and_deterministic() -> None:
    assert window_start(T0 + timedelta(minutes=59), 3600) == T0
    assert group_key(T0, "e1", 3600) == group_key(T0 + timedelta(minutes=30), "e2", 3600)
    assert group_key(T0, "e1", 0) == ("event:e1", None)


def test_same_rule_host_window_is_one_group() -> None:
    g = GroupingConfig(3600)
    a, b = (build_finding(RULE, _event(i, i), grouping=g) for i in (1, 2))
    other_host = build_finding(RULE, _event(3, 3, host="WS02"), grouping=g)
    later = build_finding(RULE, _event(4, 61), grouping=g)
    other_tenant = build_finding(RULE, _event(5, 5, tenant="globex"), grouping=g)
    gid = a.sigstream.group.id  # type: ignore[union-attr]
    assert b.sigstream.group.id == gid  # type: ignore[union-attr]
    assert a.sigstream.finding.id != b.sigstream.finding.id
    for f in (other_host, later, other_tenant):
        assert f.sigstream.group.id != gid  # type: ignore[union-attr]
    assert a.event.severity == 73 and "powershell -enc AAAA" in (a.message or "")


def test_per_rule_window_overrides() -> None:
    cfg = parse_config({"default": 600, "rules": {"r1": 0, "r2": 86400}}, 3600)
    assert (cfg.window_for("r1"), cfg.window_for("r2"), cfg.window_for("x")) == (0, 86400, 600)
    a = build_finding(RULE, _event(1, 1), grouping=cfg)
    b = build_finding(RULE, _event(2, 2), grouping=cfg)
    assert a.sigstream.group.id != b.sigstream.group.id  # type: ignore[union-attr]


# --- suppression -----------------------------------------------------------------------


def test_suppression_matches_rule_fields_time_and_tenant() -> None:
    doc = build_finding(RULE, _event(1, 1), grouping=GroupingConfig()).model_dump(
        mode="json", by_alias=True
    )
    sup = Suppression(
        tenant_id="acme",
        rule_id="r1",
        fields={"host.name": "ws01"},
        start=T0,
        end=T0 + timedelta(hours=1),
    ).with_id()
    assert suppressed_by([sup], doc) == [sup.id]
    for change in (
        {"tenant_id": "globex"},
        {"rule_id": "r2"},
        {"fields": {"host.name": "WS02"}},
        {"fields": {"sigstream.event.User": "x"}},
        {"start": T0 + timedelta(minutes=5)},
        {"end": T0},
    ):
        assert suppressed_by([sup.model_copy(update=change)], doc) == [], change
    assert suppressed_by([sup.model_copy(update={"rule_id": "*"})], doc) == [sup.id]


# --- keys ------------------------------------------------------------------------------


def test_keys_carry_tenant_and_role_and_may_be_hashed() -> None:
    hashed = "sha256:" + hashlib.sha256(b"secret-2").hexdigest()
    store = KeyStore(
        {
            "secret-1": {"tenant": "acme", "role": "analyst", "user": "alice"},
            hashed: {"tenant": "globex", "role": "read-only", "user": "gus"},
        }
    )
    assert store.lookup("secret-1") == Caller("alice", "analyst", "acme")
    gus = store.lookup("secret-2")
    assert gus == Caller("gus", "read-only", "globex") and not gus.can_write
    assert store.lookup("nope") is None and store.lookup("") is None
    assert store.lookup(hashed) is None  # the digest itself is not a key
    with pytest.raises(ValueError, match="role"):
        KeyStore({"k": {"tenant": "a", "role": "admin"}})
    with pytest.raises(ValueError, match="tenant"):
        KeyStore({"k": {"role": "analyst"}})


# --- query bodies ----------------------------------------------------------------------


def test_every_list_query_is_scoped_to_the_callers_tenant() -> None:
    body = list_query(
        ListFilters(host="ws01", text="enc", levels=["HIGH"], size=1000),
        Caller("a", "read-only", "acme"),
    )
    filters = body["query"]["bool"]["filter"]
    assert {"term": {"sigstream.tenant_id": "acme"}} in filters
    assert {"terms": {"rule.level": ["high"]}} in filters
    assert body["query"]["bool"]["must"][0]["simple_query_string"]["query"] == "enc"
    assert body["size"] == 200
    with pytest.raises(ValueError, match="10,000"):
        list_query(ListFilters(page=51, size=200), Caller("a", "analyst", "acme"))
    with pytest.raises(ValueError, match="sort"):
        list_query(ListFilters(sort="nope"), Caller("a", "analyst", "acme"))


def test_retention_never_deletes_the_write_index_or_recent_data() -> None:
    from triage.lifecycle import BackingIndex, expired

    now = T0
    indices = [
        BackingIndex("f-000001", False, now - timedelta(days=100)),
        BackingIndex("f-000002", False, now - timedelta(days=10)),
        BackingIndex("f-000003", False, None),
        BackingIndex("f-000004", True, now - timedelta(days=400)),
    ]
    assert expired(indices, now, timedelta(days=30)) == ["f-000001", "f-000003"]
