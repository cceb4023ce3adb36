"""Process executions: the kernel's process-events connector says *which* pid exec'd, procfs
says what it ran and who its parent is.

The reader thread does nothing but read the socket, read procfs for the new process (it
must, before a short-lived process is gone) and hand the event to ``emit``, which never
blocks (a full buffer counts the event as dropped). The parent is taken from the sensor's
own memory of earlier execs (``ParentCache``) when procfs no longer has it, so a parent
that exited first is still named.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ingest.sensor import procconn, procfs
from ingest.sensor.mapping import process_creation

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], bool]


class ParentCache:
    """The last exec'd image of each live pid (bounded LRU), and fork parents: what names a
    parent that exited before its child was read."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self.info: OrderedDict[int, procfs.ProcessInfo] = OrderedDict()
        self.forked_by: OrderedDict[int, int] = OrderedDict()

    def _bound(self, d: OrderedDict[int, Any]) -> None:
        while len(d) > self.size:
            d.popitem(last=False)

    def exec(self, info: procfs.ProcessInfo) -> None:
        self.info[info.pid] = info
        self.info.move_to_end(info.pid)
        self._bound(self.info)

    def fork(self, child: int, parent: int) -> None:
        self.forked_by[child] = parent
        self._bound(self.forked_by)
        # A forked child runs its parent's image until it execs.
        # (A reused pid's old entry is replaced or forgotten here.)
        if parent in self.info:
            self.info[child] = self.info[parent]
            self.info.move_to_end(child)
            self._bound(self.info)
        else:
            self.info.pop(child, None)

    def exit(self, pid: int) -> None:
        # Kept for children still being read; pid reuse replaces the entry at next exec.
        self.forked_by.pop(pid, None)

    def parent_pid(self, pid: int) -> int | None:
        return self.forked_by.get(pid)


class ExecCollector:
    """``process`` source: connector + procfs, one reader thread."""

    name = "process"

    def __init__(
        self,
        sensor_id: str,
        host: str,
        proc: Path = Path("/proc"),
        nice: int = -10,
        realtime: bool = True,
    ) -> None:
        self.nice, self.realtime = nice, realtime
        self.priority_note: str | None = None
        self.sensor_id = sensor_id
        self.host = host
        self.proc = proc
        self.boot = procfs.boot_id(proc)
        self.cache = ParentCache()
        self.own_pid = os.getpid()
        self._conn: procconn.ProcConnector | None = None
        self._overruns = 0
        self._pipe: Any = None
        self._reader: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: str | None = None
        self.incomplete = 0
        self.seen = 0

    @property
    def kernel_overruns(self) -> int:
        """Times the kernel dropped events for us (socket buffer full: ``ENOBUFS``)."""
        return self._overruns

    def status(self) -> str:
        if self.error:
            return f"unavailable: {self.error}"
        if self._stop.is_set():
            return "stopped"
        if self._thread is None or not self._thread.is_alive():
            return "unavailable: not running"
        reasons = [self.priority_note] if self.priority_note else []
        if self.kernel_overruns:
            reasons.append(f"kernel dropped events {self.kernel_overruns} times (ENOBUFS)")
        return f"degraded: {'; '.join(reasons)}" if reasons else "ok"

    def start(self, emit: Emit) -> None:
        try:
            self._conn = procconn.ProcConnector()
        except PermissionError:
            self.error = f"process-events connector needs CAP_NET_ADMIN (uid {os.getuid()})"
            return
        except OSError as exc:
            self.error = f"process-events connector: {exc.strerror or exc}"
            return
        # The reader is a process of its own (forked now, before the sensor starts other
        # threads): no other thread can hold its GIL when an exec arrives.
        ctx = multiprocessing.get_context("fork")
        self._pipe, child_end = ctx.Pipe(duplex=False)
        self._reader = ctx.Process(
            target=_reader_main,
            args=(self._conn, child_end, self.nice, self.realtime, self.proc, self.boot),
            name="sigstream-sensor-exec-reader",
            daemon=True,
        )
        self._reader.start()
        child_end.close()
        self._thread = threading.Thread(target=self._run, args=(emit,), name="sensor-exec")
        self._thread.daemon = True
        self._thread.start()

    def _run(self, emit: Emit) -> None:
        while not self._stop.is_set():
            try:
                if not self._pipe.poll(0.5):
                    continue
                batch, overruns, note = self._pipe.recv()
            except (EOFError, OSError) as exc:
                if not self._stop.is_set():
                    self.error = f"exec reader process ended ({type(exc).__name__} {exc})"
                    log.error("process source stopped: %s", self.error)
                return
            self._overruns, self.priority_note = overruns, note
            for ev, info in batch:
                self.handle(ev, emit, info)

    def handle(
        self, ev: procconn.ProcEvent, emit: Emit, info: procfs.ProcessInfo | None = None
    ) -> None:
        """One kernel event; ``info`` is the exec'd process as the reader read it (None:
        read it now)."""
        if ev.kind == "fork" and ev.parent_tgid is not None and ev.pid == ev.tgid:
            self.cache.fork(ev.tgid, ev.parent_tgid)
        elif ev.kind == "exit" and ev.pid == ev.tgid:
            self.cache.exit(ev.tgid)
        elif ev.kind == "exec" and ev.tgid != self.own_pid:
            at_ns = time.time_ns()
            info = info or procfs.snapshot(ev.tgid, self.proc, self.boot)
            ppid = info.parent_pid or self.cache.parent_pid(ev.tgid)
            if ppid is not None and info.parent_pid is None:
                info = _with_parent(info, ppid)
            parent = self._parent(ppid)
            self.cache.exec(info)
            self.seen += 1
            if not info.complete:
                self.incomplete += 1
            emit(process_creation(self.sensor_id, self.host, at_ns, info, parent))

    def _parent(self, ppid: int | None) -> procfs.ProcessInfo | None:
        if ppid is None or ppid <= 0:
            return None
        cached = self.cache.info.get(ppid)
        if cached is not None and cached.pid == ppid:
            return cached  # its exec (or a fork of it) seen: no procfs read needed
        live = procfs.snapshot(ppid, self.proc, self.boot)
        if live.start_ticks is None and cached is not None:
            return cached
        return live

    def known(self, pid: int) -> procfs.ProcessInfo | None:
        """The process ``pid`` as its last exec showed it (for sources whose process may be
        gone by the time they look: the writer of a file, the owner of a socket)."""
        info = self.cache.info.get(pid)
        return info if info is not None and info.pid == pid else None

    def reconfigure(self, _config: Any) -> None:
        """Nothing of this source is configurable at run time."""

    def stop(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.terminate()
            self._reader.join(timeout=2)
            if self._reader.is_alive():
                self._reader.kill()
                self._reader.join(timeout=2)
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _reader_main(
    conn: procconn.ProcConnector, out: Any, nice: int, realtime: bool, proc: Path, boot: str
) -> None:
    """The exec reader process: read the connector, read procfs for each exec at once,
    pass both on. Ends with its parent (the pipe breaks) or on SIGTERM."""
    # Forked from the sensor: its signal handlers are the sensor's. This process ends on
    # SIGTERM (``stop``) and leaves SIGINT and SIGHUP to the sensor.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    note = raise_priority(nice, realtime)
    guard = RealtimeGuard(active=realtime and note is None)
    parent = os.getppid()
    while os.getppid() == parent:
        guarded = guard.check(time.monotonic(), time.thread_time())
        if guarded is not None:
            note = guarded
        try:
            events = conn.read(0.5)
        except OSError:
            return
        if not events:
            continue
        batch = [
            (ev, procfs.snapshot(ev.tgid, proc, boot) if ev.kind == "exec" else None)
            for ev in events
            if ev.kind != "uid"
        ]
        try:
            out.send((batch, conn.lost_overruns, note))
        except (BrokenPipeError, OSError):
            return


class RealtimeGuard:
    """Keeps the real-time exec reader from ever starving the host: an exec storm (a build
    forking thousands of compilers a second) would keep a SCHED_FIFO reader runnable most
    of the time, ahead of every normal process on its core. Over ``budget`` of a core in a
    ``window_s`` window, the reader drops to normal scheduling for ``cooldown_s`` (short
    commands may then go unnamed, counted as incomplete), then goes back to SCHED_FIFO.
    ``check`` returns the note for the heartbeat when the state changes, else None."""

    def __init__(
        self,
        active: bool,
        budget: float = 0.30,
        window_s: float = 1.0,
        cooldown_s: float = 10.0,
        apply: Callable[[bool], None] | None = None,
    ) -> None:
        self.active, self.budget, self.window_s, self.cooldown_s = (
            active,
            budget,
            window_s,
            cooldown_s,
        )
        self.apply = apply or _set_realtime
        self.realtime = active
        self.demotions = 0
        self._start: tuple[float, float] | None = None
        self._until = 0.0

    def check(self, now: float, cpu: float) -> str | None:
        if not self.active:
            return None
        if not self.realtime:
            if now < self._until:
                return None
            self.apply(True)
            self.realtime, self._start = True, (now, cpu)
            return ""  # back to the real-time reader: no note
        if self._start is None or now - self._start[0] < self.window_s:
            if self._start is None:
                self._start = (now, cpu)
            return None
        used = (cpu - self._start[1]) / max(now - self._start[0], 1e-9)
        self._start = (now, cpu)
        if used <= self.budget:
            return None
        self.apply(False)
        self.realtime, self._until = False, now + self.cooldown_s
        self.demotions += 1
        return (
            f"exec storm: the real-time reader used {used:.0%} of a core (budget "
            f"{self.budget:.0%}); normal priority for {self.cooldown_s:g} s, short-lived "
            f"processes may go unnamed ({self.demotions} times so far)"
        )


def _set_realtime(on: bool) -> None:
    policy, priority = (os.SCHED_FIFO, 1) if on else (os.SCHED_OTHER, 0)
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except OSError as exc:
        log.warning("exec reader: cannot change scheduling (%s)", exc)


def raise_priority(nice: int, realtime: bool = True) -> str | None:
    """Let the calling thread (Linux priorities are per thread) run as soon as an exec
    arrives, so it reads procfs before a short-lived process is gone: SCHED_FIFO at the
    lowest real-time priority when allowed (it only ever runs to read an exec: bounded by
    the host's exec rate), else a negative nice value. Measured on a loaded 2-core host,
    50 runs of ``base64 -d``: 50 named with SCHED_FIFO, 49 at nice -15, ~30 at nice 0.
    Returns why it could not (CAP_SYS_NICE missing), else None."""
    if realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return None
        except (OSError, AttributeError) as exc:
            log.warning("exec reader: no SCHED_FIFO (%s), trying nice %d", exc, nice)
    if nice >= 0:
        return "normal priority: short-lived processes may go unnamed"
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:
        log.warning("exec reader keeps normal priority (%s): short-lived processes", exc)
        return f"normal priority ({exc.strerror}): short-lived processes may go unnamed"
    return None


def _with_parent(info: procfs.ProcessInfo, ppid: int) -> procfs.ProcessInfo:
    return replace(info, parent_pid=ppid)
