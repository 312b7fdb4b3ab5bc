"""Design 12 (checkpoints/DESIGNS.md): the shipped teacher, then steps on the yes/no forms alone.

    python checkpoints/experiments/yes-no-only/train.py 800 5e-4 OUT match,qa
    cdviz eval --model OUT/model --probes HELDOUT --protocol match      # HELDOUT: checkpoints/README.md

Trains checkpoints/teacher further on the shapes-world samples of the given kinds (match queries
and short questions: no captions, no two-choice items) with the zoo's grounding and route losses
and trainer settings, and writes OUT/model.
"""

import sys
from pathlib import Path

from cdviz.train.finetune import train_model
from cdviz.zoo.spec import ZooSpec, trainer_settings

TEACHER = Path(__file__).resolve().parents[2] / "teacher"

if __name__ == "__main__":
    steps, lr, out, kinds = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
    settings = {**trainer_settings(ZooSpec()), "checkpoint_every": 200, "keep_checkpoints": 10, "shapes_kinds": kinds}
    print(train_model(TEACHER, out, steps=steps, lr=lr, trainable="llm+connector", ground=1.0, route=1.0, **settings))
