"""summary.json of a report: the machine-readable digest that the dashboard, `cdviz finetune
--from-report` and `cdviz compare` read. The schema is documented in cdviz/report/__init__.py.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from cdviz import __version__
from cdviz.io import jsonable, records  # noqa: F401  (re-exported: the report and the app use them from here)
from cdviz.store import RunStore, item_accuracy  # noqa: F401  (re-exported)

FORMAT = "cdviz-report"
VERSION = 1
TOP_LAYERS = 3  # most misaligned layers listed per measure


def accuracy_tables(usable: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per category / skill / overall: n, teacher and student accuracy (mean over query orders,
    as the paper reports; Winoground items: group score), consistent accuracy (right in every
    order; Winoground: group score) and delta = student - teacher."""
    usable = usable.assign(**{f"{m}_item_accuracy": item_accuracy(usable, m) for m in ("teacher", "student")})
    # Match-protocol runs: accuracy and consistent are both pairwise; strict (every option judged right) beside them.
    strict = all(f"{m}_strict" in usable and usable[f"{m}_strict"].notna().any() for m in ("teacher", "student"))
    out = {}
    for key in ("category", "skill", None):
        groups = usable.groupby(key, sort=True) if key else [("all", usable)]
        rows = []
        for name, sub in groups:
            row = {key or "scope": name, "n": len(sub)}
            for m in ("teacher", "student"):
                row[m] = float(sub[f"{m}_item_accuracy"].mean())
                row[f"{m}_consistent"] = float(sub[f"{m}_correct"].astype(float).mean())
                if strict:
                    row[f"{m}_strict"] = float(sub[f"{m}_strict"].astype(float).mean())
            row["delta"] = row["student"] - row["teacher"]
            rows.append(row)
        columns = [key or "scope", "n", "teacher", "teacher_consistent", "student", "student_consistent", "delta"]
        columns += ["teacher_strict", "student_strict"] if strict else []
        out[key or "overall"] = pd.DataFrame(rows, columns=columns)  # columns kept when nothing is usable
    skills = usable.groupby("category", sort=True)["skill"].first()
    out["category"].insert(1, "skill", [str(skills.get(c, "")) for c in out["category"]["category"]])
    return out


def chance_level(usable: pd.DataFrame) -> float:
    """Mean over items of 1 / number of options: the accuracy of guessing (two options: 1/2)."""
    counts = [len(json.loads(o)) for o in usable["options"]] if "options" in usable and len(usable) else []
    return float(np.mean([1 / k for k in counts if k])) if counts else 0.5


def order_dependence(usable: pd.DataFrame) -> pd.DataFrame:
    """Per category (and "all"): the share of items whose outcome depends on the option order,
    i.e. right in some orders and wrong in others (0 < accuracy over orders < 1), per model.

    With two options this is a model answering by position: the same letter in both orders.
    Items without a per-order accuracy (Winoground group scores) are left out; columns
    category, n (items with per-order accuracy), teacher, student.
    """
    rows = []
    groups = [*usable.groupby("category", sort=True), ("all", usable)] if len(usable) else []
    for name, sub in groups:
        row = {"category": str(name), "n": 0}
        for m in ("teacher", "student"):
            acc = sub[f"{m}_accuracy"].astype(float).dropna() if f"{m}_accuracy" in sub else pd.Series(dtype=float)
            row["n"] = max(row["n"], len(acc))
            row[m] = float(((acc > 0) & (acc < 1)).mean()) if len(acc) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["category", "n", "teacher", "student"])


def most_misaligned(by_layer: pd.DataFrame, top: int = TOP_LAYERS) -> pd.DataFrame:
    """The ``top`` student layers with the largest mean misalignment, per measure."""
    return (by_layer.sort_values(["measure", "mean"], ascending=[True, False]).groupby("measure", sort=True)
            .head(top).reset_index(drop=True))


def make_summary(store: RunStore, usable: pd.DataFrame, results: dict[str, Any], files: dict) -> dict:
    """The summary dict from the analyses' results (keys: misalignment, layer_correspondence,
    error_link, grounding, sinks, targets, attribution (optional), default_map)."""
    acc = accuracy_tables(usable)
    mis, lc, link = results["misalignment"], results["layer_correspondence"], results["error_link"]
    by_layer = mis.by_layer()
    overall = link.overall()
    logit = link.logistic
    logit = logit[(logit.category == "all") & (logit.term == "misalignment")] if len(logit) else logit
    models = {}
    for m in ("teacher", "student"):
        info = store.model_info(m)
        models[m] = {"path": info.get("path", ""), "arch": info.get("arch", ""), "n_layers": info.get("n_layers"),
                     "n_heads": info.get("n_heads"), "layers": info.get("layers")}
    sinks = results["sinks"].frame
    protocol = store.manifest.get("options", {}).get("protocol", "letters")
    summary = {
        "format": FORMAT, "version": VERSION, "cdviz_version": __version__,
        "run": str(store.root.resolve()), "probes": store.manifest.get("probes", {}).get("name", ""),
        "protocol": protocol,
        "models": models,
        "n_items": int(len(store.index)), "n_analysed": int(len(usable)),
        "n_skipped": int(len(store.index) - len(usable)),
        "accuracy": {"overall": records(acc["overall"].drop(columns="scope"))[0],
                     "by_category": records(acc["category"]), "by_skill": records(acc["skill"]),
                     "chance": chance_level(usable)},
        "order_dependence": records(order_dependence(usable)) if protocol == "letters" else [],
        "outcome_groups": {r["group"]: int(r["n"]) for r in records(link.groups[link.groups.category == "all"])},
        "layer_map": {"default_groups": {str(s): list(g) for s, g in zip(mis.student_layers, mis.teacher_groups)},
                      "monotone": {str(s): t for s, t in lc.layer_map.items()},
                      "field": lc.field, "metric": lc.metric},
        "misalignment": {"measures": list(mis.measures), "view": getattr(mis, "view", "primary"),
                         "n_skipped_view": len(getattr(mis, "skipped", {})),
                         "by_layer": records(by_layer, ["measure", "student_layer", "teacher_layers", "mean",
                                                        "ci_low", "ci_high", "n", "baseline"])},
        "most_misaligned_layers": records(most_misaligned(by_layer), ["measure", "student_layer", "teacher_layers",
                                                                      "mean", "ci_low", "ci_high"]),
        "error_link": {
            "correction": link.correction,
            "family": link.family, "n_tests": link.n_tests,
            "auroc": records(overall, ["measure", "student_layer", "teacher_layers", "auroc", "ci_low", "ci_high",
                                       "p_value", "q_value", "n_pos", "n_neg"]),
            "logistic": records(logit, ["measure", "student_layer", "coef", "se", "ci_low", "ci_high", "odds_ratio",
                                        "p_value", "q_value", "n"]) if len(logit) else [],
        },
        "grounding": {"field": results["grounding"].field, "gap_auroc": records(results["grounding"].gap_auroc)},
        "sinks": {"k": results["sinks"].k,
                  "by_layer": records(sinks[sinks["head"] == -1].drop(columns="head"))},
        "attribution": records(results["attribution"].by_layer()) if results.get("attribution") is not None else None,
        "recommended_targets": results["targets"].to_dict(),
        "files": files,
    }
    return jsonable(summary)
