"""The drills' private Kafka + Elasticsearch: its own ports and data folder.

The drills kill and restart services, so they never touch the shared stack (9092/9093,
9200/9300) or the cluster profile (17077-19301): the private stack listens on 29092/29093
(Kafka) and 29200/29300 (Elasticsearch) and keeps its data, pid files and configs under
``.run/drills/``; only the downloads in ``.cache/`` are shared. It is run by the same
``infra.services`` code as ``sigstream infra up``, with a ``Settings`` object instead of
the environment, so a restart in a drill is exactly an operator's ``infra down``/``up``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.settings import PROJECT_ROOT, Settings, get_settings
from infra import services
from infra.proc import progress

RUN_DIR = PROJECT_ROOT / ".run" / "drills"
KAFKA_PORT, KAFKA_CONTROLLER_PORT = 29092, 29093
ES_PORT, ES_TRANSPORT_PORT = 29200, 29300
SHARED_PORTS = {9092, 9093, 9200, 9300}


def drill_settings(run_dir: Path = RUN_DIR) -> Settings:
    """Settings of the private stack (the shared cache, everything else its own)."""
    return Settings(
        cache_dir=get_settings().cache_dir,
        run_dir=run_dir,
        kafka_bootstrap=f"127.0.0.1:{KAFKA_PORT}",
        kafka_controller_port=KAFKA_CONTROLLER_PORT,
        es_hosts=[f"http://127.0.0.1:{ES_PORT}"],
        es_transport_port=ES_TRANSPORT_PORT,
        kafka_heap="384m",
        es_heap="512m",
        checkpoint_dir=run_dir / "checkpoints",
    )


def check_isolated(settings: Settings) -> None:
    """Refuse to run if any address or folder of the private stack is the shared one's."""
    shared = get_settings()
    where, theirs = services.layout(settings), services.layout(shared)
    ports = {KAFKA_PORT, KAFKA_CONTROLLER_PORT, ES_PORT, ES_TRANSPORT_PORT}
    clashes = ports & SHARED_PORTS
    folders = {
        "kafka": (where.kafka_run, theirs.kafka_run),
        "elasticsearch": (where.es_run, theirs.es_run),
    }
    same = [name for name, (a, b) in folders.items() if a.resolve() == b.resolve()]
    if clashes or same or settings.kafka_bootstrap == shared.kafka_bootstrap:
        raise RuntimeError(f"the drill stack would share {sorted(clashes) or same}")


@dataclass
class DrillStack:
    """Handle on the running private stack: addresses, and the faults the drills inject."""

    settings: Settings

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def es_url(self) -> str:
        return self.settings.es_hosts[0]

    def env(self) -> dict[str, str]:
        """SIGSTREAM_* variables that point a ``sigstream`` subprocess at this stack."""
        s = self.settings
        return {
            "SIGSTREAM_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "SIGSTREAM_ES_HOSTS": json.dumps(s.es_hosts),
            "SIGSTREAM_CACHE_DIR": str(s.cache_dir),
        }

    def stop(self, service: str) -> float:
        """Graceful stop (SIGTERM, as ``infra down``); returns the seconds it took."""
        started = time.monotonic()
        services.down([service], settings=self.settings)
        return time.monotonic() - started

    def start(self, service: str, timeout: float = 180.0) -> float:
        """Start and wait until ready (as ``infra up``); returns the seconds it took."""
        started = time.monotonic()
        services.up([service], timeout=timeout, settings=self.settings)
        return time.monotonic() - started


@contextmanager
def running_stack(run_dir: Path = RUN_DIR, wipe: bool = True) -> Iterator[DrillStack]:
    """The private stack for a block; stopped (and its data wiped) at the end, even on
    failure. A stack left running by an interrupted run is reused, then stopped."""
    settings = drill_settings(run_dir)
    check_isolated(settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    progress(f"drill stack: Kafka {settings.kafka_bootstrap}, ES {settings.es_hosts[0]}")
    try:
        services.up(timeout=240.0, settings=settings)
        yield DrillStack(settings)
    finally:
        services.down(settings=settings)
        if wipe and not os.environ.get("SIGSTREAM_DRILLS_KEEP_DATA"):
            services.reset_data(settings=settings)
