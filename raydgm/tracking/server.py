"""``raydgm mlflow-server``: one MLflow tracking server for a team or a cluster.

``options`` applies the defaults and checks everything before anything starts: the backend is
a database MLflow serves and its driver imports, local directories exist (or are created) and
are writable, cloud artifact URIs have their client library, the port is free. Each failure is
a ValueError with a one-line message (``raydgm`` prints it and exits 2).

``serve`` then runs ``python -m mlflow server --serve-artifacts`` in the foreground: clients
upload and download artifacts through the server, so trials and drivers need no access to the
artifact storage. It prints "ready" once ``/health`` answers, and SIGINT / SIGTERM stop the
whole server (MLflow's uvicorn workers and job runner) and exit 0. The server has no
authentication: keep it on 127.0.0.1 and reach it through an SSH tunnel.
"""
from __future__ import annotations

import collections
import getpass
import importlib.util
import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from raydgm._env import default_root

BACKENDS = ("sqlite", "postgresql", "mysql")
DRIVER_HINTS = {
    "postgresql": 'pip install "psycopg[binary]" and write the URI as postgresql+psycopg://USER@HOST:5432/DB',
    "mysql": "pip install pymysql and write the URI as mysql+pymysql://USER@HOST:3306/DB",
}
CLOUD_CLIENTS = {  # artifact URI scheme -> (module the server imports, pip package)
    "s3": ("boto3", "boto3"),
    "gs": ("google.cloud.storage", "google-cloud-storage"),
    "wasbs": ("azure.storage.blob", "azure-storage-blob azure-identity"),
}
WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class ServerOptions:
    backend: str              # SQLAlchemy URI of the runs database; a sqlite path is absolute
    artifacts: str            # an absolute local directory, or a URI (s3://, gs://, ...)
    host: str = "127.0.0.1"   # the interface the server binds
    port: int = 5000

    @property
    def url(self) -> str:
        """The URL a client on this machine uses (loopback for a wildcard host)."""
        host = "127.0.0.1" if self.host in WILDCARDS else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


def default_backend() -> str:
    return f"sqlite:///{default_root().resolve() / 'mlflow-server' / 'mlflow.db'}"


def default_artifacts() -> str:
    """``$RAYDGM_SHARED/mlartifacts`` (storage every node mounts), else beside the database."""
    shared = os.environ.get("RAYDGM_SHARED")
    return str(Path(shared).resolve() / "mlartifacts" if shared
               else default_root().resolve() / "mlflow-server" / "mlartifacts")


def options(backend: str | None = None, artifacts: str | None = None, host: str = "127.0.0.1",
            port: int = 5000) -> ServerOptions:
    """Validated options, defaults applied and local directories created; ValueError otherwise."""
    if not 0 < port < 65536:
        raise ValueError(f"--port {port} is not a TCP port (1-65535)")
    opts = ServerOptions(check_backend(backend or default_backend()),
                         check_artifacts(artifacts or default_artifacts()), host, port)
    check_port(host, port)
    return opts


def check_backend(uri: str) -> str:
    """``uri`` (a sqlite path made absolute, its directory created) if MLflow can serve it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    forms = "sqlite:////abs/path/mlflow.db, postgresql+psycopg://USER@HOST/DB or mysql+pymysql://USER@HOST/DB"
    try:
        url = make_url(uri)
    except ArgumentError:
        raise ValueError(f"--backend-store-uri {uri!r} is not a database URI; use {forms}") from None
    backend = url.get_backend_name()
    if backend not in BACKENDS:
        raise ValueError(f"--backend-store-uri {hide_password(uri)}: {url.drivername}:// is not a "
                         f"database the server supports; use {forms}")
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ValueError(f"--backend-store-uri {uri!r}: name a database file, e.g. {forms.split(',')[0]}")
        path = Path(url.database).expanduser().resolve()
        writable_dir(path.parent, "--backend-store-uri")
        return url.set(database=str(path)).render_as_string(hide_password=False)
    try:
        url.get_dialect().import_dbapi()
    except ArgumentError:     # an unknown driver: postgresql+nosuch://
        raise ValueError(f"--backend-store-uri {hide_password(uri)}: SQLAlchemy has no driver "
                         f"{url.drivername!r}; {DRIVER_HINTS[backend]}") from None
    except ImportError as err:
        raise ValueError(f"--backend-store-uri {hide_password(uri)} needs the {url.get_driver_name()} "
                         f"driver, which does not import ({err}): {DRIVER_HINTS[backend]}") from None
    return uri


def check_artifacts(dest: str) -> str:
    """An absolute local directory (created, writable), or a URI whose client library imports."""
    scheme = dest.split("://", 1)[0] if "://" in dest else ""
    if scheme and scheme != "file":
        module, package = CLOUD_CLIENTS.get(scheme, (None, None))
        if module is not None and not importable(module):
            raise ValueError(f"--artifacts-destination {dest}: the server needs {module} for "
                             f"{scheme}:// artifacts: pip install {package}")
        return dest
    path = Path(dest[len("file://"):] if scheme else dest).expanduser().resolve()
    writable_dir(path, "--artifacts-destination")
    return str(path)


def writable_dir(path: Path, option: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{option}: cannot create the directory {path} ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: the directory {path} is not writable")


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None   # None too for sys.modules[m] = None
    except (ImportError, ValueError):
        return False


def check_port(host: str, port: int) -> None:
    """ValueError unless ``host:port`` can be bound now (with SO_REUSEADDR, as uvicorn binds)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise ValueError(f"--host {host}: {err.strerror}") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            raise ValueError(f"cannot listen on {host}:{port} ({err.strerror}): is a server already "
                             f"running there (ss -ltnp 'sport = :{port}')? Stop it or pick another "
                             "--port") from None


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:        # a host name other than localhost
        return False


def hide_password(uri: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        return make_url(uri).render_as_string(hide_password=True)
    except ArgumentError:
        return uri


def mlflow_command(opts: ServerOptions) -> list[str]:
    """``python -m mlflow server ...`` with this interpreter (its mlflow, its drivers)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", opts.backend,
            "--serve-artifacts", "--artifacts-destination", opts.artifacts,
            "--host", opts.host, "--port", str(opts.port)]


def shown(argv: list[str], opts: ServerOptions) -> str:
    """``argv`` as a shell line, the database password (if any) replaced by ***."""
    return shlex.join(hide_password(a) if a == opts.backend else a for a in argv)


def warning(opts: ServerOptions) -> str | None:
    if is_loopback(opts.host):
        return None
    return (f"raydgm mlflow-server: warning: --host {opts.host} accepts connections from the network "
            "and an MLflow server has no authentication: anyone who reaches it can read, change and "
            "delete every run. Prefer --host 127.0.0.1 and an SSH tunnel.")


def banner(opts: ServerOptions) -> list[str]:
    """What a user needs first: where the server is, how clients reach it, where data goes."""
    from importlib.metadata import version
    local = "127.0.0.1" if opts.host in WILDCARDS else opts.host
    where = (f"{opts.artifacts} (a local directory)" if opts.artifacts.startswith("/")
             else f"{opts.artifacts} (needs this machine's credentials for it)")
    return [f"MLflow {version('mlflow')} tracking server: {opts.url}",
            f"  clients:   export MLFLOW_TRACKING_URI={opts.url}",
            f"  a laptop:  ssh -N -L {opts.port}:{local}:{opts.port} {getpass.getuser()}@"
            f"{socket.gethostname()}  then open http://127.0.0.1:{opts.port}",
            f"  runs:      {hide_password(opts.backend)}",
            f"  artifacts: {where}; clients upload and download them through the server"]


def serve(argv: list[str], health: str) -> int:
    """Run ``argv`` (``mlflow server``) until it exits or a signal stops it; the exit code.

    It runs in its own process group: SIGINT / SIGTERM / SIGHUP here send ``mlflow server`` one
    SIGTERM (a second signal kills the group), and whatever MLflow leaves behind after it exits
    (its job consumers) is sent SIGTERM. 0 after such a stop; 1, with mlflow's last stderr lines,
    if it exited by itself.
    """
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)
    tail: collections.deque[str] = collections.deque(maxlen=10)
    relay = threading.Thread(target=_relay, args=(proc.stderr, tail), daemon=True)
    relay.start()
    stops: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        if stops:
            _signal_group(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            proc.terminate()              # mlflow passes it on to uvicorn, which stops its workers
        stops.append(signum)

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for sig, handler in before.items():
        if handler is not signal.SIG_IGN:     # under nohup, SIGHUP stays ignored
            signal.signal(sig, stop)
    try:
        ready = _wait(proc, health, stops)
        code = proc.wait()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    _signal_group(proc.pid, signal.SIGTERM)
    relay.join(timeout=5)
    if stops:
        print(f"raydgm mlflow-server: stopped ({signal.Signals(stops[0]).name})", flush=True)
        return 0
    lines = "".join(tail).rstrip()
    print(f"raydgm mlflow-server: error: mlflow server exited with code {code}"
          f"{'' if ready else ' before answering ' + health}; its last output:\n{lines}",
          file=sys.stderr, flush=True)
    return 1


def _wait(proc: subprocess.Popen, health: str, stops: list[int]) -> bool:
    """Poll ``health`` until it answers (print "ready"; True), the server exits or is stopped."""
    start, direct = time.monotonic(), urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while proc.poll() is None and not stops:
        try:
            with direct.open(health, timeout=2) as resp:     # never through $http_proxy
                if resp.status == 200:
                    print(f"raydgm mlflow-server: ready ({health} answered after "
                          f"{time.monotonic() - start:.0f} s)", flush=True)
                    return True
        except OSError:       # URLError, refused, reset, timeout: not up yet
            pass
        time.sleep(0.5)
    return False


def _relay(stream: IO[str], tail: collections.deque) -> None:
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:   # nothing left in it
        pass


def run_server(backend: str | None, artifacts: str | None, host: str = "127.0.0.1",
               port: int = 5000, dry_run: bool = False) -> int:
    """The command: validate, print the mlflow command (--dry-run) or how to reach it, serve."""
    opts = options(backend, artifacts, host, port)
    if (text := warning(opts)) is not None:
        print(text, file=sys.stderr, flush=True)
    argv = mlflow_command(opts)
    if dry_run:
        print(shown(argv, opts))
        return 0
    print("\n".join(banner(opts)))
    print(f"  command:   {shown(argv, opts)}", flush=True)
    return serve(argv, opts.url + "/health")
