"""Resampling over unnormalized log-weights: SIR schemes and alternatives.

Given a pool of N generated samples x_1..x_N with log importance weights
log w_i = log p_data(x_i) - log p_theta(x_i) + const (docs/design.md, step 3), sampling-importance-
resampling (SIR) draws indices with probability

    p_i = w_i / sum_j w_j = exp(log w_i - m) / sum_j exp(log w_j - m),   m = max_j log w_j   (1)

(Grover et al. 2019, Sec. 3). Every scheme here works in log space (eq. 1 subtracts the max
before exp), takes an explicit ``np.random.Generator`` and never touches global random state.

``-inf`` log-weights are legal and never drawn. Finite entries whose weight underflows
(log w_i - m < -745) have p_i < 1e-323 and are never drawn either.

Methods (``METHODS``), and the order of the indices they return:

==============  =============================================  ===============================
method          what it draws                                  output order
==============  =============================================  ===============================
multinomial     i.i.d. categorical(p), eq. 1                   sorted ascending
systematic      one uniform, n evenly spaced points            sorted ascending
stratified      one uniform per stratum [j/n, (j+1)/n)         sorted ascending
residual        floor(n p_i) copies + multinomial remainder    sorted ascending
gumbel_max      i.i.d. categorical(p) by the Gumbel-max trick  draw order (i.i.d. sequence)
gumbel_topk     k distinct indices, Plackett-Luce; NOT SIR     decreasing perturbed key
rejection       i.i.d. categorical(p) by rejection (DRS)       acceptance order (i.i.d.)
mh              independence Metropolis-Hastings chain (MH-    chain order (correlated)
                GAN); stationary law p, draws correlated
==============  =============================================  ===============================

The sorted outputs are exchangeable as a multiset; apply ``rng.permutation`` if position
matters. systematic / stratified / residual are unbiased (E[count_i] = n p_i) with lower
count variance than multinomial, but their draws are not independent.
"""
from __future__ import annotations

import numbers

import numpy as np

from raydgm._checks import check_log_weights
from raydgm._names import RESAMPLE_METHODS as METHODS

_CHUNK = 1 << 22  # elements in one temporary array of a chunked method (32 MiB of float64)
_SEARCH_BLOCK = 1 << 14  # sorted queries per block in _search_sorted
_MH_BLOCK = 1 << 16  # chain steps per block in _mh


def resample(log_weights, num_samples: int, method: str, rng: np.random.Generator, *,
             burn_in: int = 0, min_accept_rate: float | None = None) -> np.ndarray:
    """Draw ``num_samples`` indices into ``log_weights`` with the scheme ``method``.

    Args:
        log_weights: (N,) real array of unnormalized log-weights, finite or -inf; no NaN, no
            +inf, not all -inf. Any dtype castable to float64.
        num_samples: n >= 1 draws. For "gumbel_topk", 1 <= n <= number of finite entries.
        method: one of ``METHODS`` (see the module docstring for law and output order).
        rng: the only source of randomness; same seed and inputs -> same output.
        burn_in: "mh" only: chain steps discarded before the n kept ones (>= 0).
        min_accept_rate: "rejection" only (default 1e-3): refuse weights whose acceptance
            rate mean(w)/max(w) is below this; the expected cost is n / rate proposals.

    Returns:
        (n,) int64 indices in [0, N), never at a -inf entry.

    Raises:
        ValueError: bad log_weights, num_samples, method, rng or options.
    """
    log_w = check_log_weights(log_weights)
    _check_rng(rng)
    n = _check_count(num_samples, "num_samples")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    if _check_count(burn_in, "burn_in", minimum=0) and method != "mh":
        raise ValueError(f"burn_in applies only to method 'mh', got burn_in={burn_in} "
                         f"with method {method!r}")
    if min_accept_rate is not None and method != "rejection":
        raise ValueError(f"min_accept_rate applies only to method 'rejection', got "
                         f"method {method!r}")
    if method == "mh":
        return _mh(log_w, n, rng, burn_in)
    if method == "rejection":
        return _rejection(log_w, n, rng, 1e-3 if min_accept_rate is None else min_accept_rate)
    return _SCHEMES[method](log_w, n, rng)


def gumbel_softmax_weights(log_weights, tau: float, rng: np.random.Generator) -> np.ndarray:
    """Relaxed resampling weights softmax((log w + g) / tau), g_i ~ Gumbel(0, 1) i.i.d.

    The Gumbel-softmax (concrete) relaxation of one categorical draw from eq. 1, as used
    for relaxed weights in the 2023 resampling thesis: y_i = exp((log w_i + g_i)/tau) /
    sum_j exp((log w_j + g_j)/tau). As tau -> 0, y -> one-hot at argmax_i(log w_i + g_i)
    (an exact draw from eq. 1); as tau -> inf, y -> uniform over the finite entries.
    E[y] is not p for tau > 0. Noise is drawn as ``g = rng.gumbel(size=N)``.

    Args:
        log_weights: (N,) unnormalized log-weights, as in ``resample``.
        tau: temperature, finite and > 0.
        rng: source of the Gumbel noise.

    Returns:
        (N,) float64 in [0, 1] summing to 1; exactly 0 at -inf entries.
    """
    log_w = check_log_weights(log_weights)
    _check_rng(rng)
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not 0 < tau < np.inf:
        raise ValueError(f"tau must be a finite real number > 0, got {tau!r}")
    y = log_w + rng.gumbel(size=log_w.size)
    y -= y.max()  # <= 0, so dividing by a tiny tau gives -inf, never inf - inf
    with np.errstate(over="ignore"):
        y /= float(tau)
    np.exp(y, out=y)
    return y / y.sum()


def counts(indices, n: int) -> np.ndarray:
    """Number of times each of ``n`` pool entries was drawn.

    Args:
        indices: (M,) integer indices in [0, n), e.g. the output of ``resample``.
        n: pool size N >= 1.

    Returns:
        (n,) int64 counts summing to M (the ``count`` column of the resampled table).
    """
    n = _check_count(n, "n")
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"indices must lie in [0, {n}), got range "
                         f"[{idx.min()}, {idx.max()}]")
    return np.bincount(idx.astype(np.int64, copy=False), minlength=n).astype(np.int64)


# ---------------------------------------------------------------------------- validation


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                         f"got {type(rng).__name__}")


def _check_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# ------------------------------------------------------------------------------- helpers


def _cdf(log_w: np.ndarray) -> np.ndarray:
    """(N,) float64 CDF of eq. 1: nondecreasing, C[-1] == 1.0 exactly.

    Zero-weight entries repeat the previous value exactly, so a query in [0, 1) never lands
    on them; entries after the last positive one are exactly 1.0.
    """
    c = log_w - log_w.max()
    np.exp(c, out=c)
    np.cumsum(c, out=c)
    c /= c[-1]
    return c


def _search_sorted(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categories of ascending queries u in [0, 1]: i with C[i-1] <= u < C[i] (int64, (n,)).

    The result is written over u's own buffer (u must be a float64 array the caller no
    longer needs): every block of queries is read before its block of results is written,
    so no second n-sized array is allocated. Blocked ``searchsorted``: each block searches
    only the slice of the CDF it spans, which keeps the search in cache. Queries at 1.0
    (possible by rounding) go to the last entry with positive mass.
    """
    last = int(np.searchsorted(cdf, 1.0, side="left"))  # last entry with positive mass
    starts = np.arange(0, u.size, _SEARCH_BLOCK)
    ends = np.minimum(starts + _SEARCH_BLOCK, u.size)
    lo = np.searchsorted(cdf, u[starts], side="right")
    hi = np.minimum(np.searchsorted(cdf, u[ends - 1], side="right") + 1, cdf.size)
    out = u.view(np.int64)
    for s, e, a, b in zip(starts.tolist(), ends.tolist(), lo.tolist(), hi.tolist()):
        found = np.searchsorted(cdf[a:b], u[s:e], side="right")  # reads u[s:e] first
        np.add(found, a, out=out[s:e])
    return np.minimum(out, last, out=out)


def _sorted_uniforms(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float64 order statistics of n i.i.d. U(0, 1), ascending, in O(n).

    U_(k) = S_k / S_{n+1} with S_k the partial sums of n + 1 i.i.d. Exp(1) (Devroye 1986,
    Ch. V.2), so no sort is needed.
    """
    s = rng.standard_exponential(n)
    np.cumsum(s, out=s)
    s /= s[-1] + rng.standard_exponential()  # S_{n+1}
    return s


def _finite(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the finite entries (F,) int64 and their log-weights minus the max (F,)."""
    idx = np.flatnonzero(log_w > -np.inf)
    lw = log_w[idx]
    return idx, lw - lw.max()


# ------------------------------------------------------------------------------- schemes


def _multinomial(log_w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n i.i.d. draws from eq. 1, sorted: sorted uniforms located in the CDF. O(N + n log N)."""
    return _search_sorted(_cdf(log_w), _sorted_uniforms(n, rng))


def _systematic(log_w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling (Kitagawa 1996; Douc et al. 2005): points (j + U)/n, one U.

    count_i = #{j : C[i-1] <= (j + U)/n < C[i]} = ceil(n C[i] - U) - ceil(n C[i-1] - U),
    which lies in {floor(n p_i), ceil(n p_i)}. O(N + n), sorted.
    """
    u = rng.random()
    c = _cdf(log_w)
    c *= n
    c -= u
    np.ceil(c, out=c)
    edges = c.astype(np.int64)  # ceil(n C[i] - U), in [0, n]
    np.clip(edges, 0, n, out=edges)
    cnt = c.view(np.int64)  # reuse c's buffer for the counts
    cnt[0] = edges[0]
    np.subtract(edges[1:], edges[:-1], out=cnt[1:])
    return np.repeat(np.arange(log_w.size, dtype=np.int64), cnt)


def _stratified(log_w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified resampling (Kitagawa 1996): one point (j + U_j)/n per stratum. Sorted."""
    points = rng.random(n)
    points += np.arange(n, dtype=np.float64)
    points /= n
    return _search_sorted(_cdf(log_w), points)


def _residual(log_w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Residual resampling (Liu & Chen 1998): floor(n p_i) copies of i, then r = n -
    sum_i floor(n p_i) multinomial draws with p'_i proportional to n p_i - floor(n p_i).
    Sorted."""
    frac = np.exp(log_w - log_w.max())
    frac *= n / frac.sum()  # n p_i
    cnt = frac.astype(np.int64)  # floor(n p_i): truncation of values >= 0
    frac -= cnt
    r = n - int(cnt.sum())
    if r < 0:  # impossible up to rounding of N numbers; never silently return n' != n
        raise RuntimeError(f"residual resampling: floor counts sum to {n - r} > n={n}")
    if r:
        np.cumsum(frac, out=frac)
        frac /= frac[-1]
        cnt += np.bincount(_search_sorted(frac, _sorted_uniforms(r, rng)),
                           minlength=log_w.size)
    return np.repeat(np.arange(log_w.size, dtype=np.int64), cnt)


def _gumbel_max(log_w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n i.i.d. draws from eq. 1 as argmax_i(log w_i + g_i), g ~ Gumbel(0, 1) fresh per draw.

    Computed as the equivalent exponential race argmax_i w_i / E_i, E_i ~ Exp(1) (g_i =
    -log E_i is Gumbel and the map is monotone), over the entries with w_i > 0. Exact, but
    costs O(n F) time for F such entries (N draws from N: O(N^2)), in chunks of about 2^22
    variates, so memory stays O(F + 2^22). Use "multinomial" when n * F is large.
    """
    idx, lw = _finite(log_w)
    w = np.exp(lw)
    idx, w = idx[w > 0], w[w > 0]
    rows = max(1, _CHUNK // idx.size)
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, rows):
        race = rng.standard_exponential(size=(min(rows, n - start), idx.size))
        with np.errstate(divide="ignore"):  # E == 0 (prob ~2^-53) wins the race: fine
            np.divide(w, race, out=race)
        out[start:start + race.shape[0]] = idx[np.argmax(race, axis=1)]
    return out


def _gumbel_topk(log_w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k DISTINCT indices: the top-k of log w_i + g_i (one Gumbel per entry). NOT SIR.

    This is sampling without replacement / successive sampling: the indices, in decreasing
    order of perturbed key, are a Plackett-Luce draw (first i with prob p_i, next j with prob
    p_j / (1 - p_i), ...; Kool et al. 2019, "Stochastic Beams and Where to Find Them").
    Inclusion probabilities are NOT proportional to w (high weights are under-represented
    relative to SIR). O(N + k log k).
    """
    n_finite = int(np.count_nonzero(log_w > -np.inf))
    if k > n_finite:
        raise ValueError(f"gumbel_topk draws without replacement: num_samples={k} exceeds the "
                         f"{n_finite} entries with finite log-weight (N={log_w.size})")
    keys = log_w + rng.gumbel(size=log_w.size)
    top = np.argpartition(-keys, k - 1)[:k]
    return top[np.argsort(-keys[top], kind="stable")].astype(np.int64, copy=False)


def _rejection(log_w: np.ndarray, n: int, rng: np.random.Generator,
               min_accept_rate: float) -> np.ndarray:
    """n i.i.d. draws from eq. 1 by rejection (discriminator rejection sampling style).

    Propose i uniformly over the F finite entries, accept with prob w_i / max w; accepted
    proposals are i.i.d. with law p (Azadi et al. 2019, without their gamma shift). Expected
    proposals n / rate with rate = mean(w) / max(w) >= 1/F; drawn in vectorized chunks.
    """
    if isinstance(min_accept_rate, bool) or not isinstance(min_accept_rate, numbers.Real) \
            or not 0 < min_accept_rate <= 1:
        raise ValueError(f"min_accept_rate must be in (0, 1], got {min_accept_rate!r}")
    idx, lw = _finite(log_w)
    accept = np.exp(lw)  # in (0, 1], 1 at the max
    rate = float(accept.mean())
    if rate < min_accept_rate:
        raise ValueError(
            f"rejection: acceptance rate mean(w)/max(w) = {rate:.3g} is below "
            f"min_accept_rate={min_accept_rate:g} (about {n / rate:.3g} proposals for {n} "
            f"draws); use method='multinomial' (same law), or flatten/clip the weights")
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        size = int(min(_CHUNK, np.ceil((n - filled) / rate * 1.1) + 64))
        prop = rng.integers(0, idx.size, size=size)
        kept = prop[rng.random(size) < accept[prop]][: n - filled]
        out[filled:filled + kept.size] = idx[kept]
        filled += kept.size
    return out


def _mh(log_w: np.ndarray, n: int, rng: np.random.Generator, burn_in: int) -> np.ndarray:
    """Independence Metropolis-Hastings over the pool (MH-GAN, Turner et al. 2019).

    Proposal j uniform over the F finite entries; accept with min(1, w_j / w_state)
    (the uniform proposal cancels in the Hastings ratio). The chain starts at a uniform
    draw, runs burn_in + n steps, and returns the last n states. Its stationary law is eq. 1,
    but successive draws are CORRELATED (repeats while proposals are rejected), and the
    first states are biased toward uniform unless burn_in is large enough.
    A sequential Python loop over steps (about 0.1 us/step) on precomputed numpy arrays.
    """
    idx, lw = _finite(log_w)
    total = burn_in + n
    states = np.empty(total, dtype=np.int64)
    state = int(rng.integers(0, idx.size))
    for start in range(0, total, _MH_BLOCK):
        size = min(_MH_BLOCK, total - start)
        prop = rng.integers(0, idx.size, size=size)
        log_u = np.log1p(-rng.random(size))  # log U, U in (0, 1]
        acc, _ = _mh_accepts(lw[prop].tolist(), log_u.tolist(), float(lw[state]))
        acc = np.frombuffer(acc, dtype=np.uint8).astype(bool)
        last = np.maximum.accumulate(np.where(acc, np.arange(size), -1))
        block = states[start:start + size]
        block[:] = np.where(last >= 0, prop[np.maximum(last, 0)], state)
        state = int(block[-1])
    return idx[states[burn_in:]]


def _mh_accepts(log_w_prop: list, log_u: list, cur: float) -> tuple[bytearray, float]:
    """Sequential MH accept flags: accept step t iff log U_t <= log w'_t - log w_cur."""
    acc = bytearray(len(log_u))
    for t, (lp, lu) in enumerate(zip(log_w_prop, log_u)):
        if lu <= lp - cur:
            cur = lp
            acc[t] = 1
    return acc, cur


_SCHEMES = {"multinomial": _multinomial, "systematic": _systematic, "stratified": _stratified,
            "residual": _residual, "gumbel_max": _gumbel_max, "gumbel_topk": _gumbel_topk}
