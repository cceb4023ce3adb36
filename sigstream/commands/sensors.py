"""``sigstream sensors``: the fleet as the sensor-health query sees it.

Reads the sensors index (one status document per sensor, written by
``detections.health.query``); the query building and row formatting are pure, the
Elasticsearch call is at the edge.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from common.settings import RESERVED_TENANT_PREFIX, get_settings

#: Worst first: silent sensors are what an operator looks at first.
STATE_ORDER = {"silent": 0, "degraded": 1, "healthy": 2}
STATES = tuple(STATE_ORDER)


def sensors_query(
    state: str | None, tenant: str | None, include_reserved: bool = False
) -> dict[str, Any]:
    """Sensors in ``state`` of ``tenant``; without a tenant, Sigstream's own reserved
    tenants (the canary sensor) are left out unless ``include_reserved``."""
    filters: list[dict[str, Any]] = []
    if state:
        filters.append({"term": {"state": state}})
    if tenant:
        filters.append({"term": {"tenant_id": tenant}})
    elif not include_reserved:
        filters.append({"bool": {"must_not": [{"prefix": {"tenant_id": RESERVED_TENANT_PREFIX}}]}})
    return {"bool": {"filter": filters}} if filters else {"match_all": {}}


def _age(iso: str | None, now: datetime) -> str:
    """``42s`` / ``5m`` / ``3h`` / ``2d`` ago."""
    if not iso:
        return "never"
    seconds = (now - datetime.fromisoformat(iso.replace("Z", "+00:00"))).total_seconds()
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def sort_rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        docs,
        key=lambda d: (STATE_ORDER.get(d.get("state", ""), 9), d["tenant_id"], d["sensor_id"]),
    )


def sources_cell(sources: dict[str, str] | None) -> str:
    """The event sources' status from the sensor's latest heartbeat: ``3 ok`` when all
    are fine, else the ones that are not (``files: degraded: queue full``) first."""
    if not sources:
        return ""
    bad = [f"{name}: {status}" for name, status in sorted(sources.items()) if status != "ok"]
    ok = len(sources) - len(bad)
    return "; ".join(bad + ([f"{ok} ok"] if ok else []))


def table_row(doc: dict[str, Any], now: datetime) -> list[str]:
    """One table row: tenant, sensor, host, last seen, events, rate, gaps, resets, skew,
    sources, state."""
    skew = doc.get("skew_s")
    gaps = f"{doc.get('gaps', 0)} ({doc.get('missing', 0)} missing)" if doc.get("gaps") else "0"
    return [
        doc["tenant_id"],
        doc["sensor_id"],
        doc.get("host") or "",
        _age(doc.get("last_seen"), now),
        f"{doc.get('events', 0):,}",
        f"{doc.get('rate', 0.0):.2f}/s",
        gaps,
        str(doc.get("resets", 0)),
        "" if skew is None else f"{skew:+.0f}s",
        sources_cell(doc.get("sources")),
        doc.get("state", "?"),
    ]


def fetch_sensors(
    es: Any,
    index: str,
    state: str | None,
    tenant: str | None,
    limit: int,
    include_reserved: bool = False,
) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, up to ``limit`` documents, worst state first): one search per
    state, so silent sensors are never cut off by a page of healthy ones."""
    total = 0
    docs: list[dict[str, Any]] = []
    for wanted in (state,) if state else STATES:
        resp = es.search(
            index=index,
            query=sensors_query(wanted, tenant, include_reserved),
            size=max(limit - len(docs), 0),
            sort=[{"tenant_id": "asc"}, {"sensor_id": "asc"}],
            track_total_hits=True,
        )
        total += int(resp["hits"]["total"]["value"])
        docs += [h["_source"] for h in resp["hits"]["hits"]]
    return total, sort_rows(docs)


_COLOURS = {"silent": "red", "degraded": "yellow", "healthy": "green"}


def sensors_cmd(
    state: Annotated[
        str | None,
        typer.Option(help=f"Only sensors in this state: {', '.join(STATES)}."),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's sensors.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show (worst state first).")] = 200,
    index: Annotated[
        str | None, typer.Option(help="Sensors index (default: SIGSTREAM_SENSORS_INDEX).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    include_canary: Annotated[
        bool,
        typer.Option("--include-canary", help="Show the canary sensor too (docs/canaries.md)."),
    ] = False,
) -> None:
    """Sensors with last seen, event rate, sequence gaps, resets, clock skew, event
    sources' status (`sigstream sensor`'s heartbeats) and health state (healthy / degraded /
    silent), as the `detect` job's sensor-health query saw them."""
    from elasticsearch import NotFoundError

    from detections.sinks.elasticsearch import connect

    console = Console(width=None if typer.get_text_stream("stdout").isatty() else 160)
    if state is not None and state not in STATE_ORDER:
        raise typer.BadParameter(f"state must be one of {', '.join(STATES)}", param_hint="--state")
    s = get_settings()
    index = index or s.sensors_index
    es = connect(s.es_hosts)
    try:
        total, docs = fetch_sensors(es, index, state, tenant, limit, include_canary)
    except NotFoundError:
        typer.echo(
            f"no sensors index '{index}' yet: it is written by `sigstream detect` (sensor "
            "health is on unless --no-sensor-health) once events arrive.",
            err=True,
        )
        raise typer.Exit(1) from None
    finally:
        es.close()
    if as_json:
        typer.echo(json.dumps({"total": total, "sensors": docs}, indent=2))
        return
    now = datetime.now(UTC)
    table = Table(
        title=f"Sensors: {total:,}" + (f" (showing {len(docs)})" if total > len(docs) else "")
    )
    columns = ("tenant", "sensor", "host", "last seen", "events", "rate", "gaps", "resets")
    for col in (*columns, "skew", "sources", "state"):
        table.add_column(col, justify="right" if col in ("events", "rate", "resets") else "left")
    for doc in docs:
        row = table_row(doc, now)
        colour = _COLOURS.get(row[-1], "white")
        row[-1] = f"[{colour}]{row[-1]}[/{colour}]"
        table.add_row(*row)
    console.print(table)


app = typer.Typer()
app.command(
    "sensors",
    short_help="Fleet health: last seen, rate, gaps, resets, skew, sources, state.",
)(sensors_cmd)
