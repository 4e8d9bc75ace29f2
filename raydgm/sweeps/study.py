"""Statistics of a semantic-loss sweep: seed-paired differences with Student-t intervals,
weight selection on validation accuracy, and the thesis's tables (6.3: sample quality per
generator; 6.4: test accuracy at the selected weight). Pure functions (numpy / scipy).

A trial record (one finished trial of ``raydgm.sweeps.semantic``) is a dict::

    {"generator": str ("-" for the sources that use no generator: none, real),
     "labeled_size": int, "unlabeled": str (one of raydgm.config.UNLABELED_SOURCES),
     "semantic_weight": float, "seed": int,
     "val_accuracy": float (best validation accuracy, in [0, 1]),
     "test_accuracy": float (test accuracy at the best-validation epoch, in [0, 1]),
     "test_ece": float, optional (test top-label ECE at that epoch, 15 equal-width bins, in [0, 1])}

When every record has a ``test_ece``, ECE gets the same statistics as accuracy: its mean with
a t interval and its seed-paired differences (``ece_diff_vs_<ref>_*``; lower is better).

An *arm* is one (generator, labeled_size, unlabeled, semantic_weight). Seeds pair the arms
(docs/design.md, "Statistics of a sweep"): seed s fixes the labeled subset, the initial weights
and the labeled batches in every arm, so an arm is compared with a reference arm by the
differences over the k seeds both have, d_s = acc_arm(s) - acc_ref(s), and the paired t
interval mean(d) ± t_{(1+level)/2, k-1} * sd(d) / sqrt(k) (sd with ddof=1). References:
``none`` of the same labeled size (for every other source) and ``generated`` of the same
generator and labeled size (for resampled, subset and weighted; at the same weight in
``summarize``, at generated's own selected weight in ``select_weights``). Tables mark a
difference (bold) only when its interval excludes 0. These tables are exploratory: the
declared primary comparisons, Holm-adjusted, are ``raydgm.sweeps.primary``'s.

Row order everywhere: labeled size, then source (none, generated, resampled, subset, weighted, real),
then generator in first-seen order of the trials (none and real have only "-"), then weight.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from raydgm.config import UNLABELED_SOURCES
from raydgm.config.sweeps import NO_GENERATOR, WEIGHTED_SOURCES
from raydgm.metrics import format_pm

VS_GENERATED = WEIGHTED_SOURCES               # the sources also compared with generated
TIE_ATOL = 1e-12                            # mean val accuracies this close are a tie
DASH = "\u2013"
Arm = tuple[str, int, str, float]           # generator, labeled_size, unlabeled, semantic_weight
Seeds = dict[int, Mapping[str, Any]]        # seed -> trial record


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) of float values (k,): the Student-t interval of the mean,
    mean ± t_{(1+level)/2, k-1} * s / sqrt(k), s the sample std (ddof=1).
    Fewer than 2 values: (mean, nan, nan); no value: (nan, nan, nan).
    ValueError for a NaN or infinite value or a level outside (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    a = np.asarray(list(values), dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"values has {int((~np.isfinite(a)).sum())} NaN or infinite entries")
    if a.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(a.mean())
    if a.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1.0 + level) / 2.0, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return mean, mean - half, mean + half


def paired_difference(arm: Mapping[int, float], reference: Mapping[int, float],
                      level: float = 0.95) -> dict[str, float | int]:
    """Seed-paired difference arm - reference over the seeds both have (seed -> accuracy):
    {"mean", "lo", "hi" (``t_interval`` of the k differences), "pairs": k}. k = 0: NaNs."""
    seeds = sorted(set(arm) & set(reference))
    mean, lo, hi = t_interval([arm[s] - reference[s] for s in seeds], level)
    return {"mean": mean, "lo": lo, "hi": hi, "pairs": len(seeds)}


def excludes_zero(lo: float, hi: float) -> bool:
    """True when the interval [lo, hi] is finite and does not contain 0."""
    return bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))


# --------------------------------------------------------------------------- grouping


def group_arms(trials: Iterable[Mapping[str, Any]]) -> dict[Arm, Seeds]:
    """Trial records by arm, in first-seen order: {(generator, labeled_size, unlabeled,
    semantic_weight): {seed: record}}. ValueError for a missing key, an unknown source, a
    none/real trial with a generator, or a seed repeated within an arm (counted twice)."""
    arms: dict[Arm, Seeds] = {}
    for i, t in enumerate(trials):
        missing = {"generator", "labeled_size", "unlabeled", "semantic_weight", "seed",
                   "val_accuracy", "test_accuracy"} - set(t)
        if missing:
            raise ValueError(f"trials[{i}] lacks {sorted(missing)}")
        if t["unlabeled"] not in UNLABELED_SOURCES:
            raise ValueError(f"trials[{i}]: unknown unlabeled source {t['unlabeled']!r}")
        if t["unlabeled"] in ("none", "real") and t["generator"] != NO_GENERATOR:
            raise ValueError(f"trials[{i}]: unlabeled={t['unlabeled']!r} uses no generator; "
                             f"its generator must be {NO_GENERATOR!r}, got {t['generator']!r}")
        key = (str(t["generator"]), int(t["labeled_size"]), str(t["unlabeled"]), float(t["semantic_weight"]))
        seeds = arms.setdefault(key, {})
        if int(t["seed"]) in seeds:
            raise ValueError(f"trials[{i}]: seed {t['seed']} of arm {key} appears twice")
        seeds[int(t["seed"])] = t
    return arms


def _order(keys: Iterable[tuple]) -> list[tuple]:
    """``keys`` (generator, labeled_size, unlabeled[, weight]) in the module's row order."""
    keys = list(keys)
    first = {g: i for i, g in enumerate(dict.fromkeys(k[0] for k in keys))}
    rank = {s: i for i, s in enumerate(UNLABELED_SOURCES)}
    return sorted(keys, key=lambda k: (k[1], rank[k[2]], first[k[0]], *k[3:]))


def _has_ece(trials: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every trial record has a finite test_ece (ECE columns are all or nothing)."""
    return bool(trials) and all(np.isfinite(t.get("test_ece", math.nan)) for t in trials)


def _ece(seeds: Seeds, level: float) -> dict[str, Any]:
    """test_ece_mean / _lo / _hi (t interval over the seeds)."""
    mean, lo, hi = t_interval([float(t["test_ece"]) for t in seeds.values()], level)
    return {"test_ece_mean": mean, "test_ece_lo": lo, "test_ece_hi": hi}


def _scores(arm: Seeds, none: Seeds | None, generated: Seeds | None, level: float, ece: bool) -> dict[str, Any]:
    """An arm's accuracy and paired differences vs none and generated (None: no reference), and
    with ``ece`` the same for test_ece."""
    out = (_accuracy(arm, level) | _diff("none", arm, none, level) | _diff("generated", arm, generated, level))
    if ece:
        out |= (_ece(arm, level) | _diff("none", arm, none, level, "test_ece", "ece_")
                | _diff("generated", arm, generated, level, "test_ece", "ece_"))
    return out


def _accuracy(seeds: Seeds, level: float) -> dict[str, Any]:
    """seeds, val_accuracy_mean and test accuracy mean / std (ddof=1, 0 for one seed) / lo / hi."""
    test = [float(t["test_accuracy"]) for t in seeds.values()]
    mean, lo, hi = t_interval(test, level)
    return {"seeds": len(test), "val_accuracy_mean": float(np.mean([t["val_accuracy"] for t in seeds.values()])),
            "test_accuracy_mean": mean, "test_accuracy_std": float(np.std(test, ddof=1)) if len(test) > 1 else 0.0,
            "test_accuracy_lo": lo, "test_accuracy_hi": hi}


def _diff(name: str, arm: Seeds, reference: Seeds | None, level: float, key: str = "test_accuracy",
          prefix: str = "") -> dict[str, Any]:
    """<prefix>diff_vs_<name>_mean / _lo / _hi / _pairs of the records' ``key`` of ``arm`` against
    ``reference`` (None: NaNs, 0 pairs)."""
    if reference is None:
        d: dict[str, Any] = {"mean": math.nan, "lo": math.nan, "hi": math.nan, "pairs": 0}
    else:
        d = paired_difference({s: float(t[key]) for s, t in arm.items()},
                              {s: float(t[key]) for s, t in reference.items()}, level)
    return {f"{prefix}diff_vs_{name}_{k}": v for k, v in d.items()}


def _none_key(keys: Iterable[Arm], size: int) -> Arm | None:
    """The ``none`` arm of labeled size ``size`` (None if there is none); ValueError if several."""
    found = [k for k in keys if k[2] == "none" and k[1] == size]
    if len(found) > 1:
        raise ValueError(f"labeled size {size} has several none arms {found}; expected one (weight 0)")
    return found[0] if found else None


# --------------------------------------------------------------------------- summary


def summarize(trials: Iterable[Mapping[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """One row per arm, in the module's row order. Keys: generator, labeled_size, unlabeled,
    semantic_weight, seeds, val_accuracy_mean, test_accuracy_mean, test_accuracy_std (ddof=1;
    0 for one seed), test_accuracy_lo, test_accuracy_hi (t interval at ``level``), and for
    ref in (none, generated): diff_vs_<ref>_mean, _lo, _hi, _pairs (paired by seed, see the
    module docstring). diff_vs_none is NaN (0 pairs) on none rows and where the labeled size
    has no none arm; diff_vs_generated is NaN except on resampled and weighted rows whose
    generator, labeled size and weight have a generated arm. Intervals are NaN under 2 pairs.
    When every trial has a test_ece: test_ece_mean / _lo / _hi and ece_diff_vs_<ref>_* likewise."""
    trials = list(trials)
    arms, ece = group_arms(trials), _has_ece(trials)
    rows = []
    for key in _order(arms):
        g, n, u, w = key
        none = _none_key(arms, n)
        generated = arms.get((g, n, "generated", w)) if u in VS_GENERATED else None
        rows.append({"generator": g, "labeled_size": n, "unlabeled": u, "semantic_weight": w}
                    | _scores(arms[key], arms[none] if none and u != "none" else None, generated, level, ece))
    return rows


def select_weights(trials: Iterable[Mapping[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """Weight selection as the thesis did it: per (generator, labeled_size, unlabeled), the
    semantic weight with the highest mean validation accuracy over its seeds (means within
    TIE_ATOL are a tie, won by the smallest weight); test accuracy is reported at that weight.

    One row per (generator, labeled_size, unlabeled) in the module's row order (none once per
    labeled size, at weight 0). Keys: generator, labeled_size, unlabeled, selected_weight,
    candidates (number of weights tried), the ``summarize`` accuracy keys at the selected
    weight (seeds, val_accuracy_mean, test_accuracy_mean / _std / _lo / _hi),
    diff_vs_none_mean / _lo / _hi / _pairs (vs none of the labeled size; NaN on none rows),
    generated_weight (generated's own selected weight, NaN except on resampled / weighted) and
    diff_vs_generated_mean / _lo / _hi / _pairs (vs generated at generated_weight, same
    generator and labeled size; paired by seed); with test_ece, the ECE keys of ``summarize``."""
    trials = list(trials)
    arms, ece = group_arms(trials), _has_ece(trials)
    groups: dict[tuple[str, int, str], dict[float, Seeds]] = {}
    for (g, n, u, w), seeds in arms.items():
        groups.setdefault((g, n, u), {})[w] = seeds
    chosen = {key: select_weight(by_weight) for key, by_weight in groups.items()}
    rows = []
    for g, n, u in _order(groups):
        seeds = groups[(g, n, u)][chosen[(g, n, u)]]
        none = _none_key(arms, n)
        gen_key = (g, n, "generated")
        gen_w = chosen[gen_key] if u in VS_GENERATED and gen_key in chosen else None
        rows.append({"generator": g, "labeled_size": n, "unlabeled": u, "selected_weight": chosen[(g, n, u)],
                     "candidates": len(groups[(g, n, u)]), "generated_weight": math.nan if gen_w is None else gen_w}
                    | _scores(seeds, arms[none] if none and u != "none" else None,
                              None if gen_w is None else groups[gen_key][gen_w], level, ece))
    return rows


def select_weight(by_weight: Mapping[float, Seeds]) -> float:
    """The weight whose seeds have the best mean val_accuracy; ties (TIE_ATOL) -> the smallest."""
    means = {w: float(np.mean([t["val_accuracy"] for t in s.values()])) for w, s in by_weight.items()}
    best = max(means.values())
    return min(w for w, m in means.items() if m >= best - TIE_ATOL)


# --------------------------------------------------------------------------- tables


LEGEND = ("Exploratory (no multiplicity correction; the primary comparisons are in primary.md). Δ: "
          "seed-paired difference (arm − reference over the seeds both have), mean [95% t "
          "interval]; **bold**: the interval excludes 0; – : no reference; no [ ] part: under 2 paired seeds.")
ECE_LEGEND = (" ECE: top-label expected calibration error on the test split at the reported epoch, 15 "
              "equal-width confidence bins (lower is better).")


def format_interval(mean: float, lo: float, hi: float, digits: int = 3, signed: bool = False) -> str:
    """"0.912 [0.901, 0.923]" ("+0.010 [...]" when ``signed``); the mean alone without an
    interval; "–" for a NaN mean."""
    if not np.isfinite(mean):
        return DASH
    spec = f"{'+' if signed else ''}.{digits}f"
    mean, lo, hi = (round(x, digits) or 0.0 if np.isfinite(x) else x for x in (mean, lo, hi))   # no "-0.000"
    text = format(mean, spec)
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:{spec}}, {hi:{spec}}]"
    return text


def _difference(row: Mapping[str, Any], name: str, digits: int = 3, prefix: str = "") -> str:
    """The <prefix>diff_vs_<name> cell: signed interval, bold when it excludes 0, "(k pairs)" when
    fewer seeds were paired than the row has."""
    mean, lo, hi = (row[f"{prefix}diff_vs_{name}_{k}"] for k in ("mean", "lo", "hi"))
    text = format_interval(mean, lo, hi, digits, signed=True)
    if excludes_zero(lo, hi):
        text = f"**{text}**"
    pairs = row[f"{prefix}diff_vs_{name}_pairs"]
    if np.isfinite(mean) and pairs < row["seeds"]:
        text += f" ({pairs} pairs)"
    return text


def format_summary(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """Markdown table of ``summarize``'s rows: labeled | generator | unlabeled | weight | test
    accuracy (mean [95% t interval]) | Δ vs none | Δ vs generated | (with ECE: test ECE | ΔECE vs
    none | ΔECE vs generated |) seeds, then the legend."""
    ece = bool(rows) and "test_ece_mean" in rows[0]
    head = "| labeled | generator | unlabeled | weight | test accuracy (mean [95% CI]) | Δ vs none | Δ vs generated |"
    head += " test ECE (mean [95% CI]) | ΔECE vs none | ΔECE vs generated |" * ece
    lines = [head + " seeds |", "|---:|---|---|---:|---|---|---|" + "---|---|---|" * ece + "---:|"]
    for r in rows:
        cells = [str(r["labeled_size"]), r["generator"], r["unlabeled"], f"{r['semantic_weight']:g}",
                 format_interval(r["test_accuracy_mean"], r["test_accuracy_lo"], r["test_accuracy_hi"], digits),
                 _difference(r, "none", digits), _difference(r, "generated", digits)]
        if ece:
            cells += [format_interval(r["test_ece_mean"], r["test_ece_lo"], r["test_ece_hi"], digits),
                      _difference(r, "none", digits, "ece_"), _difference(r, "generated", digits, "ece_")]
        lines.append("| " + " | ".join(cells + [str(r["seeds"])]) + " |")
    return "\n".join(lines + ["", LEGEND + ECE_LEGEND * ece])


def table_6_4(selected: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """Thesis Table 6.4 from ``select_weights``'s rows: one row per (generator, source) (none
    first and real last, once, generator "-"; per generator: generated, resampled, weighted),
    one column per labeled size (per generator: generated, resampled, subset, weighted). Cell:
    test accuracy mean [95% t interval] at the selected weight, "w=<weight>", and for resampled / subset / weighted "Δ gen" (vs generated at its own
    selected weight), bold when its interval excludes 0; "–" where the sweep has no row. With
    ECE (``select_weights`` rows from trials with test_ece), a second table below: test ECE at the
    same selected weight, with "Δ none" and (resampled / weighted) "Δ gen"."""
    if not selected:
        raise ValueError("selected is empty")
    cells: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for r in selected:
        cell = cells.setdefault((r["generator"], r["unlabeled"]), {})
        if r["labeled_size"] in cell:
            raise ValueError(f"two selected rows for {r['generator']}, {r['unlabeled']}, {r['labeled_size']}")
        cell[r["labeled_size"]] = r
    sizes = sorted({r["labeled_size"] for r in selected})
    rank = {s: i for i, s in enumerate(UNLABELED_SOURCES)}
    first = {g: i for i, g in enumerate(dict.fromkeys(g for g, _ in cells))}
    order = sorted(cells, key=lambda k: (k[1] == "real", k[1] != "none", first[k[0]], rank[k[1]]))
    head = ["| generator | unlabeled | " + " | ".join(f"{n} labeled" for n in sizes) + " |",
            "|---|---|" + "---|" * len(sizes)]

    def body(cell: Callable[[Mapping[str, Any], int], str]) -> list[str]:
        return [f"| {g} | {u} | " + " | ".join(DASH if (r := cells[(g, u)].get(n)) is None else cell(r, digits)
                                                for n in sizes) + " |" for g, u in order]
    legend = ("Test accuracy at the weight w selected on mean validation accuracy over seeds, mean "
              "[95% t interval over seeds]. Δ gen: seed-paired difference vs generated at its own "
              "selected weight (same generator and labeled size); **bold**: its interval excludes 0. "
              "Exploratory: the primary comparisons, Holm-adjusted, are in primary.md.")
    lines = ["Table 6.4: test accuracy at the semantic weight selected on validation accuracy", "",
             *head, *body(_cell_6_4), "", legend]
    if "test_ece_mean" in selected[0]:
        lines += ["", "Table 6.4, calibration: test ECE at the same selected weights", "", *head,
                  *body(_cell_6_4_ece), "", "Test top-label ECE (15 equal-width bins; lower is better), mean "
                  "[95% t interval over seeds]. Δ none / Δ gen: seed-paired ECE difference vs none / vs "
                  "generated at its own selected weight; **bold**: its interval excludes 0."]
    return "\n".join(lines)


def _cell_6_4(r: Mapping[str, Any], digits: int) -> str:
    text = (f"{format_interval(r['test_accuracy_mean'], r['test_accuracy_lo'], r['test_accuracy_hi'], digits)}"
            f" w={r['selected_weight']:g}")
    if r["unlabeled"] in VS_GENERATED:
        text += f"; Δ gen {_difference(r, 'generated', digits)}"
    return text


def _cell_6_4_ece(r: Mapping[str, Any], digits: int) -> str:
    text = format_interval(r["test_ece_mean"], r["test_ece_lo"], r["test_ece_hi"], digits)
    if r["unlabeled"] != "none":
        text += f"; Δ none {_difference(r, 'none', digits, 'ece_')}"
    if r["unlabeled"] in VS_GENERATED:
        text += f"; Δ gen {_difference(r, 'generated', digits, 'ece_')}"
    return text


QUALITY_COLUMNS = (("is", "IS"), ("fid", "FID"), ("kid", "KID"))
FLOOR_SET = "real train"


def table_6_3(quality: Mapping[str, Mapping[str, Any]], weighted: bool = False,
              weights: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Thesis Table 6.3: ``quality`` maps generator name -> its quality stage's quality.json
    (``raydgm.pipeline.report.build``: "rows" with "set" and <metric>_mean / _std, and
    "features"). Rows per generator: reference (the "real train" floor: real train vs real
    test), raw, each resampled (<method>) set present, and importance-weighted when
    ``weighted``; columns IS, FID, KID as mean ± std over evaluation blocks (``format_pm``;
    "–" where a set lacks the metric, e.g. IS without class logits). A caption line above
    names the features. ``weights``: generator -> its resample stage's summary.json; then a
    second table (:func:`weights_table`) gives the raw weights (alpha = 1) beside the used ones."""
    if not quality:
        raise ValueError("quality is empty")
    lines = ["| generator | set | IS | FID | KID |", "|---|---|---|---|---|"]
    for gen, summary in quality.items():
        by_set = {r["set"]: r for r in summary["rows"]}
        sets = [s for s in (FLOOR_SET, "raw") if s in by_set]
        sets += [s for s in by_set if s.startswith("resampled (")]
        sets += ["importance-weighted"] if weighted and "importance-weighted" in by_set else []
        for s in sets:
            label = "reference (real train vs real test)" if s == FLOOR_SET else s
            values = [format_pm(by_set[s].get(f"{m}_mean"), by_set[s].get(f"{m}_std")) for m, _ in QUALITY_COLUMNS]
            lines.append(f"| {gen} | {label} | " + " | ".join(values) + " |")
    features = {g: str(q.get("features", "?")) for g, q in quality.items()}
    named = (next(iter(features.values())) if len(set(features.values())) == 1
             else ", ".join(f"{g}: {f}" for g, f in features.items()))
    caption = (f"Table 6.3: sample quality against the real test split, mean ± std over evaluation "
               f"blocks, on {named} features.")
    return "\n".join([caption, ""] + lines + ([] if not weights else ["", weights_table(weights)]))


def weights_table(weights: Mapping[str, Mapping[str, Any]]) -> str:
    """Per generator, two rows from its resample summary (``_diagnostics.used_weights``' keys):
    the raw weights (alpha = 1) and the used ones (tempered alpha): ESS fraction, PSIS k-hat
    and, for known-bias samples, what SIR by them does to the truth: the class mix's TV
    distance to the data's and the junk share, each before -> after (junk share "–" for a pool
    without junk)."""
    lines = ["Table 6.3, weights: the raw weights (alpha = 1) beside the used (tempered) ones", "",
             "| generator | alpha | ESS fraction | k-hat | class TV before -> after SIR (truth) "
             "| junk share before -> after SIR (truth) |", "|---|---|---|---|---|---|"]
    for gen, w in weights.items():
        truth = w.get("truth") or {}
        for alpha, key, tv_key in ((1.0, "raw", "alpha1"), (w["alpha"], "used", "used")):
            cells = [_before_after(truth, "class_tv", tv_key),
                     _before_after(truth, "junk_share", tv_key) if truth.get("junk_share_before") else DASH]
            lines.append(f"| {gen} | {alpha:.3g} ({key}) | "
                         f"{w[f'ess_fraction_{key}']:.4f} | {w[f'khat_{key}']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", "The SIR sets of the sweep's resampled arms are drawn per seed from the used weights."])


def _before_after(truth: Mapping[str, Any], name: str, after: str) -> str:
    """"<before> -> <after>" of a resample summary's truth (``name``_before, ``name``_<after>), or "–"."""
    before, value = truth.get(f"{name}_before"), truth.get(f"{name}_{after}")
    return DASH if before is None or value is None else f"{before:.3f} -> {value:.3f}"
