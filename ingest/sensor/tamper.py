"""Tamper evidence: a digest of the sensor's own code, sent in every heartbeat.

The digest covers every Python file the sensor runs from this project (the sensor
package, the agent, client and spool, the event schema): sha256 over their relative
paths and contents, in path order. It is recomputed for each heartbeat, so a file
changed on disk while the sensor runs shows in the next heartbeat, and the backend
raises a finding when it differs from the previous one (docs/sensor.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = (
    "ingest/sensor",
    "ingest/agent.py",
    "ingest/client.py",
    "ingest/spool.py",
    "schemas/events.py",
    "sigstream/commands/sensor.py",
)


def code_files(root: Path = ROOT, parts: Iterable[str] = CODE) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        p = root / part
        out += sorted(p.rglob("*.py")) if p.is_dir() else ([p] if p.is_file() else [])
    return out


def digest_files(files: Iterable[Path], root: Path = ROOT) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        try:
            h.update(hashlib.sha256(f.read_bytes()).digest())
        except OSError:
            h.update(b"unreadable")
    return h.hexdigest()


def sensor_digest(root: Path = ROOT) -> str:
    return digest_files(code_files(root), root)
