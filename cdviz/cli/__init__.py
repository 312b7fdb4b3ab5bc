"""The ``cdviz`` command: a thin table mapping commands to library functions, one module per area.

    cdviz probes make shapes --n 2000 --seed 0 --out probes/shapes
    cdviz probes import sugarcrepe ~/data/sugarcrepe --images-dir ~/data/coco/val2017 --out probes/sc
    cdviz probes show probes/shapes
    cdviz eval --model checkpoints/teacher --probes probes/shapes --out runs/eval/teacher.parquet

    probes.py    probes make | import | show
    record.py    eval, record
    report.py    report, verify, compare
    finetune.py  finetune
    zoo.py       zoo build | binding | evaluate | seeds | variations
    bench.py     bench record | train | report | targets | gpu | app
    common.py    the console, progress bars, user errors, shared option parsing
"""

from __future__ import annotations

import typer

from cdviz.cli import bench, finetune, probes, record, report, zoo

app = typer.Typer(help="cdviz: find and fix where a distilled student looks differently from its teacher.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

probes_app = typer.Typer(help="Make, import and inspect probe sets.", no_args_is_help=True)
app.add_typer(probes_app, name="probes")
probes_app.command("make")(probes.probes_make)
probes_app.command("import")(probes.probes_import)
probes_app.command("show")(probes.probes_show)

app.command("eval")(record.eval_cmd)
app.command("record")(record.record_cmd)
app.command("report")(report.report_cmd)
app.command("verify")(report.verify_cmd)
app.command("compare")(report.compare_cmd)
app.command("finetune")(finetune.finetune_cmd)

zoo_app = typer.Typer(help="The bundled demo models.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
zoo_app.command("build")(zoo.zoo_build_cmd)
zoo_app.command("binding")(zoo.zoo_binding_cmd)
zoo_app.command("evaluate")(zoo.zoo_evaluate_cmd)
zoo_app.command("seeds")(zoo.zoo_seeds_cmd)
zoo_app.command("variations")(zoo.zoo_variations_cmd)

bench_app = typer.Typer(help="Benchmarks that print ratios measured side by side in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
bench_app.command("record")(bench.bench_record_cmd)
bench_app.command("train")(bench.bench_train_cmd)
bench_app.command("report")(bench.bench_report_cmd)
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}  # passed on to the benchmark's own parser
bench_app.command("targets", context_settings=EXTRA_ARGS)(bench.bench_targets_cmd)
bench_app.command("gpu", context_settings=EXTRA_ARGS)(bench.bench_gpu_cmd)
bench_app.command("app")(bench.bench_app_cmd)
