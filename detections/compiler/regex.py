"""Rules' regexes on RE2: linear time in the length of the text, whatever the pattern.

Python's ``re`` backtracks: ``(a+)+$`` against 41 ``a`` and a ``!`` takes about a day, so
one command line from any sensor could hang a Spark worker. RE2 runs every pattern it
accepts in time linear in the input, and refuses what it cannot run that way
(backreferences, lookaround, atomic groups, possessive quantifiers, ``(?x)``): such a
rule is refused with a reason when it is compiled (``RegexRefused``), in every path that
compiles rules (check, validate, bundle, deploy, job start).

Sigma regexes reach us as Python's ``re`` reads them (pySigma validates them with it).
Where the two dialects spell the same thing differently, or RE2 would silently read a
Python pattern differently, the pattern is translated (``translate``):

* ``\\Z`` (Python: the very end) is RE2's ``\\z``;
* ``{,n}`` (Python: zero to n) is RE2's ``{0,n}`` (RE2 reads ``{,n}`` as literal text);
* ``[`` inside a character class is literal in Python; RE2 would read ``[[:alpha:]]`` as a
  POSIX class, so it is escaped;
* ``$`` without ``m`` also matches before a final line break in Python (and PCRE), and
  only at the very end in RE2: a text ending in ``\\n`` is also searched without it.

Known remaining difference: ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII in RE2 (as in
PCRE, the dialect Sigma documents), Unicode-aware in Python's ``re``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import re2

__all__ = [
    "UNSUPPORTED_REGEX",
    "EngineRegex",
    "RegexRefused",
    "compile_glob",
    "compile_regex",
    "regex_refusal",
]

#: Memory RE2 may use for one compiled pattern (its default). A pattern whose program
#: needs more is refused at compile time; at match time RE2 falls back from its DFA to
#: its (still linear) NFA instead of growing.
MAX_MEM = 8 << 20

#: A class no character is in: stands for ``\\Z`` when the final line break is cut off.
_NEVER = r"[^\x00-\x{10ffff}]"


#: Why a valid regex is refused, said with every refusal.
UNSUPPORTED_REGEX = (
    "RE2, the engine's linear-time regex, cannot run it: backreferences, lookaround, "
    "atomic groups, possessive quantifiers and (?x) are not supported"
)


class RegexRefused(ValueError):
    """A pattern the engine cannot run in linear time (or at all); ``str`` says why."""


@dataclass(frozen=True)
class _Translated:
    pattern: str
    dollar: bool  # an unescaped ``$`` outside a class
    end_z: bool  # a ``\\Z`` (translated to ``\\z``)
    without_end_z: str = ""  # the pattern with ``\\Z`` never matching


def translate(pattern: str) -> _Translated:
    """``pattern`` (Python ``re`` syntax) in RE2 syntax; see the module docstring."""
    out: list[str] = []
    never: list[str] = []
    dollar = end_z = False
    i, n = 0, len(pattern)
    in_class = False
    class_start = 0
    while i < n:
        char = pattern[i]
        if char == "\\" and i + 1 < n:
            escaped = pattern[i : i + 2]
            i += 2
            if not in_class and escaped == "\\Z":
                end_z = True
                out.append("\\z")
                never.append(_NEVER)
                continue
            out.append(escaped)
            never.append(escaped)
            continue
        i += 1
        piece = char
        if in_class:
            # ``]`` first in the class (after an optional ``^``) is a literal in both.
            if char == "]" and i - 1 > class_start:
                in_class = False
            elif char == "[":
                piece = "\\["
        elif char == "[":
            in_class = True
            class_start = i
            if i < n and pattern[i] == "^":
                out.append("[^")
                never.append("[^")
                i += 1
                class_start = i
                continue
        elif char == "$":
            dollar = True
        elif char == "{" and i < n and pattern[i] == ",":
            end = i + 1
            while end < n and pattern[end].isdigit():
                end += 1
            if end > i + 1 and end < n and pattern[end] == "}":
                piece = "{0," + pattern[i + 1 : end] + "}"
                i = end + 1
        out.append(piece)
        never.append(piece)
    return _Translated("".join(out), dollar, end_z, "".join(never) if end_z else "")


@dataclass
class EngineRegex:
    """A rule's regex compiled for RE2: ``search`` says whether it matches anywhere."""

    pattern: str
    cased: bool = True
    flags: str = ""
    _main: Any = field(init=False, repr=False)
    _chopped: Any = field(init=False, repr=False, default=None)
    _dollar: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        translated = translate(self.pattern)
        prefix = "".join(f for f in "ms" if f in self.flags)
        prefix = f"(?{prefix})" if prefix else ""
        self._main = _re2(prefix + translated.pattern, self.cased, self.pattern)
        # Python's ``$`` (no ``m``) also matches before a final line break.
        self._dollar = translated.dollar and "m" not in self.flags
        if self._dollar:
            chopped = translated.without_end_z if translated.end_z else translated.pattern
            self._chopped = _re2(prefix + chopped, self.cased, self.pattern)

    def search(self, text: str) -> bool:
        data = _utf8(text)
        if self._main.search(data) is not None:
            return True
        if self._dollar and data.endswith(b"\n"):
            return self._chopped.search(data[:-1]) is not None
        return False


class _Glob:
    """A glob as an RE2 regex over the whole value (``fullmatch``) or anywhere (``search``)."""

    def __init__(self, regex: Any) -> None:
        self._regex = regex

    def fullmatch(self, text: str) -> bool:
        return self._regex.fullmatch(_utf8(text)) is not None

    def search(self, text: str) -> bool:
        return self._regex.search(_utf8(text)) is not None


def compile_glob(pattern: str) -> _Glob:
    """An RE2 pattern built by the compiler from a glob (literals already escaped)."""
    return _Glob(_re2("(?s)" + pattern, True, pattern))


def compile_regex(pattern: str, cased: bool = True, flags: str = "") -> EngineRegex:
    """A rule's regex for the engine; raises :class:`RegexRefused` with the reason."""
    return EngineRegex(pattern, cased, flags)


@lru_cache(maxsize=4096)
def regex_refusal(pattern: str, cased: bool = True, flags: str = "") -> str | None:
    """Why the engine cannot run ``pattern`` (None: it can). Cached: the compiler asks for
    every regex predicate, and rule sets repeat patterns."""
    try:
        compile_regex(pattern, cased, flags)
    except RegexRefused as exc:
        return str(exc)
    return None


def _re2(pattern: str, cased: bool, original: str) -> Any:
    options = re2.Options()
    options.max_mem = MAX_MEM
    options.log_errors = False
    options.case_sensitive = cased
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RegexRefused(f"{original!r}: {detail} ({UNSUPPORTED_REGEX})") from None


def _utf8(text: str) -> bytes:
    """The text as RE2 reads it. A lone surrogate (``\\ud800`` in a JSON string) has no
    UTF-8 form: it becomes U+FFFD, one character, as ``.`` counts it in Python."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text).encode()
