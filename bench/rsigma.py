"""Run rsigma (the Rust Sigma engine, ``cargo install rsigma``) on the benchmark's events.

rsigma is the reference point of issue 4: same events, same rules, and the two engines
must agree on the matches. Two things make the comparison like for like:

* **Same rules.** rsigma gets a folder with exactly the rule files Sigstream planned (the
  rules Sigstream rejects, e.g. other products or unknown fields, are left out).
* **Same routing.** Sigstream evaluates a rule only on events of its logsource route
  (``detections.compiler.logsources``). rsigma's own ``--logsource-routing`` is conflict-based and
  knows nothing of Sigma's umbrella category ``registry_event`` (which covers
  ``registry_add/set/delete/rename`` events), so a generated processing pipeline adds
  each route as a condition on tag fields of the flattened events (``bench.dataset``):
  ``_sigstream_event_type`` for categories, ``_sigstream_service`` for services.
  ``--logsource-routing`` is still on, for rsigma's speed; the added conditions make it exact.

rsigma's ``engine eval`` is single-threaded (one event after the other on one core); its
rule load time is measured with an empty input and reported apart from the event rate.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.common import CACHE_DIR, progress
from bench.dataset import (
    SAMPLE_SCALE,
    TAG_BUCKET,
    TAG_CATEGORY,
    TAG_EVENT_TYPE,
    TAG_PRODUCT,
    TAG_SERVICE,
)
from detections.compiler.logsources import CATEGORY_EVENT_TYPES


def binary() -> str | None:
    """The rsigma executable: $RSIGMA, then PATH, then ~/.cargo/bin."""
    candidates = [os.environ.get("RSIGMA"), shutil.which("rsigma")]
    candidates.append(str(Path.home() / ".cargo" / "bin" / "rsigma"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.strip().splitlines() or ["?"])[0]


def write_rule_folder(files: list[Path], root: Path, dest: Path) -> Path:
    """Copy ``files`` (relative layout under ``root`` kept) into a fresh folder ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    for src in files:
        target = dest / src.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return dest


def routing_pipeline(categories: set[str], services: set[str], dest: Path) -> Path:
    """A pipeline that adds Sigstream's routing to rsigma's rules as detection conditions."""
    items: list[dict[str, Any]] = []
    for category in sorted(categories):
        types = CATEGORY_EVENT_TYPES.get(category)
        if types is None:
            continue
        items.append(
            {
                "id": f"route_category_{category}",
                "type": "add_condition",
                "conditions": {TAG_EVENT_TYPE: list(types) if len(types) > 1 else types[0]},
                "rule_conditions": [{"type": "logsource", "category": category}],
            }
        )
    for service in sorted(services):
        items.append(
            {
                "id": f"route_service_{service}",
                "type": "add_condition",
                "conditions": {TAG_SERVICE: service},
                "rule_conditions": [{"type": "logsource", "service": service}],
            }
        )
    doc = {"name": "sigstream-routing", "priority": 10, "transformations": items}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def sample_threshold(fraction: float) -> int:
    return max(1, min(SAMPLE_SCALE, round(fraction * SAMPLE_SCALE)))


def sample_file(source: Path, threshold: int) -> tuple[Path, int]:
    """The events of ``source`` (rsigma NDJSON) in the sample, written once and reused."""
    if threshold >= SAMPLE_SCALE:
        with source.open("rb") as handle:
            return source, sum(1 for _ in handle)
    dest = source.with_name(f"{source.name.removesuffix('.ndjson')}.sample{threshold}.ndjson")
    count_file = dest.with_suffix(".count")
    if dest.exists() and count_file.exists():
        return dest, int(count_file.read_text())
    progress(f"writing rsigma's sample ({threshold / SAMPLE_SCALE:.1%}) of {source.name} …")
    prefix = b'{"' + TAG_BUCKET.encode() + b'":'
    count = 0
    with source.open("rb") as src, dest.open("wb") as out:
        for line in src:
            if not line.startswith(prefix):
                raise ValueError(f"{source}: line without a leading {TAG_BUCKET}")
            end = line.index(b",", len(prefix))
            if int(line[len(prefix) : end]) < threshold:
                out.write(line)
                count += 1
    count_file.write_text(str(count))
    return dest, count


@dataclass
class RsigmaRun:
    events: int
    seconds: float
    load_seconds: float
    cpu_seconds: float
    peak_rss_kb: int
    matches: int
    per_rule: Counter[str] = field(default_factory=Counter)
    rules_loaded: str = ""
    stderr_tail: str = ""

    @property
    def eval_seconds(self) -> float:
        return max(self.seconds - self.load_seconds, 1e-9)


def _command(exe: str, rules: Path, pipeline: Path, events: Path) -> list[str]:
    return [
        exe,
        "engine",
        "eval",
        "--rules",
        str(rules),
        "--pipeline",
        str(pipeline),
        "--event",
        f"@{events}",
        "--logsource-routing",
        "--logsource-field-map",
        f"product={TAG_PRODUCT},service={TAG_SERVICE},category={TAG_CATEGORY}",
        "--output-format",
        "ndjson",
        "--color",
        "never",
    ]


def _timed(cmd: list[str], stdout: Path) -> tuple[float, float, int, str]:
    """(wall s, cpu s, peak RSS kB, stderr) of one child process, measured with wait4."""
    err_path = stdout.with_suffix(".stderr")
    with stdout.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text(errors="replace")
    # rsigma exits 0 with or without matches (1 only with --fail-on-detection); >1 is an error.
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"rsigma failed ({proc.returncode}): {stderr[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, stderr


def rule_id_of(match: dict[str, Any]) -> str | None:
    """The rule id of one rsigma match line (tolerant of its output layout)."""
    for key in ("rule_id", "id"):
        if isinstance(match.get(key), str):
            return str(match[key])
    rule = match.get("rule")
    if isinstance(rule, dict) and isinstance(rule.get("id"), str):
        return str(rule["id"])
    return None


def run(exe: str, rules: Path, pipeline: Path, events: Path, n_events: int) -> RsigmaRun:
    """Evaluate ``events`` with rsigma; count matches per rule id."""
    work = CACHE_DIR / "rsigma-out"
    work.mkdir(parents=True, exist_ok=True)
    empty = work / "empty.ndjson"
    empty.write_text("")
    load_s, _, _, load_err = _timed(_command(exe, rules, pipeline, empty), work / "load.out")
    loaded = next((ln for ln in load_err.splitlines() if re.match(r"Loaded \d+ ", ln)), "")
    progress(
        f"rsigma: {loaded or 'rules loaded'} in {load_s:.1f}s; evaluating {n_events:,} events …"
    )
    out = work / "matches.ndjson"
    seconds, cpu, rss, stderr = _timed(_command(exe, rules, pipeline, events), out)
    per_rule: Counter[str] = Counter()
    unknown = 0
    with out.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            rule_id = rule_id_of(json.loads(line))
            if rule_id is None:
                unknown += 1
            else:
                per_rule[rule_id] += 1
    if unknown:
        raise RuntimeError(f"{unknown} rsigma output lines without a rule id; see {out}")
    return RsigmaRun(
        events=n_events,
        seconds=seconds,
        load_seconds=load_s,
        cpu_seconds=cpu,
        peak_rss_kb=rss,
        matches=sum(per_rule.values()),
        per_rule=per_rule,
        rules_loaded=loaded,
        stderr_tail="\n".join(stderr.strip().splitlines()[-3:]),
    )
