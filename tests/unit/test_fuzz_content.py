"""Property-based tests of every content loader: whatever the bytes, text or structure,
each loader returns its result or raises its own refusal type with a one-line reason,
never another exception (issue 17). ``HYPOTHESIS_PROFILE=fuzz`` runs 4,000 examples each.
"""

from __future__ import annotations

import copy
import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from common.safe_yaml import ContentError, load_yaml_documents
from detections.compiler.plan import load_placeholders, plan_rules
from detections.content.deploy.bundle import BundleError, read_bundle
from detections.content.deploy.store import DeploymentStore
from detections.content.deploy.watcher import DeploymentWatcher
from detections.content.workflow.ruletests import read_tests
from detections.correlation.compile import compile_correlations
from detections.sinks.grouping import load_config
from ingest.gateway.credentials import CredentialFileError, CredentialStore
from tests.unit.fuzz_support import json_values
from triage.auth import KeyStore

pytestmark = pytest.mark.fuzz

WORK = Path(tempfile.mkdtemp(prefix="sigstream-fuzz-content-"))
_names = itertools.count()

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)
SNIPPETS = [
    LAUGHS,
    "[" * 200,
    "{" * 200,
    "&a [*a]",
    "a: 1\na: 2\n",
    "---\n---\n",
    "!!python/object:os.system {}",
    "? [a, b]\n: c\n",
    "a: !!binary AAAA\n",
    "\ufeff\x00\x1b",
    "1" * 5000,
]


def _file(data: bytes, suffix: str = ".yml") -> Path:
    path = WORK / f"f{next(_names)}{suffix}"
    path.write_bytes(data)
    return path


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text.strip() and "\n" not in text, repr(text)


#: YAML-ish text: arbitrary text, dumped random structures, and hostile snippets spliced in.
yaml_texts = st.one_of(
    st.text(max_size=300),
    json_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.tuples(
        json_values.map(lambda v: yaml.safe_dump(v)), st.sampled_from(SNIPPETS), st.integers(0, 50)
    ).map(lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]),
)
yaml_bytes = st.one_of(
    yaml_texts.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=400)
)


# --- YAML loaders ---------------------------------------------------------------------------


@given(yaml_bytes)
@example(LAUGHS.encode())
@example(b"[" * 100_000)
def test_safe_yaml(data: bytes) -> None:
    try:
        docs = load_yaml_documents(data)
    except ContentError as exc:
        _one_line(exc)
        return
    assert isinstance(docs, list)


CORRELATION = {
    "title": "c",
    "id": "c0000000-0000-4000-8000-000000000001",
    "correlation": {
        "type": "event_count",
        "rules": ["r1"],
        "group-by": ["Host"],
        "timespan": "5m",
        "condition": {"gte": 2},
    },
}
CORR_KEYS = ["type", "rules", "group-by", "timespan", "condition", "aliases", "generate"]


@given(st.sampled_from(CORR_KEYS), json_values, yaml_texts)
def test_correlation_loader(key: str, value: Any, text: str) -> None:
    doc = copy.deepcopy(CORRELATION)
    doc["correlation"][key] = value
    sources = [("mutated.yml", yaml.safe_dump(doc)), ("random.yml", "correlation:\n" + text)]
    found = compile_correlations(sources, plan_rules([]))  # never raises
    for r in found.rejections:
        assert r.reason and r.message.strip()


@given(yaml_bytes)
@example(b"a: [{b: c}]\n")
def test_placeholders_loader(data: bytes) -> None:
    try:
        config = load_placeholders(_file(data))
    except ContentError as exc:
        _one_line(exc)
        return
    assert all(isinstance(v, str) for vs in config.placeholders.values() for v in vs)


@given(
    st.one_of(
        yaml_bytes,
        st.dictionaries(st.sampled_from(["default", "rules"]), json_values).map(
            lambda d: yaml.safe_dump(d).encode()
        ),
    )
)
def test_grouping_loader(data: bytes) -> None:
    try:
        config = load_config(_file(data), 3600)
    except ContentError as exc:
        _one_line(exc)
        return
    assert config.default_window_s >= 0


@given(
    st.one_of(
        yaml_bytes,
        st.dictionaries(st.text(max_size=20), json_values, max_size=3).map(
            lambda d: yaml.safe_dump(d).encode()
        ),
        st.dictionaries(
            st.sampled_from(["tenant", "role", "user", "x"]), json_values, max_size=4
        ).map(lambda e: yaml.safe_dump({"sk-secret-1234567": e}).encode()),
    )
)
def test_api_key_loader(data: bytes) -> None:
    try:
        keys = KeyStore.from_file(_file(data))
    except ContentError as exc:
        _one_line(exc)
        assert "sk-secret-1234567" not in str(exc)
        return
    assert keys.lookup("") is None


# --- JSON loaders ---------------------------------------------------------------------------

GOOD_BUNDLE: dict[str, Any] = {
    "bundle": {
        "format": "sigstream-rule-bundle/1",
        "version": "1",
        "content_sha256": "0" * 64,
        "options": {"allow_unknown_fields": False},
        "modes": {"r": {"mode": "shadow"}},
        "rules": [{"id": "r", "title": "t", "level": None, "tags": []}],
        "files": [{"path": "rules/a.yml", "role": "rule", "sha256": "0" * 64, "content": "x"}],
    },
    "signature": {"algorithm": "ed25519", "key_id": "k", "value": "AA=="},
}
BUNDLE_PATHS = [
    (),
    ("bundle",),
    ("signature",),
    ("bundle", "format"),
    ("bundle", "version"),
    ("bundle", "options"),
    ("bundle", "modes"),
    ("bundle", "modes", "r"),
    ("bundle", "modes", "r", "fraction"),
    ("bundle", "rules"),
    ("bundle", "files"),
    ("signature", "value"),
]


def _replace(doc: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(doc)
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


json_bodies = st.one_of(
    st.tuples(st.sampled_from(BUNDLE_PATHS), json_values).map(
        lambda t: json.dumps(_replace(GOOD_BUNDLE, *t)).encode()
    ),
    st.tuples(st.sampled_from(["path", "role", "sha256", "content"]), json_values).map(
        lambda t: json.dumps(
            _replace(
                GOOD_BUNDLE,
                ("bundle", "files"),
                [{**GOOD_BUNDLE["bundle"]["files"][0], t[0]: t[1]}],
            )
        ).encode()
    ),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@given(json_bodies)
@example(b"[" * 100_000)
@example(b'{"bundle": {"version": "\\ud800"}}')
def test_bundle_loader_and_watcher(data: bytes) -> None:
    path = _file(data, ".bundle.json")
    try:
        read_bundle(path)
    except BundleError as exc:
        _one_line(exc)
    store = DeploymentStore(WORK / f"store{next(_names)}")
    store.root.mkdir()
    digest = "f" * 64
    store.bundle_path(digest).parent.mkdir()
    store.bundle_path(digest).write_bytes(data)
    store.state_path.write_text(json.dumps({"generation": 1, "current": digest, "stack": [digest]}))
    watcher = DeploymentWatcher(store.root, {})
    assert watcher.poll() is None  # refused (or unsigned): never raises


@given(
    st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(
            st.sampled_from(["generation", "current", "stack", "bundles", "overrides"]),
            json_values,
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_deployment_state_loader(data: bytes) -> None:
    store = DeploymentStore(WORK / f"state{next(_names)}")
    store.root.mkdir()
    store.state_path.write_bytes(data)
    try:
        state = store.state()
    except BundleError as exc:
        _one_line(exc)
    else:
        assert isinstance(state["generation"], int)
    assert DeploymentWatcher(store.root, {}).poll() is None


CREDENTIAL = {
    "key_id": "0123456789abcdef",
    "tenant_id": "t",
    "sensor_id": "s",
    "secret_sha256": "0" * 64,
    "created": "2026-01-01",
}


@given(
    st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.tuples(st.sampled_from([*CREDENTIAL, "relay", "revoked"]), json_values).map(
            lambda t: json.dumps({"credentials": {"k": {**CREDENTIAL, t[0]: t[1]}}}).encode()
        ),
    )
)
def test_credential_loader(data: bytes) -> None:
    store = CredentialStore(_file(data, ".json"))
    try:
        store.load()
    except CredentialFileError as exc:
        _one_line(exc)
    assert store.verify("sst_0123456789abcdef_" + "a" * 30) is None  # never raises


@given(
    st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(["tp", "tn", "rule"]), json_values).map(
            lambda d: json.dumps(d).encode()
        ),
    )
)
def test_rule_test_loader(data: bytes) -> None:
    try:
        read_tests(_file(data, ".tests.json"))
    except ValueError as exc:  # ContentError is one; collect_cases reports both with the file
        assert str(exc).strip()
