"""Tests for raydgm.semantic_loss.exactly_one: enumeration, hand cases, extremes, gradients."""
import itertools
import math

import numpy as np
import pytest
import torch

from raydgm.semantic_loss import exactly_one


def brute_force(logits: torch.Tensor) -> torch.Tensor:
    """-log P(exactly one) by enumerating all 2^K assignments a in {0, 1}^K (float64)."""
    p = torch.sigmoid(logits.double())  # (B, K)
    K = p.shape[1]
    total = torch.zeros(p.shape[0], dtype=torch.float64)
    for a in itertools.product([0, 1], repeat=K):
        a = torch.tensor(a, dtype=torch.float64)
        prob = torch.prod(p * a + (1 - p) * (1 - a), dim=1)  # P(assignment a)
        if a.sum() == 1:
            total += prob
    return -torch.log(total)


@pytest.mark.parametrize("K", range(1, 7))
def test_matches_enumeration(K):
    g = torch.Generator().manual_seed(K)
    z = 2.0 * torch.randn(7, K, generator=g, dtype=torch.float64)
    torch.testing.assert_close(exactly_one(z), brute_force(z), rtol=1e-10, atol=0)


def test_hand_cases():
    # K = 2, z = 0: p = 1/2, P(exactly one) = 2 * (1/2 * 1/2) = 1/2 -> loss log 2
    z = torch.zeros(1, 2, dtype=torch.float64)
    assert abs(exactly_one(z).item() - math.log(2)) < 1e-15
    # K = 1: loss = -log sigmoid(z); z = log 3: p = 3/4 -> log(4/3)
    z = torch.tensor([[math.log(3)]], dtype=torch.float64)
    assert abs(exactly_one(z).item() - math.log(4 / 3)) < 1e-15
    # K = 3, z = 0: P = 3 * (1/2)^3 = 3/8 -> log(8/3)
    assert abs(exactly_one(torch.zeros(1, 3, dtype=torch.float64)).item()
               - math.log(8 / 3)) < 1e-15


@pytest.mark.parametrize("row, expected", [
    ([200.0, -200.0, -200.0, -200.0], 0.0),                 # constraint satisfied: P ~ 1
    ([-200.0] * 4, 200.0 - math.log(4)),                   # P ~ 4 e^-200
    ([200.0] * 4, 3 * 200.0 - math.log(4)),                # P ~ 4 e^-600
    ([200.0, -200.0, 200.0, -200.0], 200.0 - math.log(2)),  # P ~ 2 e^-200
])
def test_extremes_float32_finite_values_and_gradients(row, expected):
    z = torch.tensor([row], dtype=torch.float32, requires_grad=True)
    loss = exactly_one(z)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    assert abs(loss.item() - expected) <= 1e-6 * max(1.0, expected)
    # dL/dz = sigmoid(z) - softmax(z)
    closed = torch.sigmoid(z.detach()) - torch.softmax(z.detach(), dim=1)
    torch.testing.assert_close(z.grad, closed, rtol=0, atol=1e-6)


def test_random_extremes_float32():
    g = torch.Generator().manual_seed(0)
    z = (200.0 * torch.sign(torch.randn(64, 10, generator=g))).requires_grad_()
    loss = exactly_one(z)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    assert (loss >= -1e-4).all()


def test_gradient_closed_form_and_gradcheck():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    exactly_one(z).sum().backward()
    closed = torch.sigmoid(z.detach()) - torch.softmax(z.detach(), dim=1)
    torch.testing.assert_close(z.grad, closed, rtol=1e-12, atol=1e-14)
    for reduction in ("none", "mean", "sum"):
        assert torch.autograd.gradcheck(lambda x: exactly_one(x, reduction), (z,))


def test_reductions_and_dtype():
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    per_row = exactly_one(z)
    assert per_row.shape == (6,) and per_row.dtype == torch.float32
    torch.testing.assert_close(exactly_one(z, "mean"), per_row.mean())
    torch.testing.assert_close(exactly_one(z, "sum"), per_row.sum())
    assert exactly_one(torch.zeros(0, 3)).shape == (0,)


@pytest.mark.parametrize("logits, match", [
    (torch.zeros(3), "2-D"),
    (torch.zeros(2, 3, 4), "2-D"),
    (torch.zeros(2, 0), "K >= 1"),
    (torch.tensor([[0.0, float("nan")]]), "NaN"),
    (torch.tensor([[0.0, float("inf")]]), "inf"),
    (torch.zeros(2, 3, dtype=torch.int64), "floating"),
    (np.zeros((2, 3)), "torch.Tensor"),
])
def test_bad_input_raises(logits, match):
    with pytest.raises(ValueError, match=match):
        exactly_one(logits)


def test_unknown_reduction_raises():
    with pytest.raises(ValueError, match="known: none, mean, sum"):
        exactly_one(torch.zeros(2, 3), "max")
