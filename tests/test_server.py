"""``raydgm mlflow-server``: defaults and checks without a server, then real servers: the smoke
sweep logging through one (runs in its database, artifacts uploaded through it), a server that
dies at start, and (slow, opt-in) a PostgreSQL backend."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import smoke
from raydgm import cli
from raydgm.config import SweepConfig
from raydgm.sweeps import semantic
from raydgm.sweeps.cli import load_sweep
from raydgm.tracking import server

STAGES = {"train_generator", "generate", "density_ratio", "resample", "quality"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _command(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """``raydgm mlflow-server ARGS`` as a user runs it (a subprocess of this interpreter)."""
    return subprocess.Popen([sys.executable, "-m", "raydgm.cli", "mlflow-server", *args],
                            env=os.environ | (env or {}), text=True, **kw)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("raydgm mlflow-server: error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------------------- without a server

def test_defaults_live_under_raydgm_home_and_artifacts_on_shared_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYDGM_HOME", "home")                  # relative: made absolute
    monkeypatch.delenv("RAYDGM_SHARED", raising=False)
    opts = server.options(port=_free_port())
    assert opts.backend == f"sqlite:///{tmp_path / 'home' / 'mlflow-server' / 'mlflow.db'}"
    assert opts.artifacts == str(tmp_path / "home" / "mlflow-server" / "mlartifacts")
    assert (tmp_path / "home" / "mlflow-server" / "mlartifacts").is_dir()
    assert (opts.host, opts.url) == ("127.0.0.1", f"http://127.0.0.1:{opts.port}")
    monkeypatch.setenv("RAYDGM_SHARED", str(tmp_path / "shared"))
    assert server.options(port=opts.port).artifacts == str(tmp_path / "shared" / "mlartifacts")
    assert (tmp_path / "shared" / "mlartifacts").is_dir()
    assert not (tmp_path / "home" / "mlflow.db").exists()       # nothing opened the database


def test_cluster_yaml_command_builds_an_mlflow_server_command_mlflow_accepts(tmp_path, monkeypatch):
    """cluster.yaml's exact line ($HOME, $RAYDGM_SHARED expanded), and every flag we pass is in
    the installed ``mlflow server --help``."""
    monkeypatch.chdir(tmp_path)
    port = _free_port()
    line = ("--backend-store-uri sqlite:///$HOME/mlflow/mlflow.db --artifacts-destination "
            f"$RAYDGM_SHARED/mlartifacts --host 127.0.0.1 --port {port}")
    argv = shlex.split(line.replace("$HOME", str(tmp_path / "ray")).replace("$RAYDGM_SHARED", "shared"))
    args = cli.build_parser().parse_args(["mlflow-server", *argv])
    opts = server.options(args.backend_store_uri, args.artifacts_destination, args.host, args.port)
    command = server.mlflow_command(opts)
    assert command == [sys.executable, "-m", "mlflow", "server",
                       "--backend-store-uri", f"sqlite:///{tmp_path / 'ray' / 'mlflow' / 'mlflow.db'}",
                       "--serve-artifacts", "--artifacts-destination", str(tmp_path / "shared" / "mlartifacts"),
                       "--host", "127.0.0.1", "--port", str(port)]
    assert (tmp_path / "ray" / "mlflow").is_dir() and (tmp_path / "shared" / "mlartifacts").is_dir()
    help_text = subprocess.run([sys.executable, "-m", "mlflow", "server", "--help"], capture_output=True,
                               text=True, timeout=120, check=True).stdout
    assert all(f" {flag} " in help_text.replace(",", " ").replace("/", " ")
               for flag in command if flag.startswith("--"))


def test_relative_sqlite_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert server.check_backend("sqlite:///db/mlflow.db") == f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    assert server.check_backend("sqlite:///db/m.db?timeout=30").endswith("/db/m.db?timeout=30")
    assert (tmp_path / "db").is_dir()


def test_dry_run_prints_the_mlflow_command_and_starts_nothing(tmp_path, capsys):
    port = _free_port()
    args = ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
            str(tmp_path / "art"), "--port", str(port)]
    assert cli.main(["mlflow-server", *args, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert shlex.split(out) == [sys.executable, "-m", "mlflow", "server",
                                "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--serve-artifacts",
                                "--artifacts-destination", str(tmp_path / "art"),
                                "--host", "127.0.0.1", "--port", str(port)]
    assert not _listening(port) and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("uri, hint", [
    ("file:///tmp/mlruns", "sqlite:////abs/path/mlflow.db"),
    ("http://127.0.0.1:5000", "postgresql+psycopg://"),
    ("/abs/mlflow.db", "is not a database URI"),
    ("sqlite:///:memory:", "name a database file"),
    ("postgresql+nosuch://u@h/db", "SQLAlchemy has no driver"),
])
def test_unsupported_backend_is_a_one_line_error(uri, hint, capsys):
    assert cli.main(["mlflow-server", "--backend-store-uri", uri, "--dry-run"]) == 2
    assert hint in _error(capsys)


@pytest.mark.parametrize("uri", ["postgresql://u:secret@db.example/mlflow",
                                 "postgresql+psycopg://u:secret@db.example/mlflow",
                                 "postgresql+psycopg2://u:secret@db.example/mlflow"])
def test_missing_postgres_driver_names_psycopg(uri, monkeypatch, capsys):
    """Neither driver imports (a None entry in sys.modules makes ``import`` fail, as when the
    package is absent): the error names psycopg 3 and the URI form that uses it, no password."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    assert cli.main(["mlflow-server", "--backend-store-uri", uri, "--dry-run"]) == 2
    err = _error(capsys)
    assert 'pip install "psycopg[binary]"' in err and "postgresql+psycopg://" in err
    assert "secret" not in err and "u:***@db.example" in err


def test_missing_mysql_driver_names_pymysql(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    monkeypatch.setitem(sys.modules, "pymysql", None)
    for uri in ("mysql://u@db.example/mlflow", "mysql+pymysql://u@db.example/mlflow"):
        assert cli.main(["mlflow-server", "--backend-store-uri", uri, "--dry-run"]) == 2
        assert "pip install pymysql" in _error(capsys)


def test_artifacts_destination_checks(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ValueError, match="pip install boto3"):
        server.check_artifacts("s3://bucket/mlartifacts")
    assert server.check_artifacts("hdfs://namenode/mlartifacts") == "hdfs://namenode/mlartifacts"
    assert server.check_artifacts(f"file://{tmp_path}/a") == str(tmp_path / "a")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot create the directory"):
        server.check_artifacts(str(tmp_path / "file" / "mlartifacts"))
    with pytest.raises(ValueError, match="cannot create the directory"):
        server.check_backend(f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")


def test_port_in_use_is_an_error_before_starting(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _command("--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
                        str(tmp_path / "art"), "--port", str(port), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == ""
    assert err.startswith(f"raydgm mlflow-server: error: cannot listen on 127.0.0.1:{port} ")
    assert err.count("\n") == 1 and not (tmp_path / "mlflow.db").exists()


def test_non_loopback_host_warns_that_there_is_no_authentication(tmp_path, capsys):
    port = _free_port()
    for host in ("127.0.0.1", "localhost", "::1"):
        assert server.warning(server.ServerOptions("sqlite:////x.db", "/art", host, port)) is None
    assert cli.main(["mlflow-server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "--artifacts-destination", str(tmp_path / "art"), "--host", "0.0.0.0",
                     "--port", str(port), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "warning: --host 0.0.0.0" in err and "no authentication" in err and "--host 0.0.0.0" in out
    opts = server.ServerOptions("postgresql+psycopg://u:secret@db/mlflow", "/art", "0.0.0.0", port)
    lines = "\n".join(server.banner(opts))
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in lines
    assert f"ssh -N -L {port}:127.0.0.1:{port} " in lines and "secret" not in lines
    shown = server.shown(server.mlflow_command(opts), opts)
    assert "postgresql+psycopg://u:***@db/mlflow" in shown and "secret" not in shown


# --------------------------------------------------------------------------- real servers

class Server:
    """``raydgm mlflow-server`` in a subprocess, its output in files (uvicorn logs every request)."""

    def __init__(self, folder: Path, *args: str, port: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.out, self.err, self.port = folder / "server.out", folder / "server.err", port
        self.uri = f"http://127.0.0.1:{port}"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = _command(*args, "--port", str(port), stdout=out, stderr=err,
                                 env={"RAYDGM_HOME": str(folder / "server-home"),
                                      "MLFLOW_TRACKING_URI": self.uri})   # as on cluster.yaml's head

    def wait_ready(self, timeout: float = 300) -> float:
        start = time.monotonic()
        while "mlflow-server: ready" not in self.out.read_text():
            assert self.proc.poll() is None, self.logs()
            assert time.monotonic() - start < timeout, self.logs()
            time.sleep(0.5)
        return time.monotonic() - start

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, list]:
        """(its exit code, processes of the server still alive 60 s later) after ``sig``."""
        tree = psutil.Process(self.proc.pid).children(recursive=True)
        assert tree, "no mlflow server process"
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=120)
        return code, psutil.wait_procs(tree, timeout=60)[1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()

    def logs(self) -> str:
        return self.out.read_text()[-3000:] + self.err.read_text()[-3000:]


@pytest.mark.slow   # ~130 s (a whole smoke sweep through the server): make test-slow, to keep make test under 15 min
def test_smoke_sweep_logs_through_a_real_server(tmp_path):
    """The semantic smoke sweep with MLFLOW_TRACKING_URI at a server on a tmp sqlite database:
    every run lands in that database, every artifact is uploaded through the server into the
    tmp artifacts directory, nothing goes to the sweep's default store; SIGTERM stops it all."""
    db, artifacts = tmp_path / "server" / "mlflow.db", tmp_path / "server" / "mlartifacts"
    srv = Server(tmp_path / "server", "--backend-store-uri", f"sqlite:///{db}",
                 "--artifacts-destination", str(artifacts), port=_free_port())
    try:
        srv.wait_ready()
        out = srv.out.read_text()
        assert f"export MLFLOW_TRACKING_URI={srv.uri}" in out and f"runs:      sqlite:///{db}" in out
        home = tmp_path / "home"
        result = smoke.run_smoke(home, env={"MLFLOW_TRACKING_URI": srv.uri})
        assert result.returncode == 0, result.output[-3000:]
        client, runs = smoke.runs(srv.uri)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1
        parent = parents[0]
        assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in runs if r is not parent)
        trials = [r for r in runs if r.data.tags.get("raydgm.stage") == "ssl_trial"]
        grid = semantic.trial_grid(load_sweep(SweepConfig, "smoke"))
        keys = ("labeled_size", "unlabeled", "semantic_weight", "seed")
        assert sorted(tuple(r.data.params[k] for k in keys) for r in trials) == sorted(
            tuple(str(p.grid()[k]) for k in keys) for p in grid)
        stages = [r.data.tags.get("raydgm.stage") for r in runs if r.data.tags.get("raydgm.stage") != "ssl_trial"]
        assert all(stages.count(stage) == 1 for stage in STAGES), stages
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert all(r.info.artifact_uri.startswith("mlflow-artifacts:/") for r in runs)   # proxied
        listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"summary.csv", "summary.md", "trials.json", "accuracy_vs_weight.png", "config.json"} <= listed
        stored = artifacts / parent.info.experiment_id / parent.info.run_id / "artifacts"
        assert {p.name for p in stored.iterdir()} == listed
        assert (stored / "summary.csv").read_text() == result.summary("summary.csv").read_text()
        assert db.is_file() and not list(home.rglob("mlflow.db")) and not list(home.rglob("mlartifacts"))
        code, alive = srv.stop()
        assert code == 0 and alive == [], srv.logs()
        assert "mlflow-server: stopped (SIGTERM)" in srv.out.read_text() and not _listening(srv.port)
    finally:
        srv.kill()


@pytest.mark.integration   # a real mlflow server in a subprocess
def test_a_server_that_dies_at_start_is_reported_with_mlflows_last_lines(tmp_path):
    (tmp_path / "mlflow.db").write_text("not an sqlite database " * 20)
    srv = Server(tmp_path, "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "--artifacts-destination", str(tmp_path / "art"), port=_free_port())
    try:
        assert srv.proc.wait(timeout=300) == 1
        err = srv.err.read_text()
        message = err[err.index("raydgm mlflow-server: error: mlflow server exited with code 1 before "
                                f"answering {srv.uri}/health; its last output:"):]
        assert "file is not a database" in message
    finally:
        srv.kill()


@pytest.mark.integration   # a real mlflow server in a subprocess
def test_ctrl_c_stops_the_whole_server(tmp_path):
    srv = Server(tmp_path, "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "--artifacts-destination", str(tmp_path / "art"), port=_free_port())
    try:
        srv.wait_ready()
        code, alive = srv.stop(signal.SIGINT)
        assert code == 0 and alive == [], srv.logs()
        assert "mlflow-server: stopped (SIGINT)" in srv.out.read_text() and not _listening(srv.port)
    finally:
        srv.kill()


# --------------------------------------------------------------------------- PostgreSQL (opt-in)

@pytest.mark.slow
def test_postgres_backend(tmp_path):
    """A throwaway PostgreSQL cluster (initdb, pg_ctl; as the postgres user when run as root,
    since PostgreSQL refuses root) behind ``raydgm mlflow-server``: /health answers, a run with a
    metric and an artifact is stored in PostgreSQL and in the artifacts directory."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl") and server.importable("psycopg")):
        pytest.skip("needs PostgreSQL's initdb/pg_ctl and psycopg (pip install 'psycopg[binary]')")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pg = Path(tempfile.mkdtemp(prefix="raydgm-pg-"))     # outside pytest's root-only tmp tree
    if as_user:
        shutil.chown(pg, "postgres")
    pg_port = _free_port()
    subprocess.run([*as_user, "initdb", "-D", str(pg / "data"), "-U", "mlflow", "-A", "trust",
                    "--no-sync"], check=True, capture_output=True, timeout=300)
    subprocess.run([*as_user, "pg_ctl", "-D", str(pg / "data"), "-l", str(pg / "log"), "-w", "-o",
                    f"-p {pg_port} -k {pg} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True, timeout=300)
    uri = f"postgresql+psycopg://mlflow@127.0.0.1:{pg_port}/postgres"
    srv = Server(tmp_path, "--backend-store-uri", uri, "--artifacts-destination",
                 str(tmp_path / "art"), port=_free_port())
    try:
        srv.wait_ready()
        import mlflow.tracking
        import psycopg
        client = mlflow.tracking.MlflowClient(tracking_uri=srv.uri)
        run = client.create_run(client.create_experiment("postgres_smoke"))
        client.log_metric(run.info.run_id, "accuracy", 0.75)
        client.log_text(run.info.run_id, "hello", "note.txt")
        client.set_terminated(run.info.run_id)
        with psycopg.connect(f"postgresql://mlflow@127.0.0.1:{pg_port}/postgres") as conn:
            status = conn.execute("select status from runs where run_uuid = %s", (run.info.run_id,)).fetchone()
            value = conn.execute("select value from latest_metrics where run_uuid = %s and key = 'accuracy'",
                                 (run.info.run_id,)).fetchone()
        assert status == ("FINISHED",) and value == (0.75,)
        note = tmp_path / "art" / run.info.experiment_id / run.info.run_id / "artifacts" / "note.txt"
        assert note.read_text() == "hello"
        code, alive = srv.stop()
        assert code == 0 and alive == [], srv.logs()
    finally:
        srv.kill()
        subprocess.run([*as_user, "pg_ctl", "-D", str(pg / "data"), "-m", "fast", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(pg, ignore_errors=True)
