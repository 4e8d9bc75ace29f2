"""Configs of the known-bias generators (``raydgm.models.known_bias``): copies of the real train
images whose density ratio to the data is known exactly, to judge a weighting method against."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from raydgm.config.base import Config

# pi_gen(y) over K classes, up to normalisation
CLASS_MIX_RULES = {"linear": "pi_gen(y) proportional to y + 1",
                   "reversed": "pi_gen(y) proportional to K - y"}


class SkewedConfig(Config):
    """Real train images drawn with the class mix ``class_mix``: class y with probability
    pi_gen(y), then one of that class's train images uniformly. The true weight of a copy of
    a class-y image is pi_data(y) / pi_gen(y), pi_data the train split's class mix (exact for
    p_data = the empirical train distribution; ``raydgm.training.known_bias``).

    ``class_mix``: a rule (``CLASS_MIX_RULES``: ``linear`` is pi_gen(y) ~ y + 1, ``reversed``
    pi_gen(y) ~ K - y) or K positive numbers, normalised to sum 1 (K: the dataset's classes,
    checked when the generator is fitted).
    """

    STAGE: ClassVar[str] = "model"
    kind: Literal["skewed"] = "skewed"
    class_mix: Literal["linear", "reversed"] | tuple[Annotated[float, Field(gt=0.0)], ...] = "linear"

    @model_validator(mode="after")
    def _check(self) -> "SkewedConfig":
        if isinstance(self.class_mix, tuple) and len(self.class_mix) < 2:
            raise ValueError("class_mix must list a positive number for each of at least 2 classes")
        return self


class ContaminatedConfig(Config):
    """A share ``junk_fraction`` of junk, the rest copies of real train images (uniform over
    the train split). ``junk: scrambled``: a train image (uniform) with its C*H*W pixel values
    put in a uniformly random order. The true weight of a real copy is about 1 / (1 - eps)
    and of junk 0 (exact values in ``raydgm.training.known_bias``)."""

    STAGE: ClassVar[str] = "model"
    kind: Literal["contaminated"] = "contaminated"
    junk_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    junk: Literal["scrambled"] = "scrambled"
