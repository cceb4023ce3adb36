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
caller has a single exception to turn into a refusal or a quarantine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["ContentError", "YamlLimits", "check_shape", "load_yaml", "load_yaml_documents"]


class ContentError(ValueError):
    """Content that cannot be loaded; ``str()`` is the reason, one line."""


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
