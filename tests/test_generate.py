"""Generation: per-sample seeds, the callable class without Ray, and the Ray Data stage."""
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raydgm.config import GenerateConfig
from raydgm.models import build
from raydgm.pipeline import tables
from raydgm.pipeline.generate import (GenerateBatch, NonFiniteSamples, draw_levels,
                                      generate_with_ray, id_shards, sample_seed)
from raydgm.training import generators

TINY = {"latent_dim": 4, "hidden_channels": [8, 16, 32], "likelihood": "logistic"}


def _checkpoint(path, poison=False):
    """An (untrained, seeded) tiny VAE on 8x8 images saved as generation actors load it."""
    torch.manual_seed(0)
    model = build("vae", (1, 8, 8), **TINY)
    if poison:   # +inf column: exactly the samples with z[0] > 0 decode to NaN (see test_vae)
        with torch.no_grad():
            model.decoder[0].weight[:, 0] = float("inf")
    generators.save_generator(model, "vae", TINY, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def test_sample_seeds_are_distinct_and_stable():
    seeds = [sample_seed(0, i) for i in range(10_000)]
    assert len(set(seeds)) == 10_000 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(0, 5) != sample_seed(1, 5)
    expected = int(np.random.SeedSequence([0, 5]).generate_state(1, np.uint64)[0]) >> 1
    assert sample_seed(0, 5) == expected


def test_callable_class_without_ray(ckpt):
    fn = GenerateBatch(str(ckpt), seed=3)
    whole = fn({"sample_id": np.arange(10)})
    assert whole.column_names == ["sample_id", "seed", "image"] and whole.num_rows == 10
    parts = [fn({"sample_id": np.arange(0, 4)}), fn({"sample_id": np.arange(4, 10)})]
    images = [t.column("image").combine_chunks().to_numpy_ndarray() for t in [whole, *parts]]
    np.testing.assert_array_equal(images[0], np.concatenate(images[1:]))
    assert images[0].dtype == np.uint8 and images[0].shape == (10, 1, 8, 8)
    assert whole.column("seed").to_pylist() == [sample_seed(3, i) for i in range(10)]


def test_nonfinite_images_fail_with_a_count_or_are_dropped(tmp_path):
    bad = _checkpoint(tmp_path / "bad.pt", poison=True)
    model = generators.load_generator(bad)
    ids = np.arange(50)
    z0 = torch.cat([model.draw_noise(1, torch.Generator().manual_seed(sample_seed(0, i)))["z"]
                    for i in ids])[:, 0]
    expect_bad = int((z0 > 0).sum())
    assert 0 < expect_bad < 50
    with pytest.raises(NonFiniteSamples, match=f"{expect_bad} of 50 generated images"):
        GenerateBatch(str(bad), seed=0)({"sample_id": ids})
    kept = GenerateBatch(str(bad), seed=0, on_nonfinite="drop")({"sample_id": ids})
    assert kept.column("sample_id").to_pylist() == ids[(z0 <= 0).numpy()].tolist()


# --------------------------------------------------------------------------- through Ray Data

def _run(ckpt, out, **cfg):
    stats = generate_with_ray(ckpt, GenerateConfig.from_dict({"num_samples": 150, "seed": 1, **cfg}),
                              out)
    ids, seeds, images = tables.read_samples(out / "samples")
    return stats, ids, seeds, images


def test_output_is_byte_identical_whatever_the_actors_and_batch_size(tmp_path, ckpt, ray_local):
    _, ids_a, seeds_a, a = _run(ckpt, tmp_path / "a", num_actors=1, batch_size=7)
    _, ids_b, seeds_b, b = _run(ckpt, tmp_path / "b", num_actors=2, batch_size=64)
    np.testing.assert_array_equal(ids_a, np.arange(150))
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(seeds_a, seeds_b)
    assert a.tobytes() == b.tobytes()
    _, levels = draw_levels(generators.load_generator(ckpt), np.arange(150), seed=1)  # no Ray
    assert a.tobytes() == levels.to(torch.uint8).numpy().tobytes()
    names = sorted(p.name for p in (tmp_path / "a" / "samples").iterdir())
    assert names and all(n.startswith("a000-part-") and n.endswith(".parquet") for n in names)


def test_id_shards_keep_every_actor_busy_with_whole_batches_and_cap_the_file_size():
    cfg = GenerateConfig(num_actors=2, batch_size=250)
    assert id_shards(100_000, cfg) == 32                 # 16 blocks per actor
    assert id_shards(20_000, cfg) == 20                  # 4 batches of 250 per block at least
    assert id_shards(999, cfg) == 1                      # under 4 batches: one block
    assert id_shards(1_000_000, cfg) == 100              # at most rows_per_file (10,000) rows each
    assert id_shards(5_000, GenerateConfig(batch_size=64)) == 16   # the demo: 1 actor
    assert id_shards(0, cfg) == 1


def test_one_id_file_is_one_block_is_one_output_file_in_order(tmp_path, ckpt, ray_local):
    cfg = {"num_actors": 2, "batch_size": 7}
    shards = id_shards(150, GenerateConfig(**cfg))
    assert shards == 5
    _run(ckpt, tmp_path / "a", **cfg)
    parts = sorted((tmp_path / "a" / "samples").glob("*.parquet"))
    expect = np.array_split(np.arange(150), shards)
    assert [pq.read_table(p, columns=["sample_id"]).column(0).to_pylist() for p in parts] == \
        [e.tolist() for e in expect]


def test_an_actor_that_dies_once_is_replaced_and_every_id_appears_once(tmp_path, ckpt, ray_local):
    marker = tmp_path / "died"
    out = tmp_path / "out"
    stats = generate_with_ray(ckpt, GenerateConfig(num_samples=120, batch_size=10, seed=1), out,
                              crash_once_marker=str(marker))
    assert marker.exists(), "the actor was meant to die once"
    ids = pq.read_table(out / "samples", columns=["sample_id"]).column("sample_id").to_numpy()
    np.testing.assert_array_equal(np.sort(ids), np.arange(120))
    assert stats["samples"] == 120 and stats["dropped_nonfinite"] == 0
    node = ray_local.get_runtime_context().get_node_id()
    assert list(stats["nodes"]) == [node], "one node: every row generated there"
    assert stats["nodes"][node] >= 120, "rows per node count every generated batch, retried ones again"
    assert not (out / "placement").exists()


def test_a_killed_run_resumes_with_only_the_missing_ids(tmp_path, ckpt, ray_local):
    """What a killed run leaves behind: some finished parts and one torn file."""
    cfg = {"rows_per_file": 30, "batch_size": 10}
    _, _, _, full = _run(ckpt, tmp_path / "full", **cfg)
    parts = sorted((tmp_path / "full" / "samples").glob("*.parquet"))
    assert len(parts) >= 3
    left = tmp_path / "work" / "attempts" / "000"
    left.mkdir(parents=True)
    for part in parts[:2]:
        shutil.copy(part, left / part.name)
    (left / "part-torn.parquet").write_bytes(parts[2].read_bytes()[:200])
    done = sum(pq.read_metadata(p).num_rows for p in parts[:2])
    log = tmp_path / "timing.jsonl"
    stats = generate_with_ray(ckpt, GenerateConfig(num_samples=150, seed=1, **cfg),
                              tmp_path / "out", work_dir=tmp_path / "work", timing_log=str(log))
    generated = sum(json.loads(line).get("rows", 0) for line in log.read_text().splitlines())   # batch lines
    assert generated == 150 - done and stats["samples"] == 150
    ids, _, resumed = tables.read_samples(tmp_path / "out" / "samples")
    np.testing.assert_array_equal(ids, np.arange(150))
    assert resumed.tobytes() == full.tobytes()
    assert not (tmp_path / "work" / "attempts").exists()


def test_nonfinite_through_ray(tmp_path, ray_local):
    bad = _checkpoint(tmp_path / "bad.pt", poison=True)
    with pytest.raises(NonFiniteSamples, match="hold NaN or Inf"):
        generate_with_ray(bad, GenerateConfig(num_samples=40, batch_size=20), tmp_path / "f")
    stats, ids, _, images = _run(bad, tmp_path / "d", on_nonfinite="drop", batch_size=32)
    assert 0 < stats["dropped_nonfinite"] < 150
    assert stats["samples"] + stats["dropped_nonfinite"] == 150 == len(ids) + len(stats["dropped_ids"])
    assert not set(ids) & set(stats["dropped_ids"])


def test_a_pool_that_would_starve_read_and_write_tasks_is_refused(tmp_path, ckpt, ray_local):
    # 2 actors x 1 CPU on 2 CPUs hangs: no CPU is left for the read and write tasks
    cfg = GenerateConfig(num_samples=10, num_actors=2, num_cpus_per_actor=1.0)
    with pytest.raises(ValueError, match="leave at least 0.5 CPU"):
        generate_with_ray(ckpt, cfg, tmp_path)
    assert not (tmp_path / "samples").exists()


def test_generation_json_is_what_the_stage_publishes(tmp_path, ckpt, ray_local):
    from raydgm.pipeline.stages import generate_samples
    from raydgm.pipeline.store import Artifact, ArtifactStore
    store = ArtifactStore(tmp_path / "home")
    gen_art = Artifact("train_generator", "k" * 16, ckpt.parent, {})
    art = generate_samples(GenerateConfig(num_samples=30, batch_size=16), gen_art, store)
    assert art.rows == {"samples": 30, "dropped_nonfinite": 0, "ray_nodes": 1}
    published = json.loads(art.file("generation.json").read_text())
    assert published["samples"] == 30 and sum(published["nodes"].values()) == 30
    assert generate_samples(GenerateConfig(num_samples=30, batch_size=16), gen_art, store).reused
