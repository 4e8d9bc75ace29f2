"""PixelCNN++ (Salimans, Karpathy, Chen & Kingma, ICLR 2017), written from the paper.

The model factorises p(x) = prod_i p(x_i | x_<i) over pixels in raster order (paper eq. 1 of
van den Oord et al. 2016, kept by PixelCNN++) and models each pixel with a discretized
logistic mixture whose colour channels are coupled linearly (paper eq. 2 and 3):

    P(x | pi, mu, s) = sum_k pi_k [sigmoid((x + 1/255 - mu_k)/s_k) - sigmoid((x - 1/255 - mu_k)/s_k)]

on the [-1, 1] scale (bin half-width 1/255), with the CDF taken to -inf at level 0 and to +inf
at level 255, and mu_G = mu'_G + a * x_R, mu_B = mu'_B + b * x_R + c * x_G (eq. 3).

Architecture (section 2.3-2.5 and the authors' reference code): two causal streams, ``u``
(pixels above) and ``ul`` (pixels above and to the left), built from down-shifted and
down-right-shifted convolutions; gated ResNet blocks with concat_elu; three resolutions
(two stride-2 downsamplings in the up pass, two stride-2 transposed convolutions in the
down pass) and skip connections from every up-pass output to the down pass; dropout in
every block. Departures: weight normalization and its data-dependent init are SKIPPED
(plain PyTorch init; the second conv of each block is scaled by 0.1 like the reference's
``init_scale=0.1``), and the sampler rounds each sampled sub-pixel to the 8-bit grid before
it conditions the next channel/pixel, so samples follow exactly the pmf that ``loss`` scores.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from raydgm.models.base import GenerativeModel, discretized_logistic_logpmf, nan_where_invalid, to_unit


# ---------------------------------------------------------------- causal building blocks
def down_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> same shape, moved one row down (zero first row)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> same shape, moved one column right (zero first column)."""
    return F.pad(x, (1, 0))[..., :-1]


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 2C, H, W): elu([x, -x]) along channels (section 2.4)."""
    return F.elu(torch.cat([x, -x], dim=1))


class DownShiftedConv2d(nn.Module):
    """Conv whose output at row i sees input rows <= i only (pads top and both sides)."""

    def __init__(self, c_in: int, c_out: int, filter_size: tuple[int, int] = (2, 3), stride: int = 1):
        super().__init__()
        fh, fw = filter_size
        self.pad = ((fw - 1) // 2, (fw - 1) // 2, fh - 1, 0)  # left, right, top, bottom
        self.conv = nn.Conv2d(c_in, c_out, filter_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class DownRightShiftedConv2d(nn.Module):
    """Conv whose output at (i, j) sees inputs (i', j') with i' <= i and j' <= j."""

    def __init__(self, c_in: int, c_out: int, filter_size: tuple[int, int] = (2, 2), stride: int = 1):
        super().__init__()
        fh, fw = filter_size
        self.pad = (fw - 1, 0, fh - 1, 0)
        self.conv = nn.Conv2d(c_in, c_out, filter_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class DownShiftedDeconv2d(nn.Module):
    """Stride-2 transposed conv (B, C, h, w) -> (B, C', 2h, 2w); output rows 2i, 2i+1 see input row i."""

    def __init__(self, c_in: int, c_out: int, filter_size: tuple[int, int] = (2, 3)):
        super().__init__()
        self.fs = filter_size
        self.deconv = nn.ConvTranspose2d(c_in, c_out, filter_size, stride=2, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)  # (B, C', 2h+1, 2w+2)
        H, W = x.shape[-2:]
        side = (self.fs[1] - 1) // 2
        return x[:, :, :H - self.fs[0] + 1, side:W - side]


class DownRightShiftedDeconv2d(nn.Module):
    """Stride-2 transposed conv (B, C, h, w) -> (B, C', 2h, 2w); output (2i+a, 2j+b) sees input (i, j)."""

    def __init__(self, c_in: int, c_out: int, filter_size: tuple[int, int] = (2, 2)):
        super().__init__()
        self.fs = filter_size
        self.deconv = nn.ConvTranspose2d(c_in, c_out, filter_size, stride=2, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)  # (B, C', 2h+1, 2w+1)
        H, W = x.shape[-2:]
        return x[:, :, :H - self.fs[0] + 1, :W - self.fs[1] + 1]


class GatedResnet(nn.Module):
    """x + a * sigmoid(b), [a, b] = conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(skip)))))."""

    def __init__(self, nf: int, conv: type[nn.Module], n_skip: int, dropout: float):
        super().__init__()
        self.conv_in = conv(2 * nf, nf)
        self.nin_skip = nn.Conv2d(2 * n_skip * nf, nf, 1) if n_skip else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * nf, 2 * nf)
        with torch.no_grad():  # the reference's init_scale=0.1: blocks start near identity
            self.conv_out.conv.weight.mul_(0.1)
            self.conv_out.conv.bias.mul_(0.1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        c = self.conv_in(concat_elu(x))  # (B, nf, H, W)
        if skip is not None:
            c = c + self.nin_skip(concat_elu(skip))
        a, b = self.conv_out(self.dropout(concat_elu(c))).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


# ------------------------------------------------------- discretized logistic mixture
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


# --------------------------------------------------------------------------- the model
class PixelCNNpp(GenerativeModel):
    """PixelCNN++ on (C, H, W) images, C in {1, 3}, H and W divisible by 4."""

    def __init__(self, image_shape: tuple[int, int, int], nr_resnet: int = 5, nr_filters: int = 160,
                 nr_logistic_mix: int = 10, dropout: float = 0.5):
        super().__init__()
        C, H, W = image_shape
        if H % 4 or W % 4:
            raise ValueError(f"PixelCNN++ needs H and W divisible by 4, got {image_shape}")
        self.image_shape = tuple(image_shape)
        self.nr_mix = nr_logistic_mix
        nf = nr_filters
        n_out = nr_logistic_mix * params_per_mixture(C)

        def blocks(n: int, conv: type[nn.Module], n_skip: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResnet(nf, conv, n_skip, dropout) for _ in range(n))

        self.u_init = DownShiftedConv2d(C + 1, nf, (2, 3))  # +1: the channel of ones
        self.ul_init_above = DownShiftedConv2d(C + 1, nf, (1, 3))
        self.ul_init_left = DownRightShiftedConv2d(C + 1, nf, (2, 1))
        self.up_u = nn.ModuleList(blocks(nr_resnet, DownShiftedConv2d, 0) for _ in range(3))
        self.up_ul = nn.ModuleList(blocks(nr_resnet, DownRightShiftedConv2d, 1) for _ in range(3))
        self.downsize_u = nn.ModuleList(DownShiftedConv2d(nf, nf, (2, 3), stride=2) for _ in range(2))
        self.downsize_ul = nn.ModuleList(DownRightShiftedConv2d(nf, nf, (2, 2), stride=2) for _ in range(2))
        sizes = (nr_resnet, nr_resnet + 1, nr_resnet + 1)
        self.down_u = nn.ModuleList(blocks(n, DownShiftedConv2d, 1) for n in sizes)
        self.down_ul = nn.ModuleList(blocks(n, DownRightShiftedConv2d, 2) for n in sizes)
        self.upsize_u = nn.ModuleList(DownShiftedDeconv2d(nf, nf) for _ in range(2))
        self.upsize_ul = nn.ModuleList(DownRightShiftedDeconv2d(nf, nf) for _ in range(2))
        self.out = nn.Conv2d(nf, n_out, 1)  # the output NIN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float (B, C, H, W) in [-1, 1] -> raw mixture parameters (B, K_out, H, W); the
        output at (i, j) depends only on input pixels strictly before (i, j) in raster order."""
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # marks image vs zero padding
        us = [down_shift(self.u_init(x))]
        uls = [down_shift(self.ul_init_above(x)) + right_shift(self.ul_init_left(x))]
        for level in range(3):  # up pass: nr_resnet blocks per resolution
            for block_u, block_ul in zip(self.up_u[level], self.up_ul[level]):
                us.append(block_u(us[-1]))
                uls.append(block_ul(uls[-1], us[-1]))
            if level < 2:
                us.append(self.downsize_u[level](us[-1]))
                uls.append(self.downsize_ul[level](uls[-1]))
        u, ul = us.pop(), uls.pop()
        for level in range(3):  # down pass, consuming every up-pass output as a skip input
            if level > 0:
                u, ul = self.upsize_u[level - 1](u), self.upsize_ul[level - 1](ul)
            for block_u, block_ul in zip(self.down_u[level], self.down_ul[level]):
                u = block_u(u, us.pop())
                ul = block_ul(ul, torch.cat([u, uls.pop()], dim=1))
        assert not us and not uls
        return self.out(F.elu(ul))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> (B,) negative log-likelihood in nats per image."""
        x = to_unit(x.to(self.out.weight.device))
        return -discretized_mix_logistic_log_prob(x, self(x)).sum(dim=(1, 2))

    def draw_noise(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """CPU uniforms in [1e-5, 1-1e-5]: "mix" (n, K, H, W) for the Gumbel-max component
        choice, "logistic" (n, C, H, W) for the logistic draws."""
        C, H, W = self.image_shape
        u_mix = torch.rand(n, self.nr_mix, H, W, generator=generator)
        u_logistic = torch.rand(n, C, H, W, generator=generator)
        return {"mix": u_mix.clamp(1e-5, 1 - 1e-5), "logistic": u_logistic.clamp(1e-5, 1 - 1e-5)}

    @torch.no_grad()
    def decode(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        """Autoregressive sampling in raster order, one network pass per pixel -> float
        (n, C, H, W) integer levels in [0, 255]; NaN for samples whose network output was
        non-finite at any pixel."""
        device = self.out.weight.device
        u_mix, u_logistic = noise["mix"].to(device), noise["logistic"].to(device)
        n, (C, H, W) = len(u_mix), self.image_shape
        canvas = torch.zeros(n, C, H, W, device=device)
        seen = torch.zeros(n, self.out.out_channels, H, W, device=device)
        was_training = self.training
        self.eval()
        try:
            for i in range(H):
                rows = min(H, (i // 4 + 1) * 4)  # causal: rows below i cannot matter
                for j in range(W):
                    params = self(canvas[:, :, :rows])[:, :, i, j]  # (n, K_out)
                    seen[:, :, i, j] = params
                    canvas[:, :, i, j] = sample_discretized_mix_logistic(
                        params, u_mix[:, :, i, j], u_logistic[:, :, i, j])
        finally:
            self.train(was_training)
        return nan_where_invalid(torch.round((canvas + 1) * 127.5), seen)
