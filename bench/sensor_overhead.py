"""The Linux sensor's overhead: CPU and memory while the host runs N process executions per
second, and how many of those executions it named (image and command line), missed or
dropped. Prints numbers, asserts nothing. Needs root.

    python -m bench.sensor_overhead --rates 100 200 1000 --seconds 20

By default the sensor ships to an unreachable gateway, so every event stays in its spool
and is counted there (the cost of compressing and posting is then not included; pass
``--url/--token-file/--ca`` to ship to a real gateway, CPU and memory only).
CPU is the sensor's and its exec reader's user+system time over wall time (100 % = one
core); memory is the sum of their PSS (proportional set size: the forked reader shares
pages with the sensor, which RSS would count twice), peak over the run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = (sys.executable, "-c", "from sigstream.cli import app; app()")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_and_rss(pids: list[int]) -> tuple[float, int]:
    """Seconds of CPU (user+system) and RSS bytes, summed over ``pids``."""
    cpu, rss = 0.0, 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICK
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return cpu, rss


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def load(rate: float, seconds: float, marker: str) -> int:
    """Run ``/bin/true MARKER-i`` ``rate`` times a second; returns how many ran."""
    true = "/bin/true"
    n, start = 0, time.monotonic()
    running: list[int] = []
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate)
        while n < due:
            running.append(os.posix_spawn(true, [true, f"{marker}-{n}"], os.environ))
            n += 1
        running = [p for p in running if os.waitpid(p, os.WNOHANG) == (0, 0)]
        time.sleep(0.002)
    for p in running:
        os.waitpid(p, 0)
    return n


def spooled(spool: Path, marker: str) -> tuple[int, int, dict[str, int]]:
    """(named, incomplete, dropped by source) from the spool and the last heartbeat."""
    named = incomplete = 0
    dropped: dict[str, int] = {}
    for seg in sorted(spool.glob("*.seg")):
        for line in seg.open("rb"):
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event_type") == "heartbeat":
                dropped = e.get("dropped_by_source") or dropped
            elif marker in (e.get("CommandLine") or ""):
                named += 1
            elif e.get("extra", {}).get("sensor_incomplete") and e.get("ParentImage", "").endswith(
                "python3.11"
            ):
                incomplete += 1
    return named, incomplete, dropped


def run(rate: float, seconds: float, args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sigstream-sensor-bench-"))
    token = work / "token"
    token.write_text("bench")
    url = args.url or "https://127.0.0.1:9"
    gateway = f"{{url: '{url}', token_file: '{args.token_file or token}'"
    gateway += f", ca: '{args.ca}'}}" if args.ca else "}"
    config = work / "sensor.yml"
    config.write_text(
        f"sensor_id: bench\ngateway: {gateway}\nspool_dir: '{work / 'spool'}'\n"
        f"heartbeat_interval_s: 2\nqueue_size: {args.queue_size}\n"
        "sources: {file: {paths: [/tmp]}}\n"
    )
    sensor = subprocess.Popen(
        [*CLI, "sensor", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "sensor.log", "wb"),  # noqa: SIM115
    )
    time.sleep(3)
    pids = [sensor.pid, *children(sensor.pid)]
    cpu0, _ = cpu_and_rss(pids)
    t0 = time.monotonic()
    marker = f"sigstream-bench-{os.getpid()}-{int(rate)}"
    peak = 0
    ran = 0
    # Sample RSS while the load runs (in a child: the load loop must not be disturbed).
    sampler = subprocess.Popen(
        [sys.executable, "-c", _SAMPLER, ",".join(map(str, pids)), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    ran = load(rate, seconds, marker)
    out, _ = sampler.communicate()
    peak = int(out.strip() or 0)
    wall = time.monotonic() - t0
    cpu1, rss = cpu_and_rss(pids)
    time.sleep(3)  # the last events reach the spool
    sensor.send_signal(signal.SIGTERM)
    sensor.wait(timeout=60)
    named, incomplete, dropped = spooled(work / "spool", marker)
    print(
        f"rate {rate:>6.0f}/s  execs {ran:>6}  sensor CPU {100 * (cpu1 - cpu0) / wall:5.1f} %  "
        f"PSS peak {peak / 2**20:6.1f} MiB (RSS {rss / 2**20:.0f})  named {named} "
        f"({100 * named / max(ran, 1):.1f} %)  unnamed {incomplete}  dropped {dropped}"
    )


_SAMPLER = """
import os, sys, time
pids = [int(p) for p in sys.argv[1].split(",")]
end = time.monotonic() + float(sys.argv[2])
peak = 0
while time.monotonic() < end:
    rss = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            pass
    peak = max(peak, rss)
    time.sleep(0.2)
print(peak)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 200, 1000])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--queue-size", type=int, default=10_000)
    parser.add_argument("--url", help="a real gateway (default: unreachable, spool only)")
    parser.add_argument("--token-file")
    parser.add_argument("--ca")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (process-events connector, fanotify)")
    print(f"host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    for rate in args.rates:
        run(rate, args.seconds, args)


if __name__ == "__main__":
    main()
