"""A bounded atheris run of the gateway harness (skipped when atheris is not installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parents[2]


def test_atheris_gateway_harness_finds_no_crash(tmp_path: Path) -> None:
    if os.environ.get("HYPOTHESIS_PROFILE") != "fuzz":
        pytest.skip("long fuzz run: HYPOTHESIS_PROFILE=fuzz python -m pytest -m fuzz (make fuzz)")
    pytest.importorskip("atheris", reason="atheris not installed (pip install -e '.[fuzz]')")
    runs = os.environ.get("SIGSTREAM_ATHERIS_RUNS", "50000")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.atheris_gateway", f"-atheris_runs={runs}"],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr
