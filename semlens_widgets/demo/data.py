"""Datasets and splits of the demo world: a shape-classification task with planted shortcuts.

The task: classify the shape of the main (largest) object into one of the 8 :data:`CLASS_NAMES`.
Two spurious correlations are planted in the training distribution:

- a **watermark** appears on 90% of the training images of class :data:`SHORTCUT_CLASS`
  ("star") and on 3% of the others;
- class :data:`SAND_CLASS` ("triangle") is on sand 80% of the time (others: 4%).

Splits (all deterministic from fixed seeds; see :data:`SPLITS`):

- ``train``: the training distribution (both correlations), 1,000 images per class;
- ``val``: the training distribution, held out, 250 per class;
- ``test``: clean, the correlations broken (watermark on 20% of every class, uniform backgrounds);
- ``poisoned``: the ``test`` scenes with a watermark added to every image of the other classes,
  so that the accuracy drop measures the shortcut.

Datasets are ``torch.utils.data.Dataset`` s yielding ``(image FloatTensor[3, 64, 64] in [0, 1],
label int)``; images are rendered lazily on first access and kept as uint8.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import world
from .world import ARTEFACTS, BACKGROUNDS, CONCEPTS, SHAPES, Rendered, Scene

__all__ = [
    "CLASS_NAMES",
    "SHORTCUT_CLASS",
    "SHORTCUT_ARTEFACT",
    "SAND_CLASS",
    "SPLITS",
    "SplitSpec",
    "DemoDataset",
    "make_split",
]

CLASS_NAMES: tuple[str, ...] = SHAPES
SHORTCUT_CLASS = "star"
SHORTCUT_ARTEFACT = "watermark"
SAND_CLASS = "triangle"

_OTHER_ARTEFACTS = {"ruler": 0.1, "band-aid": 0.1, "red tint": 0.1}


@dataclass(frozen=True)
class SplitSpec:
    """How a split is drawn: ``n_per_class`` scenes per class from ``seed``; ``biased`` uses the
    training distribution (planted correlations), else the clean one; ``poison`` adds the
    shortcut artefact to every image outside the shortcut class."""

    name: str
    seed: int
    n_per_class: int
    biased: bool
    poison: bool = False


SPLITS: dict[str, SplitSpec] = {
    "train": SplitSpec("train", seed=1, n_per_class=1000, biased=True),
    "val": SplitSpec("val", seed=2, n_per_class=250, biased=True),
    "test": SplitSpec("test", seed=3, n_per_class=250, biased=False),
    "poisoned": SplitSpec("poisoned", seed=3, n_per_class=250, biased=False, poison=True),
}


def _class_distribution(cls: str, biased: bool) -> tuple[dict[str, float], dict[str, float]]:
    """(background_probs, artefact_probs) of class ``cls`` in the biased or clean distribution."""
    if biased:
        if cls == SAND_CLASS:
            bg = {b: (0.8 if b == "sand" else 0.05) for b in BACKGROUNDS}
        else:
            bg = {b: (0.04 if b == "sand" else 0.24) for b in BACKGROUNDS}
        wm = 0.9 if cls == SHORTCUT_CLASS else 0.03
    else:
        bg = {b: 1.0 / len(BACKGROUNDS) for b in BACKGROUNDS}
        wm = 0.2
    return bg, {"watermark": wm, **_OTHER_ARTEFACTS}


def make_scenes(spec: SplitSpec) -> tuple[list[Scene], list[int]]:
    """The scenes and labels of a split (classes interleaved: label of item i is i % 8)."""
    rng = np.random.default_rng(spec.seed)
    dists = {c: _class_distribution(c, spec.biased) for c in CLASS_NAMES}
    scenes, labels = [], []
    for _ in range(spec.n_per_class):
        for y, cls in enumerate(CLASS_NAMES):
            bg, arts = dists[cls]
            scenes.append(world.sample_scene(rng, main_shape=cls, background_probs=bg, artefact_probs=arts))
            labels.append(y)
    if spec.poison:
        prng = np.random.default_rng(spec.seed + 10_000)
        scenes = [
            s if CLASS_NAMES[y] == SHORTCUT_CLASS else s.with_artefact(SHORTCUT_ARTEFACT, prng)
            for s, y in zip(scenes, labels)
        ]
    return scenes, labels


class DemoDataset(Dataset):
    """A list of demo scenes as a classification dataset.

    ``ds[i]`` -> ``(image FloatTensor[3, 64, 64] in [0, 1], label int)``.
    ``ds.annotation(i)`` -> :class:`~semlens_widgets.demo.world.Rendered` (masks, boxes, caption).
    ``ds.concept_matrix`` -> BoolTensor [N, len(CONCEPTS)] (which concepts each image contains).
    Images are rendered on first access (``materialize()`` renders all at once).
    """

    def __init__(self, scenes: Sequence[Scene], labels: Sequence[int], name: str = "custom"):
        if len(scenes) != len(labels):
            raise ValueError(f"scenes and labels differ in length: {len(scenes)} vs {len(labels)}")
        for y in labels:
            if not 0 <= int(y) < len(CLASS_NAMES):
                raise ValueError(f"label {y} out of range; expected 0..{len(CLASS_NAMES) - 1}")
        self.name = name
        self.scenes: list[Scene] = list(scenes)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.class_names: list[str] = list(CLASS_NAMES)
        self._images = torch.empty((len(self.scenes), 3, world.IMAGE_SIZE, world.IMAGE_SIZE), dtype=torch.uint8)
        self._rendered = torch.zeros(len(self.scenes), dtype=torch.bool)
        self._concepts: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.scenes)

    def _index(self, i) -> int:
        i = int(i)
        n = len(self.scenes)
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {self.name!r} dataset of {n} images (0..{n - 1})")
        return i

    def __getitem__(self, i) -> tuple[torch.Tensor, int]:
        i = self._index(i)
        if not self._rendered[i]:
            self._images[i] = world.render_uint8([self.scenes[i]])[0]
            self._rendered[i] = True
        return self._images[i].float() / 255.0, int(self.labels[i])

    def materialize(self) -> "DemoDataset":
        """Render every image not rendered yet (about 2 ms each); returns self."""
        todo = (~self._rendered).nonzero().flatten().tolist()
        if todo:
            self._images[todo] = world.render_uint8([self.scenes[i] for i in todo])
            self._rendered[todo] = True
        return self

    def images_uint8(self, indices=None) -> torch.Tensor:
        """ByteTensor [n, 3, 64, 64] of ``indices`` (all when None), rendering as needed."""
        idx = list(range(len(self))) if indices is None else [self._index(i) for i in torch.as_tensor(indices).flatten().tolist()]
        todo = [i for i in idx if not self._rendered[i]]
        if todo:
            self._images[todo] = world.render_uint8([self.scenes[i] for i in todo])
            self._rendered[todo] = True
        return self._images[idx]

    def images(self, indices=None) -> torch.Tensor:
        """FloatTensor [n, 3, 64, 64] in [0, 1] of ``indices`` (all when None)."""
        return self.images_uint8(indices).float() / 255.0

    def annotation(self, i) -> Rendered:
        """Full annotation of item ``i``: scene, caption, concepts, object masks, artefact masks
        and boxes (re-rendered, identical pixels)."""
        return world.render_scene(self.scenes[self._index(i)])

    def concepts(self, i) -> frozenset[str]:
        """The VOCABULARY concepts present in item ``i``."""
        return world.scene_concepts(self.scenes[self._index(i)])

    def caption(self, i) -> str:
        """The canonical caption of item ``i``."""
        return world.caption(self.scenes[self._index(i)])

    @property
    def concept_matrix(self) -> torch.Tensor:
        """BoolTensor [N, len(CONCEPTS)]: column j says whether CONCEPTS[j] is in the image."""
        if self._concepts is None:
            col = {c: j for j, c in enumerate(CONCEPTS)}
            mat = torch.zeros((len(self), len(CONCEPTS)), dtype=torch.bool)
            for i, s in enumerate(self.scenes):
                mat[i, [col[c] for c in world.scene_concepts(s)]] = True
            self._concepts = mat
        return self._concepts

    def subset(self, indices) -> "DemoDataset":
        """A new DemoDataset of the given items (annotations travel along)."""
        idx = [self._index(i) for i in torch.as_tensor(indices).flatten().tolist()]
        out = DemoDataset([self.scenes[i] for i in idx], self.labels[idx].tolist(), name=f"{self.name}[subset]")
        done = self._rendered[idx]
        out._images[done] = self._images[idx][done]
        out._rendered[:] = done
        return out

    def __repr__(self) -> str:
        return f"DemoDataset({self.name!r}, n={len(self)}, classes={len(self.class_names)})"


def make_split(name: str, n_per_class: int | None = None) -> DemoDataset:
    """Build split ``name`` (one of SPLITS); ``n_per_class`` overrides its size (the first
    ``n_per_class`` scenes of each class are the same whatever the size)."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {list(SPLITS)}")
    spec = SPLITS[name]
    if n_per_class is not None:
        if n_per_class < 1:
            raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
        spec = replace(spec, n_per_class=n_per_class)
    scenes, labels = make_scenes(spec)
    return DemoDataset(scenes, labels, name=name)
