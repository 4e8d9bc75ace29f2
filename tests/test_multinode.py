"""The smoke sweep on a real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``):
a head without GPUs and two worker nodes that each declare one logical GPU.

Generation actors ask for a GPU each (the default on a GPU cluster), so two of them land on
the two workers; trials ask for half a GPU each, so they run on the workers, two per GPU. A
logical GPU runs on the CPU (``raydata.resolve_device``), and every result must equal the
single-node run's bit for bit: samples, weights and each trial's test accuracy.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import smoke
from raydgm.pipeline import tables

MiB = 1024 ** 2


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0,
                                                      "object_store_memory": 200 * MiB})
    workers = [c.add_node(num_cpus=2, num_gpus=1, object_store_memory=200 * MiB) for _ in range(2)]
    c.wait_for_nodes()
    yield c, {w.node_id for w in workers}
    c.shutdown()


def _only(home, pattern):
    found = sorted(home.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.mark.slow   # ~200 s (a 3-node Ray cluster, then the sweep): make test-slow, to keep make test under 15 min
def test_smoke_sweep_on_three_nodes_spreads_work_and_matches_one_node(cluster, smoke_sweep, tmp_path):
    c, workers = cluster
    assert smoke_sweep.returncode == 0, smoke_sweep.output[-3000:]
    # Ray Data feeds the first actor that is ready; the smoke run's 600 samples could all be
    # done before the second one starts. Waiting for the whole pool makes both record in.
    run = smoke.run_smoke(tmp_path / "home", "--set", "pipeline.generate.num_actors=2",
                          env={"RAY_ADDRESS": c.address, "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "300"})
    assert run.returncode == 0, run.output[-3000:]

    generation = json.loads(_only(run.home, "generate/*/generation.json").read_text())
    assert set(generation["nodes"]) == workers, "one generation actor (one GPU) on each worker"
    assert sum(generation["nodes"].values()) >= 600

    _, runs = smoke.runs(run.uri)
    trials = [r for r in runs if r.data.tags.get("raydgm.stage") == "ssl_trial"]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.tags["raydgm.node_id"] for r in trials} <= workers, "trials need a GPU: not on the head"
    assert {r.data.tags["raydgm.gpus"] for r in trials} == {"0.5"}
    assert {r.data.tags["raydgm.device"] for r in trials} == {"cpu"}, "a logical GPU runs on the CPU"

    ids, _, images = tables.read_samples(_only(run.home, "generate/*/samples"))
    ids1, _, images1 = tables.read_samples(_only(smoke_sweep.home, "generate/*/samples"))
    np.testing.assert_array_equal(ids, ids1)
    assert images.tobytes() == images1.tobytes(), "generated images differ from the single-node run"
    w = tables.read_weights(_only(run.home, "density_ratio/*/weights.parquet"))
    w1 = tables.read_weights(_only(smoke_sweep.home, "density_ratio/*/weights.parquet"))
    np.testing.assert_array_equal(w["log_weight"], w1["log_weight"])

    def accuracies(sweep):
        return {(t["labeled_size"], t["unlabeled"], t["semantic_weight"], t["seed"]): t["test_accuracy"]
                for t in json.loads(sweep.summary("trials.json").read_text())}
    assert accuracies(run) == accuracies(smoke_sweep)
    assert run.summary("summary.csv").read_text() == smoke_sweep.summary("summary.csv").read_text()
