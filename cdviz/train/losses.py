"""The training losses of CompoDistill, in one place (docs/method.md gives their formulas).

    CE      next-token cross-entropy on answer tokens                       head_losses
    KD      forward KL(teacher || student) on answer tokens, temperature T  kd_rows, logit_kd_loss, head_losses
    VAT     1 - cos of received image attention in the target layers        vat_from_blocks (wraps cdviz.vat)
    T2I     JS or 1 - cos of the answer position's attention over the image t2i_from_rows (cdviz.metrics)

Positions: the logits at position t predict token t + 1, so a token at t + 1 with a label is
scored from row t (``score_mask``). ``paper_compat=True`` reproduces the reference code's KD mask,
which takes rows where the label itself is set (off by one: it scores the answer tokens' own rows,
so the row before the first answer token is missed and the last one, predicting past the answer,
is included). CE is always shifted correctly.

KD is summed over the vocabulary of the student: teacher logits are cut to the student's vocab
size, then both are softened by T; the loss is T^2 * KL so its gradient scale does not depend on
T. KL differs from the reference's cross-entropy form by the teacher's entropy, a constant with
zero gradient, so training is identical and a perfect student scores 0.

Memory: with a 150k vocabulary the fp32 log-softmax of every answer row dominates. The losses
are computed over chunks of rows, each chunk under activation checkpointing, so only one chunk's
logits live at a time, forward and backward. ``head_losses`` goes further and applies the LM head
per chunk, so the full [B, T, V] logits never exist.

Captured attention for VAT / T2I comes from ``TrainCapture`` (cdviz.record.capture with
gradients), in the target layers only.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from cdviz.conversation import IGNORE
from cdviz.metrics import Grid, align_pair, cosine, js_divergence, upcast
from cdviz.record.capture import Capture, CapturePlan, SamplePlan
from cdviz.vat import vat_loss

T2I_METRICS = ("js", "cosine")


# ------------------------------------------------------------------------------------ positions

def score_mask(labels: torch.Tensor, paper_compat: bool = False) -> torch.Tensor:
    """Rows whose logits are scored: bool [B, T] from labels [B, T] (IGNORE = not an answer token).

    Correct: row t is scored when labels[t + 1] is set. paper_compat: when labels[t] is set.
    """
    if paper_compat:
        return labels != IGNORE
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T]: the token row t predicts (labels[t + 1]); the last row predicts nothing."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)


# ------------------------------------------------------------------------------------------- KD

def kd_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-row T^2 * KL(teacher || student) over the student's vocabulary.

    Args:
        student_logits: [M, Vs].
        teacher_logits: [M, Vt] with Vt >= Vs; cut to the first Vs entries.

    Returns:
        [M], float32 or wider.
    """
    vs = student_logits.shape[-1]
    if teacher_logits.shape[-1] < vs:
        raise ValueError(f"teacher vocabulary ({teacher_logits.shape[-1]}) is smaller than the student's ({vs}); "
                         "logit KD needs the student's vocabulary to be a prefix of the teacher's")
    log_q = torch.log_softmax(upcast(student_logits) / temperature, dim=-1)  # [M, Vs]
    log_p = torch.log_softmax(upcast(teacher_logits[..., :vs]) / temperature, dim=-1)  # [M, Vs]
    return (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2


def _chunked_sum(fn: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor | None], chunk_size: int | None
                 ) -> torch.Tensor:
    """sum over row chunks of fn(*chunk) (a scalar each); checkpointed when gradients flow."""
    n = next(t for t in tensors if t is not None).shape[0]
    step = n if not chunk_size or chunk_size >= n else chunk_size
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    parts = []
    for i in range(0, n, step):
        part = [None if t is None else t[i:i + step] for t in tensors]
        parts.append(checkpoint(fn, *part, use_reentrant=False) if grad and n > step else fn(*part))
    return torch.stack(parts).sum()


def logit_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                  teacher_labels: torch.Tensor | None = None, *, temperature: float = 1.0,
                  chunk_size: int | None = None, paper_compat: bool = False) -> torch.Tensor:
    """Logit KD averaged over answer tokens, from full logits.

    Args:
        student_logits: [B, T, Vs].
        teacher_logits: [B, T', Vt]; T' may differ from T (other image token counts).
        labels: [B, T] student labels (IGNORE outside answers).
        teacher_labels: [B, T'] the teacher's labels for the same answers; None when T' == T and
            the positions coincide.
        chunk_size: rows per chunk (None: all at once); the value does not depend on it.

    Returns:
        scalar: mean over scored rows of T^2 * KL(teacher || student).
    """
    s_rows = student_logits[score_mask(labels, paper_compat)]  # [M, Vs]
    t_mask = score_mask(labels if teacher_labels is None else teacher_labels, paper_compat)
    t_rows = teacher_logits[t_mask]  # [M, Vt]
    if s_rows.shape[0] != t_rows.shape[0]:
        raise ValueError(f"{s_rows.shape[0]} student answer rows but {t_rows.shape[0]} teacher rows; "
                         "the two models must tokenise the answers identically")
    if s_rows.shape[0] == 0:
        return student_logits.sum() * 0
    total = _chunked_sum(lambda s, t: kd_rows(s, t.detach(), temperature).sum(), [s_rows, t_rows], chunk_size)
    return total / s_rows.shape[0]


def head_losses(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor | None = None,
                teacher_hidden: torch.Tensor | None = None, teacher_head: torch.nn.Module | None = None, *,
                temperature: float = 1.0, chunk_size: int | None = 1024) -> dict[str, torch.Tensor]:
    """CE and / or KD sums over answer rows, applying the LM heads chunk by chunk.

    Args:
        hidden: [M, D] the student's final hidden states at the scored rows.
        head: the student's LM head (D -> Vs).
        targets: [M] token ids the rows predict, for CE; None skips CE.
        teacher_hidden: [M, Dt] the teacher's hidden states at its matching rows; None skips KD.
        teacher_head: the teacher's LM head (Dt -> Vt), run without gradients.

    Returns:
        {"ce": sum over rows, "kd": sum over rows} (only the parts asked for), float32 or wider.
    """
    out: dict[str, torch.Tensor] = {}
    if hidden.shape[0] == 0:
        zero = hidden.sum() * 0
        return {**({"ce": zero} if targets is not None else {}), **({"kd": zero} if teacher_hidden is not None else {})}
    if targets is not None:
        out["ce"] = _chunked_sum(lambda h, y: F.cross_entropy(upcast(head(h)), y, reduction="sum"),
                                 [hidden, targets], chunk_size)
    if teacher_hidden is not None:
        def kd(h: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t_logits = teacher_head(th)  # [C, Vt]; recomputed in backward rather than kept
            return kd_rows(head(h), t_logits, temperature).sum()

        out["kd"] = _chunked_sum(kd, [hidden, teacher_hidden], chunk_size)
    return out


# ------------------------------------------------------------------------------ captured attention

class TrainCapture(Capture):
    """Capture's training mode (``with_grad``) for the losses below: per target layer the head-mean
    image->image block of every sample (``blocks[layer][b]`` [N, N]) and, for samples given query
    rows, the head-mean attention of those rows over the image tokens (``t2i[layer][b]`` [R, N]).

    A sample without an image gets the empty span (0, 0) and is skipped by the losses.
    ``block_layers`` (default: all ``layers``) limits the image blocks to the layers VAT reads:
    a layer captured only for its answer-row maps (T2I, grounding) skips the [N, N] block.
    ``row_layers`` also keep the query rows' head-mean attention over the whole sequence
    (``rows[layer][b]`` [R, S], for the route loss).
    """

    def __init__(self, adapter, layers: Sequence[int], spans: Sequence[tuple[int, int] | None],
                 query_rows: Sequence[Sequence[int]] | None = None, block_layers: Sequence[int] | None = None,
                 row_layers: Sequence[int] = ()):
        rows = query_rows or [[] for _ in spans]
        plans = [SamplePlan(span or (0, 0), list(r) if span else []) for span, r in zip(spans, rows)]
        super().__init__(adapter, CapturePlan(sorted(set(layers)), plans, with_grad=True,
                                              block_layers=list(layers if block_layers is None else block_layers),
                                              row_layers=list(row_layers)))


def _group_mean(per_layer: dict[int, list], layers: Sequence[int], b: int) -> torch.Tensor:
    """Mean over ``layers`` of sample b's captured tensor: [...]."""
    return torch.stack([per_layer[t][b] for t in layers]).mean(0)


def stack_blocks(student_blocks: dict[int, list[torch.Tensor]], teacher_blocks: dict[int, list[torch.Tensor]],
                 student_layers: Sequence[int], teacher_groups: Sequence[Sequence[int]], b: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample b's matched blocks: student [L, Ns, Ns], teacher group means [L, Nt, Nt]."""
    s = torch.stack([student_blocks[layer][b] for layer in student_layers])
    t = torch.stack([_group_mean(teacher_blocks, g, b) for g in teacher_groups])
    return s, t


def vat_from_blocks(student_blocks: dict[int, list[torch.Tensor]], teacher_blocks: dict[int, list[torch.Tensor]],
                    student_layers: Sequence[int], teacher_groups: Sequence[Sequence[int]],
                    samples: Sequence[int], student_grids: Sequence[Grid], teacher_grids: Sequence[Grid],
                    filter: bool = True) -> torch.Tensor:
    """The VAT loss (cdviz.vat.vat_loss) over the samples that have an image.

    Args:
        student_blocks / teacher_blocks: layer -> per sample [N, N] (TrainCapture.blocks).
        student_layers, teacher_groups: the layer map; teacher blocks are averaged over each group.
        samples: batch indices to use (those with an image in both models).
        student_grids / teacher_grids: per batch index, the (rows, cols) patch grid.

    Returns:
        scalar: sum over target layers of (1 - cos), averaged over ``samples``.
    """
    if not samples:
        raise ValueError("VAT needs at least one sample with an image")
    pairs = [stack_blocks(student_blocks, teacher_blocks, student_layers, teacher_groups, b) for b in samples]
    same = len({(s.shape, t.shape, tuple(student_grids[b]), tuple(teacher_grids[b]))
                for (s, t), b in zip(pairs, samples)}) == 1
    if same:  # one call on [B, L, N, N], exactly the paper's batch mean
        b0 = samples[0]
        return vat_loss(torch.stack([s for s, _ in pairs]), torch.stack([t for _, t in pairs]), filter,
                        student_grids[b0], teacher_grids[b0])
    terms = [vat_loss(s[None], t[None], filter, student_grids[b], teacher_grids[b])
             for (s, t), b in zip(pairs, samples)]
    return torch.stack(terms).mean()


def t2i_from_rows(student_t2i: dict[int, list[torch.Tensor | None]], teacher_t2i: dict[int, list[torch.Tensor | None]],
                  student_layers: Sequence[int], teacher_groups: Sequence[Sequence[int]], samples: Sequence[int],
                  student_grids: Sequence[Grid], teacher_grids: Sequence[Grid], metric: str = "js") -> torch.Tensor:
    """Text-to-image alignment at the answer position: sum over target layers of JS (or 1 - cos)
    between the student's and the teacher's (group-mean) maps over the image, mean over samples.

    Args:
        student_t2i / teacher_t2i: layer -> per sample [R, N] (TrainCapture.t2i; R = 1 here).

    Returns:
        scalar.
    """
    if metric not in T2I_METRICS:
        raise ValueError(f"unknown text-to-image metric {metric!r}; choose from {T2I_METRICS}")
    if not samples:
        raise ValueError("text-to-image alignment needs at least one sample with an image")
    terms = []
    for b in samples:
        s = torch.stack([student_t2i[layer][b] for layer in student_layers]).squeeze(-2)  # [L, Ns]
        t = torch.stack([_group_mean(teacher_t2i, g, b) for g in teacher_groups]).squeeze(-2).detach()  # [L, Nt]
        s, t, _ = align_pair(s, student_grids[b], t, teacher_grids[b])
        d = js_divergence(s, t) if metric == "js" else 1 - cosine(s, t)  # [L]
        terms.append(d.sum())
    return torch.stack(terms).mean()


def grounding_from_rows(t2i: dict[int, list[torch.Tensor | None]], layers: Sequence[int],
                        regions: Sequence[torch.Tensor | None], samples: Sequence[int], eps: float = 1e-6,
                        rows: dict[int, list[torch.Tensor | None]] | None = None,
                        spans: Sequence[tuple[int, int] | None] | None = None) -> torch.Tensor:
    """Grounding loss: mean over ``samples`` and ``layers`` of -log(share of the answer row's
    image attention that falls on the example's region patches).

    Args:
        t2i: captured answer-row maps, ``t2i[layer][b]`` [1, N] head-mean attention over the image.
        regions: per sample [N] share of each patch inside the regions (a patch touched counts).

    The share is renormalised over the image, so the model stays free to split its attention
    between the question and the image; only where it looks within the image is supervised. Given
    ``rows`` (TrainCapture.rows, [1, S] over the whole sequence) and the image ``spans``, the share
    is of the whole row instead: the answer position must look at the objects, not only look at
    them more than at the rest of the image.
    """
    terms = []
    for b in samples:
        on = (regions[b] > 0).to(t2i[layers[0]][b].dtype)  # [N]
        for layer in layers:
            if rows is not None:
                start, end = spans[b]
                share = (rows[layer][b].squeeze(0)[start:end] * on).sum()
            else:
                p = t2i[layer][b].squeeze(0)  # [N]
                share = (p * on).sum() / p.sum().clamp_min(eps)
            terms.append(-torch.log(share.clamp_min(eps)))
    return torch.stack(terms).mean()


def presence_from_rows(rows: dict[int, list[torch.Tensor | None]], layers: Sequence[int],
                       spans: Sequence[tuple[int, int] | None], samples: Sequence[int],
                       eps: float = 1e-6) -> torch.Tensor:
    """Presence loss for the examples whose answer says the named thing is absent: mean over
    ``samples`` and ``layers`` of -log(share of the answer row's attention, over the whole sequence,
    that falls outside the image).

    Softmax attention sums to one, so a row that looks for "a red circle" lands on the most
    circle-like red thing whether or not one is there; what it reads back cannot tell the two
    apart. Taught to look away when the thing is absent (and, with row-share grounding, at it when
    present), the row's mass on the image says whether it is there (checkpoints/DESIGNS.md, design 14).

    Args:
        rows: captured answer rows, ``rows[layer][b]`` [1, S] head-mean attention (TrainCapture.rows).
        spans: per sample the image token span (start, end).
    """
    terms = []
    for b in samples:
        start, end = spans[b]
        for layer in layers:
            p = rows[layer][b].squeeze(0)  # [S]
            terms.append(-torch.log((1 - p[start:end].sum()).clamp_min(eps)))
    return torch.stack(terms).mean()


def routing_from_rows(rows: dict[int, list[torch.Tensor | None]], layers: Sequence[int],
                      words: Sequence[torch.Tensor | None], samples: Sequence[int], eps: float = 1e-6) -> torch.Tensor:
    """Route loss: mean over ``samples`` and ``layers`` of -log(share of the answer row's attention,
    over the whole sequence, that falls on the tokens of the words naming what the answer is about).

    Args:
        rows: captured answer rows, ``rows[layer][b]`` [1, S] head-mean attention (TrainCapture.rows).
        words: per sample bool [T] (T >= S), the tokens of those words (Encoded.route).

    Returns:
        scalar.
    """
    terms = []
    for b in samples:
        for layer in layers:
            p = rows[layer][b].squeeze(0)  # [S]
            on = words[b][:p.shape[0]].to(p.dtype)
            terms.append(-torch.log((p * on).sum().clamp_min(eps)))
    return torch.stack(terms).mean()
