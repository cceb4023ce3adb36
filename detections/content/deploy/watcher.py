"""What the streaming detection job calls between micro-batches to follow deployments.

``DeploymentWatcher.poll()`` is cheap when nothing changed (one small JSON read). When the
store's generation moved it verifies the current bundle's signature against the trusted
keys, compiles it into a :class:`DetectionPlan` and returns the new :class:`ActiveContent`
(plan + per-rule modes). A bundle that is unsigned, signed by an unknown key, edited after
signing, or compiles to nothing is refused: logged, recorded in the store, and the job
keeps the content it already runs.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from detections.compiler.plan import DetectionPlan
from detections.content.deploy.bundle import Bundle, BundleError, read_bundle
from detections.content.deploy.modes import Destination, RuleMode
from detections.content.deploy.signing import SignatureError, load_trusted_keys
from detections.content.deploy.store import DeploymentStore

log = logging.getLogger(__name__)

ACTIVE = RuleMode(mode="active", set_by="default")


@dataclass(frozen=True)
class ActiveContent:
    """A verified bundle compiled to a plan, and the mode each of its rules runs in."""

    generation: int
    version: str
    digest: str
    key_id: str
    plan: DetectionPlan
    modes: dict[str, RuleMode] = field(default_factory=dict)  # rule id -> effective mode

    def mode_of(self, index: int) -> RuleMode:
        """Effective mode of the plan's rule ``index``."""
        return self.modes.get(str(self.plan.rules[index].rule.id), ACTIVE)

    @property
    def disabled_indices(self) -> frozenset[int]:
        """Rules the job must not evaluate (kill switch): pass as ``skip``."""
        return frozenset(p.index for p in self.plan.rules if not self.mode_of(p.index).evaluated)

    def destination(self, index: int, tenant_id: str, sensor_id: str) -> Destination | None:
        """Where a finding of rule ``index`` on an event of (tenant, sensor) goes:
        ``"active"`` (findings index), ``"shadow"`` (shadow index) or None (disabled)."""
        rule_id = str(self.plan.rules[index].rule.id)
        return self.mode_of(index).destination(rule_id, tenant_id, sensor_id)


def _effective_modes(
    plan: DetectionPlan, bundle: Bundle, overrides: Mapping[str, RuleMode]
) -> dict[str, RuleMode]:
    defaults = bundle.default_modes
    modes: dict[str, RuleMode] = {}
    for planned in plan.rules:
        rule_id = str(planned.rule.id)
        modes[rule_id] = overrides.get(rule_id) or defaults.get(rule_id) or ACTIVE
    return modes


class DeploymentWatcher:
    """Follows a deployment store; one per running job (keeps what it has loaded)."""

    def __init__(
        self,
        store_dir: Path,
        trusted_keys: Mapping[str, Ed25519PublicKey] | Sequence[Path],
        work_dir: Path | None = None,
    ) -> None:
        self.store = DeploymentStore(store_dir)
        # Key files are re-read before each bundle is verified, so a key can be rotated
        # (new .pub added, old one removed) without restarting the job.
        self._key_paths = None if isinstance(trusted_keys, Mapping) else list(trusted_keys)
        self.trusted = dict(trusted_keys) if isinstance(trusted_keys, Mapping) else {}
        self.work_dir = work_dir or Path(store_dir) / "extracted"
        self._seen_generation = -1
        self._bundle: Bundle | None = None
        self._plan: DetectionPlan | None = None
        self._key_id = ""
        # Verified, compiled bundles by digest (current and previous): a rollback is instant.
        self._loaded: dict[str, tuple[Bundle, DetectionPlan, str]] = {}
        self.current: ActiveContent | None = None
        self.last_refusal: str | None = None

    def poll(self) -> ActiveContent | None:
        """New content if the store changed since the last poll and it is trustworthy, else
        None (nothing changed, nothing deployed, or the new bundle was refused). Never
        raises: whatever is wrong with the store or a bundle, the job keeps what it runs."""
        try:
            return self._poll()
        except Exception as exc:  # a bug or content nobody foresaw must not stop the job
            log.error(
                "deployment poll failed, keeping the current rules: %s: %s", type(exc).__name__, exc
            )
            self.last_refusal = f"{type(exc).__name__}: {exc}"
            return None

    def _poll(self) -> ActiveContent | None:
        try:
            state = self.store.state()
            generation = int(state["generation"])
        except Exception as exc:  # never stop the job
            log.error("cannot read deployment state in %s: %s", self.store.root, exc)
            return None
        if generation == self._seen_generation:
            return None
        self._seen_generation = generation
        digest = state["current"]
        if digest is None:
            return None
        if self._bundle is None or self._bundle.digest != digest:
            loaded = self._loaded.get(digest) or self._load(digest, generation)
            if loaded is None:
                if self._bundle is None:
                    return None
                # Refused: keep running the current bundle, but still follow the mode
                # changes (kill switch, canary) made since the last poll.
                loaded = (self._bundle, self._plan, self._key_id)  # type: ignore[assignment]
                digest = self._bundle.digest
            self._bundle, self._plan, self._key_id = loaded
            self._loaded = {digest: loaded, **self._loaded}
            self._loaded = dict(list(self._loaded.items())[:2])  # current and previous
        assert self._bundle is not None and self._plan is not None
        content = ActiveContent(
            generation=generation,
            version=self._bundle.version,
            digest=digest,
            key_id=self._key_id,
            plan=self._plan,
            modes=_effective_modes(self._plan, self._bundle, self._overrides()),
        )
        self.current = content
        try:
            self.store.record_running(generation, digest, content.version)
        except OSError as exc:  # status only: the new content runs anyway
            log.warning("cannot record the running generation: %s", exc)
        log.info(
            "deployment generation %d: bundle %s (%d rules, %d disabled)",
            generation,
            content.version,
            len(content.plan.rules),
            len(content.disabled_indices),
        )
        return content

    def _overrides(self) -> dict[str, RuleMode]:
        try:
            return self.store.overrides()
        except Exception as exc:  # a broken store must not stop the job
            log.error("cannot read rule mode overrides, keeping bundle modes: %s", exc)
            return {}

    def _load(self, digest: str, generation: int) -> tuple[Bundle, DetectionPlan, str] | None:
        try:
            bundle = read_bundle(self.store.bundle_path(digest))
            if bundle.digest != digest:
                raise BundleError("stored bundle differs from the one deployed (edited on disk)")
            if self._key_paths is not None:
                self.trusted = load_trusted_keys([p for p in self._key_paths if p.exists()])
            if not self.trusted:
                raise SignatureError("no trusted public keys configured")
            key_id = bundle.verify(self.trusted)
            target = self.work_dir / digest[:16]
            shutil.rmtree(target, ignore_errors=True)
            plan = bundle.load_plan(target)
            if not plan.rules:
                raise BundleError("bundle compiles to no rules")
        except Exception as exc:  # any bad content is a refusal; the job keeps its rules
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            log.error("refusing bundle %s (generation %d): %s", digest[:16], generation, reason)
            self.last_refusal = reason
            try:
                self.store.record_refusal(digest, generation, reason)
            except OSError as err:
                log.warning("cannot record the refusal: %s", err)
            return None
        self._prune(keep=digest)
        return bundle, plan, key_id

    def _prune(self, keep: str) -> None:
        """Remove extracted copies of bundles other than the one loaded now and the last."""
        if not self.work_dir.is_dir():
            return
        keepers = {keep[:16]} | ({self._bundle.digest[:16]} if self._bundle else set())
        for child in self.work_dir.iterdir():
            if child.is_dir() and child.name not in keepers:
                shutil.rmtree(child, ignore_errors=True)

    def record_demotion(
        self, rule_id: str, reason: str, metrics: Mapping[str, float] | None = None
    ) -> None:
        """Move ``rule_id`` to shadow (automatic demotion); takes effect at the next poll."""
        log.warning("demoting rule %s to shadow: %s", rule_id, reason)
        self.store.record_demotion(rule_id, reason, metrics)
