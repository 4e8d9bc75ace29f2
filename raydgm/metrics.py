"""Sample-quality metrics from features: pure functions of numpy arrays (torch tensors are
converted), float64 throughout, explicit ``np.random.Generator`` wherever anything is drawn.

- FID, Heusel et al. (NeurIPS 2017), eq. 6: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2).
- KID, Binkowski et al. (ICLR 2018), Sec. 3: unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3,
  averaged over random subsets; per subset exactly ``cleanfid.fid.kernel_distance``.
- IS, Salimans et al. (NeurIPS 2016), Sec. 4: exp E_x KL(p(y|x) || p(y)), per contiguous split.
- PRDC, Naeem et al. (ICML 2020), eqs. 1-4: precision, recall, density, coverage from k-NN balls.
- Importance-weighted FID / IS, Grover et al. (NeurIPS 2019), Sec. 4 (LFIW): the generated set's
  statistics under normalized weights w = softmax(log w), no resampling.

Every function raises ValueError naming the bad argument (NaN/inf rows, empty or non-2-D
input, mismatched feature dimension, too few rows, bad weights, non-distribution rows).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.special import log_softmax, logsumexp, rel_entr, softmax

from raydgm._checks import check_features, check_log_weights, real_array

__all__ = ["KID", "block_indices", "frechet_distance", "frechet_from_stats", "gaussian_stats",
           "inception_score", "inception_score_from_logits", "kernel_inception_distance",
           "kid_from_subsets", "mean_std", "prdc", "weighted_frechet_distance",
           "weighted_inception_score"]

PROB_ATOL = 1e-4            # rows of ``probs`` must sum to 1 within this
CHUNK_ELEMENTS = 1 << 24    # block size (128 MiB of float64): PRDC distances, covariances


class KID(NamedTuple):
    """KID over S subsets: ``mean`` and ``std`` (ddof=1; 0.0 for S = 1) of ``values`` (S,)."""
    mean: float
    std: float
    values: np.ndarray


# --------------------------------------------------------------------------- validation

def _normalized_weights(log_weights: Any, n: int, name: str = "log_weights") -> np.ndarray:
    """softmax(log_weights) as float64 ``(n,)``; -inf is a zero weight, NaN/+inf are errors."""
    return softmax(check_log_weights(log_weights, name, n))


def _check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    p = check_features(probs, name)
    if (p < 0).any():
        raise ValueError(f"{name} has {int((p < 0).any(axis=1).sum())} rows with negative "
                         "entries; pass class probabilities (apply softmax to logits)")
    off = np.abs(p.sum(axis=1) - 1.0) > PROB_ATOL
    if off.any():
        raise ValueError(f"{name} has {int(off.sum())} rows that do not sum to 1 within "
                         f"{PROB_ATOL} (first at row {int(np.argmax(off))}); pass class "
                         "probabilities (apply softmax to logits, or use "
                         "inception_score_from_logits)")
    return p


# --------------------------------------------------------------------------- FID

def gaussian_stats(feats: Any, weights: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (float64) of ``feats`` ``(N, D)``.

    Unweighted: ``np.cov`` with ddof=1, as pytorch-fid / clean-fid. With nonnegative
    ``weights`` ``(N,)`` (any scale; normalized to w, sum w = 1) the reliability-weights
    unbiased estimate mu = sum_i w_i x_i, S = sum_i w_i (x_i - mu)(x_i - mu)^T / (1 - sum_i w_i^2),
    which equals the ddof=1 covariance for equal weights. Needs >= 2 rows (nonzero weights).
    """
    x = check_features(feats, "feats", min_rows=2, why="a covariance")
    n = x.shape[0]
    if weights is None:
        w = np.full(n, 1.0 / n)
    else:
        w = real_array(weights, "weights")
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},) to match feats, got {w.shape}")
        bad, neg = int((~np.isfinite(w)).sum()), int((w < 0).sum())
        if bad or neg:
            raise ValueError(f"weights must be finite and >= 0; got {bad} non-finite, "
                             f"{neg} negative")
        if np.count_nonzero(w) < 2:
            raise ValueError(f"weights has {np.count_nonzero(w)} nonzero entries; a covariance "
                             "needs at least 2 rows of nonzero weight")
        w = w / w.sum()
    mu = w @ x
    cov = np.zeros((x.shape[1], x.shape[1]))
    step = max(1, CHUNK_ELEMENTS // x.shape[1])
    for i in range(0, n, step):                     # chunked: no (N, D) centred copy
        xc = x[i:i + step] - mu
        cov += (xc * w[i:i + step, None]).T @ xc
    denom = 1.0 - np.sum(w ** 2)                    # = (N - 1) / N for equal weights
    return mu, cov / denom


def _trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """Tr (S_a S_b)^1/2 = sum_i sqrt(lambda_i), lambda the eigenvalues of R^T S_b R for any
    factor S_a = R R^T (R R^T S_b and R^T S_b R share eigenvalues): symmetric PSD, real."""
    try:
        root = np.linalg.cholesky(cov_a)            # fast path: S_a positive definite
    except np.linalg.LinAlgError:                   # singular (N <= D, constant features)
        vals, vecs = np.linalg.eigh(cov_a)
        root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    middle = root.T @ cov_b @ root
    lam = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())   # round-off negatives -> 0


def frechet_from_stats(mu_a: Any, cov_a: Any, mu_b: Any, cov_b: Any) -> float:
    """Frechet distance between N(mu_a, cov_a) and N(mu_b, cov_b); mu ``(D,)``, cov ``(D, D)``.

    Tr (S_a S_b)^1/2 is computed as Tr (R^T S_b R)^1/2 with S_a = R R^T (Cholesky, or the
    eigendecomposition when S_a is singular) and one symmetric eigenvalue solve: real,
    finite and defined for singular covariances, so no eps*I retry and no imaginary part
    to drop as in clean-fid's ``scipy.linalg.sqrtm`` path (and several times faster).
    """
    mu_a, mu_b = real_array(mu_a, "mu_a"), real_array(mu_b, "mu_b")
    cov_a, cov_b = real_array(cov_a, "cov_a"), real_array(cov_b, "cov_b")
    if mu_a.ndim != 1 or mu_a.size == 0 or mu_a.shape != mu_b.shape:
        raise ValueError(f"mu_a and mu_b must be non-empty 1-D of one shape, got {mu_a.shape} "
                         f"and {mu_b.shape}")
    d = mu_a.shape[0]
    for name, c in (("cov_a", cov_a), ("cov_b", cov_b)):
        if c.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}) to match the means, got {c.shape}")
    for name, v in (("mu_a", mu_a), ("mu_b", mu_b), ("cov_a", cov_a), ("cov_b", cov_b)):
        if not np.isfinite(v).all():
            raise ValueError(f"{name} has {int((~np.isfinite(v)).sum())} NaN or inf entries")
    cov_a, cov_b = (cov_a + cov_a.T) / 2, (cov_b + cov_b.T) / 2
    tr_covmean = _trace_sqrt_product(cov_a, cov_b)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """FID between two feature sets ``(N_a, D)`` and ``(N_b, D)`` (ddof=1 covariances)."""
    a = check_features(feats_a, "feats_a", min_rows=2, why="a covariance")
    b = check_features(feats_b, "feats_b", min_rows=2, dim=a.shape[1], why="a covariance")
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def weighted_frechet_distance(real_feats: Any, gen_feats: Any, log_weights: Any) -> float:
    """FID of the importance-weighted generated set against the real set (LFIW evaluation).

    Generated statistics use w = softmax(``log_weights``) ``(N_gen,)`` in ``gaussian_stats``
    (reliability-weights covariance, / (1 - sum w^2)); the real set's are the plain ddof=1
    ones. Zero log-weights give exactly ``frechet_distance``. -inf entries are weight 0.
    """
    real = check_features(real_feats, "real_feats", min_rows=2, why="a covariance")
    gen = check_features(gen_feats, "gen_feats", min_rows=2, dim=real.shape[1], why="a covariance")
    w = _normalized_weights(log_weights, gen.shape[0])
    return frechet_from_stats(*gaussian_stats(real), *gaussian_stats(gen, weights=w))


# --------------------------------------------------------------------------- KID

def kid_from_subsets(feats_a: Any, feats_b: Any, subsets_a: Any, subsets_b: Any) -> KID:
    """KID from explicit subsets: ``subsets_a`` / ``subsets_b`` int ``(S, m)`` row indices.

    Per subset, with x = feats_b[subsets_b[s]], y = feats_a[subsets_a[s]], k(x, y) =
    (x.y / D + 1)^3, a = K_xx + K_yy, b = K_xy (clean-fid's ``kernel_distance``):
    value_s = [(sum a - tr a) / (m - 1) - 2 sum b / m] / m, the unbiased MMD^2 estimate.
    """
    a = check_features(feats_a, "feats_a", min_rows=2, why="an unbiased MMD")
    b = check_features(feats_b, "feats_b", min_rows=2, dim=a.shape[1], why="an unbiased MMD")
    idx_a, idx_b = np.asarray(subsets_a), np.asarray(subsets_b)
    for name, idx, n in (("subsets_a", idx_a, a.shape[0]), ("subsets_b", idx_b, b.shape[0])):
        if idx.ndim != 2 or idx.shape[0] == 0 or idx.shape[1] < 2 or idx.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer (S, m) array with S >= 1, m >= 2; "
                             f"got {idx.dtype} {idx.shape}")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"{name} has indices outside [0, {n})")
        if (np.diff(np.sort(idx, axis=1), axis=1) == 0).any():
            raise ValueError(f"{name} repeats an index within a subset (draw without replacement)")
    if idx_a.shape != idx_b.shape:
        raise ValueError(f"subsets_a {idx_a.shape} and subsets_b {idx_b.shape} differ in shape")
    d, m = a.shape[1], idx_a.shape[1]
    values = np.empty(idx_a.shape[0])
    for s in range(idx_a.shape[0]):
        x, y = b[idx_b[s]], a[idx_a[s]]
        k_sum = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        t = (k_sum.sum() - np.trace(k_sum)) / (m - 1) - k_xy.sum() * 2 / m
        values[s] = t / m
    mean, std = mean_std(values)
    return KID(mean, std, values)


def kernel_inception_distance(feats_a: Any, feats_b: Any, rng: np.random.Generator,
                              num_subsets: int = 100, subset_size: int = 1000) -> KID:
    """KID between ``(N_a, D)`` and ``(N_b, D)`` features over ``num_subsets`` subsets.

    Each subset draws m = min(subset_size, N_a, N_b) rows of each set without replacement
    from ``rng`` (b first, then a, as clean-fid orders its draws); see ``kid_from_subsets``.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a np.random.Generator, got {type(rng).__name__}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets}, "
                         f"{subset_size}")
    a = check_features(feats_a, "feats_a", min_rows=2, why="an unbiased MMD")
    b = check_features(feats_b, "feats_b", min_rows=2, dim=a.shape[1], why="an unbiased MMD")
    m = min(subset_size, a.shape[0], b.shape[0])
    idx_a, idx_b = np.empty((num_subsets, m), np.int64), np.empty((num_subsets, m), np.int64)
    for s in range(num_subsets):
        idx_b[s] = rng.choice(b.shape[0], m, replace=False)
        idx_a[s] = rng.choice(a.shape[0], m, replace=False)
    return kid_from_subsets(a, b, idx_a, idx_b)


# --------------------------------------------------------------------------- IS

def _check_splits(n: int, splits: int) -> None:
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, N={n}] (each split needs a row), got {splits}")


def inception_score(probs: Any, splits: int = 10) -> tuple[float, float]:
    """IS from class probabilities ``(N, C)`` (rows sum to 1): (mean, std) over ``splits``.

    Splits are contiguous (``np.array_split``) as in the original code; per split
    exp(mean_i KL(p(y|x_i) || p(y))), p(y) the split's mean row; std with ddof=0 as there.
    Range [1, C]. 0 log 0 = 0 via ``scipy.special.rel_entr``.
    """
    p = _check_probs(probs)
    _check_splits(p.shape[0], splits)
    scores = [np.exp(rel_entr(part, part.mean(axis=0)).sum(axis=1).mean())
              for part in np.array_split(p, splits)]
    return float(np.mean(scores)), float(np.std(scores))


def inception_score_from_logits(logits: Any, splits: int = 10) -> tuple[float, float]:
    """IS from logits ``(N, C)``, all in log space: log p = log_softmax(logits), log p(y) =
    logsumexp over the split's rows - log n; equals ``inception_score(softmax(logits))``."""
    logp = log_softmax(check_features(logits, "logits"), axis=1)
    _check_splits(logp.shape[0], splits)
    scores = []
    for part in np.array_split(logp, splits):
        log_py = logsumexp(part, axis=0) - np.log(part.shape[0])
        scores.append(np.exp((np.exp(part) * (part - log_py)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def weighted_inception_score(probs: Any, log_weights: Any) -> float:
    """Importance-weighted IS (one split): exp(sum_i w_i KL(p(y|x_i) || p_w(y))), with
    w = softmax(``log_weights``) ``(N,)`` and p_w(y) = sum_i w_i p(y|x_i). Zero log-weights
    give ``inception_score(probs, splits=1)``; rows with weight 0 (-inf) are ignored."""
    p = _check_probs(probs)
    w = _normalized_weights(log_weights, p.shape[0])
    keep = w > 0
    p, w = p[keep], w[keep]
    p_w = w @ p
    return float(np.exp(w @ rel_entr(p, p_w).sum(axis=1)))


# --------------------------------------------------------------------------- PRDC

def _distance_blocks(x: np.ndarray, y: np.ndarray):
    """Yield (row offset, exact Euclidean distances of a block of x's rows to all of y)."""
    y_sq = np.einsum("ij,ij->i", y, y)
    step = max(1, CHUNK_ELEMENTS // max(y.shape[0], x.shape[1]))
    for i in range(0, x.shape[0], step):
        xb = x[i:i + step]
        d2 = np.einsum("ij,ij->i", xb, xb)[:, None] + y_sq[None, :] - 2.0 * xb @ y.T
        yield i, np.sqrt(np.clip(d2, 0.0, None))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of x to its k-th nearest neighbour in x, self excluded ``(N,)``."""
    radii = np.empty(x.shape[0])
    for i, d in _distance_blocks(x, x):             # self is the 0th neighbour: take the (k+1)-th
        radii[i:i + d.shape[0]] = np.partition(d, k, axis=1)[:, k]
    return radii


def prdc(real_feats: Any, fake_feats: Any, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al. 2020, eqs. 1-4) of ``fake_feats``
    ``(M, D)`` against ``real_feats`` ``(N, D)``; k-NN radii exclude the point itself.

    Balls are open (``d < radius``), as the authors' ``prdc`` package. Distances are exact,
    computed in row blocks of at most ``CHUNK_ELEMENTS`` entries (never a full N x M matrix).
    precision, recall, coverage in [0, 1]; density in [0, N/k].
    """
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    why = f"k={k} nearest neighbours excluding self"
    real = check_features(real_feats, "real_feats", min_rows=k + 1, why=why)
    fake = check_features(fake_feats, "fake_feats", min_rows=k + 1, dim=real.shape[1], why=why)
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    in_real = np.zeros(fake.shape[0], dtype=bool)   # fake_j inside some real ball
    counts = np.zeros(fake.shape[0])                # number of real balls holding fake_j
    recalled = np.zeros(real.shape[0], dtype=bool)  # real_i inside some fake ball
    nearest_fake = np.full(real.shape[0], np.inf)   # min_j d(real_i, fake_j)
    for i, d in _distance_blocks(fake, real):      # d: (block of fake, N real)
        rows = slice(i, i + d.shape[0])
        inside = d < r_real[None, :]
        in_real[rows] = inside.any(axis=1)
        counts[rows] = inside.sum(axis=1)
        recalled |= (d < r_fake[rows, None]).any(axis=0)
        nearest_fake = np.minimum(nearest_fake, d.min(axis=0))
    return {"precision": float(in_real.mean()), "recall": float(recalled.mean()),
            "density": float(counts.mean() / k), "coverage": float((nearest_fake < r_real).mean())}


# --------------------------------------------------------------------------- blocks

def block_indices(n: int, num_blocks: int, block_size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """``num_blocks`` blocks of ``block_size`` distinct indices into range(n): int64
    ``(num_blocks, block_size)`` and whether the blocks are disjoint. Disjoint (one
    permutation cut into blocks) when n >= num_blocks * block_size; else each block is an
    independent draw without replacement, and blocks overlap."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a np.random.Generator, got {type(rng).__name__}")
    if num_blocks < 1 or block_size < 1:
        raise ValueError(f"num_blocks and block_size must be >= 1, got {num_blocks}, {block_size}")
    if block_size > n:
        raise ValueError(f"block_size={block_size} exceeds n={n} rows")
    if n >= num_blocks * block_size:
        perm = rng.permutation(n)[:num_blocks * block_size]
        return perm.reshape(num_blocks, block_size).astype(np.int64), True
    idx = np.stack([rng.choice(n, block_size, replace=False) for _ in range(num_blocks)])
    return idx.astype(np.int64), False


def mean_std(values: Any) -> tuple[float, float]:
    """Mean and std (ddof=1; 0.0 for a single value) of a non-empty finite 1-D array."""
    v = real_array(values, "values").ravel()
    if v.size == 0:
        raise ValueError("values is empty")
    if not np.isfinite(v).all():
        raise ValueError(f"values has {int((~np.isfinite(v)).sum())} NaN or inf entries")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return float(v.mean()), std


def format_pm(mean: float, std: float | None, fmt: str | None = None) -> str:
    """"mean ± std"; the mean alone when ``std`` is None or NaN (one seed), "–" when the mean is
    NaN. ``fmt``: a format spec for both (``".4f"``); None: 2 decimals for 1 <= |mean| < 1e5
    (FID 12.34 ± 0.50), else 3 significant digits and a 2-digit std (KID 0.00123 ± 0.00045)."""
    if mean is None or np.isnan(mean):
        return "\u2013"   # en dash
    fixed = 1.0 <= abs(mean) < 1e5
    mean_fmt, std_fmt = (fmt, fmt) if fmt else ((".2f", ".2f") if fixed else (".3g", ".2g"))
    text = format(mean, mean_fmt)
    return text if std is None or np.isnan(std) else f"{text} \u00b1 {std:{std_fmt}}"
