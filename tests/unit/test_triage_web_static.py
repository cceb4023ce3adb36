"""The triage page's sources: data can only become text. Findings carry strings an
attacker chose, so no script of the page may parse a string as HTML or code, and every
module is served from the page's own origin (no CDN, no build step)."""

from __future__ import annotations

import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "triage" / "web"
SCRIPTS = sorted(WEB.rglob("*.js"))
#: APIs that turn a string into markup or code.
SINKS = re.compile(
    r"\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write|\beval\(|new Function\(|"
    r"createContextualFragment|srcdoc"
)


def test_no_script_parses_strings_as_html_or_code() -> None:
    assert len(SCRIPTS) >= 8  # app.js, docs.js and the modules under js/
    found = [
        f"{path.relative_to(WEB)}:{n}: {line.strip()}"
        for path in SCRIPTS
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if SINKS.search(line)
    ]
    assert found == []


def test_modules_are_local() -> None:
    for path in SCRIPTS:
        for spec in re.findall(r'^import .* from "([^"]+)";', path.read_text(), re.M):
            assert spec.startswith("./"), (path.name, spec)
            assert (path.parent / spec).resolve().is_file(), (path.name, spec)
    html = (WEB / "index.html").read_text()
    assert "http://" not in html and "https://" not in html
