"""The label-free ``contrastive`` feature extractor: the NT-Xent loss against its definition,
the random distortions' geometry, the fit loop (seeded, early stopping), the checkpoint, and
the cached stage and feature tables. Data: sklearn's 8x8 digits."""
import math

import numpy as np
import pytest
import torch

from raydgm.config import ContrastiveConfig, DataConfig, FeaturesConfig
from raydgm.data import load_dataset
from raydgm.models.contrastive import ContrastiveEncoder
from raydgm.pipeline import features
from raydgm.pipeline.stages import Featurizer, read_features, train_extractor
from raydgm.pipeline.store import ArtifactStore
from raydgm.training import extractors
from raydgm.training.contrastive import nt_xent, random_affine

SMALL = ContrastiveConfig(channels=(8, 16), feature_dim=16, projection_dim=16, epochs=4, batch_size=64, patience=2)


def nt_xent_by_definition(z: torch.Tensor, t: float) -> float:
    """The loss written out: row i's partner is i + B (mod 2B), every other row a negative."""
    z = [v / v.norm() for v in z.double()]
    n, total = len(z), 0.0
    for i in range(n):
        partner = (i + n // 2) % n
        denominator = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        total -= math.log(math.exp(float(z[i] @ z[partner]) / t) / denominator)
    return total / n


def test_nt_xent_by_hand_and_by_its_definition():
    same = torch.tensor([[1.0, 2.0], [2.0, 4.0]])          # one image, two parallel views: the only other row
    assert float(nt_xent(same, 0.5)) == pytest.approx(0.0, abs=1e-7)
    e1, e2 = torch.eye(2)
    z = torch.stack([e1, e2, e1, e2])                       # partners equal, others orthogonal
    t = 0.5
    want = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2.0))
    assert float(nt_xent(z, t)) == pytest.approx(want, rel=1e-6)
    z = torch.randn(10, 7, generator=torch.Generator().manual_seed(0))
    assert float(nt_xent(z, 0.3)) == pytest.approx(nt_xent_by_definition(z, 0.3), rel=1e-5)
    with pytest.raises(ValueError, match="2B, D"):
        nt_xent(torch.zeros(3, 4), 0.5)


def centroid(images: torch.Tensor) -> torch.Tensor:
    """(N, 2): each image's mass centre (row, column) in pixels."""
    h, w = images.shape[-2:]
    mass = images.sum(dim=(1, 2, 3))
    rows = (images.sum(dim=(1, 3)) * torch.arange(h)).sum(dim=1) / mass
    cols = (images.sum(dim=(1, 2)) * torch.arange(w)).sum(dim=1) / mass
    return torch.stack([rows, cols], dim=1)


def test_random_affine_geometry():
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 255.0                            # a centred square
    g = lambda: torch.Generator().manual_seed(0)            # noqa: E731
    still = random_affine(x, g(), max_rotation=0.0, max_scale=0.0, max_shift=0.0)
    torch.testing.assert_close(still, x, rtol=0, atol=1e-3)  # the identity
    turned = random_affine(x, g(), max_rotation=30.0, max_scale=0.2, max_shift=0.0)
    centre = torch.tensor([15.5, 15.5])
    assert (centroid(turned) - centre).abs().max() < 0.05   # rotation and scale keep the centre
    assert (turned - x).abs().amax(dim=(1, 2, 3)).min() > 10  # and change every image
    moved = random_affine(x, g(), max_rotation=0.0, max_scale=0.0, max_shift=0.1)
    offset = (centroid(moved) - centre).abs()
    assert offset.max() <= 0.1 * 32 + 0.05 and offset.max() > 0.5 * 0.1 * 32   # up to 3.2 px, and used
    torch.testing.assert_close(random_affine(x, g(), 15.0, 0.1, 0.1), random_affine(x, g(), 15.0, 0.1, 0.1))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def fitted(digits):
    seen = []
    model, history = extractors.fit_contrastive(digits.split("train")[0], digits.split("val")[0], SMALL,
                                                progress=False, on_epoch=seen.append)
    return model, history, seen


def test_fit_lowers_the_loss_early_stops_and_is_seeded(fitted, digits):
    model, history, seen = fitted
    assert seen == history and set(history[0]) == {"epoch", "train_loss", "val_loss"}
    assert history[-1]["train_loss"] < history[0]["train_loss"] and not model.training
    # chance: every other view equally similar, log(2B - 1) for the full batches of 2 x 64
    assert history[0]["train_loss"] < math.log(2 * SMALL.batch_size - 1)
    best = min(r["val_loss"] for r in history)
    first_best = next(r["epoch"] for r in history if r["val_loss"] == best)
    assert len(history) == min(SMALL.epochs, first_best + SMALL.patience)
    again, history_again = extractors.fit_contrastive(digits.split("train")[0], digits.split("val")[0], SMALL,
                                                      progress=False)
    assert history_again == history                          # val distortions drawn alike: same losses
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_features_checkpoint_and_extractor(fitted, digits, tmp_path):
    model, _, _ = fitted
    images = digits.split("test")[0][:50]
    x = torch.from_numpy(images)
    with torch.no_grad():
        feats = model.features(x)
        one_by_one = torch.cat([model.features(x[i:i + 1]) for i in range(len(x))])
    assert feats.shape == (50, 16) and feats.std() > 0
    torch.testing.assert_close(one_by_one, feats, rtol=0, atol=1e-5)   # eval mode: rows independent
    extractors.save_network(model, tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["kind"] == "contrastive_encoder" and state["image_shape"] == [1, 8, 8]
    assert state["model_kwargs"] == {"channels": [8, 16], "feature_dim": 16, "projection_dim": 16}
    run = features.build_extractor("contrastive", contrastive_checkpoint=tmp_path / "c.pt", batch_size=7)
    f, logits = run(images)
    assert logits is None and run.num_classes is None
    np.testing.assert_allclose(f, feats.numpy(), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="needs a trained contrastive encoder checkpoint"):
        features.build_extractor("contrastive")
    with pytest.raises(ValueError, match="c.pt.*conv_autoencoder"):
        extractors.load_network(tmp_path / "c.pt", "autoencoder")


def test_bad_input_raises_before_training(digits):
    x = digits.split("train")[0][:64]
    with pytest.raises(ValueError, match="uint8"):
        extractors.fit_contrastive(x.astype(np.float32), None, SMALL, progress=False)
    with pytest.raises(ValueError, match="validation images have shape"):
        extractors.fit_contrastive(x, x[:, :, :4], SMALL, progress=False)
    with pytest.raises(ValueError, match="max_shift"):
        ContrastiveConfig(max_shift=0.7)
    with pytest.raises(ValueError, match="image_shape"):
        ContrastiveEncoder((1, 0, 8))
    assert "contrastive" in features.EXTRACTORS and FeaturesConfig().contrastive == ContrastiveConfig()


def test_featurizer_real_train_end_to_end(digits, tmp_path):
    cfg, store = DataConfig(name="digits"), ArtifactStore(tmp_path)
    feat = Featurizer(cfg, FeaturesConfig(contrastive=SMALL.replace(epochs=2)), store, digits, progress=False)
    art = feat.real("contrastive", "train")
    ids, f, logits = read_features(art)
    inputs, kwargs = feat.identity("contrastive")
    model = extractors.load_network(kwargs["contrastive_checkpoint"], "contrastive")
    images = digits.split("train")[0]
    with torch.no_grad():
        want = model.features(torch.from_numpy(images)).numpy()
    np.testing.assert_array_equal(ids, np.arange(len(images)))
    assert f.shape == (len(images), 16) and logits is None and set(inputs) == {"contrastive"}
    np.testing.assert_allclose(f, want, rtol=1e-5, atol=1e-5)
    again = train_extractor(cfg, SMALL.replace(epochs=2), store, digits, progress=False)
    assert again.reused and again.stage == "contrastive" and again.rows["epochs"] == 2
