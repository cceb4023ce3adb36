"""The triage HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs) and web page.

Every request carries an API key (``X-API-Key`` header or ``Authorization: Bearer``);
the key names a tenant and a role, and every query is scoped to that tenant. Read-only
keys can list and show; analyst keys can also triage and add suppressions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from elasticsearch import Elasticsearch
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from detections.suppression import Suppression
from sigstream.settings import Settings
from triage import store
from triage.auth import Caller, KeyStore
from triage.workflow import WorkflowError

WEB = Path(__file__).resolve().parent / "web"

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
bearer = HTTPBearer(auto_error=False)


def caller(
    request: Request,
    key: Annotated[str | None, Security(api_key_header)] = None,
    token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> Caller:
    """The authenticated caller (401 without a known key)."""
    found = request.app.state.keys.lookup(key or (token.credentials if token else ""))
    if found is None:
        raise HTTPException(401, "missing or unknown API key")
    return found


def writer(who: Annotated[Caller, Depends(caller)]) -> Caller:
    """The caller, if their role may change findings (403 otherwise)."""
    if not who.can_write:
        raise HTTPException(403, f"{who.user} has the read-only role")
    return who


Reader = Annotated[Caller, Depends(caller)]
Writer = Annotated[Caller, Depends(writer)]


class CloseBody(BaseModel):
    resolution: Literal["true_positive", "benign", "false_positive"]


class AssignBody(BaseModel):
    assignee: str = Field(min_length=1, max_length=200)


class NoteBody(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class SuppressionBody(BaseModel):
    rule_id: str = "*"
    fields: dict[str, str] = Field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None
    reason: str = ""


class FindingList(BaseModel):
    total: int
    page: int
    size: int
    findings: list[dict[str, Any]]


class FindingDetail(BaseModel):
    finding: dict[str, Any]
    matches: dict[str, Any]
    related_events: list[dict[str, Any]]
    ancestry: list[dict[str, Any]]


class TriageState(BaseModel):
    id: str
    finding: dict[str, Any]


def create_app(
    settings: Settings | None = None,
    keys: KeyStore | None = None,
    es: Elasticsearch | None = None,
) -> FastAPI:
    """The app, with its settings, key store and Elasticsearch client (injectable for
    tests that run it against the real services)."""
    from detections.sinks.elasticsearch import connect

    settings = settings or Settings()
    if keys is None:
        if settings.api_keys_file is None:
            raise RuntimeError("set SIGSTREAM_API_KEYS_FILE to a YAML file of API keys")
        keys = KeyStore.from_file(settings.api_keys_file)
    client = es or connect(settings.es_hosts)
    index, events_index = settings.findings_index, settings.events_index
    key_store = keys

    app = FastAPI(
        title="Sigstream triage API",
        version="1",
        description="Query and triage Sigstream findings. Authenticate with an API key.",
    )

    app.state.keys = key_store

    @app.get("/api/me", tags=["auth"])
    def me(who: Reader) -> dict[str, Any]:
        """Who the key belongs to: user, role, tenant."""
        return {"user": who.user, "role": who.role, "tenant": who.tenant}

    @app.get("/api/findings", response_model=FindingList, tags=["findings"])
    def list_findings(
        who: Reader,
        since: datetime | None = None,
        until: datetime | None = None,
        level: Annotated[list[str] | None, Query()] = None,
        rule: str | None = None,
        host: str | None = None,
        status: Annotated[list[str] | None, Query()] = None,
        assignee: str | None = None,
        q: Annotated[str | None, Query(description="Free text")] = None,
        sort: Literal[tuple(store.SORTS)] = "last_seen",  # type: ignore[valid-type]
        order: Literal["asc", "desc"] = "desc",
        page: Annotated[int, Query(ge=1)] = 1,
        size: Annotated[int, Query(ge=1, le=store.MAX_PAGE_SIZE)] = 25,
    ) -> dict[str, Any]:
        """Findings of the caller's tenant, filtered, sorted and paged."""
        f = store.ListFilters(
            start=since,
            end=until,
            levels=level or [],
            rule=rule or None,
            host=host or None,
            status=status or [],
            assignee=assignee or None,
            text=q,
            sort=sort,
            order=order,
            page=page,
            size=size,
        )
        try:
            total, rows = store.list_findings(client, index, who, f)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"total": total, "page": page, "size": size, "findings": rows}

    @app.get("/api/findings/{finding_id}", response_model=FindingDetail, tags=["findings"])
    def show_finding(
        finding_id: str,
        who: Reader,
        window_minutes: Annotated[int, Query(ge=0, le=1440)] = 10,
    ) -> dict[str, Any]:
        """A finding with its matching events, related host events and process ancestry."""
        f = _get(who, finding_id)
        total, items = store.finding_matches(client, index, who, f)
        related = store.related_events(
            client, events_index, who, f, timedelta(minutes=window_minutes)
        )
        return {
            "finding": f,
            "matches": {"total": total, "items": items},
            "related_events": related,
            "ancestry": store.process_ancestry(client, events_index, f),
        }

    def _get(who: Caller, finding_id: str) -> dict[str, Any]:
        try:
            return store.get_finding(client, index, who, finding_id)
        except store.NotFound:
            raise HTTPException(404, "finding not found") from None

    def _act(who: Caller, finding_id: str, action: str, **kw: Any) -> dict[str, Any]:
        try:
            new = store.update_finding(client, index, who, finding_id, action, **kw)
        except store.NotFound:
            raise HTTPException(404, "finding not found") from None
        except store.Forbidden as exc:
            raise HTTPException(403, str(exc)) from None
        except WorkflowError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"id": finding_id, "finding": new}

    @app.post("/api/findings/{finding_id}/ack", response_model=TriageState, tags=["triage"])
    def ack(finding_id: str, who: Writer) -> dict[str, Any]:
        """open -> acknowledged."""
        return _act(who, finding_id, "ack")

    @app.post("/api/findings/{finding_id}/close", response_model=TriageState, tags=["triage"])
    def close(finding_id: str, body: CloseBody, who: Writer) -> dict[str, Any]:
        """Close with a resolution."""
        return _act(who, finding_id, "close", resolution=body.resolution)

    @app.post("/api/findings/{finding_id}/reopen", response_model=TriageState, tags=["triage"])
    def reopen(finding_id: str, who: Writer) -> dict[str, Any]:
        """Back to open."""
        return _act(who, finding_id, "reopen")

    @app.post("/api/findings/{finding_id}/assign", response_model=TriageState, tags=["triage"])
    def assign(finding_id: str, body: AssignBody, who: Writer) -> dict[str, Any]:
        """Assign to an analyst."""
        return _act(who, finding_id, "assign", assignee=body.assignee)

    @app.post("/api/findings/{finding_id}/notes", response_model=TriageState, tags=["triage"])
    def note(finding_id: str, body: NoteBody, who: Writer) -> dict[str, Any]:
        """Add a note (author and time recorded)."""
        return _act(who, finding_id, "note", text=body.text)

    @app.get("/api/suppressions", tags=["suppressions"])
    def suppressions(who: Reader) -> list[dict[str, Any]]:
        """The tenant's suppression rules with how many matches each silenced."""
        return store.list_suppressions(client, index, who)

    @app.post("/api/suppressions", tags=["suppressions"])
    def suppress(body: SuppressionBody, who: Writer) -> dict[str, Any]:
        """Silence known-benign matches (still stored and counted) from now on."""
        sup = Suppression(
            tenant_id=who.tenant or "",
            rule_id=body.rule_id,
            fields=body.fields,
            start=body.start or datetime.now(UTC),
            end=body.end,
            reason=body.reason,
        )
        return store.add_suppression(client, index, who, sup).model_dump(mode="json")

    @app.get("/", include_in_schema=False)
    def page(_: Request) -> FileResponse:
        return FileResponse(WEB / "index.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app
