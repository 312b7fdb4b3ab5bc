"""Fine-tuning: CompoDistill's stages (DPT, DFT, SFT) and plain CE training, on the layers the
misalignment report flags.

    config.py      TrainConfig / StageConfig, recipe files, finetune_cli_args_to_config (the CLI's mapping)
    data.py        shapes-world instructions or LLaVA JSONL -> encoded batches, labels on answers only
    losses.py      CE, logit KD (shifted, chunked), VAT (wraps cdviz.vat), text-to-image alignment
    layer_map.py   which student layers VAT aligns to which teacher layers (report or paper's band)
    taf.py         teacher adapter fetch: the teacher's connector + a trainable linear; exact merge
    step.py        one step's forward: teacher targets, DistillForward (what accelerate wraps)
    checkpoint.py  resumable checkpoints (safetensors + JSON, weights-only optimizer state)
    recipe.py      Recipe: one stage's setup / train / save_checkpoint / cleanup
    finetune.py    finetune(config) -> model dir, train_model(...), close_loop (evaluate / record)

    cdviz finetune --teacher T --student S --data shapes --stages dpt,dft,sft --out OUT
    python -m cdviz.train RECIPE.toml [--resume]      (accelerate launch -m cdviz.train ... for several GPUs)
"""

from cdviz.train.config import ConfigError, StageConfig, TrainConfig, finetune_cli_args_to_config, load_recipe
from cdviz.train.finetune import close_loop, finetune, train_model
from cdviz.layer_map import LayerMap, default_layer_map, layer_map_from_report, middle_band

__all__ = [
    "ConfigError", "LayerMap", "StageConfig", "TrainConfig", "close_loop", "default_layer_map", "finetune",
    "finetune_cli_args_to_config", "layer_map_from_report", "load_recipe", "middle_band", "train_model",
]
