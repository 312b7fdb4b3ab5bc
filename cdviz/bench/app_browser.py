"""Dashboard pages in a real browser: seconds from navigation to Streamlit idle, warm server, fresh browser.

One `streamlit run app/main.py` server on a runs root, warmed (every page opened once), then for each
page and repeat a new headless Chromium context (no cached scripts, as a colleague opening a link)
navigates to the page's URL and waits until the page is idle: the title drawn, the script run
over (the app's data-test-script-state), no running status widget, no skeleton, every Vega-Lite
chart outside a closed expander drawn, and no network request for 500 ms (Playwright's
"networkidle"; the reported ``idle_s`` leaves that wait out). Median of ``repeats``; screenshots of
the last repeat in ``shots``.

    python -m cdviz.bench.app_browser --runs-root runs --run demo [--repeats 3] [--shots shots]
    python -m cdviz.bench.app_browser --runs-root runs --run demo --baseline ../cdviz-before
    python -m cdviz.bench.app_browser --runs-root runs --run demo --interactive

``--baseline`` serves a second checkout's app (e.g. `git worktree add ../cdviz-before HEAD~3`)
at the same time and alternates the two visit by visit, so a busy machine's load falls on both
alike: before/after numbers from one run. ``--interactive`` times the same pages with live Vega-Lite
charts (the sidebar's "Interactive charts", ``?charts=true``) alongside the default static ones,
alternating the same way. ``charts`` counts the charts drawn (live or static SVG).

Needs Playwright and Chromium (/usr/bin/chromium). Timings depend on the machine's load, which is
printed with them; they are a measurement, never a test assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PAGES = {"overview": "", "layers": "layers", "item_explorer": "item_explorer", "error_link": "error_link",
         "before_after": "before_after", "attribution": "attribution"}  # page -> URL path
IDLE_JS = """() => !!document.querySelector('[data-testid="stMain"] h1')
    && document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState === 'notRunning'
    && !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-testid="stSkeleton"]')
    && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
        .filter(e => !e.closest('details:not([open])')).every(e => e.querySelector('canvas, svg'))"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(runs_root: Path, run: str | None = None, port: int | None = None,
                 repo: Path = REPO) -> tuple[subprocess.Popen, str]:
    """`streamlit run app/main.py` of checkout ``repo`` on ``runs_root``; returns the process and its
    URL once healthy."""
    port = port or _free_port()
    args = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
            "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    if run:
        args += ["--", "--runs-root", str(runs_root), "--run", run]
    proc = subprocess.Popen(args, cwd=repo, env={**os.environ, "CDVIZ_RUNS_ROOT": str(runs_root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise TimeoutError(f"streamlit did not answer at {url}")


def _open(browser, url: str, shot: Path | None = None) -> dict:
    """One fresh context: seconds to idle (and to network idle), the page's payload, a screenshot."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = context.new_page()
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function(IDLE_JS, timeout=60_000, polling=25)
        idle = time.perf_counter() - t0
        page.wait_for_load_state("networkidle")
        net = time.perf_counter() - t0
        errors = page.locator('[data-testid="stException"]').count()
        charts = page.locator('[data-testid="stVegaLiteChart"], .cdviz-chart svg, [data-testid="stImage"] img').count()
        if shot is not None:
            height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": 1600, "height": max(1000, int(height) + 40)})
            page.wait_for_timeout(500)
            page.screenshot(path=str(shot))
        return {"idle_s": idle, "networkidle_s": net, "errors": errors, "charts": charts}
    finally:
        context.close()


def bench_browser(runs_root: Path, run: str | None = None, repeats: int = 3, pages: list[str] | None = None,
                  shots: Path | None = None, baseline: Path | None = None, interactive: bool = False) -> dict:
    """Median seconds per page (see the module docstring); prints a table and the load average.

    Returns:
        {"load_before", "load_after", "pages": {page: {"idle_s", "networkidle_s", "all_networkidle",
        "errors", "charts"}}, and with ``baseline`` "baseline": the same for the baseline checkout,
        with ``interactive`` "interactive": the same with live charts}
    """
    from playwright.sync_api import sync_playwright

    pages = pages or list(PAGES)
    checkouts = {"pages": REPO} | ({"baseline": baseline} if baseline else {})
    servers = {}
    result: dict = {"load_before": os.getloadavg()}
    try:
        for key, repo in checkouts.items():
            servers[key] = start_server(runs_root, run, repo=repo)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for _, url in servers.values():  # warm the servers: imports, caches
                    for name in pages:
                        _open(browser, f"{url}/{PAGES[name]}")
                # what is timed: (server, query) per key, visits alternating between keys
                targets = {key: (url, "") for key, (_, url) in servers.items()}
                if interactive:
                    targets["interactive"] = (servers["pages"][1], "?charts=true")
                rows: dict = {key: {name: [] for name in pages} for key in targets}
                for name in pages:
                    for i in range(repeats):
                        order = list(targets) if i % 2 == 0 else list(targets)[::-1]
                        for key in order:
                            shot = (shots / (f"{name}.png" if key == "pages" else f"{name}.{key}.png")
                                    if shots is not None and i == repeats - 1 else None)
                            url, query = targets[key]
                            rows[key][name].append(_open(browser, f"{url}/{PAGES[name]}{query}", shot))
            finally:
                browser.close()
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result["load_after"] = os.getloadavg()
    for key in rows:
        result[key] = {name: {"idle_s": statistics.median(r["idle_s"] for r in found),
                              "networkidle_s": statistics.median(r["networkidle_s"] for r in found),
                              "all_networkidle": [round(r["networkidle_s"], 2) for r in found],
                              "errors": max(r["errors"] for r in found), "charts": found[-1]["charts"]}
                       for name, found in rows[key].items()}
    print(f"load average before {result['load_before'][0]:.2f}, after {result['load_after'][0]:.2f} "
          f"({os.cpu_count()} CPUs); median of {repeats}, warm server, fresh browser context")
    for key in rows:
        if len(rows) > 1:
            print(f"{key}: {checkouts.get(key, 'live charts (?charts=true)')}")
        ratio = key != "pages"
        print(f"{'page':<14}{'idle (s)':>10}{'+network idle (s)':>20}  all (network idle)  charts errors"
              + ("  idle / pages" if ratio else ""))
        for name, r in result[key].items():
            print(f"{name:<14}{r['idle_s']:>10.2f}{r['networkidle_s']:>20.2f}  {str(r['all_networkidle']):<19} "
                  f"{r['charts']:>6} {r['errors']:>6}"
                  + (f"  {r['idle_s'] / result['pages'][name]['idle_s']:>13.2f}" if ratio else ""))
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-root", type=Path, default=REPO / "runs")
    p.add_argument("--run", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pages", nargs="*", choices=list(PAGES))
    p.add_argument("--shots", type=Path, default=None, help="folder for one screenshot per page")
    p.add_argument("--json", type=Path, default=None, help="write the result here too")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another checkout whose app is timed alongside, visits alternating")
    p.add_argument("--interactive", action="store_true",
                   help="also time every page with live charts (?charts=true), visits alternating")
    a = p.parse_args(argv)
    if a.shots:
        a.shots.mkdir(parents=True, exist_ok=True)
    result = bench_browser(a.runs_root.resolve(), a.run, a.repeats, a.pages, a.shots,
                           a.baseline.resolve() if a.baseline else None, a.interactive)
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
