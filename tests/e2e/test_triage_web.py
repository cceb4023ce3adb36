"""The triage web page end to end in headless Chromium, against the real API (uvicorn,
configured as ``findings serve`` runs it) and Elasticsearch: load the list, filter, open a
finding, acknowledge it, and check the status stored in Elasticsearch; the page and the
local Swagger UI render under the strict Content-Security-Policy with no violation.

The analyst's walk (tenant ``initech``, ``triage_page_seed``): overview, a filter from the
overview, the filters kept in the URL through back and forward, keyboard navigation, a
finding with why it matched, the rule and the raw event, a correlation and its base
findings, acknowledging and closing from the keyboard, a deep link reloaded, the
sensor-health view; an attacker's markup in a command line stays text everywhere.

Screenshots go to ``SIGSTREAM_SCREENSHOT_DIR`` (default ``tests/.artifacts/screens``,
git-ignored); the folder is printed in the test output."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings
from detections.sinks.elasticsearch import connect, groups_index
from tests.integration import triage_page_seed, triage_seed
from triage.auth import KeyStore

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
#: The stack the ``services`` fixture runs (SIGSTREAM_ES_HOSTS; 127.0.0.1:9200 by default).
HOSTS = Settings().es_hosts
KEYS = KeyStore(
    {
        "web-key": {"tenant": "acme", "role": "analyst", "user": "webby"},
        "page-key": {"tenant": "initech", "role": "analyst", "user": "peter"},
        "empty-key": {"tenant": "nobody-yet", "role": "read-only", "user": "newbie"},
    }
)
SCREENS = Path(__file__).resolve().parents[1] / ".artifacts" / "screens"


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip(
            "chromium and chromedriver not installed (apt-get install chromium "
            "chromium-driver; .ci/run installs them)"
        )
    return browser, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(services: dict[str, Any], unique: str) -> Iterator[tuple[str, triage_seed.Seeded]]:
    import uvicorn

    from triage.api import create_app
    from triage.server import uvicorn_config

    seeded = triage_seed.seed(HOSTS, f"test-{unique}-findings", f"test-{unique}-events")
    page = triage_page_seed.seed_page(
        HOSTS, seeded.index, seeded.events_index, f"test-{unique}-sensors"
    )
    seeded.page = page
    settings = Settings(
        findings_index=seeded.index,
        events_index=seeded.events_index,
        sensors_index=page.sensors_index,
    )
    port = _free_port()
    app = create_app(settings, KEYS, docs=True)
    srv = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", seeded
    srv.should_exit = True
    thread.join(timeout=10)
    triage_seed.drop(HOSTS, seeded)
    triage_page_seed.drop_page(HOSTS, page)


@pytest.fixture
def browser() -> Iterator[Any]:
    binary, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.implicitly_wait(0)
    # Record every CSP violation (a DevTools-injected script is exempt from the CSP).
    drv.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.__csp = []; document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        },
    )
    yield drv
    drv.quit()


def test_list_filter_open_and_acknowledge(server: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, seeded = server
    wait = WebDriverWait(browser, 20)
    browser.get(url + "/")
    browser.find_element(By.ID, "api-key").send_keys("web-key")
    browser.find_element(By.ID, "save-key").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "whoami"), "webby (analyst, tenant acme)"))
    browser.find_element(By.ID, "nav-findings").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "1 findings"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#findings tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == [seeded.acme_id]  # not globex's

    # A filter that excludes it, then one that keeps it.
    host = browser.find_element(By.ID, "f-host")
    host.send_keys("WS02")
    browser.find_element(By.ID, "apply").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "0 findings"))
    assert browser.find_elements(By.CSS_SELECTOR, "#findings tbody tr[data-id]") == []
    assert "No findings match" in browser.find_element(By.ID, "findings").text
    host.clear()
    host.send_keys("ws01")
    Select(browser.find_element(By.ID, "f-level")).select_by_visible_text("high")
    Select(browser.find_element(By.ID, "f-status")).select_by_visible_text("open")
    browser.find_element(By.ID, "f-text").send_keys("hidden")
    browser.find_element(By.ID, "apply").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "1 findings"))

    browser.find_element(By.CSS_SELECTOR, f'#findings tbody tr[data-id="{seeded.acme_id}"]').click()
    wait.until(ec.visibility_of_element_located((By.ID, "detail")))
    assert browser.find_element(By.ID, "fact-count").text == "5"
    assert browser.find_element(By.ID, "d-match-count").text == "(5)"
    ancestry = browser.find_element(By.ID, "d-ancestry").text
    assert "WINWORD.EXE" in ancestry and "explorer.exe" in ancestry
    assert len(browser.find_elements(By.CSS_SELECTOR, "#d-related tbody tr")) >= 6

    browser.find_element(By.ID, "btn-ack").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "fact-status"), "acknowledged"))
    assert "webby ack status: open → acknowledged" in browser.find_element(By.ID, "d-history").text

    es = connect(HOSTS)
    try:
        stored = es.get(index=groups_index(seeded.index), id=seeded.acme_id)["_source"]
    finally:
        es.close()
    assert stored["sigstream"]["finding"]["status"] == "acknowledged"
    assert stored["sigstream"]["finding"]["history"][-1]["actor"] == "webby"


def _csp_problems(browser: Any) -> list[str]:
    """CSP violations the page reported, and console errors that mention the policy."""
    seen = list(browser.execute_script("return window.__csp || []"))
    for entry in browser.get_log("browser"):
        message = entry["message"]
        if "favicon.ico" in message:  # the browser asks for one; there is none (404)
            continue
        if "Content Security Policy" in message or entry["level"] == "SEVERE":
            seen.append(message)
    return seen


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SIGSTREAM_SCREENSHOT_DIR") or SCREENS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_page_and_docs_render_under_the_csp(server: Any, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, seeded = server
    wait = WebDriverWait(browser, 20)
    browser.get(url + "/")
    browser.find_element(By.ID, "api-key").send_keys("web-key")
    browser.find_element(By.ID, "save-key").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "whoami"), "webby"))
    browser.find_element(By.ID, "nav-findings").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "1 findings"))
    browser.save_screenshot(str(_shots(tmp_path) / "triage-list.png"))
    browser.find_element(By.CSS_SELECTOR, f'#findings tbody tr[data-id="{seeded.acme_id}"]').click()
    wait.until(ec.visibility_of_element_located((By.ID, "detail")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "fact-count"), "5"))
    # The stylesheet applied (an external file: the CSP allows no inline style).
    assert browser.find_element(By.TAG_NAME, "body").value_of_css_property("margin") != "8px"
    browser.save_screenshot(str(_shots(tmp_path) / "triage-page.png"))
    assert _csp_problems(browser) == []

    browser.get(url + "/docs")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui .info .title")))
    assert "Sigstream triage API" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    browser.save_screenshot(str(_shots(tmp_path) / "triage-docs.png"))
    assert _csp_problems(browser) == []


# --- the analyst's walk over the initech data set ----------------------------------------


def _full_shot(browser: Any, folder: Path, name: str) -> Path:
    """A screenshot of the whole page (the window grown to the document's height)."""
    width = browser.get_window_size()["width"]
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(max(int(height) + 120, 1000), 5000))
    path = folder / name
    browser.save_screenshot(str(path))
    browser.set_window_size(width, 1000)
    return path


def _no_markup_ran(browser: Any) -> None:
    """The attacker's ``<img onerror>`` never became an element, and never ran."""
    assert browser.execute_script("return window.__xss === undefined")
    assert browser.find_elements("css selector", "main img, dialog img") == []


def _hash(browser: Any) -> str:
    return str(browser.execute_script("return decodeURIComponent(location.hash)"))


def _fits(browser: Any) -> None:
    """Nothing (a long command line) makes the page scroll sideways."""
    over = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert over <= 0, f"the page is {over}px wider than the window"


def test_analyst_walk(server: Any, browser: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, seeded = server
    page: triage_page_seed.PageSeeded = seeded.page
    shots = _shots(Path("."))
    with capsys.disabled():
        print(f"\ntriage page screenshots: {shots}")
    wait = WebDriverWait(browser, 20)
    keys = lambda *k: ActionChains(browser).send_keys(*k).perform()  # noqa: E731
    text = lambda el_id: browser.find_element(By.ID, el_id).text  # noqa: E731
    # Keys go to the page, not to a field or button (as after a click on empty space).
    blur = lambda: browser.execute_script("document.activeElement?.blur()")  # noqa: E731

    # 1. The overview is the landing page.
    browser.get(url + "/")
    browser.find_element(By.ID, "api-key").send_keys("page-key")
    browser.find_element(By.ID, "save-key").click()
    who = "peter (analyst, tenant initech)"
    wait.until(ec.text_to_be_present_in_element((By.ID, "whoami"), who))
    wait.until(lambda b: b.find_element(By.ID, "overview-status").get_attribute("data-total"))
    cards = text("o-cards")
    for expected in (
        "14\nfindings",
        "12\nopen",
        "1\nacknowledged",
        "1\nclosed",
        "7\nSigma",
        "1\ncorrelations",
        "6\nsensor health",
    ):
        assert expected in cards, (expected, cards)
    segments = browser.find_elements(By.CSS_SELECTOR, "#o-chart svg rect.seg")
    assert len(segments) >= 8  # one segment per (bar, level); 14 findings over 2 days
    assert "critical\n2" in text("o-legend") and "low\n4" in text("o-legend")
    tops = text("o-tops")
    assert "Local Account Discovery" in tops and "FIN-WS07" in tops and "discovery" in tops
    assert "T1059.001" in tops
    _full_shot(browser, shots, "01-overview.png")

    # 2. The last 24 hours leave out the one older finding; the range is in the URL.
    Select(browser.find_element(By.ID, "o-range")).select_by_value("24h")
    wait.until(ec.text_to_be_present_in_element((By.ID, "o-cards"), "13\nfindings"))
    assert "range=24h" in _hash(browser)

    # 3. From the overview to the list: a top host, same time range.
    browser.find_element(By.LINK_TEXT, "FIN-WS08").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "3 findings"))
    assert "host=FIN-WS08" in _hash(browser) and "range=24h" in _hash(browser)
    assert browser.find_element(By.ID, "f-host").get_attribute("value") == "FIN-WS08"
    listing = text("findings")
    assert triage_page_seed.XSS in listing  # the markup is shown as text
    _no_markup_ran(browser)
    _fits(browser)
    _full_shot(browser, shots, "02-list-filtered.png")

    # 4. Filters live in the URL: apply one, then back and forward restore the views.
    Select(browser.find_element(By.ID, "f-level")).select_by_visible_text("medium")
    browser.find_element(By.ID, "apply").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "2 findings"))
    assert "level=medium" in _hash(browser)
    browser.back()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "3 findings"))
    assert browser.find_element(By.ID, "f-level").get_attribute("value") == ""
    browser.forward()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "2 findings"))
    assert browser.find_element(By.ID, "f-level").get_attribute("value") == "medium"

    # 5. Keyboard: j/k move, Enter opens, Esc comes back to the same list.
    browser.get(url + "/#/findings?range=24h")
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "13 findings"))
    blur()
    keys("j", "j", "k", "j", Keys.ARROW_DOWN)
    selected = browser.find_element(By.CSS_SELECTOR, "#findings tbody tr.selected")
    rows = browser.find_elements(By.CSS_SELECTOR, "#findings tbody tr[data-id]")
    assert selected.get_attribute("data-index") == "3"
    assert selected.get_attribute("aria-selected") == "true"
    wanted = rows[3].get_attribute("data-id")
    keys(Keys.ENTER)
    wait.until(ec.visibility_of_element_located((By.ID, "detail")))
    wait.until(lambda b: b.find_element(By.ID, "detail").get_attribute("data-id") == wanted)
    assert _hash(browser) == f"#/finding/{wanted}"
    # j on a finding opens the next one of the list, in place (Esc still goes back).
    blur()
    keys("j")
    after = rows[4].get_attribute("data-id")
    wait.until(lambda b: b.find_element(By.ID, "detail").get_attribute("data-id") == after)
    assert _hash(browser) == f"#/finding/{after}"
    blur()
    keys(Keys.ESCAPE)
    wait.until(ec.visibility_of_element_located((By.ID, "list-pane")))
    assert _hash(browser) == "#/findings?range=24h"
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "13 findings"))

    # Acknowledge from the list: the selected row, after a confirmation.
    blur()
    keys("k", "k", "k", "k", "k")  # up to the first row, the newest: "source lost"
    row = browser.find_element(By.CSS_SELECTOR, "#findings tbody tr.selected")
    row_id = row.get_attribute("data-id")
    assert row.get_attribute("data-index") == "0" and "Sensor event source lost" in row.text
    keys("a")
    wait.until(lambda b: b.find_element(By.ID, "confirm").get_attribute("open") is not None)
    browser.find_element(By.ID, "confirm-ok").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "ack: done"))
    wait.until(
        lambda b: (
            "acknowledged"
            in b.find_element(By.CSS_SELECTOR, f'#findings tbody tr[data-id="{row_id}"]').text
        )
    )

    # 6. "/" searches, "?" shows the shortcuts.
    blur()
    keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "f-text"
    keys(Keys.ESCAPE)
    keys("?")
    wait.until(lambda b: b.find_element(By.ID, "help").get_attribute("open") is not None)
    assert "acknowledge (asks first)" in text("help")
    _full_shot(browser, shots, "03-keyboard-help.png")
    keys(Keys.ESCAPE)

    # 7. A deep link, reloaded: the finding with markup in its command line.
    browser.get(url + f"/#/finding/{page.xss_id}")
    browser.refresh()
    wait.until(ec.text_to_be_present_in_element((By.ID, "d-title"), "Script Host Running Markup"))
    why = text("d-why")
    assert "CommandLine" in why and "contains" in why and "javascript:" in why
    marks = [m.text for m in browser.find_elements(By.CSS_SELECTOR, "#d-why mark")]
    assert marks == ["\\mshta.exe", "javascript:"]
    raw = browser.find_element(By.ID, "d-raw").get_attribute("textContent")
    assert '"CommandLine": "mshta.exe \\"javascript:' + triage_page_seed.XSS in raw
    assert triage_page_seed.XSS in text("fact-process")
    _no_markup_ran(browser)
    _fits(browser)
    _full_shot(browser, shots, "04-finding-markup-and-long-command-line.png")

    # 8. The rule beside the finding: description, false positives, references, ATT&CK.
    browser.get(url + f"/#/finding/{page.ps_id}")
    wait.until(ec.text_to_be_present_in_element((By.ID, "d-title"), "Encoded PowerShell"))
    assert "encoded command" in text("d-description")
    assert "SCCM, Intune" in text("d-falsepositives")
    refs = browser.find_elements(By.CSS_SELECTOR, "#d-references a")
    assert [a.get_attribute("href") for a in refs] == [
        "https://attack.mitre.org/techniques/T1059/001/"
    ]  # the javascript: reference is shown, never a link
    assert "javascript:alert(1)" in text("d-references")
    links = browser.find_elements(By.CSS_SELECTOR, "#d-attack a")
    attack = {a.text: a.get_attribute("href") for a in links}
    assert attack["T1059.001"] == "https://attack.mitre.org/techniques/T1059/001/"
    assert attack["execution"] == "https://attack.mitre.org/tactics/TA0002/"
    assert "selection_img" in text("d-why") and "selection_enc" in text("d-why")
    _full_shot(browser, shots, "05-finding-why-rule-raw.png")

    # 9. A correlation and its base findings, each a link to its finding.
    browser.get(url + f"/#/finding/{page.correlation_id}")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#d-base-table tbody tr")))
    base = browser.find_elements(By.CSS_SELECTOR, "#d-base-table tbody tr")
    assert [r.get_attribute("data-id") for r in base] == [page.ps_id, page.mimikatz_id]
    assert "keyword mimikatz" in base[1].text
    assert "Image|endswith \\powershell.exe" in base[0].text
    assert "gone-from-the-index" in text("d-base-missing")
    _full_shot(browser, shots, "06-correlation.png")
    base[1].find_element(By.CSS_SELECTOR, "a.base-link").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "d-title"), "Mimikatz Keywords"))
    assert "sekurlsa::logonpasswords" in text("d-why")

    # 10. Acknowledge and close from the keyboard, each after a confirmation.
    blur()
    keys("a")
    wait.until(lambda b: b.find_element(By.ID, "confirm").get_attribute("open") is not None)
    assert "Acknowledge" in text("confirm-text")
    browser.find_element(By.ID, "confirm-cancel").click()
    assert text("fact-status") == "open"  # cancelled: nothing changed
    keys("a")
    wait.until(lambda b: b.find_element(By.ID, "confirm").get_attribute("open") is not None)
    browser.find_element(By.ID, "confirm-ok").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "fact-status"), "acknowledged"))
    blur()
    keys("c")
    wait.until(lambda b: b.find_element(By.ID, "confirm").get_attribute("open") is not None)
    Select(browser.find_element(By.ID, "confirm-resolution")).select_by_value("false_positive")
    browser.find_element(By.ID, "confirm-ok").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "fact-status"), "closed (false_positive)"))
    es = connect(HOSTS)
    try:
        stored = es.get(index=groups_index(seeded.index), id=page.mimikatz_id)["_source"]
    finally:
        es.close()
    state = stored["sigstream"]["finding"]
    assert (state["status"], state["resolution"]) == ("closed", "false_positive")
    assert {h["actor"] for h in state["history"]} == {"peter"}
    assert state["history"][0]["action"] == "ack"
    assert "close" in [h["action"] for h in state["history"]]

    # 11. Sensor health: worst first, with what is wrong with each sensor.
    browser.find_element(By.ID, "nav-sensors").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "sensors-status"), "4 sensors"))
    assert all(x in text("s-cards") for x in ("1\nsilent", "2\ndegraded", "1\nhealthy"))
    kinds = [
        r.get_attribute("data-kind")
        for r in browser.find_elements(By.CSS_SELECTOR, "#s-health-table tbody tr")
    ]
    assert sorted(kinds) == sorted(["silent", "stopped", "gap", "skew", "tampered", "source_lost"])
    rows = browser.find_elements(By.CSS_SELECTOR, "#sensors tbody tr")
    assert rows[0].get_attribute("data-sensor") == "initech-build02"
    assert rows[0].text.startswith("silent") and "stopped: SIGTERM" in rows[0].text
    fleet = text("sensors")
    assert "sources lost: file" in fleet and "clock behind -3605s" in fleet
    assert "open finding: code or configuration changed" in fleet  # DC01 is "healthy"
    _full_shot(browser, shots, "07-sensors.png")
    assert _csp_problems(browser) == []

    # 12. A narrow window: the finding with the long command line still fits.
    browser.set_window_size(820, 1000)
    browser.get(url + f"/#/finding/{page.xss_id}")
    browser.refresh()
    wait.until(ec.text_to_be_present_in_element((By.ID, "d-title"), "Script Host Running Markup"))
    _fits(browser)
    _full_shot(browser, shots, "08-finding-narrow.png")
    browser.set_window_size(1400, 1000)


def test_empty_states(server: Any, browser: Any) -> None:
    """A tenant with nothing yet: every view says so instead of showing a blank."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    wait = WebDriverWait(browser, 20)
    shots = _shots(Path("."))
    browser.get(url + "/")
    assert "Enter an API key" in browser.find_element(By.ID, "no-key").text
    browser.find_element(By.ID, "api-key").send_keys("empty-key")
    browser.find_element(By.ID, "save-key").click()
    nothing = "No findings in this time range"
    wait.until(ec.text_to_be_present_in_element((By.ID, "o-chart"), nothing))
    assert "0\nfindings" in browser.find_element(By.ID, "o-cards").text
    assert browser.find_element(By.ID, "o-tops").text.count("none in this range") == 4
    _full_shot(browser, shots, "09-empty-overview.png")
    browser.find_element(By.ID, "nav-findings").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "findings"), "No findings match"))
    browser.find_element(By.ID, "nav-sensors").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "sensors"), "No sensors reported yet"))
    assert "No open sensor-health findings" in browser.find_element(By.ID, "s-health").text
    _full_shot(browser, shots, "10-empty-sensors.png")
    assert _csp_problems(browser) == []
