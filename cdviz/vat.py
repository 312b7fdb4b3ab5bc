"""The VAT (visual attention alignment) loss of CompoDistill: the student is trained to spread the
attention its image tokens receive from each other as its teacher does, in the middle layers
where the two models' visual attention differs most. This module turns image-to-image attention
blocks into received-attention vectors and computes the loss the trainer minimises.

    block A [..., Nq, Nk]      one layer's attention, queries = keys = image tokens, head-averaged
      -> keep = A <= mean + std of the block, in BOTH student and teacher   (drops attention sinks)
         and the entry exists in both: query q can see key k (q >= k in a causal decoder, no padding)
      -> received [..., Nk]    per key token: mean of the kept entries over the query axis
      -> 1 - cosine(student received, teacher received), summed over target layers, batch mean

Only entries that exist are averaged. In a causal decoder the block is lower triangular; counting
the masked zeros would divide key k's sum by all Nq queries although only Nq - k can see it, which
shrinks late keys relative to early ones. The loss reads what exists from the blocks themselves
(`visible_entries`: non-zero entries, the reference code's rule), so causal, padded, sliding-window
and bidirectional-image masks all come out right without the caller describing the mask.

The cosine is `cdviz.metrics.vat_cosine_from_vectors`, the same function the analyses report as
the "vat_cosine" metric. Choosing the layers and grouping teacher layers is the trainer's job;
this module receives blocks already matched layer to layer.

Tests: .venv/bin/pytest tests/core/test_metrics.py tests/test_vat_causal.py -q
"""

from __future__ import annotations

import torch
from einops import rearrange

from cdviz.metrics import Grid, upcast, vat_cosine_from_vectors

__all__ = ["vat_threshold", "visible_entries", "vat_received", "vat_vectors", "vat_layer_terms", "vat_loss",
           "vat_cosine_from_vectors"]


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


def visible_entries(block: torch.Tensor) -> torch.Tensor:
    """The entries of a softmax attention block that exist: bool [..., Nq, Nk], True where non-zero.

    The attention mask (causal, padding, sliding window) sets a score to -inf and softmax turns it
    into an exact 0, while a visible key gets exp(finite) > 0; head and layer means keep both
    properties because the mask is shared. So on such blocks "non-zero" is exactly "query q can
    see key k", the rule the reference code uses. The one exception, a visible probability that
    underflows to 0 (a score ~100 below the row's maximum), contributes 0 to the sum either way.
    Not meant for arbitrary maps, where a zero may be a real value.

    Args:
        block: [..., Nq, Nk] attention probabilities.

    Returns:
        bool [..., Nq, Nk], without gradient.
    """
    return block.detach() != 0


def vat_received(block: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Attention each key token receives: the mean over queries of the kept entries.

    received[k] = sum_q A[q, k] * keep[q, k] / max(1, sum_q keep[q, k]); a key with nothing kept
    receives 0. ``keep`` is every entry that counts, so an entry that does not exist (a masked
    zero) must be False in it, or it dilutes the mean. ``keep=None`` keeps everything (a plain
    mean over queries, right only for a full block).

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
                student_grid: Grid | None = None, teacher_grid: Grid | None = None,
                student_visible: torch.Tensor | None = None, teacher_visible: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Received-attention vectors of a student and a teacher block, filtered as in the paper.

    An entry counts only where it exists (``*_visible``) and, with ``filter``, is <= its block's
    `vat_threshold`. On the same tokens both conditions must hold in BOTH maps, so an attention
    sink in either model is dropped from both and the two vectors average the same entries. On
    different patch grids (different sizes, or different ``student_grid`` and ``teacher_grid``)
    tokens do not correspond and each block uses its own mask. The masks carry no gradient.

    Args:
        student_block: [..., Ns, Ns].
        teacher_block: [..., Nt, Nt] (leading dims broadcast with the student's).
        filter: drop above-threshold entries; False averages all visible queries.
        student_grid, teacher_grid: (rows, cols); only consulted to tell whether tokens correspond.
        student_visible, teacher_visible: bool, broadcastable to the blocks, True where query q
            can see key k (e.g. `visible_entries`, or a lower triangle); None: every entry exists.

    Returns:
        (s_vec [..., Ns], t_vec [..., Nt]), each on its own model's grid.
    """
    with torch.no_grad():
        s_keep = _counted(student_block, filter, student_visible)  # [..., Ns, Ns]
        t_keep = _counted(teacher_block, filter, teacher_visible)  # [..., Nt, Nt]
        same_grid = student_grid is None or teacher_grid is None or tuple(student_grid) == tuple(teacher_grid)
        if same_grid and student_block.shape[-2:] == teacher_block.shape[-2:]:
            s_keep = t_keep = s_keep & t_keep
    return vat_received(student_block, s_keep), vat_received(teacher_block, t_keep)


def _counted(block: torch.Tensor, filter: bool, visible: torch.Tensor | None) -> torch.Tensor:
    """bool [..., Nq, Nk]: the entries of ``block`` that count, visible and (with filter) kept."""
    keep = torch.ones_like(block, dtype=torch.bool) if visible is None else visible.bool().expand_as(block)
    if filter:
        keep = keep & (block <= vat_threshold(block)[..., None, None])
    return keep


def vat_layer_terms(student_blocks: torch.Tensor, teacher_blocks: torch.Tensor, filter: bool = True,
                    student_grid: Grid | None = None, teacher_grid: Grid | None = None) -> torch.Tensor:
    """Per sample and target layer VAT term, 1 - cosine(student received, teacher received).

    The teacher is a fixed target: its blocks are detached here, so gradients reach the student
    only, whether or not the teacher's forward ran under no_grad. The blocks are softmax
    attention, so the entries that exist are read from them (`visible_entries`): each key is
    averaged over the queries that can see it.

    Args:
        student_blocks: [B, L, Ns, Ns] head-averaged image-to-image attention probabilities, one
            per target layer; entries the mask hides are 0.
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
    teacher_blocks = teacher_blocks.detach()
    s_vec, t_vec = vat_vectors(student_blocks, teacher_blocks, filter, student_grid, teacher_grid,
                               visible_entries(student_blocks), visible_entries(teacher_blocks))  # [B, L, N*]
    return 1 - vat_cosine_from_vectors(s_vec, t_vec, student_grid, teacher_grid)


def vat_loss(student_blocks: torch.Tensor, teacher_blocks: torch.Tensor, filter: bool = True,
             student_grid: Grid | None = None, teacher_grid: Grid | None = None) -> torch.Tensor:
    """The VAT loss: sum over target layers of (1 - cosine), averaged over the batch.

    Arguments as in `vat_layer_terms`; gradients flow to ``student_blocks`` only.

    Returns:
        scalar tensor, in [0, L] for non-negative attention.
    """
    return vat_layer_terms(student_blocks, teacher_blocks, filter, student_grid, teacher_grid).sum(-1).mean()
