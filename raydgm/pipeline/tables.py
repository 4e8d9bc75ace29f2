"""Parquet tables keyed by ``sample_id`` (int64): the data that flows between stages.

- samples:   ``sample_id, seed, image`` (image: fixed-shape uint8 tensor (C, H, W)); samples of a
             known-bias generator also ``true_log_weight`` (float64, -inf for junk),
             ``true_class`` (int64, -1 for junk) and ``source_index`` (int64, the train row copied)
- features:  ``sample_id, features`` and, for extractors with classes, ``logits``
             (fixed-shape float32 tensors (D,) and (K,))
- weights:   ``sample_id, logit, log_weight, split, fold`` (the classifier's raw weights), and the
             samples' ``true_log_weight`` and ``true_class`` where they have them
- resampled: ``sample_id, in_pool, log_weight, count``: every generated row, whether it is in
             the resample stage's pool, its used log-weight (-inf outside the pool) and how
             often the resampler drew it

Readers check the columns and dtypes they expect and name the file when something is off.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


TRUTH_COLUMNS = {"true_log_weight": np.float64, "true_class": np.int64, "source_index": np.int64}


def samples_table(sample_ids: np.ndarray, seeds: np.ndarray, images: np.ndarray,
                  truth: dict[str, np.ndarray] | None = None) -> pa.Table:
    """(N,) ids, (N,) seeds and uint8 (N, C, H, W) images as the samples layout; ``truth``:
    the known-bias columns (``TRUTH_COLUMNS``, each (N,)), or None."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"samples must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
    # pyarrow reads a permutation off the strides; a size-1 axis with an odd stride (x[:, None])
    # would be stored as (H, W, 1) with permutation (1, 2, 0). A fresh copy has plain C strides.
    expected = tuple(int(np.prod(images.shape[i + 1:])) for i in range(4))
    if images.strides != expected:
        images = images.copy(order="C")
    columns = {"sample_id": _ids(sample_ids, len(images)), "seed": pa.array(np.asarray(seeds, dtype=np.int64)),
               "image": pa.FixedShapeTensorArray.from_numpy_ndarray(images)}
    return pa.table(columns | _truth_columns(truth, len(images)))


def _truth_columns(truth: dict[str, np.ndarray] | None, n: int, names: tuple[str, ...] = tuple(TRUTH_COLUMNS)
                   ) -> dict[str, pa.Array]:
    if truth is None:
        return {}
    if not set(names) <= set(truth):
        raise ValueError(f"truth must hold {sorted(names)}, got {sorted(truth)}")
    out = {}
    for name in names:
        values = np.asarray(truth[name], dtype=TRUTH_COLUMNS[name])
        if values.shape != (n,):
            raise ValueError(f"truth column {name} must have shape ({n},), got {values.shape}")
        if np.isnan(values).any() or np.isposinf(values).any():
            raise ValueError(f"truth column {name} holds NaN or +inf")
        out[name] = pa.array(values)
    return out


def read_truth(path: str | Path) -> dict[str, np.ndarray] | None:
    """The known-bias columns of a samples (or weights) table, sorted by ``sample_id`` (which is
    included); None when it has none."""
    table = _read(path, ("sample_id",))
    names = [c for c in TRUTH_COLUMNS if c in table.column_names]
    if not names:
        return None
    table = table.select(["sample_id", *names]).sort_by("sample_id")
    return {"sample_id": _np(table, "sample_id", np.int64)} | {c: _np(table, c, TRUTH_COLUMNS[c]) for c in names}


def write_samples(path: str | Path, sample_ids: np.ndarray, seeds: np.ndarray,
                  images: np.ndarray) -> int:
    """Write (N,) ids, (N,) seeds and uint8 (N, C, H, W) images; returns N."""
    table = samples_table(sample_ids, seeds, images)
    pq.write_table(table, path)
    return table.num_rows


def read_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample_id int64 (N,), seed int64 (N,), image uint8 (N, C, H, W)), sorted by sample_id.

    ``path`` is one Parquet file or a directory of them (the generation stage's ``samples/``).
    """
    table = _read(path, ("sample_id", "seed", "image")).sort_by("sample_id")
    image = table.column("image").combine_chunks()
    if not isinstance(image.type, pa.FixedShapeTensorType) or image.type.value_type != pa.uint8():
        raise ValueError(f"{path}: column 'image' must be a fixed-shape uint8 tensor, got {image.type}")
    return (_np(table, "sample_id", np.int64), _np(table, "seed", np.int64),
            image.to_numpy_ndarray())


def features_table(sample_ids: np.ndarray, features: np.ndarray,
                   logits: np.ndarray | None = None) -> pa.Table:
    """(N,) ids, float (N, D) features and optional (N, K) logits as the features layout."""
    columns = {"features": features} | ({"logits": logits} if logits is not None else {})
    data = {"sample_id": _ids(sample_ids, len(features))}
    for name, values in columns.items():
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.ndim != 2 or len(values) != len(features):
            raise ValueError(f"{name} must be (N, D) with N={len(features)}, got {values.shape}")
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            raise ValueError(f"refusing to write {name} with NaN or inf: {int(bad.sum())} of "
                             f"{len(values)} rows (first sample_id {np.asarray(sample_ids)[bad][0]})")
        data[name] = pa.FixedShapeTensorArray.from_numpy_ndarray(values)
    return pa.table(data)


def write_features(path: str | Path, sample_ids: np.ndarray, features: np.ndarray,
                   logits: np.ndarray | None = None) -> int:
    """Write per-sample features (and class logits); returns N."""
    table = features_table(sample_ids, features, logits)
    pq.write_table(table, path)
    return table.num_rows


def read_features(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(sample_id int64 (N,), features float32 (N, D), logits float32 (N, K) or None), by id.

    ``path`` is one Parquet file or a directory of them.
    """
    table = _read(path, ("sample_id", "features")).sort_by("sample_id")
    out = []
    for name in ("features", "logits"):
        if name not in table.column_names:
            out.append(None)
            continue
        col = table.column(name).combine_chunks()
        if not isinstance(col.type, pa.FixedShapeTensorType) or col.type.value_type != pa.float32():
            raise ValueError(f"{path}: column {name!r} must be a fixed-shape float32 tensor, got {col.type}")
        out.append(col.to_numpy_ndarray())
    return _np(table, "sample_id", np.int64), out[0], out[1]


def image_shape(path: str | Path) -> tuple[int, ...]:
    """(C, H, W) of a samples table's images, from the Parquet schema (no rows are read)."""
    import pyarrow.dataset as pads
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table not found: {path}")
    field = pads.dataset(path, format="parquet").schema.field("image")
    if not isinstance(field.type, pa.FixedShapeTensorType):
        raise ValueError(f"{path}: column 'image' must be a fixed-shape uint8 tensor, got {field.type}")
    return tuple(field.type.shape)


def write_weights(path: str | Path, sample_ids: np.ndarray, logit: np.ndarray,
                  log_weight: np.ndarray, split: np.ndarray, fold: np.ndarray,
                  truth: dict[str, np.ndarray] | None = None) -> int:
    """Write per-sample classifier logits and log importance weights, each row's split
    (``train`` / ``val`` / ``calib`` of a single fit, ``out_of_fold`` under cross-fitting)
    and the fold whose model weighted it; ``truth``: the samples' known-bias columns, aligned
    (``true_log_weight`` and ``true_class`` are kept); returns N."""
    logit, log_weight = np.asarray(logit, np.float64), np.asarray(log_weight, np.float64)
    if np.isnan(logit).any() or np.isnan(log_weight).any():
        raise ValueError(f"refusing to write NaN weights to {path}")
    table = pa.table({
        "sample_id": _ids(sample_ids, len(logit)),
        "logit": pa.array(logit),
        "log_weight": pa.array(log_weight),
        "split": pa.array(np.asarray(split, dtype=str)),
        "fold": pa.array(np.asarray(fold, dtype=np.int64)),
    } | _truth_columns(truth, len(logit), ("true_log_weight", "true_class")))
    pq.write_table(table, path)
    return len(logit)


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    table = _read(path, ("sample_id", "logit", "log_weight", "split", "fold"))
    out = {"sample_id": _np(table, "sample_id", np.int64),
           "logit": _np(table, "logit", np.float64),
           "log_weight": _np(table, "log_weight", np.float64),
           "split": np.asarray(table.column("split").to_pylist(), dtype=str),
           "fold": _np(table, "fold", np.int64)}
    if np.isnan(out["log_weight"]).any():
        raise ValueError(f"{path}: column 'log_weight' holds NaN")
    return out


def write_resampled(path: str | Path, sample_ids: np.ndarray, in_pool: np.ndarray, log_weight: np.ndarray,
                    counts: np.ndarray) -> int:
    """Write every generated row's pool membership, used log-weight and draw count; returns the
    rows drawn."""
    log_weight, counts = np.asarray(log_weight, np.float64), np.asarray(counts, dtype=np.int64)
    if np.isnan(log_weight).any():
        raise ValueError(f"refusing to write NaN weights to {path}")
    pq.write_table(pa.table({"sample_id": _ids(sample_ids, len(counts)),
                             "in_pool": pa.array(np.asarray(in_pool, dtype=bool)),
                             "log_weight": pa.array(log_weight), "count": pa.array(counts)}), path)
    return int((counts > 0).sum())


def read_resampled(path: str | Path) -> dict[str, np.ndarray]:
    table = _read(path, ("sample_id", "in_pool", "log_weight", "count"))
    return {"sample_id": _np(table, "sample_id", np.int64), "in_pool": _np(table, "in_pool", bool),
            "log_weight": _np(table, "log_weight", np.float64), "count": _np(table, "count", np.int64)}


def _ids(sample_ids: np.ndarray, n: int) -> pa.Array:
    ids = np.asarray(sample_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"sample_id must have shape ({n},), got {ids.shape}")
    if len(np.unique(ids)) != n:
        raise ValueError("sample_id values must be unique")
    return pa.array(ids)


def _read(path: str | Path, columns: tuple[str, ...]) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table not found: {path}")
    if path.is_dir() and not any(path.glob("*.parquet")):
        raise FileNotFoundError(f"no .parquet files in {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"cannot read Parquet table {path}: {err}") from err
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {table.column_names}")
    return table


def _np(table: pa.Table, column: str, dtype: type) -> np.ndarray:
    return np.asarray(table.column(column).to_numpy(), dtype=dtype)
