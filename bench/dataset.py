"""The benchmark event set: real OTRF telemetry amplified to N events, built once, cached.

Why amplified rather than synthetic: the event-type mix (process access, registry, image
loads, Security and PowerShell logs ...) and the field contents of real attack recordings
decide which routes and predicates the engine evaluates, so they decide its speed. Copies
get their own host and sensor names, fresh event ids, and varied command lines (GUIDs,
numbers and user-profile names replaced), so no two events are identical and nothing can
be answered from a cache of repeated values.

Three files per size N under ``.cache/bench/``, all the same events in the same order:

* ``events-N.jsonl``: the wire form (what sensors send to Kafka), an intermediate: deleted
  once parsed into Parquet (``--keep-jsonl`` keeps it, e.g. for ``sigstream replay``);
* ``events-N.parquet``: the wire form parsed exactly as the job parses Kafka records
  (``detections.stream.parse``), so the engine benchmark starts from job-shaped rows;
* ``events-N.rsigma.ndjson``: the same events flattened for rsigma (``extra`` merged into
  the top level, the logsource and event type as tag fields; see ``bench.rsigma``).

``python -m bench.dataset --events N`` builds them; the benchmarks call it when missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import CACHE_DIR, progress
from common.settings import PROJECT_ROOT, Settings, get_settings

#: Bump when the generated events change, so stale caches are not reused.
GENERATOR_VERSION = 3
#: Bump when the conversion of the OTRF recordings to schema events changes.
BASE_VERSION = 1
DEFAULT_SEED = 4

#: Envelope fields that are not Sigma fields: left out of rsigma's flat events.
ENVELOPE_ONLY = frozenset(
    {"schema_version", "tenant_id", "sensor_id", "host", "event_id", "seq", "event_time",
     "received_time", "logsource", "extra", "event_type"}
)  # fmt: skip

#: Tag fields added to rsigma's events (names no Sigma rule uses).
TAG_PRODUCT = "_sigstream_product"
TAG_SERVICE = "_sigstream_service"
TAG_CATEGORY = "_sigstream_category"
TAG_EVENT_TYPE = "_sigstream_event_type"
#: The event's sample bucket, an integer (rsigma's keyword search reads strings only).
TAG_BUCKET = "_sigstream_bucket"
#: An event is in a sample of fraction f when crc32(event_id) % SAMPLE_SCALE < f * SAMPLE_SCALE
#: (Spark's ``crc32`` of the UTF-8 id gives the same number, so both engines see one sample).
SAMPLE_SCALE = 1_000_000

_COMMAND_FIELDS = ("CommandLine", "ParentCommandLine")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NUMBER = re.compile(r"(?<=[\s=:,])\d{3,}(?=[\s,;\"']|$)")
_PROFILE = re.compile(
    r"(?i)(\\users\\)(?!public\\|default\\|default user\\|all users\\)([^\\\s\"]+)"
)


def _snapshot_key(settings: Settings) -> str:
    """Changes when the corpus or the code turning it into schema events changes."""
    otrf = settings.shared_data / "otrf"
    snapshot = otrf / "SNAPSHOT"
    digest = hashlib.sha256(f"{BASE_VERSION}:".encode())
    digest.update(
        snapshot.read_bytes() if snapshot.exists() else str(sorted(otrf.rglob("*"))).encode()
    )
    for source in sorted((PROJECT_ROOT / "ingest").rglob("*.py")):
        digest.update(source.read_bytes())
    digest.update((PROJECT_ROOT / "schemas" / "events.py").read_bytes())
    return digest.hexdigest()[:10]


def base_events_path(settings: Settings) -> Path:
    """The OTRF recordings as schema events, one wire-form JSON line each (built once:
    reading the zips through the ingest adapters takes a minute or two)."""
    otrf = settings.shared_data / "otrf"
    if not otrf.is_dir():
        raise SystemExit(f"OTRF corpus not found at {otrf} (clone with ../shared beside the repo)")
    path = CACHE_DIR / f"otrf-base-{_snapshot_key(settings)}.jsonl"
    if path.exists():
        return path
    from ingest.producer import encode_event
    from ingest.sources import iter_items

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    progress(f"reading OTRF recordings from {otrf} through the ingest adapters (once) …")
    count = 0
    with partial.open("wb") as out:
        for item in iter_items([otrf]):
            if item.event is None:
                continue
            out.write(encode_event(item.event) + b"\n")
            count += 1
            if count % 50_000 == 0:
                progress(f"  {count:,} events")
    partial.rename(path)
    progress(f"{count:,} OTRF events cached in {path}")
    return path


def dataset_paths(n: int, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    stem = CACHE_DIR / f"events-{n}-s{seed}-v{GENERATOR_VERSION}"
    return {
        "jsonl": stem.with_suffix(".jsonl"),
        "parquet": stem.with_suffix(".parquet"),
        "rsigma": stem.with_suffix(".rsigma.ndjson"),
    }


def _rename_host(host: str, copy: int) -> str:
    name, dot, domain = host.partition(".")
    return f"{name}-{copy:03d}{dot}{domain}"


def _vary_command(text: str, rng: random.Random) -> str:
    """Same command, other volatile parts: GUIDs, PIDs/ports/sizes, user-profile names."""

    def guid(m: re.Match[str]) -> str:
        new = str(uuid.UUID(int=rng.getrandbits(128)))
        return new.upper() if m.group(0).isupper() else new

    def number(m: re.Match[str]) -> str:
        digits = len(m.group(0))
        return str(rng.randrange(10 ** (digits - 1), 10**digits))

    def profile(m: re.Match[str]) -> str:
        return f"{m.group(1)}user{rng.randrange(10_000):04d}"

    text = _GUID.sub(guid, text)
    text = _NUMBER.sub(number, text)
    return _PROFILE.sub(profile, text)


def amplify(event: dict[str, Any], copy: int, rng: random.Random) -> dict[str, Any]:
    """Copy ``copy`` of a base event (copy 0 is the original)."""
    if copy == 0:
        return event
    out = dict(event)
    out["host"] = _rename_host(str(event["host"]), copy)
    out["sensor_id"] = _rename_host(str(event["sensor_id"]), copy)
    out["event_id"] = f"{event['event_id']}-{copy}"
    for name in _COMMAND_FIELDS:
        if isinstance(out.get(name), str):
            out[name] = _vary_command(out[name], rng)
    extra = event.get("extra")
    if extra:
        extra = dict(extra)
        for name in _COMMAND_FIELDS:
            if isinstance(extra.get(name), str):
                extra[name] = _vary_command(extra[name], rng)
        for name in ("Computer", "Hostname", "ComputerName"):
            if isinstance(extra.get(name), str) and "." in extra[name]:
                extra[name] = _rename_host(extra[name], copy)
        out["extra"] = extra
    return out


def sample_bucket(event_id: str) -> int:
    return zlib.crc32(event_id.encode()) % SAMPLE_SCALE


def flat_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event as rsigma sees it: Sigma fields at the top level, plus route tags.

    Typed fields win over ``extra`` (as in the job, where a declared field is a column).
    The event's sample bucket comes first, so samples are drawn without parsing the line.
    Registry events get no category tag: Sigma's umbrella ``registry_event`` would conflict
    with ``registry_set``; the route conditions of ``bench.rsigma``'s pipeline keep them exact.
    """
    flat: dict[str, Any] = {TAG_BUCKET: sample_bucket(str(event["event_id"]))}  # first

    flat.update(event.get("extra") or {})
    for key, value in event.items():
        if key not in ENVELOPE_ONLY and value is not None:
            flat[key] = value
    logsource = event.get("logsource") or {}
    event_type = str(event.get("event_type"))
    flat[TAG_PRODUCT] = logsource.get("product", "windows")
    if logsource.get("service"):
        flat[TAG_SERVICE] = logsource["service"]
    if not event_type.startswith("registry_"):
        flat[TAG_CATEGORY] = event_type
    flat[TAG_EVENT_TYPE] = event_type
    return flat


def _selection(base_count: int, n: int, seed: int) -> Iterator[tuple[int, int]]:
    """(copy, base index) pairs: whole copies, then a seeded sample of base events."""
    full, rest = divmod(n, base_count)
    for copy in range(full):
        for index in range(base_count):
            yield copy, index
    if rest:
        for index in sorted(random.Random(seed).sample(range(base_count), rest)):
            yield full, index


def build_files(n: int, seed: int = DEFAULT_SEED, settings: Settings | None = None) -> None:
    """Write the wire JSONL and rsigma NDJSON for ``n`` events (both in one pass)."""
    settings = settings or get_settings()
    paths = dataset_paths(n, seed)
    if paths["rsigma"].exists() and (paths["jsonl"].exists() or paths["parquet"].exists()):
        return
    base_path = base_events_path(settings)
    progress(f"loading base events from {base_path.name} …")
    base = base_path.read_bytes().splitlines()
    progress(f"amplifying {len(base):,} OTRF events to {n:,} (seed {seed}) …")
    tmp = {k: p.with_suffix(p.suffix + ".partial") for k, p in paths.items() if k != "parquet"}
    with tmp["jsonl"].open("w") as wire, tmp["rsigma"].open("w") as flat:
        rng = random.Random(seed)
        for written, (copy, index) in enumerate(_selection(len(base), n, seed), start=1):
            event = amplify(json.loads(base[index]), copy, rng)
            wire.write(json.dumps(event, separators=(",", ":")) + "\n")
            flat.write(json.dumps(flat_event(event), separators=(",", ":")) + "\n")
            if written % 250_000 == 0:
                progress(f"  {written:,} / {n:,}")
    for key, path in tmp.items():
        path.rename(paths[key])
    progress(f"wrote {paths['jsonl'].name} and {paths['rsigma'].name}")


def build_parquet(
    n: int, seed: int = DEFAULT_SEED, settings: Settings | None = None, keep_jsonl: bool = False
) -> None:
    """Parse the wire JSONL with the job's own parser and store the rows as Parquet."""
    from pyspark.sql import functions as F

    from detections.stream.parse import parse_records, valid_events
    from detections.stream.spark_session import build_session

    paths = dataset_paths(n, seed)
    if paths["parquet"].exists():
        return
    settings = settings or get_settings()
    progress("starting Spark to parse the events as the job does …")
    spark = build_session(
        settings,
        app_name="sigstream-bench-dataset",
        extra_conf={"spark.ui.showConsoleProgress": "false"},
    )
    try:
        records = spark.read.text(str(paths["jsonl"])).select(
            F.lit(None).cast("binary").alias("key"),
            F.col("value"),
            F.lit("bench").alias("topic"),
            F.lit(0).alias("partition"),
            F.monotonically_increasing_id().alias("offset"),
        )
        parsed = parse_records(records)
        bad = parsed.where(F.col("reject_reason").isNotNull()).count()
        if bad:
            raise SystemExit(f"{bad} generated events were rejected by the job's parser")
        tmp = paths["parquet"].with_suffix(".partial")
        valid_events(parsed).write.mode("overwrite").parquet(str(tmp))
        tmp.rename(paths["parquet"])
    finally:
        spark.stop()
    progress(f"wrote {paths['parquet'].name}")
    if not keep_jsonl:
        paths["jsonl"].unlink()


def ensure(n: int, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """The Parquet and rsigma files, built in a child process when missing (so the caller's
    peak memory measures its benchmark, not the one-time generation)."""
    paths = dataset_paths(n, seed)
    if not (paths["parquet"].exists() and paths["rsigma"].exists()):
        progress(f"building the {n:,}-event dataset (once; cached in {CACHE_DIR}) …")
        cmd = [sys.executable, "-m", "bench.dataset", "--events", str(n), "--seed", str(seed)]
        subprocess.run(cmd, check=True)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dataset",
        description="Build the amplified OTRF event set used by the benchmarks (cached).",
    )
    parser.add_argument("--events", type=int, default=2_000_000, help="number of events")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="sampling/variation seed")
    parser.add_argument(
        "--keep-jsonl", action="store_true", help="keep the wire-form JSONL after parsing"
    )
    args = parser.parse_args(argv)
    build_files(args.events, args.seed)
    build_parquet(args.events, args.seed, keep_jsonl=args.keep_jsonl)
    for kind, path in dataset_paths(args.events, args.seed).items():
        if path.exists():
            files = list(path.rglob("*")) if path.is_dir() else [path]
            size = sum(p.stat().st_size for p in files)
            print(f"{kind:8} {path}  ({size / 1e6:,.0f} MB)")


if __name__ == "__main__":
    main()
