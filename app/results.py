"""Analysis results for the dashboard, and the one place that calls the analyses (so wiring changes
stay here).

    analysis / cached_analysis  an analyses/ result: this server's copy, else rebuilt from the run's
                                report (RUN/report), else computed once per server (never
                                attribution, which loads models), or an Unavailable saying why
    compute_with_progress       several of them with a progress bar over the items they stream
    report_summary / compare_summary   the report's / `cdviz compare`'s summary.json when current
    findings_summary            what the findings sentences are made from (report or this server)
    layer_head_frame, item_misalignment, misalignment_measures   views of those results for the pages

Cache keys hold the run's path and stamp (app/state.py), so a re-recorded run is read again.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st

from app.state import OUTCOMES, Run, _inside, accuracy_table, chance_level, items, md_escape
from cdviz.metrics import HIGHER_IS_ALIGNED
from cdviz.store import StoreError

@dataclass(frozen=True)
class Unavailable:
    """Why a result cannot be shown, in words for the page."""

    reason: str


# The app computes these on request; attribution loads both models, so it only comes from a report.
COMPUTABLE = ("misalignment", "layer_correspondence", "error_link", "targets")
PASSES = {"misalignment": 1, "layer_correspondence": 2}  # times each streams over the items
DEPENDS = {"error_link": ("misalignment",), "targets": ("misalignment", "error_link")}
REPORT_HINT = "`cdviz report {path}` computes every analysis once and saves it with the run"
ATTRIBUTION_HINT = ("build the report with attribution: `cdviz report {path} --attribution-items 8` (or "
                    "`cdviz.report.build_report(RUN, attribution_items=8)`); it loads both models from the "
                    "paths in the run's manifest")


@st.cache_resource(max_entries=16, show_spinner=False)
def _slot(path: str, stamp: float, name: str) -> dict:
    """Where one run's ``name`` result lives on this server, shared by every session; the 16 most
    recently used results are kept (a misalignment result of a large run is tens of MB)."""
    return {"lock": threading.Lock(), "result": None}


@st.cache_data(max_entries=8, show_spinner=False)
def _summary(path: str, stamp: float) -> dict | None:
    """RUN/report/summary.json when it is newer than the run's index (else it describes old data)."""
    file, index = Path(path) / "report" / "summary.json", Path(path) / "index.parquet"
    if not file.is_file() or (index.is_file() and file.stat().st_mtime < index.stat().st_mtime):
        return None
    try:
        summary = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("format") == "cdviz-report" and summary.get("version") == 1 else None


def compare_summary(before: Run, after: Run) -> dict | None:
    """AFTER/compare/summary.json written by `cdviz compare BEFORE AFTER` for exactly these runs, if
    it is newer than both runs' data; it holds paired bootstrap intervals of the differences."""
    file = after.path / "compare" / "summary.json"
    if not file.is_file() or file.stat().st_mtime < max(before.stamp, after.stamp):
        return None
    try:
        summary = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = summary.get("before") == str(before.path) and summary.get("after") == str(after.path)
    return summary if same and summary.get("format") == "cdviz-compare" and summary.get("version") == 1 else None


def report_summary(run: Run) -> dict | None:
    """The batch report's summary.json for this run, if there is a current one."""
    return _summary(*run.key)


@st.cache_data(max_entries=64, show_spinner=False)
def _report_table(path: str, stamp: float, name: str) -> pd.DataFrame | None:
    summary = _summary(path, stamp)
    rel = (summary or {}).get("files", {}).get("tables", {}).get(name)
    if rel is None:
        return None
    file = (Path(path) / "report" / rel).resolve()
    return pd.read_parquet(file) if _inside(file, Path(path)) and file.is_file() else None


def _from_report(run: Run, name: str) -> Any | None:
    """Rebuild a result from the report's tables where they hold all of it (misalignment per head
    and per item is not saved, so it is always computed)."""
    summary = report_summary(run)
    if summary is None or name == "misalignment":
        return None
    table = lambda t: _report_table(*run.key, t)  # noqa: E731
    try:
        if name == "targets":
            from analyses.targets import TargetsResult
            return TargetsResult.from_dict(summary["recommended_targets"])
        if name == "error_link":
            from analyses.error_link import ErrorLinkResult
            parts = [table(t) for t in ("outcome_groups", "error_link_auroc", "error_link_logistic",
                                        "misalignment_by_outcome")]
            if any(p is None for p in parts):
                return None
            return ErrorLinkResult(*parts, summary["error_link"]["correction"])
        if name == "layer_correspondence":
            from analyses.layer_correspondence import LayerCorrespondenceResult
            sim, heads, lm = table("layer_similarity"), table("head_matches"), summary["layer_map"]
            if sim is None or heads is None:
                return None
            grid = sim.pivot(index="teacher_layer", columns="student_layer", values="value")  # [Lt, Ls]
            return LayerCorrespondenceResult(lm["field"], lm["metric"], HIGHER_IS_ALIGNED[lm["metric"]],
                                             [int(t) for t in grid.index], [int(s) for s in grid.columns],
                                             grid.to_numpy(np.float64),
                                             {int(k): int(v) for k, v in lm["monotone"].items()},
                                             heads, int(summary["n_analysed"]))
        if name == "attribution":
            from analyses.attribution import AttributionResult
            frame, maps = table("attribution"), table("attribution_maps")
            # The report keeps no per-item targets table; the pages use frame and maps only.
            items_cols = ["uid", "model", "target_token", "logit", "delta", "grid_rows", "grid_cols"]
            if frame is None or maps is None:
                return None
            return AttributionResult(frame, maps, pd.DataFrame(columns=items_cols))
    except (ImportError, KeyError, ValueError):
        return None
    return None


def cached_analysis(run: Run, name: str) -> Any | None:
    """The result if this server already has it or the run's report holds it; never computes."""
    slot = _slot(*run.key, name)
    if slot["result"] is None:
        slot["result"] = _from_report(run, name)
    return slot["result"]


def analysis(run: Run, name: str, progress: Callable[[int], None] | None = None) -> Any | Unavailable:
    """The ``name`` result for ``run``: cached, from the report, else computed now (COMPUTABLE only).

    Dependencies (DEPENDS) are computed first and passed in, so each is computed once; a second
    session asking meanwhile waits for the first one's result instead of computing it again.
    """
    slot = _slot(*run.key, name)
    with slot["lock"]:
        if cached_analysis(run, name) is not None:
            return slot["result"]
        if name not in COMPUTABLE:
            return Unavailable(f"no {name} result for this run. " + REPORT_HINT.format(path=run.path))
        try:
            from analyses import get_analysis
        except ImportError as e:
            return Unavailable(f"the analyses package cannot be imported ({md_escape(e)})")
        extra = {dep: analysis(run, dep, progress) for dep in DEPENDS.get(name, ())}  # keyword = analysis name
        for dep in extra.values():
            if isinstance(dep, Unavailable):
                return dep
        try:
            slot["result"] = get_analysis(name)(run.store, progress=progress, **extra)
        except (StoreError, ValueError, KeyError) as e:
            return Unavailable(f"{name} failed on this run: {md_escape(e)}")
        return slot["result"]


def n_usable(run: Run) -> int:
    """Items the analyses use: recorded OK, with an outcome for both models."""
    frame = items(run)
    return int((frame["status"].astype(str).eq("ok") & frame["group"].ne("unknown")).sum())


def require_usable(run: Run) -> None:
    """Stop the page with a message when no item can be analysed."""
    if n_usable(run) == 0:
        st.info(f"Run {md_escape(run.name)} has no item recorded with an outcome for both models, so there is "
                "nothing to analyse; the Overview lists why items were skipped.")
        st.stop()


def compute_with_progress(run: Run, names: tuple[str, ...]) -> dict[str, Any]:
    """Fetch or compute several analyses, with a progress bar over the items they stream."""
    missing = [n for n in names if cached_analysis(run, n) is None]
    needed = set(missing) | {d for n in missing for d in DEPENDS.get(n, ())}
    total = n_usable(run) * sum(PASSES.get(n, 0) for n in needed if cached_analysis(run, n) is None)
    bar = st.progress(0.0, text=f"computing {', '.join(sorted(needed))} on {n_usable(run):,} items "
                                f"(once per server; {REPORT_HINT.format(path=run.path)})") if missing else None
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        bar.progress(min(1.0, done / max(1, total)))

    out = {name: analysis(run, name, advance if bar else None) for name in names}
    if bar:
        bar.empty()
    return out


def findings_summary(run: Run) -> tuple[dict, str]:
    """(summary, where it came from) for `cdviz.report.findings.report_findings`: the report's
    summary.json, else the parts this server has: accuracy, outcome groups and order dependence
    always, misalignment / error link / targets once computed (missing parts are left out)."""
    summary = report_summary(run)
    if summary is not None:
        return summary, "the run's report"
    from cdviz.report.summary import order_dependence, records

    frame = items(run)
    usable = frame[frame["status"].astype(str).eq("ok") & frame["group"].ne("unknown")]
    overall = accuracy_table(run, "category").iloc[-1]
    protocol = run.store.manifest.get("options", {}).get("protocol", "letters")
    out: dict[str, Any] = {
        "protocol": protocol, "models": run.store.manifest.get("models", {}),
        "n_items": int(len(frame)), "n_analysed": int(len(usable)), "n_skipped": int(len(frame) - len(usable)),
        "accuracy": {"overall": {k: (v.item() if hasattr(v, "item") else v) for k, v in overall.drop(
            labels=["category"]).items()}, "chance": chance_level(usable)} if len(usable) else {},
        "outcome_groups": {g: int((usable["group"] == g).sum()) for g in OUTCOMES},
        "order_dependence": records(order_dependence(usable)) if protocol == "letters" else [],
    }
    mis, link, targets = (cached_analysis(run, n) for n in ("misalignment", "error_link", "targets"))
    if mis is not None:
        out["misalignment"] = {"measures": list(mis.measures), "by_layer": records(mis.by_layer())}
    if link is not None:
        out["error_link"] = {"auroc": records(link.overall()), "n_tests": link.n_tests, "family": link.family}
    if targets is not None:
        out["recommended_targets"] = targets.to_dict()
    return out, "this server's computation"


def layer_head_frame(mis: Any, measure: str, category: str = "all", skill: str = "all",
                     group: str = "all") -> pd.DataFrame:
    """Mean misalignment per (student layer, head) over the items matching the filters.

    Reads the misalignment result's [I, L, H+1, M] array, so filtering costs no store access.
    Columns: measure, student_layer, head (-1 = head mean), mean, n; empty when no item matches.
    """
    keep = np.ones(len(mis.items), dtype=bool)
    for col, want in (("category", category), ("skill", skill), ("group", group)):
        if want != "all":
            keep &= mis.items[col].astype(str).to_numpy() == want
    if not keep.any():
        return pd.DataFrame(columns=["measure", "student_layer", "head", "mean", "n"])
    values = mis.values[keep][..., mis.measure_index(measure)]  # [I', L, H+1]
    with np.errstate(all="ignore"):
        mean = np.nanmean(values, axis=0)  # [L, H+1]
    layers, heads = np.meshgrid(mis.student_layers, mis.head_labels(), indexing="ij")
    return pd.DataFrame({"measure": measure, "student_layer": layers.ravel(), "head": heads.ravel(),
                         "mean": mean.ravel().astype(np.float64), "n": int(keep.sum())})


def misalignment_measures(run: Run) -> list[str]:
    """Measures whose per-item misalignment is at hand (this server's result, else the report's)."""
    mis = _slot(*run.key, "misalignment")["result"]
    if mis is not None:
        return list(mis.measures)
    table = _report_table(*run.key, "misalignment_items")
    return [] if table is None else list(dict.fromkeys(table["measure"]))


def item_misalignment(run: Run, measure: str, layer: int) -> pd.DataFrame | None:
    """uid, group, misalignment (head mean) per item at one student layer, from this server's
    misalignment result or the report's per-item table; None when neither exists."""
    mis = _slot(*run.key, "misalignment")["result"]
    if mis is not None and measure in mis.measures:
        return pd.DataFrame({"uid": mis.items["uid"], "group": mis.items["group"],
                             "misalignment": mis.item_layer(measure)[layer].to_numpy()})
    table = _report_table(*run.key, "misalignment_items")
    if table is None:
        return None
    rows = table[(table["measure"] == measure) & (table["student_layer"] == layer)]
    return rows[["uid", "group", "misalignment"]]
