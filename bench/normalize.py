"""The normalizing stage's per-record cost: raw shipper records -> schema events, in one
Python process (what one Spark Python worker does per record), per layout.

    python -m bench.normalize [--records N]

Reads NXLog and Winlogbeat 6 records from the OTRF recordings and the ECS fixture (record
ids varied), runs ``detections.normalize.records.normalize_record`` over each and prints
records/s per layout. Prints numbers only; no assertion."""

from __future__ import annotations

import argparse
import json
import tarfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from common.settings import get_settings
from detections.normalize.records import normalize_record

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "layouts"


def _lines(path: Path, limit: int) -> list[bytes]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".json"))
            data = archive.read(name)
    else:
        with tarfile.open(path) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith(".json"))
            extracted = archive.extractfile(member)
            data = extracted.read() if extracted else b""
    return [line for line in data.splitlines() if line.strip()][:limit]


def _ecs(limit: int) -> list[bytes]:
    base = json.loads((FIXTURES / "ecs_sysmon_process_creation.json").read_text())
    out = []
    for i in range(limit):
        base["winlog"]["record_id"] = str(i)
        out.append(json.dumps(base).encode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per layout")
    args = parser.parse_args()
    otrf = get_settings().shared_data / "otrf"
    sets = {
        "nxlog": _lines(
            otrf / "credential_access/host/empire_mimikatz_logonpasswords.zip", args.records
        ),
        "winlogbeat_legacy": _lines(
            otrf / "defense_evasion/host/empire_scm_dll_hijack_ikeext.tar.gz", args.records
        ),
        "ecs": _ecs(args.records),
    }
    now = datetime.now(UTC)
    for layout, records in sets.items():
        size = sum(map(len, records)) / max(1, len(records))
        started = time.perf_counter()
        rejected = 0
        for offset, value in enumerate(records):
            out = normalize_record(
                value,
                None,
                topic="telemetry.raw.auto",
                partition=0,
                offset=offset,
                tenant=None,
                default_tenant="default",
                events_topic="telemetry.events",
                dlq_topic="telemetry.dlq",
                received_time=now,
            )
            rejected += out.rejected
        seconds = time.perf_counter() - started
        print(
            f"{layout:18} {len(records):7,} records ({size:,.0f} B avg) in {seconds:6.2f}s: "
            f"{len(records) / seconds:9,.0f} records/s, {seconds / len(records) * 1e6:6.1f} µs each"
            f" ({rejected} rejected)"
        )


if __name__ == "__main__":
    main()
