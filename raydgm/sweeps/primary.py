"""The declared primary comparisons of a semantic-loss sweep, with Holm's correction.

Declared before the run (issue 22), per generator and labeled size, each arm at the semantic
weight it selects on mean validation accuracy (``study.select_weight``):

- ``resampled - generated``: does SIR help over the raw samples?
- ``weighted - generated``: does importance weighting help over the raw samples?
- ``resampled - subset``: does SIR help over a uniform subset of the same number of distinct
  images (the diversity-matched control)?

Each is a seed-paired two-sided t test of H0: mean difference 0 on the k seeds both arms have,
t = mean(d) / (sd(d) / sqrt(k)) with k - 1 degrees of freedom (:func:`paired_t_pvalue`; its
95% interval is ``study.paired_difference``'s). Holm's step-down procedure (Holm 1979) across
every primary comparison of the sweep that has a p-value controls the family-wise error rate:
with the m p-values sorted p_(1) <= ... <= p_(m),

    p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))                                    (1)

and H_(i) is rejected at level alpha when p~_(i) <= alpha (:func:`holm`). Every other
comparison in the sweep's tables (vs none, vs generated at equal weights, ECE) is exploratory.
Pure functions (numpy / scipy).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from raydgm.sweeps import study

PRIMARY = (("resampled", "generated"), ("weighted", "generated"), ("resampled", "subset"))   # (arm, reference)
ALPHA = 0.05                       # family-wise error rate of the primary family


def paired_t_pvalue(differences: Iterable[float]) -> float:
    """Two-sided p-value of the one-sample t test of mean 0 on float differences (k,): NaN
    for k < 2; for zero spread, 1.0 when every difference is 0, else 0.0."""
    d = np.asarray(list(differences), dtype=np.float64)
    if d.size < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 1.0 if float(np.abs(d).max()) == 0.0 else 0.0
    t = float(d.mean()) / (sd / math.sqrt(d.size))
    return float(2.0 * stats.t.sf(abs(t), d.size - 1))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (eq. 1), float64 (m,) in the input's order. NaN entries are
    outside the family: they stay NaN and do not count in m. ValueError for a p-value
    outside [0, 1]."""
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    finite = np.isfinite(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[finite].tolist()}")
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(finite)
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    running = 0.0
    for j, i in enumerate(order):                   # j = 0 .. m-1: multiplier m - j
        running = max(running, min(1.0, (m - j) * p[i]))
        out[i] = running
    return out


def primary_comparisons(trials: Iterable[Mapping[str, Any]], level: float = 0.95,
                        alpha: float = ALPHA) -> list[dict[str, Any]]:
    """One row per primary comparison present in ``trials`` (study trial records), by labeled
    size, generator (first-seen order), then ``PRIMARY``'s order. Keys: generator,
    labeled_size, comparison ("resampled - generated"), arm, reference, arm_weight,
    reference_weight (each arm's own selected weight), pairs, diff_mean, diff_lo, diff_hi
    (paired t interval at ``level``), p (:func:`paired_t_pvalue`), p_holm (:func:`holm` over
    every row), reject (p_holm <= alpha)."""
    arms = study.group_arms(trials)
    groups: dict[tuple[str, int, str], dict[float, study.Seeds]] = {}
    for (g, n, u, w), seeds in arms.items():
        groups.setdefault((g, n, u), {})[w] = seeds
    first = {g: i for i, g in enumerate(dict.fromkeys(g for g, _, _ in groups))}
    rows = []
    for g, n in sorted({(g, n) for g, n, _ in groups}, key=lambda k: (k[1], first[k[0]])):
        for arm, ref in PRIMARY:
            if (g, n, arm) not in groups or (g, n, ref) not in groups:
                continue
            (wa, a), (wr, r) = (_selected(groups[(g, n, u)]) for u in (arm, ref))
            acc = [{s: float(t["test_accuracy"]) for s, t in x.items()} for x in (a, r)]
            diff = study.paired_difference(*acc, level=level)
            paired = sorted(set(acc[0]) & set(acc[1]))
            rows.append({"generator": g, "labeled_size": n, "comparison": f"{arm} - {ref}", "arm": arm,
                         "reference": ref, "arm_weight": wa, "reference_weight": wr, "pairs": diff["pairs"],
                         "diff_mean": diff["mean"], "diff_lo": diff["lo"], "diff_hi": diff["hi"],
                         "p": paired_t_pvalue(acc[0][s] - acc[1][s] for s in paired)})
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"], row["reject"] = float(adjusted), bool(adjusted <= alpha)
    return rows


def _selected(by_weight: Mapping[float, study.Seeds]) -> tuple[float, study.Seeds]:
    w = study.select_weight(by_weight)
    return w, by_weight[w]


def format_primary(rows: Sequence[Mapping[str, Any]], alpha: float = ALPHA, digits: int = 3) -> str:
    """Markdown table of :func:`primary_comparisons`'s rows, with its caption and legend."""
    m = sum(np.isfinite(r["p"]) for r in rows)
    lines = [f"Primary comparisons (declared before the run), Holm-adjusted across the {m} with a p-value", "",
             "| labeled | generator | comparison | weights (arm, reference) | Δ test accuracy [95% CI] | p | "
             "p (Holm) | pairs |", "|---:|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        diff = study.format_interval(r["diff_mean"], r["diff_lo"], r["diff_hi"], digits, signed=True)
        if r["reject"]:
            diff = f"**{diff}**"
        p, ph = (study.DASH if not np.isfinite(x) else f"{x:.3g}" for x in (r["p"], r["p_holm"]))
        lines.append(f"| {r['labeled_size']} | {r['generator']} | {r['comparison']} | "
                     f"{r['arm_weight']:g}, {r['reference_weight']:g} | {diff} | {p} | {ph} | {r['pairs']} |")
    return "\n".join(lines + ["", f"Each arm at its own weight selected on validation; Δ: seed-paired "
                              f"difference, two-sided paired t test; **bold**: Holm-adjusted p <= {alpha:g}. "
                              "Every other comparison in this sweep's tables is exploratory (no "
                              "multiplicity correction)."])
