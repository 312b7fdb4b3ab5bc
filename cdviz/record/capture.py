"""Exact attention probabilities for just the blocks cdviz needs, at close to SDPA's cost.

A function registered with transformers' ``AttentionInterface`` under the name ``"cdviz"``
computes every layer's output with SDPA, exactly as ``attn_implementation="sdpa"`` would.
In the layers a ``Capture`` asks for, it also computes the true probabilities for a few query
rows: softmax over ALL keys with the model's mask (causal, padding, prefix, sliding window) and
scaling, grouped-query heads expanded; then keeps only the image-key columns and reductions.

    with Capture(adapter, plan) as cap:      # plan: rows per sample, image spans, layers
        out = adapter.model(**batch.inputs)  # logits identical to the SDPA path
    cap.results[layer]                       # LayerCapture tensors per sample, see below

Per layer and sample (H heads, N image tokens, Q text query rows):
    t2i        [H, Q, N]  attention of each text query row over the image tokens
    mass       [H, Q]     share of each text query row's attention that lands on image tokens
    entropy    [H, Q]     entropy (nats) of each text query row over all keys
    i2i        [H, N]     image->image block, attention each image token receives (mean over queries)
    i2i_filt   [H, N]     received vector of that head's block: per key, the mean over the queries
                          that can see it (non-zero entries) of the entries <= mean + std
    i2i_paper  [N]        the paper's form: head-mean block, mean+std filter, received vector
                          (both as `cdviz.vat.vat_vectors`; masked causal zeros are not counted)
    i2i_block  [N, N]     head-mean image->image block (only when asked for; N^2 per layer)

The ``with_grad`` mode returns the head-mean image->image block with gradients, for the
VAT loss, without materialising any other layer's attention.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from cdviz.errors import CdvizError


IMPLEMENTATION = "cdviz"
_ACTIVE: ContextVar["Capture | None"] = ContextVar("cdviz_capture", default=None)


@dataclass
class SamplePlan:
    """Where to look in one sample: its image span and the text query rows to record."""

    image_span: tuple[int, int]
    query_rows: list[int]


@dataclass
class CapturePlan:
    layers: list[int]
    samples: list[SamplePlan]
    store_block: bool = False  # also keep the head-mean image->image block [N, N]
    with_grad: bool = False    # training: keep only the head-mean block, with gradients


@dataclass
class LayerCapture:
    t2i: list[torch.Tensor] = field(default_factory=list)
    mass: list[torch.Tensor] = field(default_factory=list)
    entropy: list[torch.Tensor] = field(default_factory=list)
    i2i: list[torch.Tensor] = field(default_factory=list)
    i2i_filt: list[torch.Tensor] = field(default_factory=list)
    i2i_paper: list[torch.Tensor] = field(default_factory=list)
    i2i_block: list[torch.Tensor] = field(default_factory=list)


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


def _expand_kv(key: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, Hkv, S, D] -> [B, H, S, D]: each kv head serves H / Hkv consecutive query heads."""
    groups = n_heads // key.shape[1]
    return key if groups == 1 else key.repeat_interleave(groups, dim=1)


def row_probabilities(query, key, mask, scaling, rows, is_causal, softcap=None, min_keys: int = 0) -> torch.Tensor:
    """Exact softmax probabilities of query ``rows`` of one sample over the keys they can see.

    Keys past the last one any of ``rows`` may attend to carry zero probability, so they are
    cut off before the product (for causal image rows this halves the work).

    Args:
        query: [H, T, D]; key: [H, S, D] (kv heads already expanded)
        mask:  [T, S] bool (True = may attend) or float additive, or None (causal or full)
        rows:  [R] long, query positions
        min_keys: return at least this many key columns (so a caller's slice always exists)
    Returns:
        [H, R, S'] float32 probabilities over keys 0..S'-1 (S' <= S; later keys have zero)
    """
    if rows.numel() == 0:
        return query.new_zeros(query.shape[0], 0, max(min_keys, 1), dtype=torch.float32)
    m = mask[rows] if mask is not None else None  # [R, S]
    if m is not None and m.dtype == torch.bool:
        visible = torch.nonzero(m.any(0))
        s_end = int(visible.max()) + 1 if len(visible) else key.shape[1]
    elif m is None and is_causal:
        s_end = int(rows.max()) + 1
    else:
        s_end = key.shape[1]
    s_end = min(max(s_end, min_keys), key.shape[1])
    q = query[:, rows].float() * scaling  # [H, R, D]; scaling q, not scores, is the cheaper product
    scores = torch.matmul(q, key[:, :s_end].float().transpose(1, 2))  # [H, R, S']
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if m is not None:
        m = m[:, :s_end]
        if m.dtype == torch.bool:
            scores.masked_fill_(~m, float("-inf"))
        else:
            scores += m.float()
    elif is_causal:
        s = torch.arange(s_end, device=key.device)
        scores.masked_fill_(s[None, None, :] > rows[None, :, None], float("-inf"))
    return torch.softmax(scores, dim=-1)


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
    std, mean = torch.std_mean(block.flatten(-2), dim=-1)
    keep = (block <= (mean + std)[..., None, None]) & (block != 0)
    kept = torch.where(keep, block, 0).sum(-2)
    return kept / keep.sum(-2).clamp_min(1)


class Capture:
    """Context manager: switch the model to the cdviz attention function and collect ``plan``."""

    def __init__(self, adapter, plan: CapturePlan):
        self.adapter = adapter
        self.plan = plan
        self.wanted = set(plan.layers)
        self.layer_of = {id(m): i for i, m in enumerate(adapter.attention_modules())}
        self.results: dict[int, LayerCapture] = {i: LayerCapture() for i in plan.layers}
        self.blocks: dict[int, torch.Tensor] = {}  # with_grad: layer -> [B, N, N]
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
        n_heads = query.shape[1]
        key = _expand_kv(key, n_heads)
        is_causal = getattr(module, "is_causal", True)
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        blocks = []
        for b, sp in enumerate(self.plan.samples):
            start, end = sp.image_span
            if end > key.shape[2]:
                raise CaptureError(f"sample {b}: image span {sp.image_span} beyond sequence length {key.shape[2]}")
            mask = None
            if attention_mask is not None:
                mask = attention_mask[b, 0] if attention_mask.dim() == 4 else attention_mask[b]
            img_rows = torch.arange(start, end, device=query.device)
            if self.plan.with_grad:
                probs = row_probabilities(query[b], key[b], mask, scaling, img_rows, is_causal, softcap, end)
                blocks.append(probs[:, :, start:end].mean(0))  # [N, N] head mean
                continue
            with torch.no_grad():
                text_rows = torch.as_tensor(sp.query_rows, device=query.device, dtype=torch.long)
                img = row_probabilities(query[b], key[b], mask, scaling, img_rows, is_causal, softcap, end)  # [H, N, S']
                text = row_probabilities(query[b], key[b], mask, scaling, text_rows, is_causal, softcap, end)  # [H, Q, S'']
                self._reduce(layer, img[:, :, start:end], text, start, end, b)
        if self.plan.with_grad:
            self.blocks[layer] = blocks

    def _reduce(self, layer: int, block: torch.Tensor, text: torch.Tensor, start: int, end: int, b: int) -> None:
        """block: [H, N, N] image queries x image keys; text: [H, Q, S] text query rows."""
        res = self.results[layer]
        t2i = text[:, :, start:end]  # [H, Q, N]
        i2i = block.mean(1)  # [H, N]
        entropy = -torch.special.xlogy(text, text).sum(-1)  # [H, Q]
        if not (torch.isfinite(i2i).all() and torch.isfinite(entropy).all()):
            raise CaptureError(f"sample {b}, layer {layer}: attention has NaN or inf values")
        res.t2i.append(t2i.cpu())
        res.mass.append(t2i.sum(-1).cpu())
        res.entropy.append(entropy.cpu())
        res.i2i.append(i2i.cpu())
        res.i2i_filt.append(received_filtered(block).cpu())
        mean_block = block.mean(0)  # [N, N]
        res.i2i_paper.append(received_filtered(mean_block).cpu())
        if self.plan.store_block:
            res.i2i_block.append(mean_block.cpu())
