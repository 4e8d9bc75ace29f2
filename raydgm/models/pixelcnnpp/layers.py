"""PixelCNN++'s causal building blocks: shifted convolutions and transposed convolutions,
concat_elu and the gated ResNet block (Salimans et al. 2017, section 2.3-2.5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
