"""The domain feature extractor: DomainCNN and its fit loop, checkpoints and input checks."""
import numpy as np
import pytest
import torch

from raydgm.config import DomainClassifierConfig
from raydgm.data import load_dataset
from raydgm.models.domain import DomainCNN
from raydgm.training import extractors

# Small enough for ~0.5 s per fit on one thread; best epoch 4 of 6 with seed 0 (so the
# early-stopping restore is exercised), val accuracy about 0.97.
SMALL = {"channels": [16, 32], "feature_dim": 32, "epochs": 6, "batch_size": 32,
         "learning_rate": 3e-3, "patience": 2}


def _cfg(**changes):
    return DomainClassifierConfig.from_dict({**SMALL, **changes})


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds.split("train"), ds.split("val")


@pytest.fixture(scope="module")
def fitted(digits):
    (x, y), (vx, vy) = digits
    seen = []
    model, history = extractors.fit_domain_classifier(x, y, vx, vy, _cfg(), progress=False,
                                                 on_epoch=seen.append)
    return model, history, seen


def _accuracy(model, images, labels):
    with torch.no_grad():
        pred = model(torch.from_numpy(images)).argmax(dim=1).numpy()
    return float((pred == labels).mean())


def _tiny(n=24, shape=(1, 8, 8), k=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
            np.arange(n, dtype=np.int64) % k)


def test_learns_digits_and_keeps_the_best_epoch(fitted, digits):
    model, history, seen = fitted
    (_, _), (vx, vy) = digits
    assert seen == history and [r["epoch"] for r in history] == list(range(1, len(history) + 1))
    assert set(history[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    best = max(r["val_accuracy"] for r in history)
    assert best >= 0.9
    assert _accuracy(model, vx, vy) == pytest.approx(best, abs=1e-12)
    # early stopping: training ends `patience` epochs after the first best one, or at `epochs`
    first_best = next(r["epoch"] for r in history if r["val_accuracy"] == best)
    assert len(history) == min(SMALL["epochs"], first_best + SMALL["patience"])
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert not model.training


def test_without_validation_every_epoch_runs(digits):
    (x, y), _ = digits
    model, history = extractors.fit_domain_classifier(x[:300], y[:300], None, None,
                                                 _cfg(epochs=2, patience=1), progress=False)
    assert [set(r) for r in history] == [{"epoch", "train_loss", "train_accuracy"}] * 2
    assert 0.0 <= history[1]["train_accuracy"] <= 1.0


def test_same_seed_same_weights_other_seed_other_weights(digits):
    (x, y), (vx, vy) = digits
    x, y = x[:256], y[:256]
    fit = lambda seed: extractors.fit_domain_classifier(x, y, vx, vy, _cfg(epochs=2, seed=seed),
                                                   progress=False)[0].state_dict()
    a, b, c = fit(0), fit(0), fit(1)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_features_logits_and_batch_invariance(fitted, digits):
    model, _, _ = fitted
    x = torch.from_numpy(digits[1][0][:20])
    with torch.no_grad():
        feats, logits = model.features(x), model(x)
        both = model.features_and_logits(x)
        one_by_one = torch.cat([model.features(x[i:i + 1]) for i in range(len(x))])
        as_float = model.features(x.float())
    assert model.feature_dim == 32 and feats.shape == (20, 32) and logits.shape == (20, 10)
    assert model.num_classes == 10 and model.image_shape == (1, 8, 8)
    assert (feats >= 0).all() and (feats > 0).any()
    assert torch.equal(both[0], feats) and torch.equal(both[1], logits)
    torch.testing.assert_close(one_by_one, feats, rtol=0, atol=1e-5)
    torch.testing.assert_close(as_float, feats, rtol=0, atol=0)   # uint8 and float levels agree


def test_save_load_round_trip(fitted, digits, tmp_path):
    model, _, _ = fitted
    path = tmp_path / "domain.pt"
    extractors.save_domain_classifier(model, path)
    state = torch.load(path, weights_only=True)
    assert state["kind"] == "domain_cnn" and state["image_shape"] == [1, 8, 8]
    loaded = extractors.load_domain_classifier(path)
    x = torch.from_numpy(digits[1][0])
    with torch.no_grad():
        assert torch.equal(loaded.features(x), model.features(x))
        assert torch.equal(loaded(x), model(x))
    assert (loaded.channels, loaded.feature_dim, loaded.num_classes) == ((16, 32), 32, 10)


def test_load_refuses_corrupt_missing_and_foreign_files(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt.pt"):
        extractors.load_domain_classifier(corrupt)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        extractors.load_domain_classifier(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"kind": "vae", "image_shape": [1, 8, 8], "model_kwargs": {}, "state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt.*domain_cnn"):
        extractors.load_domain_classifier(foreign)


@pytest.mark.parametrize("change, match", [
    (lambda x, y: (x, y[:-1]), "length mismatch"),
    (lambda x, y: (x, np.zeros_like(y)), "single class"),
    (lambda x, y: (x.astype(np.float32), y), "uint8"),
    (lambda x, y: (x, y.astype(np.float64)), "integer"),
    (lambda x, y: (x, y - 1), ">= 0"),
    (lambda x, y: (x[:, 0], y), "shape"),
])
def test_bad_training_input_raises(change, match):
    x, y = change(*_tiny())
    with pytest.raises(ValueError, match=match):
        extractors.fit_domain_classifier(x, y, None, None, _cfg(epochs=1), progress=False)


def test_bad_validation_input_raises():
    x, y = _tiny()
    with pytest.raises(ValueError, match="validation labels must be in 0..2"):
        extractors.fit_domain_classifier(x, y, x, y + 1, _cfg(epochs=1), progress=False)
    with pytest.raises(ValueError, match="together"):
        extractors.fit_domain_classifier(x, y, x, None, _cfg(epochs=1), progress=False)


def test_nan_loss_names_the_learning_rate():
    x, y = _tiny()
    with pytest.raises(FloatingPointError, match="learning_rate"):
        extractors.fit_domain_classifier(x, y, None, None, _cfg(epochs=3, learning_rate=1e30),
                                    progress=False)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 32, 32)])
def test_32x32_inputs(shape):
    x, y = _tiny(n=16, shape=shape, k=2)
    model, history = extractors.fit_domain_classifier(x, y, x, y, _cfg(epochs=1, channels=[4, 8],
                                                                   feature_dim=8), progress=False)
    assert len(history) == 1 and model.image_shape == shape
    with torch.no_grad():
        feats, logits = model.features_and_logits(torch.from_numpy(x))
    assert feats.shape == (16, 8) and logits.shape == (16, 2)
    assert model.conv(torch.zeros(1, *shape)).shape == (1, 8 * 8 * 8)   # 32 -> 16 -> 8


def test_pooling_stops_at_2x2():
    model = DomainCNN((1, 8, 8), num_classes=3, channels=(2, 3, 4), feature_dim=5)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.conv) == 2   # 8 -> 4 -> 2, no 1
    assert model.conv(torch.zeros(1, 1, 8, 8)).shape == (1, 4 * 2 * 2)
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\)"):
        model(torch.zeros(2, 1, 4, 4))
