"""Design 19 (checkpoints/DESIGNS.md): a KD student that keeps recognition, by its start or its size.

    python checkpoints/experiments/student-init/train.py ZOO OUT MODE [KD_STEPS]

ZOO is a `cdviz zoo build` folder with design 15's teacher (e.g. checkpoints, whose .build holds
it). MODE picks the student, then CE + logit KD from the teacher on the full mix for KD_STEPS
(default the zoo's 1000) steps, as student-kd:
  teacher-io   the zoo's student (3 layers, 3 heads, MLP 192) starting from the teacher's token
               embeddings, final norm, LM head and connector (the parts whose shapes match, as
               DistilBERT starts from its teacher), its own decoder layers random;
  wider        a student of 4 layers, 4 heads and MLP 384 (the teacher: 6, 6, 384), random;
  both         the wider student with the teacher's embeddings, norm, head and connector.
Every student shares the teacher's frozen vision tower. Writes OUT/MODE/student-kd and
OUT/MODE/result.json: held-out recognition and perception mean (match, pairwise) beside the teacher's.
"""

import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from cdviz.models.tiny import build_tiny
from cdviz.train.config import StageConfig, TrainConfig
from cdviz.train.finetune import finetune
from cdviz.zoo.build import share_vision_tower
from cdviz.zoo.measure import evaluate_main, headline_view
from cdviz.zoo.spec import ZooSpec, heldout_probes, teacher_model, trainer_settings

TEACHER_IO = ("language_model.model.embed_tokens.", "language_model.model.norm.", "language_model.lm_head.",
              "multi_modal_projector.")


def student_init(zoo: Path, out: Path, mode: str, spec: ZooSpec, teacher: Path) -> Path:
    if mode == "teacher-io":
        raw = zoo / ".build" / "init-student"
    else:
        raw = out / "init-wider"
        if not (raw / "model.safetensors").is_file():
            build_tiny("llava", raw, n_layers=4, n_heads=4, n_kv_heads=4, intermediate=384, seed=spec.seed + 1,
                       image_size=spec.image_size, patch_size=spec.patch_size, vision_hidden=spec.vision_hidden,
                       vision_layers=spec.vision_layers, hidden=spec.hidden)
    shared = share_vision_tower(teacher, raw, out / "init-shared")
    if mode in ("teacher-io", "both") and not (out / "init-teacher-io" / "model.safetensors").is_file():
        shutil.copytree(shared, out / "init-teacher-io", dirs_exist_ok=True)
        weights = load_file(shared / "model.safetensors")
        donor = load_file(teacher / "model.safetensors")
        taken = {k: v for k, v in donor.items() if k.startswith(TEACHER_IO)}
        assert taken and all(weights[k].shape == v.shape for k, v in taken.items()), "shapes differ"
        weights.update(taken)
        save_file(weights, str(out / "init-teacher-io" / "model.safetensors"), metadata={"format": "pt"})
    return out / "init-teacher-io" if mode in ("teacher-io", "both") else shared


if __name__ == "__main__":
    zoo, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else None
    if mode not in ("teacher-io", "wider", "both"):
        sys.exit(f"MODE {mode!r}: choose teacher-io, wider or both")
    spec = ZooSpec()
    out = out / mode
    teacher = teacher_model(zoo / ".build", spec)
    start = student_init(zoo, out, mode, spec, teacher)
    kd = finetune(TrainConfig(student=str(start), teacher=str(teacher), out=str(out / "student-kd"), taf=False,
                              stages=[StageConfig("ce", steps=steps or spec.student_steps, lr=spec.lr, kd=1.0,
                                                  trainable="llm+connector")], **trainer_settings(spec)))
    heldout = heldout_probes(zoo / ".build" / "heldout", spec)
    result = {}
    for name, model in (("student-kd", kd), ("teacher", teacher)):
        view = headline_view(evaluate_main(model, heldout, spec))
        result[name] = {"recognition": view["by_skill"].get("recognition"), "perception": view["perception_mean"],
                        "by_category": view["by_category"]}
    (out / "result.json").write_text(json.dumps({"mode": mode, "kd_steps": steps or spec.student_steps, **result},
                                                indent=2))
    print(json.dumps({k: (v["recognition"], v["perception"]) for k, v in result.items() if isinstance(v, dict)}))
