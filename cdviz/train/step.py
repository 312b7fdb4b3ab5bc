"""One training step's forward: the frozen teacher's targets, then the student's weighted losses.

    teacher_targets(teacher, batch.teacher)        no_grad: hidden states at the KD rows [M, Dt],
                                                   image blocks / answer-row maps in its group layers
    with TrainCapture(student, layer_map.student_layers, spans):
        parts = DistillForward(student.model)(batch.student, targets, teacher_head, capture)
    parts = {"loss": weighted sum, "ce": ..., "kd": ..., "vat": ..., "t2i": ..., "ground": ..., "route": ...,
             "presence": ...}

``distill_forward`` is those lines as one function: the Recipe's micro-step and
``cdviz bench train`` both call it, so the benchmark times the trainer's own path.

DistillForward is the module the Accelerator wraps (DDP / FSDP / DeepSpeed): everything that
touches student weights, the LM head included, runs inside its forward. It runs the model's
backbone (``model.model``) and applies the LM head only to answer rows, chunk by chunk
(cdviz/train/losses.py), so [B, T, V] logits never exist.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch
from torch import nn

from cdviz.conversation import DataError, Encoded
from cdviz.layer_map import LayerMap
from cdviz.train.losses import (TrainCapture, grounding_from_rows, presence_from_rows, routing_from_rows, head_losses, score_mask, shifted_targets,
                                t2i_from_rows, vat_from_blocks)


@dataclass
class LossSettings:
    """Which losses a stage uses and how they are computed (weights: name -> weight, 0 = off)."""

    weights: dict[str, float]
    layer_map: LayerMap | None = None
    temperature: float = 1.0
    kd_chunk: int | None = 1024
    vat_filter: bool = True
    t2i_metric: str = "js"
    paper_compat: bool = False
    ground_layers: list[int] = field(default_factory=list)
    route_layers: list[int] = field(default_factory=list)
    ground_share: str = "image"  # grounding share of the image attention, or of the whole "row"

    def on(self, name: str) -> bool:
        return bool(self.weights.get(name, 0.0))

    @property
    def capture_layers(self) -> tuple[list[int], list[int]]:
        """(student layers, teacher layers) whose attention VAT / T2I / grounding needs; empty when none is on."""
        student: set[int] = set(self.ground_layers) if self.on("ground") or self.on("presence") else set()
        student |= set(self.route_layers) if self.on("route") else set()
        teacher: list[int] = []
        if (self.on("vat") or self.on("t2i")) and self.layer_map is not None:
            student |= set(self.layer_map.student_layers)
            teacher = self.layer_map.teacher_layers
        return sorted(student), teacher

    @property
    def block_layers(self) -> tuple[list[int], list[int]]:
        """(student layers, teacher layers) whose image->image blocks VAT reads; empty when VAT is off."""
        if not self.on("vat") or self.layer_map is None:
            return [], []
        return list(self.layer_map.student_layers), self.layer_map.teacher_layers

    @property
    def full_row_layers(self) -> list[int]:
        """Layers whose answer rows are kept over the whole sequence (route and presence losses,
        row-share grounding)."""
        layers = set(self.route_layers) if self.on("route") else set()
        layers |= set(self.ground_layers) if self.on("ground") and self.ground_share == "row" else set()
        layers |= set(self.ground_layers) if self.on("presence") else set()
        return sorted(layers)

    @property
    def needs_query_rows(self) -> bool:
        return self.on("t2i") or self.on("ground") or self.on("route") or self.on("presence")


@dataclass
class TeacherTargets:
    """What the student is pulled towards, computed once per micro-batch without gradients."""

    hidden: torch.Tensor | None = None                       # [M, Dt] at the teacher's KD rows
    blocks: dict[int, list[torch.Tensor]] = field(default_factory=dict)   # layer -> per sample [Nt, Nt]
    t2i: dict[int, list[torch.Tensor | None]] = field(default_factory=dict)  # layer -> per sample [1, Nt]
    spans: list = field(default_factory=list)
    grids: list = field(default_factory=list)


def flat_rows(mask: torch.Tensor) -> torch.Tensor:
    """bool [B, T] -> long [M]: indices into the flattened [B * T] rows, sample-major."""
    return torch.nonzero(mask.flatten()).flatten()


def answer_query_rows(enc: Encoded) -> list[list[int]]:
    """Per sample the answer position (the row predicting the first answer token) as a query row."""
    return [[p] if p >= 0 else [] for p in enc.prompt_end]


def backbone(model: nn.Module, enc: Encoded) -> torch.Tensor:
    """Final hidden states of an HF multimodal model without its LM head: [B, T, D]."""
    return model.model(**enc.inputs, use_cache=False).last_hidden_state


@torch.no_grad()
def teacher_targets(teacher, enc: Encoded, settings: LossSettings) -> TeacherTargets:
    """The frozen teacher's forward: KD hidden rows and the attention VAT / T2I compare against."""
    _, layers = settings.capture_layers
    out = TeacherTargets(spans=enc.spans, grids=enc.grids)
    if layers:
        rows = answer_query_rows(enc) if settings.on("t2i") else None
        with TrainCapture(teacher, layers, enc.spans, rows, settings.block_layers[1]) as cap:
            hidden = backbone(teacher.model, enc)
        out.blocks, out.t2i = cap.blocks, cap.t2i
    else:
        hidden = backbone(teacher.model, enc)
    if settings.on("kd"):
        out.hidden = hidden.flatten(0, 1)[flat_rows(score_mask(enc.labels, settings.paper_compat))]  # [M, Dt]
    return out


class DistillForward(nn.Module):
    """The student's side of a step as one module, so the distributed engine wraps all of it."""

    def __init__(self, model: nn.Module, settings: LossSettings):
        super().__init__()
        self.model = model
        self.settings = settings

    def forward(self, enc: Encoded, teacher: TeacherTargets | None = None, teacher_head: nn.Module | None = None,
                capture: TrainCapture | None = None) -> dict[str, torch.Tensor]:
        st = self.settings
        hidden = backbone(self.model, enc).flatten(0, 1)  # [B * T, D]
        head = self.model.get_output_embeddings()
        ce_mask = score_mask(enc.labels)  # [B, T]
        ce_rows = flat_rows(ce_mask)
        targets = shifted_targets(enc.labels).flatten()[ce_rows]  # [M]
        parts: dict[str, torch.Tensor] = {}
        kd_on = st.on("kd") and teacher is not None and teacher.hidden is not None
        kd_rows = flat_rows(score_mask(enc.labels, st.paper_compat)) if kd_on else None
        if kd_on and kd_rows.shape[0] != teacher.hidden.shape[0]:
            raise DataError(f"{kd_rows.shape[0]} student answer rows but {teacher.hidden.shape[0]} teacher rows; "
                             "teacher and student must tokenise the answers identically")
        if kd_on and not st.paper_compat:  # same rows: one pass over the LM head for both losses
            sums = head_losses(hidden[ce_rows], head, targets, teacher.hidden, teacher_head,
                               temperature=st.temperature, chunk_size=st.kd_chunk)
        else:
            sums = head_losses(hidden[ce_rows], head, targets, chunk_size=st.kd_chunk)
            if kd_on:
                sums.update(head_losses(hidden[kd_rows], head, None, teacher.hidden, teacher_head,
                                        temperature=st.temperature, chunk_size=st.kd_chunk))
        parts["ce"] = sums["ce"] / max(1, ce_rows.shape[0])
        if kd_on:
            parts["kd"] = sums["kd"] / max(1, kd_rows.shape[0])
        if capture is not None and teacher is not None:
            # Every enabled term is always returned (0 for a batch without images), so that all
            # processes reduce the same keys.
            zero = hidden.sum() * 0
            samples = [b for b, (s, t) in enumerate(zip(enc.spans, teacher.spans)) if s is not None and t is not None]
            lm = st.layer_map
            if st.on("vat"):
                parts["vat"] = vat_from_blocks(capture.blocks, teacher.blocks, lm.student_layers, lm.teacher_groups,
                                               samples, enc.grids, teacher.grids, st.vat_filter) if samples else zero
            t2i_samples = [b for b in samples if enc.prompt_end[b] >= 0]
            if st.on("t2i"):
                parts["t2i"] = zero if not t2i_samples else t2i_from_rows(
                    capture.t2i, teacher.t2i, lm.student_layers, lm.teacher_groups, t2i_samples, enc.grids,
                    teacher.grids, st.t2i_metric)
        if st.on("ground"):
            grounded = [b for b, r in enumerate(enc.regions) if r is not None and enc.spans[b] is not None
                        and enc.prompt_end[b] >= 0] if capture is not None else []
            if st.on("presence"):  # a "not there" answer is the presence loss's, whatever its regions
                grounded = [b for b in grounded if not enc.absent[b]]
            whole = dict(rows=capture.rows, spans=enc.spans) if st.ground_share == "row" else {}
            parts["ground"] = (grounding_from_rows(capture.t2i, st.ground_layers, enc.regions, grounded, **whole)
                               if grounded else hidden.sum() * 0)
        if st.on("presence"):
            absent = [b for b, gone in enumerate(enc.absent) if gone and enc.spans[b] is not None
                      and enc.prompt_end[b] >= 0] if capture is not None else []
            parts["presence"] = (presence_from_rows(capture.rows, st.ground_layers, enc.spans, absent)
                                 if absent else hidden.sum() * 0)
        if st.on("route"):
            routed = [b for b, r in enumerate(enc.route) if r is not None and enc.prompt_end[b] >= 0] \
                if capture is not None else []
            parts["route"] = (routing_from_rows(capture.rows, st.route_layers, enc.route, routed)
                              if routed else hidden.sum() * 0)
        total = sum(st.weights.get(k, 0.0) * v for k, v in parts.items())
        return {"loss": total, **parts}


def distill_forward(module: nn.Module, settings: LossSettings, student, teacher, enc: Encoded,
                    teacher_enc: Encoded | None, autocast: Callable[[], ContextManager] = nullcontext
                    ) -> dict[str, torch.Tensor]:
    """One micro-batch's forward as the trainer runs it: the teacher's targets without gradients,
    then the student (``module``: a DistillForward, possibly wrapped by accelerate) with its
    attention captured in the target layers only.

    Args:
        student, teacher: adapters (cdviz.models); ``teacher`` None for stages without one.
        enc, teacher_enc: the batch encoded for each model (on the models' device).
        autocast: context factory for mixed precision (``accelerator.autocast``).

    Returns:
        DistillForward's parts: {"loss": weighted sum, "ce", "kd", "vat", "t2i", "ground" as enabled}.
    """
    targets, head = None, None
    if teacher is not None:
        with autocast():
            targets = teacher_targets(teacher, teacher_enc, settings)
        head = teacher.model.get_output_embeddings()
    layers, _ = settings.capture_layers
    rows = answer_query_rows(enc) if settings.needs_query_rows else None
    cap = (TrainCapture(student, layers, enc.spans, rows, settings.block_layers[0],
                        row_layers=settings.full_row_layers) if layers else None)
    with cap if cap is not None else nullcontext():
        with autocast():
            return module(enc, targets, head, cap)
