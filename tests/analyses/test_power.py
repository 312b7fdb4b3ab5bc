"""Detection power of the error link: the normal approximation against simulation, the
items-needed table, and the sweep's scoring of recommendations against planted layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyses.stats import detectable_auroc, rank_sum_power
from cdviz.bench.targets import Cell, items_needed, markdown, run_cell, simulated_power, summarise

DOC = Path(__file__).resolve().parents[2] / "docs" / "targets_sweep.md"


@pytest.mark.parametrize("auc, n_pos, n_neg", [(0.6, 150, 150), (0.7, 40, 60), (0.8, 15, 25), (0.65, 300, 100)])
def test_power_approximation_matches_simulation(auc, n_pos, n_neg):
    assert rank_sum_power(auc, n_pos, n_neg) == pytest.approx(simulated_power(auc, n_pos, n_neg, 0.05, 1500), abs=0.04)


def test_detectable_auroc_shrinks_with_items_and_grows_with_stricter_alpha():
    small, large = detectable_auroc(50, 50), detectable_auroc(500, 500)
    assert 0.5 < large < small < 1
    assert rank_sum_power(small, 50, 50) == pytest.approx(0.9, abs=1e-6)
    assert detectable_auroc(50, 50, alpha=0.05 / 228) > small
    assert np.isnan(detectable_auroc(0, 10)) and np.isnan(detectable_auroc(1, 1))
    assert rank_sum_power(0.5, 100, 100) == pytest.approx(0.05, abs=1e-3)  # no link: the test's level


def test_items_needed_is_the_smallest_count_with_the_power():
    n = items_needed(0.7)
    half = lambda k: round(k * 0.95 / 2)  # noqa: E731  (tested items split evenly, as items_needed assumes)
    assert rank_sum_power(0.7, half(n), half(n)) >= 0.9 > rank_sum_power(0.7, half(n - 2), half(n - 2))
    assert items_needed(0.6) > items_needed(0.7) > items_needed(0.8)


def test_summary_pools_seeds_and_scores_goals():
    def row(cell, link, n, planted, recommended, auc=0.7):
        hits = len(set(planted) & set(recommended))
        return {"cell": cell, "link": link, "n_items": n, "linked": bool(recommended), "n_planted": len(planted),
                "n_recommended": len(recommended), "hits": hits, "planted_auroc": auc}

    frame = pd.DataFrame([row("a", 4.0, 300, [1, 2], [1, 2]), row("a", 4.0, 300, [1, 2], [0, 1, 2]),
                          row("b", 8.0, 300, [0], [0]), row("c", 0.0, 300, [1], []), row("d", 2.0, 100, [0], [])])
    s = summarise(frame).set_index("cell")
    assert s.loc["a", "recall"] == 1.0 and s.loc["a", "precision"] == 0.8 and not s.loc["a", "met"]
    assert s.loc["b", "met"] and s.loc["c", "met"] and s.loc["d", "met"] is None
    pooled = s.loc["all cells: link >= 4, n >= 300"]
    assert pooled.seeds == 3 and pooled.precision == 5 / 6 and pooled.recall == 1.0
    text = markdown(s.reset_index(), pd.DataFrame({"x": [1]}), pd.DataFrame({"y": [2]}), "header")
    assert "Goals not met in: a; all cells: link >= 4, n >= 300." in text


@pytest.mark.slow
def test_run_cell_scores_a_planted_store(tmp_path):
    row = run_cell(Cell((3,), link=8.0, n_items=200), seed=1, workdir=tmp_path, n_boot=100)
    assert row["linked"] and row["recommended"] == [3] and row["hits"] == row["n_planted"] == row["n_recommended"] == 1
    assert row["planted_auroc"] > 0.7 and 0.6 < row["detectable_auroc"] < 0.8


def test_the_generated_sweep_is_in_the_repository():
    text = DOC.read_text(encoding="utf-8")
    assert "## Planted vs recommended" in text and "## Items needed to detect a link" in text
    assert "Every goal is met." in text or "Goals not met in:" in text  # the table says where goals fail
