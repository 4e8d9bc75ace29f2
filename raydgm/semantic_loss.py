"""Semantic loss for the exactly-one constraint (Xu et al., ICML 2018), in log space.

For K independent Bernoulli outputs p_i = sigmoid(z_i), the probability that exactly one is
true is

    P(exactly one) = sum_i p_i prod_{j != i} (1 - p_j)                                (1)

and the semantic loss is L = -log P (Xu et al. 2018, Def. 1 and Sec. 4). Since
p_i = exp(z_i) sigmoid(-z_i) and 1 - p_j = sigmoid(-z_j),

    P = exp(logsumexp(z)) prod_j sigmoid(-z_j)
    L = sum_j softplus(z_j) - logsumexp(z)                                            (2)

Eq. 2 never forms a product of probabilities, so values and gradients
dL/dz_j = sigmoid(z_j) - softmax(z)_j stay finite in float32 for |z| in the hundreds.
In semi-supervised training the loss is applied to unlabeled inputs and weighted by w_sl.

Importance-weighted (Grover et al. 2019, Sec. 4), the target on a pool of P rows with weights
w_j is the pool's self-normalized value sum_j w_j L_j / sum_j w_j. From a batch of B rows drawn
uniformly with replacement from the pool, :func:`weighted_semantic` estimates it either by

    "batch":  sum_i w_i L_i / sum_i w_i        (self-normalized in the batch; biased)     (3)
    "pool":   (1/B) sum_i (w_i / wbar) L_i,    wbar = (1/P) sum_j w_j                      (4)

whose expectation over batches is exactly the pool's value (E[w_i L_i] = (1/P) sum_j w_j L_j).
Eq. 3's expectation differs: for a pool of two rows with weights (1, 3) and B = 2 it is
0.375 L_0 + 0.625 L_1 against the pool's 0.25 L_0 + 0.75 L_1.
"""
from __future__ import annotations

import math

import torch

REDUCTIONS = ("none", "mean", "sum")


def exactly_one(logits: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Exactly-one semantic loss -log sum_i p_i prod_{j != i}(1 - p_j), eq. 2.

    Args:
        logits: (B, K) floating tensor of finite logits z, K >= 1 (any device).
        reduction: "none" -> (B,), "mean" or "sum" over the batch -> ().

    Returns:
        Loss of logits' dtype and device, >= 0 up to rounding; (B,) for "none".
        Equals log 2 at K = 2, z = 0, and ~0 when one z_i >> 0 and the rest << 0.

    Raises:
        ValueError: not a tensor, not floating, not 2-D, K < 1, NaN or inf logits,
            unknown reduction.
    """
    _check_logits(logits)
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; known: {', '.join(REDUCTIONS)}")
    # softplus(z) = logaddexp(z, 0): exact for all z (F.softplus returns z above 20)
    softplus = torch.logaddexp(logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
    loss = softplus.sum(dim=1) - torch.logsumexp(logits, dim=1)  # (B,)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def weighted_semantic(logits: torch.Tensor, log_weights: torch.Tensor,
                      log_mean_weight: float | None = None) -> torch.Tensor:
    """Importance-weighted exactly-one loss of a batch, a scalar; L_i = ``exactly_one(logits)[i]``.

    logits: float (B, K); log_weights: finite float (B,) log importance weights of the same rows.
    ``log_mean_weight`` None: eq. 3, sum_i softmax(log_w)_i L_i (any constant offset cancels;
    equal weights give the plain mean). A float, log wbar of the pool (:func:`log_mean_weight`):
    eq. 4. Weights are taken in float64, so none overflows.
    Raises ValueError: log_weights not of shape (B,).
    """
    if log_weights.shape != logits.shape[:1]:
        raise ValueError(f"log_weights must have shape ({logits.shape[0]},) to match the logits, "
                         f"got {tuple(log_weights.shape)}")
    lw = log_weights.to(torch.float64)
    if log_mean_weight is None:
        w = torch.softmax(lw, dim=0)                                  # (B,), sums to 1
    else:
        w = torch.exp(lw - log_mean_weight) / len(lw)                 # (B,), eq. 4
    return (w.to(logits.dtype) * exactly_one(logits)).sum()


def log_mean_weight(log_weights) -> float:
    """log wbar = log((1/P) sum_j exp(log_w_j)) of P finite log-weights (array or tensor), in
    float64 by log-sum-exp (no overflow)."""
    lw = torch.as_tensor(log_weights, dtype=torch.float64).reshape(-1)
    return float(torch.logsumexp(lw, dim=0)) - math.log(lw.numel())


def _check_logits(logits) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating tensor, got dtype {logits.dtype}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (B, K), got shape {tuple(logits.shape)}")
    if logits.shape[1] < 1:
        raise ValueError(f"logits need K >= 1 classes, got shape {tuple(logits.shape)}")
    bad = ~torch.isfinite(logits)
    if bool(bad.any()):
        kind = "NaN" if bool(torch.isnan(logits).any()) else "inf"
        raise ValueError(f"logits contain {kind} ({int(bad.sum())} non-finite entries)")
