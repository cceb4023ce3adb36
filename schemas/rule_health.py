"""The rule-health index (``<findings index>-rule-health``): one document per deployed
rule, written by the canary runner (docs/canaries.md) and listed by
``sigstream rules health``. Its Elasticsearch mappings are generated from this model.

``last_proven`` is the time a canary of the rule last came back as a finding in
Elasticsearch (its proven end-to-end firing); ``latency_s`` that round's injected ->
finding-visible time. ``pending_*`` describe the round in flight, so a restarted runner
(or ``canary run --once`` from cron) evaluates the round an earlier process injected.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

#: ok: its canary fired; not_firing: no finding within the timeout; no_tests: no
#: true-positive test to build a canary from; pending: first round in flight; quarantined,
#: shadow, killed: the deployment's or the job's view of the rule (shadow rules fire into
#: the shadow index: proven, but analysts do not see them).
RuleHealthState = Literal[
    "ok", "not_firing", "no_tests", "pending", "quarantined", "shadow", "killed"
]


class RuleHealth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_id: str
    title: str
    state: RuleHealthState
    mode: str | None = None  # deployment mode when last evaluated (active, shadow, ...)
    cause: str | None = None  # why it is not firing, when known
    tests: int = 0  # true-positive test events canaries are built from
    updated: datetime
    last_injected: datetime | None = None
    last_proven: datetime | None = None
    latency_s: float | None = None  # injected -> finding visible in Elasticsearch
    job_latency_s: float | None = None  # injected -> matched in the job (event.ingested)
    rounds: int = 0
    failures: int = 0  # rounds without a finding in a row
    pending_round: str | None = None
    pending_injected: datetime | None = None
    pending_event_ids: list[str] | None = None
    pending_rejected: str | None = None  # the gateway's reason when it refused the canary
