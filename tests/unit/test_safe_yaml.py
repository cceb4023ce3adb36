"""The one bounded YAML loader: bombs and deep nesting are refused with a reason, fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from common.safe_yaml import (
    ContentError,
    YamlLimits,
    expect_mapping,
    load_json,
    load_yaml,
    load_yaml_documents,
    load_yaml_file,
    read_content,
    validated,
)

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_alias_bomb_is_refused_while_composing() -> None:
    with pytest.raises(ContentError, match="expands to more than"):
        load_yaml(BILLION_LAUGHS)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ContentError, match="deeper than 64"):
        load_yaml("[" * 5000 + "]" * 5000)


def test_too_many_aliases_is_refused() -> None:
    text = "x: &x 1\ny: [" + ", ".join(["*x"] * 300) + "]\n"
    with pytest.raises(ContentError, match="more than 256 YAML aliases"):
        load_yaml(text)


def test_oversized_text_is_refused_before_parsing() -> None:
    with pytest.raises(ContentError, match="over the 100-byte content limit"):
        load_yaml("a: " + "x" * 200, limits=YamlLimits(max_bytes=100))


def test_benign_aliases_and_documents_load() -> None:
    assert load_yaml("x: &x {a: 1}\ny: *x\n") == {"x": {"a": 1}, "y": {"a": 1}}
    assert load_yaml_documents("a: 1\n---\nb: 2\n---\n") == [{"a": 1}, {"b": 2}]
    assert load_yaml("") is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ("a: [1\n", "invalid YAML"),
        ("a: 1\n---\nb: 2\n", "expected one YAML document"),
        (b"\xff\xfe", "not UTF-8"),
        ("!!python/object:os.system {}", "invalid YAML"),
    ],
)
def test_every_failure_is_a_content_error(text: str | bytes, reason: str) -> None:
    with pytest.raises(ContentError, match=reason):
        load_yaml(text)


def test_duplicate_keys_are_refused_like_pysigma_does() -> None:
    with pytest.raises(ContentError, match="duplicate key 'a'"):
        load_yaml("a: 1\nb: 2\na: 3\n")


def test_limits_are_configurable() -> None:
    assert load_yaml("[[1]]", limits=YamlLimits(max_depth=3)) == [[1]]
    with pytest.raises(ContentError, match="deeper than 3"):
        load_yaml("[[[[1]]]]", limits=YamlLimits(max_depth=3))


def test_depth_that_crashes_libyaml_is_refused_not_a_segfault() -> None:
    """libyaml's composer recurses in C: 100,000 levels used to kill the process."""
    with pytest.raises(ContentError, match="deeper than 64"):
        load_yaml("[" * 100_000 + "]" * 100_000)


def test_files_are_read_bounded_and_only_when_regular(tmp_path: Path) -> None:
    """A 10 GB (sparse) file is refused from its size, a FIFO without waiting for a writer."""
    huge = tmp_path / "huge.yml"
    with open(huge, "wb") as handle:
        handle.truncate(10 << 30)
    with pytest.raises(ContentError, match="over the 1048576-byte content limit"):
        read_content(huge)
    fifo = tmp_path / "pipe.yml"
    os.mkfifo(fifo)
    with pytest.raises(ContentError, match="not a regular file"):
        read_content(fifo)
    with pytest.raises(ContentError, match="cannot read"):
        read_content(tmp_path / "missing.yml")
    with pytest.raises(ContentError, match="cannot read"):
        read_content(tmp_path)  # a folder
    (tmp_path / "ok.yml").write_text("a: [1]\n")
    assert load_yaml_file(tmp_path / "ok.yml") == {"a": [1]}


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"[" * 100_000, "nested too deeply"),
        (b"1" * 5000, "digit"),
        (b"\xff", "not UTF-8"),
        (b"{", "invalid JSON"),
    ],
)
def test_json_failures_are_content_errors(data: bytes, reason: str) -> None:
    with pytest.raises(ContentError, match=reason):
        load_json(data)


def test_validated_and_expect_mapping_give_one_line_reasons() -> None:
    class Shape(BaseModel):
        a: dict[str, int]

    with pytest.raises(ContentError, match=r"^x: a: Input should be a valid dictionary$"):
        validated(Shape, {"a": [1]}, "x")
    with pytest.raises(ContentError, match="grouping must be a mapping, not a list"):
        expect_mapping([1], "grouping")
    assert expect_mapping(None, "grouping") == {}
