"""CIFAR-style ResNet (He et al., CVPR 2016, Sec. 4.2): the semi-supervised classifier.

depth = 6n + 2 layers with weights: a 3x3 conv stem to ``width`` channels (+ BN + ReLU),
three stages of n basic blocks with ``width``, 2 ``width`` and 4 ``width`` channels whose
first convs have stride 1, 2 and 2, a global average pool and one linear layer. A block is

    y = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x))

with the identity as shortcut, or a projection (1x1 conv with the block's stride + BN)
where the shape changes (He et al.'s option B). Spatial sizes: 32 -> 32 -> 16 -> 8 for
MNIST/CIFAR, 8 -> 8 -> 4 -> 2 for sklearn's digits.

Inputs are raw pixel levels, uint8 or float (N, C, H, W) in [0, 255]; the model casts and
normalizes them itself: x -> x / 127.5 - 1, in [-1, 1].

Convs are initialized as in He et al. 2015 (normal, fan-out, ReLU gain), BN with weight 1
and bias 0, the linear layer with torch's default. Initialization draws from torch's
global generator: build under ``torch.random.fork_rng()`` + ``torch.manual_seed(seed)``
(``raydgm.training.ssl.build_model`` does) to get the same weights for the same seed.

Imports only torch.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from raydgm.models.base import check_batch_shape


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; (N, c_in, H, W) -> (N, c_out, ceil(H/stride), ceil(W/stride))."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:   # projection shortcut (option B)
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-(6n+2) classifier: images (N, C, H, W) in [0, 255] -> logits (N, num_classes)."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int,
                 depth: int = 8, width: int = 16) -> None:
        super().__init__()
        if len(tuple(image_shape)) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        C, H, W = (int(s) for s in image_shape)
        if C < 1 or H < 1 or W < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if int(depth) < 8 or (int(depth) - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, 110), got {depth}")
        if int(width) < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.image_shape = (C, H, W)
        self.num_classes, self.depth, self.width = int(num_classes), int(depth), int(width)
        n = (self.depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(C, self.width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(self.width), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = self.width
        for stage, stride in enumerate((1, 2, 2)):
            c_out = self.width * 2 ** stage
            for i in range(n):
                blocks.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, self.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def constructor_kwargs(self) -> dict[str, object]:
        """The keyword arguments (besides ``image_shape``) that rebuild this network."""
        return {"num_classes": self.num_classes, "depth": self.depth, "width": self.width}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float (N, C, H, W) levels in [0, 255] -> pooled float (N, 4 * width)."""
        check_batch_shape(x, self.image_shape)
        x = x.to(self.head.weight.dtype) / 127.5 - 1.0   # levels -> [-1, 1]
        return self.blocks(self.stem(x)).mean(dim=(2, 3))   # global average pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float (N, C, H, W) -> logits (N, num_classes)."""
        return self.head(self.features(x))
