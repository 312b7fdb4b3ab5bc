"""Attribution: does where a model *looks* (attention) match what its answer *depends on*?

The one analysis that loads the models (paths from ``manifest["models"][m]["path"]``, loaded as the run
recorded them: ``--adapter`` / ``--grid``, `RunStore.model_loading`). For a seeded
sample of items and each model:

  1. rebuild the recorded query (the item's first query, `cdviz.evaluate.plan_queries`) with the
     adapter's ``build_batch``, and capture the language model's input embeddings (a forward
     pre-hook on the decoder, so the vision tower and connector run as usual);
  2. f(x) = the logit of the letter the model chose (the "yes" token for match2x2 items) at
     the answer position, as a function of the projected image features x [N, D] at the image
     positions, everything else fixed;
  3. captum IntegratedGradients from a baseline where every image token is the mean image token
     (same content, no spatial layout; or all zeros), summed over the hidden dim -> a signed
     attribution per image token [N] (and the completeness gap ``delta``);
  4. compare |attribution| with each recorded layer's head-mean answer-row attention (t2i) of
     the same item and model: spearman and topk_iou (top 10%) from cdviz.metrics. Magnitude,
     because a patch that pushes the logit down is as much "used" as one that pushes it up.

    attribution(store, n_items=8) -> AttributionResult(frame, maps)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from analyses.common import Progress, load_maps, usable_items
from cdviz.metrics import spearman, topk_iou
from cdviz.store import RunStore


@dataclass(frozen=True)
class AttributionResult:
    """frame: uid, model, layer, spearman, topk_iou (|attribution| vs that layer's attention)
    maps:  uid, model, token, row, col, attribution (signed, per image token)
    items: uid, model, target_token, logit, delta (IG completeness gap), grid_rows, grid_cols
    """

    frame: pd.DataFrame
    maps: pd.DataFrame
    items: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def by_layer(self) -> pd.DataFrame:
        """Mean agreement per (model, layer) over the sampled items."""
        return self.frame.groupby(["model", "layer"], sort=True).agg(
            spearman=("spearman", "mean"), topk_iou=("topk_iou", "mean"), n=("uid", "count")).reset_index()

    def to_dict(self) -> dict:
        return {k: getattr(self, k).to_dict(orient="list") for k in ("frame", "maps", "items")}

    @classmethod
    def from_dict(cls, d: dict) -> AttributionResult:
        return cls(pd.DataFrame(d["frame"]), pd.DataFrame(d["maps"]), pd.DataFrame(d["items"]))


def attribution(store: RunStore, *, n_items: int = 8, seed: int = 0, n_steps: int = 16, baseline: str = "mean",
                device: str = "cpu", dtype: str = "float32", uids: list[str] | None = None,
                progress: Progress = None) -> AttributionResult:
    """Integrated-gradients attribution over image tokens vs recorded attention, both models.

    Args:
        store: an open run whose manifest model paths and probe set are still on disk.
        n_items: how many usable items to sample (seeded); ignored when ``uids`` is given.
        n_steps: integration steps (one decoder forward + backward each).
        baseline: "mean" (every image token set to the mean image token: the same image content
            with no spatial layout, so only where things are gets attributed) or "zero" (the
            all-zero embedding; the decoder's first norm is singular there, so integrals
            converge slowly).
        uids: explicit items instead of a sample.
        device, dtype: where and how the models run.
        progress: called with 1 after each item and model.
    """
    from cdviz.models import load_model
    from cdviz.probes.probeset import load_probeset

    usable = usable_items(store)
    if baseline not in ("mean", "zero"):
        raise ValueError(f"unknown baseline {baseline!r}; use 'mean' or 'zero'")
    if uids is None:
        rng = np.random.default_rng(seed)
        uids = sorted(rng.choice(usable.uid.to_numpy(), size=min(n_items, len(usable)), replace=False).tolist())
    probes = load_probeset(store.manifest["probes"]["path"], check_images=False)
    by_uid = probes.by_uid()
    missing = [u for u in uids if u not in by_uid]
    if missing:
        raise ValueError(f"items {missing[:3]} are not in the probe set {probes.root}; attribution needs the "
                         "probe set the run was recorded from")
    frames, maps, items = [], [], []
    for model in ("teacher", "student"):
        path = store.model_info(model)["path"]
        adapter = load_model(path, dtype=dtype, device=device, **store.model_loading(model))
        for p in adapter.model.parameters():
            p.requires_grad_(False)  # gradients are needed for the inputs only
        for uid in uids:
            attr, info = _attribute(adapter, probes, by_uid[uid], store, model, n_steps, baseline)
            rows, cols = info["grid_rows"], info["grid_cols"]
            items.append({"uid": uid, "model": model, **info})
            maps.append(pd.DataFrame({"uid": uid, "model": model, "token": np.arange(len(attr)),
                                      "row": np.arange(len(attr)) // cols, "col": np.arange(len(attr)) % cols,
                                      "attribution": attr.numpy().astype(np.float64)}))
            att = torch.from_numpy(load_maps(store, uid, model, "t2i")).mean(1)  # [L, N] head mean
            if att.shape[-1] != len(attr):
                raise ValueError(f"{uid}/{model}: {len(attr)} image tokens now, {att.shape[-1]} recorded; the "
                                 "model or processor changed since recording")
            mag = attr.abs()[None, :].expand_as(att)
            for layer, rho, iou in zip(store.layers(model), spearman(mag, att).tolist(),
                                       topk_iou(mag, att, frac=0.1).tolist()):
                frames.append({"uid": uid, "model": model, "layer": int(layer), "spearman": rho, "topk_iou": iou})
            if progress:
                progress(1)
        del adapter
    return AttributionResult(pd.DataFrame(frames), pd.concat(maps, ignore_index=True) if maps else pd.DataFrame(),
                             pd.DataFrame(items))


def _target(adapter, store: RunStore, model: str, item, query) -> int:
    """Token whose logit is explained: the chosen letter of the recorded query, or "yes"."""
    from cdviz.evaluate import yes_token_id

    if item.kind != "choice":
        return yes_token_id(adapter)
    out = store.outcomes
    order = "".join(str(j) for j in query.order)
    row = out[(out.model == model) & (out.uid == item.uid) & (out.order.astype(str) == order)]
    if not len(row):
        raise ValueError(f"{item.uid}: no {model} outcome for order {order}; the store's outcomes are incomplete")
    letter = list(query.order).index(int(row.iloc[0].chosen))
    return adapter.letter_token_ids(len(query.order))[letter]


def _attribute(adapter, probes, item, store, model, n_steps, baseline) -> tuple[torch.Tensor, dict]:
    """[N] signed attribution of the target logit to each image token, and facts about the run."""
    from captum.attr import IntegratedGradients

    from cdviz.evaluate import load_image, plan_queries

    query = plan_queries(item)[0]
    image = load_image(probes, item, query.image)
    device = adapter.model.device
    batch = adapter.build_batch([image], [query.text], [item.uid]).to(device, adapter.model.dtype)
    (start, end), grid = batch.image_spans[0][0], batch.grids[0][0]
    pos = int(batch.answer_pos[0])
    target = _target(adapter, store, model, item, query)
    lm = adapter.language_model()
    captured: dict = {}

    def grab(_module, args, kwargs):
        captured.update(kwargs)

    handle = lm.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            adapter.model(**batch.inputs, use_cache=False)
    finally:
        handle.remove()
    embeds = captured.pop("inputs_embeds").detach()  # [1, T, D]
    head = adapter.model.get_output_embeddings()

    def logit(x: torch.Tensor) -> torch.Tensor:
        """x [k, N, D] image features -> [k] target logits (one decoder pass per row)."""
        out = []
        for i in range(x.shape[0]):
            e = torch.cat([embeds[:, :start], x[i:i + 1], embeds[:, end:]], dim=1)  # [1, T, D]
            hidden = lm(**{**captured, "inputs_embeds": e}).last_hidden_state[0, pos]  # [D]
            out.append(head(hidden)[target])
        return torch.stack(out).float()

    x0 = embeds[:, start:end]  # [1, N, D]
    base = x0.mean(1, keepdim=True).expand_as(x0) if baseline == "mean" else torch.zeros_like(x0)
    with torch.enable_grad():
        attr, delta = IntegratedGradients(logit).attribute(
            x0, baselines=base, n_steps=n_steps, internal_batch_size=n_steps,
            return_convergence_delta=True)
        with torch.no_grad():
            value = float(logit(x0)[0])
    return attr[0].sum(-1).float().cpu(), {"target_token": int(target), "logit": value, "delta": float(delta[0]),
                                           "grid_rows": int(grid[0]), "grid_cols": int(grid[1])}
