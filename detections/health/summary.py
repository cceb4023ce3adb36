"""Per-sensor summaries of the detection pass's events: what sensor health reads instead
of the raw events topic. Pure (pyarrow and numpy, no Spark, no I/O).

Each detect task builds a ``SensorSummaries``, ``add``s every Arrow batch of valid events
of its slice (arrival order: Kafka offset order within the partition), and at the end its
``records()`` are produced to the summaries topic (setting ``summaries_topic``, default
``sigstream.sensor-summaries``), keyed by tenant and sensor, so one sensor's summaries stay
in order on one partition. The sensor-health query (``detections.health.query``) keeps
its per-sensor state from them (``detections.health.state.observe_summary``).

Summary format, version 1 (the contract between the two; compact JSON, one object)::

    {"v": 1,                        # SUMMARY_VERSION; a reader refuses other versions
     "tenant": "acme", "sensor": "ws01", "host": "WS01",   # host: the last one seen
     "src": ["telemetry.events", 0, 1200, 1450],  # topic, partition, first and last offset
                                    # summarized (null when not known); one summary never
                                    # spans two partitions
     "n": [251, 249, 2, 0],         # records, events (not heartbeats), heartbeats,
                                    # records without seq
     "et": [t_min, t_max],          # event time range (epoch seconds, float)
     "rt": [t_first, t_max],        # received time of the first record (arrival order),
                                    # and the newest: gateway received_time, else the Kafka
                                    # timestamp, else the time add() ran
     "last": [event_id, event_time, received],  # the record with the newest received
                                    # time (the last in arrival order among ties)
     "runs": [[first_seq, last_seq, first_event_time, last_event_time, first_event_id],
              ...],                 # maximal runs of seq+1 in ARRIVAL order (not sorted:
                                    # a reset and a late or duplicate record stay apart)
     "skipped": [runs, records, seq_min, seq_max, event_time_max] | null,
                                    # bounding: beyond max_runs runs, the runs between the
                                    # first max_runs-1 and the last one are folded here
     "clock": [n, d_min, d_max, d_nearest] | null,  # d = sensor clock at send time minus
                                    # received time, over the records that carry the clock:
                                    # sent_time, else a heartbeat's event_time; d_nearest
                                    # is the d closest to zero
     "hb": [[seq, event_id, event_time, sent_time, received, expected_interval_s,
             agent_version, events_sent, events_dropped, events_spooled,
             sensor_sha256, config_sha256, sources, stop_reason], ...]}
                                    # the heartbeats, arrival order: the last max_heartbeats
                                    # of them (n[2] counts all); the last four (tamper
                                    # evidence, docs/sensor.md) are absent in older
                                    # summaries and read as null

A summary is a deterministic function of the records it covers, so the replay of a
micro-batch (at-least-once delivery after a crash) produces byte-identical summaries; the
health state drops those by their digest (``Summary.digest``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SUMMARY_VERSION = 1

#: The event fields a summary reads (their types come from the generated schema).
SUMMARY_FIELDS = (
    "tenant_id",
    "sensor_id",
    "host",
    "event_id",
    "seq",
    "event_type",
    "event_time",
    "received_time",
    "sent_time",
    "expected_interval_s",
    "agent_version",
    "events_sent",
    "events_dropped",
    "events_spooled",
    "sensor_sha256",
    "config_sha256",
    "sources",
    "stop_reason",
)
#: Kafka columns it uses when present: origin (for ordering and de-duplication) and the
#: record timestamp (the receive time of events written without the gateway).
KAFKA_FIELDS = ("topic", "partition", "offset", "timestamp")

KEY_SEP = "\x1f"
_HB_FIELDS = (
    "seq",
    "event_id",
    "event_time",
    "sent_time",
    "received",
    "expected_interval_s",
    "agent_version",
    "events_sent",
    "events_dropped",
    "events_spooled",
    "sensor_sha256",
    "config_sha256",
    "sources",
    "stop_reason",
)
#: Heartbeat entries of older summaries end after ``events_spooled``: the rest reads None.
_HB_V1_FIELDS = 10


def _hb_entry(values: list[Any]) -> dict[str, Any]:
    if len(values) < _HB_V1_FIELDS or len(values) > len(_HB_FIELDS):
        raise SummaryError(f"a heartbeat entry has {len(values)} fields")
    padded = [*values, *[None] * (len(_HB_FIELDS) - len(values))]
    entry = dict(zip(_HB_FIELDS, padded, strict=True))
    if entry["sources"] is not None and not isinstance(entry["sources"], dict):
        raise SummaryError("heartbeat sources must be an object")
    return entry


def _as_dict(value: Any) -> dict[str, Any] | None:
    """A map column's Python value (Arrow gives a list of pairs) as a dict."""
    if value is None or isinstance(value, dict):
        return value
    return dict(value)


def sensor_key(tenant: str, sensor: str) -> bytes:
    """The Kafka key of a sensor's summaries."""
    return f"{tenant}{KEY_SEP}{sensor}".encode()


# -- the decoded summary ---------------------------------------------------------------


@dataclass
class Summary:
    tenant: str
    sensor: str
    host: str | None = None
    src: tuple[str | None, int, int, int] | None = None
    records: int = 0
    events: int = 0
    heartbeats: int = 0
    unsequenced: int = 0
    event_time: tuple[float, float] | None = None
    received: tuple[float, float] | None = None
    last: tuple[str, float, float] | None = None
    runs: list[tuple[int, int, float, float, str]] = field(default_factory=list)
    skipped: tuple[int, int, int, int, float] | None = None
    clock: tuple[int, float, float, float] | None = None
    hb: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": SUMMARY_VERSION,
                "tenant": self.tenant,
                "sensor": self.sensor,
                "host": self.host,
                "src": None if self.src is None else list(self.src),
                "n": [self.records, self.events, self.heartbeats, self.unsequenced],
                "et": None if self.event_time is None else list(self.event_time),
                "rt": None if self.received is None else list(self.received),
                "last": None if self.last is None else list(self.last),
                "runs": [list(r) for r in self.runs],
                "skipped": None if self.skipped is None else list(self.skipped),
                "clock": None if self.clock is None else list(self.clock),
                "hb": [[h.get(k) for k in _HB_FIELDS] for h in self.hb],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    def digest(self) -> str:
        """Identifies the summary's content: a redelivered summary has the same."""
        return hashlib.blake2b(self.to_json().encode(), digest_size=8).hexdigest()

    def order(self) -> tuple[str, int, int]:
        """Arrival order of one sensor's summaries: (topic, partition, first offset)."""
        if self.src is None:
            return ("", -1, -1)
        return (self.src[0] or "", self.src[1], self.src[2])


class SummaryError(ValueError):
    """A summaries-topic record that is not a summary this reader understands."""


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SummaryError(f"not a number: {v!r}")
    return float(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SummaryError(f"not an integer: {v!r}")
    return v


def _opt_str(v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise SummaryError(f"not a string: {v!r}")
    return v


def decode(raw: bytes | str) -> Summary:
    """One summaries-topic value -> ``Summary``; raises ``SummaryError`` when it is not
    a version-1 summary."""
    try:  # UTF-8 only, as written (json.loads would guess UTF-16/32 for bytes)
        obj = json.loads(raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SummaryError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SummaryError("not a JSON object")
    if obj.get("v") != SUMMARY_VERSION:
        raise SummaryError(f"unsupported summary version {obj.get('v')!r}")
    try:
        tenant, sensor = obj["tenant"], obj["sensor"]
        if not isinstance(tenant, str) or not isinstance(sensor, str) or not sensor:
            raise SummaryError("tenant and sensor must be strings")
        src = obj.get("src")
        n = obj["n"]
        et, rt, last = obj.get("et"), obj.get("rt"), obj.get("last")
        skipped, clock = obj.get("skipped"), obj.get("clock")
        return Summary(
            tenant=tenant,
            sensor=sensor,
            host=_opt_str(obj.get("host")),
            src=None
            if src is None
            else (_opt_str(src[0]), _int(src[1]), _int(src[2]), _int(src[3])),
            records=_int(n[0]),
            events=_int(n[1]),
            heartbeats=_int(n[2]),
            unsequenced=_int(n[3]),
            event_time=None if et is None else (_num(et[0]), _num(et[1])),
            received=None if rt is None else (_num(rt[0]), _num(rt[1])),
            last=None if last is None else (str(last[0]), _num(last[1]), _num(last[2])),
            runs=[
                (_int(r[0]), _int(r[1]), _num(r[2]), _num(r[3]), str(r[4]))
                for r in obj.get("runs") or []
            ],
            skipped=None
            if skipped is None
            else (
                _int(skipped[0]),
                _int(skipped[1]),
                _int(skipped[2]),
                _int(skipped[3]),
                _num(skipped[4]),
            ),
            clock=None
            if clock is None
            else (_int(clock[0]), _num(clock[1]), _num(clock[2]), _num(clock[3])),
            hb=[_hb_entry(list(h)) for h in obj.get("hb") or []],
        )
    except SummaryError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise SummaryError(f"malformed summary: {type(exc).__name__}: {exc}") from exc


# -- building summaries from Arrow batches ----------------------------------------------


class _Acc:
    """One sensor's summary (of one partition) being built across ``add`` calls."""

    __slots__ = (
        "clock_max",
        "clock_min",
        "clock_n",
        "clock_near",
        "hb_kept",
        "s",
    )

    def __init__(self, summary: Summary) -> None:
        self.s = summary
        self.clock_n = 0
        self.clock_min = math.inf
        self.clock_max = -math.inf
        self.clock_near = math.inf


def _seconds(batch: pa.RecordBatch, name: str) -> np.ndarray | None:
    """A timestamp (or number) column as float epoch seconds, NaN for nulls; None when
    the batch has no such column."""
    if name not in batch.schema.names:
        return None
    col = batch.column(name)
    if pa.types.is_timestamp(col.type):
        unit = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[col.type.unit]
        ints = pc.cast(col, pa.int64())
        out = ints.fill_null(0).to_numpy().astype(np.float64) / unit
    else:
        out = pc.cast(col, pa.float64()).fill_null(np.nan).to_numpy()
    if col.null_count:
        out[col.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return out


def _column(batch: pa.RecordBatch, name: str) -> pa.Array | None:
    return batch.column(name) if name in batch.schema.names else None


def _last_index(starts: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Per group (``starts`` into rows sorted by group), the last row where ``flags`` is
    true, or -1."""
    pos = np.where(flags, np.arange(flags.size), -1)
    return np.maximum.reduceat(pos, starts)


class SensorSummaries:
    """Summaries of one task's valid events, per (tenant, sensor, partition).

    ``add`` each Arrow batch of valid events in arrival (offset) order; ``records()``
    gives (Kafka key, compact JSON value) per sensor. Bounded: at most ``max_runs`` seq
    runs and ``max_heartbeats`` heartbeats per summary (see the module docstring)."""

    def __init__(
        self,
        max_runs: int = 256,
        max_heartbeats: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_runs < 2:
            raise ValueError("max_runs must be at least 2")
        self.max_runs = max_runs
        self.max_heartbeats = max_heartbeats
        self._clock = clock
        self._acc: dict[tuple[str, str, str | None, int | None], _Acc] = {}

    # -- the vectorized part: one pass of numpy over the batch -------------------------

    def add(self, events: pa.RecordBatch) -> None:
        n = events.num_rows
        if not n or "sensor_id" not in events.schema.names:
            return
        if events.column("sensor_id").null_count:
            events = events.filter(pc.is_valid(events.column("sensor_id")))
            n = events.num_rows
            if not n:
                return
        tenant = _column(events, "tenant_id")
        tenant = (
            pa.array(["default"] * n)
            if tenant is None
            else pc.cast(tenant, pa.string()).fill_null("default")
        )
        sensor = pc.cast(events.column("sensor_id"), pa.string())
        partition = _column(events, "partition")
        topic = _column(events, "topic")
        parts = [tenant, sensor]
        if partition is not None:
            parts.append(pc.cast(partition, pa.string()).fill_null(""))
        if topic is not None:
            parts.append(pc.cast(topic, pa.string()).fill_null(""))
        joined = pc.binary_join_element_wise(*parts, KEY_SEP) if len(parts) > 1 else parts[0]
        encoded = pc.dictionary_encode(joined)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        order = np.argsort(codes, kind="stable")  # groups together, arrival order kept
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        counts = np.diff(np.r_[starts, n])
        first_rows = order[starts]  # original row of each group's first record

        def sorted_seconds(name: str) -> np.ndarray | None:
            values = _seconds(events, name)
            return None if values is None else values[order]

        event_time = sorted_seconds("event_time")
        if event_time is None:
            return
        received = sorted_seconds("received_time")
        kafka_ts = sorted_seconds("timestamp")
        if received is None:
            received = kafka_ts if kafka_ts is not None else np.full(n, np.nan)
        elif kafka_ts is not None:
            received = np.where(np.isnan(received), kafka_ts, received)
        if np.isnan(received).any():
            received = np.where(np.isnan(received), self._clock(), received)
        sent = sorted_seconds("sent_time")
        event_type = _column(events, "event_type")
        heartbeat = (
            np.zeros(n, dtype=bool)
            if event_type is None
            else pc.equal(event_type, "heartbeat")
            .fill_null(False)
            .to_numpy(zero_copy_only=False)[order]
        )
        seq_col = _column(events, "seq")
        if seq_col is None:
            has_seq = np.zeros(n, dtype=bool)
            seq = np.zeros(n, dtype=np.int64)
        else:
            has_seq = seq_col.is_valid().to_numpy(zero_copy_only=False)[order]
            seq = pc.cast(seq_col, pa.int64()).fill_null(0).to_numpy()[order]

        # Per group aggregates.
        et_min = np.fmin.reduceat(event_time, starts)
        et_max = np.fmax.reduceat(event_time, starts)
        rt_first = received[starts]
        rt_max = np.maximum.reduceat(received, starts)
        newest = _last_index(starts, received == np.repeat(rt_max, counts))
        n_hb = np.add.reduceat(heartbeat.astype(np.int64), starts)
        n_noseq = np.add.reduceat((~has_seq).astype(np.int64), starts)
        clock = np.where(heartbeat, event_time, np.nan)
        if sent is not None:
            clock = np.where(np.isnan(sent), clock, sent)
        d = clock - received
        has_clock = ~np.isnan(d)
        clock_n = np.add.reduceat(has_clock.astype(np.int64), starts)
        d_min = np.minimum.reduceat(np.where(has_clock, d, np.inf), starts)
        d_max = np.maximum.reduceat(np.where(has_clock, d, -np.inf), starts)
        abs_d = np.where(has_clock, np.abs(d), np.inf)
        near_abs = np.minimum.reduceat(abs_d, starts)
        nearest_row = _last_index(starts, has_clock & (abs_d == np.repeat(near_abs, counts)))
        host_col = _column(events, "host")
        host_row = (
            np.full(starts.size, -1)
            if host_col is None
            else _last_index(starts, host_col.is_valid().to_numpy(zero_copy_only=False)[order])
        )
        offsets = _column(events, "offset")
        if offsets is not None:
            off = pc.cast(offsets, pa.int64()).fill_null(-1).to_numpy()[order]
            off_min = np.minimum.reduceat(off, starts).tolist()
            off_max = np.maximum.reduceat(off, starts).tolist()

        # Seq runs of all groups at once: rows with a seq, grouped, arrival order.
        with_seq = np.flatnonzero(has_seq)
        s, g = seq[with_seq], sorted_codes[with_seq]
        brk = np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1] + 1)] if s.size else s.astype(bool)
        run_starts = np.flatnonzero(brk)
        run_ends = np.r_[run_starts[1:], s.size] - 1 if s.size else np.zeros(0, dtype=np.int64)
        run_rows = with_seq[run_starts]
        run_code = sorted_codes[run_rows]
        run_first, run_last = s[run_starts], s[run_ends]
        run_t0, run_t1 = event_time[run_rows], event_time[with_seq[run_ends]]
        # Runs per group (groups are in code order, as are runs).
        group_codes = sorted_codes[starts]
        run_lo = np.searchsorted(run_code, group_codes, side="left")
        run_hi = np.searchsorted(run_code, group_codes, side="right")

        # Strings only for the rows that need them.
        def strings(name: str, rows: np.ndarray) -> list[Any]:
            col = _column(events, name)
            if col is None or not rows.size:
                return [None] * rows.size
            return col.take(pa.array(order[rows])).to_pylist()

        run_ids_all = strings("event_id", run_rows)
        last_ids = strings("event_id", newest)
        hosts = strings("host", np.maximum(host_row, 0))
        hb_rows = np.flatnonzero(heartbeat)
        hb_lists: dict[str, list[Any]] = {}
        if hb_rows.size:
            for name in ("seq", "event_id", *_HB_FIELDS[5:]):
                hb_lists[name] = strings(name, hb_rows)
        hb_code = sorted_codes[hb_rows]
        hb_lo = np.searchsorted(hb_code, group_codes, side="left")
        hb_hi = np.searchsorted(hb_code, group_codes, side="right")

        t_tenant = tenant.take(pa.array(first_rows)).to_pylist()
        t_sensor = sensor.take(pa.array(first_rows)).to_pylist()
        t_part = (
            [None] * starts.size
            if partition is None
            else partition.take(pa.array(first_rows)).to_pylist()
        )
        t_topic = (
            [None] * starts.size if topic is None else topic.take(pa.array(first_rows)).to_pylist()
        )
        run_first_l, run_last_l = run_first.tolist(), run_last.tolist()
        run_t0_l, run_t1_l = run_t0.tolist(), run_t1.tolist()
        # Plain lists for the per-sensor loop: numpy scalar access costs more than the loop.
        counts_l, n_hb_l, n_noseq_l = counts.tolist(), n_hb.tolist(), n_noseq.tolist()
        et_min_l, et_max_l = et_min.tolist(), et_max.tolist()
        rt_first_l, rt_max_l = rt_first.tolist(), rt_max.tolist()
        newest_time = event_time[newest].tolist()
        host_row_l, clock_n_l = host_row.tolist(), clock_n.tolist()
        d_min_l, d_max_l = d_min.tolist(), d_max.tolist()
        near_l = d[np.maximum(nearest_row, 0)].tolist()
        run_lo_l, run_hi_l = run_lo.tolist(), run_hi.tolist()
        hb_lo_l, hb_hi_l = hb_lo.tolist(), hb_hi.tolist()
        for j in range(starts.size):
            key = (t_tenant[j], t_sensor[j], t_topic[j], t_part[j])
            acc = self._acc.get(key)
            if acc is None:
                acc = self._acc[key] = _Acc(Summary(tenant=key[0], sensor=key[1]))
            sm = acc.s
            cnt, hb_n = counts_l[j], n_hb_l[j]
            sm.records += cnt
            sm.heartbeats += hb_n
            sm.events += cnt - hb_n
            sm.unsequenced += n_noseq_l[j]
            lo_t, hi_t = et_min_l[j], et_max_l[j]
            sm.event_time = (
                (lo_t, hi_t)
                if sm.event_time is None
                else (min(sm.event_time[0], lo_t), max(sm.event_time[1], hi_t))
            )
            r_first, r_max = rt_first_l[j], rt_max_l[j]
            if sm.received is None:
                sm.received = (r_first, r_max)
            elif r_max >= sm.received[1]:
                sm.received = (sm.received[0], r_max)
            if sm.last is None or r_max >= sm.last[2]:
                sm.last = (last_ids[j], newest_time[j], r_max)
            if host_row_l[j] >= 0:
                sm.host = hosts[j]
            if offsets is not None:
                first_off, last_off = off_min[j], off_max[j]
                if sm.src is None:
                    sm.src = (t_topic[j], int(t_part[j] or 0), first_off, last_off)
                else:
                    sm.src = (
                        sm.src[0],
                        sm.src[1],
                        min(sm.src[2], first_off),
                        max(sm.src[3], last_off),
                    )
            if clock_n_l[j]:
                acc.clock_n += clock_n_l[j]
                acc.clock_min = min(acc.clock_min, d_min_l[j])
                acc.clock_max = max(acc.clock_max, d_max_l[j])
                near = near_l[j]
                if abs(near) <= abs(acc.clock_near):
                    acc.clock_near = near
            a, b = run_lo_l[j], run_hi_l[j]
            if b > a:
                self._add_runs(
                    sm,
                    run_first_l[a:b],
                    run_last_l[a:b],
                    run_t0_l[a:b],
                    run_t1_l[a:b],
                    run_ids_all[a:b],
                )
            ha, hz = hb_lo_l[j], hb_hi_l[j]
            for i in range(ha, hz):
                row = hb_rows[i]
                sent_at = None if sent is None or np.isnan(sent[row]) else float(sent[row])
                interval = hb_lists["expected_interval_s"][i]
                sm.hb.append(
                    {
                        "seq": hb_lists["seq"][i],
                        "event_id": hb_lists["event_id"][i],
                        "event_time": float(event_time[row]),
                        "sent_time": sent_at,
                        "received": float(received[row]),
                        "expected_interval_s": None if interval is None else float(interval),
                        "agent_version": hb_lists["agent_version"][i],
                        "events_sent": hb_lists["events_sent"][i],
                        "events_dropped": hb_lists["events_dropped"][i],
                        "events_spooled": hb_lists["events_spooled"][i],
                        "sensor_sha256": hb_lists["sensor_sha256"][i],
                        "config_sha256": hb_lists["config_sha256"][i],
                        "sources": _as_dict(hb_lists["sources"][i]),
                        "stop_reason": hb_lists["stop_reason"][i],
                    }
                )
            if len(sm.hb) > self.max_heartbeats:
                del sm.hb[: len(sm.hb) - self.max_heartbeats]

    def _add_runs(
        self,
        sm: Summary,
        first: Sequence[int],
        last: Sequence[int],
        t0: Sequence[float],
        t1: Sequence[float],
        ids: Sequence[Any],
    ) -> None:
        """Append one group's runs (arrival order), merging a run that continues the
        previous batch's last one, folding the middle runs beyond ``max_runs``."""
        start = 0
        runs = sm.runs
        if runs and first[0] == runs[-1][1] + 1:
            prev = runs[-1]
            runs[-1] = (prev[0], last[0], prev[2], t1[0], prev[4])
            start = 1
        total = len(first)
        room = self.max_runs - len(runs)
        if total - start <= room:
            runs.extend((first[i], last[i], t0[i], t1[i], str(ids[i])) for i in range(start, total))
            return
        # Keep the first max_runs-1 runs and the newest one; fold everything between.
        keep = max(0, room - 1)
        runs.extend(
            (first[i], last[i], t0[i], t1[i], str(ids[i])) for i in range(start, start + keep)
        )
        folded: list[tuple[int, int, float, float, str]] = []
        if len(runs) == self.max_runs:  # the previous newest run is folded too
            folded.append(runs.pop())
        mid = range(start + keep, total - 1)
        lo = [first[i] for i in mid] + [r[0] for r in folded]
        hi = [last[i] for i in mid] + [r[1] for r in folded]
        times = [t1[i] for i in mid] + [r[3] for r in folded]
        records = sum(h - f + 1 for f, h in zip(lo, hi, strict=True))
        if lo:
            old = sm.skipped
            if old is None:
                sm.skipped = (len(lo), records, min(lo), max(hi), max(times))
            else:
                sm.skipped = (
                    old[0] + len(lo),
                    old[1] + records,
                    min(old[2], min(lo)),
                    max(old[3], max(hi)),
                    max(old[4], max(times)),
                )
        i = total - 1
        runs.append((first[i], last[i], t0[i], t1[i], str(ids[i])))

    # -- results --------------------------------------------------------------------------

    def summaries(self) -> list[Summary]:
        out = []
        for acc in self._acc.values():
            if acc.clock_n:
                acc.s.clock = (acc.clock_n, acc.clock_min, acc.clock_max, acc.clock_near)
            out.append(acc.s)
        return out

    def records(self) -> list[tuple[bytes, bytes]]:
        """(Kafka key: tenant and sensor, value: the summary's compact JSON) per sensor
        (and partition) of everything added."""
        return [(sensor_key(s.tenant, s.sensor), s.to_json().encode()) for s in self.summaries()]

    def __len__(self) -> int:
        return len(self._acc)
