"""Every content loader is total: a hostile file (alias bomb, deep nesting, a 10 GB file,
wrong types, invalid UTF-8, duplicate keys, several documents where one belongs, binary
garbage) is a refusal or a quarantine with a reason, never a traceback or a crash, and the
good content next to it still loads (issue 17, "content loaders are total")."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from common.safe_yaml import ContentError
from common.settings import PROJECT_ROOT
from detections.compiler import compile_path
from detections.compiler.plan import load_placeholders, plan_rules
from detections.content.deploy.bundle import BundleError, build_bundle, read_bundle, sign_manifest
from detections.content.deploy.signing import generate_keypair, load_private_key, load_trusted_keys
from detections.content.deploy.store import DeploymentStore
from detections.content.deploy.watcher import DeploymentWatcher
from detections.content.workflow.ruletests import read_tests
from detections.correlation.compile import load_correlations
from detections.correlation.query import load_content
from detections.sinks.grouping import load_config
from ingest.gateway.credentials import CredentialFileError, CredentialStore
from triage.auth import KeyStore

OWN = PROJECT_ROOT / "detections" / "rules" / "windows"
CORRELATIONS = PROJECT_ROOT / "detections" / "correlation" / "rules"
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)
CORRELATION = """title: {title}
id: {id}
correlation:
  type: event_count
  rules: {rules}
  group-by: [Host]
  timespan: 5m
  condition: {{gte: 2}}
"""

#: name -> (file bytes, a fragment of the reason every YAML loader must give).
HOSTILE_YAML: dict[str, tuple[bytes, str]] = {
    "alias_bomb": (
        (LAUGHS + "correlation: {type: event_count, rules: *i}\ntitle: *i\n").encode(),
        "alias",
    ),
    "deep_nesting": (b"title: x\ncorrelation: " + b"[" * 100_000 + b"]" * 100_000, "deeper"),
    "invalid_utf8": (b"title: \xff\xfe bad\ncorrelation: {}\n", "UTF-8"),
    "duplicate_keys": (b"title: a\ntitle: b\ncorrelation: {}\n", "duplicate key"),
    "binary_garbage": (bytes(range(256)) * 4, ""),
    "unclosed": (b"title: [\ncorrelation: {\n", "invalid YAML"),
}


def _huge(path: Path) -> Path:
    """A sparse 10 GB file: costs no disk, and reading it would cost 10 GB of memory."""
    with open(path, "wb") as handle:
        handle.truncate(10 << 30)
    return path


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --- Sigma rules ------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_sigma_loader_rejects_each_hostile_file_and_keeps_the_good_rule(
    tmp_path: Path, case: str
) -> None:
    shutil.copy(OWN / "proc_access_lsass_memory_read.yml", tmp_path / "good.yml")
    _write(tmp_path, "bad.yml", HOSTILE_YAML[case][0])
    started = time.monotonic()
    rules, rejections = compile_path([tmp_path])
    assert time.monotonic() - started < 30  # safety bound; the bomb used to take 38 s
    assert [r.title for r in rules] == ["LSASS Memory Read By Non-System Process"]
    assert [(Path(str(r.path)).name, r.reason) for r in rejections] == [("bad.yml", "parse_error")]
    assert HOSTILE_YAML[case][1] in rejections[0].message


def test_sigma_loader_refuses_a_10gb_file_from_its_size(tmp_path: Path) -> None:
    _huge(tmp_path / "huge.yml")
    started = time.monotonic()
    rules, rejections = compile_path([tmp_path])
    assert time.monotonic() - started < 5
    assert rules == [] and len(rejections) == 1
    assert "content limit" in rejections[0].message


def test_sigma_loader_rejects_wrong_types(tmp_path: Path) -> None:
    for name, text in {
        "list.yml": "- a\n- b\n",
        "scalar.yml": "12345\n",
        "detection_list.yml": "title: t\nlogsource: {product: windows}\ndetection: [1, 2]\n",
    }.items():
        _write(tmp_path, name, text)
    rules, rejections = compile_path([tmp_path])
    assert rules == []
    assert sorted(Path(str(r.path)).name for r in rejections) == [
        "detection_list.yml",
        "list.yml",
        "scalar.yml",
    ]
    assert all(r.reason and r.message for r in rejections)


# --- correlation rules ------------------------------------------------------------------


def _good_correlation() -> str:
    return CORRELATION.format(
        title="two lsass reads", id="c0000000-0000-4000-8000-000000000001", rules="[lsass]"
    )


def _lsass_rule(tmp_path: Path) -> None:
    text = (OWN / "proc_access_lsass_memory_read.yml").read_text()
    _write(tmp_path, "lsass.yml", "name: lsass\n" + text)


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_correlation_loader_quarantines_each_hostile_file_and_loads_the_good_one(
    tmp_path: Path, case: str
) -> None:
    _lsass_rule(tmp_path)
    _write(tmp_path, "good_corr.yml", _good_correlation())
    _write(tmp_path, "bad_corr.yml", HOSTILE_YAML[case][0])
    started = time.monotonic()
    content = load_content([tmp_path])  # what `sigstream detect` runs at start
    assert time.monotonic() - started < 30
    assert [s.title for s in content.specs] == ["two lsass reads"]
    plan = plan_rules(*compile_path([tmp_path]))
    found = load_correlations([tmp_path], plan)
    assert [s.title for s in found.specs] == ["two lsass reads"]
    bad = [r for r in found.rejections if r.path and r.path.endswith("bad_corr.yml")]
    if case not in ("invalid_utf8", "binary_garbage"):  # unreadable: the rule loader says why
        assert [r.reason for r in bad] == ["parse_error"]
        assert HOSTILE_YAML[case][1] in bad[0].message


@pytest.mark.parametrize(
    "rules, reason",
    [
        ("[[a, b]]", "bad_rules"),
        ("[{x: 1}]", "bad_rules"),
        ("12345", "parse_error"),
        ("{a: b}", "parse_error"),
        ("[lsass, [nested]]", "bad_rules"),
    ],
)
def test_wrong_typed_correlation_is_refused_with_a_reason(
    tmp_path: Path, rules: str, reason: str
) -> None:
    _lsass_rule(tmp_path)
    _write(tmp_path, "good_corr.yml", _good_correlation())
    bad = CORRELATION.format(title="bad", id="c0000000-0000-4000-8000-000000000002", rules=rules)
    _write(tmp_path, "bad_corr.yml", bad)
    found = load_correlations([tmp_path], plan_rules(*compile_path([tmp_path])))
    assert [s.title for s in found.specs] == ["two lsass reads"]
    assert [r.reason for r in found.rejections] == [reason]
    assert found.rejections[0].message.startswith(str(tmp_path / "bad_corr.yml"))


def test_correlation_loader_skips_a_10gb_file(tmp_path: Path) -> None:
    _lsass_rule(tmp_path)
    _write(tmp_path, "good_corr.yml", _good_correlation())
    _huge(tmp_path / "huge.yml")
    started = time.monotonic()
    content = load_content([tmp_path])
    assert time.monotonic() - started < 10
    assert [s.title for s in content.specs] == ["two lsass reads"]


# --- bundles and the deployment store ----------------------------------------------------


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path]:
    """(a signed bundle of one rule, the trusted keys folder)."""
    pair = generate_keypair(tmp_path / "k" / "signing.key", tmp_path / "trusted" / "k.pub")
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(OWN / "proc_access_lsass_memory_read.yml", rules)
    manifest, _ = build_bundle([rules])
    path = tmp_path / "good.bundle.json"
    path.write_text(sign_manifest(manifest, load_private_key(pair.private_path)).to_json())
    return path, tmp_path / "trusted"


def _mutations(doc: dict[str, Any]) -> dict[str, Any]:
    """Wrong-typed variants of a good bundle document."""
    m = doc["bundle"]

    def with_manifest(**changes: Any) -> dict[str, Any]:
        return {**doc, "bundle": {**m, **changes}}

    first = m["files"][0]
    return {
        "content_int": with_manifest(files=[{**first, "content": 12345}]),
        "files_str": with_manifest(files=["x"]),
        "files_dict": with_manifest(files={"a": 1}),
        "signature_list": {**doc, "signature": ["ed25519", "k", "v"]},
        "signature_value_int": {**doc, "signature": {**doc["signature"], "value": 1}},
        "modes_list": with_manifest(modes=["x"]),
        "mode_unknown": with_manifest(modes={"r": {"mode": "loud"}}),
        "canary_fraction_2": with_manifest(modes={"r": {"mode": "canary", "fraction": 2.0}}),
        "options_list": with_manifest(options=[1]),
        "version_list": with_manifest(version=[1]),
        "version_surrogate": with_manifest(version="\ud800"),
        "path_int": with_manifest(files=[{**first, "path": 7}]),
        "role_unknown": with_manifest(files=[{**first, "role": "exe"}]),
        "sha_not_hex": with_manifest(files=[{**first, "sha256": "zz"}]),
        "bundle_list": {"bundle": [m]},
        "top_list": [doc],
        "top_null": None,
    }


def test_every_wrong_typed_bundle_is_a_bundle_error(signed: tuple[Path, Path]) -> None:
    path, _ = signed
    doc = json.loads(path.read_text())
    for name, bad in _mutations(doc).items():
        bad_path = path.with_name(f"{name}.bundle.json")
        bad_path.write_text(json.dumps(bad))
        with pytest.raises(BundleError) as info:
            read_bundle(bad_path)
        assert "\n" not in str(info.value) and str(bad_path) in str(info.value), name


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"bundle": {"version": ' + b"1" * 5000 + b"}}", "digit"),
        (b"\xff\xfe\x00garbage", "UTF-8"),
        (bytes(range(256)), "UTF-8"),
        (b'{"bundle": ', "invalid JSON"),
    ],
)
def test_unreadable_bundles_are_a_bundle_error(tmp_path: Path, data: bytes, reason: str) -> None:
    path = _write(tmp_path, "b.bundle.json", data)
    with pytest.raises(BundleError, match=reason):
        read_bundle(path)


def test_a_10gb_bundle_is_refused_from_its_size(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(BundleError, match="content limit"):
        read_bundle(_huge(tmp_path / "huge.bundle.json"))
    assert time.monotonic() - started < 5


def _drop_in(store: DeploymentStore, data: bytes) -> str:
    """Put ``data`` in the store as the current bundle, as if it got past the CLI."""
    digest = hashlib.sha256(data).hexdigest()
    target = store.bundle_path(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)

    def mutate(state: dict[str, Any]) -> dict[str, Any]:
        state["stack"].append(digest)
        state["current"] = digest
        return {"bundle": digest}

    store._change("deploy", mutate)
    return digest


def test_running_watcher_keeps_its_rules_for_every_bad_bundle(
    signed: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, trusted = signed
    store = DeploymentStore(tmp_path / "store")
    store.deploy(path, load_trusted_keys([trusted]))
    watcher = DeploymentWatcher(store.root, [trusted])
    first = watcher.poll()
    assert first is not None and len(first.plan.rules) == 1
    doc = json.loads(path.read_text())
    bad_files = {n: json.dumps(d).encode() for n, d in _mutations(doc).items()}
    bad_files |= {"garbage": bytes(range(256)), "deep": b"[" * 100_000 + b"]" * 100_000}
    caplog.set_level(logging.ERROR)
    for name, data in bad_files.items():
        _drop_in(store, data)
        kept = watcher.poll()  # never raises
        assert kept is not None and kept.digest == first.digest, name
        assert len(kept.plan.rules) == 1
        assert watcher.last_refusal, name
    refusals = store.state()["refusals"]
    assert len(refusals) == len(bad_files)
    assert all(r["reason"] and "\n" not in r["reason"] for r in refusals)
    assert sum("refusing bundle" in r.message for r in caplog.records) == len(bad_files)


@pytest.mark.parametrize(
    "state",
    [
        b'{"generation": "1"}',
        b'{"generation": 1, "current": ["x"]}',
        b'{"generation": 1, "overrides": {"r": {"mode": "loud"}}}',
        b"[1, 2]",
        b"[" * 100_000,
        bytes(range(256)),
    ],
)
def test_bad_deployment_state_is_refused_and_the_watcher_keeps_running(
    signed: tuple[Path, Path], tmp_path: Path, state: bytes
) -> None:
    path, trusted = signed
    store = DeploymentStore(tmp_path / "store")
    store.deploy(path, load_trusted_keys([trusted]))
    watcher = DeploymentWatcher(store.root, [trusted])
    content = watcher.poll()
    store.state_path.write_bytes(state)
    with pytest.raises(BundleError, match=r"state\.json"):
        store.state()
    assert watcher.poll() is None and watcher.current is content


# --- placeholders, grouping, API keys, rule tests ----------------------------------------

SMALL_HOSTILE: dict[str, bytes] = {
    "alias_bomb": (LAUGHS + "z: *i\n").encode(),
    "deep_nesting": b"a: " + b"[" * 100_000 + b"]" * 100_000,
    "invalid_utf8": b"a: \xff\n",
    "duplicate_keys": b"a: [1]\na: [2]\n",
    "two_documents": b"a: [1]\n---\nb: [2]\n",
    "binary_garbage": bytes(range(256)),
    "a_list": b"- a\n- b\n",
    "a_scalar": b"12345\n",
    "nested_values": b"a: [{b: c}]\n",
}


@pytest.mark.parametrize("case", sorted(SMALL_HOSTILE))
def test_placeholders_refuse_hostile_files(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path, "placeholders.yml", SMALL_HOSTILE[case])
    with pytest.raises(ContentError) as info:
        load_placeholders(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_placeholders_good_file_and_huge_file(tmp_path: Path) -> None:
    good = _write(tmp_path, "p.yml", "Admins: [alice, bob]\nPort: 443\n")
    assert dict(load_placeholders(good).placeholders) == {
        "Admins": ["alice", "bob"],
        "Port": ["443"],
    }
    with pytest.raises(ContentError, match="content limit"):
        load_placeholders(_huge(tmp_path / "huge.yml"))


GROUPING_BAD = {
    **{k: v for k, v in SMALL_HOSTILE.items() if k != "nested_values"},
    "rules_list": b"rules: [a, b]\n",
    "default_text": b"default: soon\n",
    "window_negative": b"rules: {r1: -5}\n",
    "window_mapping": b"rules: {r1: {s: 1}}\n",
}


@pytest.mark.parametrize("case", sorted(GROUPING_BAD))
def test_grouping_refuses_hostile_files(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path, f"grouping-{case}.yml", GROUPING_BAD[case])
    with pytest.raises(ContentError) as info:
        load_config(path, 3600)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_grouping_good_file_still_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, "grouping.yml", "default: 600\nrules: {r1: 0, r2: 60}\n")
    config = load_config(path, 3600)
    assert (config.default_window_s, config.window_for("r1"), config.window_for("r2")) == (
        600,
        0,
        60,
    )


API_KEYS_BAD = {
    **SMALL_HOSTILE,
    "entry_list": b"sk-secret-123456: [acme, analyst]\n",
    "no_tenant": b"sk-secret-123456: {role: analyst}\n",
    "unknown_role": b"sk-secret-123456: {tenant: acme, role: root}\n",
    "tenant_mapping": b"sk-secret-123456: {tenant: {a: 1}}\n",
    "typo_field": b"sk-secret-123456: {tenant: acme, rol: analyst}\n",
}


@pytest.mark.parametrize("case", sorted(API_KEYS_BAD))
def test_api_key_file_refuses_hostile_files(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path, "keys.yml", API_KEYS_BAD[case])
    with pytest.raises(ContentError) as info:
        KeyStore.from_file(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert "sk-secret-123456" not in str(info.value)  # never the whole key in a message


def test_api_key_file_good_and_huge(tmp_path: Path) -> None:
    good = _write(tmp_path, "keys.yml", "sk-alice-1: {tenant: acme, role: analyst, user: alice}\n")
    caller = KeyStore.from_file(good).lookup("sk-alice-1")
    assert caller is not None and (caller.tenant, caller.role) == ("acme", "analyst")
    with pytest.raises(ContentError, match="content limit"):
        KeyStore.from_file(_huge(tmp_path / "huge.yml"))


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"tp": [' + b"1" * 5000 + b"]}",
        bytes(range(256)),
        b'{"tp": {"a": 1}}',
        b"[1, 2]",
    ],
)
def test_rule_test_files_refuse_hostile_json(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path, "r.tests.json", data)
    with pytest.raises(ValueError):  # collect_cases reports it as the file's error
        read_tests(path)


# --- gateway credentials ------------------------------------------------------------------

CREDENTIALS_BAD = {
    "not_json": b"{ half",
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "a_list": b"[1, 2]",
    "credentials_list": b'{"credentials": ["x"]}',
    "entry_wrong_type": b'{"credentials": {"k": {"key_id": 1}}}',
    "missing_fields": b'{"credentials": {"k": {"tenant_id": "t"}}}',
    "garbage": bytes(range(256)),
    "big_int": b'{"version": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("case", sorted(CREDENTIALS_BAD))
def test_credential_store_refuses_a_bad_file_at_start(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path, "credentials.json", CREDENTIALS_BAD[case])
    store = CredentialStore(path)
    with pytest.raises(CredentialFileError) as info:
        store.load()
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert store.verify("sst_0123456789abcdef_" + "a" * 30) is None  # fails closed
    with pytest.raises(CredentialFileError):
        store.enroll("acme", "s1")  # never overwrites a file it could not read
    assert path.read_bytes() == CREDENTIALS_BAD[case]


@pytest.mark.parametrize("case", sorted(CREDENTIALS_BAD))
def test_running_gateway_keeps_last_good_credentials(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "credentials.json"
    store = CredentialStore(path)
    _, token = store.enroll("acme", "s1")
    running = CredentialStore(path)
    assert running.verify(token) is not None and running.problem is None
    path.write_bytes(CREDENTIALS_BAD[case])  # an outside edit (ours are atomic renames)
    caplog.set_level(logging.ERROR)
    for _ in range(3):
        cred = running.verify(token)
        assert cred is not None and cred.sensor_id == "s1"
    assert running.problem and str(path) in running.problem
    assert sum("keeping the last good" in r.message for r in caplog.records) == 1  # once
    with pytest.raises(CredentialFileError):
        running.credentials()


def test_a_10gb_credential_file_is_refused_from_its_size(tmp_path: Path) -> None:
    store = CredentialStore(_huge(tmp_path / "credentials.json"))
    started = time.monotonic()
    with pytest.raises(CredentialFileError, match="content limit"):
        store.load()
    assert time.monotonic() - started < 5


# --- signing keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", bytes(range(256)), b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"],
)
def test_a_stray_key_file_is_skipped_and_the_good_key_still_verifies(
    signed: tuple[Path, Path], data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path, trusted = signed
    (trusted / "stray.pub").write_bytes(data)
    caplog.set_level(logging.WARNING)
    keys = load_trusted_keys([trusted])
    assert len(keys) == 1 and read_bundle(path).verify(keys) in keys
    assert any("stray.pub: not a PEM public key" in r.message for r in caplog.records)
    with pytest.raises(ContentError, match=r"stray\.pub: not a PEM public key"):
        load_trusted_keys([trusted / "stray.pub"])  # named on its own: must load
    with pytest.raises(ContentError, match="content limit"):
        load_trusted_keys([_huge(trusted / "huge.pub")])
