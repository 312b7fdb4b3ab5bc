"""Batch report and before/after page of runs (HTML, markdown, parquet/CSV tables, summary.json),
written from analysis results; this package computes no analysis.

    write_report(store, results, out_dir=None) -> RUN/report/   see cdviz/report/build.py
    write_compare(compare_result, OUT)         -> OUT/          see cdviz/report/compare.py
    (cdviz.workflow.build_report / compare_runs run the analyses, save their results and call these)
    figures                                        pure result -> plotly Figure functions (also used by app/)
    findings.report_findings(summary) / compare_findings(summary)
                                                   what was found, in sentences from the numbers: the
                                                   box that opens index.html, compare.html and the
                                                   dashboard's Overview / Before-after pages
    glossary.glossary()                            one meaning per name (measures from the metric
                                                   registry); index.html and compare.html end with it

summary.json (format "cdviz-report", version 1); NaN is written as null:

    format, version, cdviz_version, run (absolute path), probes (probe set name)
    models: {teacher|student: {path, arch, n_layers, n_heads, layers}}
    n_items, n_analysed (recorded OK with outcomes for both models), n_skipped
    accuracy:
      overall:     {n, teacher, teacher_consistent, student, student_consistent, delta}
      by_category: [{category, skill, n, teacher, teacher_consistent, student, student_consistent, delta}]
      by_skill:    [{skill, n, ...same}]
        teacher / student = accuracy averaged over query orders; *_consistent = right in every
        order (Winoground: group score); delta = student - teacher
      chance:      mean over items of 1 / number of options (the accuracy of guessing)
    order_dependence: [{category, n, teacher, student}] ("all" last): share of items a model gets right
                 in some option orders and wrong in others (letters protocol; [] otherwise)
    outcome_groups: {"TR/SR": n, "TR/SW": n, "TW/SR": n, "TW/SW": n}
    layer_map: {default_groups: {"<student layer>": [teacher layers]}, monotone: {"<student layer>":
                teacher layer}, field, metric}
    misalignment: {measures: ["i2i:vat_cosine", "t2i:js", ...],
                   by_layer: [{measure, student_layer, teacher_layers, mean, ci_low, ci_high, n, baseline}]}
                   (baseline: the measure between two halves of the teacher's heads, its noise floor)
    most_misaligned_layers: [{measure, student_layer, teacher_layers, mean, ci_low, ci_high}] (top 3 per measure)
    error_link: {correction: "bh" | "holm", family: the tests corrected together, in words, n_tests,
                 auroc: [{measure, student_layer, teacher_layers, auroc, ci_low, ci_high, p_value, q_value,
                          n_pos, n_neg}]                    (category "all", teacher-right items)
                 logistic: [{measure, student_layer, coef, se, ci_low, ci_high, odds_ratio, p_value, q_value, n}]}
                          (misalignment term per SD, category dummies in the model)
                 q-values are corrected once over every AUROC and logistic test of every measure, layer
                 and category, and the grounding gap (analyses.error_link.joint_family)
    grounding: {field, gap_auroc: [{student_layer, teacher_layers, mean_gap, auroc, ci_low, ci_high,
                                    p_value, q_value, n_pos, n_neg}]}
    sinks: {k, by_layer: [{model, layer, n_sinks, sink_share, sink_share_filt, cos_raw_filt, n_items}]}
    attribution: null | [{model, layer, spearman, topk_iou, n}]
    recommended_targets: {version, measure, source, rule, student_layers, teacher_groups, criteria, power,
                          evidence}
                         (schema in analyses/targets.py; read by `cdviz finetune --from-report`)
    files: {html: "index.html", markdown: "report.md", tables: {name: "tables/name.parquet"}}
"""

from typing import Any

__all__ = ["write_compare", "write_report"]


def __getattr__(name: str) -> Any:
    # The writers pull in plotly; the dashboard imports cdviz.report.findings alone, so they load
    # only when asked for (a page's first render after a server start does not wait for plotly).
    if name == "write_report":
        from cdviz.report.build import write_report
        return write_report
    if name == "write_compare":
        from cdviz.report.compare import write_compare
        return write_compare
    raise AttributeError(f"module 'cdviz.report' has no attribute {name!r}")
