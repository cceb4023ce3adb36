"""Per-sensor credentials: enrollment, revocation, verification.

A credential is a bearer token ``sst_<key id>_<secret>`` issued once at enrollment. The
store (a small JSON file, mode 0600) keeps only the SHA-256 of the secret, the tenant, the
sensor id and whether the key is a relay (may send for any sensor of its tenant) or revoked.
Why a token and not an HMAC over the batch: the batch travels over TLS already, and a token
can be stored hashed, whereas an HMAC key must be stored in the clear on the server too.

The gateway re-reads the file when its modification time changes, so ``sigstream gateway
revoke`` takes effect on a running gateway within one request, without a restart.

A file that cannot be used (too big, not JSON, wrong types) is refused with a one-line
reason. A running gateway keeps the last good credentials and logs why (``problem``):
our own writes are atomic renames, so a bad file is an outside edit or a disk fault, and
refusing every sensor of every tenant for it would turn one bad file into a full ingest
outage while protecting nothing (whoever can write the file can add credentials anyway).
With no good version ever loaded the store fails closed: ``load()`` raises, ``verify``
accepts nothing. Writes (enroll, revoke) never overwrite a file they could not read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from common.safe_yaml import ContentError, load_json, read_content, validated
from ingest.gateway.parse import Identity

log = logging.getLogger(__name__)

TOKEN_RE = re.compile(r"^sst_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
#: Reserved names (the canary tenant and sensor, ``_canary``): only ``reserved=True``.
RESERVED_NAME_RE = re.compile(r"^_[A-Za-z0-9][A-Za-z0-9._:-]{0,126}$")


class CredentialError(ValueError):
    """Enrollment input that cannot be accepted (bad names, unknown key ...)."""


class CredentialFileError(CredentialError, ContentError):
    """The credential file cannot be used (too big, not JSON, wrong shape); one line."""


#: A credential is ~300 bytes of JSON: 16 MiB is ~50,000 sensors.
MAX_FILE_BYTES = 16 << 20


class _CredentialModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    key_id: str
    tenant_id: str
    sensor_id: str
    secret_sha256: str
    created: str
    relay: bool = False
    revoked: str | None = None


class _StoreFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    version: int = 1
    credentials: dict[str, _CredentialModel] = {}


@dataclass(frozen=True)
class Credential:
    key_id: str
    tenant_id: str
    sensor_id: str
    secret_sha256: str
    created: str
    relay: bool = False
    revoked: str | None = None

    def identity(self) -> Identity:
        return Identity(tenant_id=self.tenant_id, sensor_id=self.sensor_id, relay=self.relay)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class CredentialStore:
    """The JSON credential file; every write is atomic (temp file + fsync + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._bad_stamp: tuple[int, int, int] | None = None
        self._by_key: dict[str, Credential] = {}
        #: Why the file on disk is not in force (None when it is): for health and logs.
        self.problem: str | None = None

    # -- reading ------------------------------------------------------------------------

    def _read(self) -> dict[str, Credential]:
        """The file's credentials; :class:`CredentialFileError` (one line) when it is too
        big, not JSON or not a credential store. Bounded: refused from its size first."""
        try:
            doc = load_json(read_content(self.path, MAX_FILE_BYTES), max_bytes=MAX_FILE_BYTES)
            stored = validated(_StoreFile, doc, "not a credential store")
        except ContentError as exc:
            raise CredentialFileError(f"{self.path}: {exc}") from None
        return {k: Credential(**v.model_dump()) for k, v in stored.credentials.items()}

    def _load(self, *, strict: bool = False) -> None:
        """Re-read the file when it changed. A file that turns bad under a running gateway
        is logged and the last good credentials stay in force (see ``problem``); with no
        good version loaded yet, or ``strict`` (before a write: never overwrite a file we
        could not read), it raises :class:`CredentialFileError`."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._by_key, self._stamp, self.problem = {}, None, None
            return
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)  # every save is a rename: a new inode
        if stamp == self._stamp or (stamp == self._bad_stamp and not strict):
            return
        if st.st_size == 0:
            self._by_key, self._stamp, self.problem = {}, stamp, None
            return
        try:
            by_key = self._read()
        except CredentialFileError as exc:
            self._bad_stamp, self.problem = stamp, str(exc)
            if strict or self._stamp is None:
                raise
            log.error("credential file refused, keeping the last good credentials: %s", exc)
            return
        self._by_key, self._stamp, self._bad_stamp, self.problem = by_key, stamp, None, None

    def load(self) -> None:
        """Read the file now (at start): CredentialFileError with the reason if it is bad."""
        self._load(strict=True)

    def credentials(self) -> list[Credential]:
        self._load(strict=True)
        return sorted(self._by_key.values(), key=lambda c: (c.tenant_id, c.sensor_id, c.key_id))

    def verify(self, token: str) -> Credential | None:
        """The live credential a token belongs to, or None (unknown, wrong or revoked)."""
        match = TOKEN_RE.match(token.strip())
        if not match:
            return None
        try:
            self._load()
        except CredentialFileError as exc:  # nothing good ever loaded: fail closed
            log.error("no usable credential file, refusing: %s", exc)
            return None
        cred = self._by_key.get(match.group(1))
        if cred is None or cred.revoked:
            return None
        if not hmac.compare_digest(cred.secret_sha256, _digest(match.group(2))):
            return None
        return cred

    # -- writing ------------------------------------------------------------------------

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": 1, "credentials": {k: asdict(v) for k, v in self._by_key.items()}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".credentials-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(doc, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = None

    def enroll(
        self, tenant_id: str, sensor_id: str, *, relay: bool = False, reserved: bool = False
    ) -> tuple[str, str]:
        """Issue a new credential; returns ``(key id, token)``. The token is shown once.
        ``reserved``: the names may (and the tenant must) start with ``_``, the namespace
        of Sigstream's own tenants (canaries), which customers' sensors can never get."""
        for label, value in (("tenant", tenant_id), ("sensor", sensor_id)):
            if not (NAME_RE.match(value) or (reserved and RESERVED_NAME_RE.match(value))):
                raise CredentialError(f"invalid {label} id {value!r} (letters, digits, ._:-)")
        if reserved and not tenant_id.startswith("_"):
            raise CredentialError(f"a reserved tenant starts with '_', not {tenant_id!r}")
        self._load(strict=True)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        self._by_key[key_id] = Credential(
            key_id=key_id,
            tenant_id=tenant_id,
            sensor_id=sensor_id,
            secret_sha256=_digest(secret),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            relay=relay,
        )
        self._save()
        return key_id, f"sst_{key_id}_{secret}"

    def revoke(self, key_or_sensor: str, tenant_id: str | None = None) -> list[str]:
        """Revoke by key id, or every live key of a sensor id; returns the key ids revoked."""
        self._load(strict=True)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        hits = [
            c
            for c in self._by_key.values()
            if not c.revoked
            and (c.key_id == key_or_sensor or c.sensor_id == key_or_sensor)
            and (tenant_id is None or c.tenant_id == tenant_id)
        ]
        if not hits:
            raise CredentialError(f"no live credential with key or sensor id {key_or_sensor!r}")
        for c in hits:
            self._by_key[c.key_id] = replace(c, revoked=now)
        self._save()
        return [c.key_id for c in hits]
