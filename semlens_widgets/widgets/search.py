"""SearchBox: text (or image) probe -> ranked components with score bars, labels, thumbnails."""
from __future__ import annotations

import torch
import traitlets as t

from ._base import (STATIC, LensWidget, MessageError, WidgetValueError, check_int, check_layer, check_query,
                    check_lens, clean, finite, get_int, get_str, vocabulary)

__all__ = ["SearchBox"]

MAX_K = 200           # most hits per search
MAX_THUMBS_ROW = 12   # most thumbnails per result row
N_SUGGEST = 12        # label groups offered before anything is typed


class SearchBox(LensWidget):
    """Search the components of a lens by text or by an example image (paper eq. 4).

    ``SearchBox(lens, layer=None, k=10, query="", n_thumbs=6, concepts=None)``. Typing in the box
    sends a ``search`` message; the kernel runs ``lens.search`` and fills ``results``; each result
    row lazily asks for its concept-example thumbnails. Hits whose score is <= 0 (no better than
    the empty prompt, paper eq. 4) are listed apart, under a separator. Before anything is typed
    the view offers the largest label groups of ``concepts`` (default: the lens' vocabulary).

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
    suggestions: list[dict]  ``concept, components``: the largest label groups (clickable)
    gaps: list[str]          concepts of the vocabulary that no searched component carries
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

    suggestions = t.List(t.Dict()).tag(sync=True)
    gaps = t.List(t.Unicode()).tag(sync=True)

    _handlers = {**LensWidget._handlers, "search": "_msg_search", "search_image": "_msg_search_image"}

    # -- trait validation (from Python and from the front end alike)
    @t.validate("k")
    def _valid_k(self, proposal):
        return check_int("k", proposal["value"], 1, MAX_K)

    @t.validate("n_thumbs")
    def _valid_n_thumbs(self, proposal):
        return check_int("n_thumbs", proposal["value"], 0, MAX_THUMBS_ROW)

    @t.validate("layer")
    def _valid_layer(self, proposal):
        v = proposal["value"]
        return v if v == "" else check_layer(v, list(self.layers))

    @t.validate("query")
    def _valid_query(self, proposal):
        return check_query(proposal["value"])

    @t.validate("probe_index")
    def _valid_probe(self, proposal):
        v = proposal["value"]
        if v is None:
            return None
        if self.num_samples <= 0:
            raise WidgetValueError(f"probe_index={v!r}: this lens' dataset has no length, image probes "
                                   "are not available (accepted: None)")
        return check_int("probe_index", v, 0, self.num_samples - 1)

    def __init__(self, lens, layer: str | None = None, k: int = 10, query: str = "", n_thumbs: int = 6,
                 concepts=None, **kwargs):
        check_lens(lens, "SearchBox")
        layers = list(lens.layers)
        if layer is not None:
            check_layer(layer, layers, allow_none=True)
        check_int("k", k, 1, MAX_K)
        check_int("n_thumbs", n_thumbs, 0, MAX_THUMBS_ROW)
        if not isinstance(query, str):
            raise WidgetValueError(f"query={query!r:.80} is not accepted: expected a str")
        try:
            num_samples = len(lens.dataset)
        except Exception:  # noqa: BLE001 - an iterable dataset without len: no image probe
            num_samples = 0
        super().__init__(lens, layers=layers, layer=layer or "", k=int(k), n_thumbs=int(n_thumbs),
                         num_samples=num_samples, **kwargs)
        self._concepts = vocabulary(lens, concepts)
        self._guard(self._suggest)
        self._quiet = False  # True while a message sets several traits: one search at the end
        self.observe(self._on_change, names=["query", "layer", "k", "probe_index"])
        self.observe(lambda _c: self._guard(self._suggest), names=["layer"])
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

    def _suggest(self) -> None:
        """The largest label groups of the vocabulary (``lens.label(...).groups`` summed over the
        searched layers): shown as clickable concepts before anything is typed."""
        if not self._concepts:
            self.suggestions, self.gaps = [], []
            return
        counts: dict[str, int] = {}
        for layer in ([self.layer] if self.layer else self.layers):
            for concept, comps in self.lens.label(list(self._concepts), layer).groups.items():
                if comps:
                    counts[str(concept)] = counts.get(str(concept), 0) + len(comps)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:N_SUGGEST]
        with self.hold_trait_notifications():
            self.suggestions = [{"concept": c, "components": n} for c, n in top]
            self.gaps = [c for c in self._concepts if c not in counts]  # paper eq. 5: gaps

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
