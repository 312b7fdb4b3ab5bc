"""Exact attention probabilities for just the blocks cdviz needs, at close to SDPA's cost.

A function registered with transformers' ``AttentionInterface`` under the name ``"cdviz"``
computes every layer's output with SDPA, exactly as ``attn_implementation="sdpa"`` would.
In the layers a ``Capture`` asks for, it also computes the true probabilities for a few query
rows: softmax over ALL keys with the model's mask (causal, padding, prefix, sliding window) and
scaling, grouped-query heads shared; then keeps only the image-key columns and reductions.

    with Capture(adapter, plan) as cap:      # plan: rows per sample, image spans, layers
        out = adapter.model(**batch.inputs)  # logits identical to the SDPA path
    cap.results[layer]                       # LayerCapture tensors per sample, see below

Recording (the default mode), per layer and sample (H heads, N image tokens, Q text query rows):
    t2i        [H, Q, N]  attention of each text query row over the image tokens
    t2i_pieces [H, Q, M]  the same rows over ``SamplePlan.piece_keys`` (the patch tokens of an image's
                          other pieces, M of them; only when the plan gives them)
    mass       [H, Q]     share of each text query row's attention that lands on image tokens
    entropy    [H, Q]     entropy (nats) of each text query row over all keys
    i2i        [H, N]     image->image block, attention each image token receives (mean over queries)
    i2i_filt   [H, N]     received vector of that head's block: per key, the mean over the queries
                          that can see it (non-zero entries) of the entries <= mean + std
    i2i_paper  [N]        the paper's form: head-mean block, mean+std filter, received vector
                          (both as `cdviz.vat.vat_vectors`; masked causal zeros are not counted)
    i2i_block  [N, N]     head-mean image->image block (only when asked for; N^2 per layer)

Training (``plan.with_grad``): the same probabilities, with gradients, reduced only to what the
losses read, head-averaged (R query rows of a sample, S keys):
    blocks     layer -> per sample [N, N]   image->image block, in ``plan.block_layers`` (default: all)
    t2i        layer -> per sample [R, N]   the query rows over the image (None: no rows or no image)
    rows       layer -> per sample [R, S']  the query rows over every key up to the last they see,
                                            in ``plan.row_layers``

Cost: at the bench's shapes (`cdviz bench record`: 16 heads, T = 1024, N = 576) the extra
products are ~1.5% of the forward's FLOPs, and what decides the overhead on a CPU is the number
of passes over [H, N, N] tensors, each a parallel region of its own: the mask enters the product
(``baddbmm``), the block is written once into a buffer reused across layers, its head mean rides
along as one more head through a single filter reduction, and the std takes two cheap passes
rather than a Welford one. Image rows are split into chunks of ``plan.row_chunk`` rows, each
multiplied only against the keys its rows can see (a causal block then costs about half its
square); at N = 576 one chunk is faster, as every chunk adds passes, so the default only splits
large images (N > 1024), where it also bounds the [H, rows, keys] temporaries.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from einops import rearrange
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from cdviz.errors import CdvizError


IMPLEMENTATION = "cdviz"
_ACTIVE: ContextVar["Capture | None"] = ContextVar("cdviz_capture", default=None)


@dataclass
class SamplePlan:
    """Where to look in one sample: its image span and the text query rows to record.

    piece_keys: token positions of the other pieces' patches (crops, tiles) whose text-row
                attention is kept as ``t2i_pieces``; None: none kept (recording mode only)
    """

    image_span: tuple[int, int]
    query_rows: list[int]
    piece_keys: list[int] | None = None


@dataclass
class CapturePlan:
    layers: list[int]
    samples: list[SamplePlan]
    store_block: bool = False  # also keep the head-mean image->image block [N, N]
    with_grad: bool = False    # training mode: head-mean blocks / rows with gradients, nothing else
    block_layers: list[int] | None = None  # training: layers whose image block is kept (None: all)
    row_layers: list[int] = field(default_factory=list)  # training: layers whose query rows keep all keys
    row_chunk: int = 1024      # image query rows per product; see "Cost" above


@dataclass
class LayerCapture:
    t2i: list[torch.Tensor] = field(default_factory=list)
    mass: list[torch.Tensor] = field(default_factory=list)
    entropy: list[torch.Tensor] = field(default_factory=list)
    i2i: list[torch.Tensor] = field(default_factory=list)
    i2i_filt: list[torch.Tensor] = field(default_factory=list)
    i2i_paper: list[torch.Tensor] = field(default_factory=list)
    i2i_block: list[torch.Tensor] = field(default_factory=list)
    t2i_pieces: list[torch.Tensor | None] = field(default_factory=list)  # None: the sample's plan has no piece_keys


class CaptureError(CdvizError, RuntimeError):
    """Attention that cannot be recorded (NaN / inf, an image span outside the sequence)."""


def _cdviz_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    out = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    cap = _ACTIVE.get()
    if cap is not None:
        layer = cap.layer_of.get(id(module))
        if layer is not None and layer in cap.wanted:
            cap.observe(layer, module, query, key, attention_mask, scaling, kwargs.get("softcap"))
    return out


AttentionInterface.register(IMPLEMENTATION, _cdviz_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)


# ------------------------------------------------------------------------------ probabilities

def _scores(query: torch.Tensor, key: torch.Tensor, bias: torch.Tensor | None, scaling: float,
            softcap: float | None) -> torch.Tensor:
    """Scaled (soft-capped) scores plus the additive mask, in fp32.

    Args:
        query: [H, R, D]; key: [Hkv, S, D], each kv head serving H / Hkv consecutive query heads
        bias:  [R, S] fp32, 0 or -inf (or the model's additive mask), or None
    Returns:
        [H, R, S]
    """
    g = query.shape[0] // key.shape[0]
    q = rearrange(query.float(), "(hk g) r d -> hk (g r) d", g=g)  # grouped heads share one product
    kt = key.float().transpose(1, 2)  # [Hkv, D, S]
    bias = bias.repeat(g, 1) if bias is not None and g > 1 else bias  # [G * R, S]
    if softcap is None and bias is not None:
        scores = torch.baddbmm(bias, q, kt, alpha=scaling)  # the mask enters with the product
    else:
        scores = torch.matmul(q * scaling, kt)
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if bias is not None:
            scores = scores + bias
    return rearrange(scores, "hk (g r) s -> (hk g) r s", g=g)


def row_probabilities(query, key, mask, scaling, rows, is_causal, softcap=None, min_keys: int = 0) -> torch.Tensor:
    """Exact softmax probabilities of query ``rows`` of one sample over the keys they can see.

    Keys past the last one any of ``rows`` may attend to carry zero probability, so they are
    cut off before the product (for causal image rows this halves the work).

    Args:
        query: [H, T, D]; key: [Hkv, S, D] (Hkv divides H; grouped-query heads are not expanded)
        mask:  [T, S] bool (True = may attend) or float additive, or None (causal or full)
        rows:  a ``range`` of query positions (sliced, no copy) or a sequence / [R] long tensor
        min_keys: return at least this many key columns (so a caller's slice always exists)
    Returns:
        [H, R, S'] float32 probabilities over keys 0..S'-1 (S' <= S; later keys have zero)
    """
    if len(rows) == 0:
        return query.new_zeros(query.shape[0], 0, max(min_keys, 1), dtype=torch.float32)
    if isinstance(rows, range) and rows.step == 1:
        index = slice(rows.start, rows.stop)
        last = rows.stop - 1
    else:
        index = torch.as_tensor(rows, device=query.device, dtype=torch.long)
        last = int(index.max())
    m = mask[index] if mask is not None else None  # [R, S]
    if m is not None and m.dtype == torch.bool:
        visible = torch.nonzero(m.any(0))
        s_end = int(visible.max()) + 1 if len(visible) else key.shape[1]
    elif m is None and is_causal:
        s_end = last + 1
    else:
        s_end = key.shape[1]
    s_end = min(max(s_end, min_keys), key.shape[1])
    if m is not None:
        m = m[:, :s_end]
        bias = torch.where(m, 0.0, float("-inf")) if m.dtype == torch.bool else m.float()  # [R, S']
    elif is_causal and isinstance(index, slice):  # -inf where key > row: above diagonal rows.start
        bias = torch.full((len(rows), s_end), float("-inf"), device=query.device).triu_(rows.start + 1)
    elif is_causal:
        keys = torch.arange(s_end, device=query.device)
        bias = torch.where(keys[None, :] > index[:, None], float("-inf"), 0.0)  # [R, S']
    else:
        bias = None
    return torch.softmax(_scores(query[:, index], key[:, :s_end], bias, scaling, softcap), dim=-1)


def image_block(query, key, mask, scaling, span: tuple[int, int], is_causal, softcap=None,
                row_chunk: int = 96, out: torch.Tensor | None = None) -> torch.Tensor:
    """The image->image block of one sample's attention, keeping gradients.

    The N image rows are split evenly into chunks of at most ``row_chunk`` rows, each multiplied
    only against the keys up to the last one a row of it can see (`row_probabilities`); the
    block's entries past those keys are exact zeros, as the softmax would give them.

    Args:
        query, key, mask, scaling, is_causal, softcap: as `row_probabilities`
        span: (start, end) of the image tokens; N = end - start
        out: an [H, N, N] float32 buffer to write the block in (not for gradients), or None
    Returns:
        [H, N, N] float32 probabilities, image queries x image keys (``out`` when given)
    """
    start, end = span
    n = end - start
    chunks = max(1, math.ceil(n / max(1, row_chunk)))
    if chunks == 1:
        probs = row_probabilities(query, key, mask, scaling, range(start, end), is_causal, softcap, end)
        return probs[:, :, start:end] if out is None else out.copy_(probs[:, :, start:end])
    block = out.zero_() if out is not None else query.new_zeros(query.shape[0], n, n, dtype=torch.float32)
    bounds = [n * i // chunks for i in range(chunks + 1)]
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        probs = row_probabilities(query, key, mask, scaling, range(start + r0, start + r1), is_causal, softcap)
        seen = probs[:, :, start:end]  # [H, r1 - r0, w], w <= N
        block[:, r0:r1, :seen.shape[-1]] = seen
    return block


# ------------------------------------------------------------------------------- reductions

def received_sums(block: torch.Tensor, scratch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Column sums and `received_filtered`'s vector of ``block`` [..., Nq, Nk]: ([..., Nk], [..., Nk]).

    ``scratch``: a float32 buffer shaped like ``block`` for the one block-sized temporary, or None.
    """
    n = block.shape[-2] * block.shape[-1]
    colsum = block.sum(-2)  # [..., Nk]
    mean = colsum.sum(-1) / n  # [...]
    # two passes (mean, then squared deviations, each a cascaded fp32 sum): torch.std's accuracy at a
    # fraction of its Welford cost; an entry near the threshold must fall on the side it falls in cdviz.vat
    scratch = torch.sub(block, mean[..., None, None], out=scratch)
    threshold = mean + (scratch.square_().sum((-2, -1)) / (n - 1)).sqrt()  # [...]
    kept = torch.where(block <= threshold[..., None, None], block, block.new_zeros(()), out=scratch)
    return colsum, kept.sum(-2) / kept.sign_().sum(-2).clamp_min(1)  # sign: 1 where kept and non-zero


def received_filtered(block: torch.Tensor) -> torch.Tensor:
    """``vat_received(block, visible_entries(block) & (block <= vat_threshold(block)))`` in fewer
    passes over the block: the same per-key vector as `cdviz.vat.vat_vectors` on one block.

    Each key's kept sum is divided by the number of entries that exist and pass the filter. An
    entry exists where it is non-zero (`cdviz.vat.visible_entries`): the masked zeros of a causal
    block (query q < key k) are not counted, so late keys are not shrunk relative to early ones.
    The threshold (mean + std) is still taken over the whole block, zeros included, as in
    `cdviz.vat.vat_threshold`.

    Args:
        block: [..., Nq, Nk] softmax attention probabilities (masked entries exactly 0)
    Returns:
        [..., Nk]; a key with no entry counted receives 0
    """
    return received_sums(block)[1]


# ---------------------------------------------------------------------------------- capture

class Capture:
    """Context manager: switch the model to the cdviz attention function and collect ``plan``."""

    def __init__(self, adapter, plan: CapturePlan):
        self.adapter = adapter
        self.plan = plan
        self.wanted = set(plan.layers)
        self.block_layers = self.wanted if plan.block_layers is None else set(plan.block_layers)
        self.row_layers = set(plan.row_layers)
        self.layer_of = {id(m): i for i, m in enumerate(adapter.attention_modules())}
        self.results: dict[int, LayerCapture] = {i: LayerCapture() for i in plan.layers}
        self.blocks: dict[int, list[torch.Tensor]] = {}  # with_grad: layer -> per sample [N, N]
        self.t2i: dict[int, list[torch.Tensor | None]] = {}  # with_grad: layer -> per sample [R, N]
        self.rows: dict[int, list[torch.Tensor | None]] = {}  # with_grad: layer -> per sample [R, S']
        self._buffers: dict[str, torch.Tensor] = {}  # recording: block-sized temporaries, see _buffer
        self._token = None
        self._previous = None

    def __enter__(self) -> Capture:
        model = self.adapter.model
        self._previous = model.config._attn_implementation
        model.set_attn_implementation(IMPLEMENTATION)
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)
        self.adapter.model.set_attn_implementation(self._previous)

    def observe(self, layer, module, query, key, attention_mask, scaling, softcap) -> None:
        """One layer's query [B, H, T, D] and key [B, Hkv, S, D]: record or keep what the plan asks."""
        is_causal = getattr(module, "is_causal", True)
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        with_rows = self.plan.with_grad and any(sp.query_rows for sp in self.plan.samples)
        if self.plan.with_grad and layer in self.block_layers:
            self.blocks[layer] = []
        if with_rows:
            self.t2i[layer] = []
            if layer in self.row_layers:
                self.rows[layer] = []
        for b, sp in enumerate(self.plan.samples):
            start, end = sp.image_span
            if end > key.shape[2]:
                raise CaptureError(f"sample {b}: image span {sp.image_span} beyond sequence length {key.shape[2]}")
            mask = None
            if attention_mask is not None:
                mask = attention_mask[b, 0] if attention_mask.dim() == 4 else attention_mask[b]
            args = (query[b], key[b], mask, scaling)
            if not self.plan.with_grad:
                with torch.no_grad():
                    self._record(layer, b, sp, args, is_causal, softcap)
                continue
            if layer in self.block_layers:
                block = image_block(*args, sp.image_span, is_causal, softcap, self.plan.row_chunk)  # [H, N, N]
                self.blocks[layer].append(block.mean(0))
            if with_rows:
                probs = None
                if sp.query_rows and end > start:
                    probs = row_probabilities(*args, sp.query_rows, is_causal, softcap, end)  # [H, R, S']
                self.t2i[layer].append(None if probs is None else probs[:, :, start:end].mean(0))  # [R, N]
                if layer in self.row_layers:
                    self.rows[layer].append(None if probs is None else probs.mean(0))  # [R, S']

    def _buffer(self, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """An fp32 buffer of ``shape`` (contents undefined) reused across layers and samples: writing
        fresh pages costs the CPU about as much as a pass over them, so the two [H, N, N]
        temporaries of recording are allocated once per capture."""
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.device != device:
            buf = self._buffers[name] = torch.empty(numel, device=device)
        return buf[:numel].view(shape)

    def _record(self, layer: int, b: int, sp: SamplePlan, args: tuple, is_causal: bool, softcap) -> None:
        """Recording mode: one sample's image block and text rows reduced to the LayerCapture fields."""
        start, end = sp.image_span
        n_heads, n = args[0].shape[0], end - start
        device = args[0].device
        # the head-mean block rides along as head H, so one reduction serves i2i_filt and i2i_paper
        blocks = self._buffer("block", (n_heads + 1, n, n), device)  # [H + 1, N, N]
        image_block(*args, sp.image_span, is_causal, softcap, self.plan.row_chunk, out=blocks[:n_heads])
        mean_block = torch.mean(blocks[:n_heads], 0, out=blocks[n_heads])  # [N, N]
        colsum, received = received_sums(blocks, self._buffer("scratch", blocks.shape, device))  # [H + 1, N]
        i2i = colsum[:n_heads] / n  # [H, N]
        keys_end = max([end, *(k + 1 for k in sp.piece_keys or ())])  # crops and tiles may follow the span
        text = row_probabilities(*args, sp.query_rows, is_causal, softcap, keys_end)  # [H, Q, S']
        t2i = text[:, :, start:end]  # [H, Q, N]
        entropy = -torch.special.xlogy(text, text).sum(-1)  # [H, Q]
        if not (torch.isfinite(i2i).all() and torch.isfinite(entropy).all()):
            raise CaptureError(f"sample {b}, layer {layer}: attention has NaN or inf values")
        res = self.results[layer]
        res.t2i.append(t2i.cpu())
        res.mass.append(t2i.sum(-1).cpu())
        res.entropy.append(entropy.cpu())
        res.i2i.append(i2i.cpu())
        res.i2i_filt.append(received[:n_heads].cpu())
        res.i2i_paper.append(received[n_heads].cpu())
        if self.plan.store_block:
            res.i2i_block.append(mean_block.clone().cpu())
        pieces = None
        if sp.piece_keys is not None:
            pieces = text[:, :, torch.as_tensor(sp.piece_keys, dtype=torch.long, device=device)].cpu()  # [H, Q, M]
        res.t2i_pieces.append(pieces)
