"""Fault drills with exact counts (issue 8): while a known corpus is replayed into the
detection job, (a) kill -9 the job and restart it, (b) restart the Kafka broker, (c) stop
Elasticsearch for 60 s. Afterwards the findings equal those of an undisturbed run: 0 lost,
0 duplicated; the recovery time of each is reported (docs/fault-drills.md).

Everything runs on a private Kafka + Elasticsearch (tests/drills/stack.py), never on the
shared services. About 10 minutes on two busy cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.events import Envelope
from tests.conftest import SUMMARY_LINES
from tests.drills.measure import DrillResult, render_table
from tests.drills.runner import DRILLS, DrillOptions, Findings, run_drill
from tests.drills.stack import DrillStack

pytestmark = [pytest.mark.integration, pytest.mark.drill, pytest.mark.timeout(1200)]

RESULTS: list[DrillResult] = []


@pytest.mark.parametrize("drill", DRILLS)
def test_drill_loses_and_duplicates_nothing(
    drill: str,
    drill_stack: DrillStack,
    drill_events: list[Envelope],
    drill_baseline: Findings,
    drill_options: DrillOptions,
    tmp_path: Path,
) -> None:
    result = run_drill(drill_stack, drill, drill_events, drill_baseline, tmp_path, drill_options)
    RESULTS.append(result)
    table = render_table(RESULTS)
    SUMMARY_LINES[:] = [x for x in SUMMARY_LINES if not x.startswith("drills:")]
    SUMMARY_LINES.extend(f"drills: {line}" for line in table.splitlines())
    SUMMARY_LINES.extend(f"drills: {r.drill}: {n}" for r in RESULTS for n in r.notes)
    print(table)
    c = result.comparison
    assert result.events_sent == len(drill_events)
    assert result.kafka_records == result.events_sent, "the replay lost or doubled events"
    assert not any("not delivered" in n for n in result.notes), result.notes
    assert c.lost == [], f"{len(c.lost)} findings lost, e.g. {c.lost[:5]}"
    assert c.duplicated == [] and c.duplicate_documents == 0
    assert c.extra == [], f"{len(c.extra)} findings not in the baseline, e.g. {c.extra[:5]}"
    assert c.group_mismatches == [], f"group counts differ: {c.group_mismatches[:5]}"
    assert c.drilled == len(drill_baseline.ids)
    assert result.recovery_s is not None, "no micro-batch completed after the fault"
    assert result.caught_up_s is not None
