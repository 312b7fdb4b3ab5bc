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
    i2i_filt   [H, N]     same, keeping only entries <= mean + std of that head's block
    i2i_paper  [N]        the paper's form: head-mean block, mean+std filter, received vector
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

from cdviz.vat import vat_received, vat_threshold

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


class CaptureError(RuntimeError):
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


def row_probabilities(query, key, mask, scaling, rows, is_causal, softcap=None) -> torch.Tensor:
    """Exact softmax probabilities of query ``rows`` of one sample over all keys.

    Args:
        query: [H, T, D]; key: [H, S, D] (kv heads already expanded)
        mask:  [T, S] bool (True = may attend) or float additive, or None
        rows:  [R] long, query positions
    Returns:
        [H, R, S] float32 probabilities
    """
    q = query[:, rows].float()  # [H, R, D]
    scores = torch.einsum("hrd,hsd->hrs", q, key.float()) * scaling  # [H, R, S]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        m = mask[rows]  # [R, S]
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
    elif is_causal:
        s = torch.arange(key.shape[1], device=key.device)
        scores = scores.masked_fill(s[None, None, :] > rows[None, :, None], float("-inf"))
    return torch.softmax(scores, dim=-1)


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
            n = end - start
            if end > key.shape[2]:
                raise CaptureError(f"sample {b}: image span {sp.image_span} beyond sequence length {key.shape[2]}")
            mask = None
            if attention_mask is not None:
                mask = attention_mask[b, 0] if attention_mask.dim() == 4 else attention_mask[b]
            img_rows = torch.arange(start, end, device=query.device)
            if self.plan.with_grad:
                probs = row_probabilities(query[b], key[b], mask, scaling, img_rows, is_causal, softcap)
                blocks.append(probs[:, :, start:end].mean(0))  # [N, N] head mean
                continue
            with torch.no_grad():
                rows = torch.cat([img_rows, torch.as_tensor(sp.query_rows, device=query.device, dtype=torch.long)])
                probs = row_probabilities(query[b], key[b], mask, scaling, rows, is_causal, softcap)  # [H, N+Q, S]
                if not torch.isfinite(probs).all():
                    raise CaptureError(f"sample {b}, layer {layer}: attention has NaN or inf values")
                self._reduce(layer, probs, n, start, end)
        if self.plan.with_grad:
            self.blocks[layer] = blocks

    def _reduce(self, layer: int, probs: torch.Tensor, n: int, start: int, end: int) -> None:
        res = self.results[layer]
        block = probs[:, :n, start:end]  # [H, N, N] image queries x image keys
        text = probs[:, n:]  # [H, Q, S]
        t2i = text[:, :, start:end]  # [H, Q, N]
        res.t2i.append(t2i.cpu())
        res.mass.append(t2i.sum(-1).cpu())
        res.entropy.append(-(text * torch.log(text.clamp_min(1e-30))).sum(-1).cpu())
        res.i2i.append(vat_received(block).cpu())
        res.i2i_filt.append(vat_received(block, block <= vat_threshold(block)[..., None, None]).cpu())
        mean_block = block.mean(0)  # [N, N]
        res.i2i_paper.append(vat_received(mean_block, mean_block <= vat_threshold(mean_block)).cpu())
        if self.plan.store_block:
            res.i2i_block.append(mean_block.cpu())
