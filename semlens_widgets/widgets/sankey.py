"""AttributionSankey: concept nodes per layer and the relevance flowing between them."""
from __future__ import annotations

import traitlets as t

from ._base import (STATIC, LensWidget, MessageError, WidgetValueError, check_concepts, check_layers, check_lens,
                    check_target, class_options, clean, finite, flow_layers, get_int, get_str, vocabulary)

__all__ = ["AttributionSankey"]


class AttributionSankey(LensWidget):
    """The attribution graph of a class as a Sankey (the paper's attribution graph): ``lens.attribution_graph``.

    ``AttributionSankey(lens, target, layers=None, concepts=None)``; ``target`` is a class index
    or name; ``layers`` defaults to the model's own layers (not the SAE layers ``"x:sae"``). Per layer the view merges the unlabelled groups and the labels with less than 3 %
    of the layer's relevance into one hatched "other" node (click it to expand, "collapse" to
    merge again); every node shows its name, its number of components and its share of the
    class's relevance inside its box (the graph's unit: each sample's relevance at the top layer
    scaled to 1), and a legend says what band width and numbers mean. Clicking a
    node opens a gallery of its components (and selects its first component in linked views).

    Traits
    ------
    target: int, targets: [[index, name], ...]   the explained class and the picker's options
    layers: list[str]
    nodes: list[dict]   id, layer, label, components, relevance, labelled
    edges: list[dict]   source, target, weight (>= 0), signed_weight
    open_node: str      id of the node whose gallery is open ("" = none)

    Messages: ``{"type": "target", "target"}``, ``{"type": "open_node", "id"}`` (``id`` "" closes),
    plus ``select`` and ``thumbs``.
    """

    _esm = STATIC / "sankey.js"
    target = t.Int(0).tag(sync=True)
    targets = t.List().tag(sync=True)
    layers = t.List(t.Unicode()).tag(sync=True)
    nodes = t.List(t.Dict()).tag(sync=True)
    edges = t.List(t.Dict()).tag(sync=True)
    open_node = t.Unicode("").tag(sync=True)
    concepts = t.List(t.Unicode()).tag(sync=False)

    _handlers = {**LensWidget._handlers, "target": "_msg_target", "open_node": "_msg_open_node"}

    def __init__(self, lens, target: int | str = 0, layers=None, concepts=None, **kwargs):
        check_lens(lens, "AttributionSankey")
        all_layers = list(lens.layers)
        # by default the model's own layers: relevance does not flow through SAE layers ("x:sae")
        layers = check_layers(flow_layers(lens) if layers is None else layers, all_layers)
        target = check_target(lens, target)
        super().__init__(lens, target=target, targets=class_options(lens), layers=layers,
                         concepts=vocabulary(lens, concepts), **kwargs)
        self._guard(self._update)
        self.observe(lambda _c: self._guard(self._update), names=["target", "concepts", "layers"])

    # -- trait validation (from Python and from the front end alike)
    @t.validate("layers")
    def _valid_layers(self, proposal):
        return check_layers(proposal["value"], list(self.lens.layers))

    @t.validate("target")
    def _valid_target(self, proposal):
        return check_target(self.lens, proposal["value"])

    @t.validate("concepts")
    def _valid_concepts(self, proposal):
        return check_concepts("concepts", proposal["value"])

    @t.validate("open_node")
    def _valid_open_node(self, proposal):
        v = proposal["value"]
        ids = [n["id"] for n in self.nodes]
        if v and v not in ids:
            raise WidgetValueError(f"open_node={v!r:.80} is not a node id; accepted: '' (closed) or one of "
                                   f"{ids[:12]}{' ...' if len(ids) > 12 else ''}")
        return v

    def _update(self) -> None:
        g = self.lens.attribution_graph(self.target, self.layers, self.concepts or None)
        nodes = []
        for r in g.nodes.to_dict("records"):
            nodes.append({"id": str(r["id"]), "layer": str(r["layer"]), "label": clean(r.get("label")),
                          "components": [int(c) for c in r["components"]],
                          "relevance": finite(r.get("relevance")), "labelled": bool(r.get("labelled", True))})
        edges = []
        for r in g.edges.to_dict("records"):
            w = finite(r.get("weight")) or 0.0
            if w > 0:
                edges.append({"source": str(r["source"]), "target": str(r["target"]), "weight": w,
                              "signed_weight": finite(r.get("signed_weight", w))})
        with self.hold_trait_notifications():
            self.nodes = nodes
            self.edges = edges
            if self.open_node and self.open_node not in {n["id"] for n in nodes}:
                self.open_node = ""
        self.error = ""

    def _msg_target(self, content: dict, buffers) -> dict:
        hi = len(self.targets) - 1 if self.targets else None
        self.target = get_int(content, "target", lo=0, hi=hi)
        return {}

    def _msg_open_node(self, content: dict, buffers) -> dict:
        node_id = get_str(content, "id")
        if not node_id:
            self.open_node = ""
            return {}
        node = next((n for n in self.nodes if n["id"] == node_id), None)
        if node is None:
            raise MessageError(f"unknown node id {node_id!r:.80}")
        self.open_node = node_id
        if node["components"]:
            self.select(node["layer"], node["components"][0])
        return {}
