"""The one test double of :class:`semlens_widgets.Lens`: a fake of the ``LensLike`` protocol.

Used by the widget tests, the report tests and the browser benchmark. Same members and return
types as the real Lens (``semlens_widgets.protocols.LensLike``, checked by tests/test_lens.py),
but every result is made up deterministically from a seed, so that tests run in milliseconds
and the browser benchmark can build a lens of 10,000 components without running any model.
Nothing here is analysis: the numbers mean nothing. Hostile strings (``XSS`` as a concept and a
class name, ``XSS_CLASS`` as a class name with ``n_classes=5``) exercise the escaping.

Every call of an analysis method is recorded in ``lens.calls`` as a tuple ``(method, ...)``;
``lens.count(method)`` counts them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from semlens_widgets.results import (
    AUDIT_CATEGORIES,
    AttributionGraph,
    AuditResult,
    Comparison,
    ComponentExamples,
    Description,
    LabelResult,
)

XSS = "<img src=x onerror=alert(1)>"
XSS_CLASS = "<script>alert('cls')</script>"
CONCEPTS = ["star", "stripes", "watermark", "circle", "grass", XSS]
CLASS_NAMES = ["star-class", "stripe-class", XSS, "circle-class", XSS_CLASS]


class FakeFM:
    """The identity of a foundation model (what the report prints)."""

    def __init__(self, name: str = "fake-clip"):
        self.identity = {"name": name, "pretrained": None, "dim": 8}


class FakeLens:
    """layers: dict name -> number of components."""

    def __init__(self, layers: dict[str, int] | None = None, m: int = 8, n_samples: int = 64,
                 image_size: int = 32, crop_size: int = 24, n_classes: int = 4, seed: int = 0,
                 concepts: list[str] | None = None):
        self._sizes = dict(layers or {"block3": 8, "block4": 12})
        self.layers = list(self._sizes)
        self.graph_layers = list(self.layers)  # the layers attribution graphs accept
        self.m = m
        self.n_samples = n_samples
        self.image_size = image_size
        self.crop_size = crop_size
        self.crop_mode = "crp"
        self.fm = FakeFM()
        self.class_names = CLASS_NAMES[:n_classes] + [f"class {i}" for i in range(len(CLASS_NAMES), n_classes)]
        self.num_classes = n_classes
        self.concepts = list(concepts or CONCEPTS)
        self.vocabulary: list[str] | None = None
        self.sample_labels = torch.arange(n_samples) % n_classes
        self._seed = seed
        self.calls: list[tuple] = []
        rng = np.random.default_rng(seed)
        # stand-in "embeddings": each component has a preferred concept and a strength
        self._pref = {l: rng.integers(0, len(self.concepts), size=c) for l, c in self._sizes.items()}
        self._strength = {l: rng.uniform(-0.05, 0.3, size=c).astype(np.float32) for l, c in self._sizes.items()}
        self._xy = {l: rng.normal(size=(c, 2)).astype(np.float32) for l, c in self._sizes.items()}
        self._rel = {l: rng.normal(size=(n_classes, c)).astype(np.float32) for l, c in self._sizes.items()}
        self.dataset = list(range(n_samples))

    def count(self, method: str) -> int:
        """How many calls of ``method`` were recorded."""
        return sum(1 for c in self.calls if c[0] == method)

    # ------------------------------------------------------------------ basics
    def _check_layer(self, layer: str) -> str:
        if layer not in self._sizes:
            raise ValueError(f"unknown layer {layer!r}; known layers: {self.layers}")
        return layer

    def set_vocabulary(self, concepts) -> None:
        self.vocabulary = None if concepts is None else list(concepts)

    def num_components(self, layer: str) -> int:
        return self._sizes[self._check_layer(layer)]

    def examples(self, layer: str, k: int) -> ComponentExamples:
        self._check_layer(layer)
        idx = (torch.arange(self.m) * 7 + k * 3) % self.n_samples
        act = torch.linspace(1.0, 0.2, self.m)
        return ComponentExamples(layer, int(k), idx.long(), act.float())

    def images(self, indices) -> torch.Tensor:
        """[n, 3, H, W] float in [0, 1]: a coloured pattern per sample (never blank)."""
        self.calls.append(("images",))
        idx = torch.as_tensor(indices).long().reshape(-1)
        s = self.image_size
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        out = []
        for i in idx.tolist():
            hue = (i * 0.137) % 1.0
            stripes = ((xx + yy * (i % 3)) // (2 + i % 5)) % 2
            r = 0.5 + 0.5 * math.cos(2 * math.pi * hue)
            g = 0.5 + 0.5 * math.cos(2 * math.pi * (hue + 1 / 3))
            b = 0.5 + 0.5 * math.cos(2 * math.pi * (hue + 2 / 3))
            img = torch.stack([torch.full((s, s), c) for c in (r, g, b)]).float()
            out.append(img * (0.45 + 0.55 * stripes.float()))
        return torch.stack(out) if out else torch.zeros(0, 3, s, s)

    def boxes(self, layer: str) -> torch.Tensor:
        c = self.num_components(layer)
        s = self.image_size
        b = torch.tensor([s // 8, s // 8, s - s // 4, s - s // 4])
        return b.expand(c, self.m, 4).clone().long()

    def crops(self, layer: str, k: int, size: int | None = None) -> torch.Tensor:
        """uint8 [m, 3, S, S] with S = size or crop_size."""
        self.calls.append(("crops", layer, int(k)))
        idx, _ = self.examples(layer, k)
        imgs = self.images(idx)
        lo, hi = self.image_size // 8, self.image_size // 8 + self.crop_size
        out = imgs[:, :, lo:hi, lo:hi]
        if size is not None and size != self.crop_size:
            out = torch.nn.functional.interpolate(out, size=(size, size), mode="nearest")
        return (out * 255).round().to(torch.uint8)

    def heatmaps(self, layer: str, k: int) -> torch.Tensor:
        """[m, H, W] relevance heatmaps of the concept examples (a blob)."""
        s = self.image_size
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        blob = torch.exp(-((xx - s / 2) ** 2 + (yy - s / 2) ** 2) / (2 * (s / 6) ** 2))
        return blob.expand(self.m, s, s).clone()

    # ------------------------------------------------------------------ semantics
    def _label_of(self, layer: str, k: int) -> str | None:
        if self._strength[layer][k] <= 0:
            return None
        return self.concepts[int(self._pref[layer][k])]

    def search(self, query, layer: str | None = None, k: int = 10) -> pd.DataFrame:
        self.calls.append(("search", query if isinstance(query, str) else "<image>", layer, k))
        layers = self.layers if layer is None else [self._check_layer(layer)]
        q = query if isinstance(query, str) else "image"
        seed = sum(map(ord, q)) % 1000
        rows = []
        for l in layers:
            rng = np.random.default_rng(seed + len(l))
            scores = rng.uniform(-0.1, 0.4, size=self._sizes[l])
            for c in range(self._sizes[l]):
                if isinstance(query, str) and self._label_of(l, c) == query:
                    scores[c] += 0.5
                rows.append((l, c, float(scores[c]), self._label_of(l, c)))
        rows.sort(key=lambda r: -r[2])
        rows = rows[:k]
        return pd.DataFrame({
            "query": [q] * len(rows), "rank": list(range(len(rows))),
            "layer": [r[0] for r in rows], "component": [r[1] for r in rows],
            "score": [r[2] for r in rows], "label": [r[3] for r in rows],
        })

    def label(self, concepts, layer: str, threshold: float = 0.0) -> LabelResult:
        self.calls.append(("label", tuple(concepts), layer))
        self._check_layer(layer)
        n = self._sizes[layer]
        labels = []
        for c in range(n):
            lab = self._label_of(layer, c)
            labels.append(lab if lab in concepts else None)
        table = pd.DataFrame({"layer": layer, "component": range(n), "label": labels,
                              "score": self._strength[layer].astype(float), "baseline": 0.0})
        groups: dict[str, list[int]] = {}
        for c, lab in enumerate(labels):
            if lab is not None:
                groups.setdefault(lab, []).append(c)
        gaps = [c for c in concepts if c not in groups]
        return LabelResult(table=table, gaps=gaps, groups=groups)

    def measures(self, layer: str) -> pd.DataFrame:
        self.calls.append(("measures", layer))
        n = self.num_components(layer)
        rng = np.random.default_rng(self._seed + 1)
        return pd.DataFrame({"layer": layer, "component": range(n),
                             "clarity": rng.uniform(0, 1, n), "polysemanticity": rng.uniform(0, 1, n),
                             "redundancy": rng.uniform(0, 1, n),
                             "label": [self._label_of(layer, c) for c in range(n)]})

    def redundancy(self, layer: str) -> float:
        """0.5 + C / 100: a number the report tests can look for."""
        self.calls.append(("redundancy", layer))
        return 0.5 + 0.01 * self.num_components(layer)

    def measures_summary(self, layers=None) -> pd.DataFrame:
        self.calls.append(("measures_summary",))
        rows = []
        for l in (self.layers if layers is None else [layers] if isinstance(layers, str) else layers):
            df = self.measures(l)
            rows.append({"layer": l, "n_components": len(df), "clarity": float(df.clarity.mean()),
                         "polysemanticity": float(df.polysemanticity.mean()),
                         "redundancy": 0.5 + 0.01 * len(df)})
        return pd.DataFrame(rows, columns=["layer", "n_components", "clarity", "polysemanticity", "redundancy"])

    def map(self, layer) -> pd.DataFrame:
        """``layer, component, x, y``; a list of layers gives one joint map."""
        self.calls.append(("map", layer if isinstance(layer, str) else tuple(layer)))
        if not isinstance(layer, str):
            return pd.concat([self.map(l) for l in layer], ignore_index=True)
        xy = self._xy[self._check_layer(layer)]
        return pd.DataFrame({"layer": layer, "component": range(len(xy)), "x": xy[:, 0], "y": xy[:, 1]})

    def relevance(self, target: int, layer: str) -> pd.DataFrame:
        rel = self._rel[self._check_layer(layer)][int(target)]
        return pd.DataFrame({"layer": layer, "component": range(len(rel)), "relevance": rel})

    def top_classes(self, layer: str, k: int = 3) -> pd.DataFrame:
        """Per component, the k classes it is most relevant for:
        ``layer, component, rank, class, name, relevance``."""
        rel = self._rel[self._check_layer(layer)]  # [K, C]
        rows = []
        for c in range(rel.shape[1]):
            order = np.argsort(-rel[:, c])[:k]
            for r, cls in enumerate(order):
                rows.append((layer, c, r, int(cls), self.class_names[cls], float(rel[cls, c])))
        return pd.DataFrame(rows, columns=["layer", "component", "rank", "class", "name", "relevance"])

    def audit(self, valid, spurious, layer: str, target: int) -> AuditResult:
        self.calls.append(("audit", tuple(valid), tuple(spurious), layer, target))
        n = self.num_components(layer)
        rng = np.random.default_rng(self._seed + 2)
        a_valid = rng.uniform(-0.05, 0.3, n)
        a_spur = rng.uniform(-0.05, 0.3, n)
        rel = self._rel[layer][int(target)]
        cat = []
        for v, s in zip(a_valid, a_spur):
            cat.append("both" if v > 0.15 and s > 0.15 else "valid" if v > 0.15 else
                       "spurious" if s > 0.15 else "unexpected")
        table = pd.DataFrame({
            "layer": layer, "component": range(n), "a_valid": a_valid, "a_spur": a_spur,
            "best_valid": [valid[i % len(valid)] if valid else None for i in range(n)],
            "best_spur": [spurious[i % len(spurious)] if spurious else None for i in range(n)],
            "relevance": rel, "category": cat, "label": [self._label_of(layer, c) for c in range(n)],
        })
        pos = np.clip(rel, 0, None)
        summary = pd.DataFrame({
            "category": list(AUDIT_CATEGORIES),
            "n_components": [int(sum(c == k for c in cat)) for k in AUDIT_CATEGORIES],
            "relevance": [float(sum(p for p, c in zip(pos, cat) if c == k)) for k in AUDIT_CATEGORIES],
        })
        summary["share"] = summary["relevance"] / max(summary["relevance"].sum(), 1e-12)
        samples = {int(c): self.examples(layer, int(c)).indices
                   for c in np.nonzero(np.isin(cat, ["spurious", "both"]))[0]}
        return AuditResult(layer=layer, target=int(target), valid=list(valid), spurious=list(spurious),
                           table=table, summary=summary, spurious_samples=samples)

    def attribution_graph(self, target: int, layers=None, concepts=None) -> AttributionGraph:
        layers = list(layers or self.layers)
        concepts = list(concepts or self.concepts)
        nodes, edges = [], []
        for l in layers:
            lab = self.label(concepts, l)
            rel = self._rel[l][int(target)]
            for name, comps in lab.groups.items():
                nodes.append((f"{l}:{name}", l, name, comps, float(np.abs(rel[comps]).sum()), True))
            labels = lab.table["label"].tolist()
            rest = [c for c in range(self._sizes[l]) if labels[c] is None or labels[c] != labels[c]]
            if rest:
                nodes.append((f"{l}:(unlabelled)", l, "(unlabelled)", rest, float(np.abs(rel[rest]).sum()), False))
        nd = pd.DataFrame(nodes, columns=["id", "layer", "label", "components", "relevance", "labelled"])
        for a, b in zip(layers[:-1], layers[1:]):
            for s in nodes:
                for t in nodes:
                    if s[1] == a and t[1] == b:
                        w = 0.1 + (sum(map(ord, s[0] + t[0])) % 97) / 97.0 * s[4] * t[4]
                        edges.append((s[0], t[0], float(w), float(w)))
        ed = pd.DataFrame(edges, columns=["source", "target", "weight", "signed_weight"])
        return AttributionGraph(target=int(target), layers=layers, nodes=nd, edges=ed)


    # ------------------------------------------------------------------ descriptions, faithfulness
    def stored_description(self, layer: str, k: int) -> Description | None:
        """A made-up description for even components (None for odd ones: never described)."""
        self.calls.append(("stored_description", layer, int(k)))
        self._check_layer(layer)
        if int(k) % 2:
            return None
        lab = self._label_of(layer, int(k)) or self.concepts[0]
        concepts = [lab, f"red {lab}", f"{lab} on sand"]
        aucs = [0.7, 0.86, 0.8]
        history = pd.DataFrame({"round": [0, 1, 1], "concept": concepts, "score": [0.5, 1.2, 0.9], "auc": aucs,
                                "note": ["", "", ""]})
        imgs = (self.images(torch.arange(4) + int(k)) * 255).round().to(torch.uint8)
        return Description(history=history, best=concepts[1], auc=aucs[1], candidates=[concepts[1], concepts[2], lab],
                           polysemantic=False, senses=[concepts[1]], layer=layer, component=int(k), n_images=16,
                           examples={c: imgs for c in concepts})

    def stored_faithfulness(self, layer: str) -> pd.DataFrame | None:
        """A made-up faithfulness table of the first layer (None for the others)."""
        self.calls.append(("stored_faithfulness", layer))
        self._check_layer(layer)
        if layer != self.layers[0]:
            return None
        n = self._sizes[layer]
        labels = [self._label_of(layer, c) for c in range(n)]
        auc = [None if l is None else 0.5 + 0.45 * ((c * 37) % 11) / 10 for c, l in enumerate(labels)]
        return pd.DataFrame({"layer": layer, "component": range(n), "label": pd.Series(labels, dtype=object),
                             "auc": pd.Series(auc, dtype=float), "mad": pd.Series(auc, dtype=float) * 2,
                             "note": ""})


def fake_compare(a: FakeLens, b: FakeLens, layer_a: str, layer_b: str, concepts=None) -> Comparison:
    concepts = list(concepts or a.concepts)
    la, lb = a.label(concepts, layer_a), b.label(concepts, layer_b)
    ca, cb = set(la.groups), set(lb.groups)
    counts = pd.DataFrame({"concept": concepts,
                           "count_a": [len(la.groups.get(c, [])) for c in concepts],
                           "count_b": [len(lb.groups.get(c, [])) for c in concepts]})
    n = a.num_components(layer_a)
    matches = pd.DataFrame({"component_a": range(n), "component_b": [i % b.num_components(layer_b) for i in range(n)],
                            "cosine": np.linspace(0.9, 0.5, n)})
    return Comparison(layer_a=layer_a, layer_b=layer_b, s_ab=0.71, s_ba=0.64,
                      shared=sorted(ca & cb), unique_a=sorted(ca - cb), unique_b=sorted(cb - ca),
                      counts=counts, matches=matches)
