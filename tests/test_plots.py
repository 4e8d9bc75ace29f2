"""raydgm.pipeline.plots: every figure writes a readable PNG and returns the column table behind it."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raydgm._diagnostics import effective_sample_size
from raydgm.pipeline import plots

LW = np.log(np.array([1.0, 2.0, 3.0, 4.0, 0.5, 6.0, 7.0, 8.0]))  # sum w = 31.5
ROWS = [
    {"set": "real test", "fid_mean": 1.234, "fid_std": 0.21, "kid_mean": 1.2e-4, "kid_std": 3.4e-5,
     "is_mean": 9.87, "is_std": 0.05},
    {"set": "raw", "fid_mean": 45.678, "fid_std": 1.5, "kid_mean": 0.0123, "kid_std": 0.00045},
    {"set": "resampled (systematic)", "fid_mean": 30.1, "fid_std": 0.9, "kid_mean": 0.00812,
     "kid_std": 0.0003, "precision_mean": 0.71, "precision_std": 0.02, "n": 500, "distinct": 311.6},
]


def check_png(path, min_side=200):
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= min_side and max(img.size) <= 2000


def check_columns(table, names):
    assert list(table) == names
    assert len({len(v) for v in table.values()}) == 1


# ------------------------------------------------------------------------ reliability


def test_reliability_round_trips(tmp_path):
    pred, true = [0.05, 0.31, 0.52, 0.9], [0.0, 0.25, 0.6, 1.0]
    path, table = plots.reliability_diagram(pred, true, tmp_path / "rel.png", ece=0.0412, title="t")
    check_png(path)
    check_columns(table, ["prob_pred", "prob_true"])
    assert table == {"prob_pred": pred, "prob_true": true}


def test_reliability_single_bin(tmp_path):
    path, table = plots.reliability_diagram([0.5], [0.5], tmp_path / "one.png")
    check_png(path)
    assert table == {"prob_pred": [0.5], "prob_true": [0.5]}


@pytest.mark.parametrize("pred, true, name", [
    ([0.1, 0.2], [0.1], "lengths differ"),
    ([0.1, float("nan")], [0.1, 0.2], "prob_pred"),
    ([0.1, 0.2], [0.1, None], "prob_true"),           # a to_dict() NaN
    ([0.1, 1.5], [0.1, 0.2], "prob_pred"),
    ([], [], "prob_pred is empty"),
])
def test_reliability_rejects(tmp_path, pred, true, name):
    with pytest.raises(ValueError, match=name):
        plots.reliability_diagram(pred, true, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# ------------------------------------------------------------------------ proportion curve


def test_proportion_curve(tmp_path):
    rho = np.linspace(0, 1, 11)
    raw = 0.5 + (rho - 0.5) * (2 * 0.8 - 1)                 # calibrated: a = E_p[c] = 0.8
    path, table = plots.proportion_curve(rho, raw, tmp_path / "prop.png", mean_prob_prior_adjusted=rho)
    check_png(path)
    check_columns(table, ["rho", "mean_prob", "mean_prob_prior_adjusted"])
    assert table["rho"] == rho.tolist() and table["mean_prob"] == raw.tolist()
    assert table["mean_prob_prior_adjusted"] == rho.tolist()
    _, table = plots.proportion_curve([0.5], [0.5], tmp_path / "one.png")
    assert table == {"rho": [0.5], "mean_prob": [0.5]}


def test_proportion_curve_rejects(tmp_path):
    with pytest.raises(ValueError, match="mean_prob_prior_adjusted=2"):
        plots.proportion_curve([0, 0.5, 1], [0.2, 0.5, 0.8], tmp_path / "p.png", [0.0, 1.0])
    with pytest.raises(ValueError, match="mean_prob"):
        plots.proportion_curve([0, 1], [0.2, float("nan")], tmp_path / "p.png")


# ------------------------------------------------------------------------ ESS vs alpha


def test_ess_vs_alpha_values(tmp_path):
    path, table = plots.ess_vs_alpha(LW, tmp_path / "ess.png", alpha_used=0.5, target_fraction=0.9)
    check_png(path)
    check_columns(table, ["alpha", "ess_fraction"])
    assert len(table["alpha"]) == 51 and table["alpha"][0] == 0.0 and table["alpha"][-1] == 1.0
    assert table["ess_fraction"][0] == 1.0                  # uniform weights
    w = np.exp(LW)
    assert table["ess_fraction"][-1] == pytest.approx(w.sum() ** 2 / (w ** 2).sum() / 8, rel=1e-12)
    i = 20                                                  # alpha = 0.4
    expect = effective_sample_size(table["alpha"][i] * LW) / LW.size
    assert table["ess_fraction"][i] == pytest.approx(expect, rel=1e-12)
    assert np.all(np.diff(table["ess_fraction"]) <= 1e-12)  # flattening less, ESS falls


def test_ess_vs_alpha_equal_weights_and_zeros(tmp_path):
    _, table = plots.ess_vs_alpha(np.full(10, 3.7), tmp_path / "eq.png", alphas=[0.0, 0.3, 1.0])
    assert table == {"alpha": [0.0, 0.3, 1.0], "ess_fraction": [1.0, 1.0, 1.0]}
    lw = np.array([0.0, 1.0, -np.inf, 2.0])                 # one zero weight
    _, table = plots.ess_vs_alpha(lw, tmp_path / "z.png", alphas=[0.0])
    assert table["ess_fraction"] == [3 / 4]
    _, table = plots.ess_vs_alpha([0.3], tmp_path / "one.png")
    assert set(table["ess_fraction"]) == {1.0}


def test_ess_vs_alpha_rejects(tmp_path):
    with pytest.raises(ValueError, match="log_weights"):
        plots.ess_vs_alpha([0.0, float("nan")], tmp_path / "e.png")
    with pytest.raises(ValueError, match="log_weights is empty"):
        plots.ess_vs_alpha([], tmp_path / "e.png")
    with pytest.raises(ValueError, match="alphas"):
        plots.ess_vs_alpha(LW, tmp_path / "e.png", alphas=[-0.5, 1.0])


def test_weight_histogram_table():
    table = plots.weight_histogram_table(np.array([0.0, 0.0, 1.0, -np.inf]), bins=2)
    assert table == {"bin_left": [0.0, 0.5], "bin_right": [0.5, 1.0], "count": [2, 1]}
    table = plots.weight_histogram_table(LW)
    check_columns(table, ["bin_left", "bin_right", "count"])
    assert len(table["count"]) == 60 and sum(table["count"]) == 8


# ------------------------------------------------------------------------ quality bars / table


def test_quality_bars(tmp_path):
    path, table = plots.quality_bars(ROWS, "kid", tmp_path / "kid.png")
    check_png(path)
    check_columns(table, ["set", "mean", "std"])
    assert table == {"set": ["real test", "raw", "resampled (systematic)"],
                     "mean": [1.2e-4, 0.0123, 0.00812], "std": [3.4e-5, 0.00045, 0.0003]}
    _, table = plots.quality_bars(ROWS, "precision", tmp_path / "p.png")   # only one row has it
    assert table == {"set": ["resampled (systematic)"], "mean": [0.71], "std": [0.02]}
    _, table = plots.quality_bars([{"set": "raw", "fid_mean": 3.0}], "fid", tmp_path / "f.png")
    assert table["mean"] == [3.0] and math.isnan(table["std"][0])


def test_quality_bars_rejects(tmp_path):
    with pytest.raises(ValueError, match="rows is empty"):
        plots.quality_bars([], "fid", tmp_path / "x.png")
    with pytest.raises(ValueError, match="'coverage_mean'"):
        plots.quality_bars(ROWS, "coverage", tmp_path / "x.png")
    with pytest.raises(ValueError, match="'set'"):
        plots.quality_bars([{"fid_mean": 1.0}], "fid", tmp_path / "x.png")


def test_format_quality_table():
    text = plots.format_quality_table(ROWS)
    lines = text.splitlines()
    assert len(lines) == 2 + len(ROWS)
    assert lines[0] == "| set | images | FID | KID | IS | precision | recall | density | coverage |"
    assert lines[1] == "|---|---|---|---|---|---|---|---|---|"
    assert all(line.count("|") == 10 for line in lines)
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:5] == ["real test", "–", "1.23 ± 0.21", "0.00012 ± 3.4e-05", "9.87 ± 0.05"]
    assert cells[5:] == ["–"] * 4
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[2:4] == ["45.68 ± 1.50", "0.0123 ± 0.00045"]
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    assert cells[1] == "500 (312 distinct)"
    assert cells[2:4] == ["30.10 ± 0.90", "0.00812 ± 0.0003"] and cells[5] == "0.71 ± 0.02"
    assert "±" in text


def test_format_quality_table_subset_and_errors():
    text = plots.format_quality_table([{"set": "a|b", "fid_mean": 0.5, "fid_std": None}], ["fid"])
    assert text.splitlines() == ["| set | images | FID |", "|---|---|---|", "| a\\|b | – | 0.5 |"]
    with pytest.raises(ValueError, match="rows is empty"):
        plots.format_quality_table([])


# ------------------------------------------------------------------------ accuracy vs weight


def accuracy_rows():
    """study.summarize rows of a hand-made sweep: 2 labeled sizes, none / generated (weights
    0, 0.01, 0.1) / resampled / real, seeds 0-2; resampled at n=10 has one seed (no band)."""
    from raydgm.sweeps import study
    trials = []
    for n, base in ((10, 0.5), (100, 0.8)):
        arms = [("-", "none", 0.0, 0.0), ("vae", "generated", 0.0, 0.0), ("vae", "generated", 0.01, 0.02),
                ("vae", "generated", 0.1, 0.04), ("vae", "resampled", 0.01, 0.03), ("vae", "resampled", 0.1, 0.05),
                ("-", "real", 0.1, 0.06)]
        for g, u, w, gain in arms:
            seeds = (0,) if (n, u) == (10, "resampled") else (0, 1, 2)
            trials += [{"generator": g, "labeled_size": n, "unlabeled": u, "semantic_weight": w, "seed": s,
                        "val_accuracy": 0.5, "test_accuracy": base + gain + 0.01 * s} for s in seeds]
    return study.summarize(trials)


def test_accuracy_vs_weight_table_and_png(tmp_path):
    rows = accuracy_rows()
    path, table = plots.accuracy_vs_weight(rows, tmp_path / "acc.png")
    check_png(path)
    check_columns(table, list(plots.ACCURACY_KEYS) + ["plot_x"])
    assert table["test_accuracy_lo"] == [r["test_accuracy_lo"] for r in rows]
    x = dict(zip(zip(table["labeled_size"], table["unlabeled"], table["semantic_weight"]), table["plot_x"]))
    assert x[(10, "generated", 0.0)] == pytest.approx(0.01 / 10)          # one decade left of 0.01
    assert x[(100, "generated", 0.1)] == 0.1 and math.isnan(x[(100, "none", 0.0)])


def test_accuracy_figure_panels_log_axis_and_bands():
    rows = accuracy_rows()
    fig = plots.accuracy_figure(rows)
    assert len(fig.axes) == 2                                          # one panel per labeled size
    for ax, n in zip(fig.axes, (10, 100)):
        assert ax.get_xscale() == "log" and ax.get_title() == f"{n} labeled images"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.01", "0.1"]
        bands = {c.get_gid(): c for c in ax.collections if c.get_gid()}
        gen = [r for r in rows if (r["labeled_size"], r["unlabeled"]) == (n, "generated")
               and r["semantic_weight"] > 0]
        xy = {tuple(v) for v in bands["band:vae:generated"].get_paths()[0].vertices.round(12)}
        for r in gen:                                                  # the band runs lo .. hi
            w = r["semantic_weight"]
            assert (w, round(r["test_accuracy_lo"], 12)) in xy and (w, round(r["test_accuracy_hi"], 12)) in xy
        ys = [y for _, y in xy]
        assert min(ys) == pytest.approx(min(r["test_accuracy_lo"] for r in gen))
        assert max(ys) == pytest.approx(max(r["test_accuracy_hi"] for r in gen))
        (none,) = [r for r in rows if (r["labeled_size"], r["unlabeled"]) == (n, "none")]
        (span,) = [p for p in ax.patches if p.get_gid() == "band:-:none"]
        assert (span.get_y(), span.get_y() + span.get_height()) == pytest.approx(
            (none["test_accuracy_lo"], none["test_accuracy_hi"]))
    resampled = [[c for c in ax.collections if c.get_gid() == "band:vae:resampled"] for ax in fig.axes]
    assert [len(c[0].get_paths()) for c in resampled] == [0, 1]       # n=10 has one seed: no band
    assert "0 is left of the dotted line" in fig.axes[0].get_xlabel()
    positive = [r for r in rows if r["unlabeled"] == "none" or r["semantic_weight"] > 0]
    fig = plots.accuracy_figure(positive)                                  # no weight-0 marker to point at
    assert fig.axes[0].get_xlabel().endswith("(log scale; weight 0: the none band)")


def test_importing_plots_leaves_matplotlibs_backend_as_it_was(tmp_path):
    """A notebook's or a user's backend stays theirs; the PNGs are drawn on an Agg canvas anyway.
    (In a fresh interpreter: this one imported plots long ago.)"""
    probe = ("import sys, matplotlib\n"
             "matplotlib.use('svg')\n"
             "import numpy as np\n"
             "from raydgm.pipeline import plots\n"
             "plots.weight_histogram(np.zeros(3), sys.argv[1])\n"
             "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n")
    root = str(Path(__file__).resolve().parents[1])
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "w.png")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["svg", "False"]
    check_png(tmp_path / "w.png")


def test_accuracy_vs_weight_older_rows_and_rejects(tmp_path):
    rows = [{"labeled_size": 50, "unlabeled": "none", "semantic_weight": 0.0, "seeds": 1, "test_accuracy_mean": 0.6,
             "test_accuracy_std": 0.0},
            {"labeled_size": 50, "unlabeled": "generated", "semantic_weight": 0.5, "seeds": 1,
             "test_accuracy_mean": 0.7, "test_accuracy_std": 0.0}]
    path, table = plots.accuracy_vs_weight(rows, tmp_path / "old.png")
    check_png(path)
    assert table["generator"] == ["-", "-"] and math.isnan(table["test_accuracy_lo"][1])
    with pytest.raises(ValueError, match="rows is empty"):
        plots.accuracy_vs_weight([], tmp_path / "x.png")


# --------------------------------------------------------------------------- reliability (raydgm.pipeline.calibration_plots)

def _top_label(seed, n=60):
    from raydgm.calibration import top_label
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, 4))
    return top_label(z - np.log(np.exp(z).sum(axis=1, keepdims=True)), rng.integers(0, 4, n))


def test_trial_reliability_png_and_table(tmp_path):
    from raydgm.pipeline import calibration_plots
    calib = {"val": _top_label(0), "test": _top_label(1)}
    png, table = calibration_plots.trial_reliability(calib, tmp_path / "r.png", "a trial")
    check_png(png)
    check_columns(table, ["split", "bin", "count", "confidence", "accuracy"])
    for split, result in calib.items():
        rows = [i for i, s in enumerate(table["split"]) if s == split]
        assert [table["bin"][i] for i in rows] == result["curve"]["bin"]
        assert sum(table["count"][i] for i in rows) == 60
        assert [table["accuracy"][i] for i in rows] == result["curve"]["accuracy"]
    with pytest.raises(ValueError, match="unequal lengths"):
        calibration_plots.trial_reliability({"test": calib["test"] | {"curve": calib["test"]["curve"] | {"bin": [1]}}},
                                            tmp_path / "bad.png")


def test_arm_reliability_one_panel_per_size_and_source(tmp_path):
    from raydgm.calibration import pool_curves
    from raydgm.pipeline import calibration_plots
    arm = {"generator": "vae", "labeled_size": 50, "unlabeled": "generated", "seeds": 2, "test_ece_mean": 0.1}
    pooled = pool_curves([_top_label(2)["curve"], _top_label(3)["curve"]], 15)
    arms = [arm | {"semantic_weight": 0.5, "curve": pooled}, arm | {"semantic_weight": 2.0, "curve": pooled},
            arm | {"generator": "-", "unlabeled": "none", "semantic_weight": 0.0, "curve": _top_label(4)["curve"]}]
    png, table = calibration_plots.arm_reliability(arms, tmp_path / "arms.png")
    check_png(png)
    check_columns(table, ["generator", "labeled_size", "unlabeled", "semantic_weight", "seeds", "test_ece_mean",
                          "bin", "count", "confidence", "accuracy"])
    assert len(table["bin"]) == 2 * len(pooled["bin"]) + len(arms[2]["curve"]["bin"])
    assert sum(c for c, w in zip(table["count"], table["semantic_weight"]) if w == 2.0) == 120   # 2 seeds x 60
    with pytest.raises(ValueError, match="empty"):
        calibration_plots.arm_reliability([], tmp_path / "none.png")
