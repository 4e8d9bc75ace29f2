"""Ray Tune sweeps (the only user of Ray Tune): ``tuning`` (what both share), ``semantic`` (the
semantic-loss sweep), ``classifier`` (the real-vs-generated classifier sweep), ``cli`` (their
command line, which imports neither Ray nor torch) and ``presets/``."""


class SweepIncomplete(RuntimeError):
    """Some trials did not finish (interrupted, or failed after their retries); ``--resume``
    continues them."""
