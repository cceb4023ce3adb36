"""The triage page's read-only views over the API: overview and sensor health (a
correlation's base findings come with its detail, ``GET /api/findings/{id}``). Mounted
by ``triage.api.create_app`` (its "page views" block); the request bodies are built in
``triage.dashboard`` (pure).

Every route is tenant-scoped by the caller's key (the guard checked it before the
request got here), bounded (aggregations only, capped pages) and carries the API's
search budget as the Elasticsearch ``timeout``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from elasticsearch import Elasticsearch, NotFoundError
from fastapi import Depends, FastAPI, HTTPException, Query

from detections.sinks.indices import groups_index
from triage import dashboard
from triage.auth import Caller


def _parse(value: str | None) -> datetime | None:
    return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _aware(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC (as Elasticsearch would read it)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def mount(
    app: FastAPI,
    client: Elasticsearch,
    index: str,
    sensors_index: str,
    timeout_s: float,
    reader: Callable[..., Caller],
) -> None:
    """Add the page's view routes to ``app``; ``reader`` is the API's caller dependency."""
    groups = groups_index(index)
    as_caller = Depends(reader)  # the API key's caller, as on every API route
    budget = {"timeout": f"{int(timeout_s * 1000)}ms"}

    @app.get("/api/overview", tags=["page"])
    def overview(
        since: datetime | None = None,
        until: datetime | None = None,
        top: Annotated[int, Query(ge=1, le=dashboard.MAX_TOP)] = 10,
        who: Caller = as_caller,
    ) -> dict[str, Any]:
        """Counts of the caller's findings in a time range (by first seen; default: all):
        over time by level (at most 60 bars), by status and kind, top rules, hosts, ATT&CK
        tactics and techniques."""
        since, until = _aware(since), _aware(until)
        if since and until and since > until:
            raise HTTPException(422, "since is after until")
        try:
            start, end = since, until
            if start is None or end is None:
                span = client.search(
                    index=groups, **budget, **dashboard.span_query(who, since, until)
                )
                aggs = span.get("aggregations") or {}
                start = start or _parse(aggs.get("first", {}).get("value_as_string"))
                end = end or _parse(aggs.get("last", {}).get("value_as_string"))
                end = end or datetime.now(UTC)
                start = start or end
            interval = dashboard.interval_for(start, end)
            body = dashboard.overview_query(who, start, end, interval, top, timeout_s)
            resp = client.search(index=groups, **body)
        except NotFoundError:
            resp, interval, start, end = {}, "1d", since, until
        return {
            "since": start.isoformat() if start else None,
            "until": end.isoformat() if end else None,
            **dashboard.shape_overview(resp, interval),
        }

    @app.get("/api/sensors", tags=["page"])
    def sensors(
        state: Annotated[str | None, Query(pattern="^(silent|degraded|healthy)$")] = None,
        page: Annotated[int, Query(ge=1, le=1000)] = 1,
        size: Annotated[int, Query(ge=1, le=dashboard.MAX_SENSOR_PAGE)] = 50,
        who: Caller = as_caller,
    ) -> dict[str, Any]:
        """The caller's sensors worst first (silent, degraded, healthy) with what is wrong
        with each, counts by state, and open sensor-health findings by kind (silent, gap,
        reset, stopped, tampered, source lost, skew)."""
        try:
            health = dashboard.shape_health(
                client.search(index=groups, **budget, **dashboard.health_findings_query(who))
            )
        except NotFoundError:
            health = dashboard.shape_health({})
        try:
            counts = dashboard.shape_counts(
                client.search(index=sensors_index, **budget, **dashboard.sensor_counts_query(who))
            )
            rows: list[dict[str, Any]] = []
            for s, start, n in dashboard.plan_sensor_page(counts, state, page, size):
                resp = client.search(
                    index=sensors_index, **budget, **dashboard.sensors_query(who, s, start, n)
                )
                rows += [h["_source"] for h in resp["hits"]["hits"]]
        except NotFoundError:
            counts, rows = {s: 0 for s in dashboard.SENSOR_STATES}, []
        for row in rows:
            row["problems"] = dashboard.sensor_problems(row)
        total = counts.get(state, 0) if state else sum(counts.values())
        return {
            "total": total,
            "page": page,
            "size": size,
            "counts": counts,
            "sensors": rows,
            "health": health,
        }
