"""Design 20 (checkpoints/DESIGNS.md): how much the teacher's presence phase moves from run to run.

    python checkpoints/experiments/presence-variance/train.py ZOO OUT [SEED LR STEPS]

ZOO is a `cdviz zoo build` folder; its full-mix teacher (ZOO/.build/teacher/model) gets the presence
phase of `cdviz zoo build` again (existence questions with hard negatives, presence loss, grounding
as a share of the whole row, route loss), with data order SEED (default the zoo's 0), peak
learning rate LR (default 5e-4) and STEPS steps (default 1000). Writes OUT/model and OUT/result.json:
held-out recognition and perception mean (match, pairwise) of the full-mix teacher and of the result.
"""

import json
import sys
from pathlib import Path

from cdviz.train.finetune import train_model
from cdviz.zoo.measure import evaluate_main, headline_view
from cdviz.zoo.spec import ZooSpec, heldout_probes, trainer_settings

if __name__ == "__main__":
    zoo, out = Path(sys.argv[1]), Path(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    lr = float(sys.argv[4]) if len(sys.argv) > 4 else 5e-4
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    spec = ZooSpec()
    start = zoo / ".build" / "teacher" / "model"
    model = train_model(start, out, steps=steps, lr=lr, presence=1.0, trainable="llm+connector", ground=1.0,
                        route=1.0, ground_layers=None,
                        **{**trainer_settings(spec, seed), "shapes_kinds": ["presence"], "ground_share": "row"})
    heldout = heldout_probes(zoo / ".build" / "heldout", spec)
    result = {"seed": seed, "lr": lr, "steps": steps}
    for name, m in (("full-mix teacher", start), ("after the presence phase", model)):
        view = headline_view(evaluate_main(m, heldout, spec))
        result[name] = {"recognition": view["by_skill"].get("recognition"), "perception": view["perception_mean"],
                        "by_category": view["by_category"]}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: (v["recognition"], v["perception"]) for k, v in result.items() if isinstance(v, dict)}))
