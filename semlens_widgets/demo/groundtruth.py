"""Ground truth of the demo world: which annotated concept each component responds to.

For a component k of layer l, its pooled activation over the images of a demo dataset is
compared with every concept's presence: ``AUC(c) = P(act(x+) > act(x-))`` for x+ an image that
contains concept c and x- one that does not (ties count 1/2). The concept with the highest AUC
is the component's ground-truth concept, and that AUC says how strongly the component carries
it; ``AUC >= 0.9`` marks a component with a *clear* ground-truth concept.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from semlens_widgets.kernels.faithfulness import roc_auc

from .world import CONCEPTS, VOCABULARY

__all__ = ["auc_matrix", "GroundTruth", "CLEAR_AUC"]

#: AUC above which a component has a clear ground-truth concept.
CLEAR_AUC = 0.9


#: AUC of every score column against every label column (Mann-Whitney U, ties 1/2): one
#: implementation, the label-faithfulness kernel's.
auc_matrix = roc_auc


def _pool(out: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, C, ...] layer output -> [B, C] (max / mean / absmax / absmean over the rest)."""
    if out.dim() == 2:
        return out
    flat = out.flatten(2)
    if pooling == "max":
        return flat.amax(2)
    if pooling == "mean":
        return flat.mean(2)
    if pooling == "absmax":
        return flat.abs().amax(2)
    if pooling == "absmean":
        return flat.abs().mean(2)
    raise ValueError(f"unknown pooling {pooling!r}; expected one of ['max', 'mean', 'absmax', 'absmean']")


@torch.no_grad()
def layer_activations(
    model: torch.nn.Module, dataset, layer: str, pooling: str = "max", batch_size: int = 256
) -> torch.Tensor:
    """Pooled activations FloatTensor [N, C] of ``layer`` over a DemoDataset (in order)."""
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"unknown layer {layer!r}; the model has {[n for n in modules if n]}")
    store: list[torch.Tensor] = []
    handle = modules[layer].register_forward_hook(lambda m, i, o: store.append(_pool(o.detach(), pooling).float().cpu()))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for i in range(0, len(dataset), batch_size):
            x = dataset.images(range(i, min(i + batch_size, len(dataset)))).to(device)
            model(x)
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(store)


class GroundTruth:
    """Ground-truth concepts of the components of a model on an annotated demo dataset.

    ``gt = GroundTruth(model, dataset)``; ``gt.table("block4")`` -> DataFrame with one row per
    component: ``layer, component, concept, category, auc, runner_up, runner_up_auc, clear``;
    ``gt.component("block4", 7)`` -> that row as a dict; ``gt.aucs("block4")`` -> DataFrame
    [C x concepts] of all AUCs.

    The activations come from the model (max-pooled, like the Lens default) or are given:
    ``gt.table(layer, activations=acts)`` with ``acts [N, C]`` aligned with the dataset, or
    ``gt.table(layer, activations=lens)`` to use the lens's model and pooling.
    """

    def __init__(self, model: torch.nn.Module, dataset, pooling: str = "max"):
        if not hasattr(dataset, "concept_matrix"):
            raise TypeError(
                f"GroundTruth needs an annotated demo dataset (with .concept_matrix), got {type(dataset).__name__}"
            )
        self.model = model
        self.dataset = dataset
        self.pooling = pooling
        self._acts: dict[tuple[str, str], torch.Tensor] = {}
        presence = dataset.concept_matrix
        keep = presence.any(0) & ~presence.all(0)  # concepts with positives and negatives
        self.concepts: list[str] = [c for c, k in zip(CONCEPTS, keep.tolist()) if k]
        self.presence = presence[:, keep]

    def activations(self, layer: str, pooling: str | None = None) -> torch.Tensor:
        """Pooled activations [N, C] of ``layer`` over the dataset (cached)."""
        pooling = pooling or self.pooling
        key = (layer, pooling)
        if key not in self._acts:
            self._acts[key] = layer_activations(self.model, self.dataset, layer, pooling)
        return self._acts[key]

    def _resolve(self, layer: str, activations: Any) -> torch.Tensor:
        if activations is None:
            return self.activations(layer)
        if isinstance(activations, torch.Tensor):
            if activations.dim() != 2 or activations.shape[0] != len(self.dataset):
                raise ValueError(
                    f"activations must be [N={len(self.dataset)}, C], got shape {tuple(activations.shape)}"
                )
            return activations
        # a Lens: its model and pooling on this dataset
        model = getattr(activations, "model", None)
        if model is None:
            raise TypeError(f"activations must be None, a Tensor [N, C] or a Lens, got {type(activations).__name__}")
        pooling = getattr(activations, "pooling", self.pooling)
        if model is self.model:
            return self.activations(layer, pooling)
        key = (layer, pooling, id(model))
        if key not in self._acts:
            self._acts[key] = layer_activations(model, self.dataset, layer, pooling)
        return self._acts[key]

    def aucs(self, layer: str, activations: Any = None) -> pd.DataFrame:
        """AUC of every component (rows) for every concept (columns)."""
        acts = self._resolve(layer, activations)
        a = auc_matrix(acts, self.presence)
        return pd.DataFrame(a, columns=self.concepts, index=pd.RangeIndex(a.shape[0], name="component"))

    def table(self, layer: str, activations: Any = None) -> pd.DataFrame:
        """One row per component: its best concept, category, AUC, the runner-up concept and
        AUC, and ``clear`` (AUC >= CLEAR_AUC)."""
        a = self.aucs(layer, activations).to_numpy()
        a = np.nan_to_num(a, nan=0.0)
        order = np.argsort(-a, axis=1, kind="mergesort")
        best, second = order[:, 0], order[:, 1]
        rows = np.arange(a.shape[0])
        concept = [self.concepts[j] for j in best]
        return pd.DataFrame(
            {
                "layer": layer,
                "component": rows,
                "concept": concept,
                "category": [VOCABULARY[c] for c in concept],
                "auc": a[rows, best],
                "runner_up": [self.concepts[j] for j in second],
                "runner_up_auc": a[rows, second],
                "clear": a[rows, best] >= CLEAR_AUC,
            }
        )

    def component(self, layer: str, k: int, activations: Any = None) -> dict:
        """The ground truth of component ``k`` of ``layer`` as a dict (see :meth:`table`)."""
        t = self.table(layer, activations)
        if not 0 <= int(k) < len(t):
            raise IndexError(f"component {k} out of range for layer {layer!r} with {len(t)} components")
        return t.iloc[int(k)].to_dict()
