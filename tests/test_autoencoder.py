"""The label-free ``autoencoder`` feature extractor: ConvAutoencoder, its fit loop, checkpoint,
cached stage and feature tables. The data are sklearn's 8x8 digits saved as an npz WITHOUT
labels (so the dataset's labels are all -1), as a user's unlabelled data would be."""
import numpy as np
import pytest
import torch

from raydgm.config import AutoencoderConfig, DataConfig, DomainClassifierConfig, FeaturesConfig
from raydgm.data import load_dataset
from raydgm.models.autoencoder import ConvAutoencoder
from raydgm.pipeline import features
from raydgm.pipeline.stages import Featurizer, load_data, read_features, train_extractor
from raydgm.pipeline.store import ArtifactStore
from raydgm.training import extractors

# Seed 0: 8 epochs, no early stop; test MSE 0.029 against the mean image's 0.074 (a few s on one thread).
SMALL = AutoencoderConfig(channels=(8, 16), feature_dim=16, epochs=8, batch_size=32,
                          learning_rate=5e-3, patience=2)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """(DataConfig, Dataset) of the digits' images alone: every label is -1."""
    path = tmp_path_factory.mktemp("data") / "digits_images.npz"
    np.savez(path, images=load_dataset("digits").images)
    cfg = DataConfig(name="npz", path=str(path))
    data = load_data(cfg)
    assert (data.labels == -1).all() and data.num_classes == 0
    return cfg, data


@pytest.fixture(scope="module")
def fitted(unlabelled):
    _, data = unlabelled
    seen = []
    model, history = extractors.fit_autoencoder(data.split("train")[0], data.split("val")[0], SMALL,
                                                progress=False, on_epoch=seen.append)
    return model, history, seen


def _mse(model, images):
    with torch.no_grad():
        return float(((model(torch.from_numpy(images)) - torch.from_numpy(images) / 255.0) ** 2).mean())


def test_trains_on_unlabelled_images_and_beats_the_mean_image(fitted, unlabelled):
    model, history, seen = fitted
    _, data = unlabelled
    train, test = data.split("train")[0] / 255.0, data.split("test")[0]
    baseline = float(((test / 255.0 - train.mean(axis=0)) ** 2).mean())   # the per-pixel mean image
    assert 0.05 < baseline < 0.09                                          # digits: 0.074
    assert _mse(model, test) < 0.5 * baseline                              # held-out images
    assert seen == history and set(history[0]) == {"epoch", "train_loss", "train_mse", "val_loss", "val_mse"}
    best = min(r["val_loss"] for r in history)
    first_best = next(r["epoch"] for r in history if r["val_loss"] == best)
    assert len(history) == min(SMALL.epochs, first_best + SMALL.patience)   # early stopping
    best_row = history[first_best - 1]
    assert _mse(model, data.split("val")[0]) == pytest.approx(best_row["val_mse"], rel=1e-5)  # best restored
    assert history[-1]["train_loss"] < history[0]["train_loss"] and not model.training


def test_fit_network_ignores_labels_for_the_autoencoder_and_the_domain_cnn_refuses_none(unlabelled):
    _, data = unlabelled
    train, val = data.split("train"), data.split("val")
    small = SMALL.replace(epochs=1)
    model, history = extractors.fit_network(small, train, val, progress=False)
    labelled = (train[0], np.arange(len(train[0])) % 10), (val[0], np.arange(len(val[0])) % 10)
    same, _ = extractors.fit_network(small, *labelled, progress=False)
    assert isinstance(model, ConvAutoencoder) and len(history) == 1
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    with pytest.raises(ValueError, match="unlabelled; use features=contrastive, autoencoder"):
        extractors.fit_network(DomainClassifierConfig(epochs=1), train, val, progress=False, where="npz")


def test_same_seed_same_weights_and_features_other_seed_other_weights(unlabelled):
    _, data = unlabelled
    x, xv = data.split("train")[0][:256], data.split("val")[0]
    fit = lambda seed: extractors.fit_autoencoder(x, xv, SMALL.replace(epochs=2, seed=seed), progress=False)[0]
    a, b, c = fit(0), fit(0), fit(1)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not all(torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())
    with torch.no_grad():
        assert torch.equal(a.features(torch.from_numpy(xv)), b.features(torch.from_numpy(xv)))


def test_features_shape_and_batch_size_invariance(fitted, unlabelled, tmp_path):
    model, _, _ = fitted
    images = unlabelled[1].split("test")[0][:50]
    x = torch.from_numpy(images)
    with torch.no_grad():
        feats = model.features(x)
        one_by_one = torch.cat([model.features(x[i:i + 1]) for i in range(len(x))])
        as_float = model.features(x.float())
    assert feats.shape == (50, 16) and feats.dtype == torch.float32 and feats.std() > 0
    torch.testing.assert_close(one_by_one, feats, rtol=0, atol=1e-5)
    torch.testing.assert_close(as_float, feats, rtol=0, atol=0)     # uint8 and float levels agree
    extractors.save_network(model, tmp_path / "ae.pt")
    runs = [features.build_extractor("autoencoder", autoencoder_checkpoint=tmp_path / "ae.pt", batch_size=b)
            for b in (1, 7, 200)]
    outs = [run(images) for run in runs]
    assert all(lg is None for _, lg in outs) and runs[0].num_classes is None
    for f, _ in outs:
        assert f.shape == (50, 16) and f.dtype == np.float32
        np.testing.assert_allclose(f, feats.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape, strides", [((1, 8, 8), 2), ((1, 32, 32), 3), ((3, 32, 32), 3),
                                            ((3, 9, 7), 2), ((1, 3, 3), 0)])
def test_any_image_shape_reconstructs_at_its_own_size(shape, strides):
    model = ConvAutoencoder(shape, channels=(4, 8, 8), feature_dim=5)
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert sum(m.stride == (2, 2) for m in convs) == strides  # 8 -> 4 -> 2, 9x7 -> 5x4 -> 3x2, then 1
    x = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
    out = model(x)
    assert out.shape == (3, *shape) and ((out >= 0) & (out <= 1)).all()
    assert model.features(x).shape == (3, 5)
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.zeros(2, shape[0], shape[1] + 1, shape[2]))


def test_checkpoint_loads_with_weights_only_and_refuses_other_kinds(fitted, tmp_path):
    model, _, _ = fitted
    extractors.save_network(model, tmp_path / "ae.pt")
    state = torch.load(tmp_path / "ae.pt", weights_only=True)
    assert state["kind"] == "conv_autoencoder" and state["image_shape"] == [1, 8, 8]
    assert state["model_kwargs"] == {"channels": [8, 16], "feature_dim": 16}
    loaded = extractors.load_autoencoder(tmp_path / "ae.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ValueError, match="ae.pt.*domain_cnn"):
        extractors.load_domain_classifier(tmp_path / "ae.pt")
    with pytest.raises(ValueError, match="needs a trained autoencoder checkpoint"):
        features.build_extractor("autoencoder")


def test_bad_input_raises_before_training(unlabelled):
    x = unlabelled[1].split("train")[0][:64]
    with pytest.raises(ValueError, match="uint8"):
        extractors.fit_autoencoder(x.astype(np.float32), None, SMALL, progress=False)
    with pytest.raises(ValueError, match="validation images have shape"):
        extractors.fit_autoencoder(x, x[:, :, :4], SMALL, progress=False)
    with pytest.raises(FloatingPointError, match="autoencoder loss.*learning_rate"):
        extractors.fit_autoencoder(x, None, SMALL.replace(epochs=3, learning_rate=1e30), progress=False)
    with pytest.raises(ValueError, match="channels"):
        AutoencoderConfig(channels=())
    assert "autoencoder" in features.EXTRACTORS and FeaturesConfig().autoencoder == AutoencoderConfig()


def test_the_stage_is_cached_and_keyed_by_its_config(unlabelled, tmp_path):
    cfg, data = unlabelled
    store = ArtifactStore(tmp_path)
    small = SMALL.replace(epochs=1)
    first = train_extractor(cfg, small, store, data, progress=False)
    again = train_extractor(cfg, small, store, data, progress=False)
    assert first.stage == "autoencoder" and not first.reused and again.reused and again.key == first.key
    assert first.rows == {"train_images": len(data.split("train")[0]), "epochs": 1}
    torch.load(first.file("model.pt"), weights_only=True)
    assert train_extractor(cfg, small.replace(feature_dim=8), store, data, progress=False).key != first.key


def test_featurizer_real_train_end_to_end(unlabelled, tmp_path):
    cfg, data = unlabelled
    store = ArtifactStore(tmp_path)
    feat = Featurizer(cfg, FeaturesConfig(autoencoder=SMALL.replace(epochs=2)), store, data, progress=False)
    art = feat.real("autoencoder", "train")
    ids, f, logits = read_features(art)
    inputs, kwargs = feat.identity("autoencoder")
    model = extractors.load_autoencoder(kwargs["autoencoder_checkpoint"])
    images = data.split("train")[0]
    with torch.no_grad():
        want = model.features(torch.from_numpy(images)).numpy()
    np.testing.assert_array_equal(ids, np.arange(len(images)))
    assert f.shape == (len(images), 16) and logits is None and not art.reused
    np.testing.assert_allclose(f, want, rtol=1e-5, atol=1e-5)
    assert set(inputs) == {"autoencoder"}
    other = Featurizer(cfg, FeaturesConfig(autoencoder=SMALL.replace(epochs=2), batch_size=7), store, data,
                       progress=False)
    assert other.real("autoencoder", "train").reused          # execution settings are not in the key
    changed = Featurizer(cfg, FeaturesConfig(autoencoder=SMALL.replace(epochs=1)), store, data, progress=False)
    assert changed.real("autoencoder", "train").key != art.key   # other weights, other table
