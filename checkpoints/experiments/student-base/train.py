"""Design 17 (checkpoints/DESIGNS.md): a student base that recognises, then CE + logit KD.

    python checkpoints/experiments/student-base/train.py ZOO OUT [QA_STEPS PRESENCE_STEPS KD_KINDS KD_LR KD_STEPS]
    cdviz eval --model OUT/student-kd/model --probes ZOO/.build/heldout --protocol match --out OUT/kd.parquet

ZOO is a `cdviz zoo build` folder with design 15's teacher (the default; e.g. checkpoints): its teacher and
its student initialisation (the shared vision tower). The student first learns the recognition skill
the teacher has, on single-object questions only, with the teacher's own supervision: colour
questions with grounding and route (QA_STEPS, default 400), then existence questions with hard
negatives and the presence loss (PRESENCE_STEPS, default 800). Then CE + logit KD from the teacher
on the full mix (KD_KINDS, default every kind but the presence questions), no attention loss,
KD_STEPS steps (default the zoo's 1000), from a peak learning rate of KD_LR (default the zoo's, 1e-3).
QA_STEPS = PRESENCE_STEPS = 0 distils the plain initialisation, as student-kd does. Writes OUT/base-qa,
OUT/base-presence and OUT/student-kd.
"""

import sys
from pathlib import Path

from cdviz.train.config import StageConfig, TrainConfig
from cdviz.train.finetune import finetune, train_model
from cdviz.zoo.spec import ZooSpec, teacher_model, trainer_settings

if __name__ == "__main__":
    zoo, out = Path(sys.argv[1]), Path(sys.argv[2])
    qa_steps, presence_steps = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (400, 800)
    kd_kinds = sys.argv[5].split(",") if len(sys.argv) > 5 else ["caption", "choice", "match", "qa"]
    kd_lr = float(sys.argv[6]) if len(sys.argv) > 6 else None
    kd_steps = int(sys.argv[7]) if len(sys.argv) > 7 else None
    spec = ZooSpec()
    common = trainer_settings(spec)
    base = zoo / ".build" / "init-student-shared"
    grounding = dict(trainable="llm+connector", ground=1.0, route=1.0)
    if qa_steps:
        base = train_model(base, out / "base-qa", steps=qa_steps, lr=spec.lr, **grounding,
                           **{**common, "shapes_kinds": ["qa:colour"]})
    if presence_steps:
        base = train_model(base, out / "base-presence", steps=presence_steps, lr=spec.teacher_presence_lr,
                           presence=1.0, **grounding, **{**common, "shapes_kinds": ["presence"], "ground_share": "row"})
    kd = finetune(TrainConfig(student=str(base), teacher=str(teacher_model(zoo / ".build", spec)),
                              out=str(out / "student-kd"), taf=False,
                              stages=[StageConfig("ce", steps=kd_steps or spec.student_steps, lr=kd_lr or spec.lr, kd=1.0,
                                                  trainable="llm+connector")],
                              **{**common, "shapes_kinds": kd_kinds}))
    print(kd)
