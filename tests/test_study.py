"""raydgm.sweeps.study: paired intervals, weight selection and the tables, on hand-made trial
tables whose answers are computed here by hand."""
import math

import pytest
from scipy import stats

from raydgm.sweeps import study

T2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)   # t_{0.975, 2} = (2p - 1) / sqrt(2p(1 - p)) = 4.3027: 3 seeds
T1 = math.tan(math.pi * (0.975 - 0.5))     # t_{0.975, 1} = tan(pi (p - 1/2)) = 12.706: 2 seeds


def trial(gen, n, source, w, seed, test, val=0.5):
    return {"generator": gen, "labeled_size": n, "unlabeled": source, "semantic_weight": w, "seed": seed,
            "val_accuracy": val, "test_accuracy": test}


def arm(gen, n, source, w, tests, vals=None, seeds=(0, 1, 2)):
    vals = vals or [0.5] * len(tests)
    return [trial(gen, n, source, w, s, t, v) for s, t, v in zip(seeds, tests, vals)]


NONE = [0.80, 0.82, 0.81]                                    # per seed 0, 1, 2
TRIALS = (arm("vae", 100, "generated", 0.1, [0.81, 0.85, 0.83])          # none + [0.01, 0.03, 0.02]
          + arm("vae", 100, "resampled", 0.1, [0.83, 0.86, 0.86])        # generated + [0.02, 0.01, 0.03]
          + arm("-", 100, "none", 0.0, NONE)
          + arm("-", 100, "real", 0.1, [0.90, 0.90]))                    # seeds 0, 1 only


# --------------------------------------------------------------------------- t interval


def test_t_interval_by_hand():
    mean, lo, hi = study.t_interval([0.01, 0.03, 0.02])
    half = T2 * 0.01 / math.sqrt(3)                          # sd of [0.01, 0.03, 0.02] is 0.01
    assert mean == pytest.approx(0.02, abs=1e-15)
    assert (lo, hi) == (pytest.approx(0.02 - half, abs=1e-15), pytest.approx(0.02 + half, abs=1e-15))
    assert stats.t.ppf(0.975, 2) == pytest.approx(T2, rel=1e-12) and stats.t.ppf(0.975, 1) == pytest.approx(T1)
    assert lo < 0 < hi                                       # half = 0.0248 > 0.02: contains 0


def test_t_interval_agrees_with_scipy_and_levels():
    values = [0.3, 0.1, 0.7, 0.4, 0.45]
    for level in (0.5, 0.9, 0.95, 0.99):
        mean, lo, hi = study.t_interval(values, level)
        ref = stats.t.interval(level, 4, loc=0.39, scale=stats.sem(values))
        assert mean == pytest.approx(0.39) and (lo, hi) == pytest.approx(ref, rel=1e-12)


def test_t_interval_degenerate():
    assert study.t_interval([0.7])[0] == 0.7 and all(math.isnan(x) for x in study.t_interval([0.7])[1:])
    assert all(math.isnan(x) for x in study.t_interval([]))
    assert study.t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)          # zero spread: zero width
    with pytest.raises(ValueError, match="NaN"):
        study.t_interval([0.5, float("nan")])
    with pytest.raises(ValueError, match="level"):
        study.t_interval([0.5, 0.6], level=1.0)


def test_paired_difference_uses_only_common_seeds():
    d = study.paired_difference({0: 0.9, 1: 0.80, 2: 0.70}, {1: 0.75, 2: 0.67, 3: 0.1})
    half = T1 * math.sqrt(((0.05 - 0.04) ** 2 + (0.03 - 0.04) ** 2) / 1) / math.sqrt(2)
    assert d["pairs"] == 2 and d["mean"] == pytest.approx((0.05 + 0.03) / 2)
    assert (d["lo"], d["hi"]) == (pytest.approx(0.04 - half), pytest.approx(0.04 + half))
    assert study.paired_difference({0: 0.9}, {1: 0.8})["pairs"] == 0


# --------------------------------------------------------------------------- summarize


def test_summarize_rows_order_and_paired_differences():
    rows = study.summarize(TRIALS)
    assert [(r["unlabeled"], r["generator"]) for r in rows] == [
        ("none", "-"), ("generated", "vae"), ("resampled", "vae"), ("real", "-")]
    none, gen, res, real = rows
    assert list(gen) == ["generator", "labeled_size", "unlabeled", "semantic_weight", "seeds", "val_accuracy_mean",
                         "test_accuracy_mean", "test_accuracy_std", "test_accuracy_lo", "test_accuracy_hi",
                         "diff_vs_none_mean", "diff_vs_none_lo", "diff_vs_none_hi", "diff_vs_none_pairs",
                         "diff_vs_generated_mean", "diff_vs_generated_lo", "diff_vs_generated_hi",
                         "diff_vs_generated_pairs"]
    assert none["test_accuracy_mean"] == pytest.approx(0.81) and none["test_accuracy_std"] == pytest.approx(0.01)
    assert none["test_accuracy_hi"] == pytest.approx(0.81 + T2 * 0.01 / math.sqrt(3))
    assert math.isnan(none["diff_vs_none_mean"]) and none["diff_vs_none_pairs"] == 0
    half = T2 * 0.01 / math.sqrt(3)                          # generated - none: [0.01, 0.03, 0.02]
    assert gen["diff_vs_none_mean"] == pytest.approx(0.02) and gen["diff_vs_none_pairs"] == 3
    assert gen["diff_vs_none_lo"] == pytest.approx(0.02 - half) and gen["diff_vs_none_hi"] == pytest.approx(0.02 + half)
    assert math.isnan(gen["diff_vs_generated_mean"])      # only resampled / weighted
    assert res["diff_vs_generated_mean"] == pytest.approx(0.02)         # [0.02, 0.01, 0.03]: sd 0.01
    assert res["diff_vs_generated_hi"] == pytest.approx(0.02 + half) and res["diff_vs_generated_pairs"] == 3
    assert res["diff_vs_none_mean"] == pytest.approx(0.04)              # [0.03, 0.04, 0.05]: sd 0.01
    assert res["diff_vs_none_lo"] == pytest.approx(0.04 - half)
    assert real["seeds"] == 2 and real["diff_vs_none_pairs"] == 2            # seeds 0, 1: [0.10, 0.08]
    assert real["diff_vs_none_mean"] == pytest.approx(0.09)
    assert real["diff_vs_none_hi"] == pytest.approx(0.09 + T1 * math.sqrt(0.0002) / math.sqrt(2))
    assert math.isnan(real["diff_vs_generated_mean"])


def test_summarize_one_seed_and_missing_reference():
    rows = study.summarize(arm("vae", 50, "weighted", 1.0, [0.6], seeds=(4,))
                           + arm("-", 50, "none", 0.0, [0.5], seeds=(4,)))
    none, weighted = rows
    assert weighted["test_accuracy_std"] == 0.0 and math.isnan(weighted["test_accuracy_lo"])
    assert weighted["diff_vs_none_mean"] == pytest.approx(0.1) and weighted["diff_vs_none_pairs"] == 1
    assert math.isnan(weighted["diff_vs_none_lo"]) and math.isnan(weighted["diff_vs_none_hi"])
    assert math.isnan(weighted["diff_vs_generated_mean"]) and weighted["diff_vs_generated_pairs"] == 0


def test_summarize_generated_reference_is_same_weight_and_generator():
    trials = (arm("vae", 100, "generated", 0.1, [0.8, 0.8, 0.8]) + arm("vae", 100, "generated", 1.0, [0.7, 0.7, 0.7])
              + arm("pcnn", 100, "generated", 1.0, [0.1, 0.1, 0.1])
              + arm("vae", 100, "weighted", 1.0, [0.75, 0.75, 0.75]))
    rows = study.summarize(trials)
    assert [(r["generator"], r["unlabeled"], r["semantic_weight"]) for r in rows] == [
        ("vae", "generated", 0.1), ("vae", "generated", 1.0), ("pcnn", "generated", 1.0), ("vae", "weighted", 1.0)]
    assert rows[-1]["diff_vs_generated_mean"] == pytest.approx(0.75 - 0.7)
    assert math.isnan(rows[-1]["diff_vs_none_mean"])       # no none arm at 100


def test_summarize_rejects():
    with pytest.raises(ValueError, match="appears twice"):
        study.summarize(arm("-", 100, "none", 0.0, [0.5, 0.6], seeds=(1, 1)))
    with pytest.raises(ValueError, match="uses no generator"):
        study.summarize(arm("vae", 100, "real", 0.1, [0.5]))
    with pytest.raises(ValueError, match="lacks"):
        study.summarize([{"generator": "-", "labeled_size": 1}])
    with pytest.raises(ValueError, match="unknown"):
        study.summarize(arm("vae", 100, "noise", 0.1, [0.5]))


# --------------------------------------------------------------------------- selection


def test_select_picks_best_validation_not_best_test():
    trials = (arm("vae", 100, "generated", 0.1, [0.80, 0.82, 0.81], vals=[0.90, 0.91, 0.89])   # val 0.90
              + arm("vae", 100, "generated", 1.0, [0.95, 0.96, 0.97], vals=[0.88, 0.88, 0.88])  # better test
              + arm("-", 100, "none", 0.0, NONE))
    none, gen = study.select_weights(trials)
    assert (none["unlabeled"], none["selected_weight"], none["candidates"]) == ("none", 0.0, 1)
    assert gen["selected_weight"] == 0.1 and gen["candidates"] == 2
    assert gen["test_accuracy_mean"] == pytest.approx(0.81) and gen["val_accuracy_mean"] == pytest.approx(0.90)
    assert gen["diff_vs_none_mean"] == pytest.approx(0.0, abs=1e-12) and gen["diff_vs_none_pairs"] == 3
    assert math.isnan(gen["generated_weight"]) and math.isnan(gen["diff_vs_generated_mean"])


def test_select_ties_go_to_the_smallest_weight():
    trials = (arm("vae", 100, "weighted", 0.5, [0.7, 0.7], vals=[0.84, 0.86], seeds=(0, 1))
              + arm("vae", 100, "weighted", 0.01, [0.6, 0.6], vals=[0.86, 0.84], seeds=(0, 1))
              + arm("vae", 100, "weighted", 2.0, [0.9, 0.9], vals=[0.80, 0.80], seeds=(0, 1)))
    (row,) = study.select_weights(trials)
    assert row["selected_weight"] == 0.01 and row["candidates"] == 3
    assert row["test_accuracy_mean"] == pytest.approx(0.6)


def test_select_compares_with_generated_at_its_own_weight():
    trials = (arm("vae", 100, "generated", 0.1, [0.80, 0.81, 0.82], vals=[0.9] * 3)        # selected
              + arm("vae", 100, "generated", 1.0, [0.50, 0.50, 0.50], vals=[0.8] * 3)
              + arm("vae", 100, "resampled", 0.1, [0.10, 0.10, 0.10], vals=[0.7] * 3)
              + arm("vae", 100, "resampled", 1.0, [0.83, 0.83, 0.85], vals=[0.95] * 3))    # selected
    gen, res = study.select_weights(trials)
    assert (gen["selected_weight"], res["selected_weight"], res["generated_weight"]) == (0.1, 1.0, 0.1)
    d = [0.03, 0.02, 0.03]                                   # resampled@1.0 - generated@0.1
    sd = math.sqrt(((0.03 - 0.08 / 3) ** 2 * 2 + (0.02 - 0.08 / 3) ** 2) / 2)
    assert res["diff_vs_generated_mean"] == pytest.approx(sum(d) / 3)
    assert res["diff_vs_generated_lo"] == pytest.approx(sum(d) / 3 - T2 * sd / math.sqrt(3))
    assert res["diff_vs_generated_pairs"] == 3


# --------------------------------------------------------------------------- tables


def diff_cells(line):
    cells = [c.strip() for c in line.strip("|").split("|")]
    return cells[5], cells[6]


def test_format_summary_marks_only_intervals_that_exclude_zero():
    lines = study.format_summary(study.summarize(TRIALS)).splitlines()
    assert lines[0] == ("| labeled | generator | unlabeled | weight | test accuracy (mean [95% CI]) | Δ vs none "
                        "| Δ vs generated | seeds |")
    assert len(lines) == 2 + 4 + 2 and lines[-2] == "" and "bold" in lines[-1]
    half = T2 * 0.01 / math.sqrt(3)                          # 0.0248 (sd 0.01 over 3 seeds)
    assert diff_cells(lines[2]) == ("–", "–")                # none row
    assert diff_cells(lines[3]) == (f"+0.020 [{0.02 - half:+.3f}, {0.02 + half:+.3f}]", "–")
    assert diff_cells(lines[3])[0] == "+0.020 [-0.005, +0.045]"   # contains 0: not marked
    assert diff_cells(lines[4]) == ("**+0.040 [+0.015, +0.065]**", "+0.020 [-0.005, +0.045]")
    assert lines[5].split("|")[5].strip() == "0.900 [0.900, 0.900]"
    assert lines[5].endswith("| 2 |")
    assert lines[2] == "| 100 | - | none | 0 | 0.810 [0.785, 0.835] | – | – | 3 |"


def test_format_summary_pairs_note_and_no_interval():
    rows = study.summarize(arm("-", 10, "none", 0.0, [0.5, 0.6], seeds=(0, 1))
                           + arm("-", 10, "real", 0.1, [0.7, 0.7], seeds=(1, 2)))
    real = study.format_summary(rows).splitlines()[3]
    assert diff_cells(real)[0] == "+0.100 (1 pairs)"         # one common seed: no interval, no mark


def test_table_6_4_cells():
    trials = (arm("vae", 100, "generated", 0.1, [0.80, 0.81, 0.82], vals=[0.9] * 3)
              + arm("vae", 100, "resampled", 1.0, [0.83, 0.83, 0.85], vals=[0.95] * 3)
              + arm("vae", 100, "weighted", 1.0, [0.80, 0.82, 0.81], vals=[0.95] * 3)
              + arm("-", 100, "none", 0.0, NONE) + arm("-", 100, "real", 0.1, [0.9, 0.9, 0.9])
              + arm("-", 10, "none", 0.0, [0.3, 0.4, 0.5]))
    lines = study.table_6_4(study.select_weights(trials)).splitlines()
    assert lines[0].startswith("Table 6.4") and lines[1] == ""
    lines = lines[2:]
    assert lines[0] == "| generator | unlabeled | 10 labeled | 100 labeled |"
    assert [tuple(c.strip() for c in line.strip("|").split("|")[:2]) for line in lines[2:7]] == [
        ("-", "none"), ("vae", "generated"), ("vae", "resampled"), ("vae", "weighted"), ("-", "real")]
    cell = lambda i, j: lines[i].strip("|").split("|")[j].strip()   # noqa: E731
    assert cell(2, 2) == f"0.400 [{0.4 - T2 * 0.1 / math.sqrt(3):.3f}, {0.4 + T2 * 0.1 / math.sqrt(3):.3f}] w=0"
    assert cell(3, 2) == "–"                                 # no generated arm at 10 labels
    assert cell(3, 3) == "0.810 [0.785, 0.835] w=0.1"
    d, sd = 0.08 / 3, math.sqrt(((0.03 - 0.08 / 3) ** 2 * 2 + (0.02 - 0.08 / 3) ** 2) / 2)
    lo, hi = d - T2 * sd / math.sqrt(3), d + T2 * sd / math.sqrt(3)   # 0.0123, 0.0410: excludes 0
    half = T2 * math.sqrt(((0.83 - 2.51 / 3) ** 2 * 2 + (0.85 - 2.51 / 3) ** 2) / 2) / math.sqrt(3)
    accuracy = f"{2.51 / 3:.3f} [{2.51 / 3 - half:.3f}, {2.51 / 3 + half:.3f}]"
    assert cell(4, 3) == f"{accuracy} w=1; Δ gen **+{d:.3f} [+{lo:.3f}, +{hi:.3f}]**"
    assert cell(5, 3) == "0.810 [0.785, 0.835] w=1; Δ gen +0.000 [-0.025, +0.025]"   # [0, 0.01, -0.01]
    assert lines[-2] == "" and "bold" in lines[-1]


def test_table_6_3_rows_and_caption():
    def q(features, fid):
        return {"features": features, "rows": [
            {"set": "real train", "fid_mean": 1.5, "fid_std": 0.25, "kid_mean": 0.0001, "kid_std": 2e-5},
            {"set": "raw", "fid_mean": fid, "fid_std": 1.0, "kid_mean": 0.02, "kid_std": 0.001, "is_mean": 8.0,
             "is_std": 0.5},
            {"set": "resampled (systematic)", "fid_mean": 20.0, "fid_std": 0.5},
            {"set": "resampled (residual)", "fid_mean": 21.0, "fid_std": 0.5},
            {"set": "importance-weighted", "fid_mean": 19.0, "fid_std": 0.4}]}
    text = study.table_6_3({"vae": q("inception", 30.0), "pcnn": q("inception", 25.0)})
    lines = text.splitlines()
    assert lines[0].startswith("Table 6.3") and "inception features" in lines[0] and lines[1] == ""
    assert lines[2] == "| generator | set | IS | FID | KID |"
    assert lines[4] == "| vae | reference (real train vs real test) | – | 1.50 ± 0.25 | 0.0001 ± 2e-05 |"
    assert lines[5] == "| vae | raw | 8.00 ± 0.50 | 30.00 ± 1.00 | 0.02 ± 0.001 |"
    assert [line.split("|")[2].strip() for line in lines[4:]] == [
        "reference (real train vs real test)", "raw", "resampled (systematic)", "resampled (residual)"] * 2
    assert "importance-weighted" in study.table_6_3({"vae": q("inception", 30.0)}, weighted=True)
    mixed = study.table_6_3({"vae": q("inception", 30.0), "pcnn": q("domain", 25.0)}).splitlines()[0]
    assert "vae: inception, pcnn: domain" in mixed
    with pytest.raises(ValueError, match="empty"):
        study.table_6_3({})


# --------------------------------------------------------------------------- calibration (ECE)


def with_ece(trials, eces):
    """The trials with test_ece set, in order."""
    return [t | {"test_ece": e} for t, e in zip(trials, eces)]


#   none [0.05, 0.06, 0.04]; generated = none + [0.03, 0.04, 0.05]; resampled = generated - 0.04
ECE_TRIALS = with_ece(arm("-", 100, "none", 0.0, NONE) + arm("vae", 100, "generated", 0.1, [0.81, 0.85, 0.83])
                      + arm("vae", 100, "resampled", 0.1, [0.83, 0.86, 0.86]),
                      [0.05, 0.06, 0.04] + [0.08, 0.10, 0.09] + [0.04, 0.06, 0.05])


def test_summarize_gives_ece_an_interval_and_paired_differences():
    none, gen, res = study.summarize(ECE_TRIALS)
    half = T2 * 0.01 / math.sqrt(3)                          # sd 0.01 over 3 seeds
    assert none["test_ece_mean"] == pytest.approx(0.05) and none["test_ece_hi"] == pytest.approx(0.05 + half)
    assert math.isnan(none["ece_diff_vs_none_mean"]) and none["ece_diff_vs_none_pairs"] == 0
    assert gen["ece_diff_vs_none_mean"] == pytest.approx(0.04)            # [0.03, 0.04, 0.05]
    assert gen["ece_diff_vs_none_lo"] == pytest.approx(0.04 - half) and gen["ece_diff_vs_none_pairs"] == 3
    assert math.isnan(gen["ece_diff_vs_generated_mean"])
    assert res["ece_diff_vs_generated_mean"] == pytest.approx(-0.04)      # [-0.04] * 3: zero width
    assert res["ece_diff_vs_generated_hi"] == pytest.approx(-0.04)
    assert res["ece_diff_vs_none_mean"] == pytest.approx(0.0, abs=1e-15)  # [-0.01, 0, 0.01]
    assert res["ece_diff_vs_none_hi"] == pytest.approx(half)
    assert res["diff_vs_generated_mean"] == pytest.approx(0.02)           # accuracy untouched by ECE
    assert "test_ece_mean" not in study.summarize(TRIALS)[0]              # no ECE without test_ece
    partial = ECE_TRIALS[:-1] + [{k: v for k, v in ECE_TRIALS[-1].items() if k != "test_ece"}]
    assert "test_ece_mean" not in study.summarize(partial)[0]             # all or nothing


def test_format_summary_and_table_6_4_show_ece():
    lines = study.format_summary(study.summarize(ECE_TRIALS)).splitlines()
    assert lines[0].endswith("| test ECE (mean [95% CI]) | ΔECE vs none | ΔECE vs generated | seeds |")
    cells = [c.strip() for c in lines[4].strip("|").split("|")]           # resampled
    assert cells[7:10] == ["0.050 [0.025, 0.075]", "+0.000 [-0.025, +0.025]", "**-0.040 [-0.040, -0.040]**"]
    assert [c.strip() for c in lines[3].strip("|").split("|")][8] == "**+0.040 [+0.015, +0.065]**"
    assert "15 equal-width confidence bins" in lines[-1]
    table = study.table_6_4(study.select_weights(ECE_TRIALS)).splitlines()
    at = table.index("Table 6.4, calibration: test ECE at the same selected weights")
    rows = {line.split("|")[2].strip(): line.split("|")[3].strip() for line in table[at + 4:at + 7]}
    assert rows == {"none": "0.050 [0.025, 0.075]",
                    "generated": "0.090 [0.065, 0.115]; Δ none **+0.040 [+0.015, +0.065]**",
                    "resampled": "0.050 [0.025, 0.075]; Δ none +0.000 [-0.025, +0.025]; "
                                 "Δ gen **-0.040 [-0.040, -0.040]**"}


def test_table_6_3_gives_the_raw_weights_beside_the_used_ones():
    q = {"features": "domain", "rows": [{"set": "raw", "fid_mean": 30.0, "fid_std": 1.0}]}
    summary = {"alpha": 0.3712, "ess_fraction_raw": 0.00032, "khat_raw": 1.271, "ess_fraction_used": 0.1,
               "khat_used": 0.49, "truth": {"class_tv_before": 0.2272, "class_tv_alpha1": 0.2614, "class_tv_used": 0.131,
                                            "junk_share_before": 0.0, "junk_share_alpha1": 0.0, "junk_share_used": 0.0}}
    dirty = summary | {"truth": summary["truth"] | {"junk_share_before": 0.4991, "junk_share_alpha1": 0.0081,
                                                   "junk_share_used": 0.0307}}
    weights = {"skewed": summary, "contaminated": dirty, "vae": {k: v for k, v in summary.items() if k != "truth"}}
    lines = study.table_6_3({"skewed": q, "contaminated": q, "vae": q}, weights=weights).splitlines()
    start = lines.index("| generator | alpha | ESS fraction | k-hat | class TV before -> after SIR (truth) "
                        "| junk share before -> after SIR (truth) |")
    assert lines[start + 2:start + 8] == ["| skewed | 1 (raw) | 0.0003 | 1.27 | 0.227 -> 0.261 | – |",
                                          "| skewed | 0.371 (used) | 0.1000 | 0.49 | 0.227 -> 0.131 | – |",
                                          "| contaminated | 1 (raw) | 0.0003 | 1.27 | 0.227 -> 0.261 | 0.499 -> 0.008 |",
                                          "| contaminated | 0.371 (used) | 0.1000 | 0.49 | 0.227 -> 0.131 | 0.499 -> 0.031 |",
                                          "| vae | 1 (raw) | 0.0003 | 1.27 | – | – |",
                                          "| vae | 0.371 (used) | 0.1000 | 0.49 | – | – |"]
    assert "alpha" not in study.table_6_3({"vae": q})              # no weights given: quality alone
