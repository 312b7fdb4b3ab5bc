"""cdviz dashboard entry point: the run picker and the page router.

    streamlit run app/main.py                                # runs under $CDVIZ_RUNS_ROOT or runs/
    streamlit run app/main.py -- --runs-root DIR --run NAME  # another folder, a run opened first

Each page is a thin view in app/app_pages/; data comes from app/state.py. The view is kept in the
URL (app/links.py): http://localhost:8501/item_explorer?run=demo&layer=2&head=avg+map&item=ID
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts app/ on sys.path, not the repository; putting the repository first makes
# the pages import this checkout's app/, cdviz/ and analyses/ even if another copy is installed.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import charts, links, state  # noqa: E402

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("app_pages/layers.py", title="Layers and heads", icon=":material/grid_on:"),
    st.Page("app_pages/item_explorer.py", title="Item explorer", icon=":material/image_search:"),
    st.Page("app_pages/error_link.py", title="Error link", icon=":material/troubleshoot:"),
    st.Page("app_pages/before_after.py", title="Before/after", icon=":material/compare:"),
    st.Page("app_pages/attribution.py", title="Attribution", icon=":material/insights:"),
]

st.set_page_config(page_title="cdviz", page_icon=":material/visibility:", layout="wide")
cfg = state.settings()
with st.sidebar:
    names = state.list_runs(cfg.runs_root)
    refused = links.refused_run(names)
    if refused:
        st.warning(state.md_escape(refused))
    if names:
        st.selectbox("Run", names, index=state.default_run(names, cfg.run), key="run", bind="query-params",
                     help=f"Runs found under {cfg.runs_root.resolve()}")
    st.caption(f"runs root: `{cfg.runs_root}`")
    charts.switch()
st.navigation(PAGES).run()
