"""Shared fixtures: where the shared corpora are, one Spark session per test run."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from pyspark.sql import SparkSession

    from common.settings import Settings

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
    from common.settings import Settings
    from detections.stream.spark_session import build_session

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
        before = _test_data()
        yield statuses
        if before is not None:
            _remove_new_test_data(*before)


#: Names the tests give their Kafka topics and Elasticsearch indices (with ``unique``).
TEST_TOPIC_PREFIXES = ("test.", "sigstream-test-")
TEST_INDEX_PATTERN = "test-*"


def _test_data() -> tuple[Settings, set[str], set[str]] | None:
    """The settings the run started with, and the test-named topics and indices that
    exist then (None, with a warning, if they cannot be listed: cleanup is then skipped)."""
    from common.settings import get_settings

    settings = get_settings()
    try:
        with _es(settings) as es:
            return settings, _test_topics(settings), _test_indices(es)
    except Exception as exc:  # cleanup is a courtesy: never fail the run for it
        warnings.warn(f"cannot list test topics and indices: {exc}", stacklevel=1)
        return None


def _test_topics(settings: Settings) -> set[str]:
    from infra.kafka import list_topics

    return {t for t in list_topics(settings) if t.startswith(TEST_TOPIC_PREFIXES)}


def _es(settings: Settings) -> Elasticsearch:
    from detections.sinks.elasticsearch import connect

    return connect(settings.es_hosts)


def _test_indices(es: Elasticsearch) -> set[str]:
    return set(es.indices.get(index=TEST_INDEX_PATTERN, expand_wildcards="all"))


def _remove_new_test_data(settings: Settings, topics: set[str], indices: set[str]) -> None:
    """Delete the topics and indices this run created, so a developer's long-running stack
    does not collect gigabytes of test data run after run; what existed before is kept."""
    from infra.kafka import delete_topics

    try:
        delete_topics(settings, sorted(_test_topics(settings) - topics))
        with _es(settings) as es:
            new_indices = sorted(_test_indices(es) - indices)
            for i in range(0, len(new_indices), 20):  # a short URL per request
                es.indices.delete(index=",".join(new_indices[i : i + 20]))
    except Exception as exc:  # cleanup must not turn a green run red
        warnings.warn(f"could not remove the test run's topics and indices: {exc}", stacklevel=1)


#: Lines that tests want shown at the end of the run (e.g. the regression pass count).
SUMMARY_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY_LINES:
        terminalreporter.write_line(line)


@pytest.fixture
def unique() -> str:
    """A short random suffix for topic and index names, so tests never see each other's data."""
    return uuid.uuid4().hex[:10]
