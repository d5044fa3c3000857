"""Tiny models and datasets for tests (CPU, milliseconds). Shared: other test files may import.

- :class:`TinyCNN`       Conv/BN/ReLU x2 + pool + Linear; modules ``features.conv1 ... fc``.
- :class:`ReuseNet`      ResNet-style residual blocks that reuse ``self.relu`` (called twice per
                         block, like torchvision's BasicBlock / Bottleneck).
- :class:`TupleNet`      a layer (``block``) that returns ``(features, aux)``.
- :class:`RedNet`        hand-set weights: ``conv1`` channel 0 fires only on red pixels,
                         ``conv2`` channel 0 copies it (CRP crop ground truth).
- :class:`TokenNet`      a toy ViT-like net: patch embedding -> [B, 1 + g*g, D] tokens (CLS first).
- :func:`tiny_resnet`    a torchvision ResNet (BasicBlock, [1, 1, 1, 1]) for canonizer tests.
- :class:`TensorDataset3`, :class:`DictDataset`: datasets of random images.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset


class TinyCNN(nn.Module):
    """[B, 3, H, W] -> [B, num_classes]; ``features.{conv1,bn1,relu1,conv2,bn2,relu2}``, ``fc``."""

    def __init__(self, num_classes: int = 5, width: int = 8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, width, 3, padding=1),
                bn1=nn.BatchNorm2d(width),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(width, 2 * width, 3, padding=1),
                bn2=nn.BatchNorm2d(2 * width),
                relu2=nn.ReLU(),
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * width, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            for bn in (self.features.bn1, self.features.bn2):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


class _ReuseBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.conv1(x))  # call 0
        out = self.conv2(out) + x
        return self.relu(out)  # call 1


class ReuseNet(nn.Module):
    """Stem conv + 2 residual blocks reusing ``block{1,2}.relu``; -> [B, num_classes]."""

    def __init__(self, num_classes: int = 4, c: int = 6, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.block1 = _ReuseBlock(c)
        self.block2 = _ReuseBlock(c)
        self.head = nn.Linear(c, num_classes)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


class _TupleBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.aux = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(x), self.aux(x)


class TupleNet(nn.Module):
    """``block`` returns ``(features [B, c, H, W], aux [B, 2, H, W])``."""

    def __init__(self, num_classes: int = 3, c: int = 5, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.block = _TupleBlock(c)
        self.head = nn.Linear(c + 2, num_classes)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, aux = self.block(x)
        return self.head(torch.cat([feats, aux], dim=1).amax(dim=(2, 3)))


class RedNet(nn.Module):
    """A CNN whose ``conv1`` channel 0 responds only to pure red pixels.

    conv1 (3 -> 3, 3x3, only the centre tap used): channel 0 = R - G - B - 0.5, so after
    ``relu1`` it is 0.5 on red (1, 0, 0) pixels and 0 on gray/white/green/blue; channels 1, 2
    respond to green and to brightness. ``conv2`` channel 0 = relu1 channel 0 (centre tap).
    Use images with a gray background and a red square: the driving region is the square.
    """

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4, num_classes)
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.bias.zero_()
            self.conv1.weight[0, :, 1, 1] = torch.tensor([1.0, -1.0, -1.0])
            self.conv1.bias[0] = -0.5
            self.conv1.weight[1, :, 1, 1] = torch.tensor([-1.0, 1.0, -1.0])
            self.conv1.bias[1] = -0.5
            self.conv1.weight[2, :, 1, 1] = torch.tensor([0.3, 0.3, 0.3])
            self.conv2.weight.zero_()
            self.conv2.bias.zero_()
            self.conv2.weight[0, 0, 1, 1] = 1.0
            self.conv2.weight[1:, :, :, :] = 0.1
            torch.manual_seed(0)
            self.fc.weight.copy_(torch.randn(num_classes, 4))
            self.fc.bias.zero_()
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))


def red_square_images(n: int, size: int = 32, square: int = 6, seed: int = 0):
    """n gray images [n, 3, size, size] in [0, 1] with a red square at a random spot each.

    Returns ``(images, boxes)`` with boxes LongTensor [n, 4] ``(x0, y0, x1, y1)`` of the square
    (x1, y1 exclusive).
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, size, size), 0.5)
    images += 0.05 * torch.rand(images.shape, generator=g)
    x0 = torch.randint(0, size - square + 1, (n,), generator=g)
    y0 = torch.randint(0, size - square + 1, (n,), generator=g)
    for i in range(n):  # test data construction only
        images[i, :, y0[i] : y0[i] + square, x0[i] : x0[i] + square] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    boxes = torch.stack([x0, y0, x0 + square, y0 + square], dim=1)
    return images, boxes


class TokenNet(nn.Module):
    """Toy ViT-like net: ``embed`` (patch conv) -> ``tokens`` [B, 1 + g*g, D] with a CLS token
    first, ``mlp`` keeps the token shape, ``head`` reads the CLS token."""

    def __init__(self, dim: int = 8, patch: int = 4, num_classes: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.head = nn.Linear(dim, num_classes)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # [B, g*g, D]
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.mlp(t)
        return self.head(t[:, 0])


def tiny_resnet(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """torchvision ResNet with BasicBlocks [1, 1, 1, 1] (random init, eval mode)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(seed)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return model.eval()


class TensorDataset3(Dataset):
    """Random images [3, size, size]; ``mode`` 'tensor' (x), 'tuple' (x, y) or 'dict'."""

    def __init__(self, n: int, size: int = 16, num_classes: int = 5, mode: str = "tuple", seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, num_classes, (n,), generator=g)
        self.mode = mode

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        if self.mode == "tensor":
            return self.x[i]
        if self.mode == "dict":
            return {"image": self.x[i], "label": self.y[i]}
        return self.x[i], self.y[i]


def tiny_vgg(num_classes: int = 3, seed: int = 0) -> nn.Module:
    """A torchvision ``VGG`` instance with tiny layers (torchvision's own __init__ hardcodes a
    25088 x 4096 classifier, too big for unit tests): Conv/BN/ReLU/MaxPool features,
    AdaptiveAvgPool to 2x2, a small classifier. Same class, same forward."""
    from torchvision.models import VGG

    torch.manual_seed(seed)
    model = VGG.__new__(VGG)
    nn.Module.__init__(model)
    model.features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )
    model.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    model.classifier = nn.Sequential(nn.Linear(64, 16), nn.ReLU(True), nn.Dropout(), nn.Linear(16, num_classes))
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return model.eval()


# ----------------------------------------------------------------------------- a tiny CLIP
TINY_CLIP = "semlens-test-tiny-clip"
TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_clip_fm(cfg_dir, *, seed: int = 3, batch_size: int = 32):
    """A random-weight open_clip model of a tiny config, registered at runtime the way the demo
    world registers its own (``open_clip.add_model_config``), behind the real FoundationModel."""
    import json

    import open_clip

    from semlens_widgets.foundation import FoundationModel

    path = Path(cfg_dir) / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(path)
    torch.manual_seed(seed)
    return FoundationModel.open_clip(TINY_CLIP, batch_size=batch_size)
