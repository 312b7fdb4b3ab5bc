"""``cdviz finetune``: CompoDistill stages on a student (cdviz.train)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cdviz.cli.common import console, user_errors


def finetune_cmd(
    student: Optional[str] = typer.Option(None, help="Student: model directory or hub id org/name[@revision]."),
    teacher: Optional[str] = typer.Option(None, help="Teacher: model directory or hub id org/name[@revision]."),
    out: Optional[Path] = typer.Option(None, help="Output directory."),
    recipe: Optional[Path] = typer.Option(None, help="Recipe file (TOML / YAML / JSON); flags override it."),
    data: Optional[str] = typer.Option(None, help="'shapes' (default) or a JSONL of LLaVA conversations."),
    stages: Optional[str] = typer.Option(None, help="Comma-separated stages from dpt, dft, sft, ce (see above)."),
    from_report: Optional[Path] = typer.Option(None, "--from-report", help="Run whose report picks the VAT layers."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps per stage (default: one epoch of the data)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Micro-batch per process (default 4)."),
    paper_compat: Optional[bool] = typer.Option(None, "--paper-compat/--no-paper-compat",
                                                help="Reproduce the reference code's KD mask and windows."),
    eval_probes: Optional[Path] = typer.Option(None, "--eval-probes", help="Evaluate the result on this probe set."),
    rerecord: Optional[Path] = typer.Option(None, "--rerecord", help="Re-record teacher + result on this probe set."),
    protocol: Optional[str] = typer.Option(None, help="Protocol of --eval-probes / --rerecord (letters, match; "
                                           "default: the --from-report run's, else letters)."),
    taf: Optional[bool] = typer.Option(None, "--taf/--no-taf", help="See images through the teacher's connector "
                                       "(default on; LLaVA-style connectors only: --no-taf for the others)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="auto (default): each architecture's own cdviz "
                                          "adapter; generic: the fallback for models without one (teacher and "
                                          "student both)."),
    grid: Optional[str] = typer.Option(None, "--grid", help="With --adapter generic: every image's patch grid RxC."),
) -> None:
    """Fine-tune a student with CompoDistill (KD + VAT + TAF), stage after stage.

    Stages (--stages; run in the order given, each from the previous one's model):

      dpt  TAF linear only; CE + KD            distilled pre-training
      dft  LoRA + TAF linear; CE + KD + VAT    distilled fine-tuning
      sft  fresh LoRA on the merged model + TAF linear; CE only (no teacher)
      ce   every weight; CE only               plain training (no teacher)

    Default: dpt,dft,sft. LoRA covers every linear of the language model;
    only ce trains the vision tower. TAF: the student sees images through a
    frozen copy of the teacher's connector plus a trainable linear. VAT
    aligns image-to-image attention in the layers the report of
    --from-report RUN recommends (default: the paper's middle band).

    Per-stage settings (lr, LoRA rank, loss weights, grad_accum, ...) live in
    a --recipe (cdviz/train/recipes/*.toml); flags override it. Output:
    OUT/model, a plain HF model directory (LoRA merged, TAF folded in where
    exact), OUT/<stage>/metrics.jsonl and resumable checkpoints. Runs on a GPU
    when one is visible (bf16 autocast), else on the CPU. Several GPUs:
    accelerate launch --multi_gpu --num_processes N -m cdviz.train RECIPE.toml
    """
    from cdviz.train.config import finetune_cli_args_to_config
    from cdviz.train.finetune import finetune

    with user_errors():
        cfg = finetune_cli_args_to_config(
            recipe=recipe, teacher=_str(teacher), student=_str(student), data=data, stages=stages,
            from_report=_str(from_report), out=_str(out), resume=resume, steps=steps, batch_size=batch_size,
            paper_compat=paper_compat, eval_probes=_str(eval_probes), record_probes=_str(rerecord),
            eval_protocol=protocol, taf=taf, adapter=adapter, grid=grid)
        final = finetune(cfg)
    console.print(f"model: {final}")


def _str(p: Optional[Path]) -> Optional[str]:
    return None if p is None else str(p)
