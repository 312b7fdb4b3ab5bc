"""How a page draws a chart: an SVG drawn on the server (the default) or a live Vega-Lite chart.

A fresh browser that draws one Vega-Lite chart first fetches and compiles Streamlit's Vega bundle:
about 1.1 s of a page's 3.1-3.6 s to idle on the demo run (python -m cdviz.bench.app_browser,
warm server, fresh browser). The same spec drawn to SVG on the server (vl-convert, ~0.1 s per chart,
cached per spec) reaches the browser as an image, or, for a chart whose marks link, as SVG markup
(which costs the page Streamlit's HTML-in-markdown parser, ~0.4 MB of script), so a page with
charts is idle about as fast as one without. What a static chart cannot do: hover tooltips, zoom
and click selections. Clicks that open items stay, as links on the marks (``href``: the figure's
``link`` column, filled by the page only for static charts, see ``static``). The sidebar's
"Interactive charts" switch (in the URL as ``charts=true``) draws the live charts instead.

    static()                  whether charts are drawn as SVG on this view
    show(chart, where, key)   draw one chart; returns the click event of a live chart, else None
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

KEY = "charts"  # the switch's widget key and URL parameter
WIDTH = 1000  # px a static chart without its own width is drawn at; CSS shrinks it to its column
HALF = 480  # ... in one of two columns
VEGA_BASE = "https://vega.github.io/vega-datasets/"  # vl-convert's base URL for relative links


def switch() -> None:
    """The sidebar switch between static and live charts (bound to the URL's ``charts``)."""
    st.toggle("Interactive charts", key=KEY, bind="query-params",
              help="Hover values, zoom and click selections in the charts. Off, charts are drawn on the "
                   "server: a fresh browser shows a page sooner (no chart library to fetch), and heatmap "
                   "cells, AUROC points and outliers still open their items when clicked.")


def static() -> bool:
    return not st.session_state.get(KEY, False)


@st.cache_data(max_entries=256, show_spinner=False)
def svg(spec_json: str) -> str:
    """The SVG of a Vega-Lite spec (JSON text), drawn by vl-convert; cached per spec."""
    import vl_convert

    drawn = vl_convert.vegalite_to_svg(spec_json)
    # vl-convert resolves a relative link against its own base URL; the marks' links are relative
    # to the app (links.item_href), so they get their relative form back.
    drawn = drawn.replace(f'href="{VEGA_BASE}', 'href="')
    # Drawn at its own size, shrunk (never grown) to the column it is in.
    return drawn.replace("<svg ", '<svg style="max-width:100%;height:auto" ', 1)


def _spec(chart: Any, width: int | None) -> dict:
    spec = chart.to_dict() if hasattr(chart, "to_dict") else dict(chart)
    # A static chart has no container to stretch to: a stretched one is drawn ``width`` px wide and
    # scaled down to its column (``svg``). Facets and concatenations size their own panels.
    if width and not ({"facet", "hconcat", "vconcat", "concat"} & set(spec)):
        spec["width"] = width
    return spec


def show(chart: Any, where: Any = None, *, key: str, stretch: bool = True, width: int = WIDTH,
         on_select: str | None = None, selection_mode: Any = None, linked: bool = False) -> Any:
    """Draw ``chart`` (an altair chart or a Vega-Lite dict) in ``where`` (st or a column).

    ``stretch``: as wide as the column (static: drawn ``width`` px wide, shrunk to fit); otherwise
    at the chart's own width. ``linked``: its marks carry links (an ``href`` encoding), so a static
    chart is put in the page as SVG markup; any other static chart is an image. Live charts pass
    ``on_select`` / ``selection_mode`` to Streamlit and return its event; static charts return None
    (their clicks are the marks' links).
    """
    where = where or st
    if not static():
        kwargs = {"on_select": on_select, "selection_mode": selection_mode} if on_select else {}
        draw = where.vega_lite_chart if isinstance(chart, dict) else where.altair_chart
        return draw(chart, width="stretch" if stretch else "content", key=key, **kwargs)
    drawn = svg(json.dumps(_spec(chart, width if stretch else None), sort_keys=True))
    if not linked:  # a picture: no HTML parser for the browser to fetch (~0.4 MB of script)
        where.image(drawn, width="stretch" if stretch else "content")
        return None
    # Marks that link (``linked``) need the SVG in the page. vl-convert writes every dataset string
    # as escaped XML text or attribute, so the markup is ours.
    where.markdown(f'<div class="cdviz-chart" data-key="{key}">{drawn}</div>', unsafe_allow_html=True)
    return None
