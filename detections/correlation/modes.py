"""Correlations follow deployments like base rules: kill switch, shadow, canary, rollback.

A correlation's id is a rule id in the deployment store: ``sigstream rules mode <id>
disabled`` (the kill switch), ``shadow``, ``canary:0.1``, or the mode its signed bundle
gives it. The correlation stage re-reads the modes between micro-batches (only when the
store's generation changed) and routes each firing: ``active`` -> findings index,
``shadow`` -> shadow index, disabled -> nothing written and nothing fed down a chain.

A bundle's default modes count only once its signature verifies against the trusted keys
(the detection pass applies the same rule); operator overrides always count. Whatever is
wrong with the store, the stage keeps the modes it had: a deployment problem never stops
correlations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from detections.content.deploy.modes import Destination, RuleMode

log = logging.getLogger("sigstream.correlate")

ACTIVE = RuleMode()


class CorrelationModes:
    """The deployed mode of every correlation id, followed between micro-batches."""

    def __init__(self, deploy_dir: Path, trusted_keys: Path | None = None) -> None:
        from detections.content.deploy.store import DeploymentStore

        self.store = DeploymentStore(deploy_dir)
        self.trusted_keys = trusted_keys
        self._generation: int | None = None
        self._modes: dict[str, RuleMode] = {}

    def current(self) -> Mapping[str, RuleMode]:
        try:
            state = self.store.state()
            generation = int(state["generation"])
            if generation != self._generation:
                self._modes = {**self._bundle_modes(state.get("current")), **self.store.overrides()}
                self._generation = generation
        except Exception as exc:  # never stop the correlation stage
            log.error("cannot read correlation modes, keeping the previous ones: %s", exc)
        return self._modes

    def _bundle_modes(self, digest: str | None) -> dict[str, RuleMode]:
        if digest is None or self.trusted_keys is None:
            return {}
        from detections.content.deploy.bundle import read_bundle
        from detections.content.deploy.signing import load_trusted_keys

        bundle = read_bundle(self.store.bundle_path(digest))
        bundle.verify(load_trusted_keys(sorted(self.trusted_keys.glob("*.pub"))))
        return dict(bundle.default_modes)


def destination(
    modes: Mapping[str, RuleMode], correlation_id: str, tenant_id: str, sensor_id: str
) -> Destination | None:
    """Where a firing goes: ``active``, ``shadow`` or None (disabled)."""
    return modes.get(correlation_id, ACTIVE).destination(correlation_id, tenant_id, sensor_id)
