"""Names that the configs and the code behind them share: each list lives here once, so that
``raydgm.config`` can validate a name without importing the module that implements it. No
imports, no code."""

KNOWN_DATASETS = ("mnist5k", "digits", "cifar10", "npz")            # what raydgm.data loads
RESAMPLE_METHODS = ("multinomial", "systematic", "stratified", "residual", "gumbel_max", "gumbel_topk",
                    "rejection", "mh")                               # what raydgm.resample implements
