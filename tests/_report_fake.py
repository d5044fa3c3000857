"""A small stand-in for :class:`semlens_widgets.Lens` with the methods the report calls.

Deterministic (seeded), tiny (2 layers, 12 and 16 components, m = 6, 32 px crops) and with a
hostile concept name so that the report's escaping is exercised. Not a model: the numbers are
made up; only the shapes and column names follow docs/INTERNALS.md and results.py.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import torch

from semlens_widgets.results import AuditResult, LabelResult

XSS = "<img src=x onerror=alert(1)>"
XSS_CLASS = "<script>alert('cls')</script>"
CONCEPTS = ["dog", "cat", "watermark", "grass", XSS, "a & b \"quoted\""]


class FakeFM:
    identity = {"name": "fake-clip", "pretrained": None, "dim": 8}


class FakeLens:
    def __init__(self, sizes=None, m: int = 6, crop_px: int = 32, seed: int = 0):
        self.sizes = dict(sizes or {"layer3": 12, "layer4": 16})
        self.layers = list(self.sizes)
        self.m = m
        self.crop_mode = "crp"
        self.fm = FakeFM()
        self.class_names = ["cat", XSS_CLASS, "dog"]
        self.num_classes = 3
        self.crop_px = crop_px
        self.rng = np.random.default_rng(seed)
        self.calls: dict[str, int] = {}
        self._labels = {
            l: [CONCEPTS[(k + i) % len(CONCEPTS)] if k % 5 != 3 else None for k in range(c)]
            for i, (l, c) in enumerate(self.sizes.items())
        }

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def num_components(self, layer):
        return self.sizes[layer]

    def crops(self, layer, k):
        """uint8 [m, 3, S, S]: a colour per component, a brighter square per example."""
        self._count("crops")
        c = self.sizes[layer]
        assert 0 <= k < c, (layer, k)
        s = self.crop_px
        out = torch.zeros(self.m, 3, s, s, dtype=torch.uint8)
        hue = torch.tensor([(37 * k) % 256, (91 * k + 60) % 256, (53 * k + 120) % 256], dtype=torch.uint8)
        out[:] = hue.view(1, 3, 1, 1)
        for i in range(self.m):
            lo = 2 + i * 2
            out[i, :, lo : s - lo, lo : s - lo] = 255 - hue.view(3, 1, 1)
        return out

    def images(self, indices):
        self._count("images")
        n = len(indices)
        g = torch.linspace(0, 1, 40)
        img = torch.stack([g.view(1, -1).expand(40, 40), g.view(-1, 1).expand(40, 40), 0.5 * torch.ones(40, 40)])
        return img.unsqueeze(0).repeat(n, 1, 1, 1)

    def map(self, layer):
        self._count("map")
        c = self.sizes[layer]
        rng = np.random.default_rng(c)
        return pd.DataFrame(
            {"layer": layer, "component": np.arange(c), "x": rng.normal(size=c), "y": rng.normal(size=c)}
        )

    def search(self, query, layer=None, k=10):
        self._count("search")
        layers = self.layers if layer is None else [layer]
        rows = []
        for l in layers:
            for comp in range(self.sizes[l]):
                score = ((zlib.crc32(f"{query}|{l}|{comp}".encode()) % 1000) / 1000.0) * 0.2 - 0.02
                rows.append({"layer": l, "component": comp, "score": score, "label": self._labels[l][comp]})
        df = pd.DataFrame(rows).sort_values("score", ascending=False).head(k).reset_index(drop=True)
        df.insert(0, "query", query)
        df.insert(1, "rank", np.arange(1, len(df) + 1))
        return df[["query", "rank", "layer", "component", "score", "label"]]

    def label(self, concepts, layer, threshold=0.0):
        self._count("label")
        labels = [lab if lab in concepts else None for lab in self._labels[layer]]
        table = pd.DataFrame(
            {
                "layer": layer,
                "component": np.arange(self.sizes[layer]),
                "label": labels,
                "score": np.linspace(0.01, 0.1, self.sizes[layer]),
                "baseline": 0.0,
            }
        )
        groups: dict[str, list[int]] = {}
        for k, lab in enumerate(labels):
            if lab is not None:
                groups.setdefault(lab, []).append(k)
        gaps = [c for c in concepts if c not in groups]
        return LabelResult(table=table, gaps=gaps, groups=groups)

    def measures(self, layer):
        self._count("measures")
        c = self.sizes[layer]
        rng = np.random.default_rng(100 + c)
        return pd.DataFrame(
            {
                "layer": layer,
                "component": np.arange(c),
                "clarity": rng.uniform(0.1, 0.9, c),
                "polysemanticity": rng.uniform(0.0, 0.6, c),
            }
        )

    def redundancy(self, layer):
        self._count("redundancy")
        return 0.5 + 0.01 * self.sizes[layer]

    def audit(self, valid, spurious, layer, target):
        self._count("audit")
        c = self.sizes[layer]
        rng = np.random.default_rng(7)
        a_valid = rng.uniform(-0.02, 0.08, c)
        a_spur = rng.uniform(-0.02, 0.08, c)
        a_spur[3] = 0.15  # the planted spurious component
        rel = rng.uniform(0, 0.05, c)
        rel[3] = 0.4
        cat = []
        for v, s in zip(a_valid, a_spur):
            cat.append("both" if v > 0.03 and s > 0.03 else "valid" if v > 0.03 else "spurious" if s > 0.03 else "unexpected")
        table = pd.DataFrame(
            {
                "layer": layer,
                "component": np.arange(c),
                "a_valid": a_valid,
                "a_spur": a_spur,
                "best_valid": [valid[k % len(valid)] for k in range(c)],
                "best_spur": [spurious[k % len(spurious)] for k in range(c)],
                "relevance": rel,
                "category": cat,
                "label": self._labels[layer],
            }
        )
        summary = (
            table.groupby("category")
            .agg(n_components=("component", "size"), relevance=("relevance", "sum"))
            .reset_index()
        )
        summary["share"] = summary["relevance"] / summary["relevance"].sum()
        samples = {
            int(k): torch.arange(int(k), int(k) + 8)
            for k in table.loc[table["category"].isin(["spurious", "both"]), "component"]
        }
        return AuditResult(
            layer=layer, target=int(target), valid=list(valid), spurious=list(spurious),
            table=table, summary=summary, spurious_samples=samples,
        )
