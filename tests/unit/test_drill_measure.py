"""The drills' pure measuring code: checkpoint reading, comparison, recovery, table."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from tests.drills.measure import (
    Commit,
    DrillResult,
    compare,
    first_commit_after,
    first_commit_reaching,
    parse_offsets_file,
    reached,
    read_commits,
    render_table,
)
from tests.drills.stack import SHARED_PORTS, check_isolated, drill_settings

TOPIC = "drill.x.events"
OFFSETS = (
    "v1\n"
    '{"batchWatermarkMs":0,"batchTimestampMs":1764210000000,"conf":{}}\n'
    '{"%s":{"1":120,"0":80}}\n'
)


def _batch(checkpoint: Path, n: int, p0: int, p1: int, at: float | None) -> None:
    (checkpoint / "offsets").mkdir(parents=True, exist_ok=True)
    (checkpoint / "commits").mkdir(parents=True, exist_ok=True)
    text = OFFSETS.replace("%s", TOPIC).replace("120", str(p1)).replace("80", str(p0))
    (checkpoint / "offsets" / str(n)).write_text(text)
    if at is not None:
        commit = checkpoint / "commits" / str(n)
        commit.write_text('v1\n{"nextBatchWatermarkMs":0}')
        os.utime(commit, (at, at))


def test_parse_offsets_file_reads_the_topic_partitions() -> None:
    text = OFFSETS.replace("%s", TOPIC)
    assert parse_offsets_file(text, TOPIC) == {0: 80, 1: 120}
    assert parse_offsets_file(text, "other") == {}


def test_read_commits_only_completed_batches_with_their_times(tmp_path: Path) -> None:
    _batch(tmp_path, 0, 10, 20, at=1000.0)
    _batch(tmp_path, 1, 50, 60, at=1010.0)
    _batch(tmp_path, 2, 90, 99, at=None)  # planned, never committed (killed mid-batch)
    (tmp_path / "commits" / ".1.crc").write_text("x")
    commits = read_commits(tmp_path, TOPIC)
    assert [c.batch_id for c in commits] == [0, 1]
    assert commits[1].offsets == {0: 50, 1: 60}
    assert commits[1].completed_at == 1010.0
    assert read_commits(tmp_path / "missing", TOPIC) == []


def test_reached_ignores_empty_partitions() -> None:
    assert reached({0: 5, 1: 7}, {0: 5, 1: 7})
    assert not reached({0: 5, 1: 6}, {0: 5, 1: 7})
    assert reached({0: 5}, {0: 5, 1: 0})


def test_recovery_is_the_first_commit_after_the_fault_and_the_first_at_the_end() -> None:
    commits = [
        Commit(0, {0: 10}, 100.0),
        Commit(1, {0: 20}, 130.0),
        Commit(2, {0: 30}, 140.0),
        Commit(3, {0: 30}, 150.0),
    ]
    first = first_commit_after(commits, 120.0)
    assert first is not None and first.batch_id == 1
    assert first_commit_after(commits, 200.0) is None
    done = first_commit_reaching(commits, {0: 30})
    assert done is not None and done.batch_id == 2
    assert first_commit_reaching(commits, {0: 31}) is None


def test_compare_counts_lost_extra_and_duplicated() -> None:
    base = Counter({"a": 1, "b": 1, "c": 1})
    same = compare(base, Counter({"a": 1, "b": 1, "c": 1}), 3, {"g": 3}, {"g": 3})
    assert same.ok and same.duplicate_documents == 0
    drilled = Counter({"a": 1, "b": 2, "d": 1})
    c = compare(base, drilled, 4, {"g": 3}, {"g": 4})
    assert c.lost == ["c"] and c.extra == ["d"] and c.duplicated == ["b"]
    assert c.duplicate_documents == 1
    assert c.group_mismatches == ["g"]
    assert not c.ok


def test_a_document_count_above_the_id_count_is_not_ok() -> None:
    ids = Counter({"a": 1})
    assert not compare(ids, ids, documents=2).ok


def test_table_has_a_row_per_drill_with_exact_counts() -> None:
    c = compare(Counter({"a": 1, "b": 1}), Counter({"a": 1, "b": 1}), 2)
    result = DrillResult("es-outage", 30128, c, 10.0, 75.0, 4.2, 20.0, supervisor_restarts=1)
    table = render_table([result])
    header, rule, row = table.splitlines()
    assert header.split()[0] == "drill" and "caught-up" in header
    assert set(rule.replace(" ", "")) == {"-"}
    assert row.split() == ["es-outage", "30,128", "2", "2", "0", "0", "4.2", "20.0", "1"]


def test_the_drill_stack_never_uses_the_shared_ports_or_folders(tmp_path: Path) -> None:
    settings = drill_settings(tmp_path / "drills")
    check_isolated(settings)  # raises on a clash
    ports = {settings.kafka_controller_port, settings.es_transport_port}
    assert not ports & SHARED_PORTS
    assert settings.kafka_bootstrap.endswith(":29092")
    assert settings.es_hosts == ["http://127.0.0.1:29200"]
