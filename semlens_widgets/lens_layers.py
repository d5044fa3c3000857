"""The analysed layers of a Lens: validated once against the model, checked on every call.

What a layer *name* means (``"name"``, ``"name@i"``, ``"name[j]"``, ``"name:sae"``) and how its
output is read as components is defined in :mod:`semlens_widgets.kernels.hooks`; this class
holds the names a Lens analyses and is the one place where the Lens and its parts check a
layer argument. It also holds the sparse autoencoders of the SAE layers (``"block4:sae"``, the
latents of ``saes["block4"]`` on block4's output), which every step that runs the model passes
to the kernels (:attr:`LayerSet.saes`), and their identities for the fingerprints.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from semlens_widgets.kernels.hooks import LayerSpec, check_saes, require_whole_module, resolve_layers

__all__ = ["LayerSet"]


class LayerSet:
    """The layer names of a Lens, in the order given, and the SAEs of its SAE layers.

    model: the network; names: layer names (a str is one layer); saes: ``{"LAYER": SAE}`` for
    the SAE layers ``"LAYER:sae"`` among the names (every SAE given must have its layer).
    Unknown modules, duplicates, non-str names and SAE layers without an SAE raise here, before
    any work (:func:`~semlens_widgets.kernels.hooks.resolve_layers`).
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | str, saes: Mapping[str, Any] | None = None):
        from semlens_widgets.sae import SAE

        saes = check_saes(saes)
        for base, sae in saes.items():
            if not isinstance(sae, SAE):
                raise TypeError(
                    f"saes[{base!r}] must be a semlens_widgets.SAE (wrap another sparse autoencoder's weights "
                    f"with SAE(W_enc, b_enc, W_dec, b_dec, activation=..., k=...)), got {type(sae).__name__}"
                )
        self._specs: dict[str, LayerSpec] = {n: spec for n, (spec, _) in resolve_layers(model, names, saes).items()}
        used = {spec.base for spec in self._specs.values() if spec.sae}
        unused = sorted(set(saes) - used)
        if unused:
            raise ValueError(
                f"saes has SAEs for {unused} but layers has no {[u + ':sae' for u in unused]}; add the SAE "
                f"layer (e.g. layers=[..., {unused[0] + ':sae'!r}]) or drop the SAE"
            )
        self._saes: dict[str, Any] = {base: saes[base] for base in used}

    @property
    def saes(self) -> dict[str, Any]:
        """``{"LAYER": SAE}`` of the SAE layers (what the kernels take as ``saes=``)."""
        return dict(self._saes)

    def sae_identities(self) -> dict[str, dict]:
        """``{"LAYER": sae.identity}`` (weights digest, activation, k, sizes) for the fingerprints."""
        return {base: sae.identity for base, sae in sorted(self._saes.items())}

    def to(self, device: Any) -> "LayerSet":
        """Move the SAEs to ``device`` (where the model runs) and put them in eval mode."""
        for sae in self._saes.values():
            sae.to(device).eval()
        return self

    def is_sae(self, layer: str) -> bool:
        """Whether ``layer`` (a layer of this Lens) is an SAE layer."""
        return self._specs[self.check(layer)].sae

    def base(self, layer: str) -> str:
        """The layer an SAE layer reads (``"block4"`` of ``"block4:sae"``); a plain layer itself."""
        return self._specs[self.check(layer)].base

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

    def crp(self, layer: Any, *, flows: bool = False) -> str:
        """``layer`` when relevance can be computed for it (a whole module output, what CRP
        conditions on; for an SAE layer, its base layer's), else ValueError saying why.

        ``flows=True`` (attribution graphs: relevance conditioned on a group of components and
        let through to the layer below) also refuses SAE layers: CRP conditions on module
        outputs, and the latents are not one (they are a read-out of their base layer, which
        the model's prediction does not pass through).
        """
        layer = self.check(layer)
        spec = self._specs[layer]
        if flows and spec.sae:
            raise ValueError(
                f"attribution graphs cannot include the SAE layer {layer!r}: CRP conditions relevance on "
                f"module outputs, and the SAE's latents are a read-out of {spec.base!r} that the model's "
                f"prediction does not pass through; use {spec.base!r} in the graph, and lens.relevance / "
                f"lens.audit for the latents (their relevance is shared out of {spec.base!r}'s)"
            )
        require_whole_module(spec)
        return layer

    def flow_layers(self) -> list[str]:
        """The layers attribution graphs can include (``crp(layer, flows=True)`` accepts them):
        whole module outputs, not SAE layers; in order."""
        return [n for n, s in self._specs.items() if s.call is None and s.element is None and not s.sae]

    def crp_layers(self) -> list[str]:
        """The layers relevance can be computed for, in order (SAE layers whose base layer is one)."""
        return [n for n, s in self._specs.items() if s.call is None and s.element is None]
