"""ConceptGallery: the concept examples of one component, its label, measures and top classes."""
from __future__ import annotations

import torch
import traitlets as t

from ._base import (MAX_THUMBS, STATIC, THUMB_SIZES, LensWidget, MessageError, WidgetValueError, check_int,
                    check_layer, check_lens, clean, finite, get_int, get_str, resize_max, to_uint8, vocabulary)

__all__ = ["ConceptGallery", "component_info"]


def label_table(lens, layer: str, concepts: list[str] | None, cache: dict) -> dict[int, str | None]:
    """component -> label from ``lens.label(concepts, layer)`` (cached per widget)."""
    if not concepts:
        return {}
    key = ("label", layer, tuple(concepts))
    if key not in cache:
        table = lens.label(list(concepts), layer).table
        cache[key] = {int(c): clean(l) for c, l in zip(table["component"].tolist(), table["label"].tolist())}
    return cache[key]


def class_totals(lens, layer: str, cache: dict):
    """Per class the summed |relevance| of all components of ``layer`` (``lens.class_relevance``,
    [K, C] -> [K]): the denominator of "share of the class's relevance". None when the lens has
    no class relevance."""
    fn = getattr(lens, "class_relevance", None)
    if fn is None:
        return None
    key = ("class_totals", layer)
    if key not in cache:
        cache[key] = [float(v) for v in fn(layer).abs().sum(1)]
    return cache[key]


def component_info(lens, layer: str, component: int, concepts: list[str] | None, cache: dict,
                   n_classes: int = 3) -> dict:
    """What the gallery shows about a component, read from Lens results (no computation here):
    label, measures (every numeric column of ``lens.measures``), top classes (with ``share``: the
    component's part of the class's summed |relevance| in that layer), activations."""
    info: dict = {"layer": layer, "component": component,
                  "label": label_table(lens, layer, concepts, cache).get(component)}
    key = ("measures", layer)
    if key not in cache:
        df = lens.measures(layer)
        cols = [c for c in df.columns if c not in ("layer", "component", "nearest") and df[c].dtype.kind in "fiu"]
        cache[key] = (df.set_index("component")[cols], cols)
    table, cols = cache[key]
    row = table.loc[component] if component in table.index else None
    info["measures"] = {} if row is None else {c: finite(row[c]) for c in cols}
    top_fn = getattr(lens, "top_classes", None)
    info["top_classes"] = []
    if top_fn is not None and (getattr(lens, "class_names", None) or getattr(lens, "num_classes", None)):
        key = ("top", layer)
        if key not in cache:
            cache[key] = top_fn(layer, n_classes)
        df = cache[key]
        sub = df[df["component"].to_numpy() == component]
        totals = class_totals(lens, layer, cache)
        info["top_classes"] = [
            {"class": int(c), "name": clean(nm) or f"class {int(c)}", "relevance": finite(r),
             "share": (finite(r / totals[int(c)]) if totals is not None and 0 <= int(c) < len(totals)
                       and totals[int(c)] > 0 else None)}
            for c, nm, r in zip(sub["class"].tolist(), sub["name"].tolist(), sub["relevance"].tolist())]
    ex = lens.examples(layer, component)
    info["indices"] = [int(i) for i in ex.indices]
    info["activations"] = [finite(a) for a in ex.activations]
    info["description"] = description_info(lens.stored_description(layer, component))
    return info


def description_info(desc) -> dict | None:
    """What the gallery shows of a component's last description (``lens.describe``, the LINE
    loop): the best concept and its AUC, whether it is polysemantic (and its senses), the
    concepts tried in order with their AUCs (None: the generator could not draw it, ``note``
    says why), and which concepts have generated images (``examples``)."""
    if desc is None:
        return None
    h = desc.history
    history = [{"round": int(r), "concept": str(c), "auc": finite(a), "note": clean(nt) or ""}
               for r, c, a, nt in zip(h["round"], h["concept"], h["auc"],
                                      h["note"] if "note" in h.columns else [""] * len(h))]
    examples = {str(c): int(v.shape[0]) for c, v in (desc.examples or {}).items() if int(v.shape[0])}
    return {"best": str(desc.best), "auc": finite(desc.auc), "polysemantic": bool(desc.polysemantic),
            "senses": [str(x) for x in (desc.senses or [])], "candidates": [str(x) for x in desc.candidates],
            "rounds": int(h["round"].max()) + 1 if len(h) else 0, "history": history, "examples": examples}


class ConceptGallery(LensWidget):
    """The m concept examples of a component (the paper's concept examples) with its label, clarity,
    polysemanticity and the classes it is most relevant for.

    ``ConceptGallery(lens, layer, k, concepts=None)``; ``concepts`` (a vocabulary) names the
    label via ``lens.label``. Arrow keys move to neighbouring components.

    Traits
    ------
    layer: str, component: int, layers: list[str], num_components: int
    mode: "crops" | "full"     crops, or full images with the crop box (and heatmap when known)
    info: dict                 label, measures, top_classes, indices, activations, description
                               (component_info; description: the last ``lens.describe`` or None)
    page_size: int             thumbnails per page (lazy)
    thumb_size: int            pixels (longest side) of the thumbnails sent

    Messages: ``{"type": "goto", "layer"?, "component"}``, ``{"type": "mode", "mode"}``, plus
    ``select`` and ``thumbs`` (``kind="generated"`` with ``concept``: the description's generated
    images of that concept). Selecting elsewhere (linked ``selection``) shows that component.
    """

    _esm = STATIC / "gallery.js"
    layer = t.Unicode("").tag(sync=True)
    component = t.Int(0).tag(sync=True)
    layers = t.List(t.Unicode()).tag(sync=True)
    num_components = t.Int(0).tag(sync=True)
    mode = t.Enum(["crops", "full"], default_value="crops").tag(sync=True)
    info = t.Dict().tag(sync=True)
    page_size = t.Int(30).tag(sync=True)
    thumb_size = t.Int(96).tag(sync=True)
    concepts = t.List(t.Unicode()).tag(sync=False)

    _handlers = {**LensWidget._handlers, "goto": "_msg_goto", "mode": "_msg_mode"}
    _thumb_kinds = ("crops", "full", "generated")

    # -- trait validation (from Python and from the front end alike)
    @t.validate("layer")
    def _valid_layer(self, proposal):
        layer = check_layer(proposal["value"], list(self.lens.layers))
        n = int(self.lens.num_components(layer))
        if not self._cross_validation_lock and not 0 <= self.component < n:
            raise WidgetValueError(f"layer={layer!r}: the shown component {self.component} is out of range "
                                   f"for it (0..{n - 1}); set both with gallery.show(layer, k)")
        return layer

    @t.validate("component")
    def _valid_component(self, proposal):
        n = int(self.lens.num_components(self.layer)) if self.layer in self.lens.layers else None
        return check_int("component", proposal["value"], 0, None if n is None else n - 1)

    @t.validate("page_size")
    def _valid_page_size(self, proposal):
        return check_int("page_size", proposal["value"], 1, MAX_THUMBS)

    @t.validate("thumb_size")
    def _valid_thumb_size(self, proposal):
        return check_int("thumb_size", proposal["value"], *THUMB_SIZES)

    def __init__(self, lens, layer: str | None = None, k: int = 0, concepts: list[str] | None = None,
                 page_size: int = 30, thumb_size: int = 96, **kwargs):
        check_lens(lens, "ConceptGallery")
        layers = list(lens.layers)
        layer = layers[-1] if layer is None else layer
        check_layer(layer, layers)
        n = int(lens.num_components(layer))
        k = check_int("k", k, 0, n - 1)  # 2.7 is refused, not shown as component 2
        check_int("page_size", page_size, 1, MAX_THUMBS)
        check_int("thumb_size", thumb_size, *THUMB_SIZES)
        self._cache: dict = {}
        super().__init__(lens, layers=layers, layer=layer, component=int(k), num_components=n,
                         page_size=int(page_size), thumb_size=int(thumb_size),
                         concepts=vocabulary(lens, concepts), **kwargs)
        self.selection = {"layer": layer, "component": int(k)}
        self._quiet = False
        self._guard(self._update)
        self.observe(lambda _c: self._quiet or self._guard(self._update), names=["layer", "component"])
        self.observe(self._on_selection, names=["selection"])

    def _on_selection(self, change) -> None:
        sel = change["new"] or {}
        layer, comp = sel.get("layer"), sel.get("component")
        if layer in self.layers and (layer, comp) != (self.layer, self.component):
            self._guard(lambda: self.show(layer, comp))  # the selection trait validated both

    def show(self, layer: str, component: int) -> None:
        """Show another component (also what the linked selection calls)."""
        layer = check_layer(layer, list(self.lens.layers))
        component = check_int("component", component, 0, int(self.lens.num_components(layer)) - 1)
        if (layer, component) == (self.layer, self.component):
            return
        self._quiet = True
        try:
            with self.hold_trait_notifications():  # validated together: the range depends on the layer
                self.layer = layer
                self.component = component
        finally:
            self._quiet = False
        self._update()

    def _update(self) -> None:
        self.num_components = int(self.lens.num_components(self.layer))
        self.info = component_info(self.lens, self.layer, self.component, self.concepts, self._cache)
        self.select(self.layer, self.component)
        self.error = ""

    def _msg_goto(self, content: dict, buffers) -> dict:
        layer = self._check_layer(self.lens, get_str(content, "layer", default=self.layer))
        comp = self._check_component(self.lens, layer, get_int(content, "component"))
        self.show(layer, comp)
        return {}

    def _thumb_images(self, lens, layer, comp, start, count, size, kind, content):
        """``kind="generated"`` (with ``concept``): the images the description's generator drew
        for that concept (kept by ``lens.describe``)."""
        if kind != "generated":
            return super()._thumb_images(lens, layer, comp, start, count, size, kind, content)
        concept = get_str(content, "concept", allow_empty=False)
        desc = lens.stored_description(layer, comp)
        examples = (desc.examples or {}) if desc is not None else {}
        if concept not in examples:
            raise MessageError(f"no generated images of {concept!r:.60} for {layer} #{comp}; "
                               f"described concepts with images: {sorted(examples)[:10]}")
        imgs = to_uint8(torch.as_tensor(examples[concept]))
        out, _ = resize_max(imgs[start:start + count], size)
        return out, int(imgs.shape[0]), {"concept": concept}, []

    def _msg_mode(self, content: dict, buffers) -> dict:
        self.mode = get_str(content, "mode", choices=("crops", "full"))
        return {}
