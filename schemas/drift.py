"""The field-drift index: the drift stage's state per (tenant, route, sensor version), per
tenant, and the
baselines (docs/field-drift.md). Its Elasticsearch mappings are generated from this model
(``schemas.generate.es_mappings``); the per-field counters are kept in ``_source`` and not
indexed (field names come from sensors: a map of them must not grow the mapping)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DriftDocKind = Literal["route", "tenant", "baseline-route"]


class DriftDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: DriftDocKind
    tenant_id: str
    # route and baseline-route documents: the observed logsource
    route: str | None = None
    # route and baseline-route documents: the sensors' agent version ("unknown": no
    # heartbeat known; "*": a baseline across every version of the route)
    version: str | None = None
    product: str | None = None
    event_type: str | None = None
    service: str | None = None
    rows: int = 0  # events of the route (cumulative; at the baseline for baseline-route)
    first_seen: float | None = None  # epoch seconds (processing time of the drift stage)
    last_seen: float | None = None
    cut: int = 0  # fields left out by the bounds
    # route documents of an ``other`` route: routes folded into it (the route bounds);
    # tenant documents: observations sent to an ``other`` route by MAX_TENANT_ROUTES
    routes_cut: int = 0
    # field -> [present, numbers, booleans, first_seen, last_seen, at] (route);
    # field -> [present, numbers, booleans] (baseline-route)
    fields: dict[str, Any] = Field(default_factory=dict)
    sensors: dict[str, Any] = Field(default_factory=dict)  # sensor -> route counter when seen
    # tenant documents: sensor -> agent version (heartbeats), the current baseline
    versions: dict[str, Any] = Field(default_factory=dict)
    route_versions: dict[str, Any] = Field(default_factory=dict)  # route -> [versions]
    baseline_id: str | None = None
    set_at: float | None = None
    how: str | None = None  # "manual" (sigstream rules drift --set-baseline) or "auto"
