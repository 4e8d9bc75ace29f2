"""Feature tables, the extractors, and the cached extraction (in process and through Ray Data)."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydgm.config import DataConfig, DomainClassifierConfig, FeaturesConfig
from raydgm.pipeline import features, tables
from raydgm.pipeline.stages import Featurizer, import_samples, load_data, read_features
from raydgm.pipeline.store import ArtifactStore

DIGITS = DataConfig(name="digits")
SMALL_CNN = DomainClassifierConfig(channels=(8,), feature_dim=16, epochs=2)


@pytest.fixture(scope="module")
def digits():
    return load_data(DIGITS)


@pytest.fixture
def samples(tmp_path, digits):
    """The real test split, imported as if it were a generated sample set (ids 0..N-1)."""
    path = tmp_path / "gen.npz"
    np.savez(path, images=digits.split("test")[0][:150])
    return import_samples(path, ArtifactStore(tmp_path / "home"))


def test_features_table_round_trips_and_sorts_by_id(tmp_path):
    rng = np.random.default_rng(0)
    feats, logits = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 10))
    ids = np.array([4, 0, 3, 1, 2])
    tables.write_features(tmp_path / "f.parquet", ids, feats, logits)
    got_ids, got_f, got_l = tables.read_features(tmp_path / "f.parquet")
    order = np.argsort(ids)
    np.testing.assert_array_equal(got_ids, ids[order])
    np.testing.assert_array_equal(got_f, feats[order])
    np.testing.assert_allclose(got_l, logits[order].astype(np.float32))
    tables.write_features(tmp_path / "g.parquet", ids, feats)
    assert tables.read_features(tmp_path / "g.parquet")[2] is None


def test_features_table_refuses_nan_and_wrong_types(tmp_path):
    feats = np.ones((3, 2), np.float32)
    feats[1, 0] = np.nan
    with pytest.raises(ValueError, match="features with NaN or inf: 1 of 3 rows"):
        tables.write_features(tmp_path / "f.parquet", np.arange(3), feats)
    pq.write_table(pa.table({"sample_id": [0, 1], "features": [1.0, 2.0]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="fixed-shape float32 tensor"):
        tables.read_features(tmp_path / "bad.parquet")


def test_unknown_or_incomplete_extractors_are_clear_errors():
    with pytest.raises(ValueError, match="unknown feature extractor 'clip'"):
        features.build_extractor("clip")
    with pytest.raises(ValueError, match="needs a trained domain classifier"):
        features.build_extractor("domain")
    with pytest.raises(ValueError, match="expected uint8"):
        features.pixels(np.zeros((2, 1, 4, 4), np.float32))


def test_real_features_are_computed_once_and_reused(tmp_path, digits):
    store = ArtifactStore(tmp_path)
    feat = Featurizer(DIGITS, FeaturesConfig(), store, digits, progress=False)
    first = feat.real("pixels", "train")
    ids, f, logits = read_features(first)
    images = digits.split("train")[0]
    np.testing.assert_array_equal(ids, np.arange(len(images)))
    np.testing.assert_array_equal(f, features.pixels(images))
    assert logits is None and not first.reused
    again = Featurizer(DIGITS, FeaturesConfig(batch_size=7), store, digits, progress=False)
    assert again.real("pixels", "train").reused          # execution settings are not in the key
    assert again.real("pixels", "test").key != first.key


def test_ray_data_extraction_equals_in_process(tmp_path, digits, samples, ray_local):
    cfg = FeaturesConfig(domain=SMALL_CNN, batch_size=40)
    local = Featurizer(DIGITS, cfg, ArtifactStore(tmp_path / "a"), digits, progress=False)
    remote = Featurizer(DIGITS, cfg.replace(ray_min_rows=0), ArtifactStore(tmp_path / "b"),
                        digits, progress=False)
    for name in ("pixels", "domain"):
        a, b = read_features(local.samples(name, samples)), read_features(remote.samples(name, samples))
        np.testing.assert_array_equal(a[0], np.arange(150))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
        if name == "domain":
            assert a[2].shape == (150, 10)
            np.testing.assert_allclose(a[2], b[2], rtol=1e-5, atol=1e-5)
    # a real split staged through Ray Data too
    np.testing.assert_array_equal(read_features(remote.real("pixels", "val"))[1],
                                  features.pixels(digits.split("val")[0]))


def test_domain_features_come_from_the_cached_classifier(tmp_path, digits, samples):
    import torch
    from raydgm.training.extractors import load_domain_classifier
    store = ArtifactStore(tmp_path)
    feat = Featurizer(DIGITS, FeaturesConfig(domain=SMALL_CNN), store, digits, progress=False)
    _, f, logits = read_features(feat.samples("domain", samples))
    model_file = feat.identity("domain")[1]["domain_checkpoint"]
    model = load_domain_classifier(model_file)
    with torch.no_grad():
        want_f, want_l = model.features_and_logits(torch.from_numpy(digits.split("test")[0][:150]))
    np.testing.assert_allclose(f, want_f.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, want_l.numpy(), rtol=1e-5, atol=1e-5)
    assert f.shape == (150, 16) and (f >= 0).all()
    # a second featurizer reuses the trained classifier and the table
    other = Featurizer(DIGITS, FeaturesConfig(domain=SMALL_CNN), store, digits, progress=False)
    assert other.samples("domain", samples).reused
    assert other.identity("domain")[1]["domain_checkpoint"] == model_file
