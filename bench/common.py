"""What every benchmark shares: the cache folder, progress output, memory probes, tables.

Memory is read from ``/proc/<pid>/status`` (``VmHWM`` is the kernel's peak resident set of
a process) because the interesting process is often not Python: the Spark driver JVM.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sigstream.settings import PROJECT_ROOT, Settings

#: Generated datasets, rule folders and results live here (git-ignored, reused across runs).
CACHE_DIR = PROJECT_ROOT / ".cache" / "bench"

#: Child processes inherit the parent's start time, so their progress lines share one clock.
_T0_ENV = "SIGSTREAM_BENCH_T0"
os.environ.setdefault(_T0_ENV, repr(time.time()))
_STARTED = float(os.environ[_T0_ENV])


def progress(message: str) -> None:
    """One timestamped line on stderr, so long steps show they are alive."""
    elapsed = time.time() - _STARTED
    print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` value of /proc/<pid>/status (``VmHWM`` peak RSS, ``VmRSS`` current)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def python_peak_mb() -> float:
    """Peak RSS of this Python process (ru_maxrss is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mb(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:,.0f} MB"


def _command_line(args: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "n/a"


def machine_info(settings: Settings) -> dict[str, str]:
    """The facts a reader needs to compare numbers across machines."""
    import kafka
    import pyspark

    mem_kb = None
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    load = os.getloadavg()
    rsigma = shutil.which("rsigma")
    return {
        "cpus": str(os.cpu_count()),
        "memory": f"{(mem_kb or 0) / 1024 / 1024:.1f} GiB",
        "load average (1/5/15 min) at start": " / ".join(f"{x:.2f}" for x in load),
        "python": platform.python_version(),
        "java": _command_line(["java", "-version"]),
        "pyspark": pyspark.__version__,
        "spark master": settings.spark_master,
        "kafka-python": kafka.__version__,
        "kafka broker": settings.kafka_version,
        "elasticsearch": settings.es_version,
        "rsigma": _command_line([rsigma, "--version"]) if rsigma else "not installed",
    }


def print_kv(title: str, items: dict[str, str]) -> None:
    print(f"\n{title}")
    width = max(len(k) for k in items)
    for key, value in items.items():
        print(f"  {key:<{width}}  {value}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table (pastes into bench/README.md and reads fine in a terminal)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))


def save_result(name: str, payload: dict[str, Any]) -> Path:
    """Keep a run's numbers as JSON (the latency benchmark reads the engine's capacity)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{name}-result.json"
    payload = {"recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def load_result(name: str) -> dict[str, Any] | None:
    path = CACHE_DIR / f"{name}-result.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def rate(count: float, seconds: float) -> str:
    return "n/a" if seconds <= 0 else f"{count / seconds:,.0f}"
