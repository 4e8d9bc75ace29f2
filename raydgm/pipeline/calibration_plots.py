"""Reliability diagrams of the semi-supervised classifiers: top-label confidence against accuracy.

A curve is ``raydgm.calibration.top_label``'s "curve": {"bin", "count", "confidence",
"accuracy"} over the non-empty bins of 15 equal-width confidence bins, confidence and accuracy
in [0, 1]. A calibrated classifier lies on the diagonal; below it, overconfident. Every figure
comes with its data as a column table (one row per curve point).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from raydgm.pipeline.plots import MARKERS, SOURCE_COLOURS, Table, _save   # plots picks the backend first

import matplotlib.pyplot as plt  # noqa: E402  (after plots)

SPLIT_COLOURS = {"val": "tab:green", "test": "tab:blue"}
AXES = ("top-label confidence (bin mean)", "accuracy in bin")


def trial_reliability(calibration: Mapping[str, Mapping[str, Any]], path: str | Path,
                      title: str = "") -> tuple[Path, Table]:
    """One trial at its reported epoch: the val and test curves (``calibration``: split ->
    ``top_label`` result, with "ece"), above the test confidences' histogram (rows per bin).
    Table: split, bin, count, confidence, accuracy."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4, 5.2), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=0.8, label="calibrated")
    table: Table = {"split": [], "bin": [], "count": [], "confidence": [], "accuracy": []}
    for split, result in calibration.items():
        c = _checked(result["curve"], split)
        ax.plot(c["confidence"], c["accuracy"], "o-", ms=3, color=SPLIT_COLOURS.get(split, "black"),
                label=f"{split}: ECE {result['ece']:.3f}, NLL {result['nll']:.3f}")
        table["split"] += [split] * len(c["bin"])
        for k in ("bin", "count", "confidence", "accuracy"):
            table[k] += list(c[k])
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel=AXES[1])
    ax.set_title(title or "Reliability at the reported epoch", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    if "test" in calibration:
        c = calibration["test"]["curve"]
        width = 1.0 / calibration["test"].get("n_bins", 15)
        hist.bar([b * width for b in c["bin"]], c["count"], width=width, align="edge", color="tab:blue", alpha=0.6)
    hist.set(xlabel=AXES[0], ylabel="test rows")
    return _save(fig, path), table


def arm_reliability(arms: Sequence[Mapping[str, Any]], path: str | Path) -> tuple[Path, Table]:
    """The sweep's figure: one panel per (labeled size, source), one line per (generator,
    weight), each arm's test curve pooled over its seeds (``raydgm.calibration.pool_curves``).
    ``arms``: dicts with generator, labeled_size, unlabeled, semantic_weight, seeds, test_ece_mean
    and "curve". Table: the arm's keys, bin, count, confidence, accuracy."""
    if not arms:
        raise ValueError("arms is empty")
    panels = list(dict.fromkeys((a["labeled_size"], a["unlabeled"]) for a in arms))
    sizes = list(dict.fromkeys(n for n, _ in panels))
    sources = list(dict.fromkeys(u for _, u in panels))
    fig, axes = plt.subplots(len(sizes), len(sources), figsize=(3.2 * len(sources), 3.4 * len(sizes)),
                             squeeze=False, sharex=True, sharey=True)
    keys = ("generator", "labeled_size", "unlabeled", "semantic_weight", "seeds", "test_ece_mean")
    table: Table = {k: [] for k in (*keys, "bin", "count", "confidence", "accuracy")}
    for ax in axes.flat:
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1))
    for n, u in panels:
        ax = axes[sizes.index(n), sources.index(u)]
        mine = [a for a in arms if (a["labeled_size"], a["unlabeled"]) == (n, u)]
        for j, a in enumerate(mine):
            c = _checked(a["curve"], f"arm {j}")
            label = ("" if a["generator"] == "-" else f"{a['generator']} ") + (
                f"w={a['semantic_weight']:g}: " if u != "none" else "") + f"ECE {a['test_ece_mean']:.3f}"
            colour = SOURCE_COLOURS.get(u, "black") if len(mine) == 1 else plt.cm.viridis(j / (len(mine) - 1))
            ax.plot(c["confidence"], c["accuracy"], "-" + MARKERS[j % len(MARKERS)], ms=3, lw=1, color=colour,
                    label=label)
            for k in keys:
                table[k] += [a[k]] * len(c["bin"])
            for k in ("bin", "count", "confidence", "accuracy"):
                table[k] += list(c[k])
        ax.set_title(f"{n} labeled, {u} (pooled over seeds)", fontsize=8)
        ax.legend(fontsize=5, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel(AXES[0], fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(AXES[1], fontsize=8)
    return _save(fig, path), table


def _checked(curve: Mapping[str, Sequence[float]], name: str) -> Mapping[str, Sequence[float]]:
    """The curve, if its four columns have one length; else ValueError naming it."""
    lengths = {k: len(curve[k]) for k in ("bin", "count", "confidence", "accuracy")}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"curve of {name}: columns of unequal lengths {lengths}")
    return curve
