"""Ed25519 keys for rule bundles: generate, load, sign, verify.

Bundles are signed so the detection job only runs content a release key vouched for: a
bundle edited on disk, or written by someone without the key, is refused. Keys are PEM
files; a key's id is the first 16 hex digits of the SHA-256 of its raw public bytes, so a
signature names the key that made it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.safe_yaml import ContentError, read_content

log = logging.getLogger(__name__)

ALGORITHM = "ed25519"
#: A PEM Ed25519 key is ~120 bytes.
MAX_KEY_BYTES = 64 << 10


class SignatureError(Exception):
    """A bundle whose signature is missing, malformed, by an untrusted key, or wrong."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    key_id: str


def generate_keypair(private_path: Path, public_path: Path, *, overwrite: bool = False) -> KeyPair:
    """Write a new private key (mode 0600) and its public key; refuses to overwrite."""
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(private_path, public_path, key_id(public))


def _pem(path: Path, kind: str, load: Callable[[bytes], object]) -> object:
    """A PEM key file read bounded; ContentError (a ValueError) with the reason."""
    data = read_content(path, MAX_KEY_BYTES)
    try:
        return load(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ContentError(f"{path}: not a PEM {kind} key: {exc}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = _pem(path, "private", lambda b: serialization.load_pem_private_key(b, password=None))
    if not isinstance(key, Ed25519PrivateKey):
        raise ContentError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = _pem(path, "public", serialization.load_pem_public_key)
    if not isinstance(key, Ed25519PublicKey):
        raise ContentError(f"{path}: not an Ed25519 public key")
    return key


def load_trusted_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id, from ``.pub``/``.pem`` files or folders of them. A file in a
    folder that is not an Ed25519 public key is skipped with a logged reason (trusting
    fewer keys is the safe side, and one stray file must not refuse every bundle); a file
    named on its own must load (ContentError)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in paths:
        if entry.is_dir():
            for path in sorted(p for p in entry.iterdir() if p.suffix in (".pub", ".pem")):
                try:
                    public = load_public_key(path)
                except ContentError as exc:
                    log.warning("ignoring trusted key file: %s", exc)
                    continue
                keys[key_id(public)] = public
        else:
            public = load_public_key(entry)
            keys[key_id(public)] = public
    return keys


def sign(private_key: Ed25519PrivateKey, payload: bytes) -> dict[str, str]:
    """The signature block stored beside a signed payload."""
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "value": base64.b64encode(private_key.sign(payload)).decode("ascii"),
    }


def verify(
    signature: Mapping[str, str] | None,
    payload: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
) -> str:
    """Check ``signature`` over ``payload`` against the trusted keys; returns the key id."""
    if not signature:
        raise SignatureError("bundle is not signed")
    if signature.get("algorithm") != ALGORITHM:
        raise SignatureError(f"unsupported signature algorithm {signature.get('algorithm')!r}")
    kid = str(signature.get("key_id", ""))
    public = trusted.get(kid)
    if public is None:
        raise SignatureError(f"bundle signed by untrusted key {kid or '(none)'}")
    try:
        raw = base64.b64decode(str(signature.get("value", "")), validate=True)
        public.verify(raw, payload)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(
            f"bad signature by key {kid}: content was changed after signing"
        ) from exc
    return kid
