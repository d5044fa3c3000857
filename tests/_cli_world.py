"""A small world for the command-line tests: callables that ``semlens run`` names as
``_cli_world:model`` etc. (this directory is passed as ``--app-dir``).

- :func:`model`: :class:`_models.TinyCNN` (seeded random weights, 5 classes);
- :func:`unseeded_model`: a conv net with torch's default (global-RNG) initialisation: the same
  weights in every process only because ``semlens run`` seeds torch before calling it;
- :func:`dataset`: 40 random images in [0, 1] (16 x 16) with labels; :func:`duplicated`: 40
  images, each twice (ties everywhere);
- :func:`fm`: a tiny random-weight open_clip model (:func:`_models.tiny_clip_fm`);
- names for ``--class-names`` / ``--vocabulary`` and callables that return the wrong things.
"""
from __future__ import annotations

import tempfile

import torch
from torch import nn
from torch.utils.data import Dataset

from _models import TinyCNN, tiny_clip_fm

CLASS_NAMES = ["ant", "bee", "cat", "dog", "eel"]
VOCABULARY = ["red", "green", "blue", "stripes", "dots"]
N = 40


class RandomImages(Dataset):
    """``n`` random images ``[3, 16, 16]`` in [0, 1] with labels in [0, 5); a ``classes`` list like
    torchvision datasets."""

    classes = CLASS_NAMES

    def __init__(self, n: int = N, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, 16, 16, generator=g)
        self.y = torch.randint(0, 5, (n,), generator=g)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def model() -> nn.Module:
    return TinyCNN(num_classes=5, width=4, seed=0)


def unseeded_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


def dataset() -> Dataset:
    return RandomImages()


def small_dataset() -> Dataset:
    return RandomImages(n=24)


class Duplicated(RandomImages):
    """40 images whose second half repeats the first (sample i + 20 == sample i): every component
    has ties, between samples that a sharded pass puts on different ranks."""

    def __init__(self):
        super().__init__(n=20, seed=2)
        self.x, self.y = self.x.repeat(2, 1, 1, 1), self.y.repeat(2)


def duplicated() -> Dataset:
    return Duplicated()


def fm():
    return tiny_clip_fm(tempfile.mkdtemp(prefix="semlens-tiny-clip-"))


def vocabulary() -> list[str]:
    return list(VOCABULARY)


def not_a_model():
    return "a string"


def a_loader():
    return torch.utils.data.DataLoader(RandomImages(), batch_size=4)


NOT_CALLABLE = 3
