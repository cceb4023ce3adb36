"""Property tests: rules' regexes on RE2 (with Python-syntax translation) give the answers
Python's ``re`` gave, for generated patterns, flags and texts; and the job's record check
never raises on arbitrary bytes or JSON (``HYPOTHESIS_PROFILE=fuzz`` for the long run)."""

from __future__ import annotations

import json
import re
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detections.compiler.regex import RegexRefused, compile_regex
from detections.stream.parse import record_problem
from tests.unit.fuzz_support import json_values

pytestmark = pytest.mark.fuzz

ALPHABET = "ab\n-.[]$"
_atoms = st.sampled_from(
    ["a", "b", ".", "\\.", "\\-", "[ab]", "[^a]", "[a-]", "\\n", "\\d", "\\s", "\\w", "[[]", "\\$"]
)


def _quantified(atom: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    quantifiers = st.sampled_from(["", "*", "+", "?", "*?", "{2}", "{1,3}", "{,2}", "{2,}"])
    return st.tuples(atom, quantifiers).map("".join)


patterns = st.recursive(
    _quantified(_atoms),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4).map("".join),
        st.lists(inner, min_size=2, max_size=3).map("|".join),
        _quantified(inner.map(lambda p: f"(?:{p})")),
        inner.map(lambda p: f"({p})"),
    ),
    max_leaves=6,
)
anchored = st.tuples(
    st.sampled_from(["", "^", "\\A"]), patterns, st.sampled_from(["", "$", "\\Z"])
).map("".join)


@given(
    anchored, st.booleans(), st.sampled_from(["", "m", "s", "ms"]), st.text(ALPHABET, max_size=12)
)
def test_re2_agrees_with_python_re(pattern: str, cased: bool, flags: str, text: str) -> None:
    value = (0 if cased else re.IGNORECASE) | (re.M if "m" in flags else 0)
    value |= re.S if "s" in flags else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            python = re.compile(pattern, value)
        except re.error:
            return  # pySigma refuses it before the engine sees it
    try:
        engine = compile_regex(pattern, cased, flags)
    except RegexRefused:
        return  # refused with a reason: never a different answer
    assert engine.search(text) is (python.search(text) is not None), (pattern, flags, text)


@given(st.binary(max_size=300))
def test_record_check_never_raises_on_bytes(raw: bytes) -> None:
    assert record_problem(raw) is not None  # random bytes are never an event


@given(st.dictionaries(st.sampled_from(["event_type", "host", "seq", "extra", "x"]), json_values))
def test_record_check_never_raises_on_json(doc: dict[str, object]) -> None:
    text = json.dumps(doc)
    reason = record_problem(text.encode("utf-8", "surrogatepass"))
    assert isinstance(reason, str) and reason  # never an event: required fields are missing
