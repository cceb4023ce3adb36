"""Rule bundles: rules, meta filters and placeholder values shipped as one signed unit.

Shipping them together means an exception (a Sigma meta filter) can never arrive after the
rule it tames, and the job compiles exactly what was reviewed. A bundle is one JSON file::

    {"bundle": {manifest, with every file's text}, "signature": {"algorithm": "ed25519",
     "key_id": ..., "value": base64}}

The signature covers the canonical JSON of ``bundle`` (sorted keys, no spaces, UTF-8), so
changing any byte of any rule, filter, mode or option invalidates it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from common.safe_yaml import (
    ContentError,
    load_json,
    load_yaml_documents,
    read_content,
    validated,
)
from detections.compiler import rule_files
from detections.compiler.plan import DetectionPlan, load_placeholders, load_plan
from detections.content.deploy.modes import RuleMode
from detections.content.deploy.signing import sign, verify

FORMAT = "sigstream-rule-bundle/1"
PLACEHOLDERS_PATH = "placeholders.yml"
#: A bundle of the whole SigmaHQ rule set is ~15 MB of JSON; past this it is refused unread.
MAX_BUNDLE_BYTES = 64 << 20


class _Strict(BaseModel):
    """Types as written (no "12345" -> 12345 coercion); unknown keys are kept, since the
    signature covers them and a newer writer may add some."""

    model_config = ConfigDict(strict=True, extra="allow")


class BundleFileModel(_Strict):
    path: str = Field(min_length=1, max_length=1024)
    role: Literal["rule", "filter", "placeholders"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content: str


class ModeModel(_Strict):
    mode: Literal["active", "shadow", "canary", "disabled"] = "active"
    fraction: float | int | None = None
    canary_by: Literal["sensor", "tenant"] = "sensor"
    reason: str | None = None
    set_by: str | None = None
    at: str | None = None


class OptionsModel(_Strict):
    allow_unknown_fields: bool = False


class ManifestModel(_Strict):
    """The signed part of a bundle: what :func:`build_bundle` writes."""

    format: str
    version: str = Field(min_length=1, max_length=200)
    content_sha256: str | None = None
    options: OptionsModel = OptionsModel()
    modes: dict[str, ModeModel] = {}
    rules: list[dict[str, Any]] = []
    files: list[BundleFileModel]


class SignatureModel(_Strict):
    algorithm: str
    key_id: str
    value: str


class BundleDocument(_Strict):
    """A bundle file: ``{"bundle": manifest, "signature": block or null}``."""

    bundle: ManifestModel
    signature: SignatureModel | None = None


class BundleError(Exception):
    """A bundle that cannot be built, parsed or trusted."""


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _role(text: str) -> str:
    """``filter`` for Sigma meta filters (exceptions), else ``rule``."""
    try:
        docs = [d for d in load_yaml_documents(text) if isinstance(d, dict)]
    except ContentError:
        return "rule"  # the compiler refuses it with the reason
    return (
        "filter" if docs and all("filter" in d and "detection" not in d for d in docs) else "rule"
    )


def _read_text(path: Path) -> str:
    """A file to ship, read bounded (a huge or non-UTF-8 file is refused, never read)."""
    try:
        return read_content(path).decode("utf-8")
    except (ContentError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: {exc}") from None


def _collect(paths: Sequence[Path]) -> list[tuple[str, Path]]:
    """(path inside the bundle, file) for every rule file, named under its input root."""
    out: list[tuple[str, Path]] = []
    for root in paths:
        for file in rule_files([root]):
            rel = file.relative_to(root) if root.is_dir() else Path(file.name)
            folder = "" if root.name == "rules" else f"{root.name}/" if root.is_dir() else "files/"
            out.append((f"rules/{folder}{rel.as_posix()}", file))
    names = [name for name, _ in out]
    if len(names) != len(set(names)):
        raise BundleError("two rule files would have the same path in the bundle")
    return out


@dataclass(frozen=True)
class Bundle:
    """A parsed bundle: its manifest (what was signed) and its signature block."""

    manifest: dict[str, Any]
    signature: dict[str, str] | None

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def digest(self) -> str:
        """Identity of the signed content (not of the signature)."""
        return sha256(canonical(self.manifest))

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.manifest["files"])

    @property
    def default_modes(self) -> dict[str, RuleMode]:
        return {k: RuleMode.from_dict(v) for k, v in self.manifest.get("modes", {}).items()}

    @property
    def allow_unknown_fields(self) -> bool:
        return bool(self.manifest.get("options", {}).get("allow_unknown_fields", False))

    def to_json(self) -> str:
        return json.dumps({"bundle": self.manifest, "signature": self.signature}, indent=1) + "\n"

    def check_integrity(self) -> None:
        """Every file's hash and the content hash agree with the text (no signature check)."""
        if self.manifest.get("format") != FORMAT:
            raise BundleError(f"unknown bundle format {self.manifest.get('format')!r}")
        for entry in self.files:
            if sha256(entry["content"].encode()) != entry["sha256"]:
                raise BundleError(f"{entry['path']}: content does not match its sha256")
        if content_digest(self.files) != self.manifest.get("content_sha256"):
            raise BundleError("content_sha256 does not match the files")

    def verify(self, trusted: Mapping[str, Ed25519PublicKey]) -> str:
        """Integrity and signature; returns the signing key id, raises on any problem."""
        self.check_integrity()
        return verify(self.signature, canonical(self.manifest), trusted)

    def extract(self, dest: Path) -> Path:
        """Write the bundle's files under ``dest``; returns ``dest``."""
        base = dest.resolve()
        for entry in self.files:
            target = (dest / entry["path"]).resolve()
            if base not in target.parents:
                raise BundleError(f"{entry['path']}: path escapes the bundle folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(entry["content"], encoding="utf-8")
        return dest

    def load_plan(self, dest: Path) -> DetectionPlan:
        """Extract to ``dest`` and compile exactly the bundle's content into a plan."""
        self.extract(dest)
        placeholders = dest / PLACEHOLDERS_PATH
        config = load_placeholders(placeholders if placeholders.exists() else None)
        rules_dir = dest / "rules"
        paths = [rules_dir] if rules_dir.exists() else []
        return load_plan(paths, allow_unknown_fields=self.allow_unknown_fields, config=config)


def content_digest(files: Sequence[Mapping[str, Any]]) -> str:
    return sha256(canonical(sorted([f["path"], f["role"], f["sha256"]] for f in files)))


def build_bundle(
    rule_paths: Sequence[Path],
    *,
    version: str | None = None,
    placeholders: Path | None = None,
    modes: Mapping[str, RuleMode] | None = None,
    default_mode: RuleMode | None = None,
    allow_unknown_fields: bool = False,
    allow_rejected: bool = False,
    now: datetime | None = None,
) -> tuple[dict[str, Any], DetectionPlan]:
    """The unsigned manifest of a bundle and the plan it compiles to.

    ``modes`` / ``default_mode`` are the modes rules start in when deployed (rules without
    one run active); operators' overrides in the deployment store take precedence.

    Refuses (BundleError) when a rule is rejected, unless ``allow_rejected``: a bundle is
    what will run, so it should not carry content the job would refuse.
    """
    files: list[dict[str, Any]] = []
    for name, path in _collect(rule_paths):
        text = _read_text(path)
        files.append(
            {"path": name, "role": _role(text), "sha256": sha256(text.encode()), "content": text}
        )
    if placeholders is not None:
        text = _read_text(placeholders)
        files.append(
            {
                "path": PLACEHOLDERS_PATH,
                "role": "placeholders",
                "sha256": sha256(text.encode()),
                "content": text,
            }
        )
    if not any(f["role"] == "rule" for f in files):
        raise BundleError(f"no rule files under {', '.join(map(str, rule_paths))}")
    config = load_placeholders(placeholders)
    plan = load_plan(list(rule_paths), allow_unknown_fields=allow_unknown_fields, config=config)
    if plan.rejections and not allow_rejected:
        first = plan.rejections[0]
        raise BundleError(
            f"{len(plan.rejections)} rule(s) rejected, e.g. {first.path}: {first.reason} "
            f"{first.message} (fix them, or pass allow_rejected)"
        )
    known = {str(p.rule.id) for p in plan.rules}
    unknown = sorted(set(modes or {}) - known)
    if unknown:
        raise BundleError(f"modes given for rule ids not in the bundle: {', '.join(unknown)}")
    given = dict(modes or {})
    if default_mode is not None:
        given = {str(p.rule.id): given.get(str(p.rule.id), default_mode) for p in plan.rules}
    created = (now or datetime.now(UTC)).isoformat()
    digest = content_digest(files)
    manifest = {
        "format": FORMAT,
        "version": version or f"{created[:10]}-{digest[:8]}",
        "created_at": created,
        "content_sha256": digest,
        "plan_version": plan.version,
        "options": {"allow_unknown_fields": allow_unknown_fields},
        "rules": [
            {
                "id": str(p.rule.id),
                "title": p.rule.title,
                "level": p.rule.level,
                "tags": list(p.rule.tags),
            }
            for p in plan.rules
        ],
        "modes": {
            rule_id: {**mode.to_dict(), "set_by": "bundle"}
            for rule_id, mode in sorted(given.items())
        },
        "files": files,
    }
    return manifest, plan


def sign_manifest(manifest: dict[str, Any], key: Ed25519PrivateKey) -> Bundle:
    return Bundle(manifest=manifest, signature=sign(key, canonical(manifest)))


def read_bundle(path: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Parse a bundle file (does not verify it). Anything that is not a well-typed bundle
    (too big, not JSON, ``content: 12345``, ``files: ["x"]``, a signature that is a list,
    a lone surrogate that cannot be hashed) is a :class:`BundleError` with a one-line
    reason, so neither ``deploy`` nor the running job meets a TypeError later."""
    try:
        doc = load_json(read_content(path, max_bytes), max_bytes=max_bytes)
    except ContentError as exc:
        raise BundleError(f"{path}: not a readable bundle: {exc}") from None
    try:
        validated(BundleDocument, doc, "not a bundle")
    except ContentError as exc:
        raise BundleError(f"{path}: {exc}") from None
    manifest, signature = doc["bundle"], doc.get("signature")
    try:
        canonical(manifest)
    except UnicodeEncodeError:
        raise BundleError(f"{path}: text that is not valid Unicode (a lone surrogate)") from None
    bundle = Bundle(manifest=manifest, signature=signature)
    try:
        bundle.default_modes  # noqa: B018 - RuleMode's own checks (canary fraction range)
    except ValueError as exc:
        raise BundleError(f"{path}: bad rule mode: {exc}") from None
    return bundle
