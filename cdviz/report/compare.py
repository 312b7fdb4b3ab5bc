"""`compare_runs`: did the gap close? Before/after deltas between two runs (e.g. the KD student,
then the same probes recorded after VAT fine-tuning).

    OUT/compare.html, OUT/summary.json, OUT/tables/{misalignment,accuracy,error_link}_delta.{parquet,csv}

All deltas are after - before, with percentile bootstrap 95% intervals (seeded). Where both runs
hold the same items (same uids), differences are paired by uid (``paired: true``); otherwise the
two runs are resampled independently. Per student layer (layers recorded in both runs):

    misalignment  head-mean misalignment per measure (negative delta: student closer to teacher)
    error_link    AUROC of misalignment for student errors (teacher-right items; independent
                  stratified bootstrap replicates of each run's AUROC)
and per category (and "all"), for teacher and student: accuracy averaged over query orders
(Winoground items: group score).

summary.json (format "cdviz-compare", version 1; NaN as null):
    format, version, cdviz_version, before, after (absolute paths), paired, n_shared, n_before, n_after
    misalignment: [{measure, student_layer, before, after, delta, ci_low, ci_high, n, paired}]
    accuracy:     [{model, category, before, after, delta, ci_low, ci_high, n, paired}]
    error_link:   [{measure, student_layer, before, after, delta, ci_low, ci_high}]
    finetuned:    null | {student_layers, teacher_groups, stages}: the layers the after run's student was
                  aligned on, from its checkpoint's stage markers (`finetune_record`)
    files:        {html: "compare.html", tables: {name: "tables/name.parquet"}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from analyses.common import usable_items
from analyses.error_link import error_link
from analyses.misalignment import DEFAULT_T2I_METRICS, misalignment
from analyses.stats import LEVEL, auroc_boot, bootstrap_ci
from cdviz import __version__
from cdviz.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from cdviz.report import figures as F
from cdviz.report.findings import change_word, compare_findings
from cdviz.report.glossary import glossary
from cdviz.report.html import Page
from cdviz.report.summary import item_accuracy, jsonable, records
from cdviz.store import StoreError, open_run

FORMAT = "cdviz-compare"
VERSION = 1
MIN_PAIRED = 2  # fewer shared items than this: compare the runs as independent samples
STAGE_MARKER = "cdviz_stage.json"  # what cdviz finetune writes beside each stage's weights (train/recipe.MARKER)
MAX_STAGES = 16  # stages followed back along a checkpoint's sources
LINEAGE = "cdviz_lineage.json"  # every stage's marker, newest first, for a checkpoint copied away from its build


def finetune_record(model_dir: str | Path) -> dict | None:
    """The layers a checkpoint was fine-tuned on with attention alignment, from its stage markers.

    Follows each stage's ``source`` back (a path as written, or relative to an ancestor of
    ``model_dir``) and keeps the stages that trained VAT or t2i alignment with a layer map. A
    checkpoint copied out of its build folder (the bundled ones) carries the chain in LINEAGE.
    Returns {student_layers, teacher_groups, stages} (the latest such stage's map, every such
    stage named) or None when no stage records one.
    """
    found = [(stage.get("stage", ""), stage["layer_map"]) for stage in stage_chain(model_dir)
             if stage.get("layer_map") and ((stage.get("weights") or {}).get("vat", 0) > 0
                                            or (stage.get("weights") or {}).get("t2i", 0) > 0)]
    if not found:
        return None
    latest = found[0][1]
    return {"student_layers": [int(s) for s in latest.get("student_layers", [])],
            "teacher_groups": [[int(t) for t in g] for g in latest.get("teacher_groups", [])],
            "stages": [name for name, _ in reversed(found)]}


def stage_chain(model_dir: str | Path) -> list[dict]:
    """The stage markers of ``model_dir`` and of the stages it was trained from, newest first."""
    lineage = Path(model_dir) / LINEAGE
    if lineage.is_file():
        try:
            chain = json.loads(lineage.read_text())
            return [s for s in chain if isinstance(s, dict)][:MAX_STAGES] if isinstance(chain, list) else []
        except (OSError, ValueError):
            return []
    here, chain, seen = Path(model_dir), [], set()
    while here is not None and len(seen) < MAX_STAGES and (here / STAGE_MARKER).is_file():
        seen.add(here.resolve())
        try:
            stage = json.loads((here / STAGE_MARKER).read_text())
        except (OSError, ValueError):
            break
        chain.append(stage)
        source = str(stage.get("source") or "")
        candidates = [Path(source)] + [a / source for a in Path(model_dir).resolve().parents] if source else []
        here = next((c for c in candidates if (c / STAGE_MARKER).is_file() and c.resolve() not in seen), None)
    return chain


def diff_ci(before: np.ndarray, after: np.ndarray, paired: bool, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean of after - before and its bootstrap interval.

    Args:
        before, after: [n] values; with ``paired`` they are aligned item by item.
    """
    if paired:
        return bootstrap_ci(after - before, n_boot, seed)
    b, a = before[np.isfinite(before)], after[np.isfinite(after)]
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boot = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if n_boot > 0 else (np.nan, np.nan)
    return float(a.mean() - b.mean()), float(lo), float(hi)


def compare_runs(before: str | Path, after: str | Path, out: str | Path, *, measures: Sequence[str] | None = None,
                 t2i_metrics=DEFAULT_T2I_METRICS, n_boot: int = 1000, seed: int = 0,
                 progress: Callable[[int], None] | None = None) -> Path:
    """Compare two runs and write OUT/compare.html and OUT/summary.json; returns OUT.

    Args:
        before, after: run stores (the same probe set gives paired differences).
        out: output directory.
        measures: misalignment measures to compare (default all measures both runs have).
        n_boot, seed: bootstrap replicates and seed.
        progress: called with items done (one misalignment pass per run).
    """
    out = Path(out)
    stores = {"before": open_run(before), "after": open_run(after)}
    protocols = {k: s.manifest.get("options", {}).get("protocol", "letters") for k, s in stores.items()}
    if protocols["before"] != protocols["after"]:
        raise StoreError(f"{before} was scored with the {protocols['before']} protocol and {after} with "
                         f"{protocols['after']}; accuracies differ in meaning, so record both with the same --protocol")
    mis = {k: misalignment(s, t2i_metrics=t2i_metrics, progress=progress) for k, s in stores.items()}
    use = {k: usable_items(s).set_index("uid") for k, s in stores.items()}
    shared = sorted(set(use["before"].index) & set(use["after"].index))
    paired = len(shared) >= MIN_PAIRED
    measures = [m for m in (measures or mis["before"].measures) if m in mis["after"].measures]
    layers = [s for s in mis["before"].student_layers if s in mis["after"].student_layers]

    mis_rows = []
    for m in measures:
        tb, ta = mis["before"].item_layer(m), mis["after"].item_layer(m)  # [I, L] each
        for s in layers:
            b, a = (tb.loc[shared, s].to_numpy(), ta.loc[shared, s].to_numpy()) if paired else \
                (tb[s].to_numpy(), ta[s].to_numpy())
            d, lo, hi = diff_ci(b, a, paired, n_boot, seed)
            mis_rows.append({"measure": m, "student_layer": int(s), "before": float(np.nanmean(tb[s])),
                             "after": float(np.nanmean(ta[s])), "delta": d, "ci_low": lo, "ci_high": hi,
                             "n": len(shared) if paired else len(tb) + len(ta), "paired": paired})

    acc_rows = []
    for model in ("teacher", "student"):
        col = f"{model}_item_accuracy"
        ub, ua = (use[k].assign(**{col: item_accuracy(use[k], model)}) for k in ("before", "after"))
        cats = ["all", *sorted(set(ub.category.astype(str)) | set(ua.category.astype(str)))]
        for cat in cats:
            sb = ub if cat == "all" else ub[ub.category.astype(str) == cat]
            sa = ua if cat == "all" else ua[ua.category.astype(str) == cat]
            common = sorted(set(sb.index) & set(sa.index)) if paired else []
            if paired:
                b, a = sb.loc[common, col].to_numpy(float), sa.loc[common, col].to_numpy(float)
            else:
                b, a = sb[col].to_numpy(float), sa[col].to_numpy(float)
            d, lo, hi = diff_ci(b, a, paired, n_boot, seed)
            acc_rows.append({"model": model, "category": cat, "before": float(sb[col].mean()),
                             "after": float(sa[col].mean()), "delta": d, "ci_low": lo, "ci_high": hi,
                             "n": len(common) if paired else len(sb) + len(sa), "paired": paired})

    link_rows = _auroc_deltas(stores, mis, measures, layers, n_boot, seed, shared if paired else None)
    tables = {"misalignment_delta": pd.DataFrame(mis_rows), "accuracy_delta": pd.DataFrame(acc_rows),
              "error_link_delta": pd.DataFrame(link_rows)}
    paths = {}
    for name, frame in tables.items():
        write_parquet_atomic(out / "tables" / f"{name}.parquet", frame)
        write_text_atomic(out / "tables" / f"{name}.csv", frame.to_csv(index=False))
        paths[name] = f"tables/{name}.parquet"
    summary = jsonable({
        "format": FORMAT, "version": VERSION, "cdviz_version": __version__,
        "before": str(stores["before"].root.resolve()), "after": str(stores["after"].root.resolve()),
        "protocol": protocols["before"], "paired": paired, "n_shared": len(shared), "n_before": len(use["before"]), "n_after": len(use["after"]),
        "misalignment": records(tables["misalignment_delta"]), "accuracy": records(tables["accuracy_delta"]),
        "error_link": records(tables["error_link_delta"]),
        "finetuned": finetune_record(stores["after"].model_info("student").get("path", "")),
        "files": {"html": "compare.html", "tables": paths},
    })
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "compare.html", _html(summary, tables))
    return out


def _auroc_deltas(stores, mis, measures, layers, n_boot, seed, shared: list[str] | None = None) -> list[dict]:
    """Per measure and layer: AUROC before / after and the interval of their difference.

    With ``shared`` items (paired runs on one probe set) every bootstrap replicate resamples the
    shared items once and scores both runs on that same resample (each on its own teacher-right
    items), so identical runs differ by exactly zero; otherwise the replicates are independent.
    """
    links = {k: error_link(stores[k], misalignment=mis[k], measures=measures, n_boot=0, n_perm=0, by_category=False)
             for k in stores}
    paired_idx = None
    if shared:
        paired_idx = np.random.default_rng(seed).integers(0, len(shared), (max(n_boot, 0), len(shared)))
    rows = []
    for m in measures:
        for s in layers:
            auc, boot = {}, {}
            for i, k in enumerate(("before", "after")):
                res, r = mis[k], links[k].overall(m)
                auc[k] = float(r[r.student_layer == s].auroc.iloc[0])
                if paired_idx is not None:
                    items = res.items.set_index("uid").loc[shared]
                    x = res.item_layer(m).loc[shared, s].to_numpy(float)
                    keep = items.teacher_correct.to_numpy(bool) & np.isfinite(x)
                    boot[k] = resampled_auroc(x, ~items.student_correct.to_numpy(bool), keep, paired_idx)
                else:
                    x = res.item_layer(m)[s].to_numpy()
                    tr = res.items.teacher_correct.to_numpy(bool)
                    boot[k] = auroc_boot(x[tr], ~res.items.student_correct.to_numpy(bool)[tr], n_boot, seed + i)
            diff = boot["after"] - boot["before"] if len(boot["before"]) and len(boot["after"]) else np.empty(0)
            diff = diff[np.isfinite(diff)]
            lo, hi = np.quantile(diff, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if len(diff) else (np.nan, np.nan)
            rows.append({"measure": m, "student_layer": int(s), "before": auc["before"], "after": auc["after"],
                         "delta": auc["after"] - auc["before"], "ci_low": float(lo), "ci_high": float(hi),
                         "paired": paired_idx is not None})
    return rows


def resampled_auroc(scores: np.ndarray, labels: np.ndarray, keep: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """[B] AUROC of ``scores`` for ``labels`` over the items ``keep`` selects, in each bootstrap
    resample ``idx`` [B, n] (rows of item indices); NaN where a resample lacks a class.

    Each resample is scored by the rank form with tie-averaged ranks of its item copies: an item
    drawn c times counts as c tied copies, so this equals the AUROC of the expanded sample.
    """
    n = len(scores)
    counts = np.zeros((len(idx), n))
    np.add.at(counts, (np.repeat(np.arange(len(idx)), idx.shape[1]), idx.ravel()), 1.0)
    counts[:, ~keep] = 0.0
    values, group = np.unique(np.where(keep, scores, np.inf), return_inverse=True)
    onehot = np.zeros((n, len(values)))
    onehot[np.arange(n), group] = 1.0
    in_group = counts @ onehot                                  # [B, G] copies per tied score
    before = np.cumsum(in_group, axis=1) - in_group             # copies ranked below each group
    midrank = before + (in_group + 1) / 2
    pos = labels.astype(bool)
    n_pos, n_neg = counts[:, pos].sum(1), counts[:, ~pos].sum(1)
    rank_sum = (counts[:, pos] * midrank[:, group[pos]]).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _html(summary: dict, tables: dict[str, pd.DataFrame]) -> str:
    terms = glossary()
    page = Page("cdviz comparison: before vs after", collapsible=True, glossary=[t.name for t in terms])
    page.findings(compare_findings(summary), title="Verdict")
    page.links([("glossary", "#glossary"), ("summary.json", "summary.json"), ("tables (parquet, CSV)", "tables/")])
    page.paragraph(f"before: {summary['before']}; after: {summary['after']}; "
                   f"{'paired by item' if summary['paired'] else 'independent samples'} "
                   f"({summary['n_shared']} shared items). Deltas are after - before with bootstrap 95% intervals; "
                   "'no change' where the interval includes 0. Outcomes scored with the "
                   f"{summary.get('protocol', 'letters')} protocol"
                   + (" (accuracy = pairwise)." if summary.get("protocol") == "match" else "."))
    tuned = set((summary.get("finetuned") or {}).get("student_layers") or [])
    page.heading("Misalignment per measure and student layer")
    page.paragraph("Misalignment of the head-averaged map (larger = further apart), so a negative change means the "
                   "student's attention moved closer to the teacher's.", note=True)
    page.figure(F.fig_compare_layers(tables["misalignment_delta"], what="misalignment"))
    page.table(_marked(tables["misalignment_delta"], tuned), max_rows=200,
               file=summary["files"]["tables"]["misalignment_delta"])
    page.heading("Accuracy per category")
    page.table(_marked(tables["accuracy_delta"], set()), file=summary["files"]["tables"]["accuracy_delta"])
    page.heading("Error link (AUROC) per student layer")
    if len(tables["error_link_delta"]):
        page.figure(F.fig_compare_layers(tables["error_link_delta"], what="AUROC"))
    page.table(_marked(tables["error_link_delta"], tuned), max_rows=200,
               file=summary["files"]["tables"]["error_link_delta"])
    page.heading("Glossary", anchor="glossary")
    page.glossary(terms)
    return page.render()


def _marked(frame: pd.DataFrame, tuned: set) -> pd.DataFrame:
    """A delta table with its verdict per row (fell / rose / no change) and, per student layer,
    whether it was fine-tuned."""
    if frame.empty:
        return frame
    out = frame.copy()
    out.insert(out.columns.get_loc("delta") + 1, "change",
               [change_word(d, lo, hi) for d, lo, hi in zip(out["delta"], out["ci_low"], out["ci_high"])])
    if "student_layer" in out:
        out.insert(out.columns.get_loc("student_layer") + 1, "fine-tuned",
                   ["yes" if s in tuned else "" for s in out["student_layer"]])
    return out
