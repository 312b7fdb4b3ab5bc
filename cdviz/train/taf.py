"""TAF (teacher adapter fetch): the student sees images through the teacher's connector.

    student vision features [.., Dv]
      -> teacher connector, frozen copy   (linear_1 -> act -> linear_2)   [.., Ht]
      -> TAF linear, trainable            (teacher text hidden -> student) [.., Hs]

This needs the same vision feature size on both sides (the paper's pairs share a vision tower); anything
else raises TAFError with the fix. Implemented for LLaVA-style connectors
(``model.model.multi_modal_projector`` with ``linear_1`` / ``linear_2``). The connector and its
loading live in cdviz.models.taf (a saved student is loaded without training code); this module
joins a pair, installs a fresh connector for a stage and saves it.

Saving (``save_taf``), chosen so that a finished student is a plain LLaVA wherever that is exact:
  - Ht <= Hs: the TAF linear folds into linear_2 (linear_2' = W_taf W_2, bias W_taf b_2 + b_taf;
    when Ht < Hs, linear_1 gets Hs - Ht zero rows and linear_2' zero columns, which contribute
    nothing whatever the activation), so ``model.safetensors`` holds a standard
    LlavaMultiModalProjector and ``LlavaForConditionalGeneration.from_pretrained`` reproduces the
    TAF model exactly. ``taf.safetensors`` is written too, so a later stage can split it again.
  - Ht > Hs (the paper's 4B -> 1.8B case): no standard projector of width Hs can express a
    width-Ht hidden layer. The projector is left out of ``model.safetensors``, saved in
    ``taf.safetensors`` and flagged in config.json ("cdviz_taf"); ``cdviz.models.load_model``
    re-attaches it (``cdviz.models.taf.attach_saved_taf``). Plain ``from_pretrained`` would warn that the
    projector weights are missing and initialise them randomly, as the saved README.md says.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from cdviz.models.taf import CONFIG_KEY, TAF_FILE, TAFConnector, TAFError, connector, set_connector


def check_taf_pair(teacher, student) -> list[str]:
    """Raise TAFError when the vision feature sizes differ; return warnings worth showing."""
    t_in = connector(teacher).linear_1.in_features
    s_conn = connector(student)
    s_in = (s_conn.teacher if isinstance(s_conn, TAFConnector) else s_conn).linear_1.in_features
    if t_in != s_in:
        raise TAFError(
            f"TAF needs the same vision features on both sides: the teacher's connector takes {t_in}-d features "
            f"but the student's vision tower gives {s_in}-d. Use a student built on the teacher's vision tower "
            "(same model and feature layer), or set taf = false to keep the student's own connector.")
    warnings = []
    t_v, s_v = teacher.config.vision_config.to_dict(), student.config.vision_config.to_dict()
    differing = sorted(k for k in set(t_v) | set(s_v)
                       if k not in ("_name_or_path", "dtype") and t_v.get(k) != s_v.get(k))
    if differing:
        warnings.append(f"teacher and student vision configs differ in {differing}; TAF assumes the student "
                        "sees the image through the same vision tower as the teacher")
    return warnings


def taf_state(module: TAFConnector) -> dict[str, torch.Tensor]:
    """The TAF connector's tensors (teacher copy included), contiguous on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


@torch.no_grad()
def merged_projector(student, module: TAFConnector) -> nn.Module | None:
    """A standard projector computing exactly what ``module`` computes, or None if Ht > Hs."""
    t1, t2, taf = module.teacher.linear_1, module.teacher.linear_2, module.taf
    ht, hs = t1.out_features, taf.out_features
    if ht > hs or {name for name, _ in module.teacher.named_children()} != {"linear_1", "act", "linear_2"}:
        return None  # too wide, or more than LLaVA's MLP (InternVL's layer norm, Mistral 3's patch merger)
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    proj = LlavaMultiModalProjector(student.config).to(device=taf.weight.device, dtype=taf.weight.dtype)
    if type(proj.act) is not type(module.teacher.act) or (proj.linear_1.bias is None) != (t1.bias is None):
        return None  # the student's config would rebuild another activation / bias layout
    w1 = torch.zeros_like(proj.linear_1.weight)  # [Hs, Dv]; rows >= Ht stay zero
    w1[:ht] = t1.weight
    proj.linear_1.weight.copy_(w1)
    w2 = torch.zeros_like(proj.linear_2.weight)  # [Hs, Hs]; columns >= Ht stay zero
    w2[:, :ht] = taf.weight @ t2.weight  # [Hs, Ht] @ [Ht, Ht]
    proj.linear_2.weight.copy_(w2)
    if t1.bias is not None:
        b1 = torch.zeros_like(proj.linear_1.bias)
        b1[:ht] = t1.bias
        proj.linear_1.bias.copy_(b1)
        proj.linear_2.bias.copy_(taf.bias + taf.weight @ t2.bias)  # [Hs]
    return proj


def save_taf(student, module: TAFConnector, out_dir: str | Path) -> bool:
    """Fold the TAF connector into the student (if exact) and write taf.safetensors.

    Call before ``save_pretrained``. Returns True when the student now holds a standard merged
    projector; False when it keeps the TAFConnector and the caller must leave the projector out of
    model.safetensors (``projector_keys``) and mark config.json (``mark_unmerged``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ht, hs = module.taf.in_features, module.taf.out_features
    merged = merged_projector(student, module)
    meta = {"teacher_hidden": str(ht), "student_hidden": str(hs), "merged": str(merged is not None).lower()}
    save_file(taf_state(module), str(out_dir / TAF_FILE), metadata=meta)
    if merged is not None:
        set_connector(student, merged)
        return True
    return False


def projector_keys(model: nn.Module) -> list[str]:
    """state_dict keys of the connector, to leave out of an unmerged save."""
    return [k for k in model.state_dict() if ".multi_modal_projector." in f".{k}"]


def mark_unmerged(out_dir: str | Path, teacher_hidden: int, student_hidden: int) -> None:
    """Flag an unmerged TAF save in config.json and explain it in README.md."""
    out_dir = Path(out_dir)
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[CONFIG_KEY] = {"file": TAF_FILE, "merged": False, "teacher_hidden": teacher_hidden,
                       "student_hidden": student_hidden}
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (out_dir / "README.md").write_text(
        "# Student with a TAF connector (cdviz)\n\n"
        f"The student sees images through the teacher's connector (hidden size {teacher_hidden}) followed by a\n"
        f"linear map into its own hidden size ({student_hidden}). A standard LLaVA projector of width\n"
        f"{student_hidden} cannot express that, so the connector lives in `{TAF_FILE}` and is left out of\n"
        "`model.safetensors`.\n\n"
        "- `cdviz.models.load_model(DIR)` re-attaches it (what `cdviz record` / `cdviz eval` use).\n"
        "- `LlavaForConditionalGeneration.from_pretrained(DIR)` alone warns about missing projector weights and\n"
        "  initialises them randomly; call `cdviz.models.taf.install_saved_taf(adapter, DIR)` after loading.\n")
