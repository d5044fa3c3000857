"""The typed interfaces between the parts of the package.

:class:`LensLike` is what the widgets and the report may call on a lens: a run
:class:`~semlens_widgets.lens.Lens` implements it, and so does the one test double of the test
suite (``tests/_fake_lens.py``), checked by ``tests/test_lens.py``. Code that draws a lens types
its argument with it and calls these members directly (no ``hasattr`` / signature sniffing).

:class:`ComponentSource` and :class:`ModelSource` are what the Lens's parts read from the
pipeline (:class:`~semlens_widgets.lens_pipeline.Pipeline` implements both): the semantic index
reads component embeddings and examples, the attribution part reads the model and the samples.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import pandas as pd
import torch

from semlens_widgets.results import AttributionGraph, AuditResult, ComponentExamples, Description, LabelResult

__all__ = ["LensLike", "ComponentSource", "ModelSource"]


@runtime_checkable
class LensLike(Protocol):
    """A lens as the widgets and the report see it (all results on the CPU).

    Attributes: ``layers`` (names), ``m`` (concept examples per component), ``crop_mode``,
    ``crop_size`` (default crop side or None), ``fm`` (its ``identity`` dict names the
    foundation model), ``class_names`` (list[str] or None), ``num_classes`` (int or None),
    ``n_samples`` (dataset size), ``vocabulary`` (list[str] or None), ``graph_layers`` (the
    layers ``attribution_graph`` accepts: not SAE layers).
    """

    layers: list[str]
    m: int
    crop_mode: str
    crop_size: int | None
    fm: Any
    class_names: list[str] | None
    num_classes: int | None
    n_samples: int
    vocabulary: list[str] | None
    graph_layers: list[str]

    def set_vocabulary(self, concepts: Sequence[str] | None) -> None: ...

    def num_components(self, layer: str) -> int: ...

    def examples(self, layer: str, k: int) -> ComponentExamples: ...

    def crops(self, layer: str, k: int, size: int | None = None) -> torch.Tensor:
        """uint8 [m, 3, S, S]."""

    def images(self, indices: Any) -> torch.Tensor:
        """[n, 3, H, W] float in [0, 1]."""

    def boxes(self, layer: str) -> torch.Tensor:
        """int64 [C, m, 4] (x0, y0, x1, y1) in image pixels."""

    def heatmaps(self, layer: str, k: int) -> torch.Tensor:
        """[m, H, W]."""

    def search(self, query: Any, layer: str | None = None, k: int = 10) -> pd.DataFrame: ...

    def label(self, concepts: Sequence[str], layer: str, threshold: float = 0.0) -> LabelResult: ...

    def measures(self, layer: str) -> pd.DataFrame: ...

    def measures_summary(self, layers: Any = None) -> pd.DataFrame: ...

    def redundancy(self, layer: str) -> float: ...

    def map(self, layer: Any) -> pd.DataFrame: ...

    def relevance(self, target: Any, layer: str) -> pd.DataFrame: ...

    def top_classes(self, layer: str, k: int = 3) -> pd.DataFrame: ...

    def audit(self, valid: Sequence[str], spurious: Sequence[str], layer: str, target: Any) -> AuditResult: ...

    def attribution_graph(self, target: Any, layers: Any = None, concepts: Sequence[str] | None = None
                          ) -> AttributionGraph: ...

    def stored_description(self, layer: str, k: int) -> Description | None:
        """The last ``lens.describe`` of component k (history, best, auc, examples: uint8 images
        of its candidates), or None; reads the store, computes nothing."""

    def stored_faithfulness(self, layer: str) -> pd.DataFrame | None:
        """The last ``lens.faithfulness`` table of ``layer`` (``layer, component, label, auc, mad,
        note``), or None; reads the store, computes nothing."""


class ComponentSource(Protocol):
    """What the semantic index reads: per layer the semantic embeddings ``theta [C, d]``, the
    example embeddings ``V [C, m, d]`` and the concept examples of a component."""

    def embeddings(self, layer: str) -> torch.Tensor: ...

    def example_embeddings(self, layer: str) -> torch.Tensor: ...

    def examples(self, layer: str, k: Any) -> ComponentExamples: ...

    def num_components(self, layer: str) -> int: ...


class ModelSource(Protocol):
    """What the attribution part reads: the model with its LRP composite (None: activation x
    gradient), its device, the model inputs of samples, and per-sample labels / predictions
    (``[N]`` or None) with the number and names of the classes."""

    model: torch.nn.Module
    composite: Any
    device: torch.device
    class_names: list[str] | None

    @property
    def sample_labels(self) -> torch.Tensor | None: ...

    @property
    def sample_predictions(self) -> torch.Tensor | None: ...

    @property
    def num_classes(self) -> int | None: ...

    def model_inputs(self, indices: Any) -> torch.Tensor: ...
