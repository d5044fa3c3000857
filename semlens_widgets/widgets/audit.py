"""AuditView: a_valid vs a_spur per component, sized by relevance, coloured by category."""
from __future__ import annotations

import numpy as np
import traitlets as t

from ..results import AUDIT_CATEGORIES
from ._base import (STATIC, LensWidget, MessageError, check_concepts, check_layer, check_lens, check_target,
                    class_options, clean, f32, finite, get_int, get_str_list, i32)

__all__ = ["AuditView"]


class AuditView(LensWidget):
    """Audit a layer against valid and spurious concepts for a class (paper section 3.4).

    ``AuditView(lens, valid, spurious, layer, target)``; ``valid`` / ``spurious`` are lists of
    concept names (a single str is one concept, as in ``Lens.audit``), ``target`` a class index or
    name. Editing the concept lists in the view sends ``set_concepts``; the kernel recomputes
    ``lens.audit`` and the arrays below.

    Traits
    ------
    valid, spurious: list[str]; layer: str; target: int; targets: [[index, name], ...]
    n: int; components: bytes int32 [n]; a_valid, a_spur, relevance: bytes float32 [n]
    category: bytes uint8 [n] index into ``categories`` (= AUDIT_CATEGORIES)
    best_valid, best_spur: bytes uint8 [n] index into ``valid`` / ``spurious`` (255 = none)
    summary: list[dict]  category, n_components, relevance, share
    spurious_components: list[int]  components with samples behind them (spurious / both)

    Messages: ``{"type": "set_concepts", "valid", "spurious"}``, ``{"type": "target", "target"}``,
    plus ``select`` and ``thumbs`` (kind "samples": the dataset samples behind a spurious component).
    """

    _esm = STATIC / "audit.js"
    valid = t.List(t.Unicode()).tag(sync=True)
    spurious = t.List(t.Unicode()).tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    target = t.Int(0).tag(sync=True)
    targets = t.List().tag(sync=True)
    categories = t.List(t.Unicode(), default_value=list(AUDIT_CATEGORIES)).tag(sync=True)
    n = t.Int(0).tag(sync=True)
    components = t.Bytes(b"").tag(sync=True)
    a_valid = t.Bytes(b"").tag(sync=True)
    a_spur = t.Bytes(b"").tag(sync=True)
    relevance = t.Bytes(b"").tag(sync=True)
    category = t.Bytes(b"").tag(sync=True)
    best_valid = t.Bytes(b"").tag(sync=True)
    best_spur = t.Bytes(b"").tag(sync=True)
    summary = t.List(t.Dict()).tag(sync=True)
    spurious_components = t.List(t.Int()).tag(sync=True)

    _handlers = {**LensWidget._handlers, "set_concepts": "_msg_set_concepts", "target": "_msg_target"}
    _thumb_kinds = ("crops", "full", "samples")

    def __init__(self, lens, valid=(), spurious=(), layer: str | None = None, target: int | str = 0, **kwargs):
        check_lens(lens, "AuditView")
        layers = list(lens.layers)
        layer = layers[-1] if layer is None else layer
        check_layer(layer, layers)
        # a single str is ONE concept, as in Lens.audit ("red" audits "red", not 'r', 'e', 'd')
        valid, spurious = check_concepts("valid", valid), check_concepts("spurious", spurious)
        target = check_target(lens, target)
        self.result = None
        super().__init__(lens, valid=valid, spurious=spurious, layer=layer, target=target,
                         targets=class_options(lens), **kwargs)
        self._quiet = False
        self._guard(self._update)
        self.observe(lambda _c: self._quiet or self._guard(self._update), names=["valid", "spurious", "target", "layer"])

    # -- trait validation (from Python and from the front end alike)
    @t.validate("valid", "spurious")
    def _valid_concepts(self, proposal):
        return check_concepts(proposal["trait"].name, proposal["value"])

    @t.validate("target")
    def _valid_target(self, proposal):
        return check_target(self.lens, proposal["value"])

    @t.validate("layer")
    def _valid_layer(self, proposal):
        return check_layer(proposal["value"], list(self.lens.layers))

    def _update(self) -> None:
        if not self.valid and not self.spurious:
            self.result = None
            with self.hold_trait_notifications():
                self.n = 0
                for name in ("components", "a_valid", "a_spur", "relevance", "category", "best_valid", "best_spur"):
                    setattr(self, name, b"")
                self.summary = []
                self.spurious_components = []
            return
        res = self.lens.audit(valid=list(self.valid), spurious=list(self.spurious), layer=self.layer,
                              target=self.target)
        self.result = res
        tab = res.table
        cat = {c: i for i, c in enumerate(AUDIT_CATEGORIES)}

        def codes(col, names):
            idx = {s: i for i, s in enumerate(names)}
            return np.asarray([idx.get(clean(v), 255) for v in tab[col]], dtype=np.uint8).tobytes()

        with self.hold_trait_notifications():
            self.n = len(tab)
            self.components = i32(tab["component"].to_numpy())
            self.a_valid = f32(tab["a_valid"].to_numpy(dtype=np.float32))
            self.a_spur = f32(tab["a_spur"].to_numpy(dtype=np.float32))
            self.relevance = f32(tab["relevance"].to_numpy(dtype=np.float32))
            self.category = np.asarray([cat.get(c, 3) for c in tab["category"]], dtype=np.uint8).tobytes()
            self.best_valid = codes("best_valid", self.valid) if "best_valid" in tab else b""
            self.best_spur = codes("best_spur", self.spurious) if "best_spur" in tab else b""
            self.summary = [{"category": str(r["category"]), "n_components": int(r["n_components"]),
                             "relevance": finite(r["relevance"]), "share": finite(r["share"])}
                            for r in res.summary.to_dict("records")]
            self.spurious_components = sorted(int(k) for k in res.spurious_samples)
        self.error = ""

    def _msg_set_concepts(self, content: dict, buffers) -> dict:
        valid = get_str_list(content, "valid")
        spurious = get_str_list(content, "spurious")
        self._quiet = True
        try:
            self.valid, self.spurious = valid, spurious
        finally:
            self._quiet = False
        self._update()
        return {}

    def _msg_target(self, content: dict, buffers) -> dict:
        hi = len(self.targets) - 1 if self.targets else None
        self.target = get_int(content, "target", lo=0, hi=hi)
        return {}

    def _thumbs(self, lens, layer, comp, start, count, size, kind, fmt, content):
        if kind != "samples":
            return super()._thumbs(lens, layer, comp, start, count, size, kind, fmt, content)
        if self.result is None or comp not in self.result.spurious_samples:
            raise MessageError(f"component {comp} has no spurious samples in the current audit")
        idx = self.result.spurious_samples[comp]
        total = int(idx.shape[0])
        imgs, extra, bufs_extra = self._full_images(lens, layer, comp, idx[start:start + count], start, size)
        extra.pop("boxes", None)
        extra.pop("heatmap_shape", None)
        from ._base import encode_images
        meta, bufs = encode_images(imgs, fmt)
        return ({"layer": layer, "component": comp, "start": start, "count": int(imgs.shape[0]),
                 "total": total, "kind": kind, **meta, **extra}, bufs)
