"""Field drift's state and judgement: fold observations per (tenant, route, sensor
version), snapshot a baseline, and say which fields stopped arriving or changed type since.
Pure (plain dicts, the Elasticsearch documents of ``detections.drift.store``; no I/O).

Each (tenant, route, version) has its own state ("a bucket"). A bucket is judged against
its own baseline when the baseline has it with at least ``min_events`` events, else against
the route's baseline across every version (``across_versions``): a version new since the
baseline (a rollout) that lacks a field the older versions send is the rename case, and is
raised while the old sensors still send the field.

A route's state is cumulative: events seen (``rows``) and, per field, events carrying it,
how many of those were numbers and booleans, when it was first and last seen, and ``at``,
the route's event counter right after the last batch that carried it. A baseline is a
copy of these counters at one moment. "Since the baseline" is the difference.

A field is **gone** when the route has had ``since`` events without it (``rows - at``) and
the baseline says it should have been seen about ``since * p`` times (``p``: the share of
the route's events that carried it in the baseline) with ``since * p >= expected`` and
``since >= min_events``. A route without traffic has ``since == 0``: it never raises. A
field sent by 1 % of events needs 100x the events of one sent by all of them.
A field **changed type** when a type it never had in the baseline (string, number,
boolean) makes up at least ``type_share`` of its values since.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detections.drift.observe import Observation, other_route
from detections.drift.versions import ACROSS, OTHER, UNKNOWN

#: Per field: [present, numbers, booleans, first_seen, last_seen, at]
PRESENT, NUMBERS, BOOLEANS, FIRST, LAST, AT = range(6)
#: Bound of a route's state: a hostile sensor's random keys must not grow it without end.
MAX_STATE_FIELDS = 2048
MAX_STATE_SENSORS = 1024
#: Versions of one (tenant, route) kept apart; further ones share the bucket ``other``.
MAX_ROUTE_VERSIONS = 32
#: Routes of one tenant kept apart (product and service are free text from the sensors);
#: observations of further ones go to the route ``(other, <event type>, other)``.
MAX_TENANT_ROUTES = 512
TYPES = ("string", "number", "boolean")


@dataclass(frozen=True)
class DriftConfig:
    expected: float = 20.0  # occurrences the baseline predicts were missed
    min_events: int = 50  # events of the route since the field was last seen
    type_share: float = 0.5  # share of values since the baseline of a new type
    min_share: float = 0.001  # baseline fields rarer than this are not judged


def route_name(route: Iterable[str | None]) -> str:
    """``windows/process_creation/-``: product, event type, service (``-``: none)."""
    return "/".join(part or "-" for part in route)


def new_route_state(
    tenant: str, route: tuple[str | None, str | None, str | None], version: str = UNKNOWN
) -> dict[str, Any]:
    return {
        "kind": "route",
        "tenant_id": tenant,
        "route": route_name(route),
        "version": version,
        "product": route[0],
        "event_type": route[1],
        "service": route[2],
        "rows": 0,
        "first_seen": None,
        "last_seen": None,
        "fields": {},
        "sensors": {},
        "cut": 0,
    }


def fold(state: dict[str, Any], obs: Observation, now: float) -> dict[str, Any]:
    """Add one observation (one task's slice of a micro-batch) to a route's state."""
    state["rows"] += obs.rows
    rows = state["rows"]
    state["first_seen"] = state["first_seen"] or now
    state["last_seen"] = now
    state["cut"] = state.get("cut", 0) + obs.cut
    if obs.routes_cut:
        state["routes_cut"] = state.get("routes_cut", 0) + obs.routes_cut
    fields = state["fields"]
    for name, (present, numbers, booleans) in obs.fields.items():
        f = fields.get(name)
        if f is None:
            if len(fields) >= MAX_STATE_FIELDS:
                state["cut"] += 1
                continue
            f = fields[name] = [0, 0, 0, now, now, rows]
        f[PRESENT] += present
        f[NUMBERS] += numbers
        f[BOOLEANS] += booleans
        f[LAST] = now
        f[AT] = rows
    sensors = state["sensors"]
    for sensor in obs.sensors:
        sensors[sensor] = rows
    if len(sensors) > MAX_STATE_SENSORS:  # keep the most recent
        keep = sorted(sensors.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_STATE_SENSORS]
        state["sensors"] = dict(keep)
    return state


def baseline_of(state: Mapping[str, Any], baseline_id: str, set_at: float) -> dict[str, Any]:
    """The baseline document of a route: its counters now."""
    return {
        "kind": "baseline-route",
        "tenant_id": state["tenant_id"],
        "route": state["route"],
        "version": state.get("version") or UNKNOWN,
        "product": state["product"],
        "event_type": state["event_type"],
        "service": state["service"],
        "baseline_id": baseline_id,
        "set_at": set_at,
        "rows": state["rows"],
        "fields": {k: v[:3] for k, v in state["fields"].items()},
    }


def version_of(doc: Mapping[str, Any]) -> str:
    """A route or baseline document's version (documents written before versions:
    ``unknown``, which is what they were)."""
    return str(doc.get("version") or UNKNOWN)


def across_versions(baselines: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The baseline of a route across every version: the versions' counters summed."""
    docs = list(baselines)
    if not docs:
        return None
    fields: dict[str, list[int]] = {}
    for doc in docs:
        for name, counts in (doc.get("fields") or {}).items():
            total = fields.setdefault(name, [0, 0, 0])
            for i in (PRESENT, NUMBERS, BOOLEANS):
                total[i] += counts[i]
    first = docs[0]
    return {
        **{k: first.get(k) for k in ("kind", "tenant_id", "route", "product", "event_type")},
        **{k: first.get(k) for k in ("service", "baseline_id", "set_at")},
        "version": ACROSS,
        "rows": sum(int(d.get("rows") or 0) for d in docs),
        "fields": fields,
    }


def reference_for(
    own: Mapping[str, Any] | None, across: Mapping[str, Any] | None, cfg: DriftConfig
) -> tuple[Mapping[str, Any] | None, bool]:
    """What a bucket is judged against: its own baseline when that has ``min_events``
    events, else the route's across versions (``True``); (None, False): nothing."""
    if own is not None and (own.get("rows") or 0) >= cfg.min_events:
        return own, False
    if across is not None and (across.get("rows") or 0) > 0:
        return across, True
    return own, False


def types_of(present: float, numbers: float, booleans: float) -> dict[str, float]:
    """Values per type (strings are the rest)."""
    return {"string": present - numbers - booleans, "number": numbers, "boolean": booleans}


@dataclass(frozen=True)
class Drift:
    """A field of a route that stopped arriving (``gone``) or changed type."""

    kind: str  # "gone" or "type_changed"
    tenant: str
    route: str
    field: str
    baseline_id: str
    version: str = UNKNOWN  # the sensor version whose events lack it (its bucket)
    against: str = "version"  # "version": its own baseline; "route": across versions
    still_sent_by: tuple[str, ...] = ()  # other versions of the route still sending it
    since: int = 0  # route events since the field was last seen (gone)
    expected: float = 0.0  # how many of them the baseline predicts carried it
    last_seen: float | None = None
    before: tuple[str, ...] = ()  # types in the baseline
    after: tuple[str, ...] = ()  # types since
    sensors: tuple[str, ...] = ()  # sensors that sent the route since
    versions: tuple[str, ...] = ()  # their agent versions ("unknown": no heartbeat seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tenant": self.tenant,
            "route": self.route,
            "field": self.field,
            "baseline_id": self.baseline_id,
            "version": self.version,
            "against": self.against,
            "still_sent_by": list(self.still_sent_by),
            "since": self.since,
            "expected": round(self.expected, 1),
            "last_seen": self.last_seen,
            "before": list(self.before),
            "after": list(self.after),
            "sensors": list(self.sensors),
            "versions": list(self.versions),
        }


def drifts(
    state: Mapping[str, Any],
    baseline: Mapping[str, Any],
    cfg: DriftConfig,
    versions: Mapping[str, str] | None = None,
    own: Mapping[str, Any] | None = None,
    across: bool = False,
) -> list[Drift]:
    """Fields of ``baseline`` gone from the bucket ``state`` or changed type since, by
    field name. ``baseline`` gives the shares and types expected; it is the bucket's own
    baseline, or with ``across`` the route's across versions, and then ``own`` is the
    bucket's own (None: the bucket is new since the baseline), whose counters are where
    "since the baseline" starts."""
    rows_b = baseline.get("rows") or 0
    if not rows_b:
        return []
    if not across:
        own = baseline
    start = int((own or {}).get("rows") or 0)
    own_fields = (own or {}).get("fields") or {}
    out: list[Drift] = []
    fields = state.get("fields") or {}
    for name, counts in sorted((baseline.get("fields") or {}).items()):
        present_b = counts[PRESENT]
        share = present_b / rows_b
        if present_b <= 0 or share < cfg.min_share:
            continue
        now = fields.get(name)
        at = now[AT] if now else start
        since = int(state.get("rows", 0) - at)
        common = {
            "tenant": str(state["tenant_id"]),
            "route": str(state["route"]),
            "field": name,
            "baseline_id": str(baseline["baseline_id"]),
            "version": version_of(state),
            "against": "route" if across else "version",
        }
        if since >= cfg.min_events and since * share >= cfg.expected:
            sensors = sorted(s for s, seen in (state.get("sensors") or {}).items() if seen > at)
            known = versions or {}
            out.append(
                Drift(
                    kind="gone",
                    since=since,
                    expected=since * share,
                    last_seen=now[LAST] if now else None,
                    sensors=tuple(sensors),
                    versions=tuple(sorted({known.get(s, "unknown") for s in sensors})),
                    **common,
                )
            )
            continue
        if now is None:
            continue
        before = types_of(*counts[:3])
        mine = own_fields.get(name) or (0, 0, 0)
        after = types_of(*(now[i] - mine[i] for i in (PRESENT, NUMBERS, BOOLEANS)))
        total = sum(after.values())
        if total <= 0:
            continue
        new = [t for t in TYPES if before[t] <= 0 and after[t] / total >= cfg.type_share]
        if new:
            out.append(
                Drift(
                    kind="type_changed",
                    last_seen=now[LAST],
                    before=tuple(t for t in TYPES if before[t] > 0),
                    after=tuple(t for t in TYPES if after[t] > 0),
                    **common,
                )
            )
    return out


def still_sending(
    states: Iterable[Mapping[str, Any]], name: str, version: str, cfg: DriftConfig
) -> tuple[str, ...]:
    """Versions of a route, other than ``version``, whose buckets carried field ``name``
    within their last ``min_events`` events (``states``: the route's buckets)."""
    out = set()
    for st in states:
        v = version_of(st)
        f = (st.get("fields") or {}).get(name)
        if v != version and f and f[PRESENT] > 0 and st.get("rows", 0) - f[AT] < cfg.min_events:
            out.add(v)
    return tuple(sorted(out))


def judge(
    states: Sequence[Mapping[str, Any]],
    baselines: Mapping[tuple[str, str, str], Mapping[str, Any]],
    cfg: DriftConfig,
    tenant_versions: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Drift]:
    """Every drift of the buckets ``states`` (route documents, one per (tenant, route,
    version)); ``baselines`` by (tenant, route, version), ``*`` across versions
    (``detections.drift.store.current_baselines``); ``tenant_versions``: tenant ->
    sensor -> version. A gone field names the route's other versions still sending it."""
    by_route: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for st in states:
        by_route.setdefault((str(st["tenant_id"]), str(st["route"])), []).append(st)
    out: list[Drift] = []
    for st in states:
        tenant, route, version = str(st["tenant_id"]), str(st["route"]), version_of(st)
        own = baselines.get((tenant, route, version))
        reference, across = reference_for(own, baselines.get((tenant, route, ACROSS)), cfg)
        if reference is None:
            continue
        known = (tenant_versions or {}).get(tenant)
        for d in drifts(st, reference, cfg, known, own=own, across=across):
            if d.kind == "gone":
                others = still_sending(by_route[(tenant, route)], d.field, version, cfg)
                d = dataclasses.replace(d, still_sent_by=others)
            out.append(d)
    return out


@dataclass
class TenantState:
    """What the drift stage keeps per tenant beside its routes: when it first saw the
    tenant, sensors' agent versions (from their heartbeats) and the current baseline."""

    tenant: str
    first_seen: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    baseline_id: str | None = None
    baseline_set_at: float | None = None
    baseline_how: str | None = None
    # route name -> the sensor versions kept apart on it (at most MAX_ROUTE_VERSIONS)
    route_versions: dict[str, list[str]] = field(default_factory=dict)
    routes_cut: int = 0  # observations sent to an ``other`` route (MAX_TENANT_ROUTES)

    def to_doc(self) -> dict[str, Any]:
        return {
            "kind": "tenant",
            "tenant_id": self.tenant,
            "first_seen": self.first_seen,
            "versions": self.versions,
            "route_versions": self.route_versions,
            "routes_cut": self.routes_cut,
            "baseline_id": self.baseline_id,
            "set_at": self.baseline_set_at,
            "how": self.baseline_how,
        }

    @classmethod
    def of(cls, doc: Mapping[str, Any] | None, tenant: str) -> TenantState:
        if not doc:
            return cls(tenant)
        return cls(
            tenant=tenant,
            first_seen=doc.get("first_seen"),
            versions=dict(doc.get("versions") or {}),
            baseline_id=doc.get("baseline_id"),
            baseline_set_at=doc.get("set_at"),
            baseline_how=doc.get("how"),
            route_versions={
                str(k): [str(x) for x in v][:MAX_ROUTE_VERSIONS]
                for k, v in (doc.get("route_versions") or {}).items()
                if isinstance(v, list)
            },
            routes_cut=int(doc.get("routes_cut") or 0),
        )

    def admit(self, obs: Observation, max_routes: int = MAX_TENANT_ROUTES) -> Observation:
        """``obs``, or, when its route is new and the tenant already keeps ``max_routes``
        routes apart (``route_versions``), ``obs`` on ``other_route`` (counted in
        ``routes_cut``, here and in the ``other`` route's state)."""
        name = route_name(obs.route)
        if name in self.route_versions or len(self.route_versions) < max_routes:
            return obs
        other = other_route(obs.route)
        if other == obs.route:
            return obs
        self.routes_cut += 1
        return dataclasses.replace(obs, route=other, routes_cut=obs.routes_cut + 1)

    def bucket(self, route: str, version: str) -> str:
        """The version bucket of ``route`` an observation of ``version`` goes to: its own,
        or ``other`` once the route keeps MAX_ROUTE_VERSIONS versions apart."""
        kept = self.route_versions.setdefault(route, [])
        if version in kept:
            return version
        if len(kept) >= MAX_ROUTE_VERSIONS:
            return OTHER
        kept.append(version)
        return version

    def observe(self, obs: Observation, now: float) -> None:
        self.first_seen = self.first_seen or now
        self.versions.update(obs.versions)
        if len(self.versions) > MAX_STATE_SENSORS * 8:
            self.versions = dict(list(self.versions.items())[-MAX_STATE_SENSORS * 8 :])

    def baseline_due(self, now: float, after_s: float) -> bool:
        """No baseline yet and the tenant has been observed for ``after_s`` (0: never)."""
        return (
            self.baseline_id is None
            and after_s > 0
            and self.first_seen is not None
            and now - self.first_seen >= after_s
        )


def baseline_id_for(tenant: str, set_at: float) -> str:
    """A baseline's id: when it was set (readable, and unique per tenant)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(set_at, tz=UTC).strftime("%Y%m%dT%H%M%S.%fZ")
