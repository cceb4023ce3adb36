"""The detect job's per-record check (``detections.stream.parse.record_problem``) and the worker's
use of it (``detections.stream.worker.checked_records``): every way one raw Kafka record can be
bad gets its own reason, and never fails the records around it. Records come from
tests/fixtures/bad_input/kafka (written to Kafka directly, bypassing the gateway)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from detections.stream.parse import MALFORMED, MAX_RECORD_BYTES, record_problem
from detections.stream.worker import REASON_COLUMN, VALUE_COLUMN, checked_records
from sigstream.cli import SAMPLE_EVENTS

KAFKA = Path(__file__).resolve().parent.parent / "fixtures" / "bad_input" / "kafka"
FILES = sorted(KAFKA.glob("*.ndjson"))

#: The reason each kind of bad record gets (its start: the rest names the place).
EXPECTED = {
    "invalid_utf8": "invalid UTF-8 at byte ",
    "lone_surrogate": "lone UTF-16 surrogate escape",
    "integer_range": "integer of ",
    "non_finite": "",  # per file, below
    "too_deep": "nesting deeper than 16",
    "wrong_type": "invalid event: process_creation.",
    "malformed": "malformed JSON: ",
}
NON_FINITE = {
    "non_finite__seq_nan": "malformed JSON: NaN is not a JSON number",
    "non_finite__commandline_infinity": "malformed JSON: -Infinity is not a JSON number",
    "non_finite__seq_1e999": "number out of the range of a 64-bit float",
}


def record(path: Path) -> bytes:
    return path.read_bytes().rstrip(b"\n")


def expected_reason(stem: str) -> str:
    return NON_FINITE.get(stem) or EXPECTED[stem.split("__")[0]]


def oversize() -> bytes:
    event = json.loads(SAMPLE_EVENTS.read_bytes().splitlines()[0])
    event["CommandLine"] = "A" * (300 * 1024)
    return json.dumps(event).encode()


def test_corpus_is_there() -> None:
    assert len(FILES) == 24
    assert {p.stem.split("__")[0] for p in FILES} == set(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_record_is_refused_with_its_reason(path: Path) -> None:
    reason = record_problem(record(path))
    assert reason is not None and reason.startswith(expected_reason(path.stem)), reason
    assert reason.isascii()  # a Kafka header, whatever the record held


def test_specific_reasons() -> None:
    by_name = {p.stem: record_problem(record(p)) for p in FILES}
    assert by_name["integer_range__seq_5000_digits"] == (
        "integer of more than 4,300 digits is out of the 64-bit range"
    )
    assert by_name["integer_range__seq_past_int64"] == (
        "integer of 19 digits is out of the 64-bit range"
    )
    assert by_name["lone_surrogate__in_extra_key"] == (
        "lone UTF-16 surrogate escape in the key 'k\\ud83d'"
    )
    assert "'WS\\udc0001'" in str(by_name["lone_surrogate__low_in_host"])
    assert by_name["wrong_type__undeclared_top_level_field"] == (
        "invalid event: process_creation.NotAField: Extra inputs are not permitted"
    )


def test_oversize_empty_and_valid_records() -> None:
    assert record_problem(oversize()) == (
        f"record of {len(oversize()):,} bytes is over the {MAX_RECORD_BYTES:,}-byte limit"
    )
    assert record_problem(None) == "empty record"
    assert record_problem(b"[1]") == f"{MALFORMED} (a JSON list)"
    for line in SAMPLE_EVENTS.read_bytes().splitlines():
        assert record_problem(line) is None
    events = [json.loads(line) for line in SAMPLE_EVENTS.read_bytes().splitlines()]
    pair = next(e for e in events if e["event_type"] == "process_creation")
    pair["CommandLine"] = "emoji \U0001f600 and NUL \x00"  # a surrogate pair, escaped
    assert record_problem(json.dumps(pair).encode()) is None


def test_worker_keeps_good_records_and_reports_each_bad_one_with_its_origin() -> None:
    """One Arrow batch as the job's tasks get it: JVM reasons for some records (kept, or
    refined when generic), the task's own for those the JVM let through."""
    good = SAMPLE_EVENTS.read_bytes().splitlines()
    bad = [record(p) for p in FILES] + [oversize()]
    values = [*good, *bad, b"not json at all", good[0]]
    jvm = [None] * len(good) + [None] * len(bad) + [MALFORMED, "unknown event_type x"]
    batch = pa.RecordBatch.from_pydict(
        {
            REASON_COLUMN: pa.array(jvm, pa.string()),
            VALUE_COLUMN: pa.array(values, pa.binary()),
            "topic": ["t"] * len(values),
            "partition": pa.array([0] * len(values), pa.int32()),
            "offset": pa.array(range(len(values)), pa.int64()),
        }
    )
    valid, refused = checked_records(batch)
    assert valid.tolist() == [True] * len(good) + [False] * (len(bad) + 2)
    offsets = [offset for _, _, offset, _ in refused]
    # every bad record the JVM let through, plus the malformed one refined; the record
    # with a specific JVM reason keeps it (the driver writes that one)
    assert offsets == [*range(len(good), len(good) + len(bad)), len(values) - 2]
    assert refused[-1] == ("t", 0, len(values) - 2, "malformed JSON: Expecting value at column 1")
    for (_, _, _, reason), path in zip(refused, FILES, strict=False):
        assert reason.startswith(expected_reason(path.stem))


GATEWAY_CORPUS = sorted(KAFKA.parent.glob("*.ndjson"))
#: Refused by the gateway for who sent them (credential checks), not for what they are:
#: as raw Kafka records they are events.
IDENTITY_ONLY = {"sensor_mismatch", "tenant_mismatch"}
#: The gateway's reason code -> the job's reason.
JOB_REASON = {
    "invalid_json": "malformed JSON: ",
    "invalid_utf8": "invalid UTF-8 at byte ",
    "not_an_object": f"{MALFORMED} (a JSON ",
    "schema_invalid": "invalid event: ",
    "schema_version": "invalid event: process_creation.schema_version: Input should be 1",
    "unknown_event_type": "invalid event: event: Input tag 'teleport'",
    "invalid_unicode": "lone UTF-16 surrogate escape",
    # NaN is not JSON at all for the job's parser; the others are numbers out of range.
    "number_out_of_range": ("integer of ", "number out of the range", "malformed JSON: NaN"),
}


@pytest.mark.parametrize("path", GATEWAY_CORPUS, ids=[p.stem for p in GATEWAY_CORPUS])
def test_the_gateway_corpus_written_to_kafka_directly(path: Path) -> None:
    """Each input the gateway refuses for its content is refused by the job too."""
    code = path.stem.split("__")[0]
    reason = record_problem(record(path))
    if code in IDENTITY_ONLY:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(JOB_REASON[code]), reason
