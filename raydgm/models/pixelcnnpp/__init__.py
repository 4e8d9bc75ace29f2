"""PixelCNN++ (Salimans, Karpathy, Chen & Kingma, ICLR 2017), written from the paper.

The model factorises p(x) = prod_i p(x_i | x_<i) over pixels in raster order (paper eq. 1 of
van den Oord et al. 2016, kept by PixelCNN++) and models each pixel with a discretized
logistic mixture whose colour channels are coupled linearly (paper eq. 2 and 3):

    P(x | pi, mu, s) = sum_k pi_k [sigmoid((x + 1/255 - mu_k)/s_k) - sigmoid((x - 1/255 - mu_k)/s_k)]

on the [-1, 1] scale (bin half-width 1/255), with the CDF taken to -inf at level 0 and to +inf
at level 255, and mu_G = mu'_G + a * x_R, mu_B = mu'_B + b * x_R + c * x_G (eq. 3).

Architecture (section 2.3-2.5 and the authors' reference code): two causal streams, ``u``
(pixels above) and ``ul`` (pixels above and to the left), built from down-shifted and
down-right-shifted convolutions; gated ResNet blocks with concat_elu; three resolutions
(two stride-2 downsamplings in the up pass, two stride-2 transposed convolutions in the
down pass) and skip connections from every up-pass output to the down pass; dropout in
every block. Departures: weight normalization and its data-dependent init are SKIPPED
(plain PyTorch init; the second conv of each block is scaled by 0.1 like the reference's
``init_scale=0.1``), and the sampler rounds each sampled sub-pixel to the 8-bit grid before
it conditions the next channel/pixel, so samples follow exactly the pmf that ``loss`` scores.

Modules: ``layers`` (causal convolutions, gated ResNet), ``mixture`` (the discretized
logistic mixture), ``network`` (the model and its sampler), ``checkpoint`` (the import of
pclucas14/pixel-cnn-pp's pretrained weights, weight norm folded in: ``from_pclucas14``).
"""
from raydgm.models.pixelcnnpp.checkpoint import (
    fold_weight_norm, from_pclucas14, load_pclucas14, pclucas14_hyperparameters)
from raydgm.models.pixelcnnpp.layers import (
    DownRightShiftedConv2d, DownRightShiftedDeconv2d, DownShiftedConv2d, DownShiftedDeconv2d, GatedResnet,
    concat_elu, down_shift, right_shift)
from raydgm.models.pixelcnnpp.mixture import (
    discretized_logistic_log_probs, discretized_mix_logistic_log_prob, params_per_mixture, quantize,
    sample_discretized_mix_logistic, unpack_params)
from raydgm.models.pixelcnnpp.network import PixelCNNpp

__all__ = ["PixelCNNpp", "DownShiftedConv2d", "DownRightShiftedConv2d", "DownShiftedDeconv2d",
           "DownRightShiftedDeconv2d", "GatedResnet", "concat_elu", "down_shift", "right_shift",
           "params_per_mixture", "unpack_params", "discretized_logistic_log_probs",
           "discretized_mix_logistic_log_prob", "quantize", "sample_discretized_mix_logistic",
           "from_pclucas14", "load_pclucas14", "pclucas14_hyperparameters", "fold_weight_norm"]
