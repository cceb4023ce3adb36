"""The triage page's API views on the real Elasticsearch (triage/views.py): the overview
counts and its time range, sensor health worst first, a correlation's base findings, and
tenant isolation of all three."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from common.settings import Settings
from tests.integration import triage_page_seed, triage_seed
from triage.api import create_app
from triage.auth import KeyStore

pytestmark = pytest.mark.integration
HOSTS = Settings().es_hosts
KEYS = KeyStore(
    {
        "initech": {"tenant": "initech", "role": "read-only", "user": "bill"},
        "acme": {"tenant": "acme", "role": "analyst", "user": "alice"},
    }
)


@pytest.fixture(scope="module")
def seeded(services: dict[str, Any]) -> Iterator[tuple[triage_seed.Seeded, Any]]:
    import uuid

    unique = uuid.uuid4().hex[:10]
    s = triage_seed.seed(HOSTS, f"test-{unique}-findings", f"test-{unique}-events")
    page = triage_page_seed.seed_page(HOSTS, s.index, s.events_index, f"test-{unique}-sensors")
    yield s, page
    triage_seed.drop(HOSTS, s)
    triage_page_seed.drop_page(HOSTS, page)


@pytest.fixture(scope="module")
def client(seeded: tuple[triage_seed.Seeded, Any]) -> Iterator[TestClient]:
    s, page = seeded
    settings = Settings(
        findings_index=s.index, events_index=s.events_index, sensors_index=page.sensors_index
    )
    with TestClient(create_app(settings, KEYS)) as c:
        yield c


def _get(client: TestClient, key: str, path: str, **params: Any) -> dict[str, Any]:
    resp = client.get(path, params=params, headers={"X-API-Key": key})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_overview_counts_and_time_range(client: TestClient) -> None:
    all_time = _get(client, "initech", "/api/overview")
    assert all_time["total"] == 14
    assert all_time["status"] == {"open": 12, "acknowledged": 1, "closed": 1}
    assert all_time["kinds"] == {
        "sigma": 7,
        "correlation": 1,
        "sensor_health": 6,
        "detection_health": 0,
    }
    assert sum(b["total"] for b in all_time["series"]) == 14
    assert len(all_time["series"]) <= 60
    assert all_time["top_rules"][0] == {
        "id": triage_page_seed.DISCOVERY.id,
        "name": "Local Account Discovery",
        "level": "low",
        "count": 3,
    }
    assert {"key": "FIN-WS07", "count": 4} in all_time["top_hosts"]
    assert {"key": "discovery", "count": 4} in all_time["top_tactics"]
    # The last 24 hours leave out the finding from two days ago: `since` is honoured,
    # with or without a zone.
    since = datetime.now(UTC) - timedelta(hours=24)
    day = _get(client, "initech", "/api/overview", since=since.isoformat())
    assert day["total"] == 13 and day["interval"] == "30m"
    naive = since.replace(tzinfo=None).isoformat()
    assert _get(client, "initech", "/api/overview", since=naive)["total"] == 13
    later = _get(client, "initech", "/api/overview", until=since.isoformat())
    assert later["total"] == 1
    bad = client.get(
        "/api/overview",
        params={"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"},
        headers={"X-API-Key": "initech"},
    )
    assert bad.status_code == 422


def test_overview_is_tenant_scoped(client: TestClient) -> None:
    acme = _get(client, "acme", "/api/overview")
    assert acme["total"] == 1 and acme["top_hosts"] == [{"key": "WS01", "count": 1}]


def test_sensor_health_worst_first(client: TestClient) -> None:
    out = _get(client, "initech", "/api/sensors")
    assert out["counts"] == {"silent": 1, "degraded": 2, "healthy": 1} and out["total"] == 4
    states = [s["state"] for s in out["sensors"]]
    assert states == ["silent", "degraded", "degraded", "healthy"]
    assert out["sensors"][0]["problems"] == ["silent", "stopped: SIGTERM"]
    kinds = {h["kind"]: h["count"] for h in out["health"]}
    assert kinds == {
        "silent": 1,
        "gap": 1,
        "reset": 0,
        "stopped": 1,
        "tampered": 1,
        "source_lost": 1,
        "skew": 1,
    }
    paged = _get(client, "initech", "/api/sensors", page=2, size=3)
    assert [s["sensor_id"] for s in paged["sensors"]] == ["initech-dc01"]
    silent = _get(client, "initech", "/api/sensors", state="silent")
    assert [s["host"] for s in silent["sensors"]] == ["BUILD02"] and silent["total"] == 1
    assert _get(client, "acme", "/api/sensors")["total"] == 0  # another tenant's fleet
    refused = client.get("/api/sensors?state=bogus", headers={"X-API-Key": "initech"})
    assert refused.status_code == 422


def test_base_findings_of_a_correlation(client: TestClient, seeded: Any) -> None:
    _, page = seeded
    detail = _get(client, "initech", f"/api/findings/{page.correlation_id}")
    found = [b for b in detail["base_findings"] if b["found"]]
    assert [b["finding_id"] for b in found] == [page.ps_id, page.mimikatz_id]
    assert found[1]["match"]["keywords"] == ["sekurlsa::logonpasswords", "mimikatz"]
    missing = [b["id"] for b in detail["base_findings"] if not b["found"]]
    assert missing == ["gone-from-the-index"] and len(detail["base_findings"]) == 3
    plain = _get(client, "initech", f"/api/findings/{page.ps_id}")
    assert plain["base_findings"] == []
    other = client.get(f"/api/findings/{page.correlation_id}", headers={"X-API-Key": "acme"})
    assert other.status_code == 404
    assert client.get("/api/overview").status_code == 401
