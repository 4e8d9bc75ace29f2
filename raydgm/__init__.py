"""raydgm: measure and correct the bias of deep generative models, on Ray, tracked in MLflow.

The public API lives in submodules (``from raydgm import resample, density_ratio``); this
file stays light so that importing raydgm does not import torch or Ray.
"""
__version__ = "0.1.0"
