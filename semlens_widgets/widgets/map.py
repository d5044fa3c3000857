"""SemanticMap: the 2-D map (UMAP of the thetas) of one or several layers, drawn on a canvas."""
from __future__ import annotations

import numpy as np
import pandas as pd
import traitlets as t

from ..results import AUDIT_CATEGORIES
from ._base import (STATIC, LensWidget, MessageError, check_choice, check_concepts, check_query,
                    check_layers, check_lens, check_target, f32, get_str, get_str_list, i32, vocabulary)
from .gallery import label_table

__all__ = ["SemanticMap", "COLOR_MODES"]

COLOR_MODES = ("layer", "label", "score", "relevance", "category", "auc")
SIZE_MODES = ("none", "relevance")
UNLABELLED = "(unlabelled)"


class SemanticMap(LensWidget):
    """The semantic map of a lens: one point per component at ``lens.map(layer)``.

    ``SemanticMap(lens, layer=None, concepts=None, target=None, query="", valid=(), spurious=())``
    where ``layer`` is a layer name, a list of layers, or None (all layers). ``color_by=None``
    chooses from what the map shows: ``label`` when a component carries a concept of the
    vocabulary, else ``layer`` when several layers are shown, else ``relevance`` (with a target)
    or ``score`` (with a query). ``color_by="auc"`` colours each component by the AUC of its label
    (the label faithfulness stored by ``lens.faithfulness``; grey: not measured). The view shortens the empty gaps between islands of the UMAP
    (whose distances mean nothing) and turns the map's long axis along the canvas, fits the bulk
    of the points (outliers beyond Tukey's far fences stay reachable with "fit all"; "reset view"
    fits again), gives every shown label its own colour (beyond the 30-colour palette the
    smallest groups share a neutral "other") and writes each label where its points cluster.

    Arrays travel as binary buffers (float32 / int32 / uint16 bytes), never as JSON lists:

    Traits
    ------
    layers: list[str]        shown layers;   all_layers: list[str]
    n: int                   number of points
    xy: bytes                float32 [n, 2]
    layer_codes: bytes       uint16 [n]  index into ``layers``
    components: bytes        int32 [n]
    color_by: str            one of COLOR_MODES
    color_values: bytes      float32 [n] (score / relevance / auc; NaN = no value), else empty
    color_codes: bytes       uint16 [n] index into ``color_names`` (layer / label / category)
    color_names: list[str]   legend of the categorical modes
    color_note: str          why a mode shows nothing (e.g. "type a query")
    size_by: "none" | "relevance";  size_values: bytes float32 [n] in [0, 1]
    label_codes: bytes       uint16 [n] index into ``label_names`` (tooltips); label_names: list[str]
    query: str, target: int|None, concepts/valid/spurious: list[str]   inputs of the colourings
    n_selected: int          size of the last box/lasso selection (``.selected`` DataFrame)

    Messages: ``{"type": "color", "color_by"?, "size_by"?}``, ``{"type": "layers", "layers"}``,
    ``{"type": "select_many"}`` + one int32 buffer of point indices, plus ``select``, ``thumbs``.
    """

    _esm = STATIC / "map.js"
    layers = t.List(t.Unicode()).tag(sync=True)
    all_layers = t.List(t.Unicode()).tag(sync=True)
    n = t.Int(0).tag(sync=True)
    xy = t.Bytes(b"").tag(sync=True)
    layer_codes = t.Bytes(b"").tag(sync=True)
    components = t.Bytes(b"").tag(sync=True)
    color_by = t.Unicode("layer").tag(sync=True)
    color_values = t.Bytes(b"").tag(sync=True)
    color_codes = t.Bytes(b"").tag(sync=True)
    color_names = t.List(t.Unicode()).tag(sync=True)
    color_note = t.Unicode("").tag(sync=True)
    size_by = t.Unicode("none").tag(sync=True)
    size_values = t.Bytes(b"").tag(sync=True)
    label_codes = t.Bytes(b"").tag(sync=True)
    label_names = t.List(t.Unicode()).tag(sync=True)
    query = t.Unicode("").tag(sync=True)
    target = t.Int(None, allow_none=True).tag(sync=True)
    target_name = t.Unicode("").tag(sync=True)
    concepts = t.List(t.Unicode()).tag(sync=False)
    valid = t.List(t.Unicode()).tag(sync=False)
    spurious = t.List(t.Unicode()).tag(sync=False)
    n_selected = t.Int(0).tag(sync=True)

    _handlers = {**LensWidget._handlers, "color": "_msg_color", "layers": "_msg_layers",
                 "select_many": "_msg_select_many"}

    def __init__(self, lens, layer: str | list[str] | None = None, concepts=None, target: int | str | None = None,
                 query: str = "", valid=(), spurious=(), color_by: str | None = None,
                 size_by: str = "none", **kwargs):
        check_lens(lens, "SemanticMap")
        all_layers = list(lens.layers)
        layers = all_layers if layer is None else [layer] if isinstance(layer, str) else layer
        check_layers(layers, all_layers)
        if color_by is not None:
            check_choice("color_by", color_by, COLOR_MODES)
        check_choice("size_by", size_by, SIZE_MODES)
        if target is not None:
            target = check_target(lens, target)
        self._cache: dict = {}
        self._frame: pd.DataFrame | None = None
        self.selected = pd.DataFrame({"layer": [], "component": []})
        self._auto_color = color_by is None
        super().__init__(lens, all_layers=all_layers, concepts=vocabulary(lens, concepts), target=target,
                         query=query, valid=check_concepts("valid", valid), spurious=check_concepts("spurious", spurious),
                         color_by=color_by or "layer", size_by=size_by, **kwargs)
        self._quiet = False
        self.layers = list(layers)
        self._guard(self._load_points)
        self.observe(lambda _c: self._quiet or self._guard(self._load_points), names=["layers"])
        self.observe(self._on_color_by, names=["color_by"])
        self.observe(lambda _c: self._quiet or self._guard(self._recolor),
                     names=["color_by", "size_by", "query", "target", "concepts", "valid", "spurious"])

    def _on_color_by(self, _change) -> None:
        if not self._quiet:
            self._auto_color = False  # the user chose: keep it when the layers change

    # -- trait validation (from Python and from the front end alike)
    @t.validate("layers")
    def _valid_layers(self, proposal):
        return check_layers(proposal["value"], list(self.lens.layers))

    @t.validate("color_by")
    def _valid_color_by(self, proposal):
        return check_choice("color_by", proposal["value"], COLOR_MODES)

    @t.validate("size_by")
    def _valid_size_by(self, proposal):
        return check_choice("size_by", proposal["value"], SIZE_MODES)

    @t.validate("target")
    def _valid_target(self, proposal):
        v = proposal["value"]
        return None if v is None else check_target(self.lens, v)

    @t.validate("query")
    def _valid_query(self, proposal):
        return check_query(proposal["value"])

    @t.validate("concepts", "valid", "spurious")
    def _valid_concept_lists(self, proposal):
        return check_concepts(proposal["trait"].name, proposal["value"])

    def _default_color(self) -> str:
        """What the map shows best: labels when any component carries one, else the layers when
        several are shown, else relevance (a target) or search scores (a query)."""
        if len(self.label_names) > 1:
            return "label"
        if len(self.layers) > 1:
            return "layer"
        if self.target is not None:
            return "relevance"
        if self.query.strip():
            return "score"
        return "label" if self.concepts else "layer"

    # -- data
    def _load_points(self) -> None:
        # DataFrame(layer, component, x, y); a list of layers is one joint map
        df = self.lens.map(self.layers if len(self.layers) > 1 else self.layers[0]).reset_index(drop=True)
        self._frame = df
        codes = np.asarray([self.layers.index(l) for l in df["layer"]], dtype=np.uint16)
        labels = np.zeros(len(df), dtype=np.uint16)
        names = [UNLABELLED]
        if self.concepts:
            for i, l in enumerate(self.layers):
                lab = label_table(self.lens, l, self.concepts, self._cache)
                sel = np.nonzero(codes == i)[0]
                for j, c in zip(sel, df["component"].to_numpy()[sel]):
                    name = lab.get(int(c))
                    if name is not None:
                        if name not in names:
                            names.append(name)
                        labels[j] = names.index(name)
        with self.hold_trait_notifications():
            self.n = len(df)
            self.xy = f32(np.stack([df["x"].to_numpy(), df["y"].to_numpy()], axis=1))
            self.layer_codes = codes.tobytes()
            self.components = i32(df["component"].to_numpy())
            self.label_codes = labels.tobytes()
            self.label_names = names
        if self._auto_color:
            self._quiet = True
            try:
                self.color_by = self._default_color()
            finally:
                self._quiet = False
        self._recolor()

    def _per_layer(self, fn) -> np.ndarray:
        """Concatenate a per-layer float column in the order of the points."""
        out = np.full(self.n, np.nan, dtype=np.float32)
        df = self._frame
        for l in self.layers:
            mask = (df["layer"] == l).to_numpy()
            values = fn(l)  # Series indexed by component
            out[mask] = values.reindex(df["component"][mask].to_numpy()).to_numpy(dtype=np.float32)
        return out

    def _relevance(self) -> np.ndarray:
        return self._per_layer(lambda l: self.lens.relevance(self.target, l).set_index("component")["relevance"])

    def _recolor(self) -> None:
        if self._frame is None:
            return
        mode, note = self.color_by, ""
        values, codes, names = b"", b"", []
        if mode == "layer" and len(self.layers) > 1:
            codes, names = self.layer_codes, list(self.layers)
        elif mode == "label":
            codes, names = self.label_codes, list(self.label_names)
            if not self.concepts:
                note = "no concept vocabulary given: pass concepts=[...] to colour by label"
            elif len(names) == 1:
                note = "no component of these layers carries a concept of the vocabulary"
        elif mode == "layer" and len(self.layers) == 1:
            codes, names = self.layer_codes, list(self.layers)
            note = "one layer shown: colour by label, score or relevance to tell components apart"
        elif mode == "score":
            if self.query.strip():
                def scores(l):
                    df = self.lens.search(self.query.strip(), layer=l, k=int(self.lens.num_components(l)))
                    return df.set_index("component")["score"]
                values = f32(self._per_layer(scores))
            else:
                note = "type a search query to colour by score"
        elif mode == "relevance":
            if self.target is not None:
                values = f32(self._relevance())
            else:
                note = "pick a target class to colour by relevance"
        elif mode == "auc":
            def aucs(l):
                t = self.lens.stored_faithfulness(l)
                if t is None or not len(t):
                    return pd.Series(dtype="float32")
                return pd.DataFrame(t).set_index("component")["auc"].astype("float32")
            auc = self._per_layer(aucs)
            if np.isfinite(auc).any():
                values = f32(auc)
            else:
                note = ("no label faithfulness yet: lens.faithfulness(layer, generator) gives each "
                        "labelled component the AUC of its label")
        elif mode == "category":
            if self.target is not None and (self.valid or self.spurious):
                cat_codes = {c: i for i, c in enumerate(AUDIT_CATEGORIES)}

                def cats(l):
                    tab = self.lens.audit(self.valid, self.spurious, l, self.target).table
                    return tab.set_index("component")["category"].map(cat_codes).astype("float32")
                codes = np.nan_to_num(self._per_layer(cats), nan=len(AUDIT_CATEGORIES) - 1).astype(np.uint16).tobytes()
                names = list(AUDIT_CATEGORIES)
            else:
                note = "set a target class and valid/spurious concepts (AuditView) to colour by category"
        sizes = b""
        if self.size_by == "relevance" and self.target is not None:
            rel = np.abs(self._relevance())
            top = np.nanmax(rel) if np.isfinite(rel).any() else 0.0
            sizes = f32(np.nan_to_num(rel / top if top > 0 else rel * 0))
        names_t = getattr(self.lens, "class_names", None) or []
        with self.hold_trait_notifications():
            self.color_values = values
            self.color_codes = codes
            self.color_names = names
            self.color_note = note
            self.size_values = sizes
            self.target_name = (str(names_t[self.target]) if self.target is not None
                                and 0 <= self.target < len(names_t) else "")
        self.error = ""

    # -- messages
    def _msg_color(self, content: dict, buffers) -> dict:
        if "color_by" in content:
            self._auto_color = False
        self._quiet = True
        try:
            if "color_by" in content:
                self.color_by = get_str(content, "color_by", choices=COLOR_MODES)
            if "size_by" in content:
                self.size_by = get_str(content, "size_by", choices=SIZE_MODES)
        finally:
            self._quiet = False
        self._recolor()
        return {}

    def _msg_layers(self, content: dict, buffers) -> dict:
        layers = get_str_list(content, "layers")
        for l in layers:
            self._check_layer(self.lens, l)
        if not layers:
            raise MessageError("at least one layer must be shown")
        self._quiet = True
        try:
            self.layers = layers
        finally:
            self._quiet = False
        self._load_points()
        return {}

    def _msg_select_many(self, content: dict, buffers) -> dict:
        if len(buffers) != 1:
            raise MessageError("select_many expects one int32 buffer of point indices")
        raw = memoryview(buffers[0]).cast("B")
        if len(raw) % 4:
            raise MessageError(f"select_many buffer has {len(raw)} bytes, not a multiple of 4 (int32)")
        idx = np.frombuffer(raw, dtype="<i4")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise MessageError(f"point indices must be in 0..{self.n - 1}")
        idx = np.unique(idx)
        df = self._frame.iloc[idx][["layer", "component"]].reset_index(drop=True)
        self.selected = df
        self.n_selected = len(df)
        return {"n": len(df)}
