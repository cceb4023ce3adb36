"""The sub-commands of ``sigstream``, one module per command group. Each defines a
``typer.Typer`` named ``app``; ``sigstream.cli``, the composition root, mounts them all
(and nothing else does). Commands resolve the settings; the libraries they call take
settings and client options as arguments."""

from sigstream.commands import (
    alerts,
    canary,
    correlations,
    fleet,
    gateway,
    infra,
    rules,
    sensor,
    sensors,
    triage,
)

__all__ = [
    "alerts",
    "canary",
    "correlations",
    "fleet",
    "gateway",
    "infra",
    "rules",
    "sensor",
    "sensors",
    "triage",
]
