"""Explorer: the views of one lens composed, with linked selection."""
from __future__ import annotations

import ipywidgets
import traitlets as t

from ._base import STATIC, LensWidget, check_layer, check_lens, check_target, class_options, vocabulary
from .audit import AuditView
from .gallery import ConceptGallery, label_table
from .map import SemanticMap
from .sankey import AttributionSankey
from .search import SearchBox

__all__ = ["Explorer", "ExplorerHeader"]


class ExplorerHeader(LensWidget):
    """The Explorer's title bar: the lens at a glance and the current (linked) selection.

    Traits: ``summary`` (dict: layers with component counts, m, classes), ``selection``,
    ``selection_label`` (label of the selected component, "" = unlabelled), ``n_views``.
    """

    _esm = STATIC / "explorer.js"
    summary = t.Dict().tag(sync=True)
    selection_label = t.Unicode("").tag(sync=True)
    n_views = t.Int(0).tag(sync=True)

    def __init__(self, lens, concepts=None, **kwargs):
        self._concepts = vocabulary(lens, concepts)
        self._cache: dict = {}
        layers = [{"name": l, "components": int(lens.num_components(l))} for l in lens.layers]
        names = getattr(lens, "class_names", None) or []
        super().__init__(lens, summary={"layers": layers, "m": int(getattr(lens, "m", 0) or 0),
                                        "classes": len(names)}, **kwargs)
        self.observe(lambda _c: self._guard(self._label), names=["selection"])

    def _label(self) -> None:
        sel = self.selection or {}
        lab = None
        if self._concepts and sel.get("layer") in self.lens.layers:
            lab = label_table(self.lens, sel["layer"], self._concepts, self._cache).get(sel["component"])
        self.selection_label = lab or ""


class Explorer(ipywidgets.VBox):
    """``Explorer(lens, layer=None, concepts=None, target=None, valid=(), spurious=())``.

    Search box and semantic map on top, the concept gallery and the attribution Sankey below,
    the audit (when valid or spurious concepts are given) at the bottom. Selecting a component
    in any view selects it in all of them: every view's ``selection`` trait is linked
    (``traitlets.link``). The search query colours the map by score; the audit's concepts and
    the Sankey's target feed the map's category / relevance colourings.

    Attributes: ``header, search, map, gallery, sankey, audit`` (None when not shown),
    ``views`` (all of them), ``selection`` (the shared selection dict).
    """

    def __init__(self, lens, layer: str | None = None, concepts=None, target: int | None = None,
                 valid=(), spurious=(), k: int = 10, **kwargs):
        check_lens(lens, "Explorer")
        layers = list(lens.layers)
        layer = check_layer(layers[-1] if layer is None else layer, layers)
        concepts = vocabulary(lens, concepts)
        has_classes = bool(class_options(lens))
        if target is None and has_classes:
            target = 0
        elif target is not None:
            target = check_target(lens, target)
        self.header = ExplorerHeader(lens, concepts=concepts)
        self.search = SearchBox(lens, k=k, concepts=concepts)
        self.map = SemanticMap(lens, layer, concepts=concepts, target=target, valid=valid, spurious=spurious)
        self.gallery = ConceptGallery(lens, layer, 0, concepts=concepts)
        self.sankey = AttributionSankey(lens, target, concepts=concepts or None) if has_classes else None
        self.audit = (AuditView(lens, valid, spurious, layer, target)
                      if has_classes and (valid or spurious) else None)
        self.views = [v for v in (self.header, self.search, self.map, self.gallery, self.sankey, self.audit) if v]
        self.header.n_views = len(self.views) - 1
        self.header.selection = dict(self.gallery.selection)  # before linking: link copies source -> target
        self._links = [t.link((self.header, "selection"), (v, "selection")) for v in self.views[1:]]
        self._links.append(t.dlink((self.search, "query"), (self.map, "query")))
        if self.sankey is not None:
            self._links.append(t.dlink((self.sankey, "target"), (self.map, "target")))
        if self.audit is not None:
            self._links += [t.dlink((self.audit, "valid"), (self.map, "valid")),
                            t.dlink((self.audit, "spurious"), (self.map, "spurious"))]

        def cell(w, flex):
            w.layout = ipywidgets.Layout(flex=flex, min_width="0", width="auto")
            return w

        row = dict(layout=ipywidgets.Layout(width="100%", align_items="stretch", grid_gap="8px"))
        rows = [self.header,
                ipywidgets.HBox([cell(self.search, "2 1 0"), cell(self.map, "3 1 0")], **row),
                ipywidgets.HBox([cell(self.gallery, "2 1 0")] + ([cell(self.sankey, "3 1 0")] if self.sankey else []),
                                **row)]
        if self.audit is not None:
            rows.append(self.audit)
        super().__init__(rows, **kwargs)
        self.add_class("slw-explorer-box")

    def _display_(self):
        """How marimo shows the explorer (its display protocol; Jupyter uses the VBox): marimo
        renders anywidgets but not ipywidgets' boxes, so the same views, linked as above, are laid
        out with marimo's own stacks."""
        import marimo as mo

        def row(*views):
            return mo.hstack([v for v in views if v is not None], widths=[2, 3][: sum(v is not None for v in views)],
                             align="start", gap=0.5)

        return mo.vstack([self.header, row(self.search, self.map), row(self.gallery, self.sankey)]
                         + ([self.audit] if self.audit is not None else []), gap=0.5)

    @property
    def selection(self) -> dict:
        return self.header.selection

    def select(self, layer: str, component: int) -> None:
        self.header.select(layer, component)
