"""The stages end to end on sklearn's digits, through a real artifact store and Parquet."""
import json

import numpy as np
import pytest

from raydgm import density_ratio, tables
from raydgm.cli import main
from raydgm.config import PipelineConfig, ResampleConfig
from raydgm.stages import flattened, run_pipeline
from raydgm.store import ArtifactStore

SMALL = {"data": {"name": "digits"},
         "generator": {"pca_dim": 8, "n_components": 4, "num_samples": 600},
         "density_ratio": {"hidden_units": 32, "max_epochs": 15},
         "resample": {"method": "residual", "num_samples": 400}}


@pytest.fixture
def cfg():
    return PipelineConfig.from_dict(SMALL)


def test_pipeline_writes_consistent_tables_and_reuses_them(tmp_path, cfg):
    store, lines = ArtifactStore(tmp_path), []
    arts = run_pipeline(cfg, store, log=lines.append)
    ids, seeds, images = tables.read_samples(arts["generator"].file("samples.parquet"))
    assert images.shape == (600, 1, 8, 8) and images.dtype == np.uint8
    weights = tables.read_weights(arts["density_ratio"].file("weights.parquet"))
    np.testing.assert_array_equal(weights["sample_id"], ids)
    assert set(weights["split"]) == {"train", "val", "calib"}
    assert np.isfinite(weights["log_weight"]).all()
    rid, counts = tables.read_counts(arts["resample"].file("resampled.parquet"))
    assert counts.sum() == 400 and set(rid) <= set(ids)
    assert arts["resample"].rows == {"resampled": len(rid)}
    report = json.loads(arts["density_ratio"].file("report.json").read_text())
    assert 0.5 <= report["roc_auc"] <= 1.0 and report["ess"] >= 1.0
    assert not any(a.reused for a in arts.values())
    again = run_pipeline(cfg, store, log=lines.append)
    assert all(a.reused for a in again.values())
    assert any("reused" in line for line in lines)


def test_a_change_upstream_recomputes_downstream_only(tmp_path, cfg):
    store = ArtifactStore(tmp_path)
    first = run_pipeline(cfg, store, log=lambda _: None)
    new_seed = run_pipeline(cfg.replace(resample={**SMALL["resample"], "seed": 1}), store, log=lambda _: None)
    assert new_seed["generator"].reused and new_seed["density_ratio"].reused
    assert not new_seed["resample"].reused and new_seed["resample"].key != first["resample"].key
    new_gen = run_pipeline(cfg.replace(generator={**SMALL["generator"], "seed": 1}), store,
                           log=lambda _: None)
    assert not any(a.reused for a in new_gen.values())


def test_flattening_reaches_the_target_ess_and_clips():
    log_w = np.random.default_rng(0).normal(scale=3.0, size=2000)
    out, alpha = flattened(log_w, ResampleConfig(target_ess_fraction=0.3))
    assert 0 < alpha < 1
    assert density_ratio.effective_sample_size(out) / 2000 == pytest.approx(0.3, abs=0.01)
    np.testing.assert_allclose(out, alpha * log_w)
    clipped, _ = flattened(log_w, ResampleConfig(log_clip_max=1.0, log_clip_min=-1.0))
    assert clipped.max() == 1.0 and clipped.min() == -1.0
    # alpha = 0 (what alpha_for_ess returns for an unreachable target) keeps zero weights zero
    uniform, _ = flattened(np.array([0.5, -np.inf, 2.0]), ResampleConfig(alpha=0.0))
    np.testing.assert_array_equal(uniform, [0.0, -np.inf, 0.0])


def test_cli_help_explains_every_command(capsys):
    for argv in (["--help"], ["demo", "--help"], ["config", "--help"], ["data", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--set KEY=VALUE" in out and "RAYDGM_HOME" in out and "noise" in out


def test_cli_config_and_data(capsys):
    assert main(["config", "resample", "--set", "method=residual"]) == 0
    out = capsys.readouterr().out
    assert '"method": "residual"' in out
    assert f"hash: {ResampleConfig(method='residual').content_hash()}" in out
    assert main(["data", "--set", "name=digits"]) == 0
    out = capsys.readouterr().out
    assert "digits: 1797 images, shape (1, 8, 8)" in out and "train" in out


def test_cli_errors_are_clear_and_exit_2(tmp_path, capsys):
    assert main(["config", "resample", "--set", "alpha=2"]) == 2
    assert "'alpha'" in capsys.readouterr().err
    assert main(["demo", "--set", "density_ratio.hiden_units=3"]) == 2
    assert "did you mean 'hidden_units'" in capsys.readouterr().err
    assert main(["data", "--set", "name=npz", "--set", f"path={tmp_path / 'x.npz'}"]) == 2
    assert "x.npz" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "a failed command leaves nothing behind"


def test_cli_demo_end_to_end(tmp_path, capsys):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL))
    home = tmp_path / "home"
    assert main(["demo", "--config", str(path), "--home", str(home), "--no-noise-baseline"]) == 0
    out = capsys.readouterr().out
    assert "roc_auc=" in out and "ess_fraction=" in out and "distinct" in out
    pngs = sorted((home / "demo").glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 5000 for p in pngs)
    assert main(["demo", "--config", str(path), "--home", str(home), "--no-noise-baseline"]) == 0
    assert capsys.readouterr().out.count(": reused") == 3
