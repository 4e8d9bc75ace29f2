"""Semi-supervised trainer and its ResNet: shapes, seeding, the fixed labeled subset, the
semantic loss's effect, importance weighting, resume and input checks (sklearn digits, 8x8)."""
import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from raydgm import resample
from raydgm.config import SSLConfig
from raydgm.data import labeled_subset, load_dataset
from raydgm.models.resnet import ResNet
from raydgm.semantic_loss import exactly_one
from raydgm.training import ssl


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("digits")
    (xt, yt), (xv, yv), (xs, ys) = ds.split("train"), ds.split("val"), ds.split("test")
    gen = xt[::-1][:300].copy()   # stand-in "generated" images: any uint8 of the right shape
    return ssl.SSLData(xt, yt, xv, yv, xs, ys, ds.num_classes, generated=gen,
                       log_weights=np.linspace(-2.0, 2.0, len(gen)), sir_method="systematic", sir_size=300)


def _cfg(**changes):
    base = {"model": {"depth": 8, "width": 4}, "labeled_size": 50, "epochs": 2,
            "steps_per_epoch": 4, "batch_size": 16, "learning_rate": 3e-3, "eval_batch_size": 128}
    return SSLConfig.from_dict({**base, **changes})


def _replace(data, **changes):
    return dataclasses.replace(data, **changes)   # runs SSLData's checks again


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- ResNet

@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 32, 32), (3, 32, 32)])
def test_resnet_logits_shape_and_input_scale(shape):
    model = ResNet(shape, num_classes=10, depth=8, width=4).eval()
    x = torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    logits = model(x)
    assert logits.shape == (3, 10) and logits.dtype == torch.float32
    assert torch.equal(logits, model(x.float()))   # uint8 and float levels are the same input
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.zeros(3, shape[0], shape[1] + 1, shape[2]))


def test_resnet_stages_halve_8x8_digits_to_2x2_and_depth_counts_layers():
    model = ResNet((1, 8, 8), 10, depth=14, width=4)
    sizes = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    model(torch.zeros(2, 1, 8, 8))
    assert sizes == [(4, 8, 8)] * 2 + [(8, 4, 4)] * 2 + [(16, 2, 2)] * 2   # n = (14 - 2) / 6 = 2
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 14   # 3x3 convs + the linear layer (projections not counted)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 9}, "6n\\+2"), ({"depth": 2}, "6n\\+2"), ({"width": 0}, "width"),
    ({"num_classes": 1}, "num_classes"),
    ({"image_shape": (8, 8)}, "image_shape"),
])
def test_resnet_refuses_bad_arguments(kwargs, match):
    args = {"image_shape": (1, 8, 8), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        ResNet(**args)


def test_same_seed_same_initial_weights_and_global_rng_untouched():
    before = torch.get_rng_state()
    a = ssl.build_model(_cfg(seed=3), (1, 8, 8), 10)
    b = ssl.build_model(_cfg(seed=3), (1, 8, 8), 10)
    c = ssl.build_model(_cfg(seed=4), (1, 8, 8), 10)
    assert _same_weights(a, b) and not _same_weights(a, c)
    assert torch.equal(torch.get_rng_state(), before)


# --------------------------------------------------------------------------- pieces

def test_augment_crops_and_flips_windows_of_the_padded_image():
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert ssl.augment(images, "none", np.random.default_rng(0)) is images
    out = ssl.augment(images, "crop_flip", np.random.default_rng(0))
    assert torch.equal(out, ssl.augment(images, "crop_flip", np.random.default_rng(0)))
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))   # 8x8: pad 1, offsets 0..2
    flips, shifts = 0, 0
    for img, pad in zip(out, padded):
        windows = {(dy, dx): pad[:, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)}
        hits = [(dy, dx, f) for (dy, dx), w in windows.items() for f in (False, True)
                if torch.equal(img, w.flip(-1) if f else w)]
        assert hits, "every output is a (possibly mirrored) window of the padded input"
        flips += all(f for _, _, f in hits)
        shifts += all((dy, dx) != (1, 1) for dy, dx, _ in hits)
    assert 16 < flips < 48 and shifts > 32   # about half mirrored, 8/9 shifted
    crop = ssl.augment(images, "crop", np.random.default_rng(0))
    assert crop.shape == images.shape and crop.dtype == torch.uint8


def test_weighted_semantic_is_the_self_normalized_weighted_mean():
    logits = torch.tensor([[0.0, 0.0], [4.0, -4.0], [1.0, 2.0]])
    L = exactly_one(logits)
    assert L[0].item() == pytest.approx(math.log(2.0))   # K = 2, z = 0
    log_w = torch.log(torch.tensor([3.0, 1.0, 4.0], dtype=torch.float64))   # as SSLData stores them
    expected = 3 / 8 * L[0] + 1 / 8 * L[1] + 4 / 8 * L[2]
    assert ssl.weighted_semantic(logits, log_w).item() == pytest.approx(expected.item(), rel=1e-6)
    assert ssl.weighted_semantic(logits, log_w + 700.0).item() == pytest.approx(expected.item(), rel=1e-6)
    peaked = torch.tensor([0.0, 60.0, 0.0])   # weights e^-60 / (1 + 2 e^-60): the middle row alone
    assert ssl.weighted_semantic(logits, peaked).item() == pytest.approx(L[1].item(), rel=1e-12, abs=1e-20)
    assert ssl.weighted_semantic(logits, torch.zeros(3)).item() == pytest.approx(L.mean().item(), rel=1e-7)
    with pytest.raises(ValueError, match="log_weights must have shape"):
        ssl.weighted_semantic(logits, torch.zeros(2))


def test_pool_normalized_weighting_divides_by_the_pools_mean_weight():
    """Pool weights (3, 1, 4), mean 8/3: a batch of rows 0 and 2 gives (1/2)(9/8 L0 + 12/8 L2)."""
    logits = torch.tensor([[0.0, 0.0], [4.0, -4.0], [1.0, 2.0]])
    L = exactly_one(logits)
    pool = np.log([3.0, 1.0, 4.0])
    log_mean = ssl.log_mean_weight(pool)
    assert log_mean == pytest.approx(math.log(8 / 3), rel=1e-12)
    assert ssl.log_mean_weight(pool + 800.0) == pytest.approx(math.log(8 / 3) + 800.0, rel=1e-12)
    rows = torch.tensor([0, 2])
    got = ssl.weighted_semantic(logits[rows], torch.from_numpy(pool)[rows], log_mean).item()
    assert got == pytest.approx(0.5 * (9 / 8 * L[0] + 12 / 8 * L[2]).item(), rel=1e-6)


def test_batch_normalization_is_biased_and_pool_normalization_is_not_by_enumeration():
    """A pool of 2 rows with weights (1, 3) and batches of 2 drawn uniformly with replacement
    (4 equally likely batches). Pool value: (1 L0 + 3 L1) / 4. Self-normalized per batch:
    E = (L0 + 2 (L0 + 3 L1) / 4 + L1) / 4 = 0.375 L0 + 0.625 L1 (biased by 0.125 (L0 - L1));
    normalized by the pool's mean weight 2: E = exactly the pool value."""
    logits = torch.tensor([[3.0, -3.0, -3.0], [0.5, 0.4, 0.3]])     # L0 small, L1 large
    L = exactly_one(logits).double()
    log_w = torch.log(torch.tensor([1.0, 3.0], dtype=torch.float64))
    batches = [torch.tensor(b) for b in ([0, 0], [0, 1], [1, 0], [1, 1])]
    est = {norm: float(np.mean([ssl.weighted_semantic(logits[b], log_w[b], norm).item() for b in batches]))
           for norm in (None, math.log(2.0))}
    pool_value = float((L[0] + 3 * L[1]) / 4)
    assert est[math.log(2.0)] == pytest.approx(pool_value, rel=1e-6)
    assert est[None] == pytest.approx(float(0.375 * L[0] + 0.625 * L[1]), rel=1e-6)
    assert abs(est[None] - pool_value) == pytest.approx(float(0.125 * (L[1] - L[0])), rel=1e-5)
    assert float(L[1] - L[0]) > 1.0      # the bias is not hidden in the tolerance


def test_pool_normalization_changes_the_weighted_run_and_batch_is_the_default(data):
    assert SSLConfig().weight_normalization == "batch"
    base = dict(unlabeled="weighted", semantic_weight=2.0, epochs=1, steps_per_epoch=3)
    batch = ssl.train(_cfg(**base), data)["history"][0]
    pool = ssl.train(_cfg(weight_normalization="pool", **base), data)["history"][0]
    assert batch["labeled_digest"] == pool["labeled_digest"] and batch["semantic_loss"] != pool["semantic_loss"]


def test_recompute_batch_norm_sets_the_images_mean_and_variance_and_restores_momentum():
    model = ssl.build_model(_cfg(), (1, 8, 8), 10)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h = model.stem[0](images.float() / 127.5 - 1.0)            # what the first BatchNorm sees
    bn = model.stem[1]
    for batch_size in (40, 20):   # one pass, or two equal passes: their means average to the mean
        ssl.recompute_batch_norm(model, images, batch_size)
        assert torch.allclose(bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5)
        assert bn.momentum == 0.1 and not model.training
    halves = [h[:20].var(dim=(0, 2, 3), unbiased=True), h[20:].var(dim=(0, 2, 3), unbiased=True)]
    assert torch.allclose(bn.running_var, (halves[0] + halves[1]) / 2, rtol=1e-4)
    ssl.recompute_batch_norm(model, images, 40)
    assert torch.allclose(bn.running_var, h.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4)


def test_best_epoch_is_the_first_maximum_of_val_accuracy():
    history = []
    for epoch, (val, test) in enumerate([(0.5, 0.1), (0.7, 0.2), (0.7, 0.9), (0.6, 0.8)], start=1):
        row = {"epoch": epoch, "val_accuracy": val, "test_accuracy": test}
        history.append({**row, **ssl._best(row, history)})
    assert [r["best_epoch"] for r in history] == [1, 2, 2, 2]
    assert [r["test_accuracy_at_best"] for r in history] == [0.1, 0.2, 0.2, 0.2]


# --------------------------------------------------------------------------- training

def test_learning_rate_and_semantic_weight_are_pure_functions_of_the_global_step():
    cfg = _cfg(lr_schedule="cosine", learning_rate=0.2, semantic_weight=0.5, semantic_rampup_epochs=2.0)
    lr = [ssl.learning_rate_at(cfg, step, 100) for step in (0, 25, 50, 100, 130)]
    assert lr == pytest.approx([0.2, 0.2 * (1 + math.sqrt(0.5)) / 2, 0.1, 0.0, 0.0], abs=1e-15)
    assert ssl.learning_rate_at(cfg.replace(lr_schedule="constant"), 77, 100) == 0.2
    # ramp-up over 2 epochs of 10 steps: t = step / 20, weight 0.5 exp(-5 (1 - t)^2)
    w = [ssl.semantic_weight_at(cfg, step, 10) for step in (0, 10, 15, 20, 999)]
    assert w == pytest.approx([0.5 * math.exp(-5), 0.5 * math.exp(-5 / 4), 0.5 * math.exp(-5 / 16), 0.5, 0.5])
    assert ssl.semantic_weight_at(cfg.replace(semantic_rampup_epochs=0.0), 0, 10) == 0.5



def test_rows_report_test_accuracy_at_the_best_val_epoch(data):
    result = ssl.train(_cfg(epochs=4, unlabeled="real", semantic_weight=0.5), data)
    rows = result["history"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for i, row in enumerate(rows):
        vals = [r["val_accuracy"] for r in rows[:i + 1]]
        best = int(np.argmax(vals))   # first maximum
        assert row["best_epoch"] == best + 1 and row["best_val_accuracy"] == vals[best]
        assert row["test_accuracy_at_best"] == rows[best]["test_accuracy"]
        assert row["test_ece_at_best"] == rows[best]["test_ece"] and row["val_nll_at_best"] == rows[best]["val_nll"]
        assert 0 <= row["test_ece"] <= 1 and row["test_nll"] > 0 and 0 <= row["test_brier"] <= 2
        assert row["train_loss"] == pytest.approx(row["supervised_loss"] + 0.5 * row["semantic_loss"])
        assert all(isinstance(v, (int, float)) for v in row.values())
    last = rows[-1]
    assert (result["best_epoch"], result["val_accuracy"], result["test_accuracy"]) == (
        last["best_epoch"], last["best_val_accuracy"], last["test_accuracy_at_best"])
    n_val = len(data.val_labels)
    assert round(last["val_accuracy"] * n_val) == pytest.approx(last["val_accuracy"] * n_val)


def test_labeled_subset_is_fixed_for_the_run_and_set_by_seed(data):
    rows = []
    cfg = _cfg(epochs=3, steps_per_epoch=4, batch_size=16, labeled_size=40)   # 64 draws >= 40 labels
    result = ssl.train(cfg, data, on_epoch=lambda row, checkpoint: rows.append(row))
    expected = labeled_subset(data.train_labels, 40, 0, 10)
    assert np.array_equal(result["labeled_indices"], expected)
    assert [r["labeled_seen"] for r in rows] == [40, 40, 40]
    assert {r["labeled_digest"] for r in rows} == {ssl.index_digest(expected)}
    other = ssl.train(cfg.replace(seed=1, epochs=1), data)
    assert other["history"][0]["labeled_digest"] != ssl.index_digest(expected)
    assert not np.array_equal(other["labeled_indices"], expected)


def test_real_unlabeled_pool_is_the_train_split_minus_the_labeled_subset(data):
    cfg = _cfg(unlabeled="real", semantic_weight=1.0)
    labeled = ssl.validate(cfg, data)
    t = ssl._tensors(cfg, data, labeled, torch.device("cpu"))
    assert np.intersect1d(t.choices, labeled).size == 0
    assert len(t.choices) + len(labeled) == len(data.train_labels)
    t = ssl._tensors(cfg.replace(unlabeled="resampled"), data, labeled, torch.device("cpu"))
    assert len(t.choices) == data.sir_size and len(t.pool) == len(data.generated)


def _choices(cfg, data):
    return ssl._tensors(cfg, data, ssl.validate(cfg, data), torch.device("cpu")).choices


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_subset_has_as_many_distinct_images_as_the_same_seeds_sir_set(data, seed):
    """The diversity-matched control: a uniform subset of the pool, without repeats, as large as
    the seed's resampled set has distinct images (300 systematic draws on linspace(-2, 2) log w
    keep far fewer than 300)."""
    sir = _choices(_cfg(unlabeled="resampled", semantic_weight=1.0, seed=seed), data)
    subset = _choices(_cfg(unlabeled="subset", semantic_weight=1.0, seed=seed), data)
    distinct = np.unique(sir).size
    assert len(sir) == 300 and 100 < distinct < 250
    assert len(subset) == np.unique(subset).size == distinct
    assert subset.min() >= 0 and subset.max() < len(data.generated)
    assert not np.array_equal(subset, np.unique(sir))          # uniform, not the SIR set's rows
    low, high = (np.arange(300) < 150), (np.arange(300) >= 150)
    assert abs(low[subset].sum() - high[subset].sum()) < 0.3 * distinct    # uniform over the pool
    assert high[sir].sum() > 2 * low[sir].sum()                           # SIR favours high weights


def test_each_seed_draws_its_own_sir_set_and_the_same_seed_the_same_bytes(data):
    """The SIR set is drawn per trial seed from the SIR stream (seed, 3), not shared by seeds."""
    cfg = _cfg(unlabeled="resampled", semantic_weight=1.0)
    draws = {s: _choices(cfg.replace(seed=s), data) for s in (0, 1, 2)}
    assert draws[0].tobytes() == _choices(cfg.replace(seed=0), data).tobytes()
    assert len({d.tobytes() for d in draws.values()}) == 3
    expected = resample.resample(data.log_weights, 300, "systematic", np.random.default_rng([2, 3]))
    assert np.array_equal(draws[2], expected)
    peaked = _replace(data, log_weights=np.r_[np.zeros(7), 60.0, np.zeros(292)])
    assert set(_choices(cfg, peaked)) == {7}
    subsets = {s: _choices(cfg.replace(seed=s, unlabeled="subset"), data) for s in (0, 1)}
    assert subsets[0].tobytes() != subsets[1].tobytes()
    assert subsets[0].tobytes() == _choices(cfg.replace(seed=0, unlabeled="subset"), data).tobytes()


def test_semantic_loss_makes_held_out_predictions_exactly_one(data):
    """Few labels + real unlabeled images: with the semantic loss the sigmoid outputs on unseen
    test images put far more mass on "exactly one class is true" than without it."""
    mass = {}
    for weight in (0.0, 1.0):
        cfg = _cfg(labeled_size=20, unlabeled="real", semantic_weight=weight, epochs=2, steps_per_epoch=20)
        model = ssl.train(cfg, data)["model"]
        with torch.no_grad():
            logits = model(torch.from_numpy(data.test_images))
        mass[weight] = torch.exp(-exactly_one(logits)).mean().item()   # mean P(exactly one)
    assert mass[1.0] > 0.1 and mass[1.0] > 5 * mass[0.0], mass


def test_weighted_with_equal_log_weights_is_the_generated_run(data):
    equal = _replace(data, log_weights=np.full(len(data.generated), 3.7))
    base = dict(semantic_weight=2.0, augment="crop_flip", unlabeled_batch_size=16)
    plain = ssl.train(_cfg(unlabeled="generated", **base), equal)
    weighted = ssl.train(_cfg(unlabeled="weighted", **base), equal)
    assert plain["history"] == weighted["history"]
    assert _same_weights(plain["model"], weighted["model"])
    skewed = ssl.train(_cfg(unlabeled="weighted", **base), data)   # linspace log-weights differ
    assert skewed["history"][0]["semantic_loss"] != plain["history"][0]["semantic_loss"]


def test_semantic_arm_val_accuracy_does_not_collapse_after_a_good_epoch():
    """Baseline (PCA + GMM) samples as the unlabeled pool, weight 0.5, Adam at lr 0.1: the weights
    move far within the running statistics' ~10-step moving average. Evaluated with those
    statistics (before ``recompute_batch_norm``) each of these seeds fell 0.06-0.14 below its
    best val accuracy in a later epoch; with recomputed statistics none falls more than 0.05."""
    from raydgm.training.generators import fit_baseline
    ds = load_dataset("digits")
    (xt, yt), (xv, yv), (xs, ys) = ds.split("train"), ds.split("val"), ds.split("test")
    gen = fit_baseline(xt, pca_dim=8, n_components=4, seed=0).sample(600, torch.Generator().manual_seed(0))
    data = ssl.SSLData(xt, yt, xv, yv, xs, ys, ds.num_classes, generated=gen.numpy())
    for seed in (0, 1, 3):
        cfg = SSLConfig.from_dict({"model": {"depth": 8, "width": 8}, "labeled_size": 100, "epochs": 4,
                                   "steps_per_epoch": 20, "batch_size": 32, "learning_rate": 0.1,
                                   "eval_batch_size": 400, "unlabeled": "generated", "semantic_weight": 0.5,
                                   "seed": seed})
        val = [r["val_accuracy"] for r in ssl.train(cfg, data)["history"]]
        assert all(val[i] >= max(val[:i]) - 0.05 for i in range(1, len(val))), (seed, val)
        assert max(val) > 0.6, (seed, val)   # it learned: chance is 0.1


@pytest.mark.parametrize("unlabeled, schedules", [
    ("weighted", {}), ("real", {}), ("generated", {"lr_schedule": "cosine", "semantic_rampup_epochs": 1.5}),
])
def test_resume_from_a_saved_checkpoint_matches_the_uninterrupted_run(data, unlabeled, schedules):
    cfg = _cfg(unlabeled=unlabeled, semantic_weight=0.5, augment="crop_flip", **schedules)
    saved = {}

    def keep(row, checkpoint):
        buf = io.BytesIO()
        torch.save(checkpoint(), buf)
        saved[row["epoch"]] = buf.getvalue()

    full = ssl.train(cfg, data, on_epoch=keep)
    state = torch.load(io.BytesIO(saved[1]), weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    resumed = ssl.train(cfg, data, state=state)
    assert resumed["history"] == full["history"]
    assert _same_weights(resumed["model"], full["model"])
    done = ssl.train(cfg, data, state=torch.load(io.BytesIO(saved[2]), weights_only=True))
    assert done["history"] == full["history"]   # nothing left to train
    with pytest.raises(ValueError, match="another SSL config"):
        ssl.train(cfg.replace(seed=5), data, state=state)
    if schedules:   # a cosine schedule spans cfg.epochs: more epochs would change every step's lr
        with pytest.raises(ValueError, match="another SSL config"):
            ssl.train(cfg.replace(epochs=3), data, state=state)


def _plans(cfg, data, epoch):
    t = ssl._tensors(cfg, data, ssl.validate(cfg, data), torch.device("cpu"))
    return ssl.epoch_plans(cfg, t, epoch)


def test_arms_of_a_seed_see_the_same_labeled_batches_pixel_for_pixel(data):
    """The labeled stream (seed, 1, epoch) is the arms' shared one: same indices, same crops and
    flips at every step, whatever the unlabeled source, its batch size or the semantic weight."""
    base = dict(augment="crop_flip", steps_per_epoch=6, batch_size=16, seed=3)
    arms = [_cfg(**base), _cfg(unlabeled="generated", semantic_weight=0.5, **base),
            _cfg(unlabeled="resampled", semantic_weight=0.05, unlabeled_batch_size=8, **base),
            _cfg(unlabeled="real", semantic_weight=2.0, **base)]
    for epoch in (0, 2):
        (ref, none_unl), *others = [_plans(c, data, epoch) for c in arms]
        assert none_unl is None and ref.indices.shape == (6 * 16,)
        steps = [ref.images(s) for s in range(6)]
        assert any(not torch.equal(x, torch.from_numpy(data.train_images[ref.indices[ref.rows(s)]]))
                   for s, x in enumerate(steps))   # the crops are real: not the raw images
        for lab, unl in others:
            assert np.array_equal(lab.indices, ref.indices)
            assert all(torch.equal(lab.images(s), x) for s, x in enumerate(steps))
            assert unl is not None and len(unl.indices) == 6 * unl.batch
    gen, res = _plans(arms[1], data, 0)[1], _plans(arms[2], data, 0)[1]
    assert not np.array_equal(gen.indices[:8], res.indices[:8])   # unlabeled pools differ
    other_seed = _plans(arms[0].replace(seed=4), data, 0)[0]
    assert not np.array_equal(other_seed.indices, ref.indices)


def test_weight_zero_arm_trains_exactly_like_supervised_only(data):
    """With semantic weight 0 the unlabeled batch changes nothing (its BatchNorm statistics are
    the labeled batch's, running statistics untouched): same losses, same weights as ``none``."""
    base = dict(augment="crop", epochs=2, steps_per_epoch=5)
    none = ssl.train(_cfg(**base), data)
    zero = ssl.train(_cfg(unlabeled="generated", semantic_weight=0.0, **base), data)
    for a, b in zip(none["history"], zero["history"]):
        assert a["supervised_loss"] == pytest.approx(b["supervised_loss"], rel=1e-5)
        assert (a["labeled_digest"], a["train_accuracy"], a["val_accuracy"]) == (
            b["labeled_digest"], b["train_accuracy"], b["val_accuracy"])
    sa, sb = none["model"].state_dict(), zero["model"].state_dict()
    assert all(torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-4, atol=1e-5) for k in sa)


def test_test_predictions_are_the_best_epochs_argmax_and_survive_resume(data):
    cfg = _cfg(epochs=3, unlabeled="real", semantic_weight=0.5)
    states = {}
    result = ssl.train(cfg, data, on_epoch=lambda row, checkpoint: states.update({row["epoch"]: checkpoint()}))
    pred = result["test_predictions"]
    assert pred.dtype == np.int8 and pred.shape == data.test_labels.shape
    assert np.mean(pred == data.test_labels) == result["test_accuracy"]
    best = states[result["best_epoch"]]        # the model as it was at the best epoch
    model = ssl.build_model(cfg, data.test_images.shape[1:], 10)
    model.load_state_dict(best["model"])
    expected = ssl.predict(model, torch.from_numpy(data.test_images), 7).numpy()
    assert np.array_equal(pred, expected) and np.array_equal(states[3]["test_predictions"].numpy(), pred)
    assert all(s["test_predictions"].dtype == torch.int8 for s in states.values())
    for split, (images, labels) in {"val": (data.val_images, data.val_labels),
                                    "test": (data.test_images, data.test_labels)}.items():
        _, again = ssl.evaluate(model, torch.from_numpy(images), torch.from_numpy(labels), 7)
        got = result["calibration"][split]
        assert got["curve"]["bin"] == again["curve"]["bin"] and got["curve"]["count"] == again["curve"]["count"]
        assert {k: got[k] for k in ("accuracy", "ece", "nll", "brier")} == pytest.approx(
            {k: again[k] for k in ("accuracy", "ece", "nll", "brier")}, rel=1e-5)
        assert got["ece"] == result["history"][-1][f"{split}_ece_at_best"]
        assert sum(got["curve"]["count"]) == len(labels) and got["n_bins"] == 15
    assert result["calibration"]["test"]["accuracy"] == result["test_accuracy"]
    buf = io.BytesIO()
    torch.save(states[1], buf)
    resumed = ssl.train(cfg, data, state=torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert np.array_equal(resumed["test_predictions"], pred)
    assert resumed["calibration"] == result["calibration"]


# --------------------------------------------------------------------------- input checks

@pytest.mark.parametrize("changes, match", [
    ({"labeled_size": 5000}, "labeled_size=5000.*larger than the data"),
    ({"labeled_size": 55}, "labeled_size=55.*not divisible"),
    ({"unlabeled": "none", "semantic_weight": 1.0}, "needs an unlabeled source"),
    ({"device": "cuda:7" if not torch.cuda.is_available() else "nonsense"}, "device="),
])
def test_validate_refuses_configs_that_do_not_fit_the_data(data, changes, match):
    with pytest.raises(ValueError, match=match):
        ssl.validate(_cfg(**changes), data)


@pytest.mark.parametrize("unlabeled, missing", [
    ("generated", "generated"), ("resampled", "log_weights"), ("subset", "log_weights"),
    ("weighted", "log_weights"),
])
def test_validate_refuses_a_missing_unlabeled_source(data, unlabeled, missing):
    fewer = _replace(data, **({"generated": None, "log_weights": None}
                              if missing == "generated" else {missing: None}))
    with pytest.raises(ValueError, match=f"unlabeled='{unlabeled}' needs SSLData.{missing}"):
        ssl.validate(_cfg(unlabeled=unlabeled, semantic_weight=1.0), fewer)
    with pytest.raises(ValueError, match="needs SSLData"):   # train checks before any compute
        ssl.train(_cfg(unlabeled=unlabeled, semantic_weight=1.0), fewer)


def test_validate_refuses_real_when_every_train_row_is_labeled(data):
    small = _replace(data, train_images=data.train_images[:20], train_labels=np.repeat(np.arange(10), 2))
    assert len(ssl.validate(_cfg(labeled_size=20), small)) == 20
    with pytest.raises(ValueError, match="outside the labeled subset"):
        ssl.validate(_cfg(labeled_size=20, unlabeled="real", semantic_weight=1.0), small)


@pytest.mark.parametrize("changes, match", [
    ({"log_weights": np.r_[np.nan, np.zeros(299)]}, "log_weights: 1 of 300 entries are NaN"),
    ({"log_weights": np.zeros(7)}, "log_weights has 7 .*entries for 300"),
    ({"generated": np.zeros((300, 1, 16, 16), np.uint8)}, "generated: image shape"),
    ({"generated": np.zeros((300, 1, 8, 8), np.float32)}, "generated: images must have dtype uint8"),
    ({"sir_method": "bogus"}, "sir_method 'bogus' is not one of"),
    ({"generated": None}, "log_weights is given without SSLData.generated"),
    ({"val_labels": np.full(180, 10)}, "val_labels must be in 0..9"),
    ({"test_labels": np.zeros(3, np.int64)}, "test_labels must be an integer array of shape"),
    ({"test_images": np.zeros((0, 1, 8, 8), np.uint8)}, "test_images"),
    ({"num_classes": 1}, "num_classes"),
    ({"sir_size": 0}, "sir_size must be an int >= 1"),
])
def test_ssl_data_names_the_bad_field(data, changes, match):
    with pytest.raises(ValueError, match=match):
        _replace(data, **changes)


def test_on_a_skewed_pool_pool_normalization_is_unbiased_and_batch_normalization_is_not():
    """A known-bias pool: 2,000 digits classes drawn with the ``skewed`` generator's linear mix
    pi_gen(y) ~ y + 1, true w = pi_data(y) / pi_gen(y) (0.54 to 5.7 here). Class y's logits give
    a fixed semantic loss L_y (0.44 for class 0 up to 1.18 for class 9, so L falls as w rises).
    The exact pool value sum w L / sum w against the mean of each estimator over 5,000 batches of
    32: measured (20,000 batches) the batch-normalized one is biased by +0.0088 (21 standard
    errors), the pool-normalized one by +0.0001 (0.2), with per-batch sd 0.058 and 0.054."""
    from raydgm.training.known_bias import class_mix
    labels = load_dataset("digits").split("train")[1]
    pi_data, pi_gen = np.bincount(labels, minlength=10) / len(labels), class_mix("linear", 10)
    rng = np.random.default_rng(0)
    y = rng.choice(10, size=2000, p=pi_gen)
    log_w = np.log(pi_data[y]) - np.log(pi_gen[y])
    table = torch.full((10, 10), -3.0)
    table[torch.arange(10), torch.arange(10)] = torch.linspace(6.0, -3.0, 10)    # confident on low classes
    L = exactly_one(table).double().numpy()
    w = np.exp(log_w)
    exact = float((w * L[y]).sum() / w.sum())
    logits, lw = table[torch.from_numpy(y)], torch.from_numpy(log_w)
    batches = torch.from_numpy(rng.integers(0, 2000, size=(5000, 32)))
    for norm, biased in ((None, True), (ssl.log_mean_weight(log_w), False)):
        est = np.array([ssl.weighted_semantic(logits[b], lw[b], norm).item() for b in batches])
        z = (est.mean() - exact) / (est.std() / math.sqrt(len(est)))
        assert (z > 6) if biased else (abs(z) < 4), (norm, z)
