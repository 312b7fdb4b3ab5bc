"""Analyses of a run store: one module per analysis, one public function each, typed results.

Every analysis reads a `cdviz.store.RunStore` (never a model, except ``attribution``), streams
over it shard by shard, and returns a frozen dataclass with ``to_frame()`` (a tidy long frame),
``to_dict()`` / ``from_dict()`` (a round trip through json) and a few aggregate tables. No plotting
and no file writing here: figures live in `cdviz.report.figures`, files in `cdviz.report`.

    from cdviz.store import open_run
    from analyses import pipeline
    store = open_run("runs/demo")
    results = pipeline.run(store, ["error_link"])        # misalignment first, as error_link needs it
    link = results["error_link"]
    from analyses.misalignment import misalignment       # or call one function from its module
    mis = misalignment(store)

Every analysis is registered once, in analyses/pipeline.py (function, dependencies, result type);
``pipeline.run`` is what the report, the comparison, the zoo and the dashboard call, and
``pipeline.Results`` saves and loads results. Adding an analysis: see analyses/pipeline.py.
``analyses.misalignment`` stays the module (import the function from it), so module and function
never shadow each other.

Public API (all keyword options have defaults; ``progress(n)`` is called with items done per shard):

    misalignment.misalignment(store, *, fields=("i2i", "t2i"), t2i_metrics=("js", "spearman", "topk_iou"),
                 layer_map=None, group_size=None, progress=None) -> MisalignmentResult
        .items [I rows: uid, category, skill, group, teacher_correct, student_correct]
        .student_layers [L], .teacher_groups [L][g], .measures [M] ("i2i:vat_cosine", "t2i:js", ...)
        .n_heads H, .values float32 [I, L, H+1, M] misalignment (larger = further apart; index H = head mean)
        .baseline float32 [I, L, M] teacher split-half noise baseline, .layer_baseline() [M, L]
        .to_frame() long rows, .by_layer() (+ baseline), .by_layer_head(), .by(column) (mean, std, n, sem, ci_low, ci_high),
        .item_layer(measure) [I, L] frame, .measure_index(measure), .head_labels()
    layer_correspondence.layer_correspondence(store, *, field="t2i", metric="js", head_matching=True,
                 progress=None) -> LayerCorrespondenceResult
        .field, .metric, .higher_is_aligned, .teacher_layers [Lt], .student_layers [Ls],
        .similarity [Lt, Ls] (mean raw metric value), .layer_map {student layer: teacher layer} (monotone,
        dynamic programming), .heads frame (student_layer, teacher_layer, student_head, teacher_head, value,
        matched), .n_items, .to_frame() (teacher_layer, student_layer, value, matched), .head_matrix(layer)
    error_link.error_link(store, *, misalignment=None, measures=None, n_boot=1000, n_perm=1000, seed=0,
                 correction="bh", by_category=True, progress=None) -> ErrorLinkResult
        .groups (category, group, n, share), .auroc (measure, student_layer, teacher_layers, category, auroc,
        ci_low, ci_high, p_value, n_pos, n_neg, q_value), .logistic (measure, student_layer, category, term,
        coef, se, ci_low, ci_high, odds_ratio, p_value, n, q_value), .by_outcome (measure, student_layer, group,
        mean, ci_low, ci_high, n), .correction, .family (the tests corrected together, in words), .n_tests,
        .overall(measure=None) (category "all" AUROC rows); q-values over every AUROC and slope test
    error_link.joint_family(link, grounding) -> (link, grounding), q-values over both (what the report shows)
    grounding.grounding(store, *, field="t2i", n_boot=1000, n_perm=1000, seed=0, progress=None)
        -> GroundingResult
        .items, .layers {model: [L]}, .in_box {model: [I, L, H+1]}, .area_share [I], .field,
        .gap_auroc (student_layer, teacher_layers, mean_gap, auroc, ci_low, ci_high, p_value, n_pos, n_neg,
        q_value), .to_frame() (uid, category, skill, group, model, layer, head, in_box, area_share, ratio),
        .by_layer() (model, layer, in_box, ratio, n)
    sinks.sinks(store, *, k=5.0, progress=None) -> SinksResult
        .frame (model, layer, head, n_sinks, sink_share, sink_share_filt, cos_raw_filt, n_items),
        .positions (model, layer, token, row, col, frequency) on each model's most common grid, .k
    attribution.attribution(store, *, n_items=8, seed=0, n_steps=16, baseline="mean", device="cpu",
                 dtype="float32", uids=None, progress=None) -> AttributionResult  (loads both models)
        .frame (uid, model, layer, spearman, topk_iou), .maps (uid, model, token, row, col, attribution),
        .items (uid, model, target_token, logit, delta, grid_rows, grid_cols), .by_layer()
    targets.targets(store, *, misalignment=None, error_link=None, measure=None, alpha=0.05,
                 max_layers=None, progress=None) -> TargetsResult
        .student_layers, .teacher_groups, .evidence frame, .source, .measure, .criteria, .rule (in words),
        .power (detectable AUROC), .power_text(); .to_dict() is the
        schema `cdviz finetune --from-report RUN` reads from summary.json["recommended_targets"]
        (documented in analyses/targets.py)

Every result: .to_frame(), .to_dict() (json.dumps-able; NaN stays NaN except in targets, which
writes null) and Result.from_dict(d) (round trip).

Pipeline (analyses/pipeline.py):
    REGISTRY {name: Analysis(name, fn, result, depends, passes, loads_models)}, register(Analysis(...)),
    get(name) (KeyError listing the registered names), default_names(), plan(names), total_steps(store, names),
    run(store, names=None, options=None, common=None, progress=None, results=None) -> Results,
    PAIRS {"compare": ...}, run_pair(before, after) -> Results, Results.save(dir) / Results.load(dir, names)
    compare.compare(before, after, ...) -> CompareResult   before/after differences (analyses/compare.py)

Shared helpers other code may use: analyses.common (default_layer_map, outcome_group, box_cover),
analyses.stats (auroc, auroc_ci, permutation_p, rank_sum_p, adjust_pvalues, adjust_family, logistic_wald,
bootstrap_ci, rank_sum_power, detectable_auroc).

Tests: .venv/bin/pytest tests/analyses -q
"""

from __future__ import annotations

from analyses.pipeline import REGISTRY, Analysis, Results, get, register, run

__all__ = ["REGISTRY", "Analysis", "Results", "get", "register", "run"]
