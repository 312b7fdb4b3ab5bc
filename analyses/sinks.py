"""Attention sinks: image tokens that soak up image-to-image attention, and what the filter does.

Per item, model, layer and head, from the received-attention vector r = ``i2i`` [N] (the
attention each image token receives from the image queries; head mean: mean over heads):

    sinks            tokens with r_n > k * mean(r)   (k x what a uniform vector gives)
    n_sinks          how many
    sink_share       sum of r over the sinks / sum of r
    sink_share_filt  the same tokens' share of the filtered vector f = ``i2i_filt`` (head mean:
                     ``i2i_paper``), i.e. what is left of them after the mean + std filter
    cos_raw_filt     cosine(r, f): 1 when the filter changes nothing about the vector's shape

averaged over items; plus how often each grid position is a sink (head mean) among items on
the model's most common grid, to show whether sinks sit at fixed positions.

    sinks(store, k=5) -> SinksResult(frame, positions)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from analyses.common import Progress, iter_usable_shards, usable_items
from cdviz.metrics import cosine
from cdviz.store import RunStore

STATS = ("n_sinks", "sink_share", "sink_share_filt", "cos_raw_filt")


@dataclass(frozen=True)
class SinksResult:
    """frame:     model, layer, head (-1 = head mean), n_sinks, sink_share, sink_share_filt,
               cos_raw_filt (means over items), n_items
    positions: model, layer, token, row, col, frequency (share of items where the token is a
               head-mean sink), on each model's most common grid
    k:         the sink threshold in multiples of the uniform share
    """

    frame: pd.DataFrame
    positions: pd.DataFrame
    k: float

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def to_dict(self) -> dict:
        return {"frame": self.frame.to_dict(orient="list"), "positions": self.positions.to_dict(orient="list"),
                "k": self.k}

    @classmethod
    def from_dict(cls, d: dict) -> SinksResult:
        return cls(pd.DataFrame(d["frame"]), pd.DataFrame(d["positions"]), float(d["k"]))


def sink_stats(raw: torch.Tensor, filt: torch.Tensor, k: float) -> torch.Tensor:
    """Sink statistics of received vectors.

    Args:
        raw: [..., N] unfiltered received attention. filt: [..., N] filtered. k: threshold factor.

    Returns:
        [..., 4]: n_sinks, sink_share, sink_share_filt, cos_raw_filt (NaN shares for all-zero vectors).
    """
    raw, filt = raw.double(), filt.double()
    total, total_f = raw.sum(-1), filt.sum(-1)
    sink = raw > k * raw.mean(-1, keepdim=True)  # [..., N]
    share = (raw * sink).sum(-1) / total
    share_f = (filt * sink).sum(-1) / total_f
    nan = torch.tensor(float("nan"), dtype=raw.dtype)
    return torch.stack([sink.sum(-1).double(), torch.where(total > 0, share, nan),
                        torch.where(total_f > 0, share_f, nan), cosine(raw, filt)], dim=-1)


def sinks(store: RunStore, *, k: float = 5.0, progress: Progress = None) -> SinksResult:
    """Sink tokens per model, layer and head, and how much the mean + std filter removes.

    Args:
        store: an open run.
        k: a token is a sink when it receives more than ``k`` times the uniform share.
        progress: called with items done after each shard.
    """
    if k <= 1:
        raise ValueError(f"k={k}: a sink must receive more than the uniform share; use k > 1")
    usable = usable_items(store)
    frames, positions = [], []
    for model in ("teacher", "student"):
        layers, n_heads = store.layers(model), store.n_heads(model)
        grids = list(zip(usable[f"{model}_grid_rows"].astype(int), usable[f"{model}_grid_cols"].astype(int)))
        modal = max(set(grids), key=grids.count) if grids else (0, 0)
        sums = np.zeros((len(layers), n_heads + 1, len(STATS)))
        counts = np.zeros_like(sums)
        freq = np.zeros((len(layers), modal[0] * modal[1]))
        n_modal = 0
        for rows in iter_usable_shards(store, usable):
            for row in rows.itertuples(index=False):
                raw = torch.from_numpy(store.get(row.uid, model, "i2i"))  # [L, H, N]
                filt = torch.from_numpy(store.get(row.uid, model, "i2i_filt"))  # [L, H, N]
                paper = torch.from_numpy(store.get(row.uid, model, "i2i_paper"))  # [L, N]
                raw = torch.cat([raw, raw.mean(1, keepdim=True)], dim=1)  # [L, H+1, N]
                filt = torch.cat([filt, paper[:, None, :]], dim=1)
                st = sink_stats(raw, filt, k).numpy()  # [L, H+1, 4]
                ok = np.isfinite(st)
                sums += np.where(ok, st, 0)
                counts += ok
                if (int(getattr(row, f"{model}_grid_rows")), int(getattr(row, f"{model}_grid_cols"))) == modal:
                    mean = raw[:, -1].double()  # [L, N]
                    freq += (mean > k * mean.mean(-1, keepdim=True)).numpy()
                    n_modal += 1
            if progress:
                progress(len(rows))
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        for li, layer in enumerate(layers):
            for h in range(n_heads + 1):
                frames.append({"model": model, "layer": int(layer), "head": h if h < n_heads else -1,
                               **{s: float(means[li, h, j]) for j, s in enumerate(STATS)},
                               "n_items": int(counts[li, h, 0])})
            for n in range(freq.shape[1]):
                positions.append({"model": model, "layer": int(layer), "token": n, "row": n // modal[1],
                                  "col": n % modal[1], "frequency": freq[li, n] / max(n_modal, 1)})
    cols = ["model", "layer", "head", *STATS, "n_items"]
    pcols = ["model", "layer", "token", "row", "col", "frequency"]
    return SinksResult(pd.DataFrame(frames, columns=cols), pd.DataFrame(positions, columns=pcols), float(k))
