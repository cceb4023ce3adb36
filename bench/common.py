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

from common.settings import PROJECT_ROOT, Settings

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


#: Who a process is, by a piece of its command line (first match wins).
CPU_ROLES = (
    ("Python workers", "pyspark.daemon"),
    ("Python workers", "pyspark.worker"),
    ("Spark JVM", "org.apache.spark.deploy.SparkSubmit"),
    ("Elasticsearch", "org.elasticsearch."),
    ("Kafka", "kafka.Kafka"),
)


def proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds used so far, user + system; command line), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out[int(entry.name)] = (int(fields[1]), cpu, command)
    return out


def _cpu_by_process() -> dict[int, tuple[float, str]]:
    """pid -> (CPU seconds used so far; command line)."""
    return {pid: (cpu, command) for pid, (_, cpu, command) in proc_table().items()}


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    tick = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / tick, sum(values) / tick


class CpuMeter:
    """Cores each part of the stack used between ``start()`` and ``stop()``.

    On a 2-core machine the job, Elasticsearch, Kafka and the benchmark's own sender share
    the CPU: this says whether a latency figure was taken on a saturated machine, and who
    saturated it. Linux only (``/proc``); elsewhere it reports nothing."""

    def __init__(self) -> None:
        self._start: dict[int, tuple[float, str]] = {}
        self._busy = (0.0, 0.0)
        self._began = 0.0
        self.cores: dict[str, float] = {}
        self.machine_busy = 0.0

    def start(self) -> None:
        if Path("/proc/stat").exists():
            self._start, self._busy, self._began = _cpu_by_process(), _machine_busy(), time.time()

    def stop(self) -> None:
        if not self._start:
            return
        wall = max(time.time() - self._began, 1e-9)
        busy, total = _machine_busy()
        share = (busy - self._busy[0]) / max(total - self._busy[1], 1e-9)
        self.machine_busy = min(1.0, max(0.0, share))  # float sums can land a hair past 1
        me = os.getpid()
        for pid, (seconds, command) in _cpu_by_process().items():
            used = seconds - self._start.get(pid, (0.0, ""))[0]
            if used <= 0:
                continue
            role = "this benchmark" if pid == me else "other"
            for name, marker in CPU_ROLES:
                if marker in command:
                    role = name
                    break
            self.cores[role] = self.cores.get(role, 0.0) + used / wall

    def summary(self) -> str:
        parts = ", ".join(
            f"{role} {cores:.2f}"
            for role, cores in sorted(self.cores.items(), key=lambda kv: -kv[1])
        )
        return f"{parts}; machine {self.machine_busy:.0%} busy ({os.cpu_count()} cores)"
