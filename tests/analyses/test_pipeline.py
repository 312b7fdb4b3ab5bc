"""The analysis pipeline: one registry, dependency order, the joint q-value family, saved results
that load back equal, a new analysis added with one line, and the two-run comparison."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from analyses import pipeline
from analyses.error_link import error_link, joint_family
from analyses.grounding import grounding

FAST = {"n_boot": 50, "n_perm": 50}


def same(a, b, path="") -> None:
    """Deep equality of two to_dict() trees, arrays and lists alike, NaN equal to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple, np.ndarray)) and not isinstance(a, str):
        a, b = list(a), list(b)
        assert len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert (a is None and b is None) or (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-6), \
            f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.fixture(scope="module")
def full(planted_store):
    return pipeline.run(planted_store, common=FAST)


def test_registry_holds_every_analysis_once():
    import analyses

    assert analyses.__file__.endswith("analyses/__init__.py") and analyses.REGISTRY is pipeline.REGISTRY
    assert list(pipeline.REGISTRY) == ["misalignment", "layer_correspondence", "error_link", "grounding", "sinks",
                                       "targets", "attribution"]
    assert list(pipeline.PAIRS) == ["compare"]


def test_plan_puts_dependencies_first_in_registry_order():
    assert pipeline.plan(["targets"]) == ["misalignment", "error_link", "targets"]
    assert pipeline.plan(["targets"], have=["misalignment"]) == ["error_link", "targets"]
    assert pipeline.plan() == pipeline.default_names()
    assert "attribution" not in pipeline.default_names()  # it loads models: only on request
    assert pipeline.plan(["attribution"]) == ["attribution"]


def test_unknown_names_are_refused_with_the_registered_ones():
    with pytest.raises(KeyError, match="registered: misalignment, layer_correspondence"):
        pipeline.run(None, ["nope"])
    with pytest.raises(ValueError, match="already exists"):
        pipeline.register(pipeline.REGISTRY["sinks"])
    with pytest.raises(ValueError, match="depends on 'ghost', which is not registered"):
        pipeline.register(pipeline.Analysis("orphan", len, object, depends=("ghost",)))


def test_full_run_corrects_error_link_and_grounding_together(full, planted_store):
    assert list(full) == pipeline.default_names()
    assert full.meta["joint_family"] == ["error_link", "grounding"]
    # The same numbers as computing each by hand and correcting the two families as one.
    link = error_link(planted_store, misalignment=full["misalignment"], **FAST)
    gr = grounding(planted_store, **FAST)
    link, gr = joint_family(link, gr)
    pd.testing.assert_frame_equal(full["error_link"].auroc, link.auroc)
    pd.testing.assert_frame_equal(full["grounding"].gap_auroc, gr.gap_auroc)
    # Targets read the jointly corrected q-values.
    evidence = full["targets"].evidence.set_index("student_layer")["q_value"].dropna()
    overall = link.overall(full["targets"].measure).set_index("student_layer")["q_value"]
    np.testing.assert_allclose(evidence.to_numpy(), overall.loc[evidence.index].to_numpy())


def test_without_grounding_the_link_keeps_its_own_family(planted_store, full):
    part = pipeline.run(planted_store, ["targets"], results={"misalignment": full["misalignment"]}, common=FAST)
    assert "joint_family" not in part.meta and part["misalignment"] is full["misalignment"]
    own = error_link(planted_store, misalignment=full["misalignment"], **FAST)
    pd.testing.assert_frame_equal(part["error_link"].auroc, own.auroc)


def test_saved_results_load_back_equal(full, tmp_path):
    folder = full.save(tmp_path / "results")
    index = json.loads((folder / "results.json").read_text())
    assert index["format"] == "cdviz-results" and [e["name"] for e in index["results"]] == list(full)
    assert index["results"][0]["arrays"] == "misalignment.npz"  # the big array is not JSON text
    back = pipeline.Results.load(folder)
    assert list(back) == list(full) and back.meta == full.meta
    for name in full:
        assert type(back[name]) is type(full[name])
        same(full[name].to_dict(), back[name].to_dict(), name)
    only = pipeline.Results.load(folder, names=["targets"])
    assert list(only) == ["targets"]
    assert pipeline.saved_names(folder) == list(full)


def test_loading_a_folder_without_results_names_it(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}.*cdviz report"):
        pipeline.Results.load(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"format": "cdviz-results", "version": 99, "results": []}))
    with pytest.raises(ValueError, match="version 99"):
        pipeline.Results.load(tmp_path)
    assert pipeline.saved_names(tmp_path / "nowhere") == []


def test_a_failed_save_leaves_the_previous_results_readable(full, tmp_path):
    folder = pipeline.Results({"sinks": full["sinks"]}).save(tmp_path / "r")

    class Broken:
        def to_dict(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        pipeline.Results({"targets": full["targets"], "sinks": Broken()}).save(folder)
    back = pipeline.Results.load(folder)
    assert list(back) == ["sinks"]  # the old index still names only what it wrote
    same(full["sinks"].to_dict(), back["sinks"].to_dict())


@dataclass(frozen=True)
class MassResult:
    """The worked example's result: the mean attention mass on the image per student layer."""

    frame: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.frame

    def to_dict(self) -> dict:
        return {"frame": self.frame.to_dict(orient="list")}

    @classmethod
    def from_dict(cls, d: dict) -> MassResult:
        return cls(pd.DataFrame(d["frame"]))


def mass_by_layer(store, *, misalignment=None, progress=None) -> MassResult:
    from analyses.common import usable_items

    rows = []
    for uid in usable_items(store)["uid"]:
        mass = store.get(uid, "student", "mass")  # [L, H, Q]
        rows.append(mass.mean(axis=(1, 2)))
        if progress:
            progress(1)
    layers = misalignment.student_layers  # the dependency arrives by name
    return MassResult(pd.DataFrame({"student_layer": layers, "mass": np.mean(rows, axis=0)[: len(layers)]}))


def test_a_new_analysis_is_one_function_and_one_register_line(planted_store, full, tmp_path):
    pipeline.register(pipeline.Analysis("mass_by_layer", mass_by_layer, MassResult, depends=("misalignment",),
                                        passes=1))
    try:
        steps = []
        got = pipeline.run(planted_store, ["mass_by_layer"], progress=steps.append)
        assert list(got) == ["misalignment", "mass_by_layer"]
        assert sum(steps) == pipeline.total_steps(planted_store, ["mass_by_layer"]) == 2 * 200
        frame = got["mass_by_layer"].frame
        assert list(frame.student_layer) == full["misalignment"].student_layers
        assert ((frame.mass > 0) & (frame.mass <= 1)).all()
        back = pipeline.Results.load(got.save(tmp_path / "r"))
        pd.testing.assert_frame_equal(back["mass_by_layer"].frame, frame, check_dtype=False)
    finally:
        del pipeline.REGISTRY["mass_by_layer"]
    # Once unregistered, a saved result of it is skipped rather than loaded as something else.
    assert "mass_by_layer" not in pipeline.Results.load(tmp_path / "r")


def test_progress_adds_up_to_total_steps(planted_store):
    steps = []
    pipeline.run(planted_store, ["layer_correspondence", "sinks"], progress=steps.append)
    assert sum(steps) == pipeline.total_steps(planted_store, ["layer_correspondence", "sinks"]) == 4 * 200


def test_pair_comparison_of_a_run_with_itself_is_zero_and_round_trips(planted_store, full, tmp_path):
    res = pipeline.run_pair(planted_store, planted_store, before_results={"misalignment": full["misalignment"]},
                            after_results={"misalignment": full["misalignment"]}, options={"n_boot": 40})
    cmp = res["compare"]
    assert cmp.paired and cmp.n_shared == 200
    assert np.allclose(cmp.misalignment["delta"], 0) and np.allclose(cmp.error_link["delta"], 0)
    assert np.allclose(cmp.accuracy["delta"], 0) and np.allclose(cmp.categories["delta"], 0)
    back = pipeline.Results.load(res.save(tmp_path / "c"))["compare"]
    same(cmp.to_dict(), back.to_dict())
    without = pipeline.run_pair(planted_store, planted_store, before_results={"misalignment": full["misalignment"]},
                                after_results={"misalignment": full["misalignment"]}, options={"n_boot": 0})
    assert without["compare"].misalignment[["ci_low", "ci_high"]].isna().all().all()  # no intervals asked
