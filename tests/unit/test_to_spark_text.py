"""The string translations of ``to_spark`` (no JVM needed): globs to SQL LIKE patterns and
Sigma (Python-flavoured) regexes to Java regexes."""

from __future__ import annotations

import pytest

from detections.compiler.to_spark import glob_to_like, java_regex


@pytest.mark.parametrize(
    ("glob", "like"),
    [
        ("abc", "abc"),
        ("a*b?c", "a%b_c"),
        ("100%_done*", "100\\%\\_done%"),
        ("c:\\\\windows\\\\*", "c:\\\\windows\\\\%"),
        ("lit\\*star\\?q", "lit*star?q"),
        ("", ""),
    ],
)
def test_glob_to_like(glob: str, like: str) -> None:
    assert glob_to_like(glob) == like


@pytest.mark.parametrize(
    ("pattern", "cased", "flags", "java"),
    [
        ("a.b", True, "", "(?u)a.b"),
        ("a.b", False, "", "(?ui)a.b"),
        ("^a$", True, "sm", "(?ums)^a$"),
        # Python-only spellings
        ("(?P<q>x)(?P=q)", True, "", "(?u)(?<q>x)\\k<q>"),
        ("end\\Z", True, "", "(?u)end\\z"),
        ("a{,3}b{2,}c{,}", True, "", "(?u)a{0,3}b{2,}c{0,}"),
        # braces Python reads literally, Java would reject
        ("{x}", True, "", "(?u)\\{x\\}"),
        ("a{}", True, "", "(?u)a\\{\\}"),
        # character classes: nesting and intersection are literal in Python
        ("[[]", True, "", "(?u)[\\[]"),
        ("[]a]", True, "", "(?u)[\\]a]"),
        ("[^]a]", True, "", "(?u)[^\\]a]"),
        ("[a&&b]", True, "", "(?u)[a&\\&b]"),
        ("[\\]]x", True, "", "(?u)[\\]]x"),
        # a leading or trailing .* cannot change whether a search matches
        (".*evil.*", True, "", "(?u)evil"),
        (".*?lazy", True, "", "(?u).*?lazy"),
        (".*+possessive", True, "", "(?u).*+possessive"),
        ("escaped\\.*", True, "", "(?u)escaped\\.*"),
        ("backslash\\\\.*", True, "", "(?u)backslash\\\\"),
        ("[.*]", True, "", "(?u)[.*]"),
    ],
)
def test_java_regex(pattern: str, cased: bool, flags: str, java: str) -> None:
    assert java_regex(pattern, cased, flags) == java
