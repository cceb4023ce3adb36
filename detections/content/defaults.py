"""Where detection content is read from when none is named: the shared SigmaHQ corpus
when present, else the project's own rules; and the project's own correlation rules."""

from __future__ import annotations

from pathlib import Path

from common.settings import PROJECT_ROOT, Settings

#: The SigmaHQ rule folders run by default, one per product the schema carries events for.
RULE_PRODUCTS = ("windows", "linux", "macos")

#: The project's own Sigma rules (each with true- and false-positive tests).
OWN_RULES = PROJECT_ROOT / "detections" / "rules"
#: The project's own correlation rules (and their base rules), run by default.
OWN_CORRELATIONS = PROJECT_ROOT / "detections" / "correlation" / "rules"
#: Schema events bundled with the package (demo fallback, rule cost sampling).
SAMPLE_EVENTS = PROJECT_ROOT / "ingest" / "samples" / "sensor_events.jsonl"


def default_rule_paths(settings: Settings) -> list[Path]:
    """SigmaHQ's Windows, Linux and macOS rules when the shared corpus is present, else
    the project's own."""
    sigma = settings.shared_data / "sigma"
    candidates = [
        *(sigma / "rules" / product for product in RULE_PRODUCTS),
        sigma / "rules-emerging-threats",
        *(sigma / "rules-threat-hunting" / product for product in RULE_PRODUCTS),
    ]
    found = [p for p in candidates if p.is_dir()]
    return found or [OWN_RULES]


def correlation_paths(rules: list[Path] | None, settings: Settings) -> list[Path]:
    """Where correlations are read: the job's rule folders, plus the project's own
    correlation rules when the default rule set is used."""
    if rules:
        return list(rules)
    return [*default_rule_paths(settings), OWN_CORRELATIONS]
