"""PixelCNN++'s discretized logistic mixture (paper eq. 2 and 3): unpacking the network's
raw output, the log-likelihood of a pixel and sampling one."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from raydgm.models.base import discretized_logistic_logpmf


def params_per_mixture(C: int) -> int:
    """Outputs per mixture component: logit, C means, C log-scales, and for C=3 three coefficients."""
    if C not in (1, 3):
        raise ValueError(f"PixelCNN++ supports 1 or 3 channels, got {C}")
    return 10 if C == 3 else 3


def unpack_params(params: torch.Tensor, C: int):
    """(B, K*(1+...), H, W) raw network output -> logit_probs (B, K, H, W), means and
    log_scales (B, C, K, H, W) (log-scales floored at -7 as in the reference), coeffs
    (B, 3, K, H, W) = tanh(.) for (G<-R, B<-R, B<-G), or None for C=1.

    Channel layout: [logits (K) | for each channel c: means (K), log-scales (K)(, coeffs (K))].
    """
    B, n_out, H, W = params.shape
    K = n_out // params_per_mixture(C)
    rest = params[:, K:].reshape(B, C, 3 if C == 3 else 2, K, H, W)
    coeffs = torch.tanh(rest[:, :, 2]) if C == 3 else None
    return params[:, :K], rest[:, :, 0], rest[:, :, 1].clamp(min=-7.0), coeffs


def discretized_logistic_log_probs(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """log P(x_c | x_<c, component k): x (B, C, H, W) on the grid level/127.5 - 1 in [-1, 1],
    params (B, K_out, H, W) -> (B, C, K, H, W). Paper eq. 2 with the eq. 3 mean coupling;
    edges: level 0 takes the whole lower tail, level 255 the upper tail. The bin mass is
    computed without cancellation (``raydgm.models.discretized_logistic_logpmf``, shared with
    the VAE), so the reference's tiny-mass branch (log pdf(centre) - log(127.5)) is not needed.
    """
    C = x.shape[1]
    _, means, log_scales, coeffs = unpack_params(params, C)
    x = x.unsqueeze(2)  # (B, C, 1, H, W)
    if C == 3:  # eq. 3: mu_G += a x_R, mu_B += b x_R + c x_G
        means = torch.stack([means[:, 0], means[:, 1] + coeffs[:, 0] * x[:, 0],
                             means[:, 2] + coeffs[:, 1] * x[:, 0] + coeffs[:, 2] * x[:, 1]], dim=1)
    levels = torch.round((x + 1) * 127.5).expand_as(means)
    return discretized_logistic_logpmf(levels, means, log_scales)


def discretized_mix_logistic_log_prob(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """log p(x_ij | params_ij) in nats per pixel (channels summed, mixture marginalised):
    x (B, C, H, W) in [-1, 1], params (B, K_out, H, W) -> (B, H, W)."""
    logits = params[:, :params.shape[1] // params_per_mixture(x.shape[1])]
    log_pk = discretized_logistic_log_probs(x, params).sum(dim=1)  # (B, K, H, W)
    return torch.logsumexp(F.log_softmax(logits, dim=1) + log_pk, dim=1)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] -> nearest point of the 8-bit grid level/127.5 - 1."""
    return torch.round((x + 1) * 127.5) / 127.5 - 1


def sample_discretized_mix_logistic(params: torch.Tensor, u_mix: torch.Tensor,
                                    u_logistic: torch.Tensor) -> torch.Tensor:
    """One pixel per row: params (B, K_out), u_mix (B, K), u_logistic (B, C) uniforms in
    (0, 1) -> x (B, C) on the 8-bit grid in [-1, 1]. Component by Gumbel-max (shared by the
    channels), then x_c = clamp(mu_c + s_c (log u - log(1-u)) + coupling, -1, 1), R then G then B."""
    C = u_logistic.shape[1]
    logits, means, log_scales, coeffs = unpack_params(params[:, :, None, None], C)
    k = torch.argmax(logits[..., 0, 0] - torch.log(-torch.log(u_mix)), dim=1)  # (B,)

    def pick(t: torch.Tensor) -> torch.Tensor:  # (B, c, K, 1, 1) -> (B, c) at component k
        return t[..., 0, 0].gather(2, k.view(-1, 1, 1).expand(-1, t.shape[1], 1)).squeeze(2)

    y = pick(means) + torch.exp(pick(log_scales)) * (torch.log(u_logistic) - torch.log1p(-u_logistic))
    cf = pick(coeffs) if C == 3 else None
    xs: list[torch.Tensor] = []
    for c in range(C):
        v = y[:, c]
        if c == 1:
            v = v + cf[:, 0] * xs[0]
        elif c == 2:
            v = v + cf[:, 1] * xs[0] + cf[:, 2] * xs[1]
        xs.append(quantize(v.clamp(-1.0, 1.0)))
    return torch.stack(xs, dim=1)
