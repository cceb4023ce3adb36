"""How a service process that ``spawn`` started ended, as startup errors report it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from infra import proc


def _spawn(tmp_path: Path, code: str) -> int:
    child = proc.spawn([sys.executable, "-c", code], log_file=tmp_path / "child.log")
    return child.pid


def test_a_child_killed_by_a_signal_is_reported_as_such(tmp_path: Path) -> None:
    pid = _spawn(tmp_path, "import time; time.sleep(60)")
    assert proc.pid_alive(pid)
    assert proc.how_it_ended(pid) == ""  # still running: nothing to say yet
    os.kill(pid, signal.SIGKILL)
    assert proc.wait_for(lambda: not proc.pid_alive(pid), 10.0)
    assert proc.killed_by_signal(pid)
    assert proc.how_it_ended(pid).startswith("killed by SIGKILL")
    assert "MB of memory available now" in proc.how_it_ended(pid)


def test_a_child_that_exits_reports_its_code_not_a_signal(tmp_path: Path) -> None:
    pid = _spawn(tmp_path, "raise SystemExit(3)")
    assert proc.wait_for(lambda: not proc.pid_alive(pid), 10.0)
    assert proc.how_it_ended(pid) == "exit code 3"
    assert not proc.killed_by_signal(pid)


def test_unknown_processes_have_no_story(tmp_path: Path) -> None:
    assert proc.how_it_ended(None) == ""
    assert proc.how_it_ended(os.getpid()) == ""  # not a child that spawn started
    assert not proc.killed_by_signal(None)


def test_available_memory_is_read_from_meminfo() -> None:
    available = proc.available_memory_mb()
    if Path("/proc/meminfo").exists():
        assert available is not None and available > 0
    else:
        assert available is None


def test_child_running_comes_from_the_popen_not_the_pid_file(tmp_path: Path) -> None:
    pid = _spawn(tmp_path, "import time; time.sleep(60)")
    pid_file = tmp_path / "svc.pid"  # never written: the pid-file check alone would say "gone"
    assert proc.running_pid(pid_file, "time.sleep") is None
    assert proc.child_running(pid) is True
    assert proc.describe(pid, pid_file).startswith(f"pid {pid} still runs: ")
    assert proc.describe(pid, pid_file).endswith("; no pid file")
    proc.terminate(pid, 5.0)
    assert proc.child_running(pid) is False
    assert proc.describe(pid).startswith("killed by SIGTERM")
    assert proc.child_running(os.getpid()) is None  # not spawned by us


def test_lines_since_start_counts_only_the_latest_launch(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    proc.spawn([sys.executable, "-c", "print('first run')"], log_file=log).wait()
    assert proc.lines_since_start(log) == ["first run"]
    proc.spawn([sys.executable, "-c", "pass"], log_file=log).wait()  # died silently
    assert proc.lines_since_start(log) == []
    assert proc.lines_since_start(tmp_path / "absent.log") == []
