"""raydgm.tracking.compare: the exact McNemar test on hand-made predictions, arm against arm
over seeds, and test predictions read back from a real MLflow sqlite store."""
import math

import mlflow
import numpy as np
import pandas as pd
import pytest

from raydgm.tracking import compare

LABELS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.int8)


def predictions(right):
    """int8 (10,) predictions that are right exactly on the indices ``right``."""
    pred = (LABELS + 1) % 10
    pred[list(right)] = LABELS[list(right)]
    return pred.astype(np.int8)


def test_mcnemar_known_counts_and_p_values():
    a, b = predictions([0, 1, 2, 3, 4, 5, 6]), predictions([0, 1])     # a alone right on 2..6
    out = compare.mcnemar(a, b, LABELS)
    assert out == {"n": 10, "b": 5, "c": 0, "p_value": pytest.approx(2 * 0.5 ** 5, rel=1e-12),
                   "accuracy_a": 0.7, "accuracy_b": 0.2}
    assert compare.mcnemar(b, a, LABELS)["c"] == 5 and compare.mcnemar(b, a, LABELS)["b"] == 0
    # b = 1, c = 3: P(X <= 1) + P(X >= 3) for X ~ Bin(4, 1/2) = (1 + 4 + 4 + 1) / 16
    out = compare.mcnemar(predictions([0, 9]), predictions([0, 1, 2, 3]), LABELS)
    assert (out["b"], out["c"]) == (1, 3) and out["p_value"] == pytest.approx(10 / 16, rel=1e-12)
    # b = 2, c = 2: symmetric, p = 1
    assert compare.mcnemar(predictions([0, 1]), predictions([2, 3]), LABELS)["p_value"] == pytest.approx(1.0)


def test_mcnemar_no_discordant_pair_and_rejects():
    same = predictions([0, 1, 2])
    assert compare.mcnemar(same, same, LABELS) == {"n": 10, "b": 0, "c": 0, "p_value": 1.0,
                                                       "accuracy_a": 0.3, "accuracy_b": 0.3}
    with pytest.raises(ValueError, match="one length"):
        compare.mcnemar(same[:5], same, LABELS)
    with pytest.raises(ValueError, match="1-D"):
        compare.mcnemar(same.reshape(2, 5), same.reshape(2, 5), LABELS.reshape(2, 5))


def test_mcnemar_over_seeds_pairs_common_seeds_and_pools_counts():
    arm_a = {0: predictions(range(7)), 1: predictions([0, 9]), 5: predictions([0])}
    arm_b = {0: predictions([0, 1]), 1: predictions([0, 1, 2, 3]), 2: predictions([0])}
    rows, pooled = compare.mcnemar_over_seeds(arm_a, arm_b, LABELS)
    assert list(rows.columns) == ["seed", "n", "b", "c", "p_value", "accuracy_a", "accuracy_b"]
    assert rows["seed"].tolist() == [0, 1] and rows["b"].tolist() == [5, 1] and rows["c"].tolist() == [0, 3]
    # pooled b = 6, c = 3: P(X <= 3) + P(X >= 6), X ~ Bin(9, 1/2) = 2 * (1 + 9 + 36 + 84) / 512
    assert pooled == {"seeds": 2, "n": 20, "b": 6, "c": 3, "p_value": pytest.approx(260 / 512, rel=1e-12)}
    with pytest.raises(ValueError, match="no seed in both"):
        compare.mcnemar_over_seeds({0: LABELS}, {1: LABELS}, LABELS)


def test_predictions_round_trip_through_a_real_mlflow_store(tmp_path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("sw", artifact_location=(tmp_path / "artifacts").as_uri())
    arrays = {0: predictions([0, 1, 2]), 1: predictions([4, 5])}
    runs = {}
    for seed, pred in arrays.items():
        run = client.create_run(experiment, tags={"raydgm.stage": "ssl_trial"})
        folder = tmp_path / f"out{seed}"
        folder.mkdir()
        np.save(folder / compare.PREDICTIONS, pred)
        client.log_artifact(run.info.run_id, str(folder / compare.PREDICTIONS))
        runs[seed] = run.info.run_id
    got = compare.download_predictions(client, list(runs.values()))
    assert list(got) == list(runs.values())
    for seed, run_id in runs.items():
        assert got[run_id].dtype == np.int8 and np.array_equal(got[run_id], arrays[seed])
    arm = pd.DataFrame({"run_id": list(runs.values()), "seed": list(runs)})
    by_seed = compare.predictions_by_seed(client, arm)
    assert set(by_seed) == {0, 1} and np.array_equal(by_seed[1], arrays[1])
    rows, _ = compare.mcnemar_over_seeds(by_seed, {0: LABELS, 1: LABELS}, LABELS)
    assert rows["c"].tolist() == [7, 8] and math.isclose(rows["accuracy_a"][0], 0.3)
    with pytest.raises(ValueError, match="several runs"):
        compare.predictions_by_seed(client, pd.concat([arm, arm]))
