"""``cdviz bench record | train | report | targets | gpu | app``: the benchmarks (cdviz.bench), which print
their own tables."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from cdviz.cli.common import parse_layers, user_errors


def bench_record_cmd(
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Tokens per sample."),
    image_tokens: int = typer.Option(576, "--image-tokens", help="Image tokens (a square number)."),
    n_layers: int = typer.Option(4, "--n-layers"),
    hidden: int = typer.Option(2048, "--hidden"),
    heads: int = typer.Option(16, "--heads"),
    kv_heads: int = typer.Option(16, "--kv-heads"),
    intermediate: int = typer.Option(5504, "--intermediate", help="MLP width."),
    layers: Optional[str] = typer.Option(None, help="Layers to record (default: all)."),
    repeats: int = typer.Option(5, help="Interleaved timing rounds (median reported)."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16 (CUDA)."),
) -> None:
    """Plain SDPA forward vs cdviz recording vs eager output_attentions, side by side."""
    from cdviz.bench.record import BenchConfig, print_bench, run_bench

    with user_errors():
        r = run_bench(BenchConfig(device=device, seq_len=seq_len, image_tokens=image_tokens, n_layers=n_layers,
                                  hidden=hidden, n_heads=heads, n_kv_heads=kv_heads, intermediate=intermediate,
                                  layers=parse_layers(layers),
                                  repeats=repeats, dtype=dtype))
    print_bench(r, Console())


def bench_train_cmd(
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Tokens per sample."),
    image_tokens: int = typer.Option(576, "--image-tokens", help="Image tokens (a square number)."),
    answer_tokens: int = typer.Option(64, "--answer-tokens", help="Labelled answer tokens at the end (CE / KD rows)."),
    layers: int = typer.Option(8, "--layers", help="Student decoder layers."),
    hidden: int = typer.Option(512, "--hidden", help="Student hidden size."),
    heads: int = typer.Option(8, "--heads", help="Student attention heads."),
    teacher_layers: int = typer.Option(12, "--teacher-layers"),
    teacher_hidden: int = typer.Option(768, "--teacher-hidden"),
    teacher_heads: int = typer.Option(12, "--teacher-heads"),
    repeats: int = typer.Option(3, help="Interleaved timing rounds (median reported)."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16 (CUDA)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: torch's)."),
) -> None:
    """Training step time and peak memory: CE+KD vs + VAT (cdviz capture) vs + VAT (eager output_attentions)."""
    from cdviz.bench.train import TrainBenchConfig, print_bench, run_bench

    with user_errors():
        r = run_bench(TrainBenchConfig(device=device, seq_len=seq_len, image_tokens=image_tokens,
                                       answer_tokens=answer_tokens, layers=layers, hidden=hidden, heads=heads,
                                       teacher_layers=teacher_layers, teacher_hidden=teacher_hidden,
                                       teacher_heads=teacher_heads, repeats=repeats, dtype=dtype,
                                       threads=threads))
    print_bench(r, Console())


def bench_report_cmd(n_items: int = typer.Option(1000, "--n-items", help="Items in the synthetic store.")) -> None:
    """Time each phase of `cdviz report` on a synthetic store shaped like the demo pair."""
    from cdviz.bench.report import bench_report

    bench_report(n_items, console=Console())


def bench_targets_cmd(ctx: typer.Context) -> None:
    """Detection power of the fine-tune target rule on planted synthetic stores (options: --help of
    python -m cdviz.bench.targets)."""
    from cdviz.bench.targets import main as targets_main

    raise typer.Exit(targets_main(list(ctx.args)))


def bench_gpu_cmd(ctx: typer.Context) -> None:
    """The one-shot GPU check (make gpu-check): real-size models from configs, record and train steps in bf16;
    without a GPU it says so and exits 0 (options: --help of python -m cdviz.bench.gpu_check)."""
    from cdviz.bench.gpu_check import main as gpu_main

    raise typer.Exit(gpu_main(list(ctx.args)))


def bench_app_cmd(n_items: int = typer.Option(1000, "--n-items", help="Items in the synthetic run."),
                  repeats: int = typer.Option(3, help="Timing rounds (median reported)."),
                  page: Optional[list[str]] = typer.Option(None, "--page", help="Time just these pages (repeatable): "
                                                          "overview, layers, item_explorer, error_link, "
                                                          "before_after, attribution.")) -> None:
    """Time to first render of every dashboard page on a run with its saved report."""
    from cdviz.bench.app import bench_app

    with user_errors():
        bench_app(n_items, repeats=repeats, console=Console(), pages=tuple(page) if page else None)
