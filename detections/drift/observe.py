"""Which fields arrive, per logsource and sensor version: what the detection pass derives
for field drift. Pure (pyarrow and numpy, no Spark, no I/O).

Each detect task builds a ``FieldObservations``, ``add``s every Arrow batch of valid events
of its slice, and at the end its ``records()`` go to the observations topic (setting
``drift_topic``, default ``sigstream.field-observations``), keyed by tenant and route, so
the drift stage (``detections.drift.stage``) folds them into its per-route state.

Rows are grouped by (tenant, route, sensor version). Events carry no version: a row's
version is its sensor's, from the (tenant, sensor) -> version map the driver ships to the
task (``detections.drift.versions``), overridden by the heartbeats the task itself sees
(each batch's heartbeats are read before its rows are grouped, so a sensor's heartbeat
labels its events of the same batch and of the task's later batches); ``unknown`` for a
sensor without a known heartbeat. Beyond ``MAX_TASK_VERSIONS`` distinct versions in one
task, further ones are labelled ``other``.

The work per batch is a few vectorized passes over columns the batch already holds (the
engine's inputs: every field a rule reads, as a typed column or as a key of ``extra``):
a column's validity bitmap counted per route (``np.bincount``), ``extra``'s keys counted
per route, and two anchored RE2 scans per text column that say whether its values look
like numbers or booleans. A typed column no rule reads is not in the batch and is not
observed: it cannot break a rule. Columns that are null on every row cost nothing.

Record format, version 2 (compact JSON, one object per (tenant, route, version) per
task; version 1, without ``ver``, is still read, as version ``unknown``)::

    {"v": 2, "tenant": "acme",
     "route": ["windows", "process_creation", null],  # logsource product, event type,
                                                       # service (lower case)
     "ver": "sigstream-sensor/1.4",                    # the sensors' agent version
     "n": 1200,                                        # events of the route
     "f": {"CommandLine": [1200, 0, 0], ...},          # field -> [events carrying it,
                                                       # of which numbers, of which booleans]
     "s": ["ws01", ...],                               # sensors (at most MAX_SENSORS)
     "hb": {"ws01": "sigstream-sensor/1.4"},           # heartbeats: sensor -> agent_version
                                                       # (sanitised: ``version_label``)
     "cut": 0,                                         # fields left out (MAX_FIELDS bound)
     "rcut": 0}                                        # routes folded into this ``other``
                                                       # route (MAX_TASK_ROUTES bound)

Records written before ``sn`` (a sensor count nothing read) was dropped still decode: the
key is ignored.

Routes are bounded too: a route's product and service are free text from the sensors, so
each is cut to ``MAX_ROUTE_PART_LEN`` characters (control characters, the key separator
among them, replaced by ``?``), and beyond ``MAX_TASK_ROUTES`` distinct (tenant, route)
pairs in one task, further routes go to the tenant's route
``(other, <event type>, other)`` (``other_route``), whose record counts in ``rcut`` the
distinct routes folded into it.

The type of a value is what is left of it after the parse: typed number columns
(``EventID``) are numbers; text (the first ``SAMPLE`` values per column and route in each
batch, counts scaled) is a number when it reads as one (``^-?[0-9]+(\\.[0-9]+)?$``),
a boolean when it is ``true``/``false`` (any case), else a string. A JSON null and an absent
key are the same after the parse: both are "absent".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detections.drift.versions import (
    MAX_VERSION_LEN,
    OTHER,
    SEP,
    UNKNOWN,
    sensor_key,
    version_label,
)
from schemas.events import Envelope
from schemas.generate import event_columns

RECORD_VERSION = 2
#: Record versions ``decode`` reads (1: before records named a sensor version).
READABLE_VERSIONS = (1, 2)
#: Bounds of one record (a hostile sensor sending random keys must not grow the state).
MAX_FIELDS = 512
MAX_SENSORS = 256
#: Distinct sensor versions one task groups by (further ones: ``other``).
MAX_TASK_VERSIONS = 64
#: Characters of a route's product and service kept (free text from the sensors).
MAX_ROUTE_PART_LEN = 64
#: Distinct (tenant, route) pairs one task observes (further ones: ``other_route``).
MAX_TASK_ROUTES = 256
#: Values per typed column and route whose type is read in each batch (the first ones):
#: a field's type is a property of the field, and reading every value cost 3/4 of the
#: observation's time. Up to this many values per route the counts are exact, above it
#: scaled from the sample.
SAMPLE = 32
_NUMBER = r"^-?[0-9]+(\.[0-9]+)?$"
_BOOL = r"^(?i)(true|false)$"
_HEADER = ("EventID", "Channel", "Provider_Name")


@cache
def observed_columns() -> frozenset[str]:
    """Event columns that are Sigma fields (the envelope's bookkeeping is not)."""
    envelope = set(Envelope.model_fields) - set(_HEADER)
    return frozenset(set(event_columns()) - envelope - {"event_type", "extra"})


def route_key(
    tenant: str, route: tuple[str | None, str | None, str | None], version: str = UNKNOWN
) -> bytes:
    """The Kafka key of a route's observations (of one sensor version)."""
    return SEP.join([tenant, *(part or "" for part in route), version]).encode()


def other_route(
    route: tuple[str | None, str | None, str | None],
) -> tuple[str | None, str | None, str | None]:
    """The route a route beyond a bound goes to: its event type kept (a bounded set),
    product and service ``other``."""
    return (OTHER, route[1], OTHER)


@dataclass
class Observation:
    """One (tenant, route, sensor version)'s fields in one task's slice of a micro-batch."""

    tenant: str
    route: tuple[str | None, str | None, str | None]
    version: str = UNKNOWN
    rows: int = 0
    fields: dict[str, list[int]] = field(default_factory=dict)  # [present, numbers, bools]
    sensors: set[str] = field(default_factory=set)
    versions: dict[str, str] = field(default_factory=dict)
    cut: int = 0
    routes_cut: int = 0  # distinct routes folded into this (``other``) route

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": RECORD_VERSION,
                "tenant": self.tenant,
                "route": list(self.route),
                "ver": self.version,
                "n": self.rows,
                "f": self.fields,
                "s": sorted(self.sensors),
                "hb": self.versions,
                "cut": self.cut,
                "rcut": self.routes_cut,
            },
            separators=(",", ":"),
            sort_keys=True,
            ensure_ascii=False,
        )


class ObservationError(ValueError):
    """An observations-topic record this reader does not understand."""


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ObservationError(f"not a count: {v!r}")
    return v


def decode(raw: bytes | str) -> Observation:
    """One observations-topic value -> ``Observation``; raises ``ObservationError``."""
    try:
        obj = json.loads(raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ObservationError(f"not JSON: {exc}") from exc
    if (
        not isinstance(obj, dict)
        or type(obj.get("v")) is not int
        or obj["v"] not in READABLE_VERSIONS
    ):
        raise ObservationError(
            f"not a field observation of a version this reader knows {READABLE_VERSIONS}"
        )
    try:
        tenant, route = obj["tenant"], obj["route"]
        if not isinstance(tenant, str) or not isinstance(route, list) or len(route) != 3:
            raise ObservationError("tenant must be text and route three parts")
        if any(p is not None and not isinstance(p, str) for p in route):
            raise ObservationError("route parts must be text or null")
        version = obj.get("ver", UNKNOWN) if obj["v"] >= 2 else UNKNOWN
        if not isinstance(version, str) or not version or len(version) > MAX_VERSION_LEN:
            raise ObservationError("ver must be text of 1 to MAX_VERSION_LEN characters")
        fields = obj.get("f") or {}
        if not isinstance(fields, dict) or len(fields) > MAX_FIELDS:
            raise ObservationError("f must be an object of at most MAX_FIELDS fields")
        versions = obj.get("hb") or {}
        sensors = obj.get("s") or []
        if not isinstance(versions, dict) or not isinstance(sensors, list):
            raise ObservationError("hb must be an object and s a list")
        return Observation(
            tenant=tenant,
            route=(route[0], route[1], route[2]),
            version=version,
            rows=_count(obj["n"]),
            fields={str(k): [_count(v[0]), _count(v[1]), _count(v[2])] for k, v in fields.items()},
            sensors={str(s) for s in sensors[:MAX_SENSORS]},
            versions={
                str(k): label
                for k, v in list(versions.items())[:MAX_SENSORS]
                if (label := version_label(v)) != UNKNOWN
            },
            cut=_count(obj.get("cut", 0)),
            routes_cut=_count(obj.get("rcut", 0)),
        )
    except ObservationError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ObservationError(f"malformed observation: {type(exc).__name__}: {exc}") from exc


def _lower(col: pa.Array) -> pa.Array:
    return pc.utf8_lower(pc.cast(col, pa.string()))


def _route_part(col: pa.Array) -> pa.Array:
    """A route's product or service: lower case, control characters (the key separator
    among them) replaced by ``?``, at most ``MAX_ROUTE_PART_LEN`` characters."""
    text = pc.replace_substring_regex(_lower(col), r"[[:cntrl:]]", "?")
    return pc.utf8_slice_codeunits(text, 0, MAX_ROUTE_PART_LEN).fill_null("")


def _type_counts(col: pa.Array, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a number, a boolean (False where not, or null)."""
    n = len(col)
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return valid, np.zeros(n, dtype=bool)
    if pa.types.is_boolean(t):
        return np.zeros(n, dtype=bool), valid
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    number = pc.match_substring_regex(col, _NUMBER).fill_null(False)
    boolean = pc.match_substring_regex(col, _BOOL).fill_null(False)
    return (
        number.to_numpy(zero_copy_only=False),
        boolean.to_numpy(zero_copy_only=False),
    )


class _Sampler:
    """Per route, the first ``k`` values of a column: which are numbers, which booleans,
    scaled to the route's count of values (exact when the route has at most ``k``)."""

    def __init__(self, codes: np.ndarray, groups: int, k: int) -> None:
        self.codes, self.groups, self.k = codes, groups, k
        self.order = np.argsort(codes, kind="stable")
        self.sorted_codes = codes[self.order]
        counts = np.bincount(codes, minlength=groups)
        self.starts = np.r_[0, np.cumsum(counts)[:-1]]

    def type_counts(
        self, col: pa.Array, valid: np.ndarray, present: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return present, np.zeros_like(present)
        if pa.types.is_boolean(t):
            return np.zeros_like(present), present
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            return np.zeros_like(present), np.zeros_like(present)
        valid_sorted = valid[self.order]
        seen = np.cumsum(valid_sorted)
        before = np.where(self.starts > 0, seen[np.maximum(self.starts - 1, 0)], 0)
        rank = seen - before[self.sorted_codes]
        rows = self.order[valid_sorted & (rank <= self.k)]
        sample = col.take(pa.array(rows))
        number, boolean = _type_counts(sample, np.ones(len(rows), dtype=bool))
        group = self.codes[rows]
        taken = np.bincount(group, minlength=self.groups)
        share = np.divide(present, taken, out=np.zeros(self.groups), where=taken > 0)
        numbers = np.bincount(group[number], minlength=self.groups) * share
        booleans = np.bincount(group[boolean], minlength=self.groups) * share
        return np.rint(numbers).astype(np.int64), np.rint(booleans).astype(np.int64)


class FieldObservations:
    """The fields of one task's valid events, per (tenant, route)."""

    def __init__(
        self,
        max_fields: int = MAX_FIELDS,
        max_sensors: int = MAX_SENSORS,
        sample: int = SAMPLE,
        versions: Mapping[str, str] | None = None,
        max_versions: int = MAX_TASK_VERSIONS,
        max_routes: int = MAX_TASK_ROUTES,
    ) -> None:
        """``versions``: (tenant, sensor) -> agent version, keyed ``tenant\\x1fsensor``
        (``detections.drift.versions.sensor_key``), as the driver ships it."""
        self.max_fields = max_fields
        self.max_sensors = max_sensors
        self.sample = sample
        self.max_versions = max_versions
        self.max_routes = max_routes
        self._routes: set[tuple[str, tuple[str | None, str | None, str | None]]] = set()
        self._folded: set[tuple[str, tuple[str | None, str | None, str | None]]] = set()
        self._known: Mapping[str, str] = versions or {}
        self._heard: dict[str, str] = {}  # this task's heartbeats: sensor key -> version
        self._labels: set[str] = {UNKNOWN}
        self._obs: dict[
            tuple[str, tuple[str | None, str | None, str | None], str], Observation
        ] = {}

    def heartbeats(self) -> list[list[str]]:
        """[tenant, sensor, version] of the heartbeats this task saw (for the driver's map)."""
        return [[*key.split(SEP, 1), v] for key, v in self._heard.items()]

    def _label(self, key: str) -> str:
        version = self._heard.get(key) or self._known.get(key) or UNKNOWN
        if version not in self._labels:
            if len(self._labels) >= self.max_versions:
                return OTHER
            self._labels.add(version)
        return version

    def _heartbeats(
        self, events: pa.RecordBatch, tenant: pa.Array, sensor: pa.Array, event_type: pa.Array
    ) -> list[tuple[int, str, str]]:
        """This batch's heartbeats, read once: (row, sensor, version label) of each with a
        sensor and a known version (``version_label``: sanitised, capped); the task's
        (tenant, sensor) -> version map is told them."""
        if "agent_version" not in events.schema.names:
            return []
        agent_version = events.column("agent_version")
        beat = pc.and_(pc.equal(event_type, "heartbeat"), pc.is_valid(agent_version))
        rows = np.flatnonzero(beat.fill_null(False).to_numpy(zero_copy_only=False))
        if not rows.size:
            return []
        taken = pa.array(rows)
        beats = []
        for row, t, s, v in zip(
            rows.tolist(),
            tenant.take(taken).to_pylist(),
            sensor.take(taken).to_pylist(),
            agent_version.take(taken).to_pylist(),
            strict=True,
        ):
            label = version_label(v)
            if not s or label == UNKNOWN:
                continue
            beats.append((row, s, label))
            key = sensor_key(t, s)
            if key in self._heard or len(self._heard) < 16 * self.max_sensors:
                self._heard[key] = label
        return beats

    def _versions(self, tenant: pa.Array, sensor: pa.Array) -> pa.Array:
        """Per row, its sensor's version label: this batch's heartbeats first (already
        read by ``_heartbeats``), then the task's earlier ones, then the driver's map."""
        if not self._known and not self._heard:
            return pa.array([UNKNOWN] * len(sensor), pa.string())
        keys = pc.dictionary_encode(pc.binary_join_element_wise(tenant, sensor, SEP))
        labels = pa.array([self._label(k) for k in keys.dictionary.to_pylist()], pa.string())
        return labels.take(keys.indices)

    def _route(
        self, tenant: str, route: tuple[str | None, str | None, str | None]
    ) -> tuple[tuple[str | None, str | None, str | None], bool]:
        """The route an observation of ``route`` goes to: its own, or ``other_route`` once
        the task holds ``max_routes`` (tenant, route) pairs; and whether it was folded
        there for the first time (counted in the ``other`` route's ``routes_cut``)."""
        key = (tenant, route)
        if key in self._routes:
            return route, False
        if len(self._routes) < self.max_routes:
            self._routes.add(key)
            return route, False
        if key in self._folded:
            return other_route(route), False
        if len(self._folded) < 16 * self.max_routes:
            self._folded.add(key)
        return other_route(route), True

    def add(self, events: pa.RecordBatch) -> None:
        n = events.num_rows
        names = events.schema.names
        if not n or "event_type" not in names:
            return
        tenant = (
            pc.cast(events.column("tenant_id"), pa.string()).fill_null("default")
            if "tenant_id" in names
            else pa.array(["default"] * n)
        )
        event_type = pc.cast(events.column("event_type"), pa.string()).fill_null("")
        if "logsource" in names:
            logsource = events.column("logsource")
            product = _route_part(pc.struct_field(logsource, "product"))
            service = _route_part(pc.struct_field(logsource, "service"))
        else:
            product = service = pa.array([""] * n)
        sensor = (
            pc.cast(events.column("sensor_id"), pa.string()).fill_null("")
            if "sensor_id" in names
            else pa.array([""] * n)
        )
        beats = self._heartbeats(events, tenant, sensor, event_type)
        version = self._versions(tenant, sensor)
        joined = pc.binary_join_element_wise(tenant, product, event_type, service, version, SEP)
        encoded = pc.dictionary_encode(joined)
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        groups = [str(k).split(SEP) for k in encoded.dictionary.to_pylist()]
        g = len(groups)
        obs = []
        for t, p, e, s, v in groups:
            route, folded = self._route(t, (p or None, e or None, s or None))
            o = self._obs.get((t, route, v))
            if o is None:
                o = self._obs[(t, route, v)] = Observation(t, route, v)
            if folded:
                o.routes_cut += 1
            obs.append(o)
        # Several groups may share one (``other``) observation: sum per observation.
        rows = np.bincount(codes, minlength=g).tolist()
        for o, r in zip(obs, rows, strict=True):
            o.rows += r
        wanted = observed_columns()
        sampler = _Sampler(codes, g, self.sample)
        for name in names:
            if name not in wanted:
                continue
            col = events.column(name)
            if col.null_count == n:
                continue
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            present = np.bincount(codes[valid], minlength=g)
            numbers, booleans = sampler.type_counts(col, valid, present)
            for j in np.flatnonzero(present).tolist():
                self._put(obs[j], name, int(present[j]), int(numbers[j]), int(booleans[j]))
        if "extra" in names:
            self._extra(obs, events.column("extra"), codes, g)
        if "sensor_id" in names:
            self._sensors(obs, sensor, codes)
        for row, s, label in beats:
            o = obs[int(codes[row])]
            if len(o.versions) < self.max_sensors or s in o.versions:
                o.versions[s] = label

    def _put(self, o: Observation, name: str, present: int, numbers: int, booleans: int) -> None:
        counts = o.fields.get(name)
        if counts is None:
            if len(o.fields) >= self.max_fields:
                o.cut += 1
                return
            counts = o.fields[name] = [0, 0, 0]
        counts[0] += present
        counts[1] += numbers
        counts[2] += booleans

    def _extra(self, obs: list[Observation], extra: pa.Array, codes: np.ndarray, g: int) -> None:
        """Keys of the ``extra`` map (every field the schema does not type), per route."""
        if extra.null_count == len(extra) or not isinstance(extra, pa.MapArray):
            return
        offsets = extra.offsets.to_numpy(zero_copy_only=False)
        lengths = np.diff(offsets)
        if not lengths.sum():
            return
        start, stop = int(offsets[0]), int(offsets[-1])
        keys = extra.keys.slice(start, stop - start)
        values = extra.items.slice(start, stop - start)
        parents = np.repeat(np.arange(len(extra)), lengths)
        row_valid = extra.is_valid().to_numpy(zero_copy_only=False)[parents]
        key_valid = keys.is_valid().to_numpy(zero_copy_only=False)
        keep = row_valid & key_valid
        encoded = pc.dictionary_encode(keys)
        kcodes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        knames = encoded.dictionary.to_pylist()
        k = len(knames)
        combined = codes[parents] * k + kcodes
        value_valid = values.is_valid().to_numpy(zero_copy_only=False)
        number, boolean = _type_counts(values, value_valid)
        ids, present = np.unique(combined[keep], return_counts=True)
        n_ids, n_counts = np.unique(combined[keep & number], return_counts=True)
        b_ids, b_counts = np.unique(combined[keep & boolean], return_counts=True)
        numbers = dict(zip(n_ids.tolist(), n_counts.tolist(), strict=True))
        booleans = dict(zip(b_ids.tolist(), b_counts.tolist(), strict=True))
        for i, c in zip(ids.tolist(), present.tolist(), strict=True):
            self._put(obs[i // k], str(knames[i % k]), c, numbers.get(i, 0), booleans.get(i, 0))

    def _sensors(self, obs: list[Observation], sensor: pa.Array, codes: np.ndarray) -> None:
        encoded = pc.dictionary_encode(sensor)
        scodes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        snames = encoded.dictionary.to_pylist()
        m = len(snames)
        pairs = np.unique(codes * m + scodes)
        for pair in pairs.tolist():
            o, name = obs[pair // m], snames[pair % m]
            if name and len(o.sensors) < self.max_sensors:
                o.sensors.add(name)

    def observations(self) -> list[Observation]:
        return list(self._obs.values())

    def records(self) -> list[tuple[bytes, bytes]]:
        """(Kafka key: tenant, route and version; compact JSON) per (tenant, route, version)
        added."""
        return [
            (route_key(o.tenant, o.route, o.version), o.to_json().encode())
            for o in self._obs.values()
        ]

    def __len__(self) -> int:
        return len(self._obs)
