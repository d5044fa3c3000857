"""The embedded demo world: an offline, ground-truth testbed for SemanticLens.

A synthetic image domain with annotated concepts (shapes, colours, textures, backgrounds,
artefacts), a text-to-image renderer for it, a small CNN classifier trained on it with planted
shortcuts, and a small CLIP in open_clip's format trained on its image-caption pairs. Both models
ship with the package (fp16 safetensors, ~13 MB) and are reproducible with
``python -m semlens_widgets.demo.train``::

    import semlens_widgets as slw
    world = slw.demo.load()
    lens = slw.Lens(world.model, world.dataset, world.fm, layers=world.layers, m=30)
    lens.run()
    print(slw.demo.evaluate(lens, world))

See :func:`load`, :func:`render`, :func:`evaluate`, and the modules ``world`` (renderer,
captions, parser), ``data`` (datasets and splits), ``models``, ``groundtruth``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .data import CLASS_NAMES, SAND_CLASS, SHORTCUT_ARTEFACT, SHORTCUT_CLASS, SPLITS, DemoDataset, make_split
from .groundtruth import CLEAR_AUC, GroundTruth, auc_matrix
from .models import (
    CLASSIFIER_WEIGHTS,
    CLIP_CONFIG_NAME,
    CLIP_WEIGHTS,
    DEMO_TEMPLATES,
    DemoCNN,
    load_classifier,
    load_fm,
)
from .world import CONCEPTS, VOCABULARY, Rendered, Scene, caption, parse_caption, render, sample_scene

if TYPE_CHECKING:  # pragma: no cover
    from semlens_widgets.foundation import FoundationModel

__all__ = [
    "DemoWorld",
    "load",
    "load_fm",
    "render",
    "evaluate",
    "Evaluation",
    "caption",
    "parse_caption",
    "sample_scene",
    "Scene",
    "Rendered",
    "DemoDataset",
    "DemoCNN",
    "GroundTruth",
    "auc_matrix",
    "make_split",
    "VOCABULARY",
    "CONCEPTS",
    "CLASS_NAMES",
    "SHORTCUT_CLASS",
    "SHORTCUT_ARTEFACT",
    "SAND_CLASS",
    "DEMO_LAYERS",
    "CLIP_CONFIG_NAME",
    "CLIP_WEIGHTS",
    "CLASSIFIER_WEIGHTS",
    "DEMO_TEMPLATES",
]

#: the classifier layers the demo analyses by default.
DEMO_LAYERS: tuple[str, ...] = ("block3", "block4")


@dataclass
class DemoWorld:
    """Everything :func:`load` returns.

    model:        the shipped :class:`DemoCNN` (eval mode, float32).
    fm:           the shipped demo CLIP as a ``FoundationModel`` (open_clip config
                  ``semlens-demo-clip`` + local safetensors, templates :data:`DEMO_TEMPLATES`).
    dataset:      the dataset to analyse (default the clean ``test`` split, 2,000 images).
    datasets:     all splits by name: ``train``, ``val``, ``test``, ``poisoned`` (lazy rendering).
    vocabulary:   concept -> category (shape, colour, texture, background, artefact).
    class_names:  the 8 classes (shape of the main object), index = label.
    shortcut_class / shortcut_artefact: the planted shortcut ("star" <- "watermark").
    sand_class:   the class planted mostly on sand ("triangle").
    layers:       the layers the demo analyses (:data:`DEMO_LAYERS`).
    ground_truth: a :class:`GroundTruth` of ``model`` on ``dataset`` (which annotated concept
                  best predicts each component's activation, and its AUC).
    """

    model: DemoCNN
    fm: "FoundationModel"
    dataset: DemoDataset
    datasets: dict[str, DemoDataset]
    vocabulary: dict[str, str]
    class_names: list[str]
    shortcut_class: str
    shortcut_artefact: str
    sand_class: str
    layers: list[str]
    ground_truth: GroundTruth
    valid_concepts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def generator(self):
        """The world's text-to-image generator ``(concept, n, seed) -> [n, 3, 64, 64]`` in
        [0, 1] (:func:`~semlens_widgets.demo.world.generator`), for ``lens.describe`` and
        ``lens.faithfulness``."""
        from .world import generator

        return generator

    @property
    def proposer(self):
        """The offline proposer of ``lens.describe`` for this world: an
        :class:`~semlens_widgets.kernels.describe.OfflineProposer` template that knows the
        vocabulary's categories and their place in a phrase (colours and textures before the
        shape, "on <background>", "with a <artefact>"); ``lens.describe`` gives it each
        component's label candidates (``with_candidates``)."""
        from semlens_widgets.kernels.describe import OfflineProposer

        from .world import _BG_PHRASE, CATEGORY_ROLES

        return OfflineProposer((), self.vocabulary, CATEGORY_ROLES, scene_phrases=_BG_PHRASE)

    @property
    def shortcut_target(self) -> int:
        """Class index of the shortcut class."""
        return self.class_names.index(self.shortcut_class)

    def concepts(self, category: str | None = None) -> list[str]:
        """Vocabulary concepts, optionally of one category."""
        cats = sorted(set(self.vocabulary.values()))
        if category is not None and category not in cats:
            raise ValueError(f"unknown category {category!r}; expected one of {cats}")
        return [c for c, k in self.vocabulary.items() if category is None or k == category]


def load(split: str = "test", n_per_class: int | None = None, device: str = "cpu") -> DemoWorld:
    """Load the demo world: shipped classifier and CLIP, datasets, vocabulary, ground truth.

    split:        which split ``dataset`` is (``train``, ``val``, ``test`` or ``poisoned``).
    n_per_class:  shrink every split to this many images per class (tests, quick looks);
                  None keeps the sizes of :data:`~semlens_widgets.demo.data.SPLITS`.
    Nothing is downloaded; images are rendered lazily on first access.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    datasets = {name: make_split(name, n_per_class) for name in SPLITS}
    model = load_classifier(device=device)
    dataset = datasets[split]
    # the valid concepts of each class: its own shape (what a correct model should use)
    valid = {c: [c] for c in CLASS_NAMES}
    return DemoWorld(
        model=model,
        fm=load_fm(device=device),
        dataset=dataset,
        datasets=datasets,
        vocabulary=dict(VOCABULARY),
        class_names=list(CLASS_NAMES),
        shortcut_class=SHORTCUT_CLASS,
        shortcut_artefact=SHORTCUT_ARTEFACT,
        sand_class=SAND_CLASS,
        layers=list(DEMO_LAYERS),
        ground_truth=GroundTruth(model, dataset),
        valid_concepts=valid,
    )


def __getattr__(name: str):
    # evaluate() lives in its own module (it needs the Lens API); import it on first use
    if name in ("evaluate", "Evaluation"):
        from . import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'semlens_widgets.demo' has no attribute {name!r}")
