"""Fixtures of the fault drills: the private stack, the corpus and the baseline, once per
module. The stack is stopped (and its data wiped) at the end, also when a drill fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.events import Envelope
from tests.drills.runner import DrillOptions, Findings, load_events, run_baseline
from tests.drills.stack import DrillStack, running_stack


@pytest.fixture(scope="module")
def drill_options() -> DrillOptions:
    """Defaults, or SIGSTREAM_DRILLS_RATE / SIGSTREAM_DRILLS_SOURCE (a source tree to run
    the job from, e.g. an export of the commit under test)."""
    source = os.environ.get("SIGSTREAM_DRILLS_SOURCE")
    rate = float(os.environ.get("SIGSTREAM_DRILLS_RATE", DrillOptions.rate))
    return DrillOptions(rate=rate, source=Path(source) if source else None)


@pytest.fixture(scope="module")
def drill_events() -> list[Envelope]:
    from tests.conftest import shared_path

    return load_events(shared_path("otrf"))


@pytest.fixture(scope="module")
def drill_stack(drill_events: list[Envelope]) -> Iterator[DrillStack]:
    with running_stack() as stack:
        yield stack


@pytest.fixture(scope="module")
def drill_baseline(
    drill_stack: DrillStack,
    drill_events: list[Envelope],
    drill_options: DrillOptions,
    tmp_path_factory: pytest.TempPathFactory,
) -> Findings:
    findings = run_baseline(
        drill_stack, drill_events, tmp_path_factory.mktemp("drills"), drill_options
    )
    assert len(findings.ids) >= 100, "the baseline should raise a few hundred findings"
    return findings
