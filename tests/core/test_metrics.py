"""Misalignment metrics and the VAT loss: hand-computed values on tiny maps, scipy references with
fixed seeds, and properties (cdviz/metrics.py, cdviz/vat.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from scipy.optimize import linprog
from scipy.spatial.distance import jensenshannon

from cdviz import metrics
from cdviz.metrics import (HIGHER_IS_ALIGNED, METRICS, align_pair, common_grid, cosine, emd_2d, emd_2d_sliced,
                           get_metric, js_divergence, list_metrics, resample_to_grid, spearman,
                           topk_iou, vat_cosine_from_vectors)
from cdviz.vat import vat_layer_terms, vat_loss, vat_received, vat_threshold, vat_vectors


def _dirac(grid, row, col, dtype=torch.float64):
    m = torch.zeros(grid[0] * grid[1], dtype=dtype)
    m[row * grid[1] + col] = 1.0
    return m


def _random_blocks(*shape, seed):
    """Softmax-normalised attention-like blocks [..., N, N]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).mul(2).softmax(-1)


# ---------------------------------------------------------------------------------------- grids

def test_resample_identity_when_grids_equal():
    m = torch.rand(2, 3, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = m / m.sum(-1, keepdim=True)
    torch.testing.assert_close(resample_to_grid(m, (3, 4), (3, 4)), m)


def test_resample_uniform_stays_uniform_up_and_down():
    up = resample_to_grid(torch.full((4,), 0.25), (2, 2), (4, 4))
    torch.testing.assert_close(up, torch.full((16,), 1 / 16))
    down = resample_to_grid(torch.full((16,), 1 / 16), (4, 4), (2, 2))
    torch.testing.assert_close(down, torch.full((4,), 0.25))


def test_overlap_matrix_hand_case_and_rows_sum_to_one():
    # Thirds against halves: the middle third lies half in each half.
    np.testing.assert_allclose(metrics.overlap_matrix(3, 2), [[1, 0], [0.5, 0.5], [0, 1]])
    for n, m in [(27, 24), (24, 27), (7, 3), (1, 5), (5, 1)]:
        o = metrics.overlap_matrix(n, m)
        np.testing.assert_allclose(o.sum(1), 1.0)
        np.testing.assert_allclose(o.sum(0), n / m)  # every target cell covers n / m source cells


def test_resample_hand_case_keeps_mass_in_its_cell():
    # A 1x2 map with all its mass in the left half keeps it in the left half of a 1x4 grid. Within
    # the cell the density is 1 - u/2 - (u^2 - 1/12)/2 (means 1, 1, 0 over the cell, its mirrored
    # outer neighbour and its right neighbour), whose integral over u in [-1/2, 0] is 9/16; the empty
    # cell's parabola would dip below 0, so it is scaled flat and stays empty.
    out = resample_to_grid(torch.tensor([1.0, 0.0], dtype=torch.float64), (1, 2), (1, 4))
    torch.testing.assert_close(out, torch.tensor([9 / 16, 7 / 16, 0.0, 0.0], dtype=torch.float64))
    # and 2x2 blocks are summed going back
    fine = torch.arange(16.0, dtype=torch.float64)
    coarse = resample_to_grid(fine, (4, 4), (2, 2))
    blocks = fine.reshape(2, 2, 2, 2).sum((1, 3)).reshape(-1)
    torch.testing.assert_close(coarse, blocks / blocks.sum())


@pytest.mark.parametrize("grid, target", [((8, 8), (4, 4)), ((6, 12), (3, 4)), ((27, 27), (9, 3)), ((5, 5), (1, 1))])
def test_resample_onto_whole_cells_sums_them(grid, target):
    m = torch.rand(grid[0] * grid[1], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (r, c), (tr, tc) = grid, target
    blocks = m.reshape(tr, r // tr, tc, c // tc).sum((1, 3)).reshape(-1)
    torch.testing.assert_close(resample_to_grid(m, grid, target), blocks / blocks.sum())


def _piecewise_constant(m: torch.Tensor, grid, target) -> torch.Tensor:
    """First-order reference: each cell's mass split by area share alone."""
    o_r = torch.from_numpy(metrics.overlap_matrix(grid[0], target[0]))
    o_c = torch.from_numpy(metrics.overlap_matrix(grid[1], target[1]))
    return (o_r.T @ m.reshape(grid) @ o_c).reshape(-1)


@pytest.mark.parametrize("grid, target", [((27, 27), (24, 24)), ((8, 8), (6, 6)), ((6, 12), (4, 4)),
                                          ((24, 24), (27, 27)), ((3, 8), (8, 3))])
def test_resample_tracks_the_continuous_map_across_non_divisible_grids(grid, target):
    # One continuous map integrated over each grid: remapping the first gives the second, closer
    # than splitting cells by area alone (which widens the map), and mass is kept.
    from cdviz.synthetic import cell_integrated_bump

    for cy, cx, sd in [(0.5, 0.5, 0.08), (0.31, 0.62, 0.12), (0.8, 0.2, 0.2)]:
        src = torch.from_numpy(cell_integrated_bump(grid, cy, cx, sd, sd, floor=0.0))
        truth = torch.from_numpy(cell_integrated_bump(target, cy, cx, sd, sd, floor=0.0))
        out = resample_to_grid(src, grid, target)
        first_order = _piecewise_constant(src, grid, target)
        assert out.sum().item() == pytest.approx(1.0) and (out >= 0).all()
        err, err1 = (out - truth).abs().sum().item(), (first_order - truth).abs().sum().item()
        assert err <= err1 + 1e-12, (err, err1)
        if grid in ((27, 27), (24, 24)):  # about one source cell per target cell: near the direct integral
            assert err < 0.01, err
        if grid[0] >= target[0] and grid[1] >= target[1]:  # gathering, the comparisons' case
            assert err < 0.05, err


def test_resample_keeps_a_peak_in_place_across_non_divisible_grids():
    # A point mass in cell (13, 13) of 27x27 covers [13/27, 14/27) of each axis, inside 24x24 cells
    # 11 and 12 (edges 11.56 and 12.44 in 24ths): all the mass lands on those cells, none elsewhere.
    out = resample_to_grid(_dirac((27, 27), 13, 13), (27, 27), (24, 24)).reshape(24, 24)
    assert out[11:13, 11:13].sum().item() == pytest.approx(1.0)
    assert out.sum().item() == pytest.approx(1.0)


def test_resample_renormalises_clamps_and_keeps_zero_maps():
    maps = torch.tensor([[3.0, 1.0, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    out = resample_to_grid(maps, (2, 2), (2, 2))
    torch.testing.assert_close(out[0], torch.tensor([0.75, 0.25, 0.0, 0.0]))
    torch.testing.assert_close(out[1], torch.zeros(4))
    out = resample_to_grid(maps, (2, 2), (3, 5))
    assert out.shape == (2, 15) and not out.isnan().any()
    assert out[0].sum().item() == pytest.approx(1.0) and out[1].abs().sum().item() == 0.0
    assert (out >= 0).all()


def test_resample_batched_matches_one_by_one_and_has_gradient():
    m = torch.rand(2, 3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    out = resample_to_grid(m, (2, 3), (5, 4))
    assert out.shape == (2, 3, 20)
    torch.testing.assert_close(out[1, 2], resample_to_grid(m[1, 2], (2, 3), (5, 4)))
    (out * torch.arange(20.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(m.grad).all() and m.grad.abs().sum() > 0


def test_resample_rejects_wrong_token_count():
    with pytest.raises(ValueError, match="grid"):
        resample_to_grid(torch.ones(5), (2, 2), (3, 3))


def test_common_grid_and_align_pair():
    # The coarser grid on each axis, so neither map is spread over cells it says nothing about.
    assert common_grid((27, 27), (16, 16)) == (16, 16)
    assert common_grid((27, 27), (24, 24)) == (24, 24)
    assert common_grid((2, 8), (4, 4)) == (2, 4)
    a, b, grid = align_pair(torch.rand(3, 9), (3, 3), torch.full((4,), 0.25), (2, 2))
    assert grid == (2, 2) and a.shape == (3, 4) and b.shape == (4,)
    torch.testing.assert_close(b, torch.full((4,), 0.25))
    torch.testing.assert_close(a.sum(-1), torch.ones(3, dtype=a.dtype))
    # a fixed image-space grid, e.g. to put several runs on one grid
    a, b, grid = align_pair(torch.rand(9), (3, 3), torch.full((4,), 0.25), (2, 2), grid=(6, 6))
    assert grid == (6, 6) and a.shape == b.shape == (36,)
    torch.testing.assert_close(b, torch.full((36,), 1 / 36))


def test_equal_maps_on_different_grids_compare_as_equal():
    # One continuous truth integrated over two grids (2x and non-divisible ratios): the metrics of the
    # aligned pair are those of identical maps, which bilinear upsampling of the coarse map missed.
    from cdviz.synthetic import cell_integrated_bump

    for fine, coarse in [((8, 8), (4, 4)), ((27, 27), (24, 24)), ((6, 12), (4, 4))]:
        a = torch.from_numpy(cell_integrated_bump(fine, 0.3, 0.6, 0.12, 0.12))
        b = torch.from_numpy(cell_integrated_bump(coarse, 0.3, 0.6, 0.12, 0.12))
        aa, bb, grid = align_pair(a, fine, b, coarse)
        assert grid == common_grid(fine, coarse)
        if fine[0] % coarse[0] == 0 and fine[1] % coarse[1] == 0:
            torch.testing.assert_close(aa, bb)  # blocks of whole cells: the same integral
        assert js_divergence(aa, bb).item() < 2e-3 and cosine(aa, bb).item() > 0.995


# --------------------------------------------------------------------------------------- JS

def test_js_identical_zero_disjoint_ln2_and_base2():
    p = torch.tensor([0.2, 0.3, 0.5, 0.0])
    assert js_divergence(p, p).item() == 0.0
    a, b = torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 2.0, 5.0])
    assert js_divergence(a, b).item() == pytest.approx(math.log(2))
    assert js_divergence(a, b, base=2).item() == pytest.approx(1.0)


def test_js_matches_scipy_and_is_scale_free():
    rng = np.random.default_rng(0)
    p, q = rng.random((5, 10)), rng.random((5, 10))
    ours = js_divergence(torch.from_numpy(p), torch.from_numpy(q))
    # scipy returns the Jensen-Shannon *distance*, the square root of the divergence.
    ref = jensenshannon(p, q, axis=-1) ** 2
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10)
    torch.testing.assert_close(js_divergence(torch.from_numpy(p) * 7, torch.from_numpy(q)), ours)
    assert ((ours >= 0) & (ours <= math.log(2))).all()


# ---------------------------------------------------------------------------------- spearman

@pytest.mark.parametrize("ties", [False, True])
def test_spearman_matches_scipy(ties):
    rng = np.random.default_rng(1)
    if ties:
        p, q = rng.integers(0, 4, (6, 20)).astype(float), rng.integers(0, 3, (6, 20)).astype(float)
    else:
        p, q = rng.random((6, 20)), rng.random((6, 20))
    ours = spearman(torch.from_numpy(p), torch.from_numpy(q)).numpy()
    ref = [scipy.stats.spearmanr(a, b).statistic for a, b in zip(p, q)]
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_spearman_hand_values_and_constant_map():
    p = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(p, p * 10).item() == pytest.approx(1.0)
    assert spearman(p, -p).item() == pytest.approx(-1.0)
    assert spearman(p, torch.ones(4)).isnan().item()


# ---------------------------------------------------------------------------------- top-k IoU

def test_topk_iou_hand_case():
    p = torch.tensor([5.0, 4, 3, 2, 1, 0])
    q = torch.tensor([0.0, 4, 5, 3, 1, 2])
    # top-3 of p = {0, 1, 2}, of q = {2, 1, 3}: intersection 2, union 4.
    assert topk_iou(p, q, k=3).item() == pytest.approx(0.5)
    assert topk_iou(p, q, frac=0.5).item() == pytest.approx(0.5)
    assert topk_iou(p, q, k=1).item() == 0.0
    assert topk_iou(p, p, k=4).item() == 1.0
    batched = topk_iou(torch.stack([p, p]), torch.stack([q, p]), k=3)
    torch.testing.assert_close(batched, torch.tensor([0.5, 1.0]))


def test_topk_iou_needs_exactly_one_size():
    with pytest.raises(ValueError, match="exactly one"):
        topk_iou(torch.ones(4), torch.ones(4), k=1, frac=0.5)
    with pytest.raises(ValueError, match="outside"):
        topk_iou(torch.ones(4), torch.ones(4), k=5)


# ---------------------------------------------------------------------------------------- EMD

def test_emd_hand_cases():
    g = (3, 3)
    assert emd_2d(_dirac(g, 0, 0), _dirac(g, 0, 1), g).item() == pytest.approx(1.0, abs=1e-9)
    assert emd_2d(_dirac(g, 1, 0), _dirac(g, 2, 0), g).item() == pytest.approx(1.0, abs=1e-9)
    assert emd_2d(_dirac(g, 0, 0), _dirac(g, 1, 1), g).item() == pytest.approx(math.sqrt(2), abs=1e-9)
    assert emd_2d(_dirac(g, 0, 0), _dirac(g, 2, 1), g).item() == pytest.approx(math.sqrt(5), abs=1e-9)
    # Half the mass on either side of the target: each half moves one cell.
    split = (_dirac(g, 1, 0) + _dirac(g, 1, 2)) * 3  # unnormalised on purpose
    assert emd_2d(split, _dirac(g, 1, 1), g).item() == pytest.approx(1.0, abs=1e-9)
    # Shared mass stays put; only the other half moves (two cells).
    a = _dirac(g, 0, 0) + _dirac(g, 2, 0)
    b = _dirac(g, 0, 0) + _dirac(g, 2, 2)
    assert emd_2d(a, b, g).item() == pytest.approx(1.0, abs=1e-9)
    assert emd_2d(a, a, g).item() == 0.0


def test_emd_single_row_matches_scipy_wasserstein():
    rng = np.random.default_rng(2)
    p, q = rng.random((3, 7)), rng.random((3, 7))
    ours = emd_2d(torch.from_numpy(p), torch.from_numpy(q), (1, 7)).numpy()
    ref = [scipy.stats.wasserstein_distance(np.arange(7), np.arange(7), a, b) for a, b in zip(p, q)]
    np.testing.assert_allclose(ours, ref, rtol=1e-7)


def test_emd_matches_full_transport_lp_on_random_2d_maps():
    """Against the plain N x N transport problem, which does not use the shared-mass reduction."""
    rng = np.random.default_rng(3)
    grid = (3, 4)
    r, c = np.divmod(np.arange(12), 4)
    cost = np.hypot(r[:, None] - r[None, :], c[:, None] - c[None, :]).ravel()
    rows = np.kron(np.eye(12), np.ones((1, 12)))
    cols = np.kron(np.ones((1, 12)), np.eye(12))
    p, q = rng.random((4, 12)) ** 3, rng.random((4, 12)) ** 3
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    ours = emd_2d(torch.from_numpy(p), torch.from_numpy(q), grid).numpy()
    ref = [linprog(cost, A_eq=np.vstack([rows, cols])[:-1], b_eq=np.concatenate([a, b])[:-1], method="highs").fun
           for a, b in zip(p, q)]
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    assert ours.shape == (4,) and (ours > 0).all()


def test_emd_sliced_is_exact_for_axis_shifts_and_close_otherwise():
    g = (5, 5)
    assert emd_2d_sliced(_dirac(g, 2, 0), _dirac(g, 2, 3), g).item() == pytest.approx(3.0, rel=1e-9)
    assert emd_2d_sliced(_dirac(g, 0, 1), _dirac(g, 1, 1), g).item() == pytest.approx(1.0, rel=1e-9)
    assert emd_2d_sliced(_dirac(g, 0, 0), _dirac(g, 1, 1), g).item() == pytest.approx(math.sqrt(2), rel=0.01)
    assert emd_2d_sliced(_dirac(g, 0, 0), _dirac(g, 0, 0), g).item() == 0.0


def test_emd_sliced_tracks_exact_emd():
    rng = np.random.default_rng(4)
    p, q = rng.random((12, 16)) ** 4, rng.random((12, 16)) ** 4
    exact = emd_2d(torch.from_numpy(p), torch.from_numpy(q), (4, 4)).numpy()
    approx = emd_2d_sliced(torch.from_numpy(p), torch.from_numpy(q), (4, 4)).numpy()
    assert scipy.stats.spearmanr(exact, approx).statistic > 0.8
    assert (approx <= exact * 1.6).all() and (approx >= exact * 0.5).all()


# ------------------------------------------------------------------------------------- cosine

def test_cosine_hand_values_and_zero_vector():
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])).item() == pytest.approx(1 / math.sqrt(2))
    assert cosine(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])).item() == 0.0
    z = torch.zeros(3, requires_grad=True)
    cosine(z, torch.ones(3)).backward()
    assert torch.isfinite(z.grad).all()


# ---------------------------------------------------------------------------------------- VAT

# Student and teacher blocks built so that mean + std has round numbers. Student: mean 2, sample
# variance 58 / 8 = 7.25 -> threshold 2 + 2.693 = 4.693, drops its sink 9 at (2, 2). Teacher: mean 2,
# variance 30 / 8 = 3.75 -> threshold 2 + 1.936 = 3.936, drops its sink 7 at (2, 0).
S = torch.tensor([[2.0, 1.0, 1.0],
                  [2.0, 1.0, 1.0],
                  [0.0, 1.0, 9.0]])
T = torch.tensor([[1.0, 2.0, 1.0],
                  [1.0, 2.0, 1.0],
                  [7.0, 2.0, 1.0]])


def test_vat_threshold_hand_values():
    assert vat_threshold(S).item() == pytest.approx(2 + math.sqrt(7.25))
    assert vat_threshold(T).item() == pytest.approx(2 + math.sqrt(3.75))
    assert vat_threshold(torch.stack([S, T])).shape == (2,)


def test_vat_received_with_and_without_keep():
    torch.testing.assert_close(vat_received(S), torch.tensor([4 / 3, 1.0, 11 / 3]))
    keep = torch.tensor([[True, False, True], [True, False, True], [False, False, True]])
    # key 1 keeps nothing -> 0; key 0 averages two entries; key 2 all three.
    torch.testing.assert_close(vat_received(S, keep), torch.tensor([2.0, 0.0, 11 / 3]))


def test_vat_vectors_hand_example_uses_the_joint_mask():
    # Both (2, 0) (teacher sink) and (2, 2) (student sink) are dropped from BOTH maps:
    # student key 0 averages (2, 2) -> 2, not (2, 2, 0) -> 4/3 as its own mask alone would give.
    s_vec, t_vec = vat_vectors(S, T)
    torch.testing.assert_close(s_vec, torch.tensor([2.0, 1.0, 1.0]))
    torch.testing.assert_close(t_vec, torch.tensor([1.0, 2.0, 1.0]))
    # cosine = (2 + 2 + 1) / (sqrt 6 * sqrt 6) = 5/6.
    assert vat_cosine_from_vectors(s_vec, t_vec).item() == pytest.approx(5 / 6)
    s_all, t_all = vat_vectors(S, T, filter=False)
    torch.testing.assert_close(s_all, torch.tensor([4 / 3, 1.0, 11 / 3]))
    torch.testing.assert_close(t_all, torch.tensor([3.0, 2.0, 1.0]))
    loss = vat_loss(S[None, None], T[None, None])
    assert loss.item() == pytest.approx(1 / 6)


def _reference_vat_loss(student, teacher):
    """Plain loops over samples and layers, written from the paper's formulas independently of cdviz.vat."""
    total = 0.0
    for b in range(student.shape[0]):
        for layer in range(student.shape[1]):
            s, t = student[b, layer], teacher[b, layer]
            keep = (s <= s.mean() + s.std()) & (t <= t.mean() + t.std())
            count = keep.sum(0).clamp_min(1)
            s_vec = (s * keep).sum(0) / count
            t_vec = (t * keep).sum(0) / count
            total += 1 - F.cosine_similarity(s_vec, t_vec, dim=0)
    return total / student.shape[0]


def test_vat_loss_equals_explicit_per_layer_sum():
    student, teacher = _random_blocks(2, 3, 9, 9, seed=5), _random_blocks(2, 3, 9, 9, seed=6)
    loss = vat_loss(student, teacher)
    torch.testing.assert_close(loss, _reference_vat_loss(student, teacher))
    terms = vat_layer_terms(student, teacher)
    assert terms.shape == (2, 3)
    torch.testing.assert_close(loss, terms.sum(1).mean())


def test_vat_loss_zero_when_equal_positive_otherwise():
    student, teacher = _random_blocks(2, 3, 9, 9, seed=7), _random_blocks(2, 3, 9, 9, seed=8)
    assert vat_loss(student, student).abs().item() < 1e-12
    assert vat_loss(student, student, filter=False).abs().item() < 1e-12
    assert vat_loss(student, teacher).item() > 1e-3
    assert vat_loss(student, teacher, filter=False).item() > 1e-3


def test_vat_loss_gradient_reaches_student_only():
    student = _random_blocks(2, 2, 9, 9, seed=9).float().requires_grad_()
    teacher = _random_blocks(2, 2, 9, 9, seed=10).float().requires_grad_()
    vat_loss(student, teacher).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_vat_loss_bf16_blocks_give_float32_loss():
    student = _random_blocks(1, 2, 9, 9, seed=11)
    teacher = _random_blocks(1, 2, 9, 9, seed=12)
    low = vat_loss(student.bfloat16(), teacher.bfloat16())
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(vat_loss(student, teacher).item(), abs=0.02)


def test_vat_loss_across_grids():
    # Uniform attention on a 2x2 student grid and a 4x4 teacher grid receive uniformly: aligned.
    student = torch.full((1, 2, 4, 4), 0.25, requires_grad=True)
    teacher = torch.full((1, 2, 16, 16), 1 / 16)
    assert vat_loss(student, teacher, student_grid=(2, 2), teacher_grid=(4, 4)).abs().item() < 1e-6
    # Random blocks: the loss is 1 - cosine of the received vectors, the teacher's summed onto the 2x2 grid.
    student = _random_blocks(2, 3, 4, 4, seed=13).requires_grad_()
    teacher = _random_blocks(2, 3, 16, 16, seed=14)
    terms = vat_layer_terms(student, teacher, student_grid=(2, 2), teacher_grid=(4, 4))
    s_vec, t_vec = vat_vectors(student, teacher)
    t_down = t_vec.reshape(2, 3, 2, 2, 2, 2).sum((3, 5)).reshape(2, 3, 4)
    torch.testing.assert_close(terms, 1 - F.cosine_similarity(s_vec, t_down, dim=-1))
    terms.sum().backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="grid"):
        vat_loss(student, teacher)


def test_vat_vectors_same_size_different_grids_use_own_masks():
    # (2, 8) and (4, 4) both have 16 tokens, but token i is a different place in each: no joint mask.
    student, teacher = _random_blocks(2, 16, 16, seed=16), _random_blocks(2, 16, 16, seed=17)
    s_vec, t_vec = vat_vectors(student, teacher, student_grid=(2, 8), teacher_grid=(4, 4))
    s_own = vat_received(student, student <= vat_threshold(student)[:, None, None])
    t_own = vat_received(teacher, teacher <= vat_threshold(teacher)[:, None, None])
    torch.testing.assert_close(s_vec, s_own)
    torch.testing.assert_close(t_vec, t_own)
    s_joint, _ = vat_vectors(student, teacher)
    assert not torch.allclose(s_joint, s_own)


def test_vat_loss_rejects_mismatched_layers():
    with pytest.raises(ValueError, match="B, L"):
        vat_loss(_random_blocks(1, 2, 4, 4, seed=0), _random_blocks(1, 3, 4, 4, seed=0))
    with pytest.raises(ValueError, match=r"\[B, L, N, N\]"):
        vat_loss(_random_blocks(2, 4, 4, seed=0), _random_blocks(2, 4, 4, seed=0))


# ----------------------------------------------------------------------------------- registry

def test_registry_directions_are_right_and_shapes_uniform():
    assert set(METRICS) == set(HIGHER_IS_ALIGNED) == set(list_metrics())
    assert {"vat_cosine", "js", "spearman", "topk_iou", "emd"} <= set(METRICS)
    grid = (3, 4)
    rng = np.random.default_rng(15)
    p = torch.from_numpy(rng.random((2, 12)))
    q = torch.from_numpy(rng.random((2, 12)) ** 4)
    for name in METRICS:
        fn = get_metric(name)
        same, other = fn(p, p, grid), fn(p, q, grid)
        assert same.shape == other.shape == (2,), name
        better = same > other if HIGHER_IS_ALIGNED[name] else same < other
        assert better.all(), name


def test_get_metric_unknown_lists_names():
    with pytest.raises(KeyError, match="spearman"):
        get_metric("nope")


def test_register_metric(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", dict(METRICS))
    monkeypatch.setattr(metrics, "HIGHER_IS_ALIGNED", dict(HIGHER_IS_ALIGNED))

    def l1(p, q, grid):
        return (p - q).abs().sum(-1)

    metrics.register_metric("l1", l1, higher_is_aligned=False)
    assert metrics.get_metric("l1") is l1 and metrics.HIGHER_IS_ALIGNED["l1"] is False
    with pytest.raises(ValueError, match="overwrite"):
        metrics.register_metric("js", l1, higher_is_aligned=False)
    metrics.register_metric("js", l1, overwrite=True, higher_is_aligned=False)
    assert metrics.get_metric("js") is l1
    assert "l1" not in METRICS and METRICS["js"] is not l1  # the real registry is untouched
