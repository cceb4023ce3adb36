"""The latency benchmark's pure helpers: what it sends and how it accounts for CPU."""

from __future__ import annotations

import json
import os
import time

import pytest

from bench.common import CpuMeter
from bench.latency import encode_phase, percentile


def test_encode_phase_gives_each_event_a_fresh_id_and_its_sensor_as_key() -> None:
    pool = [{"event_id": "a", "sensor_id": "s1"}, {"event_id": "b", "sensor_id": "s2"}]
    messages = encode_phase(pool, start=1, count=3, run_id="r")
    assert [(key, event_id) for key, event_id, _ in messages] == [
        ("s2", "b-r-1"),
        ("s1", "a-r-2"),
        ("s2", "b-r-3"),
    ]
    assert [json.loads(payload)["event_id"] for _, _, payload in messages] == [
        "b-r-1",
        "a-r-2",
        "b-r-3",
    ]
    assert pool[0]["event_id"] == "a"  # the pool is left as it was


def test_cpu_meter_charges_busy_work_to_this_process() -> None:
    # The expected share is what this process really got: on a loaded machine (CI beside
    # the services) a busy loop gets well under one core, so no fixed floor would hold.
    wall0, cpu0 = time.time(), time.process_time()
    meter = CpuMeter()
    meter.start()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    meter.stop()
    got = (time.process_time() - cpu0) / (time.time() - wall0)
    if not os.path.exists("/proc/stat"):  # not Linux: the meter reports nothing
        assert meter.cores == {}
        return
    assert meter.cores.get("this benchmark", 0.0) == pytest.approx(got, abs=0.15)
    assert meter.cores["this benchmark"] > 0.05
    assert 0.0 < meter.machine_busy <= 1.0
    assert "this benchmark" in meter.summary()


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.99) == 5.0
