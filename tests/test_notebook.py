"""notebooks/compare_runs.ipynb executed on the smoke sweep's MLflow store (nbclient, papermill-style
parameters), and raydgm.tracking.compare (the notebook's tables) on hand-made ``mlflow.search_runs`` frames."""
from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell

from raydgm.tracking import compare

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_runs.ipynb"
EXPERIMENT = "semantic_weight_smoke"
PROBE = ("import json\n"
         "print('PROBE' + json.dumps({'summary': summary.to_dict('records'), "
         "'quality': quality.reset_index().to_dict('records')}))")


def execute(cwd: Path, uri: str, experiment: str, probe: bool = False):
    """The notebook with parameters injected after its ``parameters`` cell (and the probe cell
    last), executed in ``cwd``; returns (notebook, CellExecutionError or None)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, new_code_cell(f"tracking_uri = {uri!r}\nexperiment = {experiment!r}",
                                          metadata={"tags": ["injected-parameters"]}))
    if probe:
        nb.cells.append(new_code_cell(PROBE))
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except CellExecutionError as err:
        return nb, err
    return nb, None


def outputs(nb, kind: str | None = None) -> list:
    found = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return [o for o in found if kind is None or o.output_type == kind]


def text_of(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append(o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def executed(smoke_sweep, tmp_path_factory):
    assert smoke_sweep.returncode == 0, smoke_sweep.output[-3000:]
    nb, err = execute(tmp_path_factory.mktemp("notebook"), smoke_sweep.uri, EXPERIMENT, probe=True)
    assert err is None, str(err)[-3000:]
    probe = next(o.text for o in outputs(nb, "stream") if o.text.startswith("PROBE"))
    return nb, json.loads(probe[len("PROBE"):])


# -- the committed notebook ---------------------------------------------------------------------

def test_committed_notebook_is_stripped_and_parameterized():
    raw = json.loads(NOTEBOOK.read_text())
    nb = nbformat.reads(NOTEBOOK.read_text(), as_version=4)
    nbformat.validate(nb)
    assert set(raw["metadata"]) <= {"kernelspec", "language_info"}
    for cell in raw["cells"]:
        assert set(cell["metadata"]) <= {"tags"}, cell["metadata"]
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    defaults: dict = {}
    exec(code[0].source, defaults)
    assert (defaults["tracking_uri"], defaults["experiment"], defaults["parent_run_id"]) == (
        None, "semantic_weight", None)
    assert nb.cells[0].cell_type == "markdown" and "http://127.0.0.1:5000" in nb.cells[0].source


# -- executed on the smoke sweep's store ------------------------------------------------------

def test_notebook_runs_without_errors_and_draws_its_figures(executed):
    nb, _ = executed
    assert outputs(nb, "error") == []
    assert not [o for o in outputs(nb, "stream") if "Traceback" in o.text]
    pngs = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    assert len(pngs) >= 4      # accuracy vs weight, reliability by arm, calibration curve, weight histogram
    assert any("the means agree with the sweep's own summary" in o.text for o in outputs(nb, "stream"))


def test_notebook_accuracy_means_equal_the_sweeps_summary(executed, smoke_sweep):
    _, probe = executed
    expected = pd.read_csv(smoke_sweep.summary("summary.csv"))
    got = {(r["generator"], r["labeled_size"], r["unlabeled"], r["semantic_weight"]): r for r in probe["summary"]}
    assert len(got) == len(expected) == 10     # 50 labels x (none, 2 generators x 4 sources, real)
    for row in expected.itertuples():
        mine = got[(row.generator, row.labeled_size, row.unlabeled, row.semantic_weight)]
        assert mine["seeds"] == row.seeds
        for column in ("test_accuracy_mean", "test_accuracy_std", "test_ece_mean", "diff_vs_none_mean"):
            assert mine[column] == pytest.approx(getattr(row, column), rel=0, abs=1e-12, nan_ok=True), column


def test_notebook_quality_table_lists_every_sample_set(executed, smoke_sweep):
    from smoke import runs
    nb, probe = executed
    _, found = runs(smoke_sweep.uri)
    quality_runs = [r for r in found if r.data.tags.get("raydgm.stage") == "quality"]
    assert sorted(r.data.tags["raydgm.generator"] for r in quality_runs) == ["baseline", "vae"]
    shown = text_of(next(c for c in nb.cells if c.get("id") == "quality"))
    for quality_run in quality_runs:
        fid = {k.split("/")[0]: v for k, v in quality_run.data.metrics.items() if k.endswith("/fid_domain_mean")}
        assert {"real_train", "raw", "importance_weighted"} <= set(fid)
        assert any(s.startswith("resampled_") for s in fid)
        rows = {r["set"]: r for r in probe["quality"] if r["run"] == quality_run.info.run_name}
        assert set(rows) == set(fid)
        for name, value in fid.items():
            assert rows[name]["fid_mean"] == pytest.approx(value, rel=1e-12)
        assert math.isnan(rows["importance_weighted"]["kid_mean"])     # no KID for weighted sets
        assert all(word in shown for word in ("FID", "KID", "IS", quality_run.info.run_name, *fid))


def test_notebook_names_a_missing_experiment(smoke_sweep, tmp_path):
    assert smoke_sweep.returncode == 0
    nb, err = execute(tmp_path, smoke_sweep.uri, "no_such_sweep")
    assert err is not None
    (error,) = outputs(nb, "error")
    assert error.ename == "RunsNotFound"
    assert "no MLflow experiment 'no_such_sweep'" in error.evalue
    assert smoke_sweep.uri in error.evalue and f"'{EXPERIMENT}'" in error.evalue
    assert not list(tmp_path.iterdir())      # nothing written in the working directory


# -- raydgm.tracking.compare on hand-made frames ----------------------------------------------------------

def trial(size, source, weight, seed, acc, status="FINISHED", start=0, generator="-"):
    return {"run_id": f"{size}-{source}-{weight}-{seed}-{start}-{generator}", "status": status,
            "start_time": start, "tags.raydgm.stage": "ssl_trial", "params.labeled_size": str(size),
            "params.unlabeled": source, "params.semantic_weight": str(float(weight)), "params.seed": str(seed),
            "params.generator": generator, "metrics.test_accuracy": acc, "metrics.best_val_accuracy": acc - 0.01,
            "metrics.calib/test/ece": acc / 10}


def test_trials_keep_finished_runs_and_their_ece():
    frame = pd.DataFrame([
        trial(100, "weighted", 0.5, 0, 0.70, generator="vae"), trial(100, "none", 0, 0, 0.85),
        trial(100, "resampled", 0.5, 0, 0.10, status="RUNNING", generator="vae"),
        {"run_id": "q", "status": "FINISHED", "start_time": 0, "tags.raydgm.stage": "quality"},
    ])
    rows = compare.trials(frame)
    assert rows.unlabeled.tolist() == ["none", "weighted"]          # newest first; RUNNING left out
    assert rows.test_ece.tolist() == pytest.approx([0.85 / 10, 0.70 / 10])
    assert rows.val_accuracy.tolist() == pytest.approx([0.84, 0.69])     # best val, for study
    older = frame.assign(**{compare.TEST_ECE: [0.07, np.nan, np.nan, np.nan]})   # one run without ECE
    assert "test_ece" not in compare.trials(older)


def test_trials_keep_the_newest_duplicate_and_refuse_none_finished():
    frame = pd.DataFrame([trial(50, "none", 0, 0, 0.3, start=1), trial(50, "none", 0, 0, 0.4, start=2)])
    with pytest.warns(UserWarning, match="repeat"):
        rows = compare.trials(frame)
    assert rows.test_accuracy.tolist() == [0.4]
    with pytest.raises(compare.RunsNotFound, match="no finished ssl_trial"):
        compare.trials(pd.DataFrame([trial(50, "none", 0, 0, 0.3, status="KILLED")]))


def test_summary_disagreements_match_arms_on_their_typed_values():
    """The notebook's check: study.summarize over the trial runs against the parent's summary.json;
    the weight is matched as a float (0.000166 stays 0.000166), never parsed from a metric name."""
    rows = pd.DataFrame({"generator": ["-", "vae", "vae"], "labeled_size": [50, 50, 50],
                         "unlabeled": ["none", "generated", "weighted"], "semantic_weight": [0.0, 0.000166, 0.5],
                         "test_accuracy_mean": [0.3, 0.2, 0.1], "test_ece_mean": [0.05, 0.04, 0.03]})
    logged = rows.iloc[:2].copy()
    logged.loc[1, "test_accuracy_mean"] += 1e-12
    off = compare.summary_disagreements(rows, logged)
    assert off[["unlabeled", "semantic_weight"]].values.tolist() == [["weighted", 0.5]]   # absent on the parent
    assert math.isnan(off.test_accuracy_mean_logged[0])
    assert compare.summary_disagreements(rows, rows).empty
    changed = rows.assign(test_ece_mean=[0.05, 0.04, 0.031])
    assert compare.summary_disagreements(rows, changed).unlabeled.tolist() == ["weighted"]
    assert compare.summary_disagreements(rows, rows.drop(columns="test_ece_mean")).empty   # older parent: no ECE


def test_arm_curves_rebuild_each_arms_curve_from_the_flat_table():
    table = pd.DataFrame({"generator": ["-", "-", "vae"], "labeled_size": [50] * 3,
                          "unlabeled": ["none", "none", "generated"], "semantic_weight": [0.0, 0.0, 0.5],
                          "seeds": [2] * 3, "test_ece_mean": [0.1, 0.1, 0.2], "bin": [9, 14, 12],
                          "count": [3, 7, 10], "confidence": [0.62, 0.97, 0.8], "accuracy": [0.5, 1.0, 0.7]})
    none, gen = compare.arm_curves(table)
    assert none["curve"] == {"bin": [9, 14], "count": [3, 7], "confidence": [0.62, 0.97], "accuracy": [0.5, 1.0]}
    assert (gen["generator"], gen["semantic_weight"], gen["curve"]["bin"]) == ("vae", 0.5, [12])
    with pytest.raises(compare.RunsNotFound, match="lacks columns \\['bin'\\]"):
        compare.arm_curves(table.drop(columns="bin"))


def test_quality_table_rows_columns_and_missing_values():
    run = {"run_id": "q1", "tags.mlflow.runName": "quality-1", "metrics.alpha": 0.5,
           "metrics.importance_weighted/fid_domain_mean": 4.0, "metrics.importance_weighted/kid_domain_mean": np.nan,
           "metrics.raw/fid_domain_mean": 3.0, "metrics.raw/fid_domain_std": 0.3, "metrics.raw/kid_domain_mean": 0.2,
           "metrics.raw/precision_domain_mean": 0.9, "metrics.resampled_systematic/fid_domain_mean": 2.0,
           "metrics.resampled_residual/fid_domain_mean": 2.5, "metrics.real_train/fid_domain_mean": 1.0}
    table = compare.quality_table(pd.DataFrame([run]))
    assert table.index.tolist() == ["real_train", "raw", "resampled_residual", "resampled_systematic",
                                    "importance_weighted"]
    assert table.columns.tolist() == ["fid_mean", "fid_std", "kid_mean", "kid_std", "is_mean", "is_std"]
    assert table.loc["raw", "fid_std"] == 0.3 and math.isnan(table.loc["importance_weighted", "kid_mean"])
    shown = compare.mean_pm(table, ["fid", "kid"])
    assert shown.loc["raw"].tolist() == ["3 \u00b1 0.3", "0.2"]
    assert shown.loc["importance_weighted", "kid"] == "\u2013"
    two = compare.quality_table(pd.DataFrame([run, run | {"run_id": "q2", "tags.mlflow.runName": "quality-2"}]))
    assert two.index.names == ["run", "set"] and len(two) == 10
    with pytest.raises(compare.RunsNotFound, match="no quality run"):
        compare.quality_table(pd.DataFrame(columns=["run_id"]))


def test_errors_name_what_exists(tmp_path):
    err = compare.missing_experiment("sw", "sqlite:////x/mlflow.db", ["b", "a"])
    assert "'sw'" in str(err) and "sqlite:////x/mlflow.db" in str(err) and "'a', 'b'" in str(err)
    parents = pd.DataFrame({"run_id": ["r2", "r1"], "tags.mlflow.runName": ["new", "old"],
                            "start_time": ["t2", "t1"], "status": ["RUNNING", "FINISHED"]})
    err = compare.missing_parent("abc", "sw", "http://127.0.0.1:5000", parents)
    assert "'abc'" in str(err) and "r2 new" in str(err) and "r1 old" in str(err)
    assert "run a sweep first" in str(compare.missing_parent(None, "sw", "u", parents.iloc[:0]))
    db = tmp_path / "mlflow.db"
    with pytest.raises(compare.RunsNotFound, match="no MLflow database"):
        compare.check_store(f"sqlite:///{db}")
    assert not db.exists()                        # not created empty
    db.touch()
    compare.check_store(f"sqlite:///{db}")
    compare.check_store("http://127.0.0.1:5000")   # servers are left to MLflow


def test_resolve_uri_order(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYDGM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert compare.resolve_uri(None) == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert compare.resolve_uri(None) == "http://127.0.0.1:5000"
    assert compare.resolve_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"
