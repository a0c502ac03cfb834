"""The report in a real browser: it renders offline, logs no error, fits a phone, shows the index's numbers.

Headless Chromium driven by Selenium through /usr/bin/chromedriver (Debian:
``apt-get install -y chromium chromium-driver``). The browser's performance log
lists every network request the page makes; the only ones allowed are the
page's own file:// URL and its inline data: images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_report import SEEDS, VARIANTS, build_tiny_study, by_hand

from overfitlab.studies.index import RunIndex
from overfitlab.studies.report import write_report

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium not installed: pip install 'selenium>=4'"
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium absent: apt-get install -y chromium chromium-driver",
)

PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return build_tiny_study(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def report(runs_dir) -> Path:
    return write_report(runs_dir, "tiny")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(browser, report: Path) -> None:
    browser.get_log("performance")  # drop what earlier pages logged
    browser.get_log("browser")
    browser.get(report.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"


def requested_urls(browser) -> list[str]:
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_renders_with_no_console_error_and_no_request(browser, report):
    open_page(browser, report)
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    urls = requested_urls(browser)
    assert report.as_uri() in urls
    assert all(u == report.as_uri() or u.startswith("data:image/png;base64,") for u in urls), urls
    images = browser.execute_script("return [...document.images].map(i => [i.complete, i.naturalWidth])")
    assert len(images) >= 2 and all(done and width > 100 for done, width in images)
    assert (
        "Which remedy makes the returned model generalise better"
        in browser.find_element("tag name", "body").text
    )


def test_fits_a_phone_width(browser, report):
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        open_page(browser, report)
        widths = browser.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth, document.body.scrollWidth,"
            " Math.max(...[...document.images].map(i => i.getBoundingClientRect().right))]"
        )
        inner, page_width, body_width, image_right = widths
        assert inner == PHONE["width"]
        assert page_width <= inner and body_width <= inner, widths
        assert image_right <= inner
        # Wide tables scroll inside their own box instead of widening the page.
        overflowing = browser.execute_script(
            "return [...document.querySelectorAll('.scroll')].filter(d => d.scrollWidth > d.clientWidth)"
            ".map(d => getComputedStyle(d).overflowX)"
        )
        assert overflowing and set(overflowing) == {"auto"}
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_numbers_on_screen_equal_the_index(browser, report, runs_dir):
    open_page(browser, report)
    cells = browser.execute_script(
        "return [...document.querySelectorAll('[data-run-metric], [data-run-id][data-metric]')]"
        ".map(e => Object.assign({text: e.textContent}, e.dataset))"
    )
    with RunIndex(runs_dir / "index.sqlite") as index:
        rows = [r for r in index.runs("tiny") if r["status"] == "complete"]
    assert len(rows) == len(VARIANTS) * len(SEEDS)

    per_run = {(c["runId"], c["metric"]): c for c in cells if "runId" in c}
    for row in rows:
        for metric in ("peak_valid_acc", "lowest_valid_loss", "final_gap_acc", "final_gap_loss", "params"):
            cell = per_run[(row["run_id"], metric)]
            assert float(cell["value"]) == row[metric]
            digits = 0 if metric == "params" else 3
            assert cell["text"].replace(",", "") == f"{row[metric]:.{digits}f}"

    summaries = [c for c in cells if "runMetric" in c]
    for variant, _ in VARIANTS:
        for metric in ("peak_valid_acc", "final_gap_acc"):
            values = [r[metric] for r in rows if r["variant"] == variant]
            # By hand, on the metric's scale (logits for an accuracy): test_report.by_hand.
            mean, s, low, high = by_hand(values, metric)
            [cell] = [c for c in summaries if c["runMetric"] == metric and c["variant"] == variant]
            assert float(cell["value"]) == pytest.approx(mean, rel=1e-12)
            assert cell["text"].startswith(f"{mean:.3f} ± {s:.3f}")
            if s > 0:
                assert float(cell["low"]) == pytest.approx(low, rel=1e-9)
                assert f"[{low:.3f}, {high:.3f}]" in cell["text"]


def test_the_diagnosis_page_in_chromium_at_desktop_and_phone_width(browser, tmp_path):
    """diagnosis.html: no console error, no request, no overflow at 390 px, the verdict shown."""
    from test_diagnose import synthetic_diagnosis

    from overfitlab.diagnosis.report import render

    diagnosis = synthetic_diagnosis()
    page = tmp_path / "diagnosis.html"
    page.write_text(render(diagnosis, {"train_acc": [0.5, 0.9], "valid_acc": [0.5, 0.8]}))
    open_page(browser, page)
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    urls = requested_urls(browser)
    assert all(u == page.as_uri() or u.startswith("data:image/png;base64,") for u in urls), urls
    shown = browser.find_element("css selector", "[data-verdict]").text
    assert shown == diagnosis.verdict
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        open_page(browser, page)
        inner, width = browser.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth]"
        )
        assert inner == PHONE["width"] and width <= inner
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
