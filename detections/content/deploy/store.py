"""The deployment store: a folder that says which bundle the detection job must run.

Layout (default ``.run/deploy/``)::

    state.json                     generation, current bundle, rollback stack, per-rule
                                   mode overrides, history, refusals, demotions, what the job runs
    bundles/<digest>.bundle.json   every bundle ever deployed, as signed (content-addressed)

Every change (deploy, rollback, mode change, kill switch, demotion) increments the
``generation``; the job compares it between micro-batches, so it never has to diff
anything. Writers (CLI and job) serialise on an ``flock`` and replace ``state.json``
atomically, so a reader never sees half a state.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from common.safe_yaml import ContentError, load_json, read_content, validated
from detections.content.deploy.bundle import Bundle, BundleError, ModeModel, read_bundle
from detections.content.deploy.modes import RuleMode

#: Entries kept in the history / refusals / demotions lists.
KEEP = 200
#: state.json keeps KEEP entries per list: well under a MiB.
MAX_STATE_BYTES = 16 << 20


class StateModel(BaseModel):
    """The shape of state.json the code relies on (extra keys are kept)."""

    model_config = ConfigDict(strict=True, extra="allow")

    generation: int = Field(ge=0)
    current: str | None = None
    stack: list[str] = []
    bundles: dict[str, dict[str, Any]] = {}
    overrides: dict[str, ModeModel] = {}
    history: list[Any] = []
    refusals: list[Any] = []
    demotions: list[Any] = []


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def empty_state() -> dict[str, Any]:
    return {
        "generation": 0,
        "current": None,
        "stack": [],
        "bundles": {},
        "overrides": {},
        "history": [],
        "refusals": [],
        "demotions": [],
        "job": None,
    }


class DeploymentStore:
    """Read and change the deployment state under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def bundle_path(self, digest: str) -> Path:
        return self.root / "bundles" / f"{digest[:16]}.bundle.json"

    # --- reading ---------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The current state (an empty one when nothing was ever deployed); a state file
        that is too big, not JSON or of the wrong shape is a :class:`BundleError` with a
        one-line reason (the job logs it and keeps its rules; the CLI refuses)."""
        if not self.state_path.exists():
            return empty_state()
        try:
            doc = load_json(
                read_content(self.state_path, MAX_STATE_BYTES), max_bytes=MAX_STATE_BYTES
            )
            validated(StateModel, doc, "bad deployment state")
        except ContentError as exc:
            raise BundleError(f"{self.state_path}: {exc}") from None
        return {**empty_state(), **doc}

    def generation(self) -> int:
        return int(self.state()["generation"])

    def current_bundle(self) -> Bundle | None:
        """The current bundle as stored (unverified), or None when nothing is deployed."""
        digest = self.state()["current"]
        return read_bundle(self.bundle_path(digest)) if digest else None

    def overrides(self) -> dict[str, RuleMode]:
        return {k: RuleMode.from_dict(v) for k, v in self.state()["overrides"].items()}

    # --- writing ---------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of the state under an exclusive lock; written back atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.state()
                yield state
                self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, state: dict[str, Any]) -> None:
        for key in ("history", "refusals", "demotions"):
            state[key] = state[key][-KEEP:]
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".state-")
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=2)
        os.replace(tmp, self.state_path)

    def _change(
        self, action: str, mutate: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply ``mutate`` (returns history details), bump the generation, log it."""
        with self._locked() as state:
            details = mutate(state)
            state["generation"] += 1
            entry = {"generation": state["generation"], "action": action, "at": now_iso()}
            entry.update(details)
            state["history"].append(entry)
            return entry

    def deploy(
        self, bundle_file: Path, trusted: Mapping[str, Ed25519PublicKey] | None
    ) -> dict[str, Any]:
        """Make ``bundle_file`` the current bundle; returns the history entry.

        With ``trusted`` keys the bundle is verified first (BundleError/SignatureError on
        failure, nothing changes). ``trusted=None`` skips that check: the job verifies on
        its own anyway, which is what tests of the job's refusal rely on.
        """
        bundle = read_bundle(bundle_file)
        if trusted is not None:
            bundle.verify(trusted)
        digest = bundle.digest
        target = self.bundle_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(bundle_file, target)

        def mutate(state: dict[str, Any]) -> dict[str, Any]:
            state["bundles"].setdefault(
                digest,
                {"version": bundle.version, "file": target.name, "first_deployed": now_iso()},
            )
            state["stack"].append(digest)
            state["current"] = digest
            return {"bundle": digest, "version": bundle.version}

        return self._change("deploy", mutate)

    def rollback(self) -> dict[str, Any]:
        """Go back to the bundle deployed before the current one (pops the stack)."""

        def mutate(state: dict[str, Any]) -> dict[str, Any]:
            if len(state["stack"]) < 2:
                raise BundleError("nothing to roll back to: fewer than two deployments")
            gone = state["stack"].pop()
            state["current"] = state["stack"][-1]
            return {
                "bundle": state["current"],
                "version": state["bundles"][state["current"]]["version"],
                "detail": f"rolled back from {state['bundles'][gone]['version']}",
            }

        return self._change("rollback", mutate)

    def set_mode(self, rule_id: str, mode: RuleMode, *, set_by: str = "operator") -> dict[str, Any]:
        """Override one rule's mode (kill switch = ``RuleMode('disabled')``)."""
        stamped = RuleMode(
            mode=mode.mode,
            fraction=mode.fraction,
            canary_by=mode.canary_by,
            reason=mode.reason,
            set_by=set_by,
            at=now_iso(),
        )

        def mutate(state: dict[str, Any]) -> dict[str, Any]:
            state["overrides"][rule_id] = stamped.to_dict()
            return {"rule_id": rule_id, "detail": stamped.describe(), "reason": mode.reason}

        return self._change("mode", mutate)

    def clear_mode(self, rule_id: str) -> dict[str, Any]:
        """Drop a rule's override: it runs in the mode its bundle gives it (default active)."""

        def mutate(state: dict[str, Any]) -> dict[str, Any]:
            state["overrides"].pop(rule_id, None)
            return {"rule_id": rule_id, "detail": "override cleared"}

        return self._change("mode", mutate)

    def record_demotion(
        self, rule_id: str, reason: str, metrics: Mapping[str, float] | None = None
    ) -> dict[str, Any]:
        """Automatic demotion: move ``rule_id`` to shadow, remember why."""
        entry = self.set_mode(
            rule_id, RuleMode(mode="shadow", reason=reason), set_by="auto-demotion"
        )
        with self._locked() as state:
            state["demotions"].append(
                {
                    "rule_id": rule_id,
                    "reason": reason,
                    "metrics": dict(metrics or {}),
                    "generation": entry["generation"],
                    "at": entry["at"],
                }
            )
        return entry

    def record_refusal(self, digest: str | None, generation: int, reason: str) -> None:
        """The job refused the current bundle (bad signature, tampering, no plan)."""
        with self._locked() as state:
            state["refusals"].append(
                {"bundle": digest, "generation": generation, "reason": reason, "at": now_iso()}
            )

    def record_running(self, generation: int, digest: str | None, version: str | None) -> None:
        """What the job runs now, for ``sigstream rules status`` (does not bump generation)."""
        with self._locked() as state:
            state["job"] = {
                "generation": generation,
                "bundle": digest,
                "version": version,
                "at": now_iso(),
            }
