"""The detection job as a separate, killable process, with an optional supervisor.

``sigstream detect`` runs in its own process group (its own session), so a drill can
``kill -9`` the Python driver *and* its Spark JVM and Python workers at once, and restart it
on the same checkpoint as an operator or an orchestrator would. When the job exits by itself
(say a fault made the streaming query fail) the supervisor restarts it after a short
backoff, like systemd's ``Restart=always``; every such restart is recorded, so a drill can
report that recovery needed one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.proc import progress

# `python -c` rather than the `sigstream` script: the same interpreter as the caller.
CLI = "from sigstream.cli import main; main()"


@dataclass(frozen=True)
class JobSpec:
    """What to run: the job's topics, index, checkpoint and rules, and where to log."""

    workdir: Path
    events_topic: str
    dlq_topic: str
    findings_index: str
    rules: Sequence[Path] = ()
    once: bool = False
    # Run the job from this source tree instead of the installed one (e.g. an export of a
    # commit, to drill a build while the working tree is being edited).
    source: Path | None = None
    # The detect query only: sensor health and correlations judge wall-clock silence and
    # event-time windows, which differ between a paced and an all-at-once replay.
    flags: tuple[str, ...] = ("--no-sensor-health", "--no-correlations")

    @property
    def checkpoint(self) -> Path:
        return self.workdir / "checkpoint"

    @property
    def status_file(self) -> Path:
        return self.workdir / "run" / "detect" / "status.json"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-c", CLI, "detect", "--no-deployments", *self.flags]
        cmd += ["--checkpoint", str(self.checkpoint)]
        for rule in self.rules:
            cmd += ["--rules", str(rule)]
        if self.once:
            cmd.append("--once")
        return cmd

    def env(self, stack_env: Mapping[str, str]) -> dict[str, str]:
        source = {"PYTHONPATH": str(self.source)} if self.source else {}
        return {
            **os.environ,
            **source,
            **stack_env,
            "SIGSTREAM_EVENTS_TOPIC": self.events_topic,
            "SIGSTREAM_DLQ_TOPIC": self.dlq_topic,
            "SIGSTREAM_FINDINGS_INDEX": self.findings_index,
            # The status file and any deployment store stay inside the drill's folder.
            "SIGSTREAM_RUN_DIR": str(self.workdir / "run"),
            "SIGSTREAM_DEPLOY_DIR": str(self.workdir / "deploy"),
            "PYTHONUNBUFFERED": "1",
            # No console progress bars in the job's log.
            "PYSPARK_SUBMIT_ARGS": "--conf spark.ui.showConsoleProgress=false pyspark-shell",
        }


@dataclass
class Exit:
    """The job ended without being asked to: when, and with what code."""

    at: float  # epoch seconds
    code: int | None


@dataclass
class DetectJob:
    """One logical job (one checkpoint), possibly several processes over its life."""

    spec: JobSpec
    stack_env: Mapping[str, str]
    supervise: bool = True
    backoff_s: float = 3.0
    process: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)
    unexpected_exits: list[Exit] = field(default_factory=list)
    _stopping: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _watcher: threading.Thread | None = None

    def start(self) -> None:
        """Launch a process (in a new session: its own process group)."""
        with self._lock:
            self.spec.workdir.mkdir(parents=True, exist_ok=True)
            log = self.spec.workdir / f"job-{len(self.starts) + 1}.log"
            with log.open("wb") as out:
                self.process = subprocess.Popen(
                    self.spec.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.spec.env(self.stack_env),
                    cwd=self.spec.source,
                    start_new_session=True,
                )
            self.starts.append(time.time())
        if self.supervise and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> int:
        """SIGKILL the whole process group (driver, Spark JVM, Python workers); return the
        number of processes that were in it."""
        assert self.process is not None
        pgid = self.process.pid
        members = _group_members(pgid)
        with self._lock:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=30)
            # Wait until no member of the group is left (the JVM may take a moment).
            deadline = time.monotonic() + 30
            while _group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
        return len(members)

    def _watch(self) -> None:
        """Supervisor: restart the job whenever it exits without being asked to."""
        while not self._stopping:
            time.sleep(0.5)
            process = self.process
            if process is None or process.poll() is None:
                continue
            with self._lock:
                if self._stopping or process is not self.process:
                    continue
                if process.returncode == -signal.SIGKILL:
                    continue  # a drill's kill -9: the drill restarts it itself
                self.unexpected_exits.append(Exit(time.time(), process.returncode))
            progress(
                f"supervisor: the job exited with code {process.returncode}; "
                f"restarting it in {self.backoff_s:.0f}s (like systemd Restart=always)"
            )
            time.sleep(self.backoff_s)
            if not self._stopping:
                self.start()

    def wait_exit(self, timeout: float) -> int | None:
        """For ``--once`` runs: the exit code, or None on timeout."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float = 30.0) -> None:
        """Ctrl-C the driver (it stops its query and Spark), then kill what is left."""
        self._stopping = True
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        logs = sorted(self.spec.workdir.glob("job-*.log"), key=lambda p: p.stat().st_mtime)
        if not logs:
            return "(no job log)"
        text = logs[-1].read_text(errors="replace").replace("\r", "\n")
        kept = [x for x in text.splitlines() if "[Stage" not in x]
        # Spark prints the query plan after the error: show the first error lines too.
        errors = [x for x in kept if "Exception" in x or " ERROR " in x][:5]
        return f"{logs[-1]}:\n" + "\n".join([*errors, "...", *kept[-lines:]])


def _group_members(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # fields: state, ppid, pgrp, ...; zombies are gone for our purposes.
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members
