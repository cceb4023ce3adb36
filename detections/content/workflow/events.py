"""Events in schema form -> the row dicts the engine matches, as the job's parser makes them.

Rule tests and the cost check feed the engine the same shape of row the Spark job hands
its matcher: every column of the flat event schema (None when absent), ``logsource`` as a
mapping and undeclared fields in ``extra``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from schemas.events import MODEL_BY_TYPE, Envelope, Logsource, own_logsource, parse_event
from schemas.generate import event_columns

#: Envelope fields a test event may leave out; tests are about detection fields.
TEST_DEFAULTS: dict[str, Any] = {
    "tenant_id": "test",
    "sensor_id": "test-sensor",
    "host": "TEST-HOST",
    "event_time": "2026-01-01T00:00:00Z",
}


def to_row(event: Envelope) -> dict[str, Any]:
    """The flat row of one validated event (all columns present)."""
    row: dict[str, Any] = dict.fromkeys(event_columns())
    row.update(event.model_dump())
    return row


def test_event(doc: Mapping[str, Any], default_id: str) -> Envelope:
    """A schema event from a test document: keys starting with ``_`` are comments, envelope
    fields get defaults, and the logsource defaults to Windows and the ``event_type`` as
    category, or to the event type's own (``auditd``: linux/auditd)."""
    data = {k: v for k, v in doc.items() if not str(k).startswith("_")}
    for key, value in TEST_DEFAULTS.items():
        data.setdefault(key, value)
    data.setdefault("event_id", default_id)
    if "logsource" not in data and "event_type" in data and not _own_logsource(data):
        category = data["event_type"] if data["event_type"] != "windows_event" else None
        data["logsource"] = {"product": "windows", "category": category}
    return parse_event(data)


def _own_logsource(data: Mapping[str, Any]) -> bool:
    """The event type has a logsource of its own (``auditd`` is linux/auditd): leave it."""
    model = MODEL_BY_TYPE.get(str(data["event_type"]))
    return model is not None and own_logsource(model) != Logsource()


def event_date(row: Mapping[str, Any]) -> str:
    value = row.get("event_time")
    if isinstance(value, datetime):
        return value.astimezone(UTC).date().isoformat()
    return str(value)[:10]
