"""``python -m cdviz.bench.targets``: how reliably the report's fine-tune targets find planted links.

Each cell of the sweep makes synthetic stores (cdviz/synthetic/) with a known answer: the
student layers whose misalignment drives the student's errors (``planted``, link strength
``link``), then runs what ``cdviz report`` runs for the targets (misalignment with every default
measure, error link per category, grounding, one family of tests, `analyses.targets.targets`)
and scores the recommendation against the truth:

    recall     planted layers recommended / planted layers, pooled over seeds
    precision  recommended layers that were planted / recommended layers, pooled over seeds (the
               fallback band is a default, not a claim, so it counts as recommending none)
    linked     share of seeds whose recommendation came from the error link, not the fallback

The goals: with no link, ``linked`` <= 5% (false discoveries controlled); with link
>= 4 at 300 items, recall >= 0.9 and precision >= 0.9 for any planted layers, judged per cell and
pooled over every such cell (a cell has few seeds, so one stray layer moves its precision by
0.1 or more). A second table gives
the items needed to detect a link of AUROC 0.6 / 0.7 / 0.8 (`analyses.stats.rank_sum_power`,
checked by simulating the test).

    .venv/bin/python -m cdviz.bench.targets --out docs/targets_sweep.md          # about 45 min on one core
    .venv/bin/python -m cdviz.bench.targets --quick                              # a few minutes, printed
    sweep(cells, seeds) -> frame (one row per cell x seed); summarise(frame) -> one row per cell
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from analyses.error_link import error_link, joint_family
from analyses.grounding import grounding
from analyses.misalignment import misalignment
from analyses.stats import detectable_auroc, rank_sum_p, rank_sum_power
from analyses.targets import targets
from cdviz.store import open_run
from cdviz.synthetic import make_synthetic_run

TR_SHARE = 0.95  # the synthetic teacher's accuracy: only items it gets right are tested


@dataclass(frozen=True)
class Cell:
    """One setting of the sweep; every field is a make_synthetic_run argument of that name."""

    planted: tuple[int, ...]
    link: float = 6.0
    n_items: int = 300
    depth_profile: str = "middle"
    teacher_grid: tuple[int, int] = (8, 8)
    student_grid: tuple[int, int] = (4, 4)
    teacher_layers: int = 8
    student_layers: int = 4
    decoys: tuple[int, ...] = field(default=())

    def label(self) -> str:
        grids = "x".join(map(str, self.teacher_grid)) + "/" + "x".join(map(str, self.student_grid))
        return (f"planted {list(self.planted)} link {self.link:g} n {self.n_items} {self.depth_profile} "
                f"{self.teacher_layers}->{self.student_layers} {grids}" + (f" decoys {list(self.decoys)}" if self.decoys
                                                                        else ""))


def run_cell(cell: Cell, seed: int, workdir: Path, n_boot: int = 200) -> dict:
    """Make the store, recommend targets as the report does, score them against the planted layers."""
    run = make_synthetic_run(workdir / f"run-{seed}", seed=seed, shard_size=100, **asdict(cell))
    store = open_run(run)
    mis = misalignment(store)
    link, _ = joint_family(error_link(store, misalignment=mis, n_boot=n_boot, seed=seed), grounding(store, n_boot=0))
    rec = targets(store, misalignment=mis, error_link=link)
    chosen = set(rec.student_layers) if rec.source == "error_link" else set()
    planted = set(cell.planted)
    hit = len(chosen & planted)
    auc = rec.evidence.set_index("student_layer").auroc
    return {**{k: v for k, v in asdict(cell).items()}, "cell": cell.label(), "seed": seed,
            "linked": rec.source == "error_link", "recommended": sorted(chosen), "n_planted": len(planted),
            "n_recommended": len(chosen), "hits": hit,
            "planted_auroc": float(auc[list(planted)].mean()) if planted else np.nan,
            "detectable_auroc": rec.power.get("detectable_auroc", np.nan)}


def sweep(cells: list[Cell], seeds: list[int], workdir: str | Path | None = None, progress=None) -> pd.DataFrame:
    """One row per cell x seed (see run_cell); stores are made in a temporary directory."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="cdviz-bench-targets-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        for i, cell in enumerate(cells):
            for seed in seeds:
                rows.append(run_cell(cell, seed, root / f"cell{i}"))
                if progress:
                    progress(rows[-1])
    return pd.DataFrame(rows)


def _goal(link: float, n_items: int) -> str:
    if link == 0:
        return "no link: linked <= 0.05"
    if link >= 4 and n_items >= 300:
        return "link >= 4, n >= 300: recall, precision >= 0.9"
    return ""


def _scores(sub: pd.DataFrame) -> dict:
    planted, chosen, hits = sub.n_planted.sum(), sub.n_recommended.sum(), sub.hits.sum()
    return {"seeds": len(sub), "linked": sub.linked.mean(), "recall": hits / planted if planted else np.nan,
            "precision": hits / chosen if chosen else np.nan, "planted_auroc": sub.planted_auroc.mean()}


def _met(goal: str, row: dict):
    if goal.startswith("no link"):
        return bool(row["linked"] <= 0.05)
    if goal:
        return bool(row["recall"] >= 0.9 and (row["precision"] >= 0.9 or math.isnan(row["precision"])))
    return None


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per cell, then pooled over the cells of each goal: seeds, linked share, pooled recall and
    precision, the planted layers' mean AUROC, the goal and whether it is met (None: no goal,
    the cell measures power)."""
    frame = frame.assign(goal=[_goal(l, n) for l, n in zip(frame.link, frame.n_items)])
    rows = []
    for label, sub in frame.groupby("cell", sort=False):
        row = {"cell": label, **_scores(sub), "goal": sub.goal.iloc[0]}
        rows.append({**row, "met": _met(row["goal"], row)})
    for goal, sub in frame[frame.goal != ""].groupby("goal", sort=False):
        row = {"cell": f"all cells: {goal.split(':')[0]}", **_scores(sub), "goal": goal}
        rows.append({**row, "met": _met(goal, row)})
    return pd.DataFrame(rows)


def simulated_power(auc: float, n_pos: int, n_neg: int, alpha: float, n_sim: int = 2000, seed: int = 0) -> float:
    """Share of simulated samples (binormal scores with that AUROC) the rank-sum test rejects."""
    rng = np.random.default_rng(seed)
    shift = math.sqrt(2) * norm.ppf(auc)
    labels = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    hits = [rank_sum_p(np.r_[rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)], labels) < alpha
            for _ in range(n_sim)]
    return float(np.mean(hits))


def items_needed(auc: float, alpha: float = 0.05, power: float = 0.9, error_share: float = 0.5) -> int:
    """Recorded items for the rank-sum test to find a link of ``auc`` with probability ``power``,
    when a share TR_SHARE of items are tested and ``error_share`` of those are student errors."""
    def found(n: int) -> bool:
        n_pos = max(1, round(n * TR_SHARE * error_share))
        n_neg = max(1, round(n * TR_SHARE * (1 - error_share)))
        return rank_sum_power(auc, n_pos, n_neg, alpha) >= power

    lo, hi = 2, 2
    while not found(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if found(mid) else (mid, hi)
    return hi


def power_table(aucs=(0.6, 0.7, 0.8), alphas=(0.05, 0.05 / 228), power: float = 0.9, n_sim: int = 2000
                ) -> pd.DataFrame:
    """Items needed per AUROC and alpha (one test; the report family's worst case), with the power
    simulated at that item count as a check of the approximation."""
    rows = []
    for alpha in alphas:
        for auc in aucs:
            n = items_needed(auc, alpha, power)
            n_pos = n_neg = round(n * TR_SHARE / 2)
            rows.append({"auroc": auc, "alpha": alpha, "items_needed": n,
                         "simulated_power": simulated_power(auc, n_pos, n_neg, alpha, n_sim)})
    return pd.DataFrame(rows)


def detectable_table(items=(100, 200, 300, 500, 1000), power: float = 0.9) -> pd.DataFrame:
    """The smallest AUROC found with probability ``power`` at each item count (half the tested items wrong)."""
    rows = []
    for n in items:
        n_pos = n_neg = round(n * TR_SHARE / 2)
        rows.append({"items": n, "alpha 0.05": detectable_auroc(n_pos, n_neg, 0.05, power),
                     "alpha 0.05/228": detectable_auroc(n_pos, n_neg, 0.05 / 228, power)})
    return pd.DataFrame(rows)


def default_cells(quick: bool = False) -> tuple[list[Cell], list[Cell]]:
    """(cells run with the full seed list, null cells run with more seeds)."""
    plants = [(0,), (1,), (2,), (3,), (0, 3), (1, 2), (0, 1)]
    cells = [Cell(p, link=link, depth_profile=prof) for prof in ("middle", "monotone") for link in (4.0, 8.0)
             for p in plants]
    cells += [Cell((0, 3), link=4.0, decoys=(1, 2)), Cell((3,), link=4.0, decoys=(1,))]
    cells += [Cell(p, link=link, n_items=n) for n in (100, 1000) for link in (2.0, 4.0) for p in ((0,), (1, 2))]
    cells += [Cell(p, link=4.0, teacher_grid=tg, student_grid=sg, teacher_layers=lt, student_layers=ls)
              for (tg, sg, lt, ls) in (((8, 8), (8, 8), 8, 4), ((27, 27), (24, 24), 8, 4), ((8, 8), (6, 6), 12, 6))
              for p in ((0,), (ls - 1,), (0, ls - 1))]
    null = [Cell(p, link=0.0, depth_profile=prof) for prof in ("middle", "monotone") for p in ((1, 2), (0, 3))]
    null += [Cell((0, 3), link=0.0, decoys=(1, 2))]
    if quick:
        cells = [Cell((0,), link=4.0), Cell((3,), link=4.0), Cell((0, 3), link=4.0, decoys=(1, 2))]
        null = [Cell((1, 2), link=0.0)]
    return cells, null


def markdown(summary: pd.DataFrame, power: pd.DataFrame, detectable: pd.DataFrame, header: str) -> str:
    from cdviz.report.html import md_table

    def fmt(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.map(lambda v: f"{v:.3g}" if isinstance(v, float) and not math.isnan(v) else
                         ("" if isinstance(v, float) else v))

    missed = summary[summary.met == False]  # noqa: E712  (None means "no goal")
    verdict = ("Every goal is met." if missed.empty else
               "Goals not met in: " + "; ".join(missed.cell) + ".")
    summary = summary.assign(met=summary.met.map({True: "yes", False: "NO"}).fillna(""))
    return "\n".join([
        "# Fine-tune targets: detection on planted links\n", header, "",
        "Generated by `.venv/bin/python -m cdviz.bench.targets --out docs/targets_sweep.md`; do not edit.\n",
        "## Planted vs recommended\n",
        "recall: planted layers recommended / planted; precision: recommended layers that were planted / "
        "recommended (pooled over seeds; the fallback band recommends none); linked: share of seeds whose targets "
        "came from the error link rather than the fallback; planted_auroc: the planted layers' measured AUROC "
        "(i2i:vat_cosine). Cells: planted student layers, link strength, items, depth profile, teacher->student "
        "layers, teacher/student grids; decoys: layers more misaligned than the planted ones but unlinked.\n",
        md_table(fmt(summary), max_rows=len(summary)), verdict, "",
        "## Items needed to detect a link\n",
        f"Rank-sum test, {TR_SHARE:.0%} of items tested (teacher right), half of those student errors, power 0.9. "
        "alpha 0.05 is one test alone; 0.05/228 is the worst case of a full report's family (228 tests), when "
        "the link shows in a single test; a link seen in several measures and categories at once needs less.\n",
        md_table(fmt(power)), "",
        "Smallest AUROC detected 90% of the time:\n",
        md_table(fmt(detectable)),
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdviz.bench.targets", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per cell (cells without a link get 5x as many)")
    parser.add_argument("--quick", action="store_true", help="a handful of cells, to try it")
    parser.add_argument("--out", type=Path, help="write the markdown tables here (and the raw rows next to it, .csv)")
    args = parser.parse_args(argv)
    cells, null = default_cells(args.quick)
    seeds = list(range(100, 100 + args.seeds))
    null_seeds = list(range(100, 100 + 5 * args.seeds))
    t0 = time.perf_counter()

    def log(r: dict) -> None:
        print(f"{r['cell']} seed {r['seed']}: {r['recommended']} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr,
              flush=True)

    frame = pd.concat([sweep(cells, seeds, progress=log), sweep(null, null_seeds, progress=log)], ignore_index=True)
    summary = summarise(frame)
    text = markdown(summary, power_table(), detectable_table(),
                    f"{len(frame)} stores ({len(seeds)} seeds per cell, {len(null_seeds)} per cell without a link); "
                    f"{time.perf_counter() - t0:.0f} s.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        frame.to_csv(args.out.with_suffix(".csv"), index=False)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
