"""Run a recipe: ``python -m cdviz.train RECIPE.toml [--resume] [--out DIR]``.

Multi-GPU: ``accelerate launch [--config_file ACC.yaml] -m cdviz.train RECIPE.toml`` (every process
runs this; accelerate's config picks DDP, FSDP or DeepSpeed).
"""

from __future__ import annotations

import argparse

from cdviz.train import finetune, finetune_cli_args_to_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cdviz.train", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="TOML / YAML / JSON recipe")
    parser.add_argument("--resume", action="store_true", help="continue the run in the recipe's out folder")
    parser.add_argument("--out", default=None, help="override the recipe's output folder")
    args = parser.parse_args(argv)
    final = finetune(finetune_cli_args_to_config(recipe=args.recipe, out=args.out, resume=args.resume))
    print(final)


if __name__ == "__main__":
    main()
