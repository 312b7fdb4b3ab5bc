"""``cdviz bench app``: how long the dashboard takes to show each of its six pages on a large run.

Builds a synthetic run of ``n_items`` items (cdviz.synthetic, images included) in a temporary
runs root with its report (``cdviz report``: the saved analysis results the pages read), a second
run of the same items as the "after" of the Before/after page with ``cdviz compare``'s saved
comparison, and drives the real app (app/main.py) with Streamlit's AppTest:

    server start  a new interpreter renders the page: module imports (torch among them) and
                  every disk read included; what the first visitor after `streamlit run` waits
                  (browser-side drawing not included)
    cold          in this process, Streamlit's caches cleared just before the page runs: the
                  index, tables, maps and images are read from disk again
    warm          a new session on the same server caches: a second user or a revisit

for every page (the Item explorer on its first item, Before/after on the "after" run). The
attribution page shows how to compute attribution (it loads models, so the report has none here).
Building the runs, the report and the comparison is not counted. Target: <= 3 s each.

    python -c "from cdviz.bench.app import bench_app; bench_app(1000)"
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

APP = Path(__file__).resolve().parents[2] / "app" / "main.py"
PAGES = {"overview": None, "layers": "app_pages/layers.py", "item_explorer": "app_pages/item_explorer.py",
         "error_link": "app_pages/error_link.py", "before_after": "app_pages/before_after.py",
         "attribution": "app_pages/attribution.py"}


def _clear_caches() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def _render(page: str | None, clear: bool) -> float:
    """Seconds for one script run that shows ``page`` (None: the default page) in a new session."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    if page is None:
        if clear:
            _clear_caches()
        t0 = time.perf_counter()
        at.run()
    else:
        at.run()  # registers the pages (st.navigation) so the session can switch to one
        at.switch_page(page)
        if clear:
            _clear_caches()
        t0 = time.perf_counter()
        at.run()
    seconds = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page or 'overview'} raised: {at.exception[0].value}")
    return seconds


_FRESH = """
import sys, time
t0 = time.perf_counter()
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=300)
if sys.argv[2] != "-":
    at.switch_page(sys.argv[2])  # lands on the page directly, as opening its URL does
at.run()
assert not at.exception, at.exception[0].value
print(time.perf_counter() - t0)
"""


def _fresh_process(page: str | None) -> float:
    """Seconds from a new interpreter to ``page`` drawn: the first view after a server start, imports
    included."""
    out = subprocess.run([sys.executable, "-c", _FRESH, str(APP), page or "-"], capture_output=True, text=True,
                         cwd=APP.parents[1], env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"fresh-process render failed: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def bench_app(n_items: int = 1000, repeats: int = 3, seed: int = 0, console: Console | None = None,
              pages: tuple[str, ...] | None = None, n_boot: int = 1000) -> dict:
    """Time every page (or ``pages``) on a synthetic run of ``n_items`` items with its saved report.

    Returns:
        {"n_items", "build_s", "target_s": 3.0, "pages": {page: {"server_start_s", "cold_s": median,
        "warm_s": median, "cold_all": [...], "warm_all": [...]}}}
    """
    from streamlit.logger import set_log_level

    from cdviz.synthetic import make_synthetic_run
    from cdviz.workflow import build_report, compare_runs

    unknown = [p for p in pages or () if p not in PAGES]
    if unknown:
        raise ValueError(f"unknown page {unknown[0]!r}; pages: {', '.join(PAGES)}")

    set_log_level("error")  # AppTest outside a server warns on every cache; not news here
    console = console or Console()
    result: dict = {"n_items": n_items, "target_s": 3.0, "pages": {}}
    with tempfile.TemporaryDirectory(prefix="cdviz-bench-app-") as tmp:
        t0 = time.perf_counter()
        demo = make_synthetic_run(Path(tmp) / "demo", n_items=n_items, seed=seed)
        after = make_synthetic_run(Path(tmp) / "demo-after", n_items=n_items, seed=seed, planted=(), link=0.0)
        build_report(demo, n_boot=n_boot, n_perm=n_boot)
        compare_runs(demo, after, Path(after) / "compare", n_boot=n_boot)
        result["build_s"] = time.perf_counter() - t0
        old = os.environ.get("CDVIZ_RUNS_ROOT")
        os.environ["CDVIZ_RUNS_ROOT"] = tmp
        try:
            for name, page in PAGES.items():
                if pages and name not in pages:
                    continue
                start = _fresh_process(page)
                cold = [_render(page, clear=True) for _ in range(repeats)]
                warm = [_render(page, clear=False) for _ in range(repeats)]
                result["pages"][name] = {"server_start_s": start, "cold_s": statistics.median(cold),
                                         "warm_s": statistics.median(warm), "cold_all": cold, "warm_all": warm}
        finally:
            if old is None:
                os.environ.pop("CDVIZ_RUNS_ROOT", None)
            else:
                os.environ["CDVIZ_RUNS_ROOT"] = old
            _clear_caches()
    table = Table("page", "server start (s)", "cold (s)", "warm (s)", "target (s)",
                  title=f"dashboard time to first render, {n_items:,}-item synthetic run (median of {repeats})")
    for name, r in result["pages"].items():
        cells = [(r[k], "green" if r[k] <= result["target_s"] else "red") for k in ("server_start_s", "cold_s")]
        table.add_row(name, *(f"[{c}]{v:.3f}[/{c}]" for v, c in cells), f"{r['warm_s']:.3f}",
                      f"{result['target_s']:.1f}")
    console.print(table)
    console.print(f"building the two {n_items:,}-item runs, the report and the comparison took "
                  f"{result['build_s']:.1f} s (not counted)")
    return result
