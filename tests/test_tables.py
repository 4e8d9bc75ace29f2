import numpy as np
import pytest

from raydgm.pipeline import tables


def test_samples_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 3, 4, 5), dtype=np.uint8)
    ids = np.arange(10, 17)
    assert tables.write_samples(tmp_path / "s.parquet", ids, np.full(7, 3), images) == 7
    got_ids, seeds, got = tables.read_samples(tmp_path / "s.parquet")
    assert got.dtype == np.uint8 and got.shape == (7, 3, 4, 5)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(seeds, 3)


def test_views_with_odd_strides_and_directories_of_parts(tmp_path):
    """(N, H, W)[:, None] has an odd stride on the size-1 axis; pyarrow used to store it as
    (H, W, 1) with a permutation that it could not read back after sort_by."""
    flat = np.random.default_rng(1).integers(0, 256, size=(6, 4, 4), dtype=np.uint8)
    (tmp_path / "parts").mkdir()
    tables.write_samples(tmp_path / "parts" / "b.parquet", [3, 4, 5], [0] * 3, flat[3:, None])
    tables.write_samples(tmp_path / "parts" / "a.parquet", [0, 1, 2], [0] * 3, flat[:3, None])
    ids, _, got = tables.read_samples(tmp_path / "parts")
    np.testing.assert_array_equal(ids, np.arange(6))   # sorted by sample_id across files
    np.testing.assert_array_equal(got[:, 0], flat)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .parquet files"):
        tables.read_samples(tmp_path / "empty")


def test_weights_and_counts_round_trip(tmp_path):
    ids = np.array([5, 6, 7])
    tables.write_weights(tmp_path / "w.parquet", ids, [0.1, -0.2, 3.0], [0.0, -np.inf, 1.5],
                         ["train", "val", "calib"], [0, 0, 0])
    w = tables.read_weights(tmp_path / "w.parquet")
    np.testing.assert_array_equal(w["log_weight"], [0.0, -np.inf, 1.5])
    assert list(w["split"]) == ["train", "val", "calib"] and list(w["fold"]) == [0, 0, 0]
    assert tables.write_resampled(tmp_path / "c.parquet", ids, [True, False, True], [0.5, -np.inf, 1.0],
                                  [2, 0, 1]) == 2
    r = tables.read_resampled(tmp_path / "c.parquet")
    np.testing.assert_array_equal(r["sample_id"], [5, 6, 7])
    np.testing.assert_array_equal(r["in_pool"], [True, False, True])
    np.testing.assert_array_equal(r["log_weight"], [0.5, -np.inf, 1.0])
    np.testing.assert_array_equal(r["count"], [2, 0, 1])


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        tables.write_samples(tmp_path / "s.parquet", [0], [0], np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="unique"):
        tables.write_samples(tmp_path / "s.parquet", [0, 0], [0, 0], np.zeros((2, 1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        tables.write_weights(tmp_path / "w.parquet", [0], [np.nan], [0.0], ["train"], [0])
    assert not (tmp_path / "w.parquet").exists()


def test_missing_corrupt_and_wrong_tables_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        tables.read_samples(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match="bad.parquet"):
        tables.read_weights(bad)
    tables.write_resampled(tmp_path / "c.parquet", [1], [True], [0.0], [1])
    with pytest.raises(ValueError, match="missing column.*'logit'"):
        tables.read_weights(tmp_path / "c.parquet")
