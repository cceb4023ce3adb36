"""Pure parts of the fault drills: reading Spark's checkpoint, comparing finding sets,
timing recovery and printing the table. No process, no network: unit-tested in
tests/unit/test_drill_measure.py.

Recovery is read from the job's checkpoint rather than its logs, so it is measured the
same way whether the driver survived the fault or was restarted: Spark writes
``offsets/<N>`` (the Kafka end offsets batch N will read up to) before batch N runs and
``commits/<N>`` after its findings are written, so the commit file's mtime is when the
batch completed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

Offsets = dict[int, int]  # partition -> next offset to read


@dataclass(frozen=True)
class Commit:
    """A completed micro-batch: its id, the offsets it read up to, when it completed."""

    batch_id: int
    offsets: Offsets
    completed_at: float  # epoch seconds (mtime of commits/<N>)


def parse_offsets_file(text: str, topic: str) -> Offsets:
    """``offsets/<N>``: a version line, the batch metadata, then one JSON line per source
    (``{"topic": {"0": 123, "1": 456}}``). Returns the partitions of ``topic``."""
    for line in text.splitlines()[2:]:
        line = line.strip()
        if not line.startswith("{"):
            continue
        sources = json.loads(line)
        if topic in sources:
            return {int(p): int(o) for p, o in sources[topic].items()}
    return {}


def read_commits(checkpoint: Path, topic: str) -> list[Commit]:
    """Every completed batch still in the checkpoint, oldest first (Spark keeps the last
    100 by default, plenty for a drill)."""
    commits_dir, offsets_dir = checkpoint / "commits", checkpoint / "offsets"
    if not commits_dir.is_dir():
        return []
    out: list[Commit] = []
    for path in commits_dir.iterdir():
        if not path.name.isdigit():
            continue  # .crc and temporary files
        batch = int(path.name)
        try:
            offsets = parse_offsets_file((offsets_dir / path.name).read_text(), topic)
            completed = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        out.append(Commit(batch, offsets, completed))
    return sorted(out, key=lambda c: c.batch_id)


def reached(offsets: Mapping[int, int], end: Mapping[int, int]) -> bool:
    """True when every partition with data has been read to its end offset."""
    return all(offsets.get(p, 0) >= o for p, o in end.items() if o > 0)


def first_commit_after(commits: Iterable[Commit], moment: float) -> Commit | None:
    later = [c for c in commits if c.completed_at > moment]
    return min(later, key=lambda c: c.completed_at) if later else None


def first_commit_reaching(commits: Iterable[Commit], end: Mapping[int, int]) -> Commit | None:
    done = [c for c in commits if reached(c.offsets, end)]
    return min(done, key=lambda c: c.completed_at) if done else None


@dataclass(frozen=True)
class Comparison:
    """A drilled run's findings against the undisturbed baseline."""

    baseline: int  # distinct finding ids of the baseline
    drilled: int  # distinct finding ids after the drill
    lost: list[str]  # in the baseline, missing after the drill
    extra: list[str]  # after the drill, not in the baseline
    duplicated: list[str]  # ids stored more than once (e.g. in two indices)
    documents: int  # finding documents after the drill (== drilled when no duplicates)
    group_mismatches: list[str] = field(default_factory=list)  # group ids whose count differs

    @property
    def duplicate_documents(self) -> int:
        """Documents beyond one per distinct id: a finding written twice counts once here."""
        return self.documents - self.drilled

    @property
    def ok(self) -> bool:
        return not (self.lost or self.extra or self.duplicated or self.group_mismatches) and (
            self.documents == self.drilled
        )


def compare(
    baseline: Counter[str],
    drilled: Counter[str],
    documents: int,
    baseline_groups: Mapping[str, int] | None = None,
    drilled_groups: Mapping[str, int] | None = None,
) -> Comparison:
    """lost = baseline - drilled, extra = drilled - baseline, duplicated = ids seen more than
    once; group counts (the analyst-facing number) must match too when given."""
    groups: list[str] = []
    if baseline_groups is not None and drilled_groups is not None:
        keys = set(baseline_groups) | set(drilled_groups)
        groups = sorted(k for k in keys if baseline_groups.get(k) != drilled_groups.get(k))
    return Comparison(
        baseline=len(baseline),
        drilled=len(drilled),
        lost=sorted(set(baseline) - set(drilled)),
        extra=sorted(set(drilled) - set(baseline)),
        duplicated=sorted(i for i, n in drilled.items() if n > 1),
        documents=documents,
        group_mismatches=groups,
    )


@dataclass
class DrillResult:
    """One drill: what was sent, what was found, how long recovery took."""

    drill: str
    events_sent: int
    comparison: Comparison
    fault_at: float  # seconds into the replay when the fault began
    outage_s: float  # fault begin -> fault end (restart issued / service ready)
    recovery_s: float | None  # fault end -> first micro-batch completed afterwards
    caught_up_s: float | None  # fault end -> the job has read everything that was sent
    supervisor_restarts: int = 0  # job exits a supervisor had to restart
    kafka_records: int | None = None  # records in the events topic (== events_sent: no
    # event lost or written twice on the way into Kafka)
    notes: list[str] = field(default_factory=list)

    def row(self) -> list[str]:
        c = self.comparison
        return [
            self.drill,
            f"{self.events_sent:,}",
            f"{c.baseline:,}",
            f"{c.drilled:,}",
            str(len(c.lost)),
            str(c.duplicate_documents),
            _seconds(self.recovery_s),
            _seconds(self.caught_up_s),
            str(self.supervisor_restarts),
        ]


HEADERS = [
    "drill",
    "events sent",
    "findings baseline",
    "findings after",
    "lost",
    "duplicated",
    "recovery s",
    "caught-up s",
    "job restarts",
]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_table(results: Iterable[DrillResult]) -> str:
    """A fixed-width text table (pytest output, CI logs, docs)."""
    rows = [HEADERS, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]

    def line(row: list[str]) -> str:
        rest = zip(row[1:], widths[1:], strict=True)
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in rest]
        return "  ".join(cells)

    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])])
