"""CLI glue for Sigma correlation rules: the companion query ``sigstream detect`` starts,
and ``sigstream rules correlations`` (what loads, what is quarantined and why)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.settings import get_settings
from detections.content.defaults import OWN_CORRELATIONS, correlation_paths

if TYPE_CHECKING:
    from common.settings import Settings
    from detections.correlation.query import CorrelationContent
    from detections.stream.job import Companion, JobConfig

__all__ = ["OWN_CORRELATIONS", "app", "correlation_paths", "load_verbose", "with_correlations"]

app = typer.Typer()
err = Console(stderr=True)
console = Console()


def load_verbose(paths: list[Path], settings: Settings) -> CorrelationContent:
    from detections.compiler.plan import load_placeholders
    from detections.correlation.query import load_content

    content = load_content(paths, load_placeholders(settings.placeholders_file))
    err.print(
        f"  {len(content.specs)} correlation rule(s) over {len(content.plan.rules)} base rule(s), "
        f"{len(content.rejections)} quarantined"
    )
    for r in content.rejections:
        message = escape(" ".join(r.message.split()))
        err.print(
            f"  [yellow]correlation quarantined[/yellow] {r.reason}: {message}",
            highlight=False,
            soft_wrap=True,
        )
    return content


def with_correlations(
    cfg: JobConfig, rules: list[Path] | None, settings: Settings
) -> tuple[JobConfig, list[Companion]]:
    """The job config that feeds the correlations (their base rules' matches go to the
    matches topic; ``generate: false`` base rules write no findings of their own: Sigma
    v2), and the correlation stage as a companion (none without correlations). Per-key
    lateness ``SIGSTREAM_CORRELATION_LATENESS_S`` (60 s), horizon
    ``SIGSTREAM_CORRELATION_HORIZON_S`` (0: none), timer bound ``SIGSTREAM_CORRELATION_TTL_S``
    (1 h)."""
    from detections.correlation.compile import correlation_only_rule_ids
    from detections.correlation.query import feeding
    from detections.correlation.stage import CorrelationStage, correlation_config

    content = load_verbose(correlation_paths(rules, settings), settings)
    if not content.specs:
        return cfg, []
    silent = correlation_only_rule_ids(content.specs)
    if silent:
        err.print(f"  {len(silent)} base rule(s) only feed correlations (generate: false)")
    return feeding(cfg, content), [CorrelationStage(content, correlation_config(settings))]


@app.command("correlations")
def rules_correlations(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Rule files or folders (default: the job's, plus our own)."),
    ] = None,
) -> None:
    """List the correlation rules the job would run, and the quarantined ones with why.

    Exits 1 when a correlation is quarantined.
    """
    s = get_settings()
    content = load_verbose(correlation_paths(paths, s), s)
    table = Table(title="Sigma correlation rules")
    for column in ("correlation", "type", "group-by", "timespan", "condition", "generate"):
        table.add_column(column)
    for spec in content.specs:
        table.add_row(
            spec.title,
            spec.type,
            ", ".join(spec.group_by),
            f"{spec.timespan_s}s",
            spec.condition.describe(),
            "yes" if spec.generate else "no",
        )
    console.print(table)
    if content.rejections:
        raise typer.Exit(1)
