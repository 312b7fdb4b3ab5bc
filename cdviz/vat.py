"""The VAT (visual attention alignment) form of CompoDistill: from image-to-image attention blocks
to received-attention vectors, and the loss the trainer minimises. See /work/shared/PAPER.md.

    block A [..., Nq, Nk]      one layer's attention, queries = keys = image tokens, head-averaged
      -> keep = A <= mean + std of the block, in BOTH student and teacher   (drops attention sinks)
      -> received [..., Nk]    per key token: mean of the kept entries over the query axis
      -> 1 - cosine(student received, teacher received), summed over target layers, batch mean

The cosine is `cdviz.metrics.vat_cosine_from_vectors`, the same function the analyses report as
the "vat_cosine" metric. Choosing the layers and grouping teacher layers is the trainer's job;
this module receives blocks already matched layer to layer.

Tests: .venv/bin/pytest tests/core/test_metrics.py -q
"""

from __future__ import annotations

import torch
from einops import rearrange

from cdviz.metrics import Grid, upcast, vat_cosine_from_vectors

__all__ = ["vat_threshold", "vat_received", "vat_vectors", "vat_layer_terms", "vat_loss", "vat_cosine_from_vectors"]


def vat_threshold(block: torch.Tensor) -> torch.Tensor:
    """Outlier threshold of an attention block: mean + std over the whole block.

    The std is torch's default sample std (correction 1); over a block of N*N entries the
    difference from the population std is negligible.

    Args:
        block: [..., Nq, Nk].

    Returns:
        [...], one threshold per block.
    """
    flat = rearrange(upcast(block), "... q k -> ... (q k)")  # [..., Nq * Nk]
    return flat.mean(-1) + flat.std(-1)


def vat_received(block: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Attention each key token receives: the mean over queries of the kept entries.

    received[k] = sum_q A[q, k] * keep[q, k] / max(1, sum_q keep[q, k]); a key with nothing kept
    receives 0. ``keep=None`` keeps everything (a plain mean over queries).

    Args:
        block: [..., Nq, Nk].
        keep: bool [..., Nq, Nk] (broadcastable) or None.

    Returns:
        [..., Nk].
    """
    block = upcast(block)
    if keep is None:
        return block.mean(-2)
    keep = keep.to(block.dtype)
    return (block * keep).sum(-2) / keep.sum(-2).clamp_min(1)


def vat_vectors(student_block: torch.Tensor, teacher_block: torch.Tensor, filter: bool = True,
                student_grid: Grid | None = None, teacher_grid: Grid | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Received-attention vectors of a student and a teacher block, filtered as in the paper.

    With ``filter``, an entry is kept only if it is <= its block's `vat_threshold` in BOTH maps,
    so an attention sink in either model is dropped from both. That needs the two blocks on the
    same tokens; on different patch grids (different sizes, or different ``student_grid`` and
    ``teacher_grid``) each block can only drop its own outliers, and that is what happens. The
    thresholds and the mask carry no gradient.

    Args:
        student_block: [..., Ns, Ns].
        teacher_block: [..., Nt, Nt] (leading dims broadcast with the student's).
        filter: drop above-threshold entries; False averages all queries.
        student_grid, teacher_grid: (rows, cols); only consulted to tell whether tokens correspond.

    Returns:
        (s_vec [..., Ns], t_vec [..., Nt]), each on its own model's grid.
    """
    if not filter:
        return vat_received(student_block), vat_received(teacher_block)
    with torch.no_grad():
        s_keep = student_block <= vat_threshold(student_block)[..., None, None]  # [..., Ns, Ns]
        t_keep = teacher_block <= vat_threshold(teacher_block)[..., None, None]  # [..., Nt, Nt]
        same_grid = student_grid is None or teacher_grid is None or tuple(student_grid) == tuple(teacher_grid)
        if same_grid and student_block.shape[-2:] == teacher_block.shape[-2:]:
            s_keep = t_keep = s_keep & t_keep
    return vat_received(student_block, s_keep), vat_received(teacher_block, t_keep)


def vat_layer_terms(student_blocks: torch.Tensor, teacher_blocks: torch.Tensor, filter: bool = True,
                    student_grid: Grid | None = None, teacher_grid: Grid | None = None) -> torch.Tensor:
    """Per sample and target layer VAT term, 1 - cosine(student received, teacher received).

    The teacher is a fixed target: its blocks are detached here, so gradients reach the student
    only, whether or not the teacher's forward ran under no_grad.

    Args:
        student_blocks: [B, L, Ns, Ns] head-averaged image-to-image blocks, one per target layer.
        teacher_blocks: [B, L, Nt, Nt] the teacher's (group-averaged) blocks matched to them.
        filter: apply the mean + std filter (see `vat_vectors`).
        student_grid, teacher_grid: (rows, cols) patch grids; needed when Ns != Nt, in which case
            the received vectors are resampled onto the finer grid before the cosine.

    Returns:
        [B, L], in [0, 1] for non-negative attention.
    """
    if student_blocks.ndim != 4 or teacher_blocks.ndim != 4:
        raise ValueError(f"expected [B, L, N, N] blocks, got student {tuple(student_blocks.shape)} and "
                         f"teacher {tuple(teacher_blocks.shape)}")
    if student_blocks.shape[:2] != teacher_blocks.shape[:2]:
        raise ValueError(f"student has [B, L] = {tuple(student_blocks.shape[:2])}, teacher "
                         f"{tuple(teacher_blocks.shape[:2])}; match teacher layers to student layers first")
    s_vec, t_vec = vat_vectors(student_blocks, teacher_blocks.detach(), filter,
                               student_grid, teacher_grid)  # [B, L, Ns], [B, L, Nt]
    return 1 - vat_cosine_from_vectors(s_vec, t_vec, student_grid, teacher_grid)


def vat_loss(student_blocks: torch.Tensor, teacher_blocks: torch.Tensor, filter: bool = True,
             student_grid: Grid | None = None, teacher_grid: Grid | None = None) -> torch.Tensor:
    """The VAT loss: sum over target layers of (1 - cosine), averaged over the batch.

    Arguments as in `vat_layer_terms`; gradients flow to ``student_blocks`` only.

    Returns:
        scalar tensor, in [0, L] for non-negative attention.
    """
    return vat_layer_terms(student_blocks, teacher_blocks, filter, student_grid, teacher_grid).sum(-1).mean()
