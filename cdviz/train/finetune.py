"""Entry points of the trainer: chain the stages of a TrainConfig, train one model with CE, and
close the loop (evaluate / re-record the result).

    finetune(config, on_step=None) -> OUT/model
    train_model("init/", "out/", steps=200, trainable="all") -> out/model     (e.g. the demo teacher)
    cdviz finetune ...   ->  finetune(finetune_cli_args_to_config(**flags))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelerate import PartialState

from cdviz.io import write_json_atomic
from cdviz.train.config import ConfigError, StageConfig, TrainConfig
from cdviz.train.recipe import MARKER, OnStep, Recipe, stage_model_dir, use_cuda


def _check_fresh(config: TrainConfig) -> None:
    """Without --resume, refuse to mix a new run into an OUT that holds another one's stages."""
    out = Path(config.out)
    used = [p for p in [out / "model", *(out / s.name for s in config.stages)] if p.exists()]
    if used and not config.resume:
        raise ConfigError(f"{out} already holds training output ({', '.join(p.name for p in used)}); pass --resume "
                          "to continue it or choose a new --out")


def check_layer_sources(config: TrainConfig) -> None:
    """A --from-report run that cannot give VAT / t2i layers is refused before any stage trains."""
    if config.from_report and config.student_layers is None and any(s.vat or s.t2i for s in config.stages):
        from cdviz.layer_map import layer_map_from_report

        layer_map_from_report(config.from_report)  # LayerMapError naming the report and the fix


def finetune(config: TrainConfig, on_step: OnStep | None = None) -> Path:
    """Run every stage of ``config`` in order and return the final model directory.

    A stage whose model directory is complete is skipped; with ``config.resume`` an unfinished
    stage continues from its latest checkpoint. ``on_step(row)`` gets each step's metrics row.
    """
    _check_fresh(config)
    check_layer_sources(config)
    out = Path(config.out)
    state = PartialState(cpu=not use_cuda(config))  # the same device choice as each stage's Accelerator
    with state.main_process_first():  # hub ids -> HF cache directories (the main process fetches)
        local, origins = resolve_models(config)
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "recipe.json", {**config.to_dict(), "models": origins})
    for i, stage in enumerate(config.stages):
        if (stage_model_dir(config, i) / MARKER).is_file():
            continue
        recipe = Recipe(local, i, on_step)
        try:
            recipe.setup()
            recipe.train()
        finally:
            recipe.cleanup()
    final = stage_model_dir(config, len(config.stages) - 1)
    if state.is_main_process:
        close_loop(config, final)
    state.wait_for_everyone()
    return final


def resolve_models(config: TrainConfig) -> tuple[TrainConfig, dict[str, dict]]:
    """``config`` with its student / teacher (directories or hub ids org/name[@revision]) as local
    directories, and what each is (cdviz.models.hub.ModelRef: id, commit, weight-index sha256)."""
    import dataclasses

    from cdviz.models.hub import resolve_model

    refs = {name: resolve_model(getattr(config, name), trust_remote_code=config.trust_remote_code)
            for name in ("student", "teacher") if getattr(config, name) is not None}
    hub = {name: ref.path for name, ref in refs.items() if not Path(ref.spec).expanduser().is_dir()}
    local = dataclasses.replace(config, **hub)  # local directories stay as given (resume fingerprints)
    return local, {name: ref.to_dict() for name, ref in refs.items()}


def close_loop(config: TrainConfig, model_dir: Path) -> dict[str, Path]:
    """Evaluate the trained student and / or record it against the teacher, as the config asks."""
    written: dict[str, Path] = {}
    out = Path(config.out)
    if config.eval_probes:
        from cdviz.evaluate import evaluate, summarize
        from cdviz.models import load_model
        from cdviz.probes.probeset import load_probeset

        frame, _ = evaluate(load_model(model_dir, adapter=config.adapter, grid=config.grid), load_probeset(config.eval_probes), protocol=_protocol(config))
        (out / "eval").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out / "eval" / "outcomes.parquet", index=False)
        write_json_atomic(out / "eval" / "summary.json", summarize(frame))
        written["eval"] = out / "eval"
    if config.record_probes:
        if config.teacher is None:
            raise ConfigError("record_probes needs a teacher to record against; pass --teacher")
        from cdviz.record import RecordOptions, record

        options = RecordOptions(layers=tuple(config.record_layers) if config.record_layers else None,
                                protocol=_protocol(config))
        written["record"] = record(config.teacher, model_dir, config.record_probes, out / "record", options,
                                  adapter=config.adapter, grid=config.grid)
    return written


def _protocol(config: TrainConfig) -> str:
    """The protocol the closing eval / record use: the config's, else the --from-report run's (so a
    re-recording compares like with like), else letters."""
    if config.eval_protocol:
        return config.eval_protocol
    if config.from_report:
        import json

        manifest = Path(config.from_report) / "manifest.json"
        if manifest.is_file():
            return json.loads(manifest.read_text()).get("options", {}).get("protocol", "letters")
    return "letters"


def train_model(model_dir: str | Path, out: str | Path, *, data: str = "shapes", steps: int | None = None,
                epochs: float = 1.0, lr: float = 2e-4, trainable: str = "all", warmup_ratio: float = 0.03,
                ground: float = 0.0, route: float = 0.0, presence: float = 0.0, on_step: OnStep | None = None,
                **settings: Any) -> Path:
    """Plain next-token training of one model (no teacher): the "ce" stage.

    For the demo teacher and the no-teacher student baseline: ``model_dir`` may hold a random-init
    checkpoint (cdviz.models.tiny.build_tiny); ``trainable="all"`` trains every parameter.
    ``ground``, ``route`` and ``presence`` weight those losses (cdviz/train/config.py). ``settings`` are further
    TrainConfig fields (batch_size, seed, checkpoint_every, resume, ...).

    Returns:
        OUT/model, an HF directory with the model and its processor.
    """
    stage = StageConfig("ce", steps=steps, epochs=epochs, lr=lr, trainable=trainable, warmup_ratio=warmup_ratio,
                        ground=ground, route=route, presence=presence)
    config = TrainConfig(student=str(model_dir), out=str(out), data=data, stages=[stage], **settings)
    return finetune(config, on_step)
