"""The artifact store: each stage's output lives at ``$RAYDGM_HOME/<stage>/<key>/``.

A stage's key hashes its config together with the keys of its inputs, so a change anywhere
upstream gives a new directory. Writing is crash-safe:

1. the stage writes into ``<stage>/.tmp-<key>-<random>/``;
2. that directory is renamed to ``<stage>/<key>/``;
3. ``manifest.json`` (config, input keys, row counts, file sizes, code version, time) is
   written to a temporary file and renamed into place.

Only a directory whose manifest parses, names the same key and lists files that exist with
their recorded sizes is a result; anything else is half-written and is recomputed. A lock
file per key keeps two processes on one machine from computing the same stage at once.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from raydgm._env import code_version, default_root
from raydgm.config import Config

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Artifact:
    """A published stage output: its directory and its manifest."""

    stage: str
    key: str
    path: Path
    manifest: dict[str, Any]
    reused: bool = False

    @property
    def rows(self) -> dict[str, int]:
        return self.manifest.get("rows", {})

    def file(self, name: str) -> Path:
        path = self.path / name
        if not path.exists():
            raise FileNotFoundError(f"artifact {self.stage}/{self.key} has no file {name!r} ({path})")
        return path


def stage_key(config: Config, inputs: Mapping[str, str] | None = None) -> str:
    """16 hex chars naming a stage output: its config hash and its inputs' keys."""
    blob = json.dumps({"config": config.content_hash(), "inputs": dict(sorted((inputs or {}).items()))},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ArtifactStore:
    """Content-addressed, crash-safe stage outputs under one root directory."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def workdir(self, stage: str, key: str) -> Path:
        """Where a stage keeps scratch files that must outlive a crash (training checkpoints).

        Not created here; the stage creates it when it starts work and removes it when done.
        """
        return self.root / stage / f".work-{key}"

    def lookup(self, stage: str, key: str) -> Artifact | None:
        """The published artifact, or None if absent or not completely written."""
        path = self.path(stage, key)
        manifest = _read_manifest(path)
        if manifest is None or manifest.get("key") != key or not _files_intact(path, manifest):
            return None
        return Artifact(stage, key, path, manifest, reused=True)

    def run(self, stage: str, config: Config, write: Callable[[Path], Mapping[str, int] | None],
            inputs: Mapping[str, str] | None = None) -> Artifact:
        """Reuse ``stage``'s output for (config, inputs), or call ``write(tmp_dir)`` to make it.

        ``write`` fills the directory it is given and may return row counts
        (``{"samples": 5000}``) for the manifest. If it raises, nothing is published.
        """
        key = stage_key(config, inputs)
        found = self.lookup(stage, key)
        if found is not None:
            return found
        with self._lock(stage, key):
            found = self.lookup(stage, key)  # another process may have finished meanwhile
            if found is not None:
                return found
            final = self.path(stage, key)
            self._clear_leftovers(stage, key)
            tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            try:
                rows = dict(write(tmp) or {})
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            manifest = _manifest(stage, key, config, inputs or {}, rows, final)
            _write_json_atomic(final / MANIFEST, manifest)
        return Artifact(stage, key, final, manifest, reused=False)

    def _clear_leftovers(self, stage: str, key: str) -> None:
        """Under the lock: remove a half-published directory and temp dirs of dead writers."""
        shutil.rmtree(self.path(stage, key), ignore_errors=True)
        for stale in (self.root / stage).glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)

    @contextmanager
    def _lock(self, stage: str, key: str) -> Iterator[None]:
        lock_path = self.root / stage / f".{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _manifest(stage: str, key: str, config: Config, inputs: Mapping[str, str],
              rows: Mapping[str, int], path: Path) -> dict[str, Any]:
    files = {str(p.relative_to(path)): p.stat().st_size
             for p in sorted(path.rglob("*")) if p.is_file()}
    return {
        "manifest_version": MANIFEST_VERSION,
        "stage": stage,
        "key": key,
        "config_class": type(config).__name__,
        "config_hash": config.content_hash(),
        "config": config.to_dict(),
        "inputs": dict(inputs),
        "rows": {k: int(v) for k, v in rows.items()},
        "files": files,
        "code_version": code_version(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _files_intact(path: Path, manifest: Mapping[str, Any]) -> bool:
    files = manifest.get("files")
    if not isinstance(files, dict):
        return False
    for name, size in files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            return False
    return True


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
