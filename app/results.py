"""Analysis results for the dashboard, through the analysis pipeline (analyses/pipeline.py).

    analysis / cached_analysis  an analyses/ result: this server's copy, else the run's saved results
                                (RUN/report/results, written by `cdviz report`), else computed once
                                per server with `pipeline.run` (never one that loads models, such as
                                attribution), or an Unavailable saying why
    compute_with_progress       several of them with a progress bar over the items they stream
    comparison                  the before/after comparison of two runs: `cdviz compare`'s saved one
                                (with intervals) when current, else computed here without intervals
    report_summary              the report's summary.json when current
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

from app.state import OUTCOMES, Run, accuracy_table, chance_level, items, md_escape
from cdviz.store import StoreError

@dataclass(frozen=True)
class Unavailable:
    """Why a result cannot be shown, in words for the page."""

    reason: str


REPORT_HINT = "`cdviz report {path}` computes every analysis once and saves it with the run"
ATTRIBUTION_HINT = ("build the report with attribution: `cdviz report {path} --attribution-items 8` (or "
                    "`cdviz.workflow.build_report(RUN, attribution_items=8)`); it loads both models from the "
                    "paths in the run's manifest")
COMPARE_HINT = "`cdviz compare {before} {after}`"


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


def report_summary(run: Run) -> dict | None:
    """The batch report's summary.json for this run, if there is a current one."""
    return _summary(*run.key)


def _load_saved(run: Run, name: str) -> Any | None:
    from analyses import pipeline

    return pipeline.saved_run_result(run.path, name)


def cached_analysis(run: Run, name: str) -> Any | None:
    """The result if this server already has it or the run's saved results hold it; never computes."""
    slot = _slot(*run.key, name)
    if slot["result"] is None:
        slot["result"] = _load_saved(run, name)
    return slot["result"]


def analysis(run: Run, name: str, progress: Callable[[int], None] | None = None) -> Any | Unavailable:
    """The ``name`` result for ``run``: cached, saved with the run, else computed now by the pipeline.

    Dependencies are fetched the same way first and handed to the pipeline, so each is computed
    once; a second session asking meanwhile waits for the first one's result.
    """
    try:
        from analyses import pipeline
    except ImportError as e:
        return Unavailable(f"the analyses package cannot be imported ({md_escape(e)})")
    slot = _slot(*run.key, name)
    with slot["lock"]:
        if cached_analysis(run, name) is not None:
            return slot["result"]
        if name not in pipeline.REGISTRY:
            return Unavailable(f"no analysis is registered as {name!r}")
        spec = pipeline.REGISTRY[name]
        if spec.loads_models:
            return Unavailable(f"no {name} result for this run. " + ATTRIBUTION_HINT.format(path=run.path))
        deps = {dep: analysis(run, dep, progress) for dep in spec.depends}
        for dep in deps.values():
            if isinstance(dep, Unavailable):
                return dep
        try:
            slot["result"] = pipeline.run(run.store, [name], results=deps, progress=progress)[name]
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
    from analyses import pipeline

    wanted = [n for n in names if n in pipeline.REGISTRY]
    have = [n for n in pipeline.plan(wanted) if cached_analysis(run, n) is not None]  # only what these need
    todo = [n for n in pipeline.plan(wanted, have=have) if not pipeline.REGISTRY[n].loads_models]
    total = sum(pipeline.REGISTRY[n].progress_steps(n_usable(run), {}) for n in todo)
    bar = st.progress(0.0, text=f"computing {', '.join(todo)} on {n_usable(run):,} items "
                                f"(once per server; {REPORT_HINT.format(path=run.path)})") if todo else None
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        bar.progress(min(1.0, done / max(1, total)))

    out = {name: analysis(run, name, advance if bar else None) for name in names}
    if bar:
        bar.empty()
    return out


@st.cache_resource(max_entries=8, show_spinner=False)
def _pair_slot(before: tuple, after: tuple) -> dict:
    return {"lock": threading.Lock(), "result": None}


def _saved_compare(before: Run, after: Run) -> Any | None:
    """AFTER/compare/results written by `cdviz compare BEFORE AFTER` for exactly these runs, when
    newer than both runs' data."""
    from analyses import pipeline

    result = pipeline.saved_result(after.path / "compare" / "results", "compare",
                                   newer_than=max(before.stamp, after.stamp))
    if result is None or result.before != str(before.path.resolve()) or result.after != str(after.path.resolve()):
        return None
    return result


def comparison(before: Run, after: Run) -> tuple[Any, bool]:
    """(the before/after comparison, whether it has intervals): `cdviz compare`'s saved result when
    current, else computed here from both runs' misalignment without bootstrap intervals (a
    comparison with 1,000 paired replicates takes tens of seconds, which a page must not)."""
    saved = _saved_compare(before, after)
    if saved is not None:
        return saved, True
    slot = _pair_slot(before.key, after.key)
    with slot["lock"]:
        if slot["result"] is None:
            from analyses import pipeline

            mis = {k: compute_with_progress(r, ("misalignment",))["misalignment"] for k, r in
                   (("before", before), ("after", after))}
            for k, m in mis.items():
                if isinstance(m, Unavailable):
                    return Unavailable(f"misalignment of the {k} run is not available: {m.reason}"), False
            try:
                slot["result"] = pipeline.run_pair(before.store, after.store, "compare",
                                                   before_results={"misalignment": mis["before"]},
                                                   after_results={"misalignment": mis["after"]},
                                                   options={"n_boot": 0})["compare"]
            except (StoreError, ValueError, KeyError) as e:
                return Unavailable(f"the two runs cannot be compared: {md_escape(e)}"), False
        return slot["result"], False


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
    """Measures whose per-item misalignment is at hand (this server's result or the saved one)."""
    mis = cached_analysis(run, "misalignment")
    return [] if mis is None else list(mis.measures)


def item_misalignment(run: Run, measure: str, layer: int) -> pd.DataFrame | None:
    """uid, group, misalignment (head mean) per item at one student layer, from this server's or
    the saved misalignment result; None when neither exists."""
    mis = cached_analysis(run, "misalignment")
    if mis is None or measure not in mis.measures:
        return None
    return pd.DataFrame({"uid": mis.items["uid"], "group": mis.items["group"],
                         "misalignment": mis.item_layer(measure)[layer].to_numpy()})
