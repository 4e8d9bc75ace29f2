"""PNG figures on matplotlib's object-oriented API (a ``Figure`` on an Agg canvas: no pyplot, no backend
switch): sample grids, weight histograms, the quality report's (calibration, ESS vs alpha, bars...)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raydgm._checks import check_log_weights
from raydgm._diagnostics import ess_fraction, flatten
from raydgm.metrics import format_pm


def sample_rows(rows: Mapping[str, np.ndarray], path: str | Path, per_row: int = 16) -> Path:
    """One labelled row per entry: uint8 (N, C, H, W) images, the first ``per_row`` shown."""
    fig, axes = figure_axes(len(rows), 1, figsize=(per_row * 0.6, len(rows) * 0.9), squeeze=False)
    for ax, (title, images) in zip(axes[:, 0], rows.items()):
        ax.imshow(_strip(images[:per_row]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=8, loc="left")
        ax.axis("off")
    return _save(fig, path)


def weight_histogram(log_weights: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Histogram of finite log importance weights, with the ESS fraction in the title."""
    finite = log_weights[np.isfinite(log_weights)]
    fig, ax = figure_axes(figsize=(5, 3))
    ax.hist(finite, bins=60, color="tab:blue")
    ax.set_yscale("log")                      # a single extreme weight stays visible
    ax.set_xlabel("log w (calibrated log-odds, prior-corrected)")
    ax.set_ylabel("generated samples (log scale)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def _strip(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 -> (H, N*(W+1)) or (H, N*(W+1), 3) image strip with 1-pixel gaps."""
    n, c, h, w = images.shape
    strip = np.full((h, n * (w + 1), c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        strip[:, i * (w + 1):i * (w + 1) + w] = img.transpose(1, 2, 0)
    return strip[..., 0] if c == 1 else strip


# ------------------------------------------------------------------- quality report figures
# Each returns (png path, column table): equal-length lists keyed by column name, the form
# mlflow.log_table takes, so a run holds both the picture and the numbers behind it.

Table = dict[str, list]
QUALITY_METRICS = ("fid", "kid", "is", "precision", "recall", "density", "coverage")
METRIC_LABELS = {"fid": "FID", "kid": "KID", "is": "IS"}
LOWER_IS_BETTER = {"fid", "kid"}


def weight_histogram_table(log_weights: np.ndarray, bins: int = 60) -> Table:
    """The counts behind ``weight_histogram``: ``bins`` equal-width bins over the finite log w
    (zero weights, -inf, are left out). Columns bin_left, bin_right (float), count (int)."""
    lw = check_log_weights(log_weights)
    count, edges = np.histogram(lw[np.isfinite(lw)], bins=bins)
    return {"bin_left": edges[:-1].tolist(), "bin_right": edges[1:].tolist(), "count": count.tolist()}


def reliability_diagram(prob_pred: Sequence[float], prob_true: Sequence[float], path: str | Path,
                        ece: float | None = None, title: str = "") -> tuple[Path, Table]:
    """Reliability curve of the real-vs-generated classifier: per probability bin, the mean
    predicted P(real) (x) against the observed fraction of real rows (y), both in [0, 1];
    a calibrated classifier lies on the diagonal. Table: prob_pred, prob_true."""
    pred, true = _vector(prob_pred, "prob_pred", unit=True), _vector(prob_true, "prob_true", unit=True)
    _same_length(prob_pred=pred, prob_true=true)
    fig, ax = figure_axes(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    ax.plot(pred, true, "o-", color="tab:blue", label="classifier (binned)")
    _unit_axes(ax, "mean predicted P(real) in bin", "observed fraction real in bin")
    head = title or "Calibration of the real-vs-generated classifier"
    ax.set_title(head + (f"\nECE = {ece:.3g}" if ece is not None else ""), fontsize=9)
    return _save(fig, path), {"prob_pred": pred.tolist(), "prob_true": true.tolist()}


def proportion_curve(rho: Sequence[float], mean_prob: Sequence[float], path: str | Path,
                     mean_prob_prior_adjusted: Sequence[float] | None = None) -> tuple[Path, Table]:
    """The thesis's proportion curve: mixes with a proportion rho in [0, 1] of real images
    (x) against the classifier's mean P(real) over the mix (y). Calibrated at prior 1/2 the
    curve is a line through (1/2, 1/2); told the mix's prior, it follows the diagonal.
    Table: rho, mean_prob (and mean_prob_prior_adjusted when given)."""
    r, m = _vector(rho, "rho", unit=True), _vector(mean_prob, "mean_prob", unit=True)
    columns = {"rho": r, "mean_prob": m}
    if mean_prob_prior_adjusted is not None:
        columns["mean_prob_prior_adjusted"] = _vector(
            mean_prob_prior_adjusted, "mean_prob_prior_adjusted", unit=True)
    _same_length(**columns)
    fig, ax = figure_axes(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="gray", label="mean P(real) = rho")
    ax.plot(r, m, "o-", color="tab:blue", label="classifier (prior 1/2)")
    if "mean_prob_prior_adjusted" in columns:
        ax.plot(r, columns["mean_prob_prior_adjusted"], "s-", color="tab:orange",
                label="classifier told the mix's prior")
    _unit_axes(ax, "proportion of real images in the mix (rho)", "mean predicted P(real) over the mix")
    ax.set_title("Proportion curve: real vs generated mixes", fontsize=9)
    return _save(fig, path), {k: v.tolist() for k, v in columns.items()}


def ess_vs_alpha(log_weights: np.ndarray, path: str | Path, alphas: Sequence[float] | None = None,
                 alpha_used: float | None = None, target_fraction: float | None = None
                 ) -> tuple[Path, Table]:
    """ESS(w^alpha) / N against the flattening exponent alpha (default 51 points on [0, 1]),
    log-scale y: alpha = 0 is uniform weights (fraction 1 when none is zero), alpha = 1 the
    full correction. Marks ``alpha_used`` (vertical) and ``target_fraction`` (horizontal)
    when given. Table: alpha, ess_fraction."""
    lw = check_log_weights(log_weights)
    a = np.linspace(0.0, 1.0, 51) if alphas is None else _vector(alphas, "alphas")
    if (a < 0).any():
        raise ValueError(f"alphas must be >= 0, got min {a.min()}")
    frac = np.array([ess_fraction(flatten(lw, float(x))) for x in a])
    fig, ax = figure_axes(figsize=(5, 3))
    ax.plot(a, frac, "-", color="tab:blue", label="ESS(w^alpha) / N")
    if alpha_used is not None:
        used = ess_fraction(flatten(lw, float(alpha_used)))
        ax.axvline(alpha_used, color="tab:orange", ls=":",
                   label=f"alpha used = {alpha_used:.3g} (ESS fraction {used:.3g})")
    if target_fraction is not None:
        ax.axhline(target_fraction, color="tab:red", ls="--",
                   label=f"target ESS fraction {target_fraction:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("flattening exponent alpha (weights w^alpha)")
    ax.set_ylabel("effective sample size / N")
    ax.set_title(f"Effective sample size of flattened weights (N = {lw.size})", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path), {"alpha": a.tolist(), "ess_fraction": frac.tolist()}


def quality_bars(rows: Sequence[Mapping[str, Any]], metric: str, path: str | Path) -> tuple[Path, Table]:
    """One metric across sample sets (thesis Table 6.3): a horizontal bar per row of ``rows``
    (dicts with "set", f"{metric}_mean", f"{metric}_std"), error bars one std over evaluation
    blocks. Rows without the metric are left out. Table: set, mean, std (NaN if missing)."""
    sets, mean, std = _metric_columns(rows, metric, "rows")
    fig, ax = figure_axes(figsize=(5, 1.2 + 0.45 * len(sets)))
    y = np.arange(len(sets))
    bars = ax.barh(y, mean, xerr=np.nan_to_num(std), color="tab:blue", alpha=0.8, capsize=3)
    ax.bar_label(bars, labels=[format_pm(m, s) for m, s in zip(mean, std)], padding=4, fontsize=7)
    ax.set_yticks(y, sets, fontsize=8)
    ax.invert_yaxis()                                       # first row on top, as in a table
    ax.margins(x=0.35)
    name = METRIC_LABELS.get(metric, metric)
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    ax.set_xlabel(f"{name}, mean \u00b1 std over evaluation blocks\n({better} is better)")
    ax.set_title(f"{name} of each sample set", fontsize=9)
    return _save(fig, path), {"set": sets, "mean": mean, "std": std}


SOURCE_COLOURS = {"generated": "tab:blue", "resampled": "tab:orange", "weighted": "tab:green", "real": "tab:red"}
ACCURACY_KEYS = ("generator", "labeled_size", "unlabeled", "semantic_weight", "seeds", "test_accuracy_mean",
                 "test_accuracy_lo", "test_accuracy_hi")


def accuracy_vs_weight(rows: Sequence[Mapping[str, Any]], path: str | Path) -> tuple[Path, Table]:
    """``accuracy_figure`` saved as a PNG. Table: ACCURACY_KEYS of every row, and ``plot_x``:
    where the row is drawn on the weight axis (its weight; weight 0: ``zero_position``; NaN
    for the none rows, drawn as a horizontal band)."""
    fig = accuracy_figure(rows)
    x0 = zero_position(rows)
    table = {k: [_row_value(r, k) for r in rows] for k in ACCURACY_KEYS}
    table["plot_x"] = [math.nan if r["unlabeled"] == "none" else float(r["semantic_weight"]) or x0 for r in rows]
    return _save(fig, path), table


def zero_position(rows: Sequence[Mapping[str, Any]]) -> float:
    """Where weight 0 sits on the log weight axis: one decade left of the smallest positive
    weight of a non-none row (1.0 without one); a dotted line half a decade right of it."""
    weights = (float(r["semantic_weight"]) for r in rows if r["unlabeled"] != "none")
    positive = [w for w in weights if w > 0]
    return min(positive) / 10 if positive else 1.0


def accuracy_figure(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Test accuracy against the semantic-loss weight (log axis), one panel per labeled size,
    from ``sweeps.study.summarize``'s rows: one line per (generator, source) with its 95%
    t-interval band (test_accuracy_lo .. _hi; no band under 2 seeds), the none arm (supervised
    only) as a horizontal line with its interval band. Weight-0 rows of other sources cannot
    sit on a log axis: they are open markers with error bars at ``zero_position``, left of a
    dotted line. Bands carry the gid "band:<generator>:<source>". Returns the Figure."""
    if not rows:
        raise ValueError("rows is empty")
    sizes = sorted({int(r["labeled_size"]) for r in rows})
    x0 = zero_position(rows)
    zero = any(r["unlabeled"] != "none" and float(r["semantic_weight"]) == 0 for r in rows)
    where = "0 is left of the dotted line" if zero else "weight 0: the none band"
    fig, axes = figure_axes(1, len(sizes), figsize=(3.6 * len(sizes) + 2.2, 3.8), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], sizes):
        _accuracy_panel(ax, [r for r in rows if int(r["labeled_size"]) == n], x0)
        ax.set_title(f"{n} labeled images", fontsize=9)
        ax.set_xlabel(f"semantic-loss weight (log scale; {where})", fontsize=8)
    axes[0, 0].set_ylabel("test accuracy\n(mean, 95% t interval over seeds)", fontsize=8)
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)            # an arm's line before its weight-0 marker
    axes[0, -1].legend(handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Semi-supervised classifier: test accuracy vs semantic-loss weight", fontsize=9)
    return fig


def _accuracy_panel(ax: Any, rows: Sequence[Mapping[str, Any]], x0: float) -> None:
    """One labeled size: the none band, then each (generator, source) line, band and weight-0 marker."""
    for r in (r for r in rows if r["unlabeled"] == "none"):
        ax.axhline(r["test_accuracy_mean"], color="gray", ls="--", lw=1, label="supervised only (none)")
        lo, hi = _row_value(r, "test_accuracy_lo"), _row_value(r, "test_accuracy_hi")
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axhspan(lo, hi, color="gray", alpha=0.2, lw=0, gid="band:-:none")
    arms = list(dict.fromkeys((_row_value(r, "generator"), r["unlabeled"]) for r in rows if r["unlabeled"] != "none"))
    generators = list(dict.fromkeys(g for g, _ in arms))
    for i, (g, u) in enumerate(arms):
        sel = sorted((r for r in rows if (_row_value(r, "generator"), r["unlabeled"]) == (g, u)),
                     key=lambda r: float(r["semantic_weight"]))
        colour, marker = SOURCE_COLOURS.get(u, "black"), MARKERS[generators.index(g) % len(MARKERS)]
        label = u if g == "-" else f"{g}: {u}"
        pos = [r for r in sel if float(r["semantic_weight"]) > 0]
        if pos:
            w = [float(r["semantic_weight"]) for r in pos]
            m, lo, hi = (np.array([_row_value(r, k) for r in pos], dtype=float) for k in
                         ("test_accuracy_mean", "test_accuracy_lo", "test_accuracy_hi"))
            ax.plot(w, m, "-" + marker, color=colour, ms=4, lw=1, label=label)
            ax.fill_between(w, lo, hi, color=colour, alpha=0.15, lw=0, gid=f"band:{g}:{u}")
            if len(w) == 1 and np.isfinite(lo).all() and np.isfinite(hi).all():   # a band of one weight has no width
                ax.errorbar(w, m, yerr=[m - lo, hi - m], fmt="none", ecolor=colour, capsize=2, lw=1)
        for r in (r for r in sel if float(r["semantic_weight"]) == 0):
            m, lo, hi = (_row_value(r, k) for k in ("test_accuracy_mean", "test_accuracy_lo", "test_accuracy_hi"))
            err = [[m - lo], [hi - m]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar([x0 * 10 ** (0.05 * (i - (len(arms) - 1) / 2))], [m], yerr=err, fmt=marker, mfc="none",
                        color=colour, capsize=2, ms=5, label=label)
    _weight_axis(ax, rows, x0)


def _weight_axis(ax: Any, rows: Sequence[Mapping[str, Any]], x0: float) -> None:
    """Log x axis with a tick per weight swept; "0" at ``x0`` behind a dotted line when drawn."""
    weights = sorted({float(r["semantic_weight"]) for r in rows if r["unlabeled"] != "none"})
    ax.set_xscale("log")
    ticks = sorted({x0 if w == 0 else w for w in weights}) or [x0]
    ax.set_xticks(ticks, ["0" if t == x0 and 0.0 in weights else f"{t:g}" for t in ticks], fontsize=7)
    ax.minorticks_off()
    if 0.0 in weights:
        ax.axvline(x0 * 10 ** 0.5, color="gray", ls=":", lw=1)
    ax.set_xlim(ticks[0] / 10 ** 0.35, ticks[-1] * 10 ** 0.35)


def _row_value(row: Mapping[str, Any], key: str) -> Any:
    """row[key]; a missing generator is "-", another missing key NaN (older summary rows)."""
    return row.get(key, "-" if key == "generator" else math.nan)


CALIBRATION_COLOURS = {"none": "tab:gray", "temperature": "tab:blue", "isotonic": "tab:orange"}
MARKERS = "osD^v<>ph*"
FIT_KEYS = ("hidden_units", "learning_rate", "calibration", "seed")
CURVE = ("reliability_prob_pred", "reliability_prob_true")


def ece_vs_ess(rows: list[dict[str, Any]], path: str | Path) -> tuple[Path, dict[str, list]]:
    """Held-out ECE (y) against ESS fraction (x, log scale): one line per (hidden, lr,
    calibration) through its alphas (labelled), colour = calibration, marker = (hidden, lr)."""
    arch = sorted({(r["hidden_units"], r["learning_rate"]) for r in rows})
    fig, ax = figure_axes(figsize=(8.5, 4))
    for cal in CALIBRATION_COLOURS:
        for i, (h, lr) in enumerate(arch):
            sel = sorted((r for r in rows if (r["hidden_units"], r["learning_rate"], r["calibration"]) == (h, lr, cal)),
                         key=lambda r: r["alpha"])
            if not sel:
                continue
            x, y = [r["ess_frac"] for r in sel], [r["ece"] for r in sel]
            ax.plot(x, y, "-" + MARKERS[i % len(MARKERS)], color=CALIBRATION_COLOURS[cal], ms=5, lw=0.8,
                    label=f"{cal}, hidden {h}, lr {lr:g}")
            for r in sel:
                ax.annotate(f"α={r['alpha']:g}", (r["ess_frac"], r["ece"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("held-out ESS(w^alpha) / N (higher keeps more samples)")
    ax.set_ylabel("held-out ECE of the classifier (lower is better)")
    ax.set_title("Real-vs-generated classifier: calibration vs usable weights", fontsize=9)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    keys = ("hidden_units", "learning_rate", "calibration", "alpha", "ece", "ess_frac")
    return _save(fig, path), {k: [r[k] for r in rows] for k in keys}


def calibration_curves(fits: list[dict[str, Any]], path: str | Path) -> tuple[Path, dict[str, list]]:
    """Every fit's held-out reliability curve, one panel per calibration method (colour =
    hidden, lr). ``fits``: trial params plus ``reliability_prob_pred`` / ``_true``.
    Table: one row per curve point."""
    cals = [c for c in CALIBRATION_COLOURS if any(f["calibration"] == c for f in fits)]
    arch = sorted({(f["hidden_units"], f["learning_rate"]) for f in fits})
    fig, axes = figure_axes(1, len(cals), figsize=(3.3 * len(cals), 3.6), squeeze=False)
    for ax, cal in zip(axes[0], cals):
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=0.8)
        for f in (f for f in fits if f["calibration"] == cal):
            i = arch.index((f["hidden_units"], f["learning_rate"]))
            ax.plot(*(f[k] for k in CURVE), "-" + MARKERS[i % len(MARKERS)], color=colormaps["tab10"](i % 10), ms=3,
                    label=f"hidden {f['hidden_units']}, lr {f['learning_rate']:g}, seed {f['seed']}")
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal", title=f"calibration: {cal}",
               xlabel="mean predicted P(real)")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=5, loc="upper left")
    axes[0, 0].set_ylabel("observed fraction real")
    table = {k: [f[k] for f in fits for _ in f[CURVE[0]]] for k in FIT_KEYS}
    return _save(fig, path), table | {"prob_pred": [p for f in fits for p in f[CURVE[0]]],
                                      "prob_true": [p for f in fits for p in f[CURVE[1]]]}


def format_quality_table(rows: Sequence[Mapping[str, Any]],
                         metrics: Sequence[str] = QUALITY_METRICS) -> str:
    """Markdown table, one line per row: set | images | FID | KID | ... with "mean ± std" cells
    (``format_pm``: 2 decimals from 1 up, else 3 significant digits); a missing metric is "–".
    ``images``: rows per block (``n``), with the mean number of distinct ones in brackets where
    the row has ``distinct`` (resampled sets); "–" without ``n``."""
    if not rows:
        raise ValueError("rows is empty")
    head = ["set", "images"] + [METRIC_LABELS.get(m, m) for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows):
        if "set" not in row:
            raise ValueError(f"rows[{i}] has no 'set' label")
        cells = [str(row["set"]).replace("|", "\\|"), _images(row)]
        for m in metrics:
            mean, std = _number(row.get(f"{m}_mean")), _number(row.get(f"{m}_std"))
            cells.append(format_pm(mean, std))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _images(row: Mapping[str, Any]) -> str:
    if "n" not in row:
        return "–"
    return f"{row['n']} ({row['distinct']:.0f} distinct)" if "distinct" in row else str(row["n"])


def _metric_columns(rows: Sequence[Mapping[str, Any]], metric: str,
                    name: str) -> tuple[list[str], list[float], list[float]]:
    """(set labels, means, stds) of the rows that report ``metric``; ValueError if none."""
    if not rows:
        raise ValueError(f"{name} is empty")
    sets, mean, std = [], [], []
    for i, row in enumerate(rows):
        if "set" not in row:
            raise ValueError(f"{name}[{i}] has no 'set' label")
        m = _number(row.get(f"{metric}_mean"))
        if not math.isnan(m):
            sets.append(str(row["set"]))
            mean.append(m)
            std.append(_number(row.get(f"{metric}_std")))
    if not sets:
        raise ValueError(f"no entry of {name} has a finite {metric + '_mean'!r}")
    return sets, mean, std


def _number(x: Any) -> float:
    """float(x); NaN for None / missing / NaN (a missing metric)."""
    return float("nan") if x is None else float(x)


def _vector(x: Any, name: str, unit: bool = False) -> np.ndarray:
    """float64 (N,) copy of ``x``, N >= 1, finite, and in [0, 1] when ``unit``."""
    a = np.asarray(x if x is not None else [], dtype=np.float64)   # None entries become NaN
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has {int((~np.isfinite(a)).sum())} NaN or infinite entries")
    if unit and ((a < 0) | (a > 1)).any():
        raise ValueError(f"{name} must lie in [0, 1], got range [{a.min():.3g}, {a.max():.3g}]")
    return a


def _same_length(**arrays: np.ndarray) -> None:
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError("lengths differ: " + ", ".join(f"{k}={n}" for k, n in sizes.items()))


def _unit_axes(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper left")


def figure_axes(nrows: int = 1, ncols: int = 1, figsize: Any = None, **kw: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a Figure on its own Agg canvas (nothing global to close)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def _save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
