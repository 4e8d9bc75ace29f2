"""Known-bias generators: copies of stored real images whose density ratio to the data is known.

Both hold the real train split (``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)) and, per
stored row, the true log-weight of a copy of it, log w*(x_i) = log p_data(x_i) - log p_gen(x_i)
(``log_weight``, float64 (N,)), computed when the generator is fitted
(``raydgm.training.known_bias``). Besides the generator protocol (``raydgm.models``), each has
``truth(noise)``: per sample, ``true_log_weight`` (float64; -inf for junk, which p_data never
produces), ``true_class`` (int64; the copied image's label, -1 for junk) and ``source_index``
(int64; the stored row the sample was made from).

- ``SkewedCopies``: class y with probability pi_gen(y) (inverse CDF of one uniform), then a
  row of that class uniformly (a second uniform): P(row i) = pi_gen(y_i) / n_{y_i}.
- ``ContaminatedCopies``: with probability eps (``junk_fraction``) junk, else a copy; the
  row is uniform over the N stored images; junk puts that row's C*H*W values in the order
  of a uniformly random permutation. A junk sample equal to a stored image (possible only
  for tiny images) gets that image's weight and label.

All randomness is drawn in ``draw_noise`` (float64 uniforms, ``torch.randperm``), so sample i
is the same whatever the batch. Imports only torch.
"""
from __future__ import annotations

import math

import torch

from raydgm.models.base import GenerativeModel


class EmpiricalCopies(GenerativeModel):
    """Base of the known-bias generators: stored images, labels and per-row true log-weights.

    The buffers' sizes come from the data, so loading a state dict resizes them first.
    """

    def __init__(self, image_shape: tuple[int, int, int]):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.register_buffer("images", torch.zeros(0, *self.image_shape, dtype=torch.uint8))  # (N, C, H, W)
        self.register_buffer("labels", torch.zeros(0, dtype=torch.int64))          # (N,)
        self.register_buffer("log_weight", torch.zeros(0, dtype=torch.float64))    # (N,) log w* of a copy

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001 (torch's hook)
        for name in list(self._buffers):
            if prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def sources(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        """int64 (n,): the stored row each sample is made from."""
        raise NotImplementedError

    def truth(self, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per sample: ``true_log_weight`` float64, ``true_class`` int64, ``source_index`` int64 (n,)."""
        rows = self.sources(noise)
        return {"true_log_weight": self.log_weight[rows], "true_class": self.labels[rows], "source_index": rows}

    def decode(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        """float32 levels (n, C, H, W): the source rows' pixels (integers 0..255)."""
        return self.images[self.sources(noise)].float()


class SkewedCopies(EmpiricalCopies):
    """Stored images drawn with class mix pi_gen (``class_cdf``) instead of the data's."""

    def __init__(self, image_shape: tuple[int, int, int], class_mix: object = None):
        super().__init__(image_shape)
        self.class_mix = class_mix        # the config's value, for the record; the buffers rule
        self.register_buffer("class_cdf", torch.zeros(0, dtype=torch.float64))   # (K,), last 1.0
        self.register_buffer("order", torch.zeros(0, dtype=torch.int64))         # (N,) rows by class
        self.register_buffer("class_start", torch.zeros(0, dtype=torch.int64))   # (K,) into order
        self.register_buffer("class_count", torch.zeros(0, dtype=torch.int64))   # (K,) n_y

    def draw_noise(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        f64 = dict(dtype=torch.float64, generator=generator)
        return {"u_class": torch.rand(n, **f64), "u_row": torch.rand(n, **f64)}

    def sources(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        u_class, u_row = (noise[k].to(self.class_cdf.device, torch.float64) for k in ("u_class", "u_row"))
        k = self.class_cdf.numel()
        y = torch.searchsorted(self.class_cdf, u_class, right=True).clamp(max=k - 1)  # P(y) = cdf[y] - cdf[y-1]
        count = self.class_count[y]
        within = torch.minimum((u_row * count).floor().long(), count - 1)           # uniform in 0..n_y-1
        return self.order[self.class_start[y] + within]


class ContaminatedCopies(EmpiricalCopies):
    """Stored images (uniform), a share ``junk_fraction`` of them pixel-scrambled."""

    def __init__(self, image_shape: tuple[int, int, int], junk_fraction: float = 0.5, junk: str = "scrambled"):
        super().__init__(image_shape)
        if junk != "scrambled":
            raise ValueError(f"unknown junk {junk!r}; known: scrambled")
        self.junk_fraction = float(junk_fraction)
        self._content: dict[bytes, int] | None = None   # stored image bytes -> first row

    def draw_noise(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        f64 = dict(dtype=torch.float64, generator=generator)
        d = math.prod(self.image_shape)
        u_junk, u_row = torch.rand(n, **f64), torch.rand(n, **f64)
        perm = torch.stack([torch.randperm(d, generator=generator) for _ in range(n)]) if n else \
            torch.zeros(0, d, dtype=torch.int64)
        return {"u_junk": u_junk, "u_row": u_row, "perm": perm}          # perm: (n, C*H*W)

    def sources(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        n_rows = len(self.images)
        u_row = noise["u_row"].to(self.log_weight.device, torch.float64)
        return torch.clamp((u_row * n_rows).floor().long(), max=n_rows - 1)

    def is_junk(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        """bool (n,): the samples that are scrambled."""
        return noise["u_junk"].to(self.log_weight.device, torch.float64) < self.junk_fraction

    def decode(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        flat = self.images[self.sources(noise)].flatten(1)                        # (n, D) uint8
        scrambled = flat.gather(1, noise["perm"].to(flat.device))
        out = torch.where(self.is_junk(noise).unsqueeze(1), scrambled, flat)
        return out.view(len(out), *self.image_shape).float()

    def truth(self, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().truth(noise)
        images = self.decode(noise).to(torch.uint8)
        for i in torch.nonzero(self.is_junk(noise)).flatten().tolist():
            row = self.content().get(images[i].cpu().numpy().tobytes())
            if row is None:
                out["true_log_weight"][i], out["true_class"][i] = -math.inf, -1
            else:                                     # scrambled into a stored image
                out["true_log_weight"][i], out["true_class"][i] = self.log_weight[row], self.labels[row]
        return out

    def content(self) -> dict[bytes, int]:
        """Stored image bytes -> its first row (built once)."""
        if self._content is None:
            stored = self.images.cpu().numpy()
            self._content = {}
            for i in range(len(stored)):
                self._content.setdefault(stored[i].tobytes(), i)
        return self._content
