"""semlens_widgets: SemanticLens as a Jupyter-native widget extension.

Turn every component of a vision model (conv channel, MLP unit, SAE latent) into a vector in
the embedding space of a multimodal foundation model (CLIP), then search, label, map, audit and
compare them in notebook widgets. See the README and ``notebooks/quickstart.ipynb``.

Heavy parts (widgets, demo world) are imported lazily so that ``import semlens_widgets`` stays
fast and the kernels never pull in UI code.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FoundationModel": ("semlens_widgets.foundation", "FoundationModel"),
    "Lens": ("semlens_widgets.lens", "Lens"),
    "compare": ("semlens_widgets.lens_semantics", "compare"),
    "Store": ("semlens_widgets.store", "Store"),
    "SAE": ("semlens_widgets.sae", "SAE"),
    "SearchBox": ("semlens_widgets.widgets", "SearchBox"),
    "ConceptGallery": ("semlens_widgets.widgets", "ConceptGallery"),
    "SemanticMap": ("semlens_widgets.widgets", "SemanticMap"),
    "AttributionSankey": ("semlens_widgets.widgets", "AttributionSankey"),
    "AuditView": ("semlens_widgets.widgets", "AuditView"),
    "CompareView": ("semlens_widgets.widgets", "CompareView"),
    "Explorer": ("semlens_widgets.widgets", "Explorer"),
    "imagenet_unnormalize": ("semlens_widgets.lens", "imagenet_unnormalize"),
    "demo": ("semlens_widgets.demo", None),
    "lens": ("semlens_widgets.lens", None),
    "results": ("semlens_widgets.results", None),
    "kernels": ("semlens_widgets.kernels", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'semlens_widgets' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
