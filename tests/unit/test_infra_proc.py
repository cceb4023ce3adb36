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
