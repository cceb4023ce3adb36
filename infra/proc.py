"""Process plumbing shared by the service modules: pid files, ports, stopping, log tails.

Services run detached (own session, output to a log file) so they outlive the command that
started them; a pid file plus a command-line check is how a later command finds them again
without mistaking a recycled pid for our server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Popen objects of services this process started: kept so they are reaped (no zombies, no
# ResourceWarning) when the same process also stops them, as the test fixtures do.
_children: dict[int, subprocess.Popen[bytes]] = {}
# How those children ended (``Popen.returncode``: negative is the signal that killed it),
# kept after they are reaped so a startup failure can say whether it exited or was killed.
_ended: dict[int, int] = {}

# ``spawn`` writes this at the start of a line before each launch, so error scans can
# start at the latest launch.
START_MARK = "--- "
ERROR_WORDS = (" ERROR ", "[ERROR]", " FATAL ", "Exception: ", "Caused by:", "Error: ")


class ServiceError(RuntimeError):
    """A service failed to fetch, start, become ready or stop; names the log to read."""

    def __init__(self, service: str, message: str, log: Path | None = None) -> None:
        self.service = service
        self.log = log
        text = f"{service}: {message}"
        if log is not None:
            text += f" (log: {log})"
        super().__init__(text)


@dataclass(frozen=True)
class ServiceStatus:
    """What ``status()`` reports for one service.

    state is ``running`` (started by infra, pid known), ``external`` (something else answers
    on the address: used, never stopped) or ``stopped``.
    """

    name: str
    state: str
    pid: int | None
    address: str
    log: Path | None = None

    @property
    def up(self) -> bool:
        return self.state in {"running", "external"}


def progress(message: str) -> None:
    """One progress line on stderr, so long steps (downloads, JVM starts) are visible."""
    print(f"[infra] {message}", file=sys.stderr, flush=True)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    child = _children.get(pid)
    if child is not None:
        # Our own child: its Popen is the truth. (/proc alone would see it as a zombie for
        # a moment before it is reaped, and then how it ended would never be recorded.)
        if child.poll() is None:
            return True
        _children.pop(pid, None)
        _ended[pid] = child.returncode
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name.
    state = stat_text.rsplit(")", 1)[-1].split()[0]
    return state not in {"Z", "X"}


def pid_cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and its command line has ``marker``.

    A stale pid file (dead process, or a recycled pid running something else) is removed.
    A child this process started is known by its ``Popen`` instead: it cannot be a recycled
    pid, and right after ``spawn`` its command line can still read empty (see ``_is_ours``).
    """
    pid = read_pid(pid_file)
    if pid is None:
        return None
    if pid_alive(pid) and (pid in _children or _is_ours(pid, marker)):
        return pid
    with contextlib.suppress(OSError):
        pid_file.unlink()
    return None


def _is_ours(pid: int, marker: str, settle_s: float = 1.0) -> bool:
    """True if ``pid``'s command line has ``marker``.

    ``Popen`` returns once the child's ``execve`` has closed its close-on-exec pipe, but
    the kernel sets the new command line a moment later: until then /proc/<pid>/cmdline is
    empty (seen in 145 of 150 reads straight after a start on a loaded 2-core machine). An
    empty command line is read again until ``settle_s`` passes; kernel threads, the only
    other processes without one, are never ours.
    """
    deadline = time.monotonic() + settle_s
    while True:
        cmdline = pid_cmdline(pid)
        if cmdline or time.monotonic() >= deadline or not pid_alive(pid):
            return marker in cmdline
        time.sleep(0.02)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(
    cmd: list[str],
    *,
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` detached: own session (Ctrl-C in the caller's terminal doesn't reach it),
    stdin closed, stdout and stderr appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"\n{START_MARK}{stamp} starting: {' '.join(cmd)[:300]}\n".encode())
        out.flush()
        child = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    _children[child.pid] = child
    return child


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns True if it stopped on TERM.

    Kafka and Elasticsearch both flush and close cleanly on SIGTERM; SIGKILL is the fallback
    for a hung JVM.
    """
    if not pid_alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_for(lambda: not pid_alive(pid), timeout):
        _reap(pid)
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10.0)
    _reap(pid)
    return False


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
        if child.returncode is not None:
            _ended[pid] = child.returncode


def describe(pid: int | None, pid_file: Path | None = None) -> str:
    """What is known of ``pid`` now, for an error or warning about a service that is not
    found running: how it ended, or that it still runs (and what its pid file holds)."""
    if pid is None:
        return ""
    if not pid_alive(pid):
        return how_it_ended(pid) or f"pid {pid} is gone"
    text = f"pid {pid} still runs: {pid_cmdline(pid)[:120]!r}"
    if pid_file is not None:
        held = read_pid(pid_file)
        text += f"; {pid_file.name} holds {held}" if held is not None else "; no pid file"
    return text


def exited_during_startup(subject: str, pid: int | None, pid_file: Path) -> str:
    """The message for a service found gone while it starts, with ``describe``'s story."""
    story = describe(pid, pid_file)
    return f"{subject} exited during startup" + (f" ({story})" if story else "")


def how_it_ended(pid: int | None) -> str:
    """How a child that ``spawn`` started ended, for error messages: ``exit code 1``, or
    ``killed by SIGKILL`` with the memory left now (a JVM killed before its first log line
    is most often the kernel's out-of-memory killer). Empty when not known."""
    code = _ended.get(pid) if pid is not None else None
    if code is None:
        return ""
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    available = available_memory_mb()
    memory = f"; {available:,} MB of memory available now" if available is not None else ""
    return f"killed by {name}{memory}"


def available_memory_mb() -> int | None:
    """``MemAvailable`` from /proc/meminfo, in MB (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of a (possibly large) log file, or [] if absent."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


def error_lines(path: Path, limit: int = 12) -> list[str]:
    """Error lines logged since the last start marker written by ``spawn``.

    A JVM that dies on a fatal error often prints its config dump or shutdown noise after
    the actual exception, so the plain tail can miss the one line that matters.
    """
    lines = tail(path, 5000)
    starts = [i for i, line in enumerate(lines) if line.startswith(START_MARK)]
    recent = lines[starts[-1] :] if starts else lines[-300:]
    return [line for line in recent if any(word in line for word in ERROR_WORDS)][:limit]


def fail(service: str, message: str, logs: list[Path]) -> ServiceError:
    """Build the error for a failed start, printing each log's errors and tail."""
    shown = [log for log in logs if log.exists()] or logs[:1]
    for log in shown:
        errors = error_lines(log)
        if errors:
            progress(f"errors in {log}:")
            for line in errors:
                print(f"    {line}", file=sys.stderr)
        lines = tail(log)
        if lines:
            progress(f"last {len(lines)} lines of {log}:")
            for line in lines:
                print(f"    {line}", file=sys.stderr)
    return ServiceError(service, message, shown[0] if shown else None)


def rotate(log_file: Path, max_bytes: int = 50 * 1024 * 1024) -> None:
    """Keep one previous log, so a long-lived dev stack doesn't grow its log forever."""
    with contextlib.suppress(OSError):
        if log_file.stat().st_size > max_bytes:
            log_file.replace(log_file.with_name(log_file.name + ".1"))
