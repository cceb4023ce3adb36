"""Where the job sends a rule's findings: active, shadow, nowhere (correlation-only)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from detections.content.deploy.modes import RuleMode
from detections.stream.worker import VALUE_COLUMN, Destinations, finding_documents

EVENT = {
    "event_type": "process_creation",
    "sensor_id": "s1",
    "host": "h1",
    "event_id": "e1",
    "event_time": "2026-01-01T00:00:00Z",
    "tenant_id": "default",
}
INFOS = {
    0: {"id": "00000000-0000-4000-8000-000000000000", "name": "plain"},
    1: {"id": "00000000-0000-4000-8000-000000000001", "name": "base of a correlation"},
    2: {"id": "00000000-0000-4000-8000-000000000002", "name": "in shadow"},
}


def test_correlation_only_rules_write_no_findings_and_modes_still_apply() -> None:
    import json

    batch = pa.RecordBatch.from_pylist([{VALUE_COLUMN: json.dumps(EVENT)}])
    destinations = Destinations(
        "findings",
        "findings-shadow",
        {2: (INFOS[2]["id"], RuleMode(mode="shadow"))},
        silent=frozenset({1}),
    )
    assert destinations.index_for(1, EVENT) is None
    docs = finding_documents(
        batch, np.array([0, 0, 0]), np.array([0, 1, 2]), INFOS, destinations, datetime.now(UTC)
    )
    assert sorted(docs) == ["findings", "findings-shadow"]
    assert [body["rule"]["name"] for _, body in docs["findings"]] == ["plain"]
    assert [body["rule"]["name"] for _, body in docs["findings-shadow"]] == ["in shadow"]
