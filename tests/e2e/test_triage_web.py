"""The triage web page end to end in headless Chromium, against the real API (uvicorn,
configured as ``findings serve`` runs it) and Elasticsearch: load the list, filter, open a
finding, acknowledge it, and check the status stored in Elasticsearch; the page and the
local Swagger UI render under the strict Content-Security-Policy with no violation.

``SIGSTREAM_SCREENSHOT_DIR``: keep the screenshots there (default: pytest's tmp_path)."""

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
from tests.integration import triage_seed
from triage.auth import KeyStore

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
#: The stack the ``services`` fixture runs (SIGSTREAM_ES_HOSTS; 127.0.0.1:9200 by default).
HOSTS = Settings().es_hosts
KEYS = KeyStore({"web-key": {"tenant": "acme", "role": "analyst", "user": "webby"}})


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
    settings = Settings(findings_index=seeded.index, events_index=seeded.events_index)
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
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "1 findings"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#findings tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == [seeded.acme_id]  # not globex's

    # A filter that excludes it, then one that keeps it.
    host = browser.find_element(By.ID, "f-host")
    host.send_keys("WS02")
    browser.find_element(By.ID, "apply").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "list-status"), "0 findings"))
    assert browser.find_elements(By.CSS_SELECTOR, "#findings tbody tr") == []
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
    folder = Path(os.environ.get("SIGSTREAM_SCREENSHOT_DIR") or tmp_path)
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
