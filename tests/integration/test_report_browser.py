"""report.html renders in a real browser (headless Chromium) with every image loaded.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them) and the
``selenium`` client (dev extra). Without a browser the test is skipped, unless
``POISONLAB_REQUIRE_BROWSER=1`` (set by ``make test``) turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from poisonlab.cli import main

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not p]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        why = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("POISONLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"POISONLAB_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    # A fresh profile and no background traffic: the machine's network is closed.
    profile = tempfile.mkdtemp(prefix="poisonlab-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,2000",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_html_report_renders_with_every_image_loaded(
    browser: object, tiny_suite: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert main(["run", str(tiny_suite), "--out", str(out), "--quiet"]) == 0
    report = out / "report.html"
    # The report is self-contained: nothing beside it is needed (figures/ is for report.md).
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(report, alone / "report.html")
    n_figures = len(list((out / "figures").glob("*.png")))
    assert n_figures >= 3

    driver = browser
    driver.get((alone / "report.html").as_uri())  # type: ignore[attr-defined]
    assert driver.execute_script("return document.readyState") == "complete"  # type: ignore[attr-defined]
    assert driver.title == "poisonlab report: tiny"  # type: ignore[attr-defined]
    images = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,"
        " w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width}))")
    assert len(images) == n_figures
    for img in images:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100, img
        assert img["shown"] > 100, img  # laid out at a readable size, not collapsed
    headings = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    for expected in ("Threat model", "What the numbers say", "Figures", "Tables"):
        assert expected in headings
    cells = driver.execute_script(  # type: ignore[attr-defined]
        "return document.querySelectorAll('table td').length")
    assert cells > 20
    errors = [e for e in driver.get_log("browser")  # type: ignore[attr-defined]
              if e.get("level") == "SEVERE"]
    assert not errors, errors


def test_the_verdict_table_is_at_the_top_of_the_quickstart_report(
        browser: object, quickstart_run: Path) -> None:
    driver = browser
    driver.get((quickstart_run / "report.html").as_uri())  # type: ignore[attr-defined]
    found = driver.execute_script(  # type: ignore[attr-defined]
        "const h2 = document.querySelector('h2'); const t = document.querySelector('table');"
        "const threat = Array.from(document.querySelectorAll('h2'))"
        "  .find(h => h.textContent === 'Threat model');"
        "return {h2: h2.textContent, id: h2.id, cls: t.className,"
        " head: Array.from(t.querySelectorAll('th')).map(x => x.textContent),"
        " top: t.getBoundingClientRect().top, threatTop: threat.getBoundingClientRect().top,"
        " sentence: document.querySelector('p.verdict-sentence').textContent,"
        " rows: t.querySelectorAll('tbody tr').length}")
    assert found["h2"] == "Verdicts by threat model" and found["id"] == "verdicts"
    assert found["cls"] == "verdict"  # the first table of the report is a verdict
    assert found["head"][:2] == ["rank", "defense"]
    assert found["rows"] == 4  # the four defenses
    assert found["top"] < found["threatTop"]  # above everything else
    assert found["top"] < 1000  # on the first screen (the window is 2000 px high)
    assert found["sentence"].startswith("Under label flips random 0.2")


def test_a_broken_image_is_detected(browser: object, tiny_suite: Path, tmp_path: Path) -> None:
    """The check above can fail: a corrupted embedded PNG shows as not loaded."""
    out = tmp_path / "run"
    assert main(["run", str(tiny_suite), "--out", str(out), "--quiet"]) == 0
    text = (out / "report.html").read_text()
    marker = "data:image/png;base64,"
    at = text.index(marker) + len(marker)
    broken = tmp_path / "broken.html"
    broken.write_text(text[:at] + "AAAA" + text[at + 4:])
    driver = browser
    driver.get(broken.as_uri())  # type: ignore[attr-defined]
    widths = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.images).map(i => i.naturalWidth)")
    assert sorted(w > 0 for w in widths) == [False] + [True] * (len(widths) - 1)
