"""Design 16 (checkpoints/DESIGNS.md): the presence phase on the full mix plus the presence questions.

    python checkpoints/experiments/presence-mix/train.py ZOO/.build/teacher/model OUT 1000
    cdviz eval --model OUT/model --probes ZOO/.build/heldout --protocol match --out OUT/eval.parquet
    cdviz zoo binding --model OUT/model

Trains a zoo's full-mix teacher (design 10's phases, e.g. a `cdviz zoo build` folder) further on
captions, two-choice items, match queries, short questions and the presence questions, with
grounding as a share of the whole row, the route loss and the presence loss (every "no" answer),
from a peak learning rate of 5e-4, with the zoo's trainer settings; writes OUT/model.
"""

import sys

from cdviz.train.finetune import train_model
from cdviz.zoo.spec import ZooSpec, trainer_settings

if __name__ == "__main__":
    init, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = {**trainer_settings(ZooSpec()), "shapes_kinds": ["caption", "choice", "match", "qa", "presence"],
                "ground_share": "row"}
    print(train_model(init, out, steps=steps, lr=5e-4, trainable="llm+connector", ground=1.0, route=1.0,
                      presence=1.0, **settings))
