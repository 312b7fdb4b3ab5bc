"""``cdviz bench record | train | report | targets | gpu | app``: the benchmarks (cdviz.bench), which print
their own tables."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from cdviz.cli.common import parse_layers, user_errors
from cdviz.errors import OptionError


PRESET_HELP = ("A real-scale model from its published config (random weights, nothing downloaded): "
               "llava-1.5-7b, llava-onevision-qwen2-0.5b, llava-onevision-qwen2-7b, qwen2.5-vl-3b, qwen2.5-vl-7b, "
               "qwen3-vl-2b, qwen3-vl-8b, internvl3-1b, internvl3-8b, gemma-3-4b.")


def bench_record_cmd(
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Tokens per sample."),
    image_tokens: int = typer.Option(576, "--image-tokens", help="Image tokens (a square number)."),
    preset: Optional[str] = typer.Option(None, "--preset", help=PRESET_HELP + " Times its text decoder (the "
                                         "vision tower is not built); --hidden, --heads, ... are then unused."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Decoder layers: the first N of --preset "
                                         "(default: all of them), else the bench model's (default 4)."),
    memory_table: bool = typer.Option(False, "--memory-table", help="With --preset: print eager output_attentions "
                                      "bytes against cdviz's recording bytes for T = 1k, 2k, 4k, 8k tokens (half of "
                                      "them image tokens), computed from the config; nothing is built or run."),
    n_layers: Optional[int] = typer.Option(None, "--n-layers", hidden=True, help="Old name of --layers."),
    hidden: int = typer.Option(2048, "--hidden"),
    heads: int = typer.Option(16, "--heads"),
    kv_heads: int = typer.Option(16, "--kv-heads"),
    intermediate: int = typer.Option(5504, "--intermediate", help="MLP width."),
    record_layers: Optional[str] = typer.Option(None, "--record-layers", help="Layers to record, e.g. '0,2' or "
                                                "'2-5' (default: all)."),
    repeats: int = typer.Option(5, help="Interleaved timing rounds (median reported)."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16 (CUDA); with --memory-table the eager maps' "
                              "dtype (default there: bfloat16)."),
) -> None:
    """Plain SDPA forward vs cdviz recording vs eager output_attentions, side by side."""
    from cdviz.bench.record import BenchConfig, print_bench, run_bench, run_preset_bench

    with user_errors():
        if memory_table:
            from cdviz.bench.presets import get_preset, memory_table as table, print_memory_table

            if preset is None:
                raise OptionError("--memory-table needs --preset NAME (the config it is computed from)")
            eager_dtype = "bfloat16" if dtype == "float32" else dtype
            rows = table(preset, layers=layers, dtype=eager_dtype)
            text = get_preset(preset, layers)["text"]
            print_memory_table(preset, rows, Console(), layers=text["num_hidden_layers"],
                               heads=text["num_attention_heads"], dtype=eager_dtype)
            return
        if preset is not None:
            r = run_preset_bench(preset, layers=layers or n_layers, device=device, seq_len=seq_len,
                                 image_tokens=image_tokens, record_layers=parse_layers(record_layers),
                                 repeats=repeats, dtype=dtype)
        else:
            r = run_bench(BenchConfig(device=device, seq_len=seq_len, image_tokens=image_tokens,
                                      n_layers=layers or n_layers or 4, hidden=hidden, n_heads=heads,
                                      n_kv_heads=kv_heads, intermediate=intermediate,
                                      layers=parse_layers(record_layers), repeats=repeats, dtype=dtype))
    print_bench(r, Console())


def bench_train_cmd(
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Tokens per sample."),
    image_tokens: int = typer.Option(576, "--image-tokens", help="Image tokens (a square number)."),
    answer_tokens: int = typer.Option(64, "--answer-tokens", help="Labelled answer tokens at the end (CE / KD rows)."),
    preset: Optional[str] = typer.Option(None, "--preset", help=PRESET_HELP + " The student's decoder shapes and "
                                         "vocabulary come from it (in the bench's LLaVA shell: Llama decoder layers, "
                                         "a small vision tower); --hidden, --heads are then unused."),
    teacher_preset: Optional[str] = typer.Option(None, "--teacher-preset", help="The teacher's, likewise."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Student decoder layers: the first N of --preset "
                                         "(default: all), else the bench student's (default 8)."),
    hidden: int = typer.Option(512, "--hidden", help="Student hidden size."),
    heads: int = typer.Option(8, "--heads", help="Student attention heads."),
    teacher_layers: Optional[int] = typer.Option(None, "--teacher-layers", help="Teacher decoder layers (default: "
                                                 "all of --teacher-preset, else 12)."),
    teacher_hidden: int = typer.Option(768, "--teacher-hidden"),
    teacher_heads: int = typer.Option(12, "--teacher-heads"),
    repeats: int = typer.Option(3, help="Interleaved timing rounds (median reported)."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16 (CUDA)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: torch's)."),
) -> None:
    """Training step time and peak memory: CE+KD vs + VAT (cdviz capture) vs + VAT (eager output_attentions)."""
    from cdviz.bench.train import TrainBenchConfig, print_bench, run_bench, with_presets

    with user_errors():
        cfg = TrainBenchConfig(device=device, seq_len=seq_len, image_tokens=image_tokens,
                               answer_tokens=answer_tokens, layers=layers or 8, hidden=hidden, heads=heads,
                               teacher_layers=teacher_layers or 12, teacher_hidden=teacher_hidden,
                               teacher_heads=teacher_heads, repeats=repeats, dtype=dtype, threads=threads)
        cfg = with_presets(cfg, student=preset, teacher=teacher_preset, layers=layers, teacher_layers=teacher_layers)
        r = run_bench(cfg)
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
