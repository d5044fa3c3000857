"""What every section of the report reads: the lens, the options and the results shared between
sections (labels per layer, audits, the measures), each computed once."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..protocols import LensLike
from ..results import AuditResult, LabelResult
from ._thumbs import ThumbSheet


@dataclass
class Section:
    """One section of the page: an id (its anchor), a title and its pieces in order:
    ``("html", text)`` or ``("plot", bokeh model, side-panel html or None)``."""

    id: str
    title: str
    pieces: list[tuple] = field(default_factory=list)

    def html(self, text: str) -> "Section":
        self.pieces.append(("html", text))
        return self

    def plot(self, model: Any, peek: str | None = None) -> "Section":
        self.pieces.append(("plot", model, peek))
        return self


@dataclass
class ReportContext:
    lens: LensLike
    layers: list[str]
    layer: str                              # the layer of the map (and of audits given as dicts)
    sheet: ThumbSheet
    concepts: list[str] | None              # the vocabulary the labels use
    labels: dict[str, LabelResult]          # per layer (empty without a vocabulary)
    audits: list[AuditResult]
    queries: list[str]                      # the search strips
    queries_from: str                       # "queries" (given) or "vocabulary"
    search_layer: str | None
    k: int
    n_thumbs: int
    map_thumbs: int
    per_group: int
    max_groups: int
    n_spurious: int
    graph_targets: list[Any]
    progress: bool
    _measures: dict[str, pd.DataFrame] = field(default_factory=dict)
    _summary: pd.DataFrame | None = None

    def label_of(self, layer: str) -> dict[int, Any]:
        """component -> label (None: unlabelled) of ``layer``; empty without a vocabulary."""
        res = self.labels.get(layer)
        if res is None:
            return {}
        t = res.table
        return dict(zip(t["component"].astype(int), t["label"]))

    def label_scores(self, layer: str) -> dict[int, float]:
        res = self.labels.get(layer)
        if res is None:
            return {}
        t = res.table
        return dict(zip(t["component"].astype(int), t["score"].astype(float)))

    def measures(self, layer: str) -> pd.DataFrame:
        """``lens.measures(layer)``, asked once."""
        if layer not in self._measures:
            self._measures[layer] = pd.DataFrame(self.lens.measures(layer))
        return self._measures[layer]

    def measures_summary(self) -> pd.DataFrame:
        """``lens.measures_summary(layers)`` in the order of the layers, asked once."""
        if self._summary is None:
            s = pd.DataFrame(self.lens.measures_summary(self.layers))
            s["layer"] = s["layer"].astype(str)
            self._summary = s.set_index("layer").loc[self.layers].reset_index()
        return self._summary
