"""The attribution part of a Lens: CRP relevance of components for classes, and attribution graphs.

The maths is in :mod:`semlens_widgets.kernels.relevance`; this part picks the samples, checks
arguments, caches in the store (keys of :mod:`semlens_widgets.lens_keys`) and builds the
DataFrames. Raw per-sample relevances are stored, so a re-opened lens reuses them; the
normalisation (``normalize="abs"``) is applied on reading.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from semlens_widgets import distributed
from semlens_widgets.kernels import relevance as _relevance
from semlens_widgets.lens_checks import check_over, is_int, nonnegative_int, positive_int
from semlens_widgets.lens_keys import AnalysisKeys
from semlens_widgets.lens_layers import LayerSet
from semlens_widgets.lens_pipeline import step_lock
from semlens_widgets.protocols import ModelSource
from semlens_widgets.results import AttributionGraph
from semlens_widgets.store import Store

__all__ = ["Attribution"]

Labeler = Callable[[str], "list[str | None] | None"]


class Attribution:
    """Relevance, class relevance, top classes and attribution graphs of a Lens.

    source: the model, its LRP composite and the samples (:class:`ModelSource`); store and
    keys: where results are cached; layers: the Lens's layers; batch_size: samples per
    backward pass; chunk: samples per resumable chunk of the class-relevance pass; progress:
    tqdm bars.
    """

    def __init__(self, source: ModelSource, store: Store, keys: AnalysisKeys, layers: LayerSet, *,
                 batch_size: int, chunk: int, progress: bool):
        self.source = source
        self.store = store
        self.keys = keys
        self.layers = layers
        self.batch_size = int(batch_size)
        self.chunk = int(chunk)
        self.progress = bool(progress)
        self._graphs: dict[tuple, AttributionGraph] = {}

    # ------------------------------------------------------------------ checks
    def target(self, target: Any) -> int:
        """A class index from an int (numpy int, 0-d integer tensor) in ``[0, K)`` or a class name
        of ``class_names``; anything else raises naming the value and what is accepted."""
        names = self.source.class_names
        K = self.source.num_classes
        if K is None:
            raise ValueError(f"this model has no class outputs ([B, K] logits): relevance needs a target class, "
                             f"got target={target!r}")
        if names:
            shown = ", ".join(repr(n) for n in list(names)[:10]) + (", ..." if len(names) > 10 else "")
            accepted = f"a class index in [0, {K}) or a class name ({shown})"
        else:
            accepted = f"a class index in [0, {K}) (for class names pass Lens(..., class_names=[...]))"
        if isinstance(target, str):
            if not names:
                raise ValueError(f"target {target!r} is a class name, but this Lens has no class_names; "
                                 f"accepted: {accepted}")
            if target not in names:
                raise ValueError(f"unknown class name {target!r}; accepted: {accepted}")
            return list(names).index(target)
        if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point() \
                and target.dtype != torch.bool:
            target = int(target)
        if not is_int(target) or not 0 <= int(target) < K:
            raise ValueError(f"target class {target!r} out of range: accepted: {accepted}")
        return int(target)

    def over(self, over: Any) -> str:
        """``over=None``: dataset labels when there are any, else predictions."""
        return check_over(over, self.source.sample_labels is not None)

    def _classes(self, over: str) -> torch.Tensor:
        src = self.source.sample_labels if over == "label" else self.source.sample_predictions
        if src is None:
            other = "prediction" if over == "label" else "label"
            raise ValueError(f"the dataset has no per-sample {over}s; use over={other!r}")
        return src.long()

    def _samples_of(self, target: int, over: str, max_samples: int) -> torch.Tensor:
        idx = _relevance.class_samples(self._classes(over), target, max_samples)
        if idx.numel() == 0:
            raise ValueError(f"no sample has {over} {target}: nothing to explain (try over="
                             f"{'prediction' if over == 'label' else 'label'!r})")
        return idx

    def _component_relevance(self, samples: torch.Tensor, targets: torch.Tensor, layers: list[str]) -> dict:
        src = self.source
        return _relevance.component_relevance(
            src.model, lambda pos: src.model_inputs(samples[pos]), targets, layers, src.composite,
            batch_size=self.batch_size, device=src.device, progress=self.progress, saes=self.layers.saes,
        )

    # ------------------------------------------------------------------ relevance
    def _relevance_raw(self, target: int, layer: str, over: str, max_samples: int) -> dict[str, torch.Tensor]:
        """Raw per-sample CRP relevance of ``layer`` for ``target``: ``{"samples": [n], "R": [n, C]}``.
        Computed for every CRP-capable layer of the lens in the same pass, cached in the store."""
        entry = self.keys.relevance(layer, target, over, max_samples)
        got = self.store.load(entry.key, entry.fingerprint)
        if got is not None:
            return got
        with step_lock(self.store, self.keys.relevance_run(target, over, max_samples).key):
            got = self.store.load(entry.key, entry.fingerprint)  # another process may have computed it
            if got is not None:
                return got
            samples = self._samples_of(target, over, max_samples)
            layers = self.layers.crp_layers()
            R = self._component_relevance(samples, torch.full((samples.numel(),), target, dtype=torch.int64), layers)
            for l in layers:
                e = self.keys.relevance(l, target, over, max_samples)
                self.store.save(e.key, {"samples": samples, "R": R[l]}, e.fingerprint,
                                meta={"layer": l, "target": target, "over": over})
        return {"samples": samples, "R": R[layer]}

    def relevance(self, target: Any, layer: str, *, over: str | None = None, max_samples: int = 256,
                  normalize: str = "abs", per_sample: bool = False) -> pd.DataFrame:
        """See :meth:`semlens_widgets.lens.Lens.relevance`."""
        layer = self.layers.crp(layer)
        target = self.target(target)
        over = self.over(over)
        max_samples = positive_int("max_samples", max_samples)
        _relevance.check_normalize(normalize)
        got = self._relevance_raw(target, layer, over, max_samples)
        R = _relevance.abs_normalize(got["R"]) if normalize == "abs" else got["R"]
        n, C = R.shape
        if per_sample:
            return pd.DataFrame({
                "sample": np.repeat(got["samples"].numpy(), C),
                "layer": layer,
                "component": np.tile(np.arange(C), n),
                "relevance": R.reshape(-1).numpy().astype(float),
            })
        return pd.DataFrame({"layer": layer, "component": np.arange(C),
                             "relevance": R.mean(0).numpy().astype(float)})

    def class_relevance(self, layer: str, *, over: str | None = None, max_per_class: int = 32,
                        normalize: str = "abs") -> torch.Tensor:
        """See :meth:`semlens_widgets.lens.Lens.class_relevance`."""
        layer = self.layers.crp(layer)
        over = self.over(over)
        max_per_class = positive_int("max_per_class", max_per_class)
        _relevance.check_normalize(normalize)
        K = self.source.num_classes
        if K is None:
            raise ValueError("this model has no class outputs ([B, K] logits): no class relevance")
        entry = self.keys.class_relevance(layer, over, max_per_class)
        got = distributed.load(self.store, entry.key, entry.fingerprint)  # sharded: rank 0 reads for all
        if got is None:
            layers = self.layers.crp_layers()
            run = self.keys.class_relevance_run(layers, over, max_per_class)
            with step_lock(self.store, run.key):
                got = distributed.load(self.store, entry.key, entry.fingerprint)  # another process's
                if got is None:
                    got = self._class_relevance_pass(layer, layers, over, max_per_class, K)
            distributed.drop_chunks(self.store, run.key)
        return (got["mean_abs"] if normalize == "abs" else got["mean_raw"]).clone()

    def _class_relevance_pass(self, layer: str, layers: list[str], over: str, max_per_class: int,
                              K: int) -> dict[str, torch.Tensor]:
        """The per-class pass over every CRP layer: saves each layer's ``class_relevance`` entry,
        returns ``layer``'s."""
        classes_all = self._classes(over)
        keep = _relevance.per_class_samples(classes_all, max_per_class)
        classes = classes_all[keep]
        R = self._per_class_pass(keep, classes, layers, over, max_per_class)
        got = None
        for l in layers:
            mean_raw, counts = _relevance.class_mean_relevance(R[l], classes, K)
            mean_abs, _ = _relevance.class_mean_relevance(_relevance.abs_normalize(R[l]), classes, K)
            t = {"mean_raw": mean_raw, "mean_abs": mean_abs, "counts": counts}
            e = self.keys.class_relevance(l, over, max_per_class)
            distributed.save(self.store, e.key, t, e.fingerprint, meta={"layer": l, "over": over})
            if l == layer:
                got = t
        return got

    def _per_class_pass(self, keep: torch.Tensor, classes: torch.Tensor, layers: list[str], over: str,
                        max_per_class: int) -> dict[str, torch.Tensor]:
        """Per-sample CRP relevance ``{layer: [n, C]}`` of samples ``keep`` for ``classes``, in
        resumable chunks: an interrupted pass keeps its finished chunks in the store and the
        next call computes only the rest. Inside a sharded run
        (:func:`semlens_widgets.distributed.sharded`) the chunks are dealt out to the ranks."""
        run = self.keys.class_relevance_run(layers, over, max_per_class)

        def compute(a: int, b: int) -> dict[str, torch.Tensor]:
            return self._component_relevance(keep[a:b], classes[a:b], layers)

        parts = distributed.chunked(self.store, run.key, run.fingerprint, int(keep.numel()), self.chunk, compute,
                                    desc="class relevance", progress=self.progress) or [compute(0, 0)]
        return {l: torch.cat([p[l] for p in parts]) for l in layers}

    def top_classes(self, layer: str, k: int = 3, *, over: str | None = None, max_per_class: int = 32) -> pd.DataFrame:
        """See :meth:`semlens_widgets.lens.Lens.top_classes`."""
        k = positive_int("k", k)
        rel = self.class_relevance(layer, over=over, max_per_class=max_per_class)  # [K, C]
        v, cls = _relevance.top_classes(rel, k)  # [C, kk]
        C, kk = cls.shape
        names = self.source.class_names
        cls_np = cls.reshape(-1).numpy()
        return pd.DataFrame({
            "layer": layer,
            "component": np.repeat(np.arange(C), kk),
            "rank": np.tile(np.arange(kk), C),
            "class": cls_np.astype(np.int64),
            "name": [names[c] for c in cls_np] if names else [f"class {c}" for c in cls_np],
            "relevance": v.reshape(-1).numpy().astype(float),
        })

    # ------------------------------------------------------------------ attribution graph
    def attribution_graph(self, target: Any, layers: Any, concepts: list[str] | None, labeler: Labeler | None, *,
                          top_k: int = 5, threshold: float = 0.0, over: str | None = None,
                          max_samples: int = 32) -> AttributionGraph:
        """The graph of :meth:`semlens_widgets.lens.Lens.attribution_graph`; ``labeler(layer)``
        gives the labels of a layer for ``concepts`` (None: no concept nodes). Cached in memory
        and in the store."""
        target = self.target(target)
        layers = [self.layers.crp(l, flows=True) for l in
                  (self.layers.check_many(layers) if layers is not None else self.layers.flow_layers())]
        over = self.over(over)
        max_samples = positive_int("max_samples", max_samples)
        top_k = nonnegative_int("top_k", top_k)
        params = (target, tuple(layers), tuple(concepts or ()), top_k, float(threshold), over, max_samples)
        if params in self._graphs:
            return self._graphs[params]
        entry = self.keys.attribution_graph(*params)
        got = self.store.load(entry.key, entry.fingerprint)
        if got is None:
            with step_lock(self.store, entry.key):
                got = self.store.load(entry.key, entry.fingerprint)  # another process may have built it
                if got is None:
                    labels = {l: labeler(l) for l in layers} if (concepts and labeler is not None) else None
                    samples = self._samples_of(target, over, max_samples)
                    src, names = self.source, self.source.class_names
                    g = _relevance.build_attribution_graph(
                        src.model, src.model_inputs(samples), target, layers, src.composite, labels=labels,
                        top_k=top_k, target_name=names[target] if names else None,
                        batch_size=self.batch_size, device=src.device, progress=self.progress,
                    )
                    tensors, meta = _graph_to_store(g)
                    self.store.save(entry.key, tensors, entry.fingerprint, meta=meta)
        if got is not None:
            g = _graph_from_store(got, self.store.meta(entry.key)["meta"])
        self._graphs[params] = g
        return g


# ---------------------------------------------------------------------------- graph storage


def _graph_to_store(g: AttributionGraph) -> tuple[dict[str, torch.Tensor], dict]:
    """An AttributionGraph as (tensors, JSON meta) for the store; inverse: :func:`_graph_from_store`."""
    n, e = g.nodes, g.edges
    tensors = {
        "node_relevance": torch.tensor(n["relevance"].to_numpy(dtype=np.float64)),
        "edge_weight": torch.tensor(e["weight"].to_numpy(dtype=np.float64)),
        "edge_signed_weight": torch.tensor(e["signed_weight"].to_numpy(dtype=np.float64)),
    }
    meta = {
        "target": int(g.target),
        "layers": list(g.layers),
        "nodes": {
            "id": [str(v) for v in n["id"]],
            "layer": [str(v) for v in n["layer"]],
            "label": [None if v is None else str(v) for v in n["label"]],
            "components": [[int(c) for c in v] for v in n["components"]],
            "labelled": [bool(v) for v in n["labelled"]],
        },
        "edges": {"source": [str(v) for v in e["source"]], "target": [str(v) for v in e["target"]]},
    }
    return tensors, meta


def _graph_from_store(tensors: dict[str, torch.Tensor], meta: dict) -> AttributionGraph:
    # rows of plain Python values, as build_attribution_graph makes them: same dtypes on reload
    nm, em = meta["nodes"], meta["edges"]
    rel = tensors["node_relevance"].tolist()
    node_rows = [dict(id=nm["id"][i], layer=nm["layer"][i], label=nm["label"][i], components=nm["components"][i],
                      relevance=rel[i], labelled=nm["labelled"][i]) for i in range(len(rel))]
    w, sw = tensors["edge_weight"].tolist(), tensors["edge_signed_weight"].tolist()
    edge_rows = [dict(source=em["source"][i], target=em["target"][i], weight=w[i], signed_weight=sw[i])
                 for i in range(len(w))]
    nodes = pd.DataFrame(node_rows, columns=["id", "layer", "label", "components", "relevance", "labelled"])
    edges = pd.DataFrame(edge_rows, columns=["source", "target", "weight", "signed_weight"])
    return AttributionGraph(target=int(meta["target"]), layers=list(meta["layers"]), nodes=nodes, edges=edges)
