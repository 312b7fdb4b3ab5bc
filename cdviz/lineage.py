"""Which layers a checkpoint was fine-tuned on, from the stage markers `cdviz finetune` writes.

    finetune_record(DIR) -> {student_layers, teacher_groups, stages} | None
    stage_chain(DIR)     -> the stage markers of DIR and of the stages it was trained from, newest first

Each stage of `cdviz finetune` writes STAGE_MARKER beside its weights (cdviz/train/recipe.py); a
checkpoint copied out of its build folder (the bundled ones) carries the whole chain in LINEAGE.
The before/after comparison reads these to name the layers that were aligned.
"""

from __future__ import annotations

import json
from pathlib import Path

STAGE_MARKER = "cdviz_stage.json"  # what cdviz finetune writes beside each stage's weights (train/recipe.MARKER)
MAX_STAGES = 16  # stages followed back along a checkpoint's sources
LINEAGE = "cdviz_lineage.json"  # every stage's marker, newest first, for a checkpoint copied away from its build


def finetune_record(model_dir: str | Path) -> dict | None:
    """The layers a checkpoint was fine-tuned on with attention alignment, from its stage markers.

    Follows each stage's ``source`` back (a path as written, or relative to an ancestor of
    ``model_dir``) and keeps the stages that trained VAT or t2i alignment with a layer map. A
    checkpoint copied out of its build folder (the bundled ones) carries the chain in LINEAGE.
    Returns {student_layers, teacher_groups, stages} (the latest such stage's map, every such
    stage named) or None when no stage records one.
    """
    found = [(stage.get("stage", ""), stage["layer_map"]) for stage in stage_chain(model_dir)
             if stage.get("layer_map") and ((stage.get("weights") or {}).get("vat", 0) > 0
                                            or (stage.get("weights") or {}).get("t2i", 0) > 0)]
    if not found:
        return None
    latest = found[0][1]
    return {"student_layers": [int(s) for s in latest.get("student_layers", [])],
            "teacher_groups": [[int(t) for t in g] for g in latest.get("teacher_groups", [])],
            "stages": [name for name, _ in reversed(found)]}


def stage_chain(model_dir: str | Path) -> list[dict]:
    """The stage markers of ``model_dir`` and of the stages it was trained from, newest first."""
    lineage = Path(model_dir) / LINEAGE
    if lineage.is_file():
        try:
            chain = json.loads(lineage.read_text())
            return [s for s in chain if isinstance(s, dict)][:MAX_STAGES] if isinstance(chain, list) else []
        except (OSError, ValueError):
            return []
    here, chain, seen = Path(model_dir), [], set()
    while here is not None and len(seen) < MAX_STAGES and (here / STAGE_MARKER).is_file():
        seen.add(here.resolve())
        try:
            stage = json.loads((here / STAGE_MARKER).read_text())
        except (OSError, ValueError):
            break
        chain.append(stage)
        source = str(stage.get("source") or "")
        candidates = [Path(source)] + [a / source for a in Path(model_dir).resolve().parents] if source else []
        here = next((c for c in candidates if (c / STAGE_MARKER).is_file() and c.resolve() not in seen), None)
    return chain
