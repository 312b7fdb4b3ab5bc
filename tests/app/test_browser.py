"""The dashboard in a real browser: `streamlit run app/main.py` on a synthetic run, every page opened
in headless Chromium (Playwright), no error element, one screenshot per page in
test-artifacts/screenshots/<page>.png; the batch report and the comparison too (report.png,
compare.png). Each screenshot is also copied to docs/img/dashboard/, where the documentation's
dashboard tour shows it, so the tour is retaken whenever this test runs. The findings box must be
on the first screen of the Overview, the report and the comparison, and name the recommended
layers.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`); skipped without it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import json

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "screenshots"
DOCS_SHOTS = REPO / "docs" / "img" / "dashboard"  # docs/dashboard.md shows these
PAGES = {"overview": "", "layers": "layers", "item_explorer": "item_explorer", "error_link": "error_link",
         "before_after": "before_after", "attribution": "attribution"}  # page -> url path
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium "
                                                              "(apt-get install -y chromium)")


@pytest.fixture(scope="module")
def server(browser_root):
    """`streamlit run app/main.py` on the browser fixture runs root; stopped after the module."""
    from cdviz.bench.app_browser import start_server

    proc, url = start_server(browser_root)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _settle(page, extra_ms: int = 1500) -> None:
    """Wait until the script run is over (as the app reports it: the title alone may be drawn
    before the run's status shows) and the charts are drawn (Vega-Lite outside closed expanders);
    ``extra_ms`` more for the table canvases before a screenshot."""
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=30_000)
    page.wait_for_function("""() => !document.querySelector('[data-testid="stStatusWidget"]')
        && document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState === 'notRunning'
        && !document.querySelector('[data-testid="stSkeleton"]')
        && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
            .filter(e => !e.closest('details:not([open])')).every(e => e.querySelector('canvas, svg'))""",
                           timeout=60_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(extra_ms)


def _findings_on_first_screen(box, root: Path, viewport_height: int = 1000) -> None:
    """The findings box starts and ends within the first screen and names every recommended layer."""
    summary = json.loads((root / "demo" / "report" / "summary.json").read_text())
    top = box.bounding_box()
    assert top is not None and top["y"] + top["height"] < viewport_height, top
    text = box.inner_text()
    for s in summary["recommended_targets"]["student_layers"]:
        assert f"student layer {s} toward" in text.replace("\\", ""), text


def _publish(*names: str) -> None:
    """Copy the named screenshots into the documentation (docs/img/dashboard/)."""
    DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(SHOTS / f"{name}.png", DOCS_SHOTS / f"{name}.png")


def test_report_and_comparison_in_chromium(browser_root, tmp_path):
    from playwright.sync_api import sync_playwright

    from cdviz.workflow import compare_runs

    SHOTS.mkdir(parents=True, exist_ok=True)
    compare = compare_runs(browser_root / "demo", browser_root / "after", tmp_path / "compare", n_boot=50)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto((browser_root / "demo" / "report" / "index.html").as_uri())
            page.wait_for_selector(".js-plotly-plot")
            _findings_on_first_screen(page.locator("section.findings"), browser_root)
            page.screenshot(path=str(SHOTS / "report.png"))
            page.goto((compare / "compare.html").as_uri())
            page.wait_for_selector(".js-plotly-plot")
            box = page.locator("section.findings")
            assert box.bounding_box()["y"] < 1000 and "misalignment fell" in box.inner_text()
            page.screenshot(path=str(SHOTS / "compare.png"))
        finally:
            browser.close()
    _publish("report", "compare")


def test_every_page_in_chromium(server, browser_root):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    timings, warm = {}, {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            for name, path in PAGES.items():
                t0 = time.perf_counter()
                page.goto(f"{server}/{path}")
                _settle(page)
                timings[name] = time.perf_counter() - t0
                errors = page.locator('[data-testid="stException"]')
                assert errors.count() == 0, f"{name}: {errors.first.inner_text()}"
                # Streamlit scrolls inside its own container, so the viewport is grown to the page.
                height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
                page.set_viewport_size({"width": 1600, "height": max(1000, int(height) + 40)})
                page.wait_for_timeout(500)
                page.screenshot(path=str(SHOTS / f"{name}.png"))
                page.set_viewport_size({"width": 1600, "height": 1000})
                if name == "overview":
                    _findings_on_first_screen(page.locator(".st-key-ov_findings"), browser_root)
                if name == "layers":  # a static heatmap cell is a link to its items (in a new tab)
                    cell = page.locator('[data-key="lh_heatmap"] a').first
                    with page.context.expect_page() as opened:
                        cell.click()
                    items = opened.value
                    _settle(items)
                    # the first cell: layer 0, head 0 (not the explorer's defaults, so they stay in the URL)
                    assert "/item_explorer?" in items.url and "layer=0" in items.url and "head=0" in items.url
                    assert items.locator('[data-testid="stImage"] img').count() >= 3
                    assert items.get_by_text("item 1 of").count() == 1
                    items.close()
                if name == "item_explorer":
                    charts = page.locator('[data-testid="stImage"] img')  # static charts, drawn on the server
                    assert charts.count() >= 3  # teacher, student, difference
                    shown = page.get_by_text("item 1 of 40").count()
                    page.get_by_role("button", name="Next").click()
                    page.get_by_text("item 2 of 40").wait_for(timeout=30_000)
                    assert shown == 1 and page.locator('[data-testid="stException"]').count() == 0
                    page.locator("body").press("j")  # the Next button's keyboard shortcut
                    page.get_by_text("item 3 of 40").wait_for(timeout=30_000)
                    page.wait_for_function("() => location.search.includes('item=syn-')", timeout=30_000)
                    shared = page.url  # the view is in the URL: a fresh browser opening it sees the same item
                    fresh = browser.new_page(viewport={"width": 1600, "height": 1000})
                    fresh.goto(shared)
                    _settle(fresh)
                    assert fresh.get_by_text("item 3 of 40").count() == 1, shared
                    fresh.close()
            # Warm server, fresh browser (no cached scripts): what a colleague opening a link waits.
            for name, path in PAGES.items():
                context = browser.new_context(viewport={"width": 1600, "height": 1000})
                t0 = time.perf_counter()
                fresh = context.new_page()
                fresh.goto(f"{server}/{path}")
                _settle(fresh, extra_ms=0)
                warm[name] = time.perf_counter() - t0
                context.close()
        finally:
            browser.close()
    print("seconds to render per page in Chromium, first visit:", {k: round(v, 2) for k, v in timings.items()})
    print("seconds to idle per page, warm server and fresh browser:", {k: round(v, 2) for k, v in warm.items()})
    assert all((SHOTS / f"{name}.png").stat().st_size > 10_000 for name in PAGES)
    _publish(*PAGES)
