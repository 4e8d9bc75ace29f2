"""The checks that more than one module applies, each in one place: image and label arrays
(every loader and trainer; ``raydgm.data`` re-exports them), feature matrices and finite rows
(metrics, the density ratio, Inception), log importance weights (resampling, diagnostics,
metrics). A bad array fails with a message that names it and says what was found."""
from __future__ import annotations

from typing import Any

import numpy as np


def _is_int_dtype(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) and dtype != np.bool_


def check_images(images: Any, where: str) -> None:
    """Raise unless ``images`` is a non-empty uint8 (N, C, H, W) array with C in {1, 3}."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{where}: images must be a numpy array, found {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: images must have dtype uint8 (0..255), found {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or 0 in images.shape:
        channels_last = images.ndim == 4 and images.shape[-1] in (1, 3)
        hint = "; it looks channels-last, transpose to (N, C, H, W)" if channels_last else ""
        raise ValueError(f"{where}: images must have shape (N, C, H, W) with C in {{1, 3}} and N, H, W > 0, "
                         f"found {images.shape}{hint}")


def check_labels(labels: Any, n: int, where: str, num_classes: int | None = None) -> np.ndarray:
    """``labels`` as int64 (n,) after checking dtype, length and values: >= 0, and below
    ``num_classes`` when given. ``where`` names the labels in the error (``"npz file x: labels"``)."""
    labels = np.asarray(labels)
    expected = f"{where} must be an integer array of shape ({n},) matching the images"
    if not _is_int_dtype(labels.dtype):
        raise ValueError(f"{expected} (they must have an integer dtype, found {labels.dtype})")
    if labels.shape != (n,):
        raise ValueError(f"{expected} (labels length mismatch: expected shape ({n},), found {labels.shape})")
    if not labels.size:
        return labels.astype(np.int64)
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where} must be in 0..{num_classes - 1}, found "
                         f"{int(labels.min())}..{int(labels.max())}")
    if labels.min() < 0:
        raise ValueError(f"{where}: label values must be >= 0, found {int(labels.min())}; "
                         "omit labels for unlabeled data")
    return labels.astype(np.int64)


def real_array(x: Any, name: str) -> np.ndarray:
    """``x`` (numpy, a list or a torch tensor, which is not imported here) as float64; ValueError
    naming ``name`` unless it holds real numbers (integers or floats; not bool)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):          # torch.Tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def check_finite_rows(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` (N, ...) unchanged, or ValueError counting its rows (the first axis) that hold NaN or inf."""
    bad = ~np.isfinite(array).all(axis=tuple(range(1, array.ndim)))
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} of {len(array)} rows with NaN or inf "
                         f"(first at row {int(np.argmax(bad))})")
    return array


def check_features(x: Any, name: str, dim: int | None = None, min_rows: int = 1,
                   why: str = "") -> np.ndarray:
    """``x`` (numpy or torch) as a finite float64 ``(N, D)`` array with N >= ``min_rows`` and
    D == ``dim``; ``why`` names what needs the rows in the error."""
    x = real_array(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    check_finite_rows(x, name)
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"feature dimension mismatch: {name} has D={x.shape[1]}, expected D={dim}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has {x.shape[0]} rows; {why or 'this'} needs at least {min_rows}")
    return x


def check_log_weights(log_weights: Any, name: str = "log_weights", n: int | None = None) -> np.ndarray:
    """``log_weights`` (numpy or torch) as float64 ``(N,)``, not copied when it already is one:
    real numbers, 1-D, not empty, N == ``n`` when given; no NaN, no +inf, not all -inf (a -inf
    entry is a weight of zero). One pass (the max) when the weights are good: it runs on 10^7
    rows in ``raydgm.resample``."""
    lw = real_array(log_weights, name)
    if n is not None and lw.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one per row, got {lw.shape}")
    if lw.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {lw.shape}")
    if lw.size == 0:
        raise ValueError(f"{name} is empty")
    top = lw.max()                      # NaN propagates; +inf and all -inf show up here too
    if np.isnan(top):
        raise ValueError(f"{name} has {int(np.isnan(lw).sum())} NaN entries "
                         f"(first at index {int(np.flatnonzero(np.isnan(lw))[0])})")
    if top == np.inf:
        raise ValueError(f"{name} has {int(np.isposinf(lw).sum())} +inf entries (first at index "
                         f"{int(np.flatnonzero(lw == np.inf)[0])}): infinite weights; clip them first "
                         "(log_clip_max)")
    if top == -np.inf:
        raise ValueError(f"all {lw.size} entries of {name} are -inf (every weight is zero)")
    return lw
