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
"""
from __future__ import annotations

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
