"""Cached (fast) PixelCNN++ sampling: every layer evaluated once per position, as in
Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive Models".

The naive sampler runs the whole network once per pixel. Here each causal convolution keeps a
zero-initialised cache of its last ``filter_height`` input rows (the zero top padding of the full
pass) with its side padding, so it evaluates exactly the window the full convolution would see:

- the vertical stream ``u`` at row i sees only image rows < i, so it is computed one whole row
  at a time (``_Window.row``), before the row's pixels are sampled;
- the horizontal stream ``ul`` at (i, j) sees rows < i and row i's columns < j, so it is
  computed one pixel at a time (``_Window.pixel``) from its row cache plus the ``u`` output at
  the same position;
- a stride-2 convolution caches every input row (pixel) and emits only at even rows (and even
  columns): level l+1 position (r, c) exists once level l reached (2r, 2c), i.e. the
  downsampled layers run every 2nd step and the lowest resolution every 4th;
- a stride-2 transposed convolution's output rows 2r, 2r+1 (columns 2c, 2c+1 for ``ul``) come
  from its input row r (position (r, c)) only, so its output is cached (``_Level.pending_*``) and
  read row by row (pixel by pixel) at the finer resolution.

One sample's computation never mixes with another's (all operations act per batch row), so a
sample does not depend on its batch. Eval mode only: dropout is the identity here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raydgm.models.pixelcnnpp.layers import GatedResnet, concat_elu
from raydgm.models.pixelcnnpp.mixture import sample_discretized_mix_logistic


class _Window:
    """The last ``fh`` input rows of one causal conv (a DownShiftedConv2d or
    DownRightShiftedConv2d, stride 1 or 2), zero-initialised, side padding included.

    ``buf``: (n, C_in, fh, left + width + right), float32 on the model's device.
    """

    def __init__(self, layer: nn.Module, n: int, width: int):
        self.conv: nn.Conv2d = layer.conv
        self.left, self.right, _, _ = layer.pad
        self.fw = self.conv.kernel_size[1]
        w = self.conv.weight
        self.weight = w.reshape(w.shape[0], -1)  # (C_out, C_in * fh * fw), a view
        self.buf = w.new_zeros(n, self.conv.in_channels, self.conv.kernel_size[0],
                               self.left + width + self.right)

    def nbytes(self) -> int:
        return self.buf.numel() * self.buf.element_size()

    def __call__(self, x: torch.Tensor, j: int | None = None, emit: bool = True) -> torch.Tensor | None:
        """Push the input at row step (``j`` None: x (n, C_in, 1, width)) or at column ``j``
        of the current row (x (n, C_in, 1, 1)); return the conv's output there, (n, C_out, 1,
        width / stride) or (n, C_out, 1, 1), or None when ``emit`` is False (odd positions of
        a stride-2 conv)."""
        return self.row(x, emit) if j is None else self.pixel(j, x, emit)

    def row(self, x: torch.Tensor, emit: bool = True) -> torch.Tensor | None:
        """The vertical stream: drop the oldest row, append x; the conv over the fh cached
        rows is one output row (stride 2 also halves the columns, as in the full pass)."""
        x = F.pad(x.to(self.buf.dtype), (self.left, self.right))
        self.buf = torch.cat([self.buf[:, :, 1:], x], dim=2)
        return self.conv(self.buf) if emit else None

    def pixel(self, j: int, x: torch.Tensor, emit: bool = True) -> torch.Tensor | None:
        """The horizontal stream (right padding 0): column 0 starts a new (zero) row; the window
        of output column j is input columns j-fw+1 .. j of the fh cached rows."""
        if j == 0:
            self.buf = torch.cat([self.buf[:, :, 1:], torch.zeros_like(self.buf[:, :, :1])], dim=2)
        self.buf[:, :, -1, self.left + j] = x[:, :, 0, 0]
        if not emit:
            return None
        lo = self.left + j - self.fw + 1
        window = self.buf[:, :, :, lo:lo + self.fw].reshape(len(self.buf), -1)
        return F.linear(window, self.weight, self.conv.bias)[:, :, None, None]


def _nin(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv (network-in-network) on (n, C, 1, w) -> (n, C_out, 1, w), as a matmul."""
    out = F.linear(x.permute(0, 2, 3, 1), conv.weight[:, :, 0, 0], conv.bias)
    return out.permute(0, 3, 1, 2)


class _Block:
    """A GatedResnet evaluated one row or one pixel at a time: two windows (conv_in's input
    concat_elu(x), conv_out's input concat_elu(c)); the skip NIN is 1x1 and needs no cache."""

    def __init__(self, block: GatedResnet, n: int, width: int):
        self.block = block
        self.c_in = _Window(block.conv_in, n, width)
        self.c_out = _Window(block.conv_out, n, width)

    def __call__(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                 j: int | None = None) -> torch.Tensor:
        """x, skip (n, C, 1, w) at the current row (j None) or column j (w = 1) -> like x."""
        c = self.c_in(concat_elu(x), j)
        if skip is not None:
            c = c + _nin(self.block.nin_skip, concat_elu(skip))
        a, b = self.c_out(concat_elu(c), j).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class _Level:
    """One resolution (level 0: H x W, 1: H/2 x W/2, 2: H/4 x W/4): its up and down blocks,
    the stride-2 convs that feed the next coarser level, the outputs of the current row of
    the vertical stream, and the transposed conv outputs cached for the next finer level."""

    def __init__(self, model: nn.Module, level: int, n: int, width: int):
        nf = model.out.in_channels
        self.level, self.width = level, width
        self.up_u = [_Block(b, n, width) for b in model.up_u[level]]
        self.up_ul = [_Block(b, n, width) for b in model.up_ul[level]]
        self.down_u = [_Block(b, n, width) for b in model.down_u[2 - level]]  # the model counts
        self.down_ul = [_Block(b, n, width) for b in model.down_ul[2 - level]]  # down from H/4
        coarser = level < 2
        self.downsize_u = _Window(model.downsize_u[level], n, width) if coarser else None
        self.downsize_ul = _Window(model.downsize_ul[level], n, width) if coarser else None
        self.upsize_u = model.upsize_u[2 - level] if level else None  # emits into level - 1
        self.upsize_ul = model.upsize_ul[2 - level] if level else None
        zeros = model.out.weight.new_zeros
        # rows 2r, 2r+1 of this level, from the coarser level's row r (filled there)
        self.pending_u = zeros(n, nf, 2, width) if coarser else None
        self.pending_ul = zeros(n, nf, 2, width) if coarser else None
        self.us: list[torch.Tensor] = []  # current row: up-pass u outputs (nr_resnet + 1)
        self.dus: list[torch.Tensor] = []  # current row: down-pass u block outputs

    def windows(self) -> list[_Window]:
        blocks = self.up_u + self.up_ul + self.down_u + self.down_ul
        extra = [w for w in (self.downsize_u, self.downsize_ul) if w is not None]
        return [w for b in blocks for w in (b.c_in, b.c_out)] + extra


class CachedSampler:
    """Per-layer caches of a PixelCNN++ (``raydgm.models.pixelcnnpp.PixelCNNpp``, eval mode)
    for a batch of n images; ``row(i)`` then ``pixel(i, j)`` for j = 0..W-1, rows in order.

    ``canvas``: float (n, C, H, W) on the model's device, the image so far on the [-1, 1] grid;
    the caller writes each sampled pixel into it before asking for the next one.
    """

    def __init__(self, model: nn.Module, canvas: torch.Tensor):
        n, C, H, W = canvas.shape
        self.model, self.canvas = model, canvas
        self.u_init = _Window(model.u_init, n, W)
        self.ul_init_above = _Window(model.ul_init_above, n, W)
        self.ul_init_left = _Window(model.ul_init_left, n, W)
        self.levels = [_Level(model, lv, n, W >> lv) for lv in range(3)]
        self.nf = model.out.in_channels
        self.above: torch.Tensor | None = None  # ul_init_above's output for the current row
        self.ones = canvas.new_ones(n, 1, 1, W)

    def cache_bytes(self) -> int:
        """Bytes held by the convolution caches (excluding the model and the canvas)."""
        ws = [self.u_init, self.ul_init_above, self.ul_init_left]
        ws += [w for lv in self.levels for w in lv.windows()]
        extra = sum(t.numel() * t.element_size() for lv in self.levels
                    for t in (lv.pending_u, lv.pending_ul) if t is not None)
        return sum(w.nbytes() for w in ws) + extra

    def row(self, i: int) -> None:
        """Row step i: the vertical stream of row i at every level that has a row there, from
        image rows < i (down_shift: u_init and ul_init_above see row i-1)."""
        n, _, _, W = self.canvas.shape
        if i == 0:
            u0 = self.canvas.new_zeros(n, self.nf, 1, W)
            self.above = torch.zeros_like(u0)
        else:
            prev = torch.cat([self.canvas[:, :, i - 1:i], self.ones], dim=1)  # (n, C+1, 1, W)
            u0 = self.u_init(prev)
            self.above = self.ul_init_above(prev)
        self._u_row(0, i, u0)

    def _u_row(self, level: int, r: int, first: torch.Tensor) -> None:
        """The u stream of row r at ``level`` (first: its entry row (n, nf, 1, w)): up blocks,
        the coarser level when r is even, down blocks, and the upsampled rows for level - 1."""
        lv = self.levels[level]
        us = [first]
        for blk in lv.up_u:
            us.append(blk(us[-1]))
        lv.us = us
        if lv.downsize_u is not None:
            coarse = lv.downsize_u(us[-1], emit=r % 2 == 0)
            if coarse is not None:
                self._u_row(level + 1, r // 2, coarse)
        if level == 2:  # the lowest resolution: the up pass's last output enters the down pass
            u, skips = us[-1], us[-2::-1]
        else:
            u, skips = lv.pending_u[:, :, r % 2:r % 2 + 1], us[::-1]
        lv.dus = []
        for blk, skip in zip(lv.down_u, skips):
            u = blk(u, skip)
            lv.dus.append(u)
        if lv.upsize_u is not None:  # rows 2r, 2r+1 of the finer level come from row r alone
            self.levels[level - 1].pending_u = lv.upsize_u(u)

    def pixel(self, i: int, j: int) -> torch.Tensor:
        """Pixel step (i, j), after ``row(i)``: the horizontal stream at (i, j) at every level
        that has a position there -> raw mixture parameters (n, K_out) of pixel (i, j)."""
        n = self.canvas.shape[0]
        first = self.above[:, :, :, j:j + 1]
        if j > 0:  # right_shift: ul_init_left's output at (i, j-1), from pixels (i-1..i, j-1)
            x = torch.cat([self.canvas[:, :, i:i + 1, j - 1:j], self.ones[:, :, :, :1]], dim=1)
            first = first + self.ul_init_left(x, j - 1)
        ul = self._ul_pixel(0, i, j, first)
        out = self.model.out
        return F.linear(F.elu(ul).reshape(n, -1), out.weight[:, :, 0, 0], out.bias)

    def _ul_pixel(self, level: int, r: int, c: int, first: torch.Tensor) -> torch.Tensor:
        """The ul stream at (r, c) of ``level`` (first: its entry (n, nf, 1, 1)) -> the down
        pass's last output there; fills the finer level's cached upsampled pixels."""
        lv = self.levels[level]
        uls = [first]
        for blk, u in zip(lv.up_ul, lv.us[1:]):
            uls.append(blk(uls[-1], u[:, :, :, c:c + 1], j=c))
        if lv.downsize_ul is not None:
            coarse = lv.downsize_ul(uls[-1], c, emit=r % 2 == 0 and c % 2 == 0)
            if coarse is not None:
                self._ul_pixel(level + 1, r // 2, c // 2, coarse)
        if level == 2:
            ul, skips = uls[-1], uls[-2::-1]
        else:
            ul, skips = lv.pending_ul[:, :, r % 2:r % 2 + 1, c:c + 1], uls[::-1]
        for blk, u, skip in zip(lv.down_ul, lv.dus, skips):
            ul = blk(ul, torch.cat([u[:, :, :, c:c + 1], skip], dim=1), j=c)
        if lv.upsize_ul is not None:  # (2r+a, 2c+b) of the finer level come from (r, c) alone
            self.levels[level - 1].pending_ul[:, :, :, 2 * c:2 * c + 2] = lv.upsize_ul(ul)
        return ul


@torch.no_grad()
def sample_cached(model: nn.Module, u_mix: torch.Tensor,
                  u_logistic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached autoregressive sampling in raster order.

    model: a PixelCNNpp in eval mode; u_mix (n, K, H, W) and u_logistic (n, C, H, W) uniforms
    in (0, 1) on the model's device (``PixelCNNpp.draw_noise``). Returns (canvas float
    (n, C, H, W) on the [-1, 1] 8-bit grid, params float (n, K_out, H, W): the raw mixture
    parameters each pixel was drawn from, equal to the full pass ``model(canvas)`` to float
    rounding).
    """
    if model.training:
        raise ValueError("sample_cached needs the model in eval mode (dropout off)")
    n, (C, H, W) = len(u_mix), model.image_shape
    canvas = u_mix.new_zeros(n, C, H, W)
    seen = u_mix.new_zeros(n, model.out.out_channels, H, W)
    sampler = CachedSampler(model, canvas)
    for i in range(H):
        sampler.row(i)
        for j in range(W):
            params = sampler.pixel(i, j).float()
            seen[:, :, i, j] = params
            canvas[:, :, i, j] = sample_discretized_mix_logistic(params, u_mix[:, :, i, j],
                                                                 u_logistic[:, :, i, j])
    return canvas, seen
