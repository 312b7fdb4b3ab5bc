"""checkpoints/README.md from the manifest: the models, the measured tables, the controls, the
student seeds, the design goals checked and the variations of the fix (``render_readme``).
"""

from __future__ import annotations

import json
from pathlib import Path

from cdviz.io import write_text_atomic
from cdviz.zoo.clock import BUILD_PHASES, budget_goals
from cdviz.zoo.measure import headline_view
from cdviz.zoo.spec import VARIATIONS


RECOGNITION = ["existence", "colour"]


PERCEPTION = ["replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj", "add_att", "add_obj", "counting"]


def render_readme(manifest: dict, variations: dict | None = None, rebuild: dict | None = None) -> str:
    """checkpoints/README.md: what the models are, the measured tables, the controls, the student
    seeds (if run), the build time (of these models, else of a clean rebuild), the design goals
    checked and the variations of the fix (if run)."""
    cats = RECOGNITION + PERCEPTION
    protocol = manifest["spec"].get("protocol", "letters")
    lines = ["# Bundled demo models", "",
             "Four LLaVA-architecture models trained by `cdviz zoo build` on the synthetic shapes world "
             "(see `cdviz/zoo/`). Standard HF directories: `LlavaForConditionalGeneration.from_pretrained` and "
             "`AutoProcessor.from_pretrained` work on each.", "",
             f"Build: `{manifest['build_command']}`; held-out set: `{manifest['heldout']['command']}`."
             + (f" Re-measured without retraining: `{manifest['evaluate_command']}`." if manifest.get("evaluate_command")
                else ""), "",
             *_teacher_training_lines(manifest["spec"]),
             *_protocol_lines(protocol),
             "| model | layers | heads | hidden | recognition | " + " | ".join(cats) + " | perception mean | blind |",
             "|---" * (len(cats) + 7) + "|"]
    for name, m in manifest["models"].items():
        c = m["config"]
        blind = m["metrics"].get("blind", {}).get("perception_mean")
        lines.append(f"| {name} | {c['layers']} | {c['heads']} | {c['hidden']} | "
                     + " | ".join(_cr_row(headline_view(m["metrics"]), cats)) + f" | {_pct(blind)} |")
    text_only = manifest.get("text_only")
    if text_only:
        t = text_only["by_category"]
        perception = [t[c] for c in PERCEPTION if c in t]
        lines.append("| text only (bag of words) | - | - | - | - | " + " | ".join(_pct(t.get(c)) for c in cats)
                     + f" | {_pct(sum(perception) / len(perception) if perception else None)} | - |")
    lines += ["", f"Per category: {_measure_text(protocol)}, in percent, on the held-out items. `blind`: the same "
              "protocol with every image replaced by a flat image of its mean colour (the perception mean). "
              "`text only`: a logistic regression on the bag of words of each option's query (pairwise), fitted on "
              f"{(text_only or {}).get('train_items', '?')} training-split items and scored on "
              f"{(text_only or {}).get('test_items', '?')} test-split items (`cdviz.probes.text_baseline`); "
              "chance is 50.", ""]
    lines += _strict_and_letters_section(manifest)
    lines += ["## Teacher-student misalignment per student layer (held-out items)", "",
              "| student | measure | student layer | teacher layers | mean | 95% CI |", "|---|---|---|---|---|---|"]
    for student, rows in manifest["misalignment_by_layer"].items():
        for r in rows:
            lines.append(f"| {student} | {r['measure']} | {r['student_layer']} | {r['teacher_layers']} | "
                         f"{r['mean']:.4f} | {r.get('ci_low', float('nan')):.4f} .. {r.get('ci_high', float('nan')):.4f} |")
    t = manifest["compodistill_targets"] or {}
    t2i = manifest["spec"].get("fix_t2i", 0.0)
    fix = (f"VAT (weight 1) and answer-row text-to-image alignment (weight {t2i}, as Align-TI)" if t2i
           else "VAT (weight 1)")
    lines += ["", f"The fix (student-compodistill: DPT -> DFT -> SFT, the same steps as student-kd) aligns with {fix} "
              f"in its DFT stage, on the targets from the student-kd report (source `{t.get('source')}`): student "
              f"layers {t.get('student_layers')} aligned to teacher groups {t.get('teacher_groups')}.", ""]
    lines += _error_link_section(manifest.get("error_link"))
    lines += _seeds_section(manifest)
    lines += _build_time_section(manifest.get("build_time"))
    lines += _rebuild_section(manifest, rebuild)
    lines += ["## Design goals, checked", ""] + [f"- {g}" for g in design_goals(manifest, rebuild)] + [""]
    if manifest.get("designs"):
        lines += [f"The designs tried for the teacher, the KD student and the fix, with their figures: "
                  f"[{manifest['designs']}]"
                  f"({manifest['designs']}).", ""]
    if variations:
        lines += _variations_section(manifest, variations)
    return "\n".join(lines)


def _build_time_section(time_: dict | None, whose: str = "`cdviz zoo build`") -> list[str]:
    if not time_:
        return []
    m = time_.get("machine", {})
    lines = ["## Build time", "",
             f"Wall time of each phase of {whose} ({m.get('cpu_count', '?')} CPU cores, "
             f"{m.get('torch_threads', '?')} torch threads, {m.get('device', '?')}; "
             + ("one uninterrupted process" if time_["uninterrupted"] else
                f"resumed over {time_['runs']} processes, so a phase done before a resume counts only its last part")
             + "):", "", "| phase | minutes |", "|---|---|"]
    phases = time_["phases"]  # JSON keeps them sorted by name: show them in the order they ran
    order = [p for p in BUILD_PHASES if p in phases] + sorted(set(phases) - set(BUILD_PHASES))
    lines += [f"| {name} | {phases[name] / 60:.1f} |" for name in order]
    return lines + [f"| all | {time_['minutes']:.1f} |", ""]


def _rebuild_section(manifest: dict, rebuild: dict | None) -> list[str]:
    """A clean rebuild's figures beside the shipped ones: how far a rebuild moves them (float
    rounding differs with the thread count, and training amplifies it), and its build time when
    the shipped build kept none."""
    if not rebuild:
        return []
    lines = ["## A clean rebuild", "",
             f"`{rebuild['build_command']}` run again from nothing into an empty folder, in one process; its manifest is "
             f"[{REBUILD}]({REBUILD}). Its weights differ from the shipped ones (floating-point sums round "
             "differently on another thread count or CPU, and training amplifies the difference), so its figures "
             "show how much a rebuild moves them:", "",
             "| model | recognition shipped | recognition rebuilt | perception shipped | perception rebuilt | "
             "flat images shipped | flat images rebuilt |", "|---|---|---|---|---|---|---|"]
    for name, m in manifest["models"].items():
        if name not in rebuild.get("models", {}):
            continue
        a, b = headline_view(m["metrics"]), headline_view(rebuild["models"][name]["metrics"])
        blind = [x.get("blind", {}).get("perception_mean") for x in (m["metrics"], rebuild["models"][name]["metrics"])]
        lines.append(f"| {name} | {_pct(a['by_skill'].get('recognition'))} | {_pct(b['by_skill'].get('recognition'))} "
                     f"| {_pct(a['perception_mean'])} | {_pct(b['perception_mean'])} | {_pct(blind[0])} | {_pct(blind[1])} |")
    gaps = [_kd_perception_gap(manifest), _kd_perception_gap(rebuild)]
    if None not in gaps:
        lines += ["", f"The KD student's perception gap (teacher - student-kd): {gaps[0]:.1f} points shipped, "
                      f"{gaps[1]:.1f} rebuilt."]
    lines.append("")
    if not manifest.get("build_time") and rebuild.get("build_time"):
        lines += _build_time_section(rebuild["build_time"], "the clean rebuild")
    return lines


def _kd_perception_gap(manifest: dict) -> float | None:
    """Teacher minus student-kd on the perception mean; None when either is not measured."""
    means = [headline_view(manifest["models"][n]["metrics"])["perception_mean"] if n in manifest["models"] else None
             for n in ("teacher", "student-kd")]
    return None if None in means else means[0] - means[1]


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{v:.1f}"


def _measure_text(protocol: str) -> str:
    if protocol == "match":
        return "pairwise accuracy under the match protocol (the true option's yes/no log-odds beats the false one's)"
    return "consistent two-choice accuracy (right in both orders)"


def _protocol_lines(protocol: str) -> list[str]:
    if protocol != "match":
        return []
    return ["Scored with the match protocol (`cdviz eval --protocol match`): each option is asked as one yes/no "
            "query, 'Does this image show \"<caption>\"? Answer yes or no.' (a question's option as a proposed "
            "answer; a yes/no question as it stands), and scored by log P(yes) - log P(no) at the answer position. "
            "Pairwise: the true option scores highest (chance 50%). Strict: the true option is judged yes and the "
            "false one no.", ""]


def _strict_and_letters_section(manifest: dict) -> list[str]:
    """The other protocol beside the headline one, and match's strict accuracy where measured."""
    rows = [(name, m["metrics"]) for name, m in manifest["models"].items()]
    other = "match" if manifest["spec"].get("protocol", "letters") == "letters" else "letters"
    if not any(other in m for _, m in rows):
        return []
    lines = [f"The other protocol, for reference ({_measure_text(other)}):", "",
             f"| model | {other} recognition | {other} perception mean | match strict perception mean |",
             "|---|---|---|---|"]
    for name, m in rows:
        view = m.get(other, {})
        strict = m.get("strict_mean_over_categories", m.get("match", {}).get("strict_mean"))
        lines.append(f"| {name} | {_pct(view.get('by_skill', {}).get('recognition'))} | "
                     f"{_pct(view.get('perception_mean'))} | {_pct(strict)} |")
    return lines + [""]


def _error_link_section(link: dict | None) -> list[str]:
    if not link:
        return []
    groups = link.get("outcome_groups") or {}
    lines = ["## Error link in the student-kd run", "",
             "AUROC of each layer's misalignment for the student's errors on items the teacher gets right "
             f"(outcome groups {', '.join(f'{k} {v}' for k, v in groups.items())}); 95% bootstrap interval, "
             f"q after the report's multiple-testing correction. Target layers {link.get('target_layers')} "
             f"(source `{link.get('source')}`).", "",
             "| measure | student layer | teacher layers | AUROC | 95% CI | q |", "|---|---|---|---|---|---|"]
    for r in link.get("auroc", []):
        lines.append(f"| {r['measure']} | {r['student_layer']} | {r['teacher_layers']} | {_num(r.get('auroc'))} | "
                     f"{_num(r.get('ci_low'))} .. {_num(r.get('ci_high'))} | {_num(r.get('q_value'))} |")
    return lines + [""]


def _num(v, digits: int = 3) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def _teacher_training_lines(spec: dict) -> list[str]:
    """A paragraph on the teacher's grounding and route losses, for a zoo built with them (none otherwise)."""
    if not spec.get("teacher_ground"):
        return []
    warmup, bind = spec.get("teacher_qa_steps", 0), spec.get("teacher_bind_steps", 0)
    phases = []
    if warmup:
        phases.append(f"first {warmup} steps on the short questions alone ({', '.join(spec.get('teacher_qa_kinds', ['qa']))})")
    if bind:
        phases.append(f"then {bind} steps on {', '.join(spec.get('teacher_bind_kinds', []))} (no match queries)")
    if phases:
        phases.append(f"then {spec.get('teacher_steps')} steps on the full mix")
    if spec.get("teacher_more_steps"):
        phases.append(f"then {spec['teacher_more_steps']} more on the full mix from a peak learning rate of "
                      f"{spec.get('teacher_more_lr')}")
    if spec.get("teacher_presence_steps"):
        phases.append(f"then {spec['teacher_presence_steps']} steps on existence questions with hard negatives and "
                      "the presence loss (the answer row on the named object, or off the image when it is absent)")
    route = ""
    if spec.get("teacher_route"):
        from cdviz.train.recipe import ground_layers, route_layers

        band = list(spec.get("teacher_ground_layers") or ground_layers(None, spec["teacher_layers"]))
        layers = ", ".join(map(str, route_layers(None, spec["teacher_layers"], band)))
        route = (f", and a route loss (weight {spec['teacher_route']}, teacher layers {layers}): -log of the share "
                 "of the answer position's attention on the question's words that name those objects")
    return [f"The teacher is trained with CE plus a grounding loss (weight {spec['teacher_ground']}, teacher layers "
            f"{_ground_layer_text(spec)}): at the answer position, -log of the share of its image attention on the "
            "patches of the objects the answer is about" + route + ("; " + ", ".join(phases) + "." if phases else ".")
            + " The students get none of these losses.", ""]


def _ground_layer_text(spec: dict) -> str:
    layers = spec.get("teacher_ground_layers")
    if layers:
        return ", ".join(map(str, layers))
    from cdviz.train.recipe import ground_layers

    return ", ".join(map(str, ground_layers(None, spec["teacher_layers"]))) + " (the middle band)"


def _cr_row(view: dict, cats: list[str]) -> list[str]:
    """Table cells from a ``headline_view``: recognition, each of ``cats``, the perception mean."""
    cat = view["by_category"]
    return ([_pct(view["by_skill"].get("recognition"))] + [_pct(cat.get(c)) for c in cats]
            + [_pct(view["perception_mean"])])


def _misalignment_by_layer(rows: list[dict]) -> str:
    """"L0 0.0440 / 0.268, ...": i2i:vat_cosine / t2i:js per student layer."""
    by_layer: dict[int, dict[str, float]] = {}
    for r in rows:
        by_layer.setdefault(r["student_layer"], {})[r["measure"]] = r["mean"]
    return ", ".join(f"L{layer} {_num(m.get('i2i:vat_cosine'), 4)} / {_num(m.get('t2i:js'), 3)}"
                     for layer, m in sorted(by_layer.items()))


def _variations_section(manifest: dict, variations: dict) -> list[str]:
    """Each variation of the fix next to student-kd and the shipped student-compodistill."""
    cats = PERCEPTION
    lines = ["## Variations of the fix (`cdviz zoo variations`)", "",
             "Each changes one thing against student-compodistill; same steps, data and seed. Not shipped. Each row "
             "was measured when it was trained (variations.json), on the probe set of that time"
             + ("; the shipped rows are re-measured on the current one, so compare within a row's own measurement."
                if manifest.get("evaluate_command") else "."), "",
             "| model | change | recognition | " + " | ".join(cats) + " | perception mean | i2i:vat_cosine / t2i:js by student layer |",
             "|---" * (len(cats) + 5) + "|"]
    shipped = {n: (manifest["models"][n]["metrics"], manifest["misalignment_by_layer"].get(n, []))
               for n in ("student-kd", "student-compodistill")}
    for name, (metrics, mis) in shipped.items():
        lines.append(f"| {name} | (shipped) | " + " | ".join(_cr_row(headline_view(metrics), cats))
                     + f" | {_misalignment_by_layer(mis)} |")
    order = list(VARIATIONS)  # the defined order, whatever order they were run or stored in
    for name, v in sorted(variations.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        lines.append(f"| {name} | {v['description']} | " + " | ".join(_cr_row(headline_view(v["metrics"]), cats))
                     + f" | {_misalignment_by_layer(v['misalignment_by_layer'])} |")
    return lines + [""]


def _seeds_section(manifest: dict) -> list[str]:
    seeds = manifest.get("seeds")
    if not seeds:
        return []
    lines = ["## Student seeds (`cdviz zoo seeds`)", "",
             "The same teacher; student-kd and student-compodistill retrained from another initialisation and data "
             "order per seed (seed 0 is the shipped pair). Recovered share = (compodistill - kd) / (teacher - kd) "
             "on the perception mean.", "",
             "| seed | kd recognition | kd perception | compodistill recognition | compodistill perception | "
             "recovered share | target-layer i2i:vat_cosine kd -> compodistill | target-layer t2i:js kd -> "
             "compodistill |", "|---|---|---|---|---|---|---|---|"]
    for seed, r in sorted(seeds["runs"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {seed} | {_pct(r['kd']['recognition'])} | {_pct(r['kd']['perception'])} | "
                     f"{_pct(r['compodistill']['recognition'])} | {_pct(r['compodistill']['perception'])} | "
                     f"{_num(r['recovered'])} | {_num(r.get('target_vat_kd'))} -> {_num(r.get('target_vat_cd'))} | "
                     f"{_num(r.get('target_t2i_kd'))} -> {_num(r.get('target_t2i_cd'))} |")
    agg = seeds.get("recovered", {})
    lines += ["", f"Recovered share over {agg.get('n')} seeds: mean {_num(agg.get('mean'))}, 95% t-interval "
              f"{_num(agg.get('ci_low'))} .. {_num(agg.get('ci_high'))}.", ""]
    return lines


def design_goals(manifest: dict, rebuild: dict | None = None) -> list[str]:
    """The design goals of the demo pair, each stated with the measured numbers and whether it holds.
    The build budget is judged on these models' build time, else on a clean rebuild's (same
    command, same code)."""
    def view(name):
        return headline_view(manifest["models"][name]["metrics"])

    nan = float("nan")
    t, kd, cd = view("teacher"), view("student-kd"), view("student-compodistill")
    rec = {n: v["by_skill"].get("recognition", nan) for n, v in (("t", t), ("kd", kd), ("cd", cd))}
    perc = {n: (v["perception_mean"] if v["perception_mean"] is not None else nan)
            for n, v in (("t", t), ("kd", kd), ("cd", cd))}
    blind = manifest["models"]["teacher"]["metrics"].get("blind", {}).get("perception_mean") or nan
    worst = min((t["by_category"].get(c, nan) for c in PERCEPTION), default=nan)
    verdict = lambda ok: "holds" if ok else "does NOT hold"  # noqa: E731
    goals = []
    text_only = (manifest.get("text_only") or {}).get("by_category", {})
    if text_only:
        far = max(abs(v - 50) for v in text_only.values())
        goals.append(f"no text shortcut: the text-only model is within 50 +/- 5 on every category (furthest "
                     f"{far:.1f} points from 50) -> {verdict(far <= 5)}")
    goals += [
        f"teacher binds: >= 90 on every perception category (lowest {worst:.1f}), >= 95 on recognition "
        f"({rec['t']:.1f}), perception mean >= blind + 35 ({perc['t']:.1f} vs blind {blind:.1f}) "
        f"-> {verdict(worst >= 90 and rec['t'] >= 95 and perc['t'] >= blind + 35)}",
        f"student-kd within 5 points of the teacher on recognition ({rec['kd']:.1f} vs {rec['t']:.1f}) and >= 10 below "
        f"it on the perception mean ({perc['kd']:.1f} vs {perc['t']:.1f}) "
        f"-> {verdict(abs(rec['kd'] - rec['t']) <= 5 and perc['kd'] <= perc['t'] - 10)}",
    ]
    seeds = manifest.get("seeds")
    gap = perc["t"] - perc["kd"]
    if seeds and seeds.get("recovered", {}).get("n"):
        agg = seeds["recovered"]
        lower = _lower_in_target_layers(seeds["runs"].values())
        ok = (agg["mean"] >= 1 / 3 and agg.get("ci_low") is not None and agg["ci_low"] > 0
              and seeds.get("recognition_ok", False) and all(lower.values()))
        goals.append(f"student-compodistill recovers >= 1/3 of the KD student's perception gap, mean over "
                     f"{agg['n']} seeds with a 95% interval above 0 (mean {_num(agg['mean'])}, interval "
                     f"{_num(agg.get('ci_low'))} .. {_num(agg.get('ci_high'))}), recognition no more than 2 points worse "
                     f"({'yes' if seeds.get('recognition_ok') else 'no'}), lower misalignment in the target layers "
                     f"in every seed (i2i:vat_cosine {'yes' if lower['vat'] else 'no'}, t2i:js "
                     f"{'yes' if lower['t2i'] else 'no'}) -> {verdict(ok)}")
    else:
        share = (perc["cd"] - perc["kd"]) / gap if gap > 0 else nan
        goals.append(f"student-compodistill recovers >= 1/3 of the KD student's perception gap (one seed: "
                     f"{perc['cd']:.1f} vs {perc['kd']:.1f}, share {share:.3f}; run `cdviz zoo seeds` for the "
                     f"interval) -> {verdict(share >= 1 / 3 and rec['cd'] >= rec['kd'] - 2)}")
    link = manifest.get("error_link")
    if link:
        targets = set(link.get("target_layers") or [])
        hits = [r for r in link.get("auroc", []) if r["student_layer"] in targets and (r.get("ci_low") or 0) > 0.5]
        best = max((r for r in link.get("auroc", []) if r["student_layer"] in targets),
                   key=lambda r: r.get("auroc") or 0, default=None)
        shown = (f"best in the target layers: {best['measure']} layer {best['student_layer']} AUROC "
                 f"{_num(best.get('auroc'))} ({_num(best.get('ci_low'))} .. {_num(best.get('ci_high'))})"
                 if best else "no AUROC in the target layers")
        goals.append(f"the error link is visible: misalignment in the flagged layers predicts the KD student's errors "
                     f"on teacher-right items with a 95% interval above 0.5 ({shown}) -> {verdict(bool(hits))}")
    if manifest.get("checkpoint_megabytes") is not None:
        own = manifest.get("build_time")
        timed = own or (rebuild or {}).get("build_time")
        build, size = budget_goals(timed, manifest["checkpoint_megabytes"])
        goals += [build.replace(" -> ", ", timed on the clean rebuild -> ") if timed and not own else build, size]
    return goals


def _lower_in_target_layers(runs) -> dict[str, bool]:
    """Whether compodistill's target-layer misalignment is below kd's in every seed, per measure
    (a seed without the figure counts as not lower)."""
    runs = list(runs)
    return {short: bool(runs) and all(r.get(f"target_{short}_kd") is not None and r.get(f"target_{short}_cd") is not None
                                      and r[f"target_{short}_cd"] < r[f"target_{short}_kd"] for r in runs)
            for short in ("vat", "t2i")}


def read_variations(out: Path) -> dict | None:
    path = out / "variations.json"
    return json.loads(path.read_text()) if path.is_file() else None


REBUILD = "rebuild-manifest.json"


def read_rebuild(out: Path) -> dict | None:
    """The manifest of a clean rebuild of these models (``cdviz zoo build --out DIR`` from nothing,
    DIR/manifest.json copied to ``out``/rebuild-manifest.json), if one was kept."""
    path = out / REBUILD
    return json.loads(path.read_text()) if path.is_file() else None


def write_readme(out: Path, manifest: dict) -> None:
    """``out``/README.md from ``manifest`` and what sits beside it (variations, a clean rebuild)."""
    write_text_atomic(out / "README.md", render_readme(manifest, read_variations(out), read_rebuild(out)))
