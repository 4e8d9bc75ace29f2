"""Where raydgm keeps its files and which code it runs: read from the environment and the git
checkout, shared by the artifact store (``pipeline``) and the tracker (``tracking``)."""
from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path


def default_root() -> Path:
    """The artifact home: ``$RAYDGM_HOME``, else ``./artifacts`` (relative to the working directory)."""
    return Path(os.environ.get("RAYDGM_HOME", "artifacts"))


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git SHA of the checkout raydgm runs from (``+dirty`` if modified), else the version."""
    from raydgm import __version__
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{sha}+dirty" if dirty else sha
