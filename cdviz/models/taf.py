"""A TAF student's connector, and how a saved one is put back when the model is loaded.

    student vision features [.., Dv]
      -> teacher connector, frozen copy   (linear_1 -> act -> linear_2)   [.., Ht]
      -> TAF linear, trainable            (teacher text hidden -> student) [.., Hs]

Training builds and saves it (cdviz.train.taf, which also says when it folds into a plain
projector); loading a saved student needs only this module: when the connector could not be
folded (config.json "cdviz_taf".merged false), ``cdviz.models.load_model`` calls
``attach_saved_taf``, which rebuilds it from ``taf.safetensors``. Implemented for LLaVA-style
connectors (``model.model.multi_modal_projector`` with ``linear_1`` / ``linear_2``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from cdviz.errors import CdvizError

TAF_FILE = "taf.safetensors"
CONFIG_KEY = "cdviz_taf"


class TAFError(CdvizError, ValueError):
    """A teacher / student pair TAF cannot join; the message says what to change."""


class TAFConnector(nn.Module):
    """Frozen teacher connector followed by a trainable linear map into the student's hidden size."""

    def __init__(self, teacher_connector: nn.Module, teacher_hidden: int, student_hidden: int):
        super().__init__()
        self.teacher = copy.deepcopy(teacher_connector).requires_grad_(False)
        # A bias only where the teacher's connector has one, so the merge stays exact either way.
        self.taf = nn.Linear(teacher_hidden, student_hidden, bias=teacher_connector.linear_2.bias is not None)

    def forward(self, image_features: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        # Whatever else the model passes its projector goes to the teacher's copy (Mistral 3's image_sizes).
        return self.taf(self.teacher(image_features, *args, **kwargs))  # [..., Dv] -> [..., Ht] -> [..., Hs]


def connector(adapter) -> nn.Module:
    """The adapter's image connector, or TAFError for architectures TAF does not support."""
    proj = getattr(getattr(adapter.model, "model", None), "multi_modal_projector", None)
    if proj is None or not (isinstance(proj, TAFConnector) or hasattr(proj, "linear_1") and hasattr(proj, "linear_2")):
        raise TAFError(f"TAF needs a LLaVA-style connector (multi_modal_projector.linear_1/linear_2); "
                       f"{type(adapter.model).__name__} has none. Set taf = false (cdviz finetune --no-taf) "
                       "for this model.")
    return proj


def set_connector(adapter, module: nn.Module) -> None:
    adapter.model.model.multi_modal_projector = module


def _hidden(adapter) -> int:
    return int(adapter.text_config.hidden_size)


def install_taf(student, teacher_connector: nn.Module, teacher_hidden: int,
                state: dict[str, torch.Tensor] | None = None) -> TAFConnector:
    """Replace the student's connector with a TAFConnector (teacher copy + new linear).

    ``state``: tensors from ``taf_state`` / ``taf.safetensors`` to restore; None initialises the
    linear with nn.Linear's default (under whatever seed the caller set).
    """
    module = TAFConnector(teacher_connector, teacher_hidden, _hidden(student))
    if state is not None:
        module.load_state_dict(state)
        module.teacher.requires_grad_(False)
    ref = next(student.model.parameters())
    module.to(device=ref.device, dtype=ref.dtype)
    set_connector(student, module)
    return module


def load_taf_file(model_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(state, metadata) from MODEL_DIR/taf.safetensors, or None when the file is absent."""
    path = Path(model_dir) / TAF_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    return load_file(str(path)), meta


def install_saved_taf(student, model_dir: str | Path) -> TAFConnector | None:
    """Rebuild the TAF connector saved in MODEL_DIR (None when the directory has none)."""
    found = load_taf_file(model_dir)
    if found is None:
        return None
    state, meta = found
    teacher_hidden = int(meta["teacher_hidden"])
    proj = connector(student)
    base = proj.teacher if isinstance(proj, TAFConnector) else proj
    # The saved teacher copy may be wider than the student's own projector (Ht != Hs): build a
    # projector of the teacher's shape to load it into.
    shell = copy.deepcopy(base)
    shell.linear_1 = nn.Linear(state["teacher.linear_1.weight"].shape[1], teacher_hidden,
                               bias="teacher.linear_1.bias" in state)
    shell.linear_2 = nn.Linear(teacher_hidden, teacher_hidden, bias="teacher.linear_2.bias" in state)
    return install_taf(student, shell, teacher_hidden, state)


def attach_saved_taf(adapter, model_dir: str | Path) -> None:
    """Loader hook: re-attach an unmerged TAF connector (config.json "cdviz_taf".merged false)."""
    info = getattr(adapter.config, CONFIG_KEY, None)
    if isinstance(info, dict) and not info.get("merged", True):
        install_saved_taf(adapter, model_dir)
        adapter.model.eval()
