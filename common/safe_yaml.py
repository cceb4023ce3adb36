"""One bounded YAML loader for every piece of content Sigstream reads.

Rules, correlation rules, bundles, placeholders, grouping and API-key files are written by
people and may be hostile. PyYAML's safe loader is safe from code execution but not from
resource bombs: a 678-byte "billion laughs" document of nested aliases expands into
billions of nodes when anything walks it, and ``[[[[...]]]]`` a few thousand deep exhausts
the recursion limit. This loader refuses, before anything walks the result:

* texts over ``max_bytes``,
* documents nested deeper than ``max_depth``,
* more than ``max_aliases`` alias references,
* documents whose *expanded* size (every alias counted as the nodes it stands for) passes
  ``max_nodes``, so the bomb is caught from the event stream, before anything is built.

Every failure, whatever its cause, is a :class:`ContentError` with a one-line reason, so a
caller has a single exception to turn into a refusal or a quarantine. Files are read with a
bound (:func:`read_content`): a 10 GB file is refused from its size, never read into memory.
JSON content files (bundles, credential stores) get the same treatment (:func:`load_json`),
and :func:`validated` turns a pydantic validation failure (a list where a mapping belongs,
a number where text belongs) into a one-line :class:`ContentError` too.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = [
    "ContentError",
    "YamlLimits",
    "check_shape",
    "expect_mapping",
    "load_json",
    "load_yaml",
    "load_yaml_documents",
    "load_yaml_file",
    "read_content",
    "validated",
]

M = TypeVar("M", bound=BaseModel)


class ContentError(ValueError):
    """Content that cannot be loaded; ``str()`` is the reason, one line (whitespace in
    quoted content, say a key that is a newline, is folded so logs stay one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(str(reason).split()))


@dataclass(frozen=True)
class YamlLimits:
    #: A Sigma rule is a few KiB; the largest SigmaHQ rule is ~40 KiB.
    max_bytes: int = 1 << 20
    max_depth: int = 64
    max_aliases: int = 256
    max_nodes: int = 200_000


DEFAULT_LIMITS = YamlLimits()


_C_BASE: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _NoDuplicateKeys(_C_BASE):  # type: ignore[misc,valid-type]
    """The safe loader (libyaml when present) refusing duplicate mapping keys, as pySigma's
    loader does: in content a repeated key silently replaces the first, which is never
    what its author meant."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so below
                continue
            if duplicate:
                raise ContentError(f"duplicate key {str(key)[:80]!r}")
        return super().construct_mapping(node, deep)


def check_shape(text: str, limits: YamlLimits = DEFAULT_LIMITS) -> None:
    """Refuse ``text`` if its documents are too deep, use too many aliases or expand past
    ``max_nodes``. Walks the flat event stream (no recursion, libyaml's speed): composing
    must not start before this passes, because libyaml's composer recurses in C and a
    document 100,000 levels deep kills the process with a segmentation fault."""
    depth = aliases = nodes = 0
    sizes: dict[str, int] = {}
    open_nodes: list[tuple[str | None, int]] = []

    def count(n: int) -> None:
        nonlocal nodes
        nodes += n
        if nodes > limits.max_nodes:
            raise ContentError(
                f"YAML document expands to more than {limits.max_nodes} nodes (alias bomb?)"
            )

    for event in yaml.parse(text, Loader=_C_BASE):
        if isinstance(event, yaml.DocumentStartEvent):
            depth = aliases = nodes = 0
            sizes = {}
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > limits.max_aliases:
                raise ContentError(f"more than {limits.max_aliases} YAML aliases")
            count(sizes.get(event.anchor or "", 1))
        elif isinstance(event, yaml.ScalarEvent):
            count(1)
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limits.max_depth:
                raise ContentError(f"YAML nested deeper than {limits.max_depth} levels")
            open_nodes.append((event.anchor, nodes))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            anchor, before = open_nodes.pop()
            count(1)
            if anchor:
                sizes[anchor] = nodes - before


def _text(data: str | bytes, limits: YamlLimits) -> str:
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > limits.max_bytes:
        raise ContentError(f"{size} bytes is over the {limits.max_bytes}-byte content limit")
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContentError(f"not UTF-8: {exc}") from None
    return data


def load_yaml_documents(data: str | bytes, *, limits: YamlLimits = DEFAULT_LIMITS) -> list[Any]:
    """Every non-empty document of ``data``; :class:`ContentError` for anything wrong."""
    text = _text(data, limits)
    try:
        check_shape(text, limits)
        return [doc for doc in yaml.load_all(text, _NoDuplicateKeys) if doc is not None]
    except ContentError:
        raise
    except yaml.YAMLError as exc:
        raise ContentError(f"invalid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise ContentError("YAML nested too deeply") from None
    except Exception as exc:
        raise ContentError(f"cannot load YAML: {type(exc).__name__}: {_one_line(exc)}") from None


def load_yaml(data: str | bytes, *, limits: YamlLimits = DEFAULT_LIMITS) -> Any:
    """The single document of ``data`` (None when empty); more than one is an error."""
    documents = load_yaml_documents(data, limits=limits)
    if len(documents) > 1:
        raise ContentError(f"expected one YAML document, found {len(documents)}")
    return documents[0] if documents else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def read_content(path: str | Path, max_bytes: int = DEFAULT_LIMITS.max_bytes) -> bytes:
    """The bytes of ``path``, refusing (ContentError) anything but a regular file, files
    over ``max_bytes`` from their size before reading, and reading at most
    ``max_bytes + 1`` bytes (a file still growing cannot make us read more)."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO named like a rule must not wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as handle:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ContentError("not a regular file")
            if st.st_size > max_bytes:
                raise ContentError(f"{st.st_size} bytes is over the {max_bytes}-byte content limit")
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ContentError(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ContentError(f"more than {max_bytes} bytes: over the content limit")
    return data


def load_yaml_file(path: str | Path, *, limits: YamlLimits = DEFAULT_LIMITS) -> Any:
    """:func:`load_yaml` of a file read with :func:`read_content`."""
    return load_yaml(read_content(path, limits.max_bytes), limits=limits)


def load_json(data: str | bytes, *, max_bytes: int = DEFAULT_LIMITS.max_bytes) -> Any:
    """One JSON document; ContentError for anything wrong (size, encoding, syntax, nesting
    past the recursion limit, an integer past Python's digit limit)."""
    text = _text(data, YamlLimits(max_bytes=max_bytes))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContentError(f"invalid JSON: {_one_line(exc)}") from None
    except RecursionError:
        raise ContentError("JSON nested too deeply") from None
    except Exception as exc:
        raise ContentError(f"cannot load JSON: {type(exc).__name__}: {_one_line(exc)}") from None


def expect_mapping(value: Any, what: str) -> dict[Any, Any]:
    """``value`` if it is a mapping (None counts as empty), else a ContentError naming
    ``what`` and the type found."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ContentError(f"{what} must be a mapping, not {_type_name(value)}")
    return value


def validated(model: type[M], value: Any, what: str) -> M:
    """``value`` validated as ``model``; the first problem as a one-line ContentError
    (``where: message``) instead of pydantic's multi-line report."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(part) for part in first["loc"]) or "document"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ContentError(f"{what}: {where}: {_one_line_text(first['msg'])}{more}") from None


def _type_name(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _one_line_text(text: str) -> str:
    return " ".join(text.split())[:300]
