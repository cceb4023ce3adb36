"""Finding service processes again, and saying how one ended when a start fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from infra import proc

SLEEPER = "import time; time.sleep(60)"


def _spawn(tmp_path: Path, code: str) -> int:
    child = proc.spawn([sys.executable, "-c", code], log_file=tmp_path / "child.log")
    return child.pid


def test_a_child_is_running_the_moment_spawn_returns(tmp_path: Path) -> None:
    # Straight after exec the kernel can still show an empty command line: a check on the
    # command line alone once declared fresh brokers "exited during startup".
    for _ in range(20):
        pid = _spawn(tmp_path, SLEEPER)
        (tmp_path / "svc.pid").write_text(f"{pid}\n")
        assert proc.running_pid(tmp_path / "svc.pid", "time.sleep") == pid
        proc.terminate(pid, 5.0)


def test_a_process_started_elsewhere_is_found_by_its_command_line(tmp_path: Path) -> None:
    pid_file = tmp_path / "svc.pid"
    for _ in range(20):  # not a child of spawn: the command-line check decides
        other = subprocess.Popen([sys.executable, "-c", SLEEPER])
        pid_file.write_text(f"{other.pid}\n")
        try:
            assert proc.running_pid(pid_file, "time.sleep") == other.pid
            assert proc.running_pid(pid_file, "kafka.Kafka") is None  # something else
            assert not pid_file.exists()  # so its stale pid file is removed
        finally:
            other.kill()
            other.wait()


def test_a_child_killed_by_a_signal_is_reported_as_such(tmp_path: Path) -> None:
    pid = _spawn(tmp_path, SLEEPER)
    assert proc.pid_alive(pid)
    assert proc.how_it_ended(pid) == ""  # still running: nothing to say yet
    assert proc.describe(pid, tmp_path / "svc.pid").startswith(f"pid {pid} still runs: ")
    os.kill(pid, signal.SIGKILL)
    assert proc.wait_for(lambda: not proc.pid_alive(pid), 10.0)
    assert proc.how_it_ended(pid).startswith("killed by SIGKILL")
    assert "MB of memory available now" in proc.how_it_ended(pid)
    assert proc.describe(pid) == proc.how_it_ended(pid)
    said = proc.exited_during_startup("the broker", pid, tmp_path / "svc.pid")
    assert said == f"the broker exited during startup ({proc.how_it_ended(pid)})"


def test_a_child_that_exits_reports_its_code(tmp_path: Path) -> None:
    pid = _spawn(tmp_path, "raise SystemExit(3)")
    assert proc.wait_for(lambda: not proc.pid_alive(pid), 10.0)
    assert proc.how_it_ended(pid) == "exit code 3"


def test_unknown_processes_have_no_story() -> None:
    assert proc.how_it_ended(None) == ""
    assert proc.how_it_ended(os.getpid()) == ""  # not a child that spawn started
    assert proc.describe(None) == ""
    assert proc.exited_during_startup("x", None, Path("x.pid")) == "x exited during startup"


def test_available_memory_is_read_from_meminfo() -> None:
    available = proc.available_memory_mb()
    if Path("/proc/meminfo").exists():
        assert available is not None and available > 0
    else:
        assert available is None
