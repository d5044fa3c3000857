"""The semantic index of a Lens: vocabulary and labels, search, measures, audit, maps, and
:func:`compare`.

The maths is in :mod:`semlens_widgets.kernels` (search paper eq. 4, labelling, comparison
eqs. 5/6, audit section 3.4, measures eqs. 7, 9, 10, UMAP); this part checks arguments, keeps
the per-layer state (vocabulary, current labels, normalised embeddings), caches in the store
(keys of :mod:`semlens_widgets.lens_keys`) and builds the DataFrames. It reads components from
a :class:`~semlens_widgets.protocols.ComponentSource` (the Lens's pipeline) and relevance from
the Lens's :class:`~semlens_widgets.lens_relevance.Attribution` part.

Labels shown next to components (``search``, ``component_info``, ``compare``'s matches): the
labels of a layer are those of the most recent :meth:`SemanticIndex.label` call on that layer.
If the layer was never labelled and a vocabulary was set with
:meth:`SemanticIndex.set_vocabulary`, it is labelled with that vocabulary on demand
(threshold 0). Otherwise the label is ``None``. ``set_vocabulary`` forgets earlier labels.

Caching: measures and maps are saved in the store; normalised embeddings, the null embedding
and concept embeddings are cached in memory.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from semlens_widgets.kernels import measures as _measures
from semlens_widgets.kernels import semantics as _semantics
from semlens_widgets.kernels.vectors import normalize
from semlens_widgets.lens_checks import concept_list, describe, positive_int, real_number
from semlens_widgets.lens_keys import AnalysisKeys
from semlens_widgets.lens_layers import LayerSet
from semlens_widgets.lens_relevance import Attribution
from semlens_widgets.protocols import ComponentSource
from semlens_widgets.results import AttributionGraph, AuditResult, ComponentExamples, Comparison, LabelResult
from semlens_widgets.store import Store

__all__ = ["SemanticIndex", "ComponentInfo", "compare"]

_MAX_SIMILARITY_ELEMENTS = 2**30  # similarity() refuses to build matrices above 4 GB

# Concepts whose text embeddings, with probes made from the layer's own components, calibrate the
# search index of a big layer (kernels.semantics.build_search_index): stand-ins for the queries.
_CALIBRATION_CONCEPTS = (
    "dog", "cat", "bird", "horse", "fish", "insect", "person", "face", "hand", "eye", "car", "wheel",
    "boat", "building", "window", "road", "tree", "leaves", "flower", "grass", "sky", "clouds", "water",
    "snow", "sand", "fire", "food", "fruit", "text", "a watermark", "a logo", "stripes", "dots",
    "a checkerboard pattern", "fur", "feathers", "metal", "wood", "glass", "fabric", "red", "blue",
    "green", "yellow", "black and white", "a book", "a ball", "a chair",
)

#: what search / search_scores accept as a query (told apart by type and rank)
QUERIES = ("a text (str) or a list of texts; images as a float tensor [3, H, W] or [n, 3, H, W] in [0, 1]; "
           "embedding probes as a float tensor [d] or [n, d] of the foundation model's space")



@dataclass
class ComponentInfo:
    """Everything known about one component (``lens.component_info``): the link from a
    component back to its data (concept examples) and to the outputs it matters for.

    examples:    its concept examples (dataset ``indices [m]``, ``activations [m]``).
    label:       current label or None (see the module docstring).
    measures:    clarity, polysemanticity, max_similarity, nearest (component id).
    top_classes: DataFrame ``rank, class, name, relevance``: the classes for which the component
                 is most relevant (mean abs-normalised CRP relevance over the class's samples).
    """

    layer: str
    component: int
    label: str | None
    examples: ComponentExamples
    measures: dict[str, float]
    top_classes: pd.DataFrame = field(default_factory=pd.DataFrame)


class SemanticIndex:
    """Search, labels, measures, audit and maps over the semantic embeddings of a Lens.

    source: the components (:class:`ComponentSource`); fm: the foundation model (text and image
    probes, the null embedding); store / keys: the cache; layers: the Lens's layers;
    attribution: the relevance part (audit, component info, attribution graphs).
    """

    def __init__(self, source: ComponentSource, fm: Any, store: Store, keys: AnalysisKeys, layers: LayerSet,
                 attribution: Attribution):
        self.source = source
        self.fm = fm
        self.store = store
        self.keys = keys
        self.layers = layers
        self.attribution = attribution
        self._vocabulary: list[str] | None = None
        self._labels: dict[str, list[str | None]] = {}     # layer -> current labels [C]
        self._theta_unit: dict[str, torch.Tensor] = {}     # layer -> [C, d] unit rows
        self._concepts: dict[str, torch.Tensor] = {}       # concept -> [d]
        self._null: torch.Tensor | None = None             # [d]
        self._indexes: dict[str, _semantics.SearchIndex | None] = {}  # layer -> index (None: dense)

    # ------------------------------------------------------------------ embeddings
    def theta_unit(self, layer: str) -> torch.Tensor:
        """[C, d] L2-normalised theta of ``layer`` (cached in memory)."""
        t = self._theta_unit.get(layer)
        if t is None:
            t = self._theta_unit[layer] = normalize(self.source.embeddings(layer)).contiguous()
        return t

    def forget_embeddings(self) -> None:
        """Drop the cached normalised embeddings (after the source's embeddings changed)."""
        self._theta_unit.clear()
        self._indexes.clear()

    def null(self) -> torch.Tensor:
        """[d] the empty-template embedding of the foundation model."""
        if self._null is None:
            self._null = self.fm.null_embedding().float().reshape(-1).cpu()
        return self._null

    def encode(self, concepts: list[str]) -> torch.Tensor:
        """[V, d] concept embeddings (mean over templates; cached per string)."""
        todo = [c for c in dict.fromkeys(concepts) if c not in self._concepts]
        if todo:
            for c, e in zip(todo, self.fm.encode_concepts(todo).float().cpu()):
                self._concepts[c] = e
        return torch.stack([self._concepts[c] for c in concepts])

    # ------------------------------------------------------------------ vocabulary and labels
    def set_vocabulary(self, concepts: Sequence[str] | None) -> None:
        """See :meth:`semlens_widgets.lens.Lens.set_vocabulary`."""
        self._vocabulary = None if concepts is None else concept_list(concepts)
        self._labels = {}

    @property
    def vocabulary(self) -> list[str] | None:
        return None if self._vocabulary is None else list(self._vocabulary)

    def label_result(self, concepts: list[str], layer: str, threshold: float) -> LabelResult:
        """Labels of ``layer`` for ``concepts`` (checked) without making them the current ones."""
        theta = self.theta_unit(layer)
        a = _semantics.assign_labels(theta, self.encode(concepts), self.null(), threshold=threshold)
        names = np.array(concepts, dtype=object)
        best = names[a.best.numpy()]
        table = pd.DataFrame({
            "layer": layer,
            "component": np.arange(theta.shape[0]),
            "label": pd.Series(np.where(a.labelled.numpy(), best, None), dtype=object),
            "score": a.score.numpy().astype(float),
            "baseline": a.baseline.numpy().astype(float),
            "best": pd.Series(best, dtype=object),
        })
        gaps, groups = _semantics.label_gaps_and_groups(a, concepts)
        return LabelResult(table=table, gaps=gaps, groups=groups)

    def label(self, concepts: Sequence[str], layer: str, threshold: float = 0.0) -> LabelResult:
        """See :meth:`semlens_widgets.lens.Lens.label`."""
        concepts = concept_list(concepts)
        layer = self.layers.check(layer)
        res = self.label_result(concepts, layer, real_number("threshold", threshold))
        self._labels[layer] = res.table["label"].tolist()
        return res

    def current_labels(self, layer: str) -> list[str | None] | None:
        """The current labels of ``layer`` (see the module docstring), or None."""
        if layer in self._labels:
            return self._labels[layer]
        if self._vocabulary:
            labels = self._labels[layer] = self.label_result(self._vocabulary, layer, 0.0).table["label"].tolist()
            return labels
        return None

    # ------------------------------------------------------------------ search (paper eq. 4)
    def _probes(self, query: Any) -> tuple[list[str], torch.Tensor]:
        """Query -> (names [Q], probe embeddings [Q, d]). The accepted forms (:data:`QUERIES`) are
        told apart by type and rank alone: a str or a list of str (texts); a tensor of rank 3 or
        4 (images ``[3, H, W]`` / ``[n, 3, H, W]`` in [0, 1]); of rank 1 or 2 (embeddings ``[d]`` /
        ``[n, d]``). A rank-1/2 tensor that looks like pixels (every value in [0, 1], rows not
        unit vectors, e.g. ``torch.rand(3, 16)``) is refused as ambiguous rather than read as
        embeddings."""
        if isinstance(query, str):
            query = [query]
        if isinstance(query, (list, tuple)):
            if not query:
                raise ValueError(f"query is an empty list; accepted: {QUERIES}")
            for i, q in enumerate(query):
                if not isinstance(q, str):
                    raise TypeError(f"query list item {i} is {describe(q)}; a list query holds texts (str); "
                                    f"accepted: {QUERIES}")
                if not q.strip():
                    raise ValueError(f"query {q!r} is empty or only whitespace: type a concept, e.g. 'dog'")
            return list(query), self.encode(list(query))
        if not isinstance(query, torch.Tensor):
            raise TypeError(f"query must be a str, a list of str or a tensor, got {describe(query)}; "
                            f"accepted: {QUERIES}")
        x = query.detach()
        shape = tuple(x.shape)
        if x.dim() not in (1, 2, 3, 4) or x.numel() == 0:
            raise ValueError(f"query tensor of shape {shape} is neither images nor embeddings; accepted: {QUERIES}")
        if not x.is_floating_point():
            raise ValueError(f"query tensor has dtype {x.dtype}; images and embeddings are floating point "
                             f"(images in [0, 1], e.g. x.float() / 255); accepted: {QUERIES}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"query tensor of shape {shape} has NaN or infinite values; accepted: {QUERIES}")
        d = int(self.null().shape[0])
        if x.dim() <= 2:  # embedding probes [d] / [n, d]
            e = x.reshape(1, -1) if x.dim() == 1 else x
            if e.shape[1] != d:
                raise ValueError(f"query tensor of shape {shape} is not embeddings of this foundation model "
                                 f"(d={d}) nor images; accepted: {QUERIES}")
            zero = (e == 0).all(dim=1)
            if bool(zero.any()):
                raise ValueError(f"embedding probe {int(zero.nonzero()[0, 0])} is all zeros: it has no direction "
                                 f"to search for")
            unit = torch.allclose(normalize(e), e.float(), atol=1e-2, rtol=0)
            if bool(((e >= 0) & (e <= 1)).all()) and not unit:
                raise ValueError(
                    f"query tensor of shape {shape} is ambiguous: it reads as {e.shape[0]} embedding probe(s) "
                    f"[n, d={d}], but every value lies in [0, 1] and its rows are not unit vectors, like pixels "
                    f"(an image without one of its dimensions?). Accepted: {QUERIES}. Embeddings of the "
                    f"foundation model (fm.encode_text / fm.encode_images rows, L2-normalised; rows of "
                    f"lens.embeddings) are read as such; to search with other vectors, L2-normalise their rows"
                )
            names = ["embedding"] if x.dim() == 1 else [f"embedding {i}" for i in range(e.shape[0])]
            return names, e.float().cpu()
        img = x.unsqueeze(0) if x.dim() == 3 else x
        if img.shape[1] != 3:
            raise ValueError(f"image query of shape {shape} has {img.shape[1]} channels, not 3 (RGB): images are "
                             f"[3, H, W] or [n, 3, H, W] (gray: x.expand(3, -1, -1)); accepted: {QUERIES}")
        lo, hi = float(img.min()), float(img.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"image query has values in [{lo:.3g}, {hi:.3g}]; images are in [0, 1] (display "
                             f"space, not normalised model inputs: undo the normalisation, e.g. "
                             f"semlens_widgets.lens.imagenet_unnormalize); accepted: {QUERIES}")
        names = ["image"] if img.shape[0] == 1 else [f"image {i}" for i in range(img.shape[0])]
        return names, self.fm.encode_images(img.float()).float().cpu()

    def _scores(self, probes: torch.Tensor, layer: str) -> torch.Tensor:
        return _semantics.search_scores(probes, self.null(), self.theta_unit(layer), theta_normalized=True)

    def search_scores(self, queries: Any, layer: str) -> torch.Tensor:
        """See :meth:`semlens_widgets.lens.Lens.search_scores`."""
        layer = self.layers.check(layer)
        _, probes = self._probes(queries)
        return self._scores(probes, layer)

    def search_index(self, layer: str) -> _semantics.SearchIndex | None:
        """The inverted lists that search ``layer`` (a layer of at least
        ``kernels.semantics.INDEX_MIN_COMPONENTS`` components), built and calibrated on its first
        search and kept in the store; None: the layer is searched densely (exact): a small layer,
        or one where no number of scanned cells reached the target recall."""
        if layer in self._indexes:
            return self._indexes[layer]
        theta = self.theta_unit(layer)
        index = None
        if theta.shape[0] >= _semantics.INDEX_MIN_COMPONENTS:
            settings = {"target_recall": _semantics.TARGET_RECALL, "k": 10, "seed": 0,
                        "calibration": list(_CALIBRATION_CONCEPTS), "images": 64}

            def build() -> dict[str, torch.Tensor]:
                probes = torch.cat([self.encode(list(_CALIBRATION_CONCEPTS)),
                                    _semantics.calibration_probes(theta, settings["images"], seed=settings["seed"])])
                built = _semantics.build_search_index(theta, probes, self.null(), k=settings["k"],
                                                      seed=settings["seed"], target_recall=settings["target_recall"])
                # n_probe 0 records "searched densely": no cell count reached the target recall
                return built.tensors() if built is not None else {"params": torch.zeros(3, dtype=torch.float64)}

            entry = self.keys.search_index(layer, settings)
            got = self.store.cached(entry.key, entry.fingerprint, build, meta={"layer": layer})
            if "order" in got:
                try:
                    index = _semantics.SearchIndex.from_tensors(got, *theta.shape)
                except ValueError as e:  # a damaged entry: build it again
                    warnings.warn(f"layer {layer!r}: {e}; rebuilding it", stacklevel=3)
                    got = build()
                    self.store.save(entry.key, got, entry.fingerprint, meta={"layer": layer})
                    index = _semantics.SearchIndex.from_tensors(got, *theta.shape) if "order" in got else None
        self._indexes[layer] = index
        return index

    def _top_hits(self, probes: torch.Tensor, layer: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k ``(scores [Q, k'], components [Q, k'])`` of ``layer`` for ``probes [Q, d]``
        (paper eq. 4): dense and exact, or through the layer's search index when it has one."""
        index = self.search_index(layer)
        if index is None:
            return _semantics.top_hits(self._scores(probes, layer), k)
        return _semantics.index_top_hits(index, self.theta_unit(layer), _semantics.search_direction(probes, self.null()), k)

    def search(self, query: Any, layer: str | None = None, k: int = 10) -> pd.DataFrame:
        """See :meth:`semlens_widgets.lens.Lens.search`."""
        k = positive_int("k", k)
        layers = self.layers.check_many(layer)
        names, probes = self._probes(query)
        v, comp, lay = _semantics.merge_hits_over_layers([self._top_hits(probes, l, k) for l in layers], k)
        Q, kk = v.shape
        layer_names = np.array(layers, dtype=object)[lay.reshape(-1).numpy()]
        comp = comp.reshape(-1).numpy()
        current = {l: self.current_labels(l) for l in layers}
        labels = [None if current[l] is None else current[l][int(c)] for l, c in zip(layer_names, comp)]
        return pd.DataFrame({
            "query": np.repeat(np.array(names, dtype=object), kk),
            "rank": np.tile(np.arange(kk), Q),
            "layer": layer_names,
            "component": comp.astype(np.int64),
            "score": v.reshape(-1).numpy().astype(float),
            "label": pd.Series(labels, dtype=object),
        })

    # ------------------------------------------------------------------ measures (eqs. 7, 9, 10)
    def measure_tensors(self, layer: str, seed: int = 0) -> dict[str, torch.Tensor]:
        """clarity, polysemanticity, max_similarity, nearest ``[C]`` of ``layer`` (cached in the store)."""
        layer = self.layers.check(layer)
        entry = self.keys.measures(layer, seed)
        src = self.source
        return self.store.cached(
            entry.key, entry.fingerprint,
            lambda: _measures.component_measures(src.example_embeddings(layer), src.embeddings(layer), seed=seed),
            meta={"layer": layer, "seed": seed},
        )

    def redundancy(self, layer: str) -> float:
        """See :meth:`semlens_widgets.lens.Lens.redundancy`."""
        layer = self.layers.check(layer)
        max_sim = self.measure_tensors(layer)["max_similarity"]
        if max_sim.numel() < 2:
            raise ValueError(f"redundancy needs at least 2 components; layer {layer!r} has {max_sim.numel()}")
        return _measures.redundancy(max_sim)

    def similarity(self, layer_a: str, layer_b: str | None = None) -> torch.Tensor:
        """See :meth:`semlens_widgets.lens.Lens.similarity`."""
        a = self.theta_unit(self.layers.check(layer_a))
        b = a if layer_b is None else self.theta_unit(self.layers.check(layer_b))
        if a.shape[0] * b.shape[0] > _MAX_SIMILARITY_ELEMENTS:
            raise ValueError(
                f"a {a.shape[0]} x {b.shape[0]} similarity matrix is too big to return; use "
                "lens.measures(layer) (nearest component and max similarity, chunked) instead"
            )
        return _measures.cosine_similarity_matrix(a, b)

    def measures(self, layer: str) -> pd.DataFrame:
        """See :meth:`semlens_widgets.lens.Lens.measures`."""
        t = self.measure_tensors(layer)
        C = t["clarity"].shape[0]
        labels = self.current_labels(layer)
        return pd.DataFrame({
            "layer": layer,
            "component": np.arange(C),
            "clarity": t["clarity"].numpy().astype(float),
            "polysemanticity": t["polysemanticity"].numpy().astype(float),
            "max_similarity": t["max_similarity"].numpy().astype(float),
            "nearest": t["nearest"].numpy().astype(np.int64),
            "label": pd.Series(labels if labels is not None else [None] * C, dtype=object),
        })

    def measures_summary(self, layers: Any = None) -> pd.DataFrame:
        """See :meth:`semlens_widgets.lens.Lens.measures_summary`."""
        rows = [dict(layer=l, **_measures.layer_summary(self.measure_tensors(l))) for l in self.layers.check_many(layers)]
        return pd.DataFrame(rows, columns=["layer", "n_components", "clarity", "polysemanticity", "redundancy"])

    def component_info(self, layer: str, component: Any, k: int = 5) -> ComponentInfo:
        """See :meth:`semlens_widgets.lens.Lens.component_info`."""
        layer = self.layers.check(layer)
        ex = self.source.examples(layer, component)
        comp = int(ex.component)
        t = self.measure_tensors(layer)
        meas = {n: float(t[n][comp]) for n in ("clarity", "polysemanticity", "max_similarity")}
        meas["nearest"] = int(t["nearest"][comp])
        labels = self.current_labels(layer)
        top = pd.DataFrame(columns=["rank", "class", "name", "relevance"])
        src = self.attribution.source
        if src.num_classes is not None and layer in self.layers.crp_layers() \
                and (src.sample_labels is not None or src.sample_predictions is not None):
            tc = self.attribution.top_classes(layer, k)
            top = tc[tc.component == comp].drop(columns=["layer", "component"]).reset_index(drop=True)
        return ComponentInfo(layer=layer, component=comp, label=None if labels is None else labels[comp],
                             examples=ex, measures=meas, top_classes=top)

    # ------------------------------------------------------------------ audit (paper section 3.4)
    def audit(self, valid: Sequence[str], spurious: Sequence[str], layer: str, target: Any, *, tau: float = 0.0,
              over: str | None = None, max_samples: int = 256) -> AuditResult:
        """See :meth:`semlens_widgets.lens.Lens.audit`."""
        valid = concept_list(valid, "valid")
        spurious = concept_list(spurious, "spurious")
        layer = self.layers.crp(layer)
        target = self.attribution.target(target)
        tau = real_number("tau", tau)
        theta, null = self.theta_unit(layer), self.null()
        a_v, b_v = _semantics.alignment_scores(theta, self.encode(valid), null)
        a_s, b_s = _semantics.alignment_scores(theta, self.encode(spurious), null)
        cats = _semantics.audit_categories(a_v, a_s, tau)
        rel = self.attribution.relevance(target, layer, over=over, max_samples=max_samples)["relevance"].to_numpy()
        best, labelled = _semantics.audit_labels(a_v, b_v, a_s, b_s, len(valid), tau)
        names = np.array(valid + spurious, dtype=object)
        table = pd.DataFrame({
            "layer": layer,
            "component": np.arange(theta.shape[0]),
            "a_valid": a_v.numpy().astype(float),
            "a_spur": a_s.numpy().astype(float),
            "best_valid": pd.Series(names[b_v.numpy()], dtype=object),
            "best_spur": pd.Series(names[len(valid) + b_s.numpy()], dtype=object),
            "relevance": rel.astype(float),
            "category": cats,
            "label": pd.Series(np.where(labelled.numpy(), names[best.numpy()], None), dtype=object),
        })
        summary = pd.DataFrame(_semantics.audit_summary(cats, torch.tensor(rel, dtype=torch.float64)))
        flagged = [k for k, c in enumerate(cats) if c in ("spurious", "both")]
        samples = {k: self.source.examples(layer, k).indices for k in flagged}
        return AuditResult(layer=layer, target=target, valid=valid, spurious=spurious, table=table,
                           summary=summary, spurious_samples=samples)

    # ------------------------------------------------------------------ attribution graph
    def attribution_graph(self, target: Any, layers: Any = None, concepts: Sequence[str] | None = None, *,
                          top_k: int = 5, threshold: float = 0.0, over: str | None = None,
                          max_samples: int = 32) -> AttributionGraph:
        """See :meth:`semlens_widgets.lens.Lens.attribution_graph`: components grouped by their
        labels for ``concepts`` (default: the vocabulary), relevance flows from the attribution part."""
        concepts = self.vocabulary if concepts is None else concept_list(concepts)
        threshold = real_number("threshold", threshold)

        def labeler(layer: str) -> list[str | None]:
            return self.label_result(concepts, layer, threshold).table["label"].tolist()

        return self.attribution.attribution_graph(target, layers, concepts, labeler, top_k=top_k,
                                                  threshold=threshold, over=over, max_samples=max_samples)

    # ------------------------------------------------------------------ map
    def map(self, layer: Any, *, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> pd.DataFrame:
        """See :meth:`semlens_widgets.lens.Lens.map`."""
        from semlens_widgets.kernels.projection import umap_2d

        layers = self.layers.check_many(layer)
        entry = self.keys.map(layers, seed, n_neighbors, min_dist)
        got = self.store.cached(
            entry.key, entry.fingerprint,
            lambda: {"xy": umap_2d(torch.cat([self.source.embeddings(l) for l in layers]), seed=seed,
                                   n_neighbors=n_neighbors, min_dist=min_dist)},
            meta={"layers": layers},
        )
        sizes = [self.source.num_components(l) for l in layers]
        xy = got["xy"].numpy()
        return pd.DataFrame({
            "layer": np.repeat(np.array(layers, dtype=object), sizes),
            "component": np.concatenate([np.arange(s) for s in sizes]),
            "x": xy[:, 0].astype(float),
            "y": xy[:, 1].astype(float),
        })

    # ------------------------------------------------------------------ compare (paper eqs. 5/6)
    def compare(self, other: "SemanticIndex", layer_a: str, layer_b: str, concepts: Sequence[str] | None = None,
                *, threshold: float = 0.0) -> Comparison:
        """This index's ``layer_a`` (A) against ``other``'s ``layer_b`` (B); see :func:`compare`."""
        ia, ib = self.fm.identity, other.fm.identity
        if ia != ib:
            raise ValueError(
                "cannot compare lenses built with different foundation models: their embedding spaces "
                f"differ (A: {ia}, B: {ib}); build both lenses with the same fm"
            )
        layer_a, layer_b = self.layers.check(layer_a), other.layers.check(layer_b)
        threshold = real_number("threshold", threshold)
        ta, tb = self.theta_unit(layer_a), other.theta_unit(layer_b)
        s_ab, s_ba = _semantics.set_similarity(ta, tb), _semantics.set_similarity(tb, ta)
        cos, nn_idx = _measures.max_similarity(ta, tb)
        concepts = (self.vocabulary or other.vocabulary) if concepts is None else concept_list(concepts)
        shared: list[str] = []
        unique_a: list[str] = []
        unique_b: list[str] = []
        counts = pd.DataFrame(columns=["concept", "count_a", "count_b"])
        if concepts:
            ra = self.label_result(list(concepts), layer_a, threshold)
            rb = other.label_result(list(concepts), layer_b, threshold)
            la, lb = ra.table["label"].tolist(), rb.table["label"].tolist()
            shared, unique_a, unique_b, count_a, count_b = _semantics.concept_overlap(list(concepts), ra.groups,
                                                                                      rb.groups)
            counts = pd.DataFrame({"concept": list(concepts), "count_a": count_a, "count_b": count_b})
        else:
            la, lb = self.current_labels(layer_a), other.current_labels(layer_b)
        nn_np = nn_idx.numpy()
        none = [None] * ta.shape[0]
        matches = pd.DataFrame({
            "component_a": np.arange(ta.shape[0]),
            "component_b": nn_np.astype(np.int64),
            "cosine": cos.numpy().astype(float),
            "label_a": pd.Series(la if la is not None else none, dtype=object),
            "label_b": pd.Series([lb[j] for j in nn_np] if lb is not None else none, dtype=object),
        })
        return Comparison(layer_a=layer_a, layer_b=layer_b, s_ab=s_ab, s_ba=s_ba, shared=shared,
                          unique_a=unique_a, unique_b=unique_b, counts=counts, matches=matches)


def compare(lens_a, lens_b, layer_a: str, layer_b: str, concepts: Sequence[str] | None = None,
            *, threshold: float = 0.0) -> Comparison:
    """Compare the knowledge of two lenses' layers (paper eqs. 5/6, comparing models).

    ``s_ab = S(A -> B) = mean_{theta in A} max_{theta' in B} cos(theta, theta')`` and ``s_ba``;
    works across layers and architectures (C_a != C_b). Both lenses must share one foundation
    model (``fm.identity``), otherwise their embedding spaces are unrelated and this refuses.

    With ``concepts`` (default: lens_a's vocabulary, else lens_b's) both layers are labelled
    (``threshold``): ``shared`` / ``unique_a`` / ``unique_b`` are the concepts carried by both /
    only A / only B, ``counts`` the label counts side by side. ``matches`` is the nearest B
    component of every A component (``component_a, component_b, cosine, label_a, label_b``).
    Without concepts the concept lists are empty.
    """
    indexes = []
    for name, lens in (("lens_a", lens_a), ("lens_b", lens_b)):
        index = lens.semantics if hasattr(lens, "semantics") else None
        if not isinstance(index, SemanticIndex):
            raise TypeError(f"compare needs two semlens_widgets.Lens objects, got {describe(lens)} for {name}; "
                            f"accepted: compare(lens_a, lens_b, layer_a, layer_b) with two run lenses")
        indexes.append(index)
    return indexes[0].compare(indexes[1], layer_a, layer_b, concepts, threshold=threshold)
