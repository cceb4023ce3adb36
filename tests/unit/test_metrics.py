"""Metrics without services: the listener (token, paths), the gateway's counters through its
app, multiprocess sums, the detect job's driver-side sums and scrape-time families, the
triage API's route templates, the shared canary/delivery gauges."""

from __future__ import annotations

import multiprocessing
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from common import metrics as common_metrics
from common.metrics import (
    LATENCY_BUCKETS,
    MetricsEndpoint,
    multiprocess_registry,
    serve_metrics,
)
from common.settings import Settings
from detections.stream.job import BatchStats, add_tally
from detections.stream.metrics import DetectMetrics, kafka_lag
from detections.stream.parse import MALFORMED, reason_code, record_problem
from detections.stream.worker import FindingTally, checked_records
from ingest.gateway.app import create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.metrics import reason_label
from tests.unit.gateway_helpers import event, ndjson
from tests.unit.memory_sink import MemorySink


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def fetch(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- the listener ---------------------------------------------------------------------------


def test_endpoint_is_off_by_default_and_on_with_a_port_or_the_setting() -> None:
    s = Settings()
    assert MetricsEndpoint.from_settings(s, "gateway") is None
    assert MetricsEndpoint.from_settings(s, "api", 0) == MetricsEndpoint("127.0.0.1", 0)
    on = Settings(metrics_enabled=True, metrics_token=SecretStr("t0k"), metrics_detect_port=9999)
    assert MetricsEndpoint.from_settings(on, "detect") == MetricsEndpoint("127.0.0.1", 9999, "t0k")
    with pytest.raises(ValueError, match="unknown metrics component"):
        MetricsEndpoint.from_settings(on, "nope")


def test_listener_serves_the_registry_and_only_with_the_token() -> None:
    registry = CollectorRegistry()
    Counter("demo_things", "things", registry=registry).inc(3)
    server = serve_metrics(MetricsEndpoint("127.0.0.1", 0, "s3cret"), registry)
    try:
        assert server.port > 0
        status, text = fetch(server.url)
        assert status == 401 and "bearer token" in text
        assert fetch(server.url, "wrong")[0] == 401
        status, text = fetch(server.url, "s3cret")
        assert status == 200 and "demo_things_total 3.0" in text
        assert fetch(server.url.replace("/metrics", "/other"), "s3cret")[0] == 404
    finally:
        server.stop()


def test_listener_without_token_answers_anyone_on_its_address() -> None:
    registry = CollectorRegistry()
    Counter("demo_open", "x", registry=registry).inc()
    server = serve_metrics(MetricsEndpoint("127.0.0.1", 0), registry)
    try:
        status, text = fetch(server.url)
        assert status == 200 and "demo_open_total 1.0" in text
    finally:
        server.stop()


# --- the gateway ----------------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    with TestClient(create_app(store, MemorySink())) as http:
        yield http, token


def test_gateway_counts_accepted_duplicates_rejects_and_refusals(
    gateway: tuple[TestClient, str],
) -> None:
    http, token = gateway
    registry = http.app.state.gateway.metrics.registry  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {token}"}
    body = ndjson([event(1), event(2), event(3, tenant_id="globex")]) + b"{oops\n"
    assert http.post("/v1/events", content=body, headers=auth).status_code == 200
    assert http.post("/v1/events", content=ndjson([event(1)]), headers=auth).status_code == 200
    assert (
        http.post("/v1/events", content=b"{}\n", headers={"Authorization": "Bearer x"}).status_code
        == 401
    )
    assert value(registry, "sigstream_gateway_events_accepted_total") == 2
    assert value(registry, "sigstream_gateway_events_duplicate_total") == 1
    assert value(registry, "sigstream_gateway_events_rejected_total", reason="tenant_mismatch") == 1
    assert value(registry, "sigstream_gateway_events_rejected_total", reason="invalid_json") == 1
    assert value(registry, "sigstream_gateway_batches_refused_total", reason="unauthorized") == 1
    assert value(registry, "sigstream_gateway_batches_delivered_total") == 2


def test_gateway_counts_a_body_refused_for_its_size(tmp_path: Path) -> None:
    from ingest.gateway.app import GatewayOptions
    from ingest.gateway.parse import Limits

    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    opts = GatewayOptions(limits=Limits(max_body_bytes=100))
    with TestClient(create_app(store, MemorySink(), opts)) as http:
        resp = http.post(
            "/v1/events", content=b"x" * 500, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 413
        registry = http.app.state.gateway.metrics.registry  # type: ignore[attr-defined]
        assert (
            value(registry, "sigstream_gateway_batches_refused_total", reason="body_too_large") == 1
        )


def test_reason_labels_stay_codes() -> None:
    assert reason_label("invalid_json") == "invalid_json"
    assert reason_label("free text: with spaces") == "other"
    assert reason_label("x" * 80) == "other"


def _count_in_child(n: int) -> None:
    from ingest.gateway.metrics import GatewayMetrics

    GatewayMetrics().delivered(n, 0, ["too_deep"] * n)


def test_multiprocess_registry_adds_up_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``gateway serve --workers N`` serves: the parent exports the folder
    (``prepare_multiprocess_dir``) before it spawns the workers (fresh interpreters that
    read it when they import prometheus_client); the parent's registry sums them."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after the test
    common_metrics.prepare_multiprocess_dir(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_count_in_child, args=(n,)) for n in (3, 4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    registry = multiprocess_registry(tmp_path)
    assert value(registry, "sigstream_gateway_events_accepted_total") == 7
    assert value(registry, "sigstream_gateway_events_rejected_total", reason="too_deep") == 7


# --- the detect job -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "empty_record"),
        (b"{oops", "malformed_json"),
        (b"[1]", "not_an_event_object"),
        (b"\xff\xfe", "invalid_utf8"),
        (b'{"a": 123456789012345678901234567890}', "number_out_of_range"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "too_deep"),
        (b'{"event_type": "nope"}', "invalid_event"),
    ],
)
def test_reason_codes_of_the_dead_letters(raw: bytes | None, code: str) -> None:
    assert reason_code(record_problem(raw)) == code


def test_reason_codes_of_the_jvm_reasons() -> None:
    assert reason_code(MALFORMED) == "not_an_event_object"
    assert reason_code("missing or invalid required field host") == "missing_required_field"
    assert reason_code("unknown event_type foo") == "unknown_event_type"
    assert reason_code("unsupported schema_version 9") == "schema_version"
    assert reason_code("something new") == "other"


def test_checked_records_count_reasons() -> None:
    from collections import Counter as Tally

    batch = pa.RecordBatch.from_pylist(
        [
            {"value": "{oops", "reject_reason": MALFORMED},
            {"value": "x", "reject_reason": "unknown event_type foo"},
            {"value": None, "reject_reason": "empty record"},
        ]
    )
    codes: Tally[str] = Tally()
    valid, _ = checked_records(batch, codes)
    assert not valid.any()
    assert codes == {"malformed_json": 1, "unknown_event_type": 1, "empty_record": 1}


def test_finding_tally_latency_and_levels() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    received = [now - timedelta(seconds=s) for s in (0.2, 1.5, 4.0)] + [None]
    events = pa.RecordBatch.from_pylist(
        [{"received_time": r} for r in received],
        schema=pa.schema([pa.field("received_time", pa.timestamp("us", tz="UTC"))]),
    )
    tally = FindingTally()
    tally.document(True, "high", 0)
    tally.document(True, "High", 1)
    tally.document(False, "low", 2)  # shadow: counted by level, not in the latency
    tally.document(True, "medium", 2)
    tally.document(True, None, 3)  # no received_time: no latency
    tally.written(events, now)
    assert tally.levels == {
        "active:high": 2,
        "shadow:low": 1,
        "active:medium": 1,
        "active:unknown": 1,
    }
    assert tally.buckets.sum() == 3
    bounds = np.asarray(LATENCY_BUCKETS)
    assert tally.buckets[int(np.searchsorted(bounds, 0.2))] == 1  # the 0.5 s bucket
    assert tally.buckets[int(np.searchsorted(bounds, 4.0))] == 1  # the 5 s bucket
    assert tally.seconds == pytest.approx(5.7)
    assert tally.rows == []


def _stats(
    batch_id: int, rule_seconds: dict[int, float], quarantined: dict[str, str]
) -> BatchStats:
    stats = BatchStats(batch_id, events=100, matches=4, created=3, seconds=0.8, match_seconds=0.3)
    stats.rules = {i: [100, i, s] for i, s in rule_seconds.items()}
    stats.rule_ids = {i: f"rule-{i}" for i in rule_seconds}
    stats.new_quarantines = quarantined
    stats.rules_loaded, stats.rules_quarantined = 10, len(quarantined)
    tally = FindingTally()
    tally.levels.update({"active:high": 3, "shadow:low": 1})
    tally.dlq_reasons.update({"malformed_json": 2})
    tally.observe(np.array([0.3, 2.5, 2.5]))
    add_tally(stats, tally.columns())
    add_tally(stats, tally.columns())  # a second task with the same numbers
    return stats


def test_detect_metrics_add_up_batches_and_bound_rule_series() -> None:
    m = DetectMetrics(rule_series=2)
    m.observe_batch(_stats(0, {0: 0.1, 1: 0.5, 2: 0.2}, {}))
    m.observe_batch(_stats(1, {3: 0.05}, {"rule-3": "raised ValueError"}))
    r = m.registry
    assert value(r, "sigstream_detect_events_total") == 200
    assert value(r, "sigstream_detect_batches_total") == 2
    assert value(r, "sigstream_detect_dead_letters_total", reason="malformed_json") == 8
    assert value(r, "sigstream_detect_findings_total", destination="active", level="high") == 12
    assert value(r, "sigstream_detect_findings_total", destination="shadow", level="low") == 4
    assert value(r, "sigstream_detect_rule_quarantines_total") == 1
    assert value(r, "sigstream_detect_rules_quarantined") == 1
    assert value(r, "sigstream_detect_batch_duration_seconds_count") == 2
    # latency: 2 tasks x 2 batches x 3 findings; 4 at 0.3 s, 8 at 2.5 s
    assert value(r, "sigstream_detect_event_to_finding_seconds_count") == 12
    assert value(r, "sigstream_detect_event_to_finding_seconds_bucket", le="0.5") == 4
    assert value(r, "sigstream_detect_event_to_finding_seconds_bucket", le="2.0") == 4
    assert value(r, "sigstream_detect_event_to_finding_seconds_bucket", le="3.0") == 12
    assert value(r, "sigstream_detect_event_to_finding_seconds_sum") == pytest.approx(21.2)
    # top 2 by cost: rule-1 and rule-2 only; matches: top 2 of the rules that matched
    assert value(r, "sigstream_rule_eval_seconds_total", rule_id="rule-1") == 0.5
    assert value(r, "sigstream_rule_eval_seconds_total", rule_id="rule-2") == 0.2
    assert value(r, "sigstream_rule_eval_seconds_total", rule_id="rule-0") is None
    assert value(r, "sigstream_rule_matches_total", rule_id="rule-3") == 3
    assert value(r, "sigstream_rule_matches_total", rule_id="rule-0") is None  # no matches
    assert value(r, "sigstream_rule_errors_total", rule_id="rule-3") == 1
    names = {f.name for f in text_string_to_metric_families(generate(r))}
    assert "sigstream_detect_event_to_finding_seconds" in names


def test_kafka_lag_from_a_progress_source() -> None:
    source = {
        "endOffset": '{"telemetry.events": {"0": 10, "1": 5}}',
        "latestOffset": {"telemetry.events": {"0": 15, "1": 5}, "other": {"0": 3}},
    }
    assert kafka_lag(source) == {"telemetry.events": 5, "other": 3}
    assert kafka_lag({"endOffset": None, "latestOffset": None}) == {}


def test_stream_progress_of_a_fake_session_query() -> None:
    """The scrape-time family builder reads what Spark's lastProgress holds."""
    query = SimpleNamespace(
        name="sigstream-detect",
        id="x",
        lastProgress={
            "durationMs": {"triggerExecution": 1500},
            "processedRowsPerSecond": 42.0,
            "sources": [
                {"endOffset": {"t": {"0": 1}}, "latestOffset": {"t": {"0": 11}}},
            ],
        },
    )
    m = DetectMetrics()
    m.watch(SimpleNamespace(streams=SimpleNamespace(active=[query])))
    r = m.registry
    assert value(r, "sigstream_stream_kafka_lag_records", query="sigstream-detect", topic="t") == 10
    assert value(r, "sigstream_stream_batch_duration_seconds", query="sigstream-detect") == 1.5
    assert value(r, "sigstream_stream_query_active", query="sigstream-detect") == 1


# --- the triage API -------------------------------------------------------------------------


def test_api_counts_requests_by_route_template_also_refused_ones() -> None:
    from elasticsearch import Elasticsearch

    from triage.api import create_app as create_api
    from triage.auth import KeyStore

    nowhere = "http://127.0.0.1:9"
    keys = KeyStore({"good-key": {"tenant": "acme", "role": "analyst", "user": "alice"}})
    app = create_api(Settings(es_hosts=[nowhere]), keys, Elasticsearch(nowhere))
    with TestClient(app) as http:
        http.get("/api/findings/abc123", headers={"X-API-Key": "nope"})
        http.get("/api/findings/def456", headers={"X-API-Key": "nope"})
        http.get("/no/such/path/9f8e7d")
        registry = app.state.metrics.registry
    assert (
        value(
            registry,
            "sigstream_api_requests_total",
            method="GET",
            route="/api/findings/{finding_id}",
            status="401",
        )
        == 2
    )
    text = generate(registry)
    assert "abc123" not in text and "9f8e7d" not in text
    assert value(registry, "sigstream_api_request_duration_seconds_count", route="other") == 1


def generate(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


# --- shared gauges (canaries, delivery) -----------------------------------------------------


def test_canary_and_delivery_gauges() -> None:
    proven = datetime(2026, 12, 1, tzinfo=UTC)
    common_metrics.set_canary("rule-x", proven, 2.5)
    common_metrics.set_delivery_backlog("webhook-soc", 7, proven)
    r = common_metrics.canary_registry()
    labels = {"rule_id": "rule-x"}
    assert (
        r.get_sample_value("sigstream_rule_canary_last_proven_timestamp_seconds", labels)
        == proven.timestamp()
    )
    assert r.get_sample_value("sigstream_rule_canary_latency_seconds", labels) == 2.5
    assert r.get_sample_value("sigstream_rule_canary_not_firing", labels) == 0
    assert r.get_sample_value("sigstream_alert_delivery_backlog", {"route": "webhook-soc"}) == 7
    common_metrics.forget_canary("rule-x")
    common_metrics.forget_canary("rule-x")  # twice: no error
    assert r.get_sample_value("sigstream_rule_canary_latency_seconds", labels) is None


def test_forget_delivery_backlog_drops_the_routes_series() -> None:
    proven = datetime(2026, 12, 1, tzinfo=UTC)
    common_metrics.set_delivery_backlog("gone-route", 4, proven)
    common_metrics.set_delivery_backlog("kept-route", 2, proven)
    r = common_metrics.canary_registry()
    common_metrics.forget_delivery_backlog("gone-route")
    common_metrics.forget_delivery_backlog("gone-route")  # twice: no error
    common_metrics.forget_delivery_backlog("never-set")
    for name in (
        "sigstream_alert_delivery_backlog",
        "sigstream_alert_delivery_oldest_pending_timestamp_seconds",
    ):
        assert r.get_sample_value(name, {"route": "gone-route"}) is None
    assert r.get_sample_value("sigstream_alert_delivery_backlog", {"route": "kept-route"}) == 2


def test_shared_gauges_join_another_registry() -> None:
    registry = common_metrics.include_shared(CollectorRegistry())
    common_metrics.set_delivery_backlog("syslog-siem", 3)
    assert value(registry, "sigstream_alert_delivery_backlog", route="syslog-siem") == 3
    assert (
        value(
            registry,
            "sigstream_alert_delivery_oldest_pending_timestamp_seconds",
            route="syslog-siem",
        )
        == 0
    )


def test_judged_canaries_set_their_rules_gauges() -> None:
    from detections.content.canary.evaluate import Verdict
    from detections.content.canary.runner import RoundReport, publish_metrics
    from schemas.rule_health import RuleHealth

    at = datetime(2026, 12, 6, 12, tzinfo=UTC)
    ok = RuleHealth(
        rule_id="rule-ok",
        title="t",
        state="ok",
        tests=2,
        updated=at,
        last_proven=at,
        latency_s=0.7,
    )
    dead = RuleHealth(rule_id="rule-dead", title="t", state="not_firing", tests=1, updated=at)
    untested = RuleHealth(rule_id="rule-untested", title="t", state="no_tests", updated=at)
    publish_metrics(RoundReport(verdicts=[Verdict(ok), Verdict(dead, True), Verdict(untested)]))
    r = common_metrics.canary_registry()
    assert value(r, "sigstream_rule_canary_latency_seconds", rule_id="rule-ok") == 0.7
    assert value(r, "sigstream_rule_canary_not_firing", rule_id="rule-ok") == 0
    assert value(r, "sigstream_rule_canary_not_firing", rule_id="rule-dead") == 1
    assert value(r, "sigstream_rule_canary_not_firing", rule_id="rule-untested") is None
    for rule in ("rule-ok", "rule-dead"):
        common_metrics.forget_canary(rule)


def test_delivery_backlog_per_route_with_the_oldest_finding() -> None:
    from triage.alerts.runner import delivery_backlog

    backlog = delivery_backlog(
        ["soc", "quiet"], [("soc", 2_000.0), ("soc", 1_000.0), ("soc", None), ("gone", 5.0)]
    )
    assert backlog == {"soc": (3, 1_000.0), "quiet": (0, None), "gone": (1, 5.0)}


def test_canary_and_alerts_processes_have_their_own_ports() -> None:
    s = Settings(metrics_enabled=True)
    canary = MetricsEndpoint.from_settings(s, "canary")
    alerts = MetricsEndpoint.from_settings(s, "alerts")
    assert canary is not None and canary.port == 9464
    assert alerts is not None and alerts.port == 9465
    assert MetricsEndpoint.from_settings(Settings(), "alerts") is None


def test_a_silent_client_is_dropped_by_the_metrics_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    monkeypatch.setattr(common_metrics._QuietHandler, "timeout", 0.5)
    server = common_metrics.serve_metrics(
        MetricsEndpoint("127.0.0.1", 0), common_metrics.canary_registry()
    )
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
            idle.settimeout(5)
            assert idle.recv(1) == b""  # closed by the server, not by our 5 s timeout
        with urllib.request.urlopen(server.url, timeout=5) as resp:  # still serving
            assert resp.status == 200
    finally:
        server.stop()


def test_canary_series_are_forgotten_only_for_rules_no_longer_deployed() -> None:
    from detections.content.canary.evaluate import Verdict
    from detections.content.canary.runner import RoundReport, publish_metrics
    from schemas.rule_health import RuleHealth

    at = datetime(2026, 12, 6, 12, tzinfo=UTC)

    def judged(rule_id: str, tests: int = 1) -> Verdict:
        return Verdict(
            RuleHealth(
                rule_id=rule_id, title="t", state="ok", tests=tests, updated=at, last_proven=at
            )
        )

    r = common_metrics.canary_registry()

    def has(rule_id: str) -> bool:
        return value(r, "sigstream_rule_canary_not_firing", rule_id=rule_id) is not None

    publish_metrics(RoundReport(verdicts=[judged("rule-a"), judged("rule-b"), judged("rule-c")]))
    assert has("rule-a") and has("rule-b") and has("rule-c")
    # A tick that judged only rule-a, everything still deployed: nothing is forgotten.
    publish_metrics(
        RoundReport(verdicts=[judged("rule-a")], deployed=frozenset({"rule-a", "rule-b", "rule-c"}))
    )
    assert has("rule-a") and has("rule-b") and has("rule-c")
    # An injection's report does not know the deployment: nothing is forgotten.
    publish_metrics(RoundReport(round_name="r2", rules=["rule-a"]))
    assert has("rule-b")
    # rule-b undeployed: its series go, even though this tick judged nothing.
    publish_metrics(RoundReport(deployed=frozenset({"rule-a", "rule-c"})))
    assert has("rule-a") and not has("rule-b") and has("rule-c")
    # rule-c judged with its tests removed: no series for a rule without canaries.
    publish_metrics(
        RoundReport(verdicts=[judged("rule-c", tests=0)], deployed=frozenset({"rule-a", "rule-c"}))
    )
    assert not has("rule-c") and has("rule-a")
    publish_metrics(RoundReport(deployed=frozenset()))
    assert not has("rule-a")
