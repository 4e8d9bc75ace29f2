"""Reading CIFAR-10's ``cifar-10-batches-py`` directory safely (``raydgm.data`` calls
``load_cifar10``): the pickles are opened with an unpickler that resolves only what a plain
numpy array needs, so a file holding code is refused, not run."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from raydgm._checks import check_labels

CIFAR_DIRNAME = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_META_FILE = "batches.meta"


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


def load_cifar10(path: Path, download: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
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
