import json
import subprocess
import sys
import textwrap

import pytest

from raydgm.config import ResampleConfig
from raydgm.pipeline.store import ArtifactStore, stage_key


def _writer(calls, payload="hello"):
    def write(out):
        calls.append(out)
        (out / "data.txt").write_text(payload)
        return {"rows": 3}
    return write


def test_second_run_reuses_the_published_artifact(tmp_path):
    store, cfg, calls = ArtifactStore(tmp_path), ResampleConfig(), []
    first = store.run("resample", cfg, _writer(calls))
    second = store.run("resample", cfg, _writer(calls))
    assert len(calls) == 1 and not first.reused and second.reused
    assert first.path == second.path == tmp_path / "resample" / stage_key(cfg)
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["config"] == cfg.to_dict() and manifest["rows"] == {"rows": 3}
    assert manifest["files"] == {"data.txt": 5} and manifest["code_version"]
    assert not list((tmp_path / "resample").glob(".tmp-*"))


def test_key_depends_on_config_and_inputs(tmp_path):
    cfg = ResampleConfig()
    keys = {stage_key(cfg), stage_key(cfg.replace(seed=1)), stage_key(cfg, {"weights": "abc"}),
            stage_key(cfg, {"weights": "abd"})}
    assert len(keys) == 4
    assert stage_key(cfg, {"a": "1", "b": "2"}) == stage_key(cfg, {"b": "2", "a": "1"})


def test_a_stage_that_raises_mid_write_publishes_nothing(tmp_path):
    store, cfg = ArtifactStore(tmp_path), ResampleConfig()

    def crash(out):
        (out / "data.txt").write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        store.run("resample", cfg, crash)
    assert store.lookup("resample", stage_key(cfg)) is None
    assert not (tmp_path / "resample" / stage_key(cfg)).exists()
    calls = []
    art = store.run("resample", cfg, _writer(calls, "whole"))
    assert len(calls) == 1 and (art.path / "data.txt").read_text() == "whole"


def test_a_killed_process_leaves_nothing_that_is_reused(tmp_path):
    # a real kill: the process exits mid-write without any cleanup running
    script = textwrap.dedent(f"""
        import os
        from raydgm.config import ResampleConfig
        from raydgm.pipeline.store import ArtifactStore
        def write(out):
            (out / "data.txt").write_text("half")
            os._exit(9)
        ArtifactStore({str(tmp_path)!r}).run("resample", ResampleConfig(), write)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == 9
    assert list((tmp_path / "resample").glob(".tmp-*")), "the dead writer's temp dir is left behind"
    store, calls = ArtifactStore(tmp_path), []
    art = store.run("resample", ResampleConfig(), _writer(calls, "whole"))
    assert len(calls) == 1 and (art.path / "data.txt").read_text() == "whole"
    assert not list((tmp_path / "resample").glob(".tmp-*")), "leftovers are cleaned"


def test_renamed_but_no_manifest_is_recomputed(tmp_path):
    # a crash between the rename and the manifest write
    store, cfg = ArtifactStore(tmp_path), ResampleConfig()
    final = tmp_path / "resample" / stage_key(cfg)
    final.mkdir(parents=True)
    (final / "data.txt").write_text("stale")
    calls = []
    art = store.run("resample", cfg, _writer(calls))
    assert len(calls) == 1 and (art.path / "data.txt").read_text() == "hello"


@pytest.mark.parametrize("damage", ["truncate", "delete", "corrupt_manifest", "wrong_key"])
def test_a_damaged_artifact_is_not_reused(tmp_path, damage):
    store, cfg, calls = ArtifactStore(tmp_path), ResampleConfig(), []
    art = store.run("resample", cfg, _writer(calls))
    manifest = art.path / "manifest.json"
    if damage == "truncate":
        (art.path / "data.txt").write_text("he")
    elif damage == "delete":
        (art.path / "data.txt").unlink()
    elif damage == "corrupt_manifest":
        manifest.write_text("{not json")
    else:
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "key": "0" * 16}))
    assert store.lookup("resample", art.key) is None
    again = store.run("resample", cfg, _writer(calls))
    assert len(calls) == 2 and not again.reused and store.lookup("resample", art.key) is not None


def test_two_processes_compute_a_stage_once(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from raydgm.config import ResampleConfig
        from raydgm.pipeline.store import ArtifactStore
        def write(out):
            with open(Path({str(tmp_path)!r}) / "calls.log", "a") as f:
                f.write("x")
            time.sleep(1.0)
            (out / "data.txt").write_text("done")
        art = ArtifactStore({str(tmp_path / "store")!r}).run("resample", ResampleConfig(), write)
        assert (art.path / "data.txt").read_text() == "done"
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert (tmp_path / "calls.log").read_text() == "x"


def test_missing_file_in_artifact_names_it(tmp_path):
    art = ArtifactStore(tmp_path).run("resample", ResampleConfig(), _writer([]))
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        art.file("nope.parquet")


def test_root_defaults_to_raydgm_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYDGM_HOME", str(tmp_path / "home"))
    assert ArtifactStore().root == tmp_path / "home"
