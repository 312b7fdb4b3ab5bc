"""Logit KD and CE against plain reference loops: the shift, paper_compat, chunking, the LM-head path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cdviz.train.losses import IGNORE, head_losses, kd_rows, logit_kd_loss, score_mask, shifted_targets

B, T, VS, VT = 2, 7, 11, 13


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, VS, generator=g, dtype=torch.float64)
    t = torch.randn(B, T, VT, generator=g, dtype=torch.float64)
    labels = torch.full((B, T), IGNORE)
    labels[0, 3:6] = torch.tensor([4, 7, 2])  # answer tokens at positions 3..5
    labels[1, 5:7] = torch.tensor([1, 9])     # an answer that runs to the end of the sequence
    return s, t, labels


def reference_kd(s, t, labels, temperature, shifted=True):
    """Explicit loops: row r scores the token at r + 1 (shifted) or at r (the reference code's mask)."""
    total, n = 0.0, 0
    for b in range(s.shape[0]):
        for r in range(s.shape[1]):
            pos = r + 1 if shifted else r
            if pos >= s.shape[1] or labels[b, pos] == IGNORE:
                continue
            p = [math.exp(x / temperature) for x in t[b, r, :VS].tolist()]
            z = sum(p)
            p = [x / z for x in p]
            q = [math.exp(x / temperature) for x in s[b, r].tolist()]
            zq = sum(q)
            q = [x / zq for x in q]
            total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q)) * temperature**2
            n += 1
    return total / n


def test_masks_on_a_small_example():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, IGNORE]])
    assert score_mask(labels).tolist() == [[False, True, True, False, False]]
    assert score_mask(labels, paper_compat=True).tolist() == [[False, False, True, True, False]]
    assert shifted_targets(labels).tolist() == [[IGNORE, 5, 6, IGNORE, IGNORE]]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_matches_the_reference_loop(temperature):
    s, t, labels = _data()
    got = logit_kd_loss(s, t, labels, temperature=temperature)
    assert got.item() == pytest.approx(reference_kd(s, t, labels, temperature), abs=1e-12)


def test_paper_compat_is_the_unshifted_mask_and_differs():
    s, t, labels = _data()
    compat = logit_kd_loss(s, t, labels, paper_compat=True)
    assert compat.item() == pytest.approx(reference_kd(s, t, labels, 1.0, shifted=False), abs=1e-12)
    assert abs(compat.item() - logit_kd_loss(s, t, labels).item()) > 1e-3


def test_kd_is_zero_for_a_student_equal_to_the_cut_teacher():
    _, t, labels = _data()
    assert logit_kd_loss(t[..., :VS].clone(), t, labels).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_chunked_equals_unchunked_in_value_and_gradient(chunk):
    s, t, labels = _data(1)
    s1 = s.clone().requires_grad_(True)
    s2 = s.clone().requires_grad_(True)
    full = logit_kd_loss(s1, t, labels)
    part = logit_kd_loss(s2, t, labels, chunk_size=chunk)
    full.backward()
    part.backward()
    assert part.item() == pytest.approx(full.item(), abs=1e-12)
    torch.testing.assert_close(s2.grad, s1.grad, atol=1e-12, rtol=0)


def test_teacher_with_other_positions():
    """The teacher saw more image tokens: its answer rows sit 3 positions later."""
    s, t, labels = _data()
    t_long = torch.cat([torch.randn(B, 3, VT, dtype=torch.float64), t], dim=1)  # [B, T + 3, Vt]
    t_labels = torch.cat([torch.full((B, 3), IGNORE), labels], dim=1)
    assert logit_kd_loss(s, t_long, labels, t_labels).item() == pytest.approx(logit_kd_loss(s, t, labels).item())
    with pytest.raises(ValueError, match="tokenise the answers identically"):
        logit_kd_loss(s, t, labels, torch.full((B, T), IGNORE))


def test_teacher_vocab_must_cover_the_students():
    with pytest.raises(ValueError, match="prefix of the teacher"):
        kd_rows(torch.zeros(2, 5), torch.zeros(2, 4))


@pytest.mark.parametrize("chunk", [None, 2])
def test_head_losses_equal_full_logits(chunk):
    torch.manual_seed(0)
    m, d, dt = 9, 6, 8
    head, t_head = torch.nn.Linear(d, VS, bias=False).double(), torch.nn.Linear(dt, VT, bias=False).double()
    h = torch.randn(m, d, dtype=torch.float64, requires_grad=True)
    th = torch.randn(m, dt, dtype=torch.float64)
    y = torch.randint(0, VS, (m,))
    got = head_losses(h, head, y, th, t_head, temperature=2.0, chunk_size=chunk)
    (got["ce"] + got["kd"]).backward()
    grad_chunked, head_grad = h.grad.clone(), head.weight.grad.clone()
    assert t_head.weight.grad is None  # the teacher head never gets gradients
    h.grad, head.weight.grad = None, None
    logits = head(h)
    ce = F.cross_entropy(logits, y, reduction="sum")
    kd = kd_rows(logits, t_head(th), 2.0).sum()
    (ce + kd).backward()
    assert got["ce"].item() == pytest.approx(ce.item(), abs=1e-10)
    assert got["kd"].item() == pytest.approx(kd.item(), abs=1e-10)
    torch.testing.assert_close(grad_chunked, h.grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(head_grad, head.weight.grad, atol=1e-10, rtol=0)
