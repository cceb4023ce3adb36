"""Coverage-guided fuzzing (atheris) of the gateway's body parser and the OTRF adapter.

    pip install -e '.[fuzz]'
    python -m tests.fuzz.atheris_gateway -atheris_runs=200000 [corpus_dir]

Any exception other than the documented rejections is a crash and stops the fuzzer with
the input that caused it (libFuzzer writes it to ``crash-<sha1>``).
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import UTC, datetime

import atheris

# Heavy dependencies first, uninstrumented: coverage guidance is for our own code.
import pydantic  # noqa: F401
import zstandard  # noqa: F401

import schemas.events  # noqa: F401

with atheris.instrument_imports():
    from ingest.adapters import AdapterError, to_event
    from ingest.adapters.otrf import record_from_line
    from ingest.gateway.parse import BatchError, Identity, Limits, parse_batch

NOW = datetime(2026, 11, 27, tzinfo=UTC)
ME = Identity("acme", "ws01")
LIMITS = Limits(max_body_bytes=1 << 20, max_decoded_bytes=1 << 22, max_event_bytes=8192)
ENCODINGS = ("identity", "gzip", "zstd")


def one_input(data: bytes) -> None:
    if not data:
        return
    encoding = ENCODINGS[data[0] % len(ENCODINGS)]
    body = data[1:]
    try:
        batch = parse_batch(body, ME, LIMITS, NOW, encoding)
    except BatchError as exc:
        assert exc.reason
        return
    for r in batch.rejects:
        assert r.reason and r.message
    for line in body.split(b"\n")[:20]:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        with contextlib.suppress(AdapterError):
            to_event(record_from_line(obj), origin="atheris#1")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
