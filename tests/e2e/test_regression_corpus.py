"""End to end on the real stack: the SigmaHQ regression events go through Kafka and the
Spark detection job, and every case's own rule must produce a finding in Elasticsearch."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SHARED_DATA, SUMMARY_LINES, shared_path
from tests.e2e.harness import StackRun, run_detection

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

EXPECTED_FAILURES: dict[str, str] = (
    yaml.safe_load((Path(__file__).parent / "expected_failures.yml").read_text()) or {}
)


def _cases() -> list[tuple[str, str, Path]]:
    """(rule id, rule title, case folder) for every regression case."""
    root = SHARED_DATA / "sigma-regression"
    if not root.is_dir():
        return []
    cases = []
    for info in sorted(root.rglob("info.yml")):
        meta = yaml.safe_load(info.read_text())
        rule = meta["rule_metadata"][0]
        cases.append((str(rule["id"]), str(rule.get("title", "")), info.parent))
    return cases


CASES = _cases()


def _params() -> list[Any]:
    if not CASES:
        return [
            pytest.param(
                None,
                None,
                None,
                marks=pytest.mark.skip(
                    reason=f"shared corpus not found at {SHARED_DATA / 'sigma-regression'}"
                ),
            )
        ]
    params = []
    for rule_id, title, folder in CASES:
        marks = []
        if rule_id in EXPECTED_FAILURES:
            marks.append(pytest.mark.xfail(reason=EXPECTED_FAILURES[rule_id], strict=True))
        params.append(pytest.param(rule_id, title, folder, id=f"{folder.name}", marks=marks))
    return params


@pytest.fixture(scope="module")
def regression_run(services: Any, spark: Any, tmp_path_factory: pytest.TempPathFactory) -> StackRun:
    from common.settings import get_settings
    from sigstream.cli import default_rule_paths

    corpus = shared_path("sigma-regression")
    run = run_detection(
        spark,
        inputs=[corpus],
        rule_paths=default_rule_paths(get_settings()),
        workdir=tmp_path_factory.mktemp("regression"),
    )
    fired: dict[str, set[str]] = defaultdict(set)
    for hit in run.findings:
        fired[hit["rule"]["id"]].add(hit["sigstream"]["event"]["event_id"])
    run.extra["fired"] = fired
    passed = sum(1 for rule_id, _, _ in CASES if rule_id in fired)
    others = Counter(
        h["rule"]["id"] for h in run.findings if h["rule"]["id"] not in {c[0] for c in CASES}
    )
    summary = (
        f"\nregression corpus: {passed}/{len(CASES)} cases fired their own rule; "
        f"{len(run.findings)} findings in all from {len(fired)} rules "
        f"({len(others)} other rules fired on these events); "
        f"{run.totals.events} events, {run.totals.rejected} rejected, "
        f"{len(run.plan.rules)} rules loaded"
    )
    SUMMARY_LINES.append(summary)
    print(summary)
    return run


@pytest.mark.parametrize(("rule_id", "title", "folder"), _params())
def test_case_fires_its_rule(
    regression_run: StackRun, rule_id: str, title: str, folder: Path
) -> None:
    fired = regression_run.extra["fired"]
    loaded = {str(p.rule.id) for p in regression_run.plan.rules}
    rejected = {str(r.rule_id): r for r in regression_run.plan.rejections}
    if rule_id in rejected:
        r = rejected[rule_id]
        pytest.fail(f"rule {rule_id} ({title}) was not loaded: {r.reason}: {r.message}")
    assert rule_id in loaded, f"rule {rule_id} ({title}) not found under the rule paths"
    assert rule_id in fired, f"rule {rule_id} ({title}) produced no finding for {folder}"


def test_regression_run_is_clean(regression_run: StackRun) -> None:
    """Nothing in the corpus is malformed, and the run wrote each finding exactly once."""
    assert regression_run.totals.rejected == 0
    assert regression_run.totals.events >= len(CASES)
    assert regression_run.totals.created == len(regression_run.findings)
