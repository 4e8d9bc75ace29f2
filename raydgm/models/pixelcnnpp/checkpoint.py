"""Import the pretrained PyTorch PixelCNN++ of pclucas14/pixel-cnn-pp into ``PixelCNNpp``.

That repository's ``PixelCNN`` computes the same function as ours: the same two streams and
skip wiring, concat_elu in the same places, the channel of ones appended after the colour
channels, ``nin_out(elu(ul))`` with the same output layout (K logits, then per colour channel
K means, K log-scales and, for 3 channels, K coefficients: what its
``discretized_mix_logistic_loss`` and ``_1d`` unpack, and what ``mixture.unpack_params``
unpacks). Its dropout is ``Dropout2d`` (whole channels) where ours drops single values, as
the authors' TensorFlow code does: the two differ in training mode only, and an imported
model is used in eval mode.

What the import undoes is weight normalisation (Salimans & Kingma 2016, eq. 2): every conv,
transposed conv and ``nin`` (a ``Linear`` over channels, our 1x1 ``Conv2d``) was wrapped in
``torch.nn.utils.weight_norm`` with its default ``dim=0``, so the file holds g
(``weight_g``, or ``parametrizations.weight.original0`` from newer torch) and v
(``weight_v`` / ``original1``), and the layer's weight is w = g * v / ||v||, the norm taken
over every dim of v but ``dim``. Dim 0 is the OUTPUT channel of a Conv2d / Linear weight
(out, in, ...) but the INPUT channel of a ConvTranspose2d weight (in, out, kh, kw). The fold
reads the dim from g's shape (size 1 along the normed dims), so it takes whichever dim the
file was made with. Names (``module.`` from DataParallel dropped):

    u_init.conv, ul_init.0.conv, ul_init.1.conv   -> u_init.conv, ul_init_above.conv, ul_init_left.conv
    up_layers.L.u_stream.J / ul_stream.J          -> up_u.L.J / up_ul.L.J      (down_layers: down_u, down_ul)
      .conv_input.conv, .conv_out.conv, .nin_skip.lin_a -> .conv_in.conv, .conv_out.conv, .nin_skip
    downsize_u_stream.I.conv, upsize_ul_stream.I.deconv -> downsize_u.I.conv, upsize_ul.I.deconv (likewise)
    nin_out.lin_a                                 -> out
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from raydgm.models.pixelcnnpp.mixture import params_per_mixture
from raydgm.models.pixelcnnpp.network import PixelCNNpp

# Our layer names -> theirs, applied in order (each of our layers has exactly one name there).
_THEIR_NAMES = (
    (r"^ul_init_above\.", "ul_init.0."),
    (r"^ul_init_left\.", "ul_init.1."),
    (r"^(up|down)_(u|ul)\.(\d+)\.", r"\1_layers.\3.\2_stream."),
    (r"^(up|down)size_(u|ul)\.", r"\1size_\2_stream."),
    (r"\.conv_in\.", ".conv_input."),
    (r"\.nin_skip$", ".nin_skip.lin_a"),
    (r"^out$", "nin_out.lin_a"),
)
# A tensor's name in the file ends with one of these: its role in the layer.
_ROLES = {"parametrizations.weight.original0": "g", "parametrizations.weight.original1": "v",
          "weight_g": "g", "weight_v": "v", "weight": "w", "bias": "b"}


def their_name(ours: str) -> str:
    """Our layer's name (``up_ul.0.1.nin_skip``) -> pclucas14's (``up_layers.0.ul_stream.1.nin_skip.lin_a``)."""
    for pattern, repl in _THEIR_NAMES:
        ours = re.sub(pattern, repl, ours)
    return ours


def from_pclucas14(state_dict: Mapping[str, torch.Tensor], image_shape: tuple[int, int, int],
                   nr_resnet: int = 5, nr_filters: int = 160, nr_logistic_mix: int = 10, *,
                   dropout: float = 0.5) -> PixelCNNpp:
    """A ``PixelCNNpp`` (eval mode, float32, CPU) holding the weights of a pclucas14 ``PixelCNN``
    state dict, weight norm folded in. Every tensor of the file is used and every weight of
    ours is set; a missing, unexpected, misshapen or non-finite tensor is a ValueError that
    names it (and, for a shape, the hyperparameters the file was made with)."""
    layers = _group(state_dict)
    _check_channels(layers, image_shape)
    model = PixelCNNpp(image_shape, nr_resnet, nr_filters, nr_logistic_mix, dropout=dropout)
    target = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    missing = []
    for ours in sorted({key.rsplit(".", 1)[0] for key in target}):
        theirs = their_name(ours)
        if theirs not in layers:
            missing.append(theirs)
            continue
        parts = layers.pop(theirs)
        for role, tensor in (("weight", _weight(theirs, parts)), ("bias", _part(theirs, parts, "b"))):
            want = target[f"{ours}.{role}"].shape
            if tensor.dim() == 2 and tuple(want[2:]) == (1, 1):   # a nin Linear as our 1x1 conv
                tensor = tensor[:, :, None, None]
            if tensor.shape != want:
                raise ValueError(f"pclucas14 checkpoint: {theirs} ({role}) has shape {tuple(tensor.shape)}, "
                                 f"but PixelCNNpp(nr_resnet={nr_resnet}, nr_filters={nr_filters}, "
                                 f"nr_logistic_mix={nr_logistic_mix}) needs {tuple(want)} for {ours}.{role}"
                                 f"{_hint(state_dict)}")
            loaded[f"{ours}.{role}"] = tensor.to(target[f"{ours}.{role}"].dtype)
    if missing or layers:
        raise ValueError("pclucas14 checkpoint does not match PixelCNNpp(nr_resnet="
                         f"{nr_resnet}, nr_filters={nr_filters}, nr_logistic_mix={nr_logistic_mix}): "
                         f"missing layers {_few(missing)}; unexpected layers {_few(sorted(layers))}"
                         f"{_hint(state_dict)}")
    model.load_state_dict(loaded, strict=True)
    return model.eval()


def load_pclucas14(path: str | Path, image_shape: tuple[int, int, int], nr_resnet: int = 5,
                   nr_filters: int = 160, nr_logistic_mix: int = 10, *, dropout: float = 0.5) -> PixelCNNpp:
    """``from_pclucas14`` of a ``.pth`` file (``torch.load(..., weights_only=True)``, on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pclucas14 checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle of code, a torn download, not a torch file at all
        raise ValueError(f"{path} does not load as a weights-only PyTorch state dict: "
                         f"{type(err).__name__}: {err}") from err
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return from_pclucas14(state, image_shape, nr_resnet, nr_filters, nr_logistic_mix, dropout=dropout)


def pclucas14_hyperparameters(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """What a pclucas14 state dict was built with, read from its names and shapes:
    ``input_channels``, ``nr_resnet``, ``nr_filters``, ``nr_logistic_mix`` (keys it cannot read
    are left out)."""
    layers = _group(state_dict, check=False)
    out: dict[str, int] = {}
    first = layers.get("u_init.conv", {})
    w = first.get("v", first.get("w"))
    if w is not None and w.dim() == 4:
        out["input_channels"], out["nr_filters"] = int(w.shape[1]) - 1, int(w.shape[0])
    blocks = {m.group(1) for name in layers if (m := re.match(r"up_layers\.0\.u_stream\.(\d+)\.", name))}
    if blocks:
        out["nr_resnet"] = len(blocks)
    b = layers.get("nin_out.lin_a", {}).get("b")
    if b is not None and out.get("input_channels") in (1, 3):
        out["nr_logistic_mix"] = int(b.shape[0]) // params_per_mixture(out["input_channels"])
    return out


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """w = g * v / ||v|| (float64), the norm over the dims where g has size 1: g of shape
    (v.shape[0], 1, ..., 1) is torch's ``weight_norm(dim=0)``, a 0-d g its ``dim=None``."""
    g, v = g.double(), v.double()
    g = g.reshape([1] * v.dim()) if g.dim() == 0 else g
    if g.dim() != v.dim() or any(a not in (1, b) for a, b in zip(g.shape, v.shape)):
        raise ValueError(f"g of shape {tuple(g.shape)} is not a weight-norm gain for v of shape {tuple(v.shape)}")
    normed = [d for d in range(v.dim()) if g.shape[d] == 1]
    return g * v / v.pow(2).sum(dim=normed, keepdim=True).sqrt()


def _group(state_dict: Mapping[str, torch.Tensor], check: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """{their layer name: {role (g, v, w, b): tensor}}, ``module.`` prefixes dropped."""
    if check and not state_dict:
        raise ValueError("pclucas14 checkpoint: the state dict is empty")
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        name = key.removeprefix("module.")
        suffix = next((s for s in _ROLES if name.endswith("." + s)), None)
        if suffix is None:
            if check:
                raise ValueError(f"pclucas14 checkpoint: tensor {key!r} is not a weight or bias of a layer")
            continue
        layer, role = name[:-len(suffix) - 1], _ROLES[suffix]
        if check and not (isinstance(tensor, torch.Tensor) and tensor.is_floating_point()):
            raise ValueError(f"pclucas14 checkpoint: {key!r} is not a float tensor ({type(tensor).__name__})")
        if check and not torch.isfinite(tensor).all():
            raise ValueError(f"pclucas14 checkpoint: {key!r} holds NaN or Inf")
        if check and role in layers.get(layer, {}):
            raise ValueError(f"pclucas14 checkpoint: {key!r} given twice (with and without 'module.'?)")
        layers.setdefault(layer, {})[role] = tensor
    return layers


def _weight(layer: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer's weight: g and v folded, or a plain ``weight`` (a layer saved without weight norm)."""
    roles = set(parts) - {"b"}
    if roles == {"g", "v"}:
        try:
            return fold_weight_norm(parts["g"], parts["v"])
        except ValueError as err:
            raise ValueError(f"pclucas14 checkpoint: {layer}: {err}") from None
    if roles == {"w"}:
        return parts["w"]
    raise ValueError(f"pclucas14 checkpoint: {layer} needs weight_g and weight_v (or one weight), "
                     f"got {sorted(_name(r) for r in roles) or 'none'}")


def _part(layer: str, parts: dict[str, torch.Tensor], role: str) -> torch.Tensor:
    if role not in parts:
        raise ValueError(f"pclucas14 checkpoint: {layer} has no {_name(role)}")
    return parts[role]


def _name(role: str) -> str:
    return {"g": "weight_g", "v": "weight_v", "w": "weight", "b": "bias"}[role]


def _check_channels(layers: dict[str, dict[str, torch.Tensor]], image_shape: tuple[int, int, int]) -> None:
    """The file's colour channels (u_init's input minus the ones channel) against the data's."""
    first = layers.get("u_init.conv", {})
    w = first.get("v", first.get("w"))
    if w is not None and w.dim() == 4 and int(w.shape[1]) - 1 != image_shape[0]:
        raise ValueError(f"pclucas14 checkpoint models {int(w.shape[1]) - 1}-channel images, but the "
                         f"data's images have shape {tuple(image_shape)}")


def _hint(state_dict: Mapping[str, torch.Tensor]) -> str:
    found = pclucas14_hyperparameters(state_dict)
    keys = [k for k in ("nr_resnet", "nr_filters", "nr_logistic_mix") if k in found]
    return f" (the file looks like {', '.join(f'{k}={found[k]}' for k in keys)})" if keys else ""


def _few(names: list[str], n: int = 5) -> str:
    return "none" if not names else ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
