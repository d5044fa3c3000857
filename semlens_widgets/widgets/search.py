"""SearchBox: text (or image) probe -> ranked components with score bars, labels, thumbnails."""
from __future__ import annotations

import torch
import traitlets as t

from ._base import STATIC, LensWidget, MessageError, clean, finite, get_int, get_str

__all__ = ["SearchBox"]


class SearchBox(LensWidget):
    """Search the components of a lens by text or by an example image (DESIGN eq. 4).

    ``SearchBox(lens, layer=None, k=10)``. Typing in the box sends a ``search`` message; the
    kernel runs ``lens.search`` and fills ``results``; each result row lazily asks for its
    concept-example thumbnails.

    Traits
    ------
    query: str            the text probe ("" = nothing)
    probe_index: int|None dataset index of an image probe (used instead of the text when set)
    layer: str            "" = all layers, else one of ``layers``
    layers: list[str]     the lens' layers
    k: int                number of results (1..200)
    n_thumbs: int         thumbnails per result row
    num_samples: int      dataset size (bounds of the image probe)
    results: list[dict]   ``rank, layer, component, score, label`` per hit
    busy: bool

    Messages: ``{"type": "search", "query", "layer"?, "k"?}``,
    ``{"type": "search_image", "index", "layer"?, "k"?}``, plus ``select`` and ``thumbs``.
    """

    _esm = STATIC / "search.js"
    query = t.Unicode("").tag(sync=True)
    probe_index = t.Int(None, allow_none=True).tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode()).tag(sync=True)
    k = t.Int(10).tag(sync=True)
    n_thumbs = t.Int(6).tag(sync=True)
    num_samples = t.Int(0).tag(sync=True)
    results = t.List(t.Dict()).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)

    _handlers = {**LensWidget._handlers, "search": "_msg_search", "search_image": "_msg_search_image"}

    def __init__(self, lens, layer: str | None = None, k: int = 10, query: str = "", n_thumbs: int = 6,
                 **kwargs):
        layers = list(lens.layers)
        if layer is not None and layer not in layers:
            raise ValueError(f"unknown layer {layer!r}; known layers: {layers} (or None for all)")
        if not 1 <= int(k) <= 200:
            raise ValueError(f"k must be in 1..200, got {k}")
        try:
            num_samples = len(lens.dataset)
        except Exception:  # noqa: BLE001 - an iterable dataset without len: no image probe
            num_samples = 0
        super().__init__(lens, layers=layers, layer=layer or "", k=int(k), n_thumbs=int(n_thumbs),
                         num_samples=num_samples, **kwargs)
        self._quiet = False  # True while a message sets several traits: one search at the end
        self.observe(self._on_change, names=["query", "layer", "k", "probe_index"])
        if query:
            self.query = query

    def _on_change(self, _change) -> None:
        if not self._quiet:
            self._guard(self._run)

    # -- messages
    def _common(self, content: dict) -> None:
        if "layer" in content:
            layer = get_str(content, "layer")
            if layer:
                self._check_layer(self.lens, layer)
            self.layer = layer
        if "k" in content:
            self.k = get_int(content, "k", lo=1, hi=200)

    def _msg_search(self, content: dict, buffers) -> dict:
        query = get_str(content, "query")
        self._quiet = True
        try:
            self._common(content)
            self.probe_index = None
            self.query = query
        finally:
            self._quiet = False
        self._run()
        return {"n": len(self.results)}

    def _msg_search_image(self, content: dict, buffers) -> dict:
        if self.num_samples <= 0:
            raise MessageError("this lens' dataset has no length: image probes are not available")
        index = get_int(content, "index", lo=0, hi=self.num_samples - 1)
        self._quiet = True
        try:
            self._common(content)
            self.probe_index = index
        finally:
            self._quiet = False
        self._run()
        return {"n": len(self.results)}

    # -- the search itself (a Lens call)
    def _run(self) -> None:
        layer = self.layer or None
        if self.probe_index is not None:
            probe = self.lens.images(torch.tensor([self.probe_index]))  # [1, 3, H, W] in [0, 1]
        elif self.query.strip():
            probe = self.query.strip()
        else:
            self.results = []
            return
        self.busy = True
        try:
            df = self.lens.search(probe, layer=layer, k=self.k)
        finally:
            self.busy = False
        self.results = [
            {"rank": int(r.rank), "layer": str(r.layer), "component": int(r.component),
             "score": finite(r.score), "label": clean(r.label)}
            for r in df.itertuples(index=False)
        ]
        self.error = ""
