"""The triage HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs) and web page.

Every request carries an API key (``X-API-Key`` header or ``Authorization: Bearer``);
the key names a tenant and a role, and every query is scoped to that tenant. Read-only
keys can list and show; analyst keys can also triage and add suppressions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from elasticsearch import (
    ApiError,
    BadRequestError,
    Elasticsearch,
    TransportError,
)
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from common.settings import Settings
from detections.sinks.suppression import Suppression
from schemas.findings import Resolution
from triage import store
from triage.auth import Caller, KeyStore
from triage.guard import GuardLimits, RequestGuard
from triage.queries import QueryRejected, TextLimits
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
    resolution: Resolution


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
    #: The search hit its time budget (``SIGSTREAM_API_SEARCH_TIMEOUT_S``): partial results.
    timed_out: bool = False


class BaseFinding(BaseModel):
    """A base finding of a correlation finding: its rule title, host, time and why it
    matched (``found`` false: not stored, e.g. a ``generate: false`` rule, or not visible)."""

    id: str
    found: bool
    finding_id: str | None = None  # the finding (group) to open
    rule_id: str | None = None
    rule: str | None = None
    level: str | None = None
    host: str | None = None
    time: str | None = None
    event_id: str | None = None
    category: Any = None
    process: dict[str, Any] = Field(default_factory=dict)
    match: dict[str, Any] | None = None
    correlation: bool = False


class FindingDetail(BaseModel):
    finding: dict[str, Any]
    matches: dict[str, Any]
    related_events: list[dict[str, Any]]
    ancestry: list[dict[str, Any]]
    #: Correlation findings: their base findings (first ``store.MAX_BASE_FINDINGS``).
    base_findings: list[BaseFinding] = Field(default_factory=list)


class TriageState(BaseModel):
    id: str
    finding: dict[str, Any]


#: Values a list filter may repeat at most (levels and statuses are a handful).
MAX_LIST_VALUES = 10
#: Characters of a rule, host or assignee filter.
MAX_FILTER_CHARS = 256


def create_app(
    settings: Settings | None = None,
    keys: KeyStore | None = None,
    es: Elasticsearch | None = None,
    docs: bool = False,
) -> FastAPI:
    """The app, with its settings, key store and Elasticsearch client (injectable for
    tests that run it against the real services). ``docs``: interactive Swagger UI at
    /docs, served from the installed ``swagger-ui-bundle`` (never a CDN)."""
    from detections.sinks.elasticsearch import connect

    settings = settings or Settings()
    if keys is None:
        if settings.api_keys_file is None:
            raise RuntimeError("set SIGSTREAM_API_KEYS_FILE to a YAML file of API keys")
        keys = KeyStore.from_file(settings.api_keys_file)
    # Every call gives up after the search budget plus a margin (the budget itself is
    # sent with each list search, so Elasticsearch stops working on it too).
    client = (es or connect(settings.es_hosts)).options(
        request_timeout=settings.api_search_timeout_s + 5
    )
    index, events_index = settings.findings_index, settings.events_index
    key_store = keys
    text_limits = TextLimits(
        max_chars=settings.api_max_q_chars,
        max_terms=settings.api_max_q_terms,
        max_fuzzy=settings.api_max_q_fuzzy,
        max_wildcards=settings.api_max_q_wildcards,
    )

    app = FastAPI(
        title="Sigstream triage API",
        version="1",
        description="Query and triage Sigstream findings. Authenticate with an API key.",
        docs_url=None,
        redoc_url=None,
    )

    app.state.keys = key_store
    # Outermost: authentication and the body cap run before FastAPI reads any body.
    app.add_middleware(
        RequestGuard,
        keys=key_store,
        limits=GuardLimits(settings.api_max_body_bytes, settings.api_body_timeout_s),
    )

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with where and why, never the input back: FastAPI's own handler encodes
        the input, and a body that is not UTF-8 made that encoding fail (a 500)."""
        errors = [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, 422)

    @app.exception_handler(BadRequestError)
    def es_refused(_: Request, exc: BadRequestError) -> JSONResponse:
        """A query Elasticsearch refuses is the caller's: 400 with its reason."""
        return JSONResponse({"detail": f"query refused by Elasticsearch: {exc.message}"}, 400)

    @app.exception_handler(TransportError)
    def es_unreachable(_: Request, exc: TransportError) -> JSONResponse:
        """Elasticsearch down or too slow: 503, try again later."""
        return JSONResponse(
            {"detail": f"Elasticsearch unavailable: {type(exc).__name__}"},
            503,
            headers={"retry-after": "5"},
        )

    @app.exception_handler(ApiError)
    def es_failed(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": f"Elasticsearch error: {exc.message}"}, 502)

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
        rule: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)] = None,
        host: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)] = None,
        status: Annotated[list[str] | None, Query()] = None,
        assignee: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)] = None,
        q: Annotated[
            str | None,
            Query(
                description='Free text (simple query string: + | - " * ~ ( )), bounded: '
                "characters, terms, fuzzy and wildcard terms (docs/triage.md)"
            ),
        ] = None,
        sort: Literal[tuple(store.SORTS)] = "last_seen",  # type: ignore[valid-type]
        order: Literal["asc", "desc"] = "desc",
        page: Annotated[int, Query(ge=1)] = 1,
        size: Annotated[int, Query(ge=1, le=store.MAX_PAGE_SIZE)] = 25,
    ) -> dict[str, Any]:
        """Findings of the caller's tenant, filtered, sorted and paged."""
        for name, values in (("level", level), ("status", status)):
            if values and len(values) > MAX_LIST_VALUES:
                raise HTTPException(400, f"at most {MAX_LIST_VALUES} {name} values")
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
            total, rows, timed_out = store.find_page(
                client, index, who, f, text_limits, settings.api_search_timeout_s
            )
        except QueryRejected as exc:
            raise HTTPException(400, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return {
            "total": total,
            "page": page,
            "size": size,
            "findings": rows,
            "timed_out": timed_out,
        }

    @app.get("/api/findings/{finding_id}", response_model=FindingDetail, tags=["findings"])
    def show_finding(
        finding_id: str,
        who: Reader,
        window_minutes: Annotated[int, Query(ge=0, le=1440)] = 10,
    ) -> dict[str, Any]:
        """A finding with its matching events, related host events and process ancestry.
        Why it matched is in ``finding.sigstream.match``; a correlation finding's base
        findings, each with its match, in ``base_findings``."""
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
            "base_findings": store.base_findings(client, index, who, f),
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

    # --- page views (issue 21, triage page): overview and sensor health. Routes and
    # bodies live in triage/views.py and triage/dashboard.py; this block only mounts them.
    from triage import views

    views.mount(
        app,
        client,
        index=index,
        sensors_index=settings.sensors_index,
        timeout_s=settings.api_search_timeout_s,
        reader=caller,
    )
    # --- end of page views ------------------------------------------------------------
    _mount_verdicts(app, client, index)

    @app.get("/", include_in_schema=False)
    def page(_: Request) -> FileResponse:
        return FileResponse(WEB / "index.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    if docs:
        _mount_docs(app)
    # Outermost of all: every request is counted, also those the guard refuses. The
    # metrics are served on their own listener (docs/metrics.md), never behind the key.
    from triage.metrics import ApiMetrics, MetricsMiddleware

    app.state.metrics = ApiMetrics()
    app.add_middleware(
        MetricsMiddleware, metrics=app.state.metrics, routes=lambda: app.router.routes
    )
    return app


# --- verdict feedback (issue 22): false-positive rates from closed findings -------------


class RuleFpRate(BaseModel):
    rule_id: str
    rule: str
    closed: int
    true_positive: int
    benign: int
    false_positive: int
    #: Matches (events) of the closed findings, per resolution.
    matches: dict[str, int]
    #: false_positive / closed (None when nothing is closed).
    fp_rate: float | None
    #: (false_positive + benign) / closed.
    noise_rate: float | None
    hosts: list[dict[str, Any]]


class FpRates(BaseModel):
    rules: list[RuleFpRate]


def _mount_verdicts(app: FastAPI, client: Elasticsearch, index: str) -> None:
    """``GET /api/rules/fp-rate``: per rule and per host, how the caller's tenant closed
    its findings (the dispositions analysts record with ``/close``)."""

    @app.get("/api/rules/fp-rate", response_model=FpRates, tags=["rules"])
    def fp_rate(
        who: Reader,
        since: datetime | None = None,
        rule: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)] = None,
        top: Annotated[int, Query(ge=1, le=store.MAX_FP_RATE_ROWS)] = 50,
    ) -> dict[str, Any]:
        """False-positive rate per rule and per host over the tenant's closed findings
        (last seen since ``since``), highest rate first."""
        return {"rules": store.fp_rates(client, index, who, since, rule or None, top)}


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI 5 (OpenAPI 3.1, which FastAPI writes) from the files the installed
    ``fastapi-offline`` package ships, started by a script file of ours (no inline
    script, so the strict CSP holds)."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    app.mount("/docs/assets", StaticFiles(directory=assets), name="docs")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<title>Sigstream triage API</title>"
            "<link rel='stylesheet' href='/docs/assets/swagger-ui.css'></head>"
            "<body><div id='swagger-ui'></div>"
            "<script src='/docs/assets/swagger-ui-bundle.js'></script>"
            "<script src='/static/docs.js'></script></body></html>"
        )
