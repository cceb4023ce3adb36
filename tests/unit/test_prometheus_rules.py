"""The shipped alerting rules (infra/prometheus/) pass ``promtool check`` and their unit
tests (``promtool test rules``), and name only metrics Sigstream exports.

Needs Debian's ``prometheus`` package (promtool; ``.ci/run`` installs it): skipped with a
clear message without it, a failure under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from common.settings import PROJECT_ROOT

FOLDER = PROJECT_ROOT / "infra" / "prometheus"
RULES = FOLDER / "sigstream-rules.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not installed (apt-get install -y -q prometheus; .ci/run does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_rules_pass_promtool_check() -> None:
    done = run("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_example_scrape_config_passes_promtool_check() -> None:
    done = run("check", "config", FOLDER / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass() -> None:
    done = run("test", "rules", FOLDER / "sigstream-rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rule_unit_tests_catch_a_broken_threshold(tmp_path: Path) -> None:
    """The rule tests can fail: a latency SLO moved from 30 s to 300 s breaks them."""
    for name in ("sigstream-rules.yml", "sigstream-rules.test.yml"):
        shutil.copy(FOLDER / name, tmp_path / name)
    broken = tmp_path / "sigstream-rules.yml"
    broken.write_text(broken.read_text().replace("p99_10m > 30", "p99_10m > 300"))
    done = run("test", "rules", tmp_path / "sigstream-rules.test.yml")
    assert done.returncode != 0
    assert "SigstreamEventToFindingLatencyHigh" in done.stdout + done.stderr


def test_every_metric_the_rules_name_is_documented() -> None:
    """A rule on a metric nobody exports would never fire: each sigstream_* name in the
    rules is listed in docs/metrics.md, where each exported metric is."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exprs = " ".join(str(r["expr"]) for g in groups for r in g["rules"])
    names = {
        re.sub(r"_(bucket|sum|count|total)$", "", n)
        for n in re.findall(r"\bsigstream_[a-z0-9_]+", exprs)
    }
    docs = (PROJECT_ROOT / "docs" / "metrics.md").read_text()
    missing = sorted(n for n in names if n not in docs)
    assert not missing, f"not in docs/metrics.md: {missing}"
    assert len(names) >= 8
