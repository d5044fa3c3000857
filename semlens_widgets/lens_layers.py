"""The analysed layers of a Lens: validated once against the model, checked on every call.

What a layer *name* means (``"name"``, ``"name@i"``, ``"name[j]"``) and how its output is read as
components is defined in :mod:`semlens_widgets.kernels.hooks`; this class holds the names a
Lens analyses and is the one place where the Lens and its parts check a layer argument. A new
kind of layer (e.g. a sparse autoencoder's latents on top of a module, ``"block4:sae"``) is
registered here (which names exist, which module they read) and parsed in ``kernels.hooks``.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from semlens_widgets.kernels.hooks import LayerSpec, require_whole_module, resolve_layers

__all__ = ["LayerSet"]


class LayerSet:
    """The layer names of a Lens, in the order given.

    model: the network; names: layer names (a str is one layer). Unknown modules, duplicates and
    non-str names raise here, before any work (:func:`~semlens_widgets.kernels.hooks.resolve_layers`).
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | str):
        self._specs: dict[str, LayerSpec] = {n: spec for n, (spec, _) in resolve_layers(model, names).items()}

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def __iter__(self):
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, layer: Any) -> bool:
        return isinstance(layer, str) and layer in self._specs

    def check(self, layer: Any) -> str:
        """``layer`` when this Lens analyses it, else ValueError naming the Lens's layers."""
        if layer not in self:
            raise ValueError(f"unknown layer {layer!r}; this Lens has layers {self.names}")
        return layer

    def check_many(self, layers: Any) -> list[str]:
        """None: all layers; a str: one layer; a non-empty list: each checked."""
        if layers is None:
            return self.names
        if isinstance(layers, str):
            layers = [layers]
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"layers must be a layer name or a non-empty list of them, got {layers!r}")
        return [self.check(layer) for layer in layers]

    def crp(self, layer: Any) -> str:
        """``layer`` when relevance can be computed for it (a whole module output, what CRP
        conditions on), else ValueError saying why."""
        layer = self.check(layer)
        require_whole_module(self._specs[layer])
        return layer

    def crp_layers(self) -> list[str]:
        """The layers relevance can be computed for, in order."""
        return [n for n, s in self._specs.items() if s.call is None and s.element is None]
