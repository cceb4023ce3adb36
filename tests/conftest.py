"""Shared fixtures: where the shared corpora are, one Spark session per test run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SIGSTREAM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path in ../shared/data, or skip the test with a clear message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared corpus not found at {path} (clone with ../shared beside the repo)")
    return path


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """The one local Spark session of the run, built exactly as the detection job builds it
    (Kafka connector jars on spark.jars), so tests exercise the production code path."""
    from detections.spark import build_session
    from sigstream.settings import Settings

    settings = Settings(spark_master="local[2]", spark_driver_memory="2g")
    session = build_session(
        settings, app_name="sigstream-tests", extra_conf={"spark.sql.shuffle.partitions": "2"}
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def services() -> Iterator[dict[str, Any]]:
    """Kafka and Elasticsearch, ready, for the whole session. Stops only what it started:
    a developer's running stack is used as is and left running."""
    from infra import services as infra_services

    with infra_services.running(timeout=240.0) as statuses:
        yield statuses


#: Lines that tests want shown at the end of the run (e.g. the regression pass count).
SUMMARY_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY_LINES:
        terminalreporter.write_line(line)


@pytest.fixture
def unique() -> str:
    """A short random suffix for topic and index names, so tests never see each other's data."""
    return uuid.uuid4().hex[:10]
