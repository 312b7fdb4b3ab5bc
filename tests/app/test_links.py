"""The view in the URL (app/links.py) and the links that open a filtered view: query parameters
are honoured, a run outside the runs root is refused, the item explorer filters and sorts by
misalignment, the next/previous buttons have keyboard shortcuts, the head grid draws every head,
and a static chart's marks link to their items as the live chart's clicks do."""

from __future__ import annotations

import base64
import html
import json
import re
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from app import links, results, state
from tests.app.conftest import APP
from tests.app.test_pages import texts


def at_url(monkeypatch, root, page: str | None, params: dict[str, str]) -> AppTest:
    """The app as a browser opening ``/page?params`` on a fresh session."""
    monkeypatch.setenv("CDVIZ_RUNS_ROOT", str(root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    if page:
        at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_links(at) -> dict[str, tuple[str, dict[str, str]]]:
    """{label: (page, query parameters)} of the page's st.page_link elements (the default page's
    url path is empty: named "overview" here)."""
    return {e.proto.label: (e.proto.page or "overview", dict(parse_qsl(e.proto.query_string)))
            for e in at.get("page_link")}


def charts(at) -> list[tuple[dict, list[pd.DataFrame]]]:
    """(Vega-Lite spec, its datasets) of every chart drawn, in page order."""
    out = []

    def walk(node):
        for child in (node.children.values() if isinstance(getattr(node, "children", None), dict) else []):
            if getattr(child, "type", "") == "vega_lite_chart":
                out.append((json.loads(child.proto.spec),
                            [convert_arrow_bytes_to_pandas_df(d.data.data) for d in child.proto.datasets]))
            walk(child)

    walk(at._tree)
    return out


def test_item_explorer_opens_the_view_in_the_url(runs_root, monkeypatch):
    at = at_url(monkeypatch, runs_root, "item_explorer",
                {"run": "after", "group": "teacher right, student wrong", "layer": "0", "head": "2",
                 "item": "syn-00007"})
    frame = state.items(state.open_named(runs_root, "after")).set_index("uid")
    tr_sw = [u for u in frame.index if frame.loc[u, "group"] == "TR/SW" and frame.loc[u, "status"] == "ok"]
    assert at.selectbox(key="run").value == "after"
    assert at.selectbox(key="group").value == "TR/SW" and at.selectbox(key="item").options == tr_sw
    assert (at.selectbox(key="layer").value, at.selectbox(key="head").value) == (0, 2)
    # syn-00007 is not teacher-right / student-wrong in this run unless it is: the URL's item wins when it matches.
    assert at.selectbox(key="item").value == ("syn-00007" if "syn-00007" in tr_sw else tr_sw[0])


def test_a_matching_item_from_the_url_is_opened(runs_root, monkeypatch):
    at = at_url(monkeypatch, runs_root, "item_explorer", {"item": "syn-00042", "head": links.AVG_MAP})
    assert at.selectbox(key="item").value == "syn-00042" and at.selectbox(key="head").value is None
    assert "item 43 of 60" in texts(at)


@pytest.mark.parametrize("outside", ["..", "../reported", "/etc", "demo/../../x", "nonexistent"])
def test_a_run_outside_the_runs_root_is_refused(runs_root, monkeypatch, outside):
    at = at_url(monkeypatch, runs_root, None, {"run": outside})
    assert at.selectbox(key="run").value == "demo"  # the default run, the URL's is not opened
    assert f"run '{outside}' from the link is not a run under the runs root" in texts(at).replace("\\", "")
    assert at.text[0].value.startswith(f"run demo  ({runs_root.resolve() / 'demo'}")


def test_bad_values_in_the_url_leave_the_view_as_it_was(runs_root, monkeypatch):
    at = at_url(monkeypatch, runs_root, "item_explorer", {"layer": "99", "head": "x", "item": "../../etc/passwd",
                                                           "group": "<b>"})
    assert at.selectbox(key="item").value == "syn-00000" and at.selectbox(key="group").value == "all"
    assert at.selectbox(key="layer").value == 2 and at.selectbox(key="head").value is None


def test_overview_links_open_the_item_explorer_filtered_and_sorted(reported_root, monkeypatch):
    summary = json.loads((reported_root / "demo" / "report" / "summary.json").read_text())
    overview = at_url(monkeypatch, reported_root, None, {})
    found = page_links(overview)
    measure = summary["recommended_targets"]["measure"]
    layer = summary["recommended_targets"]["student_layers"][0]
    page, params = found[f"Student layer {layer}: most misaligned items"]
    assert page == "item_explorer" and params == {"run": "demo", "sort": links.MOST_MISALIGNED, "measure": measure,
                                                   "layer": str(layer), "head": links.AVG_MAP}
    at = at_url(monkeypatch, reported_root, "item_explorer", params)
    uids = at.selectbox(key="item").options
    per_item = results.item_misalignment(state.open_named(reported_root, "demo"), measure, layer)
    expected = per_item.sort_values("misalignment", ascending=False, kind="stable")["uid"].astype(str).tolist()
    assert uids == expected and at.selectbox(key="item").value == expected[0]
    top = per_item.set_index("uid")["misalignment"].max()
    assert f"{measure} misalignment at student layer {layer}: {top:.4f}" in texts(at)

    page, params = found["Teacher right, student wrong: the items"]
    at = at_url(monkeypatch, reported_root, "item_explorer", params)
    frame = state.items(state.open_named(reported_root, "demo")).set_index("uid")
    uids = at.selectbox(key="item").options
    assert uids and {frame.loc[u, "group"] for u in uids} == {"TR/SW"}
    # No layer in this link: the explorer's default, the middle one of the student's 4 layers.
    shown = results.item_misalignment(state.open_named(reported_root, "demo"), measure, 2).set_index("uid")
    assert list(shown.loc[uids, "misalignment"]) == sorted(shown.loc[uids, "misalignment"], reverse=True)


def test_sorting_without_the_analysis_says_how_and_keeps_the_order(runs_root, monkeypatch):
    at = at_url(monkeypatch, runs_root, "item_explorer", {"sort": links.MOST_MISALIGNED})
    assert at.selectbox(key="sort").value == links.MOST_MISALIGNED
    assert "Sorting by misalignment needs the misalignment analysis" in texts(at)
    assert at.selectbox(key="item").options[:3] == ["syn-00000", "syn-00001", "syn-00002"]


def test_layers_and_error_link_link_to_their_items(reported_root, monkeypatch):
    at = at_url(monkeypatch, reported_root, "layers", {})
    worst = at.metric[1].value  # "layer L, head H"
    layer, head = (int(x) for x in worst.replace("layer ", "").replace("head ", "").split(", "))
    label = next(k for k in page_links(at) if k.startswith("Items at student layer"))
    assert page_links(at)[label][1] == links.item_link("demo", layer=layer, head=head,
                                                       measure=at.selectbox(key="lh_measure").value)
    at = at_url(monkeypatch, reported_root, "error_link", {})
    layer, measure = at.selectbox(key="el_layer").value, at.selectbox(key="el_measure").value
    label = next(k for k in page_links(at) if k.startswith("Teacher right, student wrong"))
    assert page_links(at)[label][1] == links.item_link("demo", layer=layer, group="TR/SW", measure=measure)


def test_every_page_links_to_the_others(reported_root, monkeypatch):
    for page in ("layers", "error_link"):
        at = at_url(monkeypatch, reported_root, page, {})
        assert {"overview", "item_explorer"} <= {p for p, _ in page_links(at).values()}
    at = at_url(monkeypatch, reported_root, None, {})
    assert {"layers", "error_link", "item_explorer", "before_after"} <= {p for p, _ in page_links(at).values()}


def test_next_and_previous_have_keyboard_shortcuts(runs_root, monkeypatch):
    at = at_url(monkeypatch, runs_root, "item_explorer", {})
    assert (at.button(key="ie_next").proto.shortcut, at.button(key="ie_prev").proto.shortcut) == ("j", "k")


def test_head_grid_draws_every_head_of_the_layer_when_opened(runs_root, monkeypatch):
    # Live charts (the sidebar switch, charts=true in the URL), whose data the test can read back.
    at = at_url(monkeypatch, runs_root, "item_explorer", {"item": "syn-00003", "layer": "1", "charts": "true"})
    assert len(charts(at)) == 3  # teacher, student, difference; the grid only once opened
    at.session_state["ie_heads_box"] = True
    at.run()
    grid, (rows,) = charts(at)[3]
    run = state.open_named(runs_root, "demo")
    maps = run.store.get("syn-00003", "student", "t2i", 1)[:, -1]  # [H, Q, N] -> [H, N], the answer row
    values = rows.sort_values(["head", "row", "col"])["value"].to_numpy().reshape(maps.shape)
    expected = maps / maps.sum(1, keepdims=True) * maps.shape[1]  # each head relative to uniform
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert grid["facet"]["field"] == "head" and sorted(rows["head"].unique()) == list(range(len(maps)))


def chart_images(at) -> list[str]:
    """The SVG of every static chart drawn as an image (app/charts.py: charts without links), in page order."""
    found = []

    def walk(node):
        for child in (node.children.values() if isinstance(getattr(node, "children", None), dict) else []):
            if getattr(child, "type", "") == "image":
                found.extend(base64.b64decode(img.url.removeprefix("data:image/svg+xml;base64,")).decode()
                             for img in child.proto.imgs if img.url.startswith("data:image/svg+xml;base64,"))
            walk(child)

    walk(at._tree)
    return found


def static_charts(at) -> dict[str, str]:
    """{chart key: its SVG} of the static charts drawn as markup (app/charts.py: charts whose marks link)."""
    found = {}
    for e in at.markdown:
        m = re.match(r'<div class="cdviz-chart" data-key="([^"]+)">(.*)</div>$', str(e.value), re.S)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def hrefs(svg: str) -> list[dict[str, str]]:
    """Every link's query parameters in an SVG, in document order; each must open the item explorer."""
    out = []
    for href in re.findall(r'href="([^"]+)"', svg):
        path, _, query = html.unescape(href).partition("?")
        assert path == "item_explorer", href
        out.append(dict(parse_qsl(query)))
    return out


def test_charts_are_static_svg_by_default_and_live_on_request(runs_root, monkeypatch):
    at = at_url(monkeypatch, runs_root, "item_explorer", {"item": "syn-00003", "layer": "1"})
    drawn = chart_images(at)  # teacher, student, difference: pictures, no links on them
    assert len(drawn) == 3 and not charts(at) and not static_charts(at)
    assert all(svg.startswith("<svg") and "data:image/jpeg;base64," in svg for svg in drawn)
    assert [re.search(r"<text[^>]*>(teacher|student)[^<]*</text>", svg).group(1) for svg in drawn] == \
        ["teacher", "student", "student"]  # titles: "teacher, layer ..", "student, layer ..", "student - teacher"
    at = at_url(monkeypatch, runs_root, "item_explorer", {"item": "syn-00003", "layer": "1", "charts": "true"})
    assert len(charts(at)) == 3 and not chart_images(at)


def test_static_heatmap_cells_link_to_their_items(reported_root, monkeypatch):
    at = at_url(monkeypatch, reported_root, "layers", {})
    at.selectbox(key="lh_group").set_value("TR/SW").run()  # a filter the links must carry
    measure = at.selectbox(key="lh_measure").value
    frame = results.layer_head_frame(results.analysis(state.open_named(reported_root, "demo"), "misalignment"), measure,
                                     "all", "all", "TR/SW")
    expected = [links.item_link("demo", layer=int(r.student_layer), head=None if r.head == -1 else int(r.head),
                                measure=measure, group="TR/SW") for r in frame.itertuples()]
    found = hrefs(static_charts(at)["lh_heatmap"])
    assert len(frame) == 4 * 5 and sorted(map(str, found)) == sorted(map(str, expected))  # 4 layers x (4 heads + avg)


def test_static_auroc_points_and_outliers_link_to_their_items(reported_root, monkeypatch):
    at = at_url(monkeypatch, reported_root, "error_link", {})
    layer, measure = at.selectbox(key="el_layer").value, at.selectbox(key="el_measure").value
    drawn = static_charts(at)
    auroc = [h for h in hrefs(drawn["el_auroc"])]
    # The line mark links to its first layer's items too; every point links to its own layer's.
    assert {h["layer"] for h in auroc} == {"0", "1", "2", "3"}
    assert all(h == links.item_link("demo", layer=int(h["layer"]), group="TR/SW", measure=measure) for h in auroc)
    per_item = results.item_misalignment(state.open_named(reported_root, "demo"), measure, layer)
    values = per_item.set_index("uid")["misalignment"]
    outliers = hrefs(drawn["el_distribution"])
    for h in outliers:
        assert h == links.item_link("demo", layer=int(layer), measure=measure, item=h["item"])
        group = per_item.set_index("uid").loc[h["item"], "group"]
        mine = per_item.loc[per_item["group"] == group, "misalignment"]
        q1, q3 = mine.quantile(0.25), mine.quantile(0.75)
        assert not q1 - 1.5 * (q3 - q1) <= values[h["item"]] <= q3 + 1.5 * (q3 - q1)  # only outliers link
