"""VAT counts only the attention entries that exist (the paper's VAT pooling).

The reference here is written from the paper with plain loops over numpy arrays, independently
of cdviz.vat: for each key k, average the entries A[q, k] over the queries q that can see k
(q >= k in a causal block, neither q nor k padding) and are <= mean + std in both maps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdviz.vat import vat_layer_terms, vat_loss, vat_received, vat_vectors, visible_entries


# ------------------------------------------------------------------------------------ fixtures

def _visible(n: int, causal: bool, padded: tuple[int, ...] = ()) -> np.ndarray:
    """bool [n, n]: query q can see key k."""
    vis = np.ones((n, n), dtype=bool)
    for q in range(n):
        for k in range(n):
            if (causal and k > q) or q in padded or k in padded:
                vis[q, k] = False
    return vis


def _attention(rng: np.random.Generator, vis: np.ndarray, heads: int) -> np.ndarray:
    """Head mean of softmax attention under ``vis``; a padded query row (nothing visible) is 0."""
    n = vis.shape[0]
    out = np.zeros((n, n))
    for _ in range(heads):
        scores = rng.normal(scale=2.0, size=(n, n))
        for q in range(n):
            if vis[q].any():
                e = np.where(vis[q], np.exp(scores[q] - scores[q][vis[q]].max()), 0.0)
                out[q] += e / e.sum()
    return out / heads


def _pair(seed: int, n: int, causal: bool, padded: tuple[int, ...], batch: int, layers: int, heads: int):
    """Student and teacher blocks [B, L, n, n] (float64) on the same mask, and the mask."""
    rng = np.random.default_rng(seed)
    vis = _visible(n, causal, padded)
    s = np.stack([np.stack([_attention(rng, vis, heads) for _ in range(layers)]) for _ in range(batch)])
    t = np.stack([np.stack([_attention(rng, vis, heads + 1) for _ in range(layers)]) for _ in range(batch)])
    return s, t, vis


# ------------------------------------------------------------------------- independent formula

def _threshold(a: np.ndarray) -> float:
    return a.mean() + a.std(ddof=1)  # over the whole block, sample std as torch


def _received_loops(s: np.ndarray, t: np.ndarray, vis_s: np.ndarray, vis_t: np.ndarray, filter: bool = True):
    """Received vectors of one student / teacher block pair on the same tokens."""
    n = s.shape[0]
    ts, tt = _threshold(s), _threshold(t)
    s_vec, t_vec = np.zeros(n), np.zeros(n)
    for k in range(n):
        count, s_sum, t_sum = 0, 0.0, 0.0
        for q in range(n):
            if not (vis_s[q, k] and vis_t[q, k]):
                continue
            if filter and not (s[q, k] <= ts and t[q, k] <= tt):
                continue
            count += 1
            s_sum += s[q, k]
            t_sum += t[q, k]
        if count:
            s_vec[k], t_vec[k] = s_sum / count, t_sum / count
    return s_vec, t_vec


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _terms_loops(s: np.ndarray, t: np.ndarray, vis_s: np.ndarray, vis_t: np.ndarray, filter: bool = True):
    """[B, L] of 1 - cos."""
    out = np.zeros(s.shape[:2])
    for b in range(s.shape[0]):
        for layer in range(s.shape[1]):
            sv, tv = _received_loops(s[b, layer], t[b, layer], vis_s, vis_t, filter)
            out[b, layer] = 1 - _cos(sv, tv)
    return out


def _reference_rule(s: np.ndarray, t: np.ndarray):
    """The reference code's rule: filter both maps, count where the filtered teacher map is non-zero."""
    keep = (s <= _threshold(s)) & (t <= _threshold(t))
    s_f, t_f = s * keep, t * keep
    count = np.maximum((t_f != 0).sum(0), 1)
    return s_f.sum(0) / count, t_f.sum(0) / count


STRUCTURES = {"causal": (True, ()), "full": (False, ()),
              "causal+padding": (True, (0, 3)), "full+padding": (False, (2, 6))}


# ----------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("n, heads, seed", [(7, 1, 0), (9, 2, 1), (16, 4, 2)])
def test_vat_loss_equals_loops_over_existing_entries(structure, n, heads, seed):
    causal, padded = STRUCTURES[structure]
    s, t, vis = _pair(seed, n, causal, padded, batch=2, layers=3, heads=heads)
    for filter in (True, False):
        expected = _terms_loops(s, t, vis, vis, filter)
        got = vat_layer_terms(torch.from_numpy(s), torch.from_numpy(t), filter)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-6, rtol=0)
        loss = vat_loss(torch.from_numpy(s), torch.from_numpy(t), filter)
        assert loss.item() == pytest.approx(expected.sum(1).mean(), abs=1e-6)


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("seed", [3, 4])
def test_vat_vectors_with_explicit_mask_equal_loops(structure, seed):
    causal, padded = STRUCTURES[structure]
    s, t, vis = _pair(seed, 10, causal, padded, batch=1, layers=2, heads=2)
    mask = torch.from_numpy(vis)
    for filter in (True, False):
        s_vec, t_vec = vat_vectors(torch.from_numpy(s), torch.from_numpy(t), filter,
                                   student_visible=mask, teacher_visible=mask)
        for layer in range(2):
            es, et = _received_loops(s[0, layer], t[0, layer], vis, vis, filter)
            np.testing.assert_allclose(s_vec[0, layer].numpy(), es, atol=1e-6, rtol=0)
            np.testing.assert_allclose(t_vec[0, layer].numpy(), et, atol=1e-6, rtol=0)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_visible_entries_of_softmax_blocks_is_the_reference_codes_rule(structure):
    causal, padded = STRUCTURES[structure]
    s, t, vis = _pair(5, 12, causal, padded, batch=1, layers=1, heads=3)
    assert np.array_equal(visible_entries(torch.from_numpy(t[0, 0])).numpy(), vis)
    s_vec, t_vec = vat_vectors(torch.from_numpy(s[0, 0]), torch.from_numpy(t[0, 0]),
                               student_visible=visible_entries(torch.from_numpy(s[0, 0])),
                               teacher_visible=visible_entries(torch.from_numpy(t[0, 0])))
    rs, rt = _reference_rule(s[0, 0], t[0, 0])
    np.testing.assert_allclose(s_vec.numpy(), rs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(t_vec.numpy(), rt, atol=1e-6, rtol=0)


def test_causal_student_full_teacher_average_the_entries_both_have():
    rng = np.random.default_rng(6)
    n = 8
    vis_s, vis_t = _visible(n, causal=True), _visible(n, causal=False)
    s = np.stack([_attention(rng, vis_s, 2) for _ in range(2)])[None]  # [1, 2, n, n]
    t = np.stack([_attention(rng, vis_t, 2) for _ in range(2)])[None]
    got = vat_layer_terms(torch.from_numpy(s), torch.from_numpy(t))
    np.testing.assert_allclose(got.numpy(), _terms_loops(s, t, vis_s, vis_t), atol=1e-6, rtol=0)


def test_different_grids_each_count_their_own_existing_entries():
    rng = np.random.default_rng(7)
    vis_s, vis_t = _visible(4, causal=True), _visible(16, causal=True)
    s, t = _attention(rng, vis_s, 2), _attention(rng, vis_t, 2)
    s_vec, t_vec = vat_vectors(torch.from_numpy(s), torch.from_numpy(t), student_grid=(2, 2), teacher_grid=(4, 4),
                               student_visible=torch.from_numpy(vis_s), teacher_visible=torch.from_numpy(vis_t))
    np.testing.assert_allclose(s_vec.numpy(), _received_loops(s, s, vis_s, vis_s)[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(t_vec.numpy(), _received_loops(t, t, vis_t, vis_t)[0], atol=1e-6, rtol=0)


def test_early_keys_are_no_longer_weighted_by_their_number_of_viewers():
    # Every query gives every key it can see 1: each key receives 1 from each of its viewers.
    n = 4
    causal = torch.tril(torch.ones(n, n, dtype=torch.float64))
    full = torch.ones(n, n, dtype=torch.float64)
    s_vec, t_vec = vat_vectors(causal, full, filter=False, student_visible=causal.bool())
    torch.testing.assert_close(s_vec, torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(t_vec, torch.ones(n, dtype=torch.float64))
    # Dividing by all n queries, masked zeros included, gave key k the weight (n - k) / n.
    torch.testing.assert_close(vat_received(causal), torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64))
    # So a causal student and a bidirectional teacher that agree everywhere are now aligned.
    assert vat_loss(causal[None, None], full[None, None], filter=False).item() == pytest.approx(0.0, abs=1e-12)


def test_causal_softmax_loss_differs_from_the_masked_zeros_normaliser():
    s, t, vis = _pair(8, 12, True, (), batch=2, layers=2, heads=2)
    everything = np.ones_like(vis)
    old = _terms_loops(s, t, everything, everything)  # counts the masked zeros
    new = vat_layer_terms(torch.from_numpy(s), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(new, _terms_loops(s, t, vis, vis), atol=1e-6, rtol=0)
    assert np.abs(new - old).max() > 1e-3


def test_gradient_through_causal_softmax_matches_finite_differences():
    n = 6
    g = torch.Generator().manual_seed(9)
    masked = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)  # k > q
    teacher = torch.randn(1, 2, n, n, generator=g, dtype=torch.float64).masked_fill(masked, float("-inf")).softmax(-1)
    scores = torch.randn(1, 2, n, n, generator=g, dtype=torch.float64, requires_grad=True)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return vat_loss(x.masked_fill(masked, float("-inf")).softmax(-1), teacher)

    assert torch.autograd.gradcheck(loss, (scores,), eps=1e-6, atol=1e-6)
    loss(scores).backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0
