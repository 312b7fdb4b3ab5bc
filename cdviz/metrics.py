"""Misalignment metrics between two attention maps over image tokens: the one home shared by the
analyses and the training loss, so that what is optimised is what is measured.

A map is a tensor [..., N] over the image tokens of one image, laid out row-major on the model's
patch grid (rows, cols), N = rows * cols. Teacher and student may use different grids; bring
them onto one grid with `align_pair` before comparing (the coarser grid on each axis, reached by
conservative remapping over exact cell overlaps, so mass is kept and no map is spread). Every
metric takes any leading batch dims and returns one value per map, [...].

    grids        overlap_matrix, resample_to_grid, common_grid, align_pair
    metrics      js_divergence, spearman, topk_iou, emd_2d (exact), emd_2d_sliced (approx.), cosine
    VAT          vat_cosine_from_vectors (the measure inside the VAT loss; the loss is cdviz/vat.py)
    registry     METRICS, HIGHER_IS_ALIGNED, register_metric, get_metric, list_metrics
    helper       upcast (compute in float32 or wider)

Tests: .venv/bin/pytest tests/core/test_metrics.py -q
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from einops import rearrange
from scipy import sparse
from scipy.optimize import linprog

Grid = tuple[int, int]  # (rows, cols) of the patch grid
MetricFn = Callable[[torch.Tensor, torch.Tensor, Grid], torch.Tensor]

EPS = 1e-12


def upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32: fp16/bf16 maps from the store or the trainer lose too much in sums."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def box_cover(boxes: Sequence[dict], image_size: tuple[float, float], grid: tuple[int, int]) -> np.ndarray:
    """Share of each patch cell's area inside the union of ``boxes`` (exact, by edge compression).

    The processors of the supported models resize the whole image onto the patch grid, so cell
    (r, c) covers pixels [c W / cols, (c+1) W / cols) x [r H / rows, (r+1) H / rows). The union of
    the boxes is cut along every box and cell edge into elementary rectangles, each wholly in or
    out of the union, whose areas are summed per cell.

    Args:
        boxes: dicts with pixel x, y (top-left), w, h.
        image_size: (width, height) in pixels.
        grid: (rows, cols).

    Returns:
        [rows * cols] in [0, 1], row-major.
    """
    rows, cols = grid
    width, height = image_size
    cover = np.zeros((rows, cols))
    if not boxes:
        return cover.reshape(-1)
    # Work in cell units: x in [0, cols], y in [0, rows].
    bx0 = np.clip([b["x"] / width * cols for b in boxes], 0, cols)
    bx1 = np.clip([(b["x"] + b["w"]) / width * cols for b in boxes], 0, cols)
    by0 = np.clip([b["y"] / height * rows for b in boxes], 0, rows)
    by1 = np.clip([(b["y"] + b["h"]) / height * rows for b in boxes], 0, rows)
    xs = np.unique(np.concatenate([np.arange(cols + 1), bx0, bx1]))
    ys = np.unique(np.concatenate([np.arange(rows + 1), by0, by1]))
    mx, my = (xs[1:] + xs[:-1]) / 2, (ys[1:] + ys[:-1]) / 2  # elementary rectangle centres
    inside_x = (mx[None, :] > bx0[:, None]) & (mx[None, :] < bx1[:, None])  # [B, nx]
    inside_y = (my[None, :] > by0[:, None]) & (my[None, :] < by1[:, None])  # [B, ny]
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).any(0)  # [ny, nx]
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :] * inside  # [ny, nx], cell area is 1
    cell_r = np.minimum(my.astype(int), rows - 1)
    cell_c = np.minimum(mx.astype(int), cols - 1)
    np.add.at(cover, (cell_r[:, None], cell_c[None, :]), area)
    return np.clip(cover, 0, 1).reshape(-1)


def _normalise(p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """[..., N] -> [..., N] clamped >= 0 and summing to 1 (an all-zero map stays all zero)."""
    p = upcast(p).clamp_min(0)
    return p / p.sum(-1, keepdim=True).clamp_min(eps)


def _check_pair(p: torch.Tensor, q: torch.Tensor) -> None:
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(f"maps over {p.shape[-1]} and {q.shape[-1]} tokens; resample them onto one grid "
                         "first (align_pair)")


# ---------------------------------------------------------------------------------------- grids

def overlap_matrix(n: int, m: int) -> np.ndarray:
    """[n, m] share of each of n equal cells on one axis that lies inside each of m equal cells.

    Both partitions cover the same extent (the whole image along that axis), so rows sum to 1.
    Exact for any n, m: in units of 1/(n m), source cell i is [i m, (i + 1) m) and target cell j
    is [j n, (j + 1) n), so every edge is an integer.
    """
    if n < 1 or m < 1:
        raise ValueError(f"an axis needs at least one cell (got {n} and {m})")
    i, j = np.arange(n)[:, None], np.arange(m)[None, :]
    overlap = np.minimum((i + 1) * m, (j + 1) * n) - np.maximum(i * m, j * n)
    return np.clip(overlap, 0, None) / m


def _moment_matrices(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, m] integrals of u and of u^2 - 1/12 over the part of source cell i inside target cell
    j, u in [-1/2, 1/2] the position within the source cell in its widths (both 0 on whole cells)."""
    i, j = np.arange(n)[:, None], np.arange(m)[None, :]
    lo = np.maximum(i * m, j * n).astype(np.float64)  # in units of 1/(n m), as in overlap_matrix
    hi = np.minimum((i + 1) * m, (j + 1) * n).astype(np.float64)
    inside = hi > lo
    u0, u1 = (lo - (i + 0.5) * m) / m, (hi - (i + 0.5) * m) / m
    first = np.where(inside, (u1**2 - u0**2) / 2, 0.0)
    second = np.where(inside, (u1**3 - u0**3) / 3 - (u1 - u0) / 12, 0.0)
    return first, second


def _remap_last_axis(x: torch.Tensor, m: int) -> torch.Tensor:
    """[..., n] mass per cell -> [..., m] mass per cell of another partition of the same extent."""
    n = x.shape[-1]
    if n == m:
        return x
    share = torch.as_tensor(overlap_matrix(n, m), dtype=x.dtype, device=x.device)
    first, second = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in _moment_matrices(n, m))
    # Density in a cell: x + a u + b (u^2 - 1/12), the parabola whose means over the cell and its
    # two neighbours are theirs (outside the image a cell is its own neighbour). Its mean is x, so
    # mass is kept whatever a and b are; where it would dip below 0, a and b are scaled down until
    # its minimum is 0 (the cell's own mass is >= 0, so a scale in [0, 1] always exists).
    padded = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
    left, right = padded[..., :-2], padded[..., 2:]
    a, b = (right - left) / 2, (right - 2 * x + left) / 2

    def density(u: torch.Tensor) -> torch.Tensor:
        return x + a * u + b * (u * u - 1 / 12)

    vertex = torch.where(b > 0, (-a / (2 * b).clamp_min(EPS)).clamp(-0.5, 0.5), torch.full_like(x, 0.5))
    low = torch.minimum(torch.minimum(density(torch.full_like(x, -0.5)), density(torch.full_like(x, 0.5))),
                        density(vertex))
    scale = torch.where(low < 0, x / (x - low).clamp_min(EPS), torch.ones_like(x)).clamp(0, 1)
    return x @ share + (scale * a) @ first + (scale * b) @ second


def resample_to_grid(maps: torch.Tensor, grid: Grid, target_grid: Grid) -> torch.Tensor:
    """Move maps from one patch grid to another as mass over the image (conservative remapping).

    Every patch grid tiles the whole image, so a cell covers the same region of the image
    whatever the grid, and a target cell should receive the mass that lies in its region. Along
    each axis the density within a source cell is the parabola that matches the means of the cell
    and its two neighbours (scaled toward flat where it would go negative; piecewise-parabolic
    conservative remapping), and each target cell gets the integral of that density over its
    exact overlap with every source cell, one axis after the other. Consequences: every cell's
    mass is kept (totals are exact); a target cell made of whole source cells gets exactly their
    sum (8x8 -> 4x4 sums 2x2 blocks); at non-divisible ratios (27x27 -> 24x24, 8x8 -> 6x6) a
    cell split between two target cells is split by where its mass lies. Splitting by area alone
    widens every map by a fraction of a cell, which biased layer matching toward sharper layers.
    Negative entries are clamped to 0 first; the result is renormalised to sum 1, and an all-zero
    map stays all zero (no NaN).
    Differentiable (almost everywhere).

    Args:
        maps: [..., rows * cols], row-major on ``grid``.
        grid: (rows, cols) of the input.
        target_grid: (tr, tc) of the output.

    Returns:
        [..., tr * tc], float32 or wider.
    """
    rows, cols = grid
    tr, tc = target_grid
    if maps.shape[-1] != rows * cols:
        raise ValueError(f"maps have {maps.shape[-1]} tokens but grid {tuple(grid)} has {rows * cols}")
    out = upcast(maps).clamp_min(0)
    if (rows, cols) != (tr, tc):
        img = rearrange(out, "... (r c) -> ... c r", r=rows, c=cols)
        img = _remap_last_axis(img, tr).transpose(-1, -2)  # [..., tr, cols]
        out = rearrange(_remap_last_axis(img, tc), "... r c -> ... (r c)").clamp_min(0)  # rounding only
    total = out.sum(-1, keepdim=True)
    return out / torch.where(total > 0, total, torch.ones_like(total))


def common_grid(grid_a: Grid, grid_b: Grid) -> Grid:
    """The grid two maps are compared on: the coarser of the two on each axis.

    Both maps are then only gathered, never spread: a coarse map brought onto a finer grid says
    nothing about where its mass lies inside its cells, and every distance would grow with the
    grid ratio (a student equal to its teacher up to noise scored 0.15 instead of 0.001 on 8x8 vs
    4x4 with bilinear upsampling).
    E.g. (27, 27) and (24, 24) -> (24, 24); (2, 8) and (4, 4) -> (2, 4).
    """
    return (min(grid_a[0], grid_b[0]), min(grid_a[1], grid_b[1]))


def align_pair(a: torch.Tensor, grid_a: Grid, b: torch.Tensor, grid_b: Grid, grid: Grid | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, Grid]:
    """Bring two maps onto one grid by `resample_to_grid` (conservative: mass per region kept).

    Args:
        a: [..., ra * ca] on ``grid_a``.
        b: [..., rb * cb] on ``grid_b``.
        grid: the grid to compare on, e.g. a fixed image-space grid shared by several runs;
            default `common_grid(grid_a, grid_b)` (the coarser on each axis).

    Returns:
        (a', b', grid): both [..., r * c] on ``grid``, normalised.
    """
    grid = tuple(grid) if grid is not None else common_grid(grid_a, grid_b)
    return resample_to_grid(a, grid_a, grid), resample_to_grid(b, grid_b, grid), grid


# -------------------------------------------------------------------------------------- metrics

def js_divergence(p: torch.Tensor, q: torch.Tensor, base: float = math.e, eps: float = EPS) -> torch.Tensor:
    """Jensen-Shannon divergence between two maps, each normalised to sum 1 first.

    JS = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2. In natural log (the default) it lies
    in [0, ln 2]: 0 for identical maps, ln 2 for maps with disjoint support; ``base=2`` gives
    [0, 1]. Lower is more aligned. Zero entries contribute 0 (0 log 0 = 0).

    Args:
        p, q: [..., N], non-negative, not necessarily normalised.

    Returns:
        [...].
    """
    _check_pair(p, q)
    p, q = _normalise(p, eps), _normalise(q, eps)
    # KL(p || m) = sum p log(2p / (p + q)). The ratio form stays finite for denormal entries, where
    # m = (p + q) / 2 underflows to 0 while p does not (found by the hypothesis tests).
    s = p + q
    kl_pm = torch.xlogy(p, torch.where(p > 0, 2 * p / s, 1.0)).sum(-1)
    kl_qm = torch.xlogy(q, torch.where(q > 0, 2 * q / s, 1.0)).sum(-1)
    # Rounding can leave -1e-17 for identical maps; the divergence is never negative.
    return ((kl_pm + kl_qm) / 2).clamp_min(0) / math.log(base)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """[..., N] -> [..., N] 1-based ranks along the last dim; tied values share their mean rank."""
    values, order = torch.sort(x, dim=-1)
    values = values.contiguous()
    # Tied values occupy sorted positions [first, last); their ranks first+1 .. last average to
    # (first + 1 + last) / 2.
    first = torch.searchsorted(values, values, right=False)
    last = torch.searchsorted(values, values, right=True)
    mean_rank = (first + last + 1).to(torch.float64) / 2
    return torch.empty_like(mean_rank).scatter_(-1, order, mean_rank)


def spearman(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between two maps (Pearson correlation of average ranks).

    Ties get the mean of the ranks they span, as in scipy.stats.spearmanr. A constant map has no
    ranking and gives NaN (as scipy does). Higher is more aligned; not differentiable.

    Args:
        p, q: [..., N].

    Returns:
        [...] in [-1, 1], dtype of the promoted inputs.
    """
    _check_pair(p, q)
    rp, rq = _average_ranks(upcast(p)), _average_ranks(upcast(q))  # [..., N] float64
    rp = rp - rp.mean(-1, keepdim=True)
    rq = rq - rq.mean(-1, keepdim=True)
    rho = (rp * rq).sum(-1) / torch.sqrt((rp * rp).sum(-1) * (rq * rq).sum(-1))
    return rho.to(upcast(p).dtype)


def topk_iou(p: torch.Tensor, q: torch.Tensor, k: int | None = None, frac: float | None = None) -> torch.Tensor:
    """Intersection over union of the k most attended tokens of each map.

    Give exactly one of ``k`` or ``frac``; ``frac`` means k = max(1, round(frac * N)). Among tied
    values at the cut, torch.topk picks which ones are in. Higher is more aligned; in [0, 1].

    Args:
        p, q: [..., N].

    Returns:
        [...].
    """
    _check_pair(p, q)
    n = p.shape[-1]
    if (k is None) == (frac is None):
        raise ValueError("give exactly one of k or frac")
    if k is None:
        k = max(1, round(frac * n))
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is outside 1..{n}")
    in_p = torch.zeros(p.shape, dtype=torch.bool, device=p.device).scatter_(-1, p.topk(k, dim=-1).indices, True)
    in_q = torch.zeros(q.shape, dtype=torch.bool, device=q.device).scatter_(-1, q.topk(k, dim=-1).indices, True)
    inter = (in_p & in_q).sum(-1).to(upcast(p).dtype)
    return inter / (2 * k - inter)


def _cell_coords(grid: Grid) -> np.ndarray:
    """[rows * cols, 2] (row, col) of each token, row-major, in patch units."""
    rows, cols = grid
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([r, c], axis=1).astype(np.float64)


def _emd_one(p: np.ndarray, q: np.ndarray, coords: np.ndarray) -> float:
    """Exact earth mover's distance between two normalised maps [N] by linear programming."""
    # With a metric ground distance the optimal plan never moves the mass p and q share (the
    # distance depends on p - q only), so only the surplus of p travels to the deficit; this
    # shrinks the problem from N*N to n_src*n_dst variables.
    diff = p - q
    src, dst = np.flatnonzero(diff > 0), np.flatnonzero(diff < 0)
    if src.size == 0 or dst.size == 0:
        return 0.0
    supply, demand = diff[src], -diff[dst]
    moved = supply.sum()
    supply, demand = supply / moved, demand / demand.sum()  # unit totals keep HiGHS well scaled
    cost = np.linalg.norm(coords[src, None, :] - coords[None, dst, :], axis=-1).ravel()  # [ns * nd]
    ns, nd = src.size, dst.size
    out_of_src = sparse.kron(sparse.eye(ns), np.ones((1, nd)))  # flow leaving each source
    into_dst = sparse.kron(np.ones((1, ns)), sparse.eye(nd))  # flow reaching each sink
    # One balance constraint is implied by the others; dropping it keeps the system full rank.
    a_eq = sparse.vstack([out_of_src, into_dst]).tocsr()[:-1]
    b_eq = np.concatenate([supply, demand])[:-1]
    res = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs",
                  options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    if res.status != 0:
        raise RuntimeError(f"earth mover's distance: linprog failed ({res.message})")
    return float(res.fun) * moved


def emd_2d(p: torch.Tensor, q: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Exact spatial earth mover's distance (Wasserstein-1) between two maps on one patch grid.

    Both maps are normalised to sum 1; the ground distance is Euclidean between patch centres in
    patch units, so a unit mass moved one cell costs 1 and one diagonal cell sqrt(2). Solved as a
    transport linear program (scipy HiGHS, tolerances 1e-10) on the CPU, map by map: about a
    second per pair on a 27x27 grid, meant for analyses. Use `emd_2d_sliced` for many maps.
    Lower is more aligned; not differentiable.

    Args:
        p, q: [..., rows * cols] on ``grid``.
        grid: (rows, cols).

    Returns:
        [...], on p's device.
    """
    _check_pair(p, q)
    if p.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"maps have {p.shape[-1]} tokens but grid {tuple(grid)} has {grid[0] * grid[1]}")
    lead = torch.broadcast_shapes(p.shape[:-1], q.shape[:-1])
    pn = _normalise(p.detach()).expand(*lead, -1).reshape(-1, p.shape[-1]).cpu().double().numpy()
    qn = _normalise(q.detach()).expand(*lead, -1).reshape(-1, q.shape[-1]).cpu().double().numpy()
    coords = _cell_coords(grid)
    out = [_emd_one(a, b, coords) for a, b in zip(pn, qn)]
    return torch.tensor(out, dtype=upcast(p).dtype, device=p.device).reshape(lead)


def emd_2d_sliced(p: torch.Tensor, q: torch.Tensor, grid: Grid, n_directions: int = 64) -> torch.Tensor:
    """APPROXIMATE earth mover's distance: sliced Wasserstein-1, rescaled. Fast, batched, torch.

    Projects the grid onto ``n_directions`` evenly spaced directions in [0, pi), takes the exact
    1-D Wasserstein-1 on each (the area between the two CDFs) and averages. Sliced W1 shrinks a
    shift d by the mean |cos| over directions, so the average is divided by that mean taken for an
    axis-aligned shift: a point mass moved along either grid axis then scores exactly its
    distance (``n_directions`` must be even for both axes to be exact), other point-mass shifts
    within 0.1% with the default 64 directions.
    For general maps it is a proxy that tracks `emd_2d`, not equal to it. Lower is more aligned;
    differentiable.

    Args:
        p, q: [..., rows * cols] on ``grid``.
        grid: (rows, cols).

    Returns:
        [...].
    """
    _check_pair(p, q)
    if n_directions < 2 or n_directions % 2:
        raise ValueError(f"n_directions={n_directions}; use an even number >= 2")
    diff = _normalise(p) - _normalise(q)  # [..., N]
    theta = torch.arange(n_directions, dtype=diff.dtype, device=diff.device) * (math.pi / n_directions)
    dirs = torch.stack([torch.sin(theta), torch.cos(theta)], dim=-1)  # [K, 2] as (row, col) weights
    coords = torch.as_tensor(_cell_coords(grid), dtype=diff.dtype, device=diff.device)  # [N, 2]
    proj = dirs @ coords.T  # [K, N] position of each token along each direction
    pos, order = proj.sort(dim=-1)  # [K, N]
    gaps = pos.diff(dim=-1)  # [K, N-1]
    diff_sorted = diff[..., order]  # [..., K, N]
    cdf_gap = diff_sorted.cumsum(-1)[..., :-1].abs()  # [..., K, N-1]
    w1 = (cdf_gap * gaps).sum(-1).mean(-1)  # [...]
    return w1 / dirs[:, 1].abs().mean()


def cosine(p: torch.Tensor, q: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Cosine similarity of two maps as vectors (scale-free, so no normalisation needed).

    A zero vector gives 0. Higher is more aligned; differentiable.

    Args:
        p, q: [..., N].

    Returns:
        [...] in [-1, 1] ([0, 1] for non-negative maps).
    """
    _check_pair(p, q)
    p, q = upcast(p), upcast(q)
    norms = torch.linalg.vector_norm(p, dim=-1) * torch.linalg.vector_norm(q, dim=-1)
    return (p * q).sum(-1) / norms.clamp_min(eps)


def vat_cosine_from_vectors(s_vec: torch.Tensor, t_vec: torch.Tensor,
                            student_grid: Grid | None = None, teacher_grid: Grid | None = None) -> torch.Tensor:
    """Cosine between the student's and teacher's received-attention vectors: the VAT measure.

    The VAT loss is sum over layers of 1 - this (cdviz/vat.py); analyses that recorded received
    vectors (per head or head-mean) call it directly so they report what training optimises.
    When the grids differ, both vectors are first gathered onto `common_grid` (`align_pair`;
    cosine does not depend on the renormalisation that brings).

    Args:
        s_vec: [..., Ns] received attention per student image token.
        t_vec: [..., Nt] received attention per teacher image token.
        student_grid, teacher_grid: (rows, cols); needed only when Ns != Nt.

    Returns:
        [...].
    """
    if student_grid is not None and teacher_grid is not None and tuple(student_grid) != tuple(teacher_grid):
        s_vec, t_vec, _ = align_pair(s_vec, student_grid, t_vec, teacher_grid)
    elif s_vec.shape[-1] != t_vec.shape[-1]:
        raise ValueError(f"student vectors over {s_vec.shape[-1]} tokens, teacher over {t_vec.shape[-1]}; "
                         "pass student_grid and teacher_grid to resample them")
    return cosine(s_vec, t_vec)


# ------------------------------------------------------------------------------------- registry

def _vat_cosine(p: torch.Tensor, q: torch.Tensor, grid: Grid) -> torch.Tensor:
    return vat_cosine_from_vectors(p, q)


def _js(p: torch.Tensor, q: torch.Tensor, grid: Grid) -> torch.Tensor:
    return js_divergence(p, q)


def _spearman(p: torch.Tensor, q: torch.Tensor, grid: Grid) -> torch.Tensor:
    return spearman(p, q)


def _topk_iou(p: torch.Tensor, q: torch.Tensor, grid: Grid) -> torch.Tensor:
    return topk_iou(p, q, frac=0.1)  # the most attended 10% of the image


METRICS: dict[str, MetricFn] = {
    "vat_cosine": _vat_cosine,
    "js": _js,
    "spearman": _spearman,
    "topk_iou": _topk_iou,
    "emd": emd_2d,
    "emd_sliced": emd_2d_sliced,
}
"""name -> fn(p [..., N], q [..., N], grid) -> [...]; p and q on the same grid (see align_pair)."""

HIGHER_IS_ALIGNED: dict[str, bool] = {
    "vat_cosine": True,
    "js": False,
    "spearman": True,
    "topk_iou": True,
    "emd": False,
    "emd_sliced": False,
}
"""name -> whether a larger value means the two maps agree more (similarity vs. distance)."""


def register_metric(name: str, fn: MetricFn, overwrite: bool = False, *, higher_is_aligned: bool) -> None:
    """Add ``fn(p, q, grid) -> [...]`` under ``name``; say which direction means aligned."""
    if name in METRICS and not overwrite:
        raise ValueError(f"metric {name!r} already exists; pass overwrite=True to replace it")
    METRICS[name] = fn
    HIGHER_IS_ALIGNED[name] = bool(higher_is_aligned)


def get_metric(name: str) -> MetricFn:
    """The registered metric ``name``; KeyError listing the registered names otherwise."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; registered: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def list_metrics() -> list[str]:
    """Registered metric names, sorted."""
    return sorted(METRICS)
