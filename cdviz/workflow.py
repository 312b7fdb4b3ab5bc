"""Analyse a run and write what was found: the analysis pipeline, then the report, in one call.

    build_report(RUN, out_dir=None, progress=None, ...) -> RUN/report/   (`cdviz report RUN`)
        RUN/report/results/   every analysis result (analyses.pipeline.Results; the dashboard reads it)
        RUN/report/index.html, report.md, summary.json, tables/   (cdviz.report.write_report)
    compare_runs(BEFORE, AFTER, OUT, ...) -> OUT/                      (`cdviz compare BEFORE AFTER`)
        OUT/results/          the comparison (analyses.compare.CompareResult)
        OUT/compare.html, summary.json, tables/   (cdviz.report.write_compare)
    report_steps(RUN, attribution_items=0)   total of build_report's progress(n) increments

This sits above both the analyses and the report writers, which know nothing of each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from analyses import pipeline
from analyses.misalignment import DEFAULT_T2I_METRICS
from cdviz.report import write_compare, write_report
from cdviz.store import RunStore, open_run

RESULTS = "results"  # RUN/report/RESULTS and OUT/RESULTS: the saved analysis results


def _names(attribution_items: int) -> list[str]:
    return pipeline.default_names() + (["attribution"] if attribution_items > 0 else [])


def report_steps(run: str | Path | RunStore, attribution_items: int = 0) -> int:
    """Total of the ``progress(n)`` increments `build_report` will make."""
    store = run if isinstance(run, RunStore) else open_run(run)
    return pipeline.total_steps(store, _names(attribution_items),
                                options={"attribution": {"n_items": attribution_items}})


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, progress: Callable[[int], None] | None = None,
                 *, t2i_metrics=DEFAULT_T2I_METRICS, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0,
                 attribution_items: int = 0, device: str = "cpu", view: str = "primary",
                 timings: dict | None = None) -> Path:
    """Analyse the run at ``run_dir``, save the results and write the report; returns the report folder.

    Args:
        run_dir: a finished run store; a partial or damaged one raises StoreError saying what is
            missing and the command that finishes it, as `cdviz report` does.
        out_dir: where to write (default RUN/report); the results go to OUT/results.
        progress: called with the number of items just processed (see `report_steps`).
        t2i_metrics: metrics for the t2i misalignment (add "emd" for the exact, slow one).
        n_boot, n_perm, seed: bootstrap replicates, permutations and their seed.
        attribution_items: > 0 also runs integrated-gradients attribution on that many items
            (loads both models from the manifest paths, on ``device``).
        view: the misalignment's view, "primary" (each model's primary image piece) or "detail"
            (t2i over the crops / tiles assembled over the image; a run recorded with --pieces;
            analyses.misalignment). The saved result and summary.json say which.
        timings: if given, filled with seconds per analysis and per writing phase.
    """
    store = open_run(run_dir)
    store.require_whole()  # never analyse part of a run as if it were all of it
    out = Path(out_dir) if out_dir is not None else store.root / "report"
    timings = timings if timings is not None else {}
    results = pipeline.run(store, _names(attribution_items), progress=progress, timings=timings,
                           common={"n_boot": n_boot, "n_perm": n_perm, "seed": seed},
                           options={"misalignment": {"t2i_metrics": t2i_metrics, "view": view},
                                    "attribution": {"n_items": attribution_items, "device": device}})
    results.save(out / RESULTS)
    return write_report(store, results, out, timings=timings)


def compare_runs(before: str | Path, after: str | Path, out: str | Path, *, measures=None,
                 t2i_metrics=DEFAULT_T2I_METRICS, n_boot: int = 1000, seed: int = 0,
                 progress: Callable[[int], None] | None = None) -> Path:
    """Compare two runs, save the comparison and write OUT/compare.html and OUT/summary.json; returns OUT.

    Each run's misalignment is read from its saved report results when they are current (written
    after the run's index) and of the primary view, else computed (primary view).

    Args:
        before, after: run stores (the same probe set gives paired differences).
        out: output directory.
        measures: misalignment measures to compare (default all measures both runs have).
        n_boot, seed: bootstrap replicates and seed.
        progress: called with items done (one misalignment pass per run computed here).
    """
    stores = {"before": open_run(before), "after": open_run(after)}
    saved = {k: {} for k in stores}
    if t2i_metrics == DEFAULT_T2I_METRICS:  # saved results hold the default measures only
        for k, s in stores.items():
            mis = saved_result(s, "misalignment")
            if mis is not None and mis.view == "primary":  # a `report --view detail` result is another view
                saved[k]["misalignment"] = mis
    results = pipeline.run_pair(stores["before"], stores["after"], "compare", before_results=saved["before"],
                                after_results=saved["after"], progress=progress,
                                dependency_options={"misalignment": {"t2i_metrics": t2i_metrics}},
                                options={"measures": measures, "t2i_metrics": t2i_metrics, "n_boot": n_boot,
                                         "seed": seed})
    out = Path(out)
    results.save(out / RESULTS)
    return write_compare(results["compare"], out)


def results_dir(store: RunStore) -> Path:
    """Where `build_report` saved the run's analysis results (by default)."""
    return pipeline.run_results_dir(store.root)


def saved_result(store: RunStore, name: str):
    """The run's saved ``name`` result when it is newer than the run's index, else None."""
    return pipeline.saved_run_result(store.root, name)


__all__ = ["build_report", "compare_runs", "report_steps", "results_dir", "saved_result"]
