"""Convolutional and fully connected zoo modules: MLP, ResNet-18/50, MobileNetV2 and a tiny CNN.

The architectures follow the published papers (He et al. 2015, arXiv:1512.03385, with the stride on the
3×3 convolution of the bottleneck as in torchvision's "ResNet v1.5"; Sandler et al. 2018,
arXiv:1801.04381), written here from scratch. Weights are random; ``init_weights`` keeps activations at a
healthy scale so that outputs are not degenerate.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "ResNet", "MobileNetV2", "TinyCNN", "resnet18", "resnet50", "init_weights",
           "calibrate_batchnorm"]


def init_weights(module: nn.Module, input_shape: tuple[int, ...] | None = None) -> None:
    """Kaiming-normal (fan_in, ReLU gain) weights; BatchNorm gamma ≈ 1, beta ≈ 0, calibrated running stats.

    fan_in rather than torchvision's fan_out: with untrained, identity BatchNorm a depthwise convolution's
    fan_out (C·k·k) would shrink its weights by a factor of sqrt(C) and make activations vanish.
    Biases, BN gamma - 1 and beta get N(0, 0.02) noise instead of exact constants, so no two parameter
    tensors are equal and the exporter does not merge them into shared initializers behind Identity nodes.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.normal_(m.bias, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.normal_(m.bias, 0.0, 0.02)
    if input_shape is not None:
        calibrate_batchnorm(module, input_shape)


def calibrate_batchnorm(module: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Set every BatchNorm's running stats to those of one random N(0, 1) batch, as training would.

    With identity BatchNorm (running stats 0/1) each residual add doubles the variance, and ResNet-50's
    activations reach |x| ≈ 6e3; calibrated stats keep every BatchNorm output near unit variance, as in a
    trained network. momentum=None makes the running stats the cumulative average, i.e. this batch's stats.
    Skipped on the meta device (``param_count``), where there is no data to compute statistics from.
    """
    if any(p.is_meta for p in module.parameters()):
        return
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    with torch.no_grad():
        module(torch.randn(input_shape))
    for m in norms:
        m.momentum = 0.1
    module.eval()


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class MLP(nn.Module):
    """784 → 512 → 256 → 10 with ReLU (an MNIST-sized classifier)."""

    def __init__(self, sizes: tuple[int, ...] = (784, 512, 256, 10)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(*_conv_bn(cin, width, 3, stride), nn.ReLU(), *_conv_bn(width, cout, 3))
        self.down = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        return self.relu(self.body(x) + skip)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand ×4, with a residual connection (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(cin, width, 1), nn.ReLU(),
            *_conv_bn(width, width, 3, stride), nn.ReLU(),
            *_conv_bn(width, cout, 1),
        )
        self.down = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        return self.relu(self.body(x) + skip)


class ResNet(nn.Module):
    """ImageNet ResNet: 7×7/2 stem, 3×3/2 max pool, four stages, global average pool, 1000-way FC."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: tuple[int, int, int, int],
                 num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(block(cin, width, stride))
                cin = width * block.expansion
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self, (1, 3, 224, 224))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def resnet18() -> ResNet:
    """ResNet-18: basic blocks [2, 2, 2, 2]."""
    return ResNet(BasicBlock, (2, 2, 2, 2))


def resnet50() -> ResNet:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3]."""
    return ResNet(Bottleneck, (3, 4, 6, 3))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand, 3×3 depthwise, 1×1 linear projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(),
                   *_conv_bn(hidden, cout, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0, 224×224), Table 2 of arXiv:1801.04381."""

    # (expansion t, output channels c, repeats n, first stride s)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(3, 32, 3, 2), nn.ReLU6()]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [*_conv_bn(cin, 1280, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        init_weights(self, (1, 3, 224, 224))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class TinyCNN(nn.Module):
    """A small CIFAR-sized CNN covering Conv, grouped Conv, MaxPool, residual Add, global pool and Gemm."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 16, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(*_conv_bn(16, 16, 3, groups=4), nn.ReLU(), *_conv_bn(16, 16, 1))
        self.head = nn.Sequential(*_conv_bn(16, 32, 3, 2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)
        init_weights(self, (1, 3, 32, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.fc(torch.flatten(self.pool(self.head(x)), 1))
