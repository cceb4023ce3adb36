"""The triage HTTP API on the real Elasticsearch: roles, and tenant isolation (an analyst
of tenant A can neither read nor change tenant B's findings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from common.settings import Settings
from detections.sinks.elasticsearch import connect, groups_index
from tests.integration import triage_seed
from triage.api import create_app
from triage.auth import KeyStore

pytestmark = pytest.mark.integration
#: The stack the ``services`` fixture runs (SIGSTREAM_ES_HOSTS; 127.0.0.1:9200 by default).
HOSTS = Settings().es_hosts
KEYS = KeyStore(
    {
        "acme-analyst": {"tenant": "acme", "role": "analyst", "user": "alice"},
        "acme-viewer": {"tenant": "acme", "role": "read-only", "user": "victor"},
        "globex-analyst": {"tenant": "globex", "role": "analyst", "user": "gina"},
    }
)


@pytest.fixture
def seeded(services: dict[str, Any], unique: str) -> Iterator[triage_seed.Seeded]:
    s = triage_seed.seed(HOSTS, f"test-{unique}-findings", f"test-{unique}-events")
    yield s
    triage_seed.drop(HOSTS, s)


@pytest.fixture
def client(seeded: triage_seed.Seeded) -> Iterator[TestClient]:
    settings = Settings(findings_index=seeded.index, events_index=seeded.events_index)
    with TestClient(create_app(settings, KEYS)) as c:
        yield c


def _h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _stored_status(s: triage_seed.Seeded, fid: str) -> dict[str, Any]:
    es = connect(HOSTS)
    try:
        return es.get(index=groups_index(s.index), id=fid)["_source"]["sigstream"]["finding"]
    finally:
        es.close()


def test_tenant_a_cannot_read_or_modify_tenant_b(client: TestClient, seeded: Any) -> None:
    listed = client.get("/api/findings", headers=_h("acme-analyst")).json()
    assert [f["sigstream"]["finding"]["id"] for f in listed["findings"]] == [seeded.acme_id]
    assert (
        client.get("/api/findings?q=GLOBEXSECRET", headers=_h("acme-analyst")).json()["total"] == 0
    )
    assert (
        client.get(f"/api/findings/{seeded.globex_id}", headers=_h("acme-analyst")).status_code
        == 404
    )
    for path, body in (
        ("ack", None),
        ("close", {"resolution": "benign"}),
        ("assign", {"assignee": "mallory"}),
        ("notes", {"text": "pwned"}),
    ):
        resp = client.post(
            f"/api/findings/{seeded.globex_id}/{path}", json=body, headers=_h("acme-analyst")
        )
        assert resp.status_code == 404, (path, resp.text)
    untouched = _stored_status(seeded, seeded.globex_id)
    assert (untouched["status"], untouched.get("assignee"), untouched["notes"]) == (
        "open",
        None,
        [],
    )
    # Its own analyst can.
    resp = client.post(f"/api/findings/{seeded.globex_id}/ack", headers=_h("globex-analyst"))
    assert resp.status_code == 200
    assert _stored_status(seeded, seeded.globex_id)["status"] == "acknowledged"
    # And related events of acme's finding never include globex's events on "WS01".
    detail = client.get(
        f"/api/findings/{seeded.acme_id}?window_minutes=60", headers=_h("acme-analyst")
    ).json()
    assert {e["tenant_id"] for e in detail["related_events"]} == {"acme"}


def test_roles_and_authentication(client: TestClient, seeded: Any) -> None:
    assert client.get("/api/findings").status_code == 401
    assert client.get("/api/findings", headers=_h("wrong")).status_code == 401
    bearer = {"Authorization": "Bearer acme-viewer"}
    assert client.get("/api/me", headers=bearer).json() == {
        "user": "victor",
        "role": "read-only",
        "tenant": "acme",
    }
    assert client.get(f"/api/findings/{seeded.acme_id}", headers=bearer).status_code == 200
    assert client.post(f"/api/findings/{seeded.acme_id}/ack", headers=bearer).status_code == 403
    assert (
        client.post("/api/suppressions", json={"rule_id": "*"}, headers=bearer).status_code == 403
    )
    assert _stored_status(seeded, seeded.acme_id)["status"] == "open"


def test_triage_actions_and_openapi(client: TestClient, seeded: Any) -> None:
    h = _h("acme-analyst")
    url = f"/api/findings/{seeded.acme_id}"
    assert client.post(f"{url}/ack", headers=h).json()["finding"]["status"] == "acknowledged"
    assert client.post(f"{url}/ack", headers=h).status_code == 409  # already acknowledged
    assert client.post(f"{url}/close", json={"resolution": "maybe"}, headers=h).status_code == 422
    client.post(f"{url}/notes", json={"text": "macro from invoice.docm"}, headers=h)
    closed = client.post(f"{url}/close", json={"resolution": "true_positive"}, headers=h).json()
    assert (closed["finding"]["status"], closed["finding"]["resolution"]) == (
        "closed",
        "true_positive",
    )
    detail = client.get(url, headers=h).json()
    assert detail["matches"]["total"] == 5
    assert [n["author"] for n in detail["finding"]["sigstream"]["finding"]["notes"]] == ["alice"]
    assert len(detail["ancestry"]) == 3
    spec = client.get("/openapi.json").json()
    for path in (
        "/api/findings",
        "/api/findings/{finding_id}",
        "/api/findings/{finding_id}/ack",
        "/api/findings/{finding_id}/close",
        "/api/findings/{finding_id}/assign",
        "/api/findings/{finding_id}/notes",
        "/api/suppressions",
    ):
        assert path in spec["paths"], path
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]
    assert client.get("/").status_code == 200 and "Sigstream findings" in client.get("/").text


def test_cli_lists_shows_and_triages(seeded: Any) -> None:
    env = {
        **os.environ,
        "SIGSTREAM_FINDINGS_INDEX": seeded.index,
        "SIGSTREAM_EVENTS_INDEX": seeded.events_index,
        "SIGSTREAM_TENANT": "acme",
    }

    def run(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", "from sigstream.cli import app; app()", "findings", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    listed = json.loads(run("list", "--json", "--host", "ws01", "--level", "high"))
    assert [f["sigstream"]["finding"]["id"] for f in listed["findings"]] == [seeded.acme_id]
    table = run("list")
    assert "Encoded PowerShell" in table and seeded.acme_id[:12] in table
    run("ack", seeded.acme_id[:12], "--as", "cli-analyst")
    run("note", seeded.acme_id[:12], "seen in the CLI")
    shown = json.loads(run("show", seeded.acme_id, "--json"))
    state = shown["finding"]["sigstream"]["finding"]
    assert state["status"] == "acknowledged" and state["history"][0]["actor"] == "cli-analyst"
    assert "explorer.exe" in run("show", seeded.acme_id[:12])
