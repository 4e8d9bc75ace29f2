"""raydgm.sweeps.primary: Holm's correction against a hand-worked example and the step-down
procedure run by brute force, the paired t test against scipy, and the declared comparisons on
a hand-made trial table."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from raydgm.sweeps import primary

from test_study import arm


def test_holm_by_hand():
    """p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03;
    0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to the running max 0.06."""
    adjusted = primary.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert primary.holm([0.3, 0.5]).tolist() == pytest.approx([0.6, 0.6])       # 0.3 x 2; max(0.6, 0.5)
    assert primary.holm([0.6, 0.9]).tolist() == [1.0, 1.0]                       # capped at 1
    nan = primary.holm([0.01, math.nan, 0.04])                                   # NaN: outside the family, m = 2
    assert nan[0] == pytest.approx(0.02) and math.isnan(nan[1]) and nan[2] == pytest.approx(0.04)
    assert primary.holm([]).size == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        primary.holm([0.2, 1.5])


def _step_down(p, alpha):
    """Holm's procedure as written (Holm 1979): reject H_(1), H_(2), ... while p_(i) <= alpha / (m - i + 1)."""
    order, m, rejected = np.argsort(p, kind="stable"), len(p), set()
    for i, k in enumerate(order):
        if p[k] > alpha / (m - i):
            break
        rejected.add(int(k))
    return rejected


def test_holm_adjusted_p_rejects_exactly_what_the_step_down_procedure_rejects():
    rng = np.random.default_rng(0)
    for m in (1, 2, 3, 5, 8):
        for _ in range(50):
            p = rng.uniform(0, 0.2, size=m) ** rng.uniform(0.5, 3)
            adjusted = primary.holm(p)
            assert (adjusted >= p).all() and (adjusted <= 1).all()
            for alpha in (0.01, 0.05, 0.1, 0.2):
                assert {int(k) for k in np.flatnonzero(adjusted <= alpha)} == _step_down(p, alpha)


def test_paired_t_pvalue_agrees_with_scipy_and_degenerate_cases():
    d = [0.02, 0.01, 0.03, -0.005, 0.015]
    assert primary.paired_t_pvalue(d) == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-12)
    assert math.isnan(primary.paired_t_pvalue([0.1]))
    assert primary.paired_t_pvalue([0.0, 0.0, 0.0]) == 1.0 and primary.paired_t_pvalue([0.01] * 3) == 0.0


def _trials():
    """vae at 100 labels, weights 0.1 and 1 (validation picks 1 for resampled, 0.1 otherwise);
    baseline at 100 labels with no subset arm."""
    low, high = [0.5] * 3, [0.6] * 3
    out = []
    for w, vals in ((0.1, high), (1.0, low)):
        out += arm("vae", 100, "generated", w, [0.80, 0.82, 0.81] if w == 0.1 else [0.0] * 3, vals)
        out += arm("vae", 100, "subset", w, [0.81, 0.82, 0.80] if w == 0.1 else [0.0] * 3, vals)
        out += arm("vae", 100, "weighted", w, [0.80, 0.82, 0.81] if w == 0.1 else [0.0] * 3, vals)
    out += arm("vae", 100, "resampled", 0.1, [0.0] * 3, [0.5] * 3)
    out += arm("vae", 100, "resampled", 1.0, [0.83, 0.86, 0.86], [0.7] * 3)
    out += arm("baseline", 100, "generated", 0.1, [0.70, 0.71, 0.72])
    out += arm("baseline", 100, "resampled", 0.1, [0.72, 0.71, 0.75])
    return out + arm("-", 100, "none", 0.0, [0.79, 0.80, 0.81])


def test_primary_comparisons_at_each_arms_selected_weight_with_holm_across_all():
    rows = primary.primary_comparisons(_trials())
    assert [(r["generator"], r["comparison"]) for r in rows] == [
        ("vae", "resampled - generated"), ("vae", "weighted - generated"), ("vae", "resampled - subset"),
        ("baseline", "resampled - generated")]           # baseline has no weighted or subset arm
    res_gen, w_gen, res_sub, base = rows
    assert (res_gen["arm_weight"], res_gen["reference_weight"]) == (1.0, 0.1)
    d = np.array([0.83, 0.86, 0.86]) - [0.80, 0.82, 0.81]               # 0.03, 0.04, 0.05
    assert res_gen["diff_mean"] == pytest.approx(0.04) and res_gen["pairs"] == 3
    assert res_gen["p"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    assert w_gen["diff_mean"] == pytest.approx(0.0, abs=1e-15) and w_gen["p"] == 1.0
    d_sub = np.array([0.83, 0.86, 0.86]) - [0.81, 0.82, 0.80]           # 0.02, 0.04, 0.06
    assert res_sub["p"] == pytest.approx(stats.ttest_1samp(d_sub, 0.0).pvalue, rel=1e-9)
    assert [r["p_holm"] for r in rows] == pytest.approx(primary.holm([r["p"] for r in rows]).tolist())
    assert res_gen["p_holm"] == pytest.approx(min(1.0, 4 * res_gen["p"]))     # the smallest of m = 4
    assert res_gen["p"] < 0.05 < res_gen["p_holm"] and not any(r["reject"] for r in rows)   # t = 6.93, 2 df
    at_10 = primary.primary_comparisons(_trials(), alpha=0.1)
    assert [r["reject"] for r in at_10] == [True, False, False, False]
    text = primary.format_primary(at_10, alpha=0.1)
    assert "Holm-adjusted across the 4" in text and "exploratory" in text
    assert [line.count("**") for line in text.splitlines()[4:8]] == [2, 0, 0, 0]
