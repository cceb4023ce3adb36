"""The commands that load content answer each hostile file with a one-line reason and a
non-zero exit (or a quarantine listed with its reason), never a traceback or a crash."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from common.settings import PROJECT_ROOT, get_settings
from sigstream.cli import app

OWN = PROJECT_ROOT / "detections" / "rules" / "windows"
DEEP = b"title: x\ndetection: " + b"[" * 100_000 + b"]" * 100_000
BOMB = (
    "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "correlation: {type: event_count, rules: *i}\n"
).encode()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback from {args}: {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copy(OWN / "proc_access_lsass_memory_read.yml", folder)
    return folder


def test_rules_check_lists_the_hostile_files_with_reasons(rules: Path) -> None:
    (rules / "deep.yml").write_bytes(DEEP)
    (rules / "bomb.yml").write_bytes(BOMB)
    (rules / "dup.yml").write_text("title: a\ntitle: b\n")
    result = _invoke("rules", "check", str(rules), "--show-rejected")
    assert result.exit_code == 0  # documented: only the project's own rules fail `check`
    out = result.output
    assert f"parse_error {rules}/deep.yml: YAML nested deeper than 64 levels" in out
    assert f"parse_error {rules}/bomb.yml: YAML document expands to more than" in out
    assert f"parse_error {rules}/dup.yml: duplicate key 'title'" in out


def test_rules_check_of_a_segfaulting_rule_in_a_real_process(tmp_path: Path) -> None:
    """libyaml's composer used to kill the process (exit -11) on this file."""
    (tmp_path / "deep.yml").write_bytes(DEEP)
    command = [sys.executable, "-c", "from sigstream.cli import app; app()"]
    proc = subprocess.run(
        [*command, "rules", "check", str(tmp_path), "--show-rejected"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"parse_error {tmp_path}/deep.yml: YAML nested deeper than 64 levels" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_rules_test_and_validate_exit_1_with_the_reason(rules: Path) -> None:
    (rules / "proc_access_lsass_memory_read.tests.json").write_bytes(b"[" * 100_000)
    result = _invoke("rules", "test", str(rules))
    assert result.exit_code == 1
    assert "proc_access_lsass_memory_read.tests.json: " in result.output
    (rules / "proc_access_lsass_memory_read.tests.json").unlink()
    (rules / "bomb.yml").write_bytes(BOMB)
    result = _invoke("rules", "validate", str(rules), "--no-cost", "--no-sigma")
    assert result.exit_code == 1
    assert "expands to more than" in result.output


def test_bundle_refuses_a_folder_with_a_hostile_rule(rules: Path, tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    _invoke("rules", "keygen", "--private", str(key), "--public", str(tmp_path / "t" / "k.pub"))
    (rules / "deep.yml").write_bytes(DEEP)
    result = _invoke(
        "rules", "bundle", str(rules), "--key", str(key), "--out", str(tmp_path / "b.json")
    )
    assert result.exit_code == 1
    assert "deep.yml" in result.output and "parse_error" in result.output
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d["bundle"]["files"][0].update(content=12345), "content: Input should be"),
        (lambda d: d["bundle"].update(files=["x"]), "files.0: Input should be"),
        (lambda d: d.update(signature=["ed25519"]), "signature: Input should be"),
        (lambda d: d["bundle"].update(version={"v": 1}), "version: Input should be"),
    ],
)
def test_deploy_refuses_a_wrong_typed_bundle_in_one_line(
    rules: Path, tmp_path: Path, mutate: object, reason: str
) -> None:
    key, pub, store = tmp_path / "k.key", tmp_path / "t" / "k.pub", tmp_path / "store"
    _invoke("rules", "keygen", "--private", str(key), "--public", str(pub))
    good = tmp_path / "good.json"
    _invoke("rules", "bundle", str(rules), "--key", str(key), "--out", str(good), "--no-test")
    doc = json.loads(good.read_text())
    mutate(doc)  # type: ignore[operator]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    result = _invoke("rules", "deploy", str(bad), "--store", str(store), "--trusted", str(pub))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("refused: ") and reason in lines[0]
    assert not (store / "state.json").exists()  # nothing deployed


def test_status_and_deploy_refuse_a_corrupt_store_state(rules: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "state.json").write_text('{"generation": [1]}')
    result = _invoke("rules", "status", "--store", str(store))
    assert result.exit_code == 2
    assert "refused:" in result.output and "generation" in result.output


def test_correlations_command_quarantines_hostile_files(tmp_path: Path) -> None:
    (tmp_path / "bomb.yml").write_bytes(BOMB)
    (tmp_path / "list.yml").write_text(
        "title: t\nid: c0000000-0000-4000-8000-000000000009\ncorrelation:\n"
        "  type: event_count\n  rules: [[a, b]]\n  group-by: [Host]\n  timespan: 5m\n"
        "  condition: {gte: 2}\n"
    )
    result = _invoke("rules", "correlations", str(tmp_path))
    assert result.exit_code == 1
    assert "parse_error: " in result.output and "expands to more than" in result.output
    assert "bad_rules: " in result.output


@pytest.mark.parametrize(
    "variable, content, reason",
    [
        ("SIGSTREAM_PLACEHOLDERS_FILE", b"- a\n- b\n", "placeholders must be a mapping"),
        ("SIGSTREAM_PLACEHOLDERS_FILE", DEEP, "nested deeper"),
        ("SIGSTREAM_GROUPING_FILE", b"rules: [a]\n", "grouping file: rules"),
        ("SIGSTREAM_GROUPING_FILE", b"\xff\xfe", "not UTF-8"),
    ],
)
def test_detect_refuses_to_start_on_bad_site_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, content: bytes, reason: str
) -> None:
    path = tmp_path / "site.yml"
    path.write_bytes(content)
    monkeypatch.setenv(variable, str(path))
    result = _invoke("detect", "--once", "--no-deployments", "--rules", str(OWN))
    assert result.exit_code == 2
    assert f"refused: {path}: " in result.output and reason in result.output


def test_rules_check_refuses_bad_placeholders(
    rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "placeholders.yml"
    path.write_text("a: 1\na: 2\n")
    monkeypatch.setenv("SIGSTREAM_PLACEHOLDERS_FILE", str(path))
    result = _invoke("rules", "check", str(rules))
    assert result.exit_code == 2 and "duplicate key 'a'" in result.output


def test_findings_serve_refuses_a_bad_api_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.yml"
    path.write_text("sk-long-secret-1: {role: analyst}\n")
    monkeypatch.setenv("SIGSTREAM_API_KEYS_FILE", str(path))
    result = _invoke("findings", "serve", "--port", "18301")
    assert result.exit_code == 2
    assert "tenant: Field required" in result.output
    assert "sk-long-secret-1" not in result.output


def test_gateway_credentials_list_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text('{"credentials": ["x"]}')
    result = _invoke("gateway", "list", "--credentials", str(path))
    assert result.exit_code == 2
    assert "refused:" in result.output and "credentials" in result.output


def test_status_refuses_a_corrupt_job_status_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGSTREAM_RUN_DIR", str(tmp_path / "run"))
    status = tmp_path / "run" / "detect" / "status.json"
    status.parent.mkdir(parents=True)
    status.write_bytes(b"[" * 100_000)
    result = _invoke("rules", "status", "--store", str(tmp_path / "store"))
    assert result.exit_code == 2
    assert f"refused: {status}: JSON nested too deeply" in result.output


def test_bundle_and_deploy_refuse_garbage_key_files(rules: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(bytes(range(256)))
    result = _invoke("rules", "bundle", str(rules), "--key", str(garbage), "--no-test")
    assert result.exit_code == 2 and f"refused: {garbage}: not a PEM private key" in result.output
    result = _invoke(
        "rules", "deploy", str(garbage), "--store", str(tmp_path / "s"), "--trusted", str(garbage)
    )
    assert result.exit_code == 2 and "not a PEM public key" in result.output


def test_gateway_serve_refuses_a_bad_credential_file_at_start(tmp_path: Path) -> None:
    """A running gateway keeps its last good credentials; a starting one has none, so it
    refuses to start (one line, exit 2) instead of answering 401 to every sensor."""
    creds = tmp_path / "creds.json"
    creds.write_text('{"credentials": [1, 2, 3]}')
    result = CliRunner().invoke(
        app, ["gateway", "serve", "--credentials", str(creds), "--port", "18999"]
    )
    assert result.exit_code == 2, result.output
    assert "refused:" in result.output and str(creds.name) in result.output
