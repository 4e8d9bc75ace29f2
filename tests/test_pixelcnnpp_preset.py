"""configs/pixelcnnpp_mnist.yaml, the strong generator on the default dataset, at toy size:
it is the study preset's pipeline key for key, trains through the stage with val and test
bits/dim every epoch, resumes after an interruption to the same weights, keeps its cache key
on a rerun, and samples through Ray Data byte for byte alike with 1 and 2 actors."""
import json
from pathlib import Path

import pytest
import torch

from raydgm.config import PipelineConfig, SweepConfig
from raydgm.pipeline import tables
from raydgm.pipeline.stages import generate_samples, load_data, train_generator
from raydgm.pipeline.store import ArtifactStore
from raydgm.sweeps.cli import load_sweep
from raydgm.training import generators

CONFIG = Path(__file__).parent.parent / "configs" / "pixelcnnpp_mnist.yaml"
TOY = ("generator.model.nr_filters=8", "generator.epochs=2", "generator.max_train_images=64",
       "generator.batch_size=32", "generate.num_samples=6", "generate.batch_size=4")


@pytest.fixture(scope="module")
def toy():
    cfg = PipelineConfig.load(CONFIG, TOY)
    return cfg, load_data(cfg.data)


def test_the_config_is_the_study_presets_pixelcnnpp_pipeline_key_for_key():
    study = load_sweep(SweepConfig, "study").pipelines()
    assert study["pixelcnnpp"] == PipelineConfig.load(CONFIG)
    assert study["pixelcnnpp"].generator.model.kind == "pixelcnnpp"


def test_toy_training_logs_every_split_and_a_rerun_reuses_the_same_key(tmp_path, toy):
    cfg, data = toy
    store = ArtifactStore(tmp_path)
    first = train_generator(cfg.data, cfg.generator, store, data, progress=False)
    history = json.loads(first.file("history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert all(0.0 < row[f"{split}_bpd"] < 9.0 for split in ("train", "val", "test"))
    again = train_generator(cfg.data, cfg.generator, store, data, progress=False)
    assert again.reused and again.key == first.key and again.path == first.path


def test_an_interrupted_training_resumes_to_the_uninterrupted_weights(tmp_path, toy):
    cfg, data = toy

    def stop_after_epoch_1(line: str) -> None:
        if "epoch 1/2" in line:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_generator(cfg.data, cfg.generator, ArtifactStore(tmp_path / "a"), data, progress=False,
                        log=stop_after_epoch_1)
    resumed = train_generator(cfg.data, cfg.generator, ArtifactStore(tmp_path / "a"), data, progress=False)
    straight = train_generator(cfg.data, cfg.generator, ArtifactStore(tmp_path / "b"), data, progress=False)
    a = generators.load_generator(resumed.file(generators.MODEL)).state_dict()
    b = generators.load_generator(straight.file(generators.MODEL)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sampling_through_ray_data_is_byte_identical_with_1_and_2_actors(tmp_path, toy, ray_local):
    cfg, data = toy
    trained = train_generator(cfg.data, cfg.generator, ArtifactStore(tmp_path / "shared"), data,
                              progress=False)
    images = {}
    for actors in (1, 2):
        gen_cfg = cfg.generate.replace(num_actors=actors)
        art = generate_samples(gen_cfg, trained, ArtifactStore(tmp_path / f"actors{actors}"))
        ids, _, drawn = tables.read_samples(art.file("samples"))
        assert sorted(ids.tolist()) == list(range(6))
        images[actors] = drawn[ids.argsort()]
    assert images[1].shape == (6, 1, 32, 32) and images[1].tobytes() == images[2].tobytes()
