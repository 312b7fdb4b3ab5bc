"""The view in the URL, so it can be shared and reloaded, and links that open a filtered view.

The widgets that make a view are bound to query parameters (Streamlit's ``bind="query-params"``;
the widget key is the parameter's name), e.g.

    /item_explorer?run=demo&group=teacher+right%2C+student+wrong&sort=most+misaligned+first&layer=2&head=avg+map&item=syn-00003

A value that is not one of the widget's options is dropped by Streamlit, so a ``run`` that is not
a run discovered under the runs root is never opened (the runs root's own discovery is the only
source of options); ``refused_run`` says so on the page.

    refused_run(names)   a message when the URL named a run that is not under the runs root
    item_link(...)       query parameters for st.page_link / st.switch_page to the item explorer
    item_href(...)       the same as a relative URL, for a static chart's links
"""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlencode

import streamlit as st

ITEM_EXPLORER = "app_pages/item_explorer.py"
# Item order in the explorer; the label is what the URL holds.
RECORDED, MOST_MISALIGNED = "as recorded", "most misaligned first"
AVG_MAP = "avg map"  # head label of the head-averaged map


def refused_run(names: Sequence[str]) -> str | None:
    """A message when the URL's ``run`` is not one of ``names`` (the runs under the root); the
    value is only compared, never opened as a path."""
    want = st.query_params.get("run")
    if want is None or want in names:
        return None
    return f"run {want!r} from the link is not a run under the runs root, so it is not opened"


def head_label(head: int | None) -> str:
    return AVG_MAP if head is None else str(int(head))


def item_link(run: str, layer: int | None = None, group: str | None = None, measure: str | None = None,
              head: int | None = None, item: str | None = None, sort: str = MOST_MISALIGNED,
              category: str | None = None) -> dict[str, str]:
    """Query parameters opening the item explorer on ``run``: items of outcome ``group`` with student
    ``layer`` (and ``head``) shown, sorted by ``measure``'s misalignment at that layer, largest first."""
    from app.state import GROUP_LABELS

    params = {"run": run, "category": category, "group": None if group is None else GROUP_LABELS[group], "sort": sort, "measure": measure, "layer": layer,
              "head": None if head is None and layer is None else head_label(head), "item": item}
    return {k: str(v) for k, v in params.items() if v is not None}


def item_href(run: str, **view) -> str:
    """``item_link`` as a relative URL (a static chart's mark links to it): every page sits at the
    app's root, so it resolves to the item explorer from any of them."""
    return "item_explorer?" + urlencode(item_link(run, **view))
