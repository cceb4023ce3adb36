"""Who is calling: API keys carry a tenant, a role and a user name.

Keys live in a YAML file (``SIGSTREAM_API_KEYS_FILE``)::

    sk-alice-123: {tenant: acme, role: analyst, user: alice}
    sha256:5e88...: {tenant: globex, role: read-only, user: auditor}

An entry may be keyed by the key itself or by ``sha256:<hex digest of the key>`` so the
file need not hold secrets. Roles: ``analyst`` (read and triage), ``read-only``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from common.safe_yaml import ContentError, expect_mapping, load_yaml_file, validated

Role = Literal["analyst", "read-only"]
ROLES: tuple[str, ...] = ("analyst", "read-only")


@dataclass(frozen=True)
class Caller:
    """The identity every query is scoped by. ``tenant=None`` (all tenants) is only for
    the operator's CLI on the backend, never for API callers; even then the reserved
    tenants (``_canary``: canary traffic, docs/canaries.md) stay out unless
    ``include_reserved`` (an operator asking explicitly) or named as ``tenant``."""

    user: str
    role: Role
    tenant: str | None
    include_reserved: bool = False

    @property
    def can_write(self) -> bool:
        return self.role == "analyst"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: Annotated[str, StringConstraints(min_length=1)]
    role: Role = "read-only"
    user: str = "unknown"


def _short(key: object) -> str:
    """A key's first characters (never the whole secret in a message)."""
    text = str(key)
    return repr(text[:7] + "..." if len(text) > 7 else text)


class KeyStore:
    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        self._entries: dict[str, Caller] = {}
        for key, info in entries.items():
            role = info.get("role", "read-only")
            if role not in ROLES:
                raise ValueError(f"API key for {info.get('user')!r}: unknown role {role!r}")
            if not info.get("tenant"):
                raise ValueError(f"API key for {info.get('user')!r}: a tenant is required")
            self._entries[str(key)] = Caller(
                user=str(info.get("user", "unknown")), role=role, tenant=str(info["tenant"])
            )

    @classmethod
    def from_file(cls, path: Path) -> KeyStore:
        """Keys from a YAML file; anything but a mapping of key -> {tenant, role, user}
        (a bomb, a list, an unknown role, no tenant) is a :class:`ContentError` naming the
        file, so the API refuses to start with the reason instead of a traceback."""
        try:
            entries = expect_mapping(load_yaml_file(path), "API key file")
            checked = {
                str(key): validated(_Entry, info, f"API key {_short(key)}").model_dump()
                for key, info in entries.items()
            }
            return cls(checked)
        except ContentError as exc:
            raise ContentError(f"{path}: {exc}") from None

    def lookup(self, key: str) -> Caller | None:
        """The caller for ``key``, or None when the key is unknown."""
        if not key:
            return None
        if key in self._entries and not key.startswith("sha256:"):
            return self._entries[key]
        return self._entries.get("sha256:" + hashlib.sha256(key.encode()).hexdigest())
