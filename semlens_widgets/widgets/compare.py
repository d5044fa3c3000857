"""CompareView: two models side by side (paper eqs. 5/6)."""
from __future__ import annotations

import traitlets as t

from ._base import STATIC, LensWidget, MessageError, WidgetValueError, check_layer, check_lens, finite, get_str
from .gallery import label_table

__all__ = ["CompareView"]


def _default_compare():
    from ..lens_semantics import compare

    return compare


class CompareView(LensWidget):
    """``CompareView(lens_a, lens_b, layer_a, layer_b, concepts=None, names=("A", "B"))``:
    S(A->B), S(B->A), shared and unique concepts, label counts, and for a clicked concept the
    components that carry it in both models with their concept examples.

    Traits
    ------
    names: [str, str]; layer_a, layer_b: str; s_ab, s_ba: float
    shared, unique_a, unique_b: list[str]
    counts: list[dict]   concept, count_a, count_b
    concept: str         the concept whose examples are shown ("" = none)
    components_a, components_b: list[int]   components labelled ``concept`` in A and B

    Messages: ``{"type": "concept", "concept"}``, plus ``select`` and ``thumbs`` with
    ``"side": "a" | "b"`` (which model's crops).
    """

    _esm = STATIC / "compare.js"
    names = t.List(t.Unicode(), default_value=["A", "B"]).tag(sync=True)
    layer_a = t.Unicode("").tag(sync=True)
    layer_b = t.Unicode("").tag(sync=True)
    s_ab = t.Float(None, allow_none=True).tag(sync=True)
    s_ba = t.Float(None, allow_none=True).tag(sync=True)
    shared = t.List(t.Unicode()).tag(sync=True)
    unique_a = t.List(t.Unicode()).tag(sync=True)
    unique_b = t.List(t.Unicode()).tag(sync=True)
    counts = t.List(t.Dict()).tag(sync=True)
    concept = t.Unicode("").tag(sync=True)
    components_a = t.List(t.Int()).tag(sync=True)
    components_b = t.List(t.Int()).tag(sync=True)

    _handlers = {**LensWidget._handlers, "concept": "_msg_concept"}

    def __init__(self, lens_a, lens_b, layer_a: str | None = None, layer_b: str | None = None,
                 concepts=None, names=("A", "B"), compare=None, **kwargs):
        check_lens(lens_a, "CompareView (lens_a)")
        check_lens(lens_b, "CompareView (lens_b)")
        layer_a = lens_a.layers[-1] if layer_a is None else layer_a
        layer_b = lens_b.layers[-1] if layer_b is None else layer_b
        for lens, layer, side in ((lens_a, layer_a, "A"), (lens_b, layer_b, "B")):
            try:
                check_layer(layer, list(lens.layers))
            except WidgetValueError as err:
                raise WidgetValueError(f"model {side}: {err}") from None
        if (isinstance(names, str) or not isinstance(names, (list, tuple)) or len(names) != 2
                or not all(isinstance(n, str) and n.strip() for n in names)):
            raise WidgetValueError(f"names={names!r:.80} is not accepted: expected two non-empty strings, "
                                   "e.g. ('clean', 'poisoned')")
        self.lens_b = lens_b
        self._concepts = list(concepts or [])
        self._cache_a: dict = {}
        self._cache_b: dict = {}
        compare = compare or _default_compare()
        res = compare(lens_a, lens_b, layer_a, layer_b, **({"concepts": self._concepts} if concepts else {}))
        self.comparison = res
        super().__init__(lens_a, names=[str(n) for n in names], layer_a=layer_a, layer_b=layer_b,
                         s_ab=finite(res.s_ab), s_ba=finite(res.s_ba), shared=[str(s) for s in res.shared],
                         unique_a=[str(s) for s in res.unique_a], unique_b=[str(s) for s in res.unique_b],
                         counts=[{"concept": str(r["concept"]), "count_a": int(r["count_a"]),
                                  "count_b": int(r["count_b"])} for r in res.counts.to_dict("records")],
                         **kwargs)
        if not self._concepts:
            self._concepts = [c["concept"] for c in self.counts]

    @t.validate("concept")
    def _valid_concept(self, proposal):
        v = proposal["value"]
        known = getattr(self, "_concepts", [])
        if v and v not in known:
            raise WidgetValueError(f"concept={v!r:.80} is not accepted; accepted: '' (none) or one of {known[:20]}")
        return v

    def _side(self, content: dict) -> str:
        return get_str(content, "side", default="a", choices=("a", "b"))

    def _lens_for(self, content: dict):
        # the side, not the lens object, says which layer is shown: A and B may be one lens
        # (two of its layers compared)
        self._side_now = self._side(content)
        return self.lens_b if self._side_now == "b" else self.lens

    def _layers_of(self, lens) -> list[str]:
        return [self.layer_b] if getattr(self, "_side_now", "a") == "b" else [self.layer_a]

    def _msg_select(self, content: dict, buffers) -> dict:
        if self._side(content) == "b":  # the linked selection is model A's
            return {}
        return super()._msg_select(content, buffers)

    def _msg_concept(self, content: dict, buffers) -> dict:
        concept = get_str(content, "concept")
        if concept and concept not in self._concepts:
            raise MessageError(f"unknown concept {concept!r:.80}; known: {self._concepts[:20]}")
        groups = []
        for lens, layer, cache in ((self.lens, self.layer_a, self._cache_a), (self.lens_b, self.layer_b, self._cache_b)):
            labels = label_table(lens, layer, self._concepts, cache) if concept else {}
            groups.append(sorted(c for c, l in labels.items() if l == concept))
        with self.hold_trait_notifications():
            self.concept = concept
            self.components_a, self.components_b = groups
        return {}
