"""Fixtures of the cluster tests: the ``cluster`` profile, started once per session.

The profile (3 Kafka brokers, 2 Elasticsearch nodes, Spark master + 2 workers, all on
loopback ports 17077-19301) runs beside the default single-node services and is stopped at
the end of the session only if this session started it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import cluster_config as cc

REPO_ROOT = Path(__file__).resolve().parents[2]
# The full default rule set (as `sigstream detect` loads it) by default; with the Arrow
# engine it costs about as much here as the regression cases' own 113 rules, which
# SIGSTREAM_CLUSTER_TEST_RULES=regression selects.
RULES_MODE = os.environ.get("SIGSTREAM_CLUSTER_TEST_RULES", "all")


@dataclass
class ClusterHandle:
    spec: cc.ClusterSpec
    env: dict[str, str]
    launch_seconds: float  # formatting + spawning the 8 processes
    wait_seconds: float  # waiting for readiness after the baseline ran


@dataclass
class Boot:
    spec: cc.ClusterSpec
    launched: list[str]
    started_at: float
    launch_seconds: float


@pytest.fixture(scope="session")
def cluster_boot() -> Iterator[Boot]:
    """Launch the cluster profile without waiting (it boots while other fixtures work);
    stop it at the end if this session launched it."""
    from infra import cluster as infra_cluster

    spec = cc.ClusterSpec()
    before = infra_cluster.status(spec=spec)
    started_here = not any(s.state == "running" for s in before.values())
    started = time.monotonic()
    try:
        launched = infra_cluster.launch(spec=spec)
        yield Boot(spec, launched, started, time.monotonic() - started)
    finally:
        if started_here:
            infra_cluster.down(spec=spec)


@pytest.fixture(scope="session")
def cluster(cluster_boot: Boot) -> ClusterHandle:
    """The whole cluster profile, ready."""
    from infra import cluster as infra_cluster

    spec = cluster_boot.spec
    waited = time.monotonic()
    infra_cluster.ready(spec=spec, timeout=300.0, launched=cluster_boot.launched)
    waited = time.monotonic() - waited
    env = {**os.environ, **cc.client_env(spec, sys.executable)}
    return ClusterHandle(spec, env, cluster_boot.launch_seconds, waited)


def regression_rule_files(corpus: Path, sigma: Path) -> list[Path]:
    """The rule file of each regression case.

    A case folder mirrors its rule's path (``rules/windows/x/name/`` for
    ``sigma/rules/windows/x/name.yml``); a rule renamed since is found by its id.
    """
    found: list[Path] = []
    missing: set[str] = set()
    for info in sorted(corpus.rglob("info.yml")):
        rel = info.parent.relative_to(corpus)
        path = sigma / rel.parent / f"{rel.name}.yml"
        if path.exists():
            found.append(path)
        else:
            meta = yaml.safe_load(info.read_text())
            missing.add(str(meta["rule_metadata"][0]["id"]))
    if missing:
        for path in sigma.rglob("*.yml"):
            text = path.read_text(errors="replace")
            for rule_id in list(missing):
                if f"id: {rule_id}" in text:
                    found.append(path)
                    missing.discard(rule_id)
            if not missing:
                break
    return sorted(set(found))


@pytest.fixture(scope="session")
def corpus_rules() -> tuple[Path, list[Path]]:
    """(regression corpus folder, rule paths) used by both the single node and the cluster."""
    from tests.conftest import shared_path

    corpus = shared_path("sigma-regression")
    if RULES_MODE == "all":
        from common.settings import get_settings
        from sigstream.cli import default_rule_paths

        return corpus, default_rule_paths(get_settings())
    return corpus, regression_rule_files(corpus, shared_path("sigma"))


@dataclass
class ClusterJob:
    """The driver subprocess of the module and the topics it works on."""

    process: subprocess.Popen[str]
    workdir: Path
    once_suffix: str
    stream_suffix: str

    def log_tail(self, lines: int = 40) -> str:
        text = (self.workdir / "driver.log").read_text(errors="replace")
        kept = [x for x in text.replace("\r", "\n").splitlines() if "[Stage" not in x]
        return "\n".join(kept[-lines:])

    def result(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait for ``<name>.json`` from the driver (or its death) and return it."""
        import json

        path = self.workdir / f"{name}.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.process.poll() is not None and not path.exists():
                raise AssertionError(
                    f"the driver exited ({self.process.returncode}):\n" + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name}.json after {timeout:.0f}s:\n" + self.log_tail())
            time.sleep(0.5)
        return json.loads(path.read_text())


def start_driver(
    handle: ClusterHandle, workdir: Path, corpus: Path, rules: list[Path], max_offsets: int
) -> ClusterJob:
    """Start ``tests.cluster.driver``: one Spark application on the cluster that first
    replays the corpus once, then streams the drill's topic."""
    from infra import cluster as infra_cluster

    tag = uuid.uuid4().hex[:8]
    once, stream = f"cl-{tag}", f"drill-{tag}"
    for suffix in (once, stream):
        for kind in ("events", "dlq"):
            infra_cluster.ensure_topic(handle.spec, f"test.{suffix}.{kind}")
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tests.cluster.driver", "--workdir", str(workdir)]
    cmd += ["--inputs", str(corpus), "--once-suffix", once, "--stream-suffix", stream]
    cmd += ["--max-offsets", str(max_offsets)]
    for rule in rules:
        cmd += ["--rules", str(rule)]
    with (workdir / "driver.log").open("w") as log:
        process = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=handle.env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
    return ClusterJob(process, workdir, once, stream)
