"""MLflow: the only package that imports mlflow.

``client`` (its names are importable from ``raydgm.tracking``): the tracking URI, the check
that it is reachable before any compute, and ``Run``, one MLflow run written through an
explicit client. ``runs``: the pipeline's stages as runs. ``compare``: tables over a sweep's
runs for the notebook. ``server``: ``raydgm mlflow-server``.
"""
from raydgm.tracking.client import (KEY_TAG, PARENT_TAG, Run, TrackingError, check_reachable, default_uri,
                                    experiment_id, flatten, sqlite_path, tracking_uri, ui_command)

__all__ = ["KEY_TAG", "PARENT_TAG", "Run", "TrackingError", "check_reachable", "default_uri",
           "experiment_id", "flatten", "sqlite_path", "tracking_uri", "ui_command"]
