"""The semantic methods of :class:`~semlens_widgets.lens.Lens` (SemanticLens steps 3-9 of DESIGN):
search, label, measures, relevance, audit, attribution graphs, maps, and :func:`compare`.

``Lens`` inherits :class:`LensSemanticsMixin`; the mixin only uses the Lens attributes listed in
``docs/INTERNALS.md`` (``fm, store, fingerprint, layers, embeddings(layer),
example_embeddings(layer), examples(layer, k), num_components(layer), model, composite, device,
class_names, num_classes, sample_labels, sample_predictions, model_inputs(indices)``), so any
object with those attributes can use it. The maths lives in ``semlens_widgets.kernels``.

Labels shown next to components (``search``, ``component_info``, ``compare``'s matches): the
labels of a layer are those of the most recent :meth:`~LensSemanticsMixin.label` call on that
layer. If the layer was never labelled and a vocabulary was set with
:meth:`~LensSemanticsMixin.set_vocabulary`, it is labelled with that vocabulary on demand
(threshold 0). Otherwise the label is ``None``. ``set_vocabulary`` forgets earlier labels.

Caching: relevances (raw per-sample CRP values), per-class relevances, measures and maps are
saved in ``lens.store`` under fingerprints of ``lens.fingerprint`` plus every argument, so a
re-opened lens reuses them and any change of model/data/foundation model recomputes them.
Normalised embeddings, the null embedding, concept embeddings and attribution graphs are cached
in memory only.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from semlens_widgets.kernels import measures as _measures
from semlens_widgets.kernels import relevance as _relevance
from semlens_widgets.kernels import semantics as _semantics
from semlens_widgets.results import (
    AUDIT_CATEGORIES,
    AttributionGraph,
    AuditResult,
    ComponentExamples,
    Comparison,
    LabelResult,
)
from semlens_widgets.store import fingerprint as _fingerprint

__all__ = ["LensSemanticsMixin", "ComponentInfo", "compare", "OVER"]

OVER = ("label", "prediction")
_VERSION = 1  # bump when a cached computation changes: invalidates stored results
_MAX_SIMILARITY_ELEMENTS = 2**30  # similarity() refuses to build matrices above 4 GB


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


# ---------------------------------------------------------------------------- validation


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _concept_list(concepts: Any, what: str = "concepts") -> list[str]:
    """A non-empty list of distinct, non-blank strings (a single str is one concept)."""
    if isinstance(concepts, str):
        concepts = [concepts]
    if concepts is None or not isinstance(concepts, (list, tuple)) or len(concepts) == 0:
        raise ValueError(f"{what} must be a non-empty list of concept names (str), got {concepts!r}")
    out = []
    for c in concepts:
        if not isinstance(c, str):
            raise TypeError(f"{what} must be strings, got {c!r} ({type(c).__name__})")
        if not c.strip():
            raise ValueError(f"{what} contains an empty or whitespace-only concept {c!r}")
        out.append(c)
    dup = sorted({c for c in out if out.count(c) > 1})
    if dup:
        raise ValueError(f"{what} contains duplicates {dup}")
    return out


def _check_over(over: str | None, lens: Any) -> str:
    """``over=None``: the dataset labels when there are any, else the model's predictions."""
    if over is None:
        return "label" if lens.sample_labels is not None else "prediction"
    if over not in OVER:
        raise ValueError(f"over must be one of {list(OVER)} or None, got {over!r}")
    return over


def _check_positive_int(name: str, v: Any) -> int:
    if not _is_int(v) or v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return int(v)


class LensSemanticsMixin:
    """Search, label, measure, relevance, audit, attribution-graph and map methods of a Lens.

    See the module docstring for the attributes the mixin needs and for labels and caching.
    """

    # ------------------------------------------------------------------ state and helpers
    def _sem_state(self) -> dict:
        st = self.__dict__.get("_semantics_state")
        if st is None or st["fingerprint"] != self.fingerprint:
            st = {"fingerprint": self.fingerprint, "theta_unit": {}, "null": None, "concepts": {},
                  "labels": {}, "vocabulary": (st or {}).get("vocabulary"), "graphs": {}}
            self.__dict__["_semantics_state"] = st
        return st

    def _sem_layer(self, layer: Any) -> str:
        check = getattr(self, "_check_layer", None)
        if check is not None:
            return check(layer)
        if layer not in self.layers:
            raise ValueError(f"unknown layer {layer!r}; this Lens has layers {list(self.layers)}")
        return layer

    def _sem_layers(self, layers: Any) -> list[str]:
        if layers is None:
            return list(self.layers)
        if isinstance(layers, str):
            layers = [layers]
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"layers must be a layer name or a non-empty list of them, got {layers!r}")
        return [self._sem_layer(l) for l in layers]

    def _crp_layer(self, layer: str) -> str:
        layer = self._sem_layer(layer)
        if "@" in layer or "[" in layer:
            raise ValueError(
                f"relevance cannot be computed for layer {layer!r}: CRP conditions on whole modules, "
                "not on one call of a reused module ('name@i') or one element of a tuple output "
                "('name[j]'); analyse a module that is called once and returns a tensor"
            )
        return layer

    def _sem_fp(self, *parts: Any) -> str:
        return _fingerprint("semantics", _VERSION, self.fingerprint, *parts)

    def _target(self, target: Any) -> int:
        names = getattr(self, "class_names", None)
        if isinstance(target, str) and names is not None:
            if target not in names:
                raise ValueError(f"unknown class name {target!r}; class names: {list(names)[:20]}")
            return list(names).index(target)
        if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point():
            target = int(target)
        K = self.num_classes
        if K is None:
            raise ValueError("this model has no class outputs ([B, K] logits): relevance needs a target class")
        if not _is_int(target) or not 0 <= int(target) < K:
            raise ValueError(f"target class {target!r} out of range: expected an int in [0, {K}) "
                             f"{'or a class name' if names else ''}".rstrip())
        return int(target)

    def _theta_unit(self, layer: str) -> torch.Tensor:
        """[C, d] L2-normalised theta of ``layer`` (cached in memory)."""
        st = self._sem_state()
        t = st["theta_unit"].get(layer)
        if t is None:
            t = _semantics.normalize(self.embeddings(layer)).contiguous()
            st["theta_unit"][layer] = t
        return t

    def _null(self) -> torch.Tensor:
        st = self._sem_state()
        if st["null"] is None:
            st["null"] = self.fm.null_embedding().float().reshape(-1).cpu()
        return st["null"]

    def _encode(self, concepts: list[str]) -> torch.Tensor:
        """[V, d] concept embeddings (mean over templates; cached per string)."""
        cache = self._sem_state()["concepts"]
        todo = [c for c in dict.fromkeys(concepts) if c not in cache]
        if todo:
            emb = self.fm.encode_concepts(todo).float().cpu()
            for c, e in zip(todo, emb):
                cache[c] = e
        return torch.stack([cache[c] for c in concepts])

    def _batch_size(self) -> int:
        return int(getattr(self, "batch_size", 32) or 32)

    def _progress(self) -> bool:
        return bool(getattr(self, "progress", False))

    # ------------------------------------------------------------------ vocabulary and labels
    def set_vocabulary(self, concepts: Sequence[str] | None) -> None:
        """Set the concept vocabulary used for labels shown by ``search``, ``component_info``,
        ``attribution_graph`` and ``compare`` when no explicit concepts are given; ``None`` unsets
        it. Forgets labels from earlier :meth:`label` calls."""
        st = self._sem_state()
        st["vocabulary"] = None if concepts is None else _concept_list(concepts)
        st["labels"] = {}

    @property
    def vocabulary(self) -> list[str] | None:
        """The vocabulary set by :meth:`set_vocabulary` (or None)."""
        v = self._sem_state()["vocabulary"]
        return None if v is None else list(v)

    def _label_result(self, concepts: list[str], layer: str, threshold: float) -> LabelResult:
        theta = self._theta_unit(layer)
        a = _semantics.assign_labels(theta, self._encode(concepts), self._null(), threshold=threshold)
        names = np.array(concepts, dtype=object)
        best = names[a.best.numpy()]
        labels = np.where(a.labelled.numpy(), best, None)
        table = pd.DataFrame({
            "layer": layer,
            "component": np.arange(theta.shape[0]),
            "label": pd.Series(labels, dtype=object),
            "score": a.score.numpy().astype(float),
            "baseline": a.baseline.numpy().astype(float),
            "best": pd.Series(best, dtype=object),
        })
        gaps, groups = _semantics.label_gaps_and_groups(a, concepts)
        return LabelResult(table=table, gaps=gaps, groups=groups)

    def label(self, concepts: Sequence[str], layer: str, threshold: float = 0.0) -> LabelResult:
        """Label every component of ``layer`` with its best concept (DESIGN eq. 5).

        A component gets concept ``c* = argmax_c s(c, theta) - s(null, theta)`` when that score is
        ``> max(0, threshold)``, else ``label=None``. Returns :class:`LabelResult` with ``table``
        (``layer, component, label, score, baseline, best`` -- ``best`` is the best concept even
        when it does not qualify), ``gaps`` (concepts no component carries) and ``groups``
        (concept -> components; ``.counts`` gives NetDissect-style label counts).
        These labels become the layer's current labels (shown by ``search``).
        """
        concepts = _concept_list(concepts)
        layer = self._sem_layer(layer)
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise ValueError(f"threshold must be a number, got {threshold!r}")
        res = self._label_result(concepts, layer, float(threshold))
        self._sem_state()["labels"][layer] = res.table["label"].tolist()
        return res

    def _current_labels(self, layer: str) -> list[str | None] | None:
        st = self._sem_state()
        if layer in st["labels"]:
            return st["labels"][layer]
        if st["vocabulary"]:
            labels = self._label_result(st["vocabulary"], layer, 0.0).table["label"].tolist()
            st["labels"][layer] = labels
            return labels
        return None

    # ------------------------------------------------------------------ search (eq. 4)
    def _probes(self, query: Any) -> tuple[list[str], torch.Tensor]:
        """Query -> (names [Q], probe embeddings [Q, d])."""
        if isinstance(query, str):
            query = [query]
        if isinstance(query, (list, tuple)):
            if not query:
                raise ValueError("query is an empty list: pass a text, a list of texts or an image tensor")
            for q in query:
                if not isinstance(q, str):
                    raise TypeError(f"text queries must be str, got {q!r} ({type(q).__name__})")
                if not q.strip():
                    raise ValueError(f"query {q!r} is empty or only whitespace: type a concept, e.g. 'dog'")
            return list(query), self._encode(list(query))
        if isinstance(query, torch.Tensor):
            x = query.detach()
            if x.dim() == 2:  # precomputed probe embeddings [Q, d]
                d = self._null().shape[0]
                if x.shape[1] != d:
                    raise ValueError(f"embedding probes must be [Q, {d}], got {tuple(x.shape)}")
                return [f"embedding {i}" for i in range(x.shape[0])], x.float().cpu()
            if x.dim() == 3:
                x = x.unsqueeze(0)
            if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] == 0:
                raise ValueError(f"image queries must be [3, H, W] or [n, 3, H, W] in [0, 1], got {tuple(query.shape)}")
            if not x.is_floating_point() or float(x.min()) < 0 or float(x.max()) > 1:
                raise ValueError("image queries must be float tensors with values in [0, 1] "
                                 "(display space, not normalised model inputs)")
            names = ["image"] if x.shape[0] == 1 else [f"image {i}" for i in range(x.shape[0])]
            return names, self.fm.encode_images(x).float().cpu()
        raise TypeError(f"query must be a str, a list of str or an image tensor, got {type(query).__name__}")

    def search_scores(self, queries: Any, layer: str) -> torch.Tensor:
        """Scores ``[Q, C]`` of DESIGN eq. 4, ``s(probe_q, theta_k) - s(null, theta_k)``, of the
        queries (str, list of str, image ``[3,H,W]`` / ``[n,3,H,W]`` in [0,1], or probe
        embeddings ``[Q, d]``) against every component of ``layer``. Row q is query q, also
        when Q equals C."""
        layer = self._sem_layer(layer)
        _, probes = self._probes(queries)
        return _semantics.search_scores(probes, self._null(), self._theta_unit(layer), theta_normalized=True)

    def search(self, query: Any, layer: str | None = None, k: int = 10) -> pd.DataFrame:
        """Components that best match ``query`` (DESIGN eq. 4), over one layer or all layers.

        query: text (str; averaged over prompt templates), a list of texts, an image tensor
        ``[3, H, W]`` / ``[n, 3, H, W]`` in [0, 1] (each image one query) or probe embeddings
        ``[Q, d]``. Returns a DataFrame ``query, rank, layer, component, score, label`` with the
        k best components per query (over all searched layers), rank 0 = best; ``label`` as in
        the module docstring.
        """
        k = _check_positive_int("k", k)
        layers = self._sem_layers(layer)
        names, probes = self._probes(query)
        null = self._null()
        vals, comps, lays = [], [], []
        for li, l in enumerate(layers):
            sc = _semantics.search_scores(probes, null, self._theta_unit(l), theta_normalized=True)
            v, i = _semantics.top_hits(sc, k)
            vals.append(v)
            comps.append(i)
            lays.append(torch.full_like(i, li))
        v, i, L = torch.cat(vals, 1), torch.cat(comps, 1), torch.cat(lays, 1)  # [Q, sum k_l]
        order = torch.argsort(v, dim=1, descending=True, stable=True)[:, :k]
        v, i, L = v.gather(1, order), i.gather(1, order), L.gather(1, order)
        Q, kk = v.shape
        layer_names = np.array(layers, dtype=object)[L.reshape(-1).numpy()]
        comp = i.reshape(-1).numpy()
        labels = []
        label_cache = {l: self._current_labels(l) for l in layers}
        for l, c in zip(layer_names, comp):
            lab = label_cache[l]
            labels.append(None if lab is None else lab[int(c)])
        return pd.DataFrame({
            "query": np.repeat(np.array(names, dtype=object), kk),
            "rank": np.tile(np.arange(kk), Q),
            "layer": layer_names,
            "component": comp.astype(np.int64),
            "score": v.reshape(-1).numpy().astype(float),
            "label": pd.Series(labels, dtype=object),
        })

    # ------------------------------------------------------------------ measures (eq. 8)
    def _measures_tensors(self, layer: str, seed: int = 0) -> dict[str, torch.Tensor]:
        layer = self._sem_layer(layer)
        key, fp = f"semantics/measures/{layer}", self._sem_fp("measures", layer, seed)
        got = self.store.load(key, fp)
        if got is not None:
            return got
        V = self.example_embeddings(layer)  # [C, m, d]
        theta = self.embeddings(layer)
        maxsim, nearest = _measures.max_similarity(theta)
        out = {
            "clarity": _measures.clarity(V),
            "polysemanticity": _measures.polysemanticity(V, seed=seed),
            "max_similarity": maxsim,
            "nearest": nearest,
        }
        self.store.save(key, out, fp, meta={"layer": layer, "seed": seed})
        return out

    def clarity(self, layer: str) -> torch.Tensor:
        """Clarity per component ``[C]`` (paper eq. 7, closed form; mean pairwise cosine of the
        concept examples, in [-1/(m-1), 1]; NaN with < 2 examples)."""
        return self._measures_tensors(layer)["clarity"].clone()

    def polysemanticity(self, layer: str) -> torch.Tensor:
        """Polysemanticity per component ``[C]`` (paper eq. 10, h = 2 clusters by a seeded batched
        2-means): ``1 - cos`` of the two cluster means, in [0, 2]; rank components with it (even
        a monosemantic component scores > 0 because 2-means always splits)."""
        return self._measures_tensors(layer)["polysemanticity"].clone()

    def redundancy(self, layer: str) -> float:
        """Redundancy of a layer (paper eq. 9): mean over components of the max cosine to
        another component of the layer, in [-1, 1]."""
        t = self._measures_tensors(layer)
        if t["max_similarity"].numel() < 2:
            raise ValueError(f"redundancy needs at least 2 components; layer {layer!r} has "
                             f"{t['max_similarity'].numel()}")
        return float(t["max_similarity"].mean())

    def similarity(self, layer_a: str, layer_b: str | None = None) -> torch.Tensor:
        """Cosine similarity matrix of the semantic embeddings ``[C_a, C_b]`` (``layer_b=None``:
        the layer with itself). Refuses matrices above 2**30 entries (use ``measures`` for
        nearest neighbours of big layers)."""
        a = self._theta_unit(self._sem_layer(layer_a))
        b = a if layer_b is None else self._theta_unit(self._sem_layer(layer_b))
        if a.shape[0] * b.shape[0] > _MAX_SIMILARITY_ELEMENTS:
            raise ValueError(
                f"a {a.shape[0]} x {b.shape[0]} similarity matrix is too big to return; use "
                "lens.measures(layer) (nearest component and max similarity, chunked) instead"
            )
        return a @ b.T

    def measures(self, layer: str) -> pd.DataFrame:
        """Per-component measures of ``layer``: ``layer, component, clarity, polysemanticity,
        max_similarity, nearest, label`` (max_similarity = cosine to the most similar other
        component, whose mean over the layer is the redundancy, eq. 9)."""
        layer = self._sem_layer(layer)
        t = self._measures_tensors(layer)
        C = t["clarity"].shape[0]
        labels = self._current_labels(layer)
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
        """Per-layer summary: ``layer, n_components, clarity, polysemanticity, redundancy``
        (clarity and polysemanticity are NaN-aware means over components)."""
        rows = []
        for l in self._sem_layers(layers):
            t = self._measures_tensors(l)
            ms = t["max_similarity"]
            rows.append(dict(layer=l, n_components=int(ms.numel()),
                             clarity=float(np.nanmean(t["clarity"].numpy())),
                             polysemanticity=float(np.nanmean(t["polysemanticity"].numpy())),
                             redundancy=float(ms.mean()) if ms.numel() > 1 else float("nan")))
        return pd.DataFrame(rows, columns=["layer", "n_components", "clarity", "polysemanticity", "redundancy"])

    # ------------------------------------------------------------------ relevance (eq. 3)
    def _samples_of(self, target: int, over: str, max_samples: int) -> torch.Tensor:
        src = self.sample_labels if over == "label" else self.sample_predictions
        if src is None:
            other = "prediction" if over == "label" else "label"
            raise ValueError(f"the dataset has no per-sample {over}s; use over={other!r}")
        idx = torch.nonzero(src == target).reshape(-1)
        if idx.numel() == 0:
            raise ValueError(f"no sample has {over} {target}: nothing to explain (try over="
                             f"{'prediction' if over == 'label' else 'label'!r})")
        return idx[:max_samples]

    def _crp_layers(self) -> list[str]:
        return [l for l in self.layers if "@" not in l and "[" not in l]

    def _relevance_raw(self, target: int, layer: str, over: str, max_samples: int) -> dict[str, torch.Tensor]:
        """Raw per-sample CRP relevance of ``layer`` for ``target``: ``{"samples": [n], "R": [n, C]}``.
        Computed for every CRP-capable layer of the lens in the same pass, cached in the store."""
        def key(l):
            return f"semantics/relevance/{l}/{over}/{target}"

        def fp(l):
            return self._sem_fp("relevance", l, target, over, max_samples)

        got = self.store.load(key(layer), fp(layer))
        if got is not None:
            return got
        samples = self._samples_of(target, over, max_samples)
        layers = self._crp_layers()
        R = _relevance.component_relevance(
            self.model, lambda pos: self.model_inputs(samples[pos]),
            torch.full((samples.numel(),), target, dtype=torch.int64), layers, self.composite,
            batch_size=self._batch_size(), device=self.device, progress=self._progress(),
        )
        for l in layers:
            self.store.save(key(l), {"samples": samples, "R": R[l]}, fp(l),
                            meta={"layer": l, "target": target, "over": over})
        return {"samples": samples, "R": R[layer]}

    def relevance(
        self,
        target: Any,
        layer: str,
        *,
        over: str | None = None,
        max_samples: int = 256,
        normalize: str = "abs",
        per_sample: bool = False,
    ) -> pd.DataFrame:
        """CRP relevance of every component of ``layer`` for class ``target`` (DESIGN eq. 3).

        Samples: those whose ``over`` (dataset "label" or model "prediction"; default None: labels
        when the dataset has them, else predictions) equals ``target``, the first
        ``max_samples`` by dataset index. Relevance starts at the target logit and is
        propagated with ``lens.composite`` (EpsilonPlusFlat + canonizers; without LRP rules:
        activation x gradient). ``normalize="abs"`` (default) divides each sample's vector by
        its summed absolute relevance (shares in [-1, 1], every sample weighs the same);
        ``"none"`` keeps raw LRP values (their sum is the relevance entering the layer).

        Returns ``layer, component, relevance`` (mean over the samples, one row per component)
        or, with ``per_sample=True``, ``sample, layer, component, relevance`` (n x C rows).
        """
        layer = self._crp_layer(layer)
        target = self._target(target)
        over = _check_over(over, self)
        max_samples = _check_positive_int("max_samples", max_samples)
        _relevance._check_normalize(normalize)
        got = self._relevance_raw(target, layer, over, max_samples)
        R = got["R"]
        if normalize == "abs":
            R = R / R.abs().sum(1, keepdim=True).clamp_min(1e-12)
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

    def class_relevance(
        self, layer: str, *, over: str | None = None, max_per_class: int = 32, normalize: str = "abs"
    ) -> torch.Tensor:
        """Mean relevance of every component for every class ``[K, C]`` (DESIGN eq. 3 aggregated
        per class): each sample explained for its own class (``over``: label or prediction), at
        most ``max_per_class`` samples per class, all classes in one batched pass over the data
        (all CRP-capable layers at once); cached in the store, and resumable: the pass saves
        chunks of ``chunk_size * m`` samples, so an interrupted call continues where it stopped.
        Rows of classes without samples are 0."""
        layer = self._crp_layer(layer)
        over = _check_over(over, self)
        max_per_class = _check_positive_int("max_per_class", max_per_class)
        _relevance._check_normalize(normalize)
        K = self.num_classes
        if K is None:
            raise ValueError("this model has no class outputs ([B, K] logits): no class relevance")

        def key(l):
            return f"semantics/class_relevance/{l}/{over}"

        def fp(l):
            return self._sem_fp("class_relevance", l, over, max_per_class)

        got = self.store.load(key(layer), fp(layer))
        if got is None:
            src = self.sample_labels if over == "label" else self.sample_predictions
            if src is None:
                raise ValueError(f"the dataset has no per-sample {over}s; use over="
                                 f"{'prediction' if over == 'label' else 'label'!r}")
            src = src.long()
            order = torch.argsort(src, stable=True)  # samples grouped by class, by index within
            cls = src[order]
            first = torch.searchsorted(cls, cls, side="left")
            rank = torch.arange(cls.numel()) - first  # position within its class
            keep = order[rank < max_per_class]
            classes = src[keep]
            layers = self._crp_layers()
            R = self._sample_relevance_chunked(keep, classes, layers, over, max_per_class)
            for l in layers:
                raw = R[l]
                absn = raw / raw.abs().sum(1, keepdim=True).clamp_min(1e-12)
                mean_raw, counts = _relevance.class_mean_relevance(raw, classes, K)
                mean_abs, _ = _relevance.class_mean_relevance(absn, classes, K)
                t = {"mean_raw": mean_raw, "mean_abs": mean_abs, "counts": counts}
                self.store.save(key(l), t, fp(l), meta={"layer": l, "over": over})
                if l == layer:
                    got = t
            self.store.drop_chunks(self._class_relevance_prefix(over))
        return (got["mean_abs"] if normalize == "abs" else got["mean_raw"]).clone()

    @staticmethod
    def _class_relevance_prefix(over: str) -> str:
        return f"semantics/class_relevance_run/{over}"

    def _sample_relevance_chunked(self, keep: torch.Tensor, classes: torch.Tensor, layers: list[str],
                                  over: str, max_per_class: int) -> dict[str, torch.Tensor]:
        """Per-sample CRP relevance ``{layer: [n, C]}`` of samples ``keep`` for ``classes``, in
        resumable chunks (``chunk_size * m`` samples, like the crop step): an interrupted pass
        keeps its finished chunks in the store and the next call computes only the rest."""
        size = getattr(self, "chunk_size", 64) * max(int(getattr(self, "m", 1)), 1)
        fp = self._sem_fp("class_relevance_run", tuple(layers), over, max_per_class)

        def compute(a: int, b: int) -> dict[str, torch.Tensor]:
            part = keep[a:b]
            return _relevance.component_relevance(
                self.model, lambda pos: self.model_inputs(part[pos]), classes[a:b], layers, self.composite,
                batch_size=self._batch_size(), device=self.device, progress=self._progress(),
            )

        parts = self.store.chunked(self._class_relevance_prefix(over), fp, int(keep.numel()), size, compute,
                                   desc="class relevance", progress=self._progress()) or [compute(0, 0)]
        return {l: torch.cat([p[l] for p in parts]) for l in layers}

    def top_classes(self, layer: str, k: int = 3, *, over: str | None = None, max_per_class: int = 32) -> pd.DataFrame:
        """For every component the k output classes it is most relevant for (the paper's
        "Indian person" neuron that matters for "butcher shop", "scale", "rickshaw").

        Returns ``layer, component, rank, class, name, relevance`` (C x k rows; relevance is the
        mean abs-normalised CRP relevance over the class's samples, see :meth:`class_relevance`).
        """
        k = _check_positive_int("k", k)
        rel = self.class_relevance(layer, over=over, max_per_class=max_per_class)  # [K, C]
        K, C = rel.shape
        kk = min(k, K)
        v, cls = torch.topk(rel.T, kk, dim=1)  # [C, kk]
        names = self.class_names
        cls_np = cls.reshape(-1).numpy()
        return pd.DataFrame({
            "layer": layer,
            "component": np.repeat(np.arange(C), kk),
            "rank": np.tile(np.arange(kk), C),
            "class": cls_np.astype(np.int64),
            "name": [names[c] for c in cls_np] if names else [f"class {c}" for c in cls_np],
            "relevance": v.reshape(-1).numpy().astype(float),
        })

    def component_info(self, layer: str, component: int, k: int = 5) -> ComponentInfo:
        """Concept examples, label, measures and top-k relevant classes of one component."""
        layer = self._sem_layer(layer)
        ex = self.examples(layer, component)
        comp = int(ex.component)
        t = self._measures_tensors(layer)
        meas = {n: float(t[n][comp]) for n in ("clarity", "polysemanticity", "max_similarity")}
        meas["nearest"] = int(t["nearest"][comp])
        labels = self._current_labels(layer)
        top = pd.DataFrame(columns=["rank", "class", "name", "relevance"])
        if self.num_classes is not None and "@" not in layer and "[" not in layer:
            if self.sample_labels is not None or self.sample_predictions is not None:
                tc = self.top_classes(layer, k)
                top = tc[tc.component == comp].drop(columns=["layer", "component"]).reset_index(drop=True)
        return ComponentInfo(layer=layer, component=comp, label=None if labels is None else labels[comp],
                             examples=ex, measures=meas, top_classes=top)

    # ------------------------------------------------------------------ audit (eq. 7)
    def audit(
        self,
        valid: Sequence[str],
        spurious: Sequence[str],
        layer: str,
        target: Any,
        *,
        tau: float = 0.0,
        over: str | None = None,
        max_samples: int = 256,
    ) -> AuditResult:
        """Audit the components of ``layer`` for class ``target`` (DESIGN eq. 7, paper 3.4).

        ``a_valid_k = max_{v in valid} s(v, theta_k) - s(null, theta_k)``, ``a_spur_k`` alike.
        Category (threshold ``tau``): ``valid`` if only a_valid > tau, ``spurious`` if only
        a_spur > tau, ``both`` if both, ``unexpected`` if neither. ``relevance`` is the mean
        abs-normalised CRP relevance for the target (:meth:`relevance`); ``label`` the best of
        valid + spurious concepts when above tau. ``summary``: per category the number of
        components, the summed positive relevance and its share of the total positive relevance.
        ``spurious_samples``: for every ``spurious`` or ``both`` component its concept examples
        (dataset indices): the data to inspect or clean.
        """
        valid = _concept_list(valid, "valid")
        spurious = _concept_list(spurious, "spurious")
        layer = self._crp_layer(layer)
        target = self._target(target)
        if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
            raise ValueError(f"tau must be a number, got {tau!r}")
        theta, null = self._theta_unit(layer), self._null()
        a_v, b_v = _semantics.alignment_scores(theta, self._encode(valid), null)
        a_s, b_s = _semantics.alignment_scores(theta, self._encode(spurious), null)
        cats = _semantics.audit_categories(a_v, a_s, float(tau))
        rel = self.relevance(target, layer, over=over, max_samples=max_samples)["relevance"].to_numpy()
        both_names = np.array(valid + spurious, dtype=object)
        use_spur = (a_s > a_v).numpy()
        best_any = np.where(use_spur, both_names[len(valid) + b_s.numpy()], both_names[b_v.numpy()])
        above = (torch.maximum(a_v, a_s) > tau).numpy()
        C = theta.shape[0]
        table = pd.DataFrame({
            "layer": layer,
            "component": np.arange(C),
            "a_valid": a_v.numpy().astype(float),
            "a_spur": a_s.numpy().astype(float),
            "best_valid": pd.Series(np.array(valid, dtype=object)[b_v.numpy()], dtype=object),
            "best_spur": pd.Series(np.array(spurious, dtype=object)[b_s.numpy()], dtype=object),
            "relevance": rel.astype(float),
            "category": cats,
            "label": pd.Series(np.where(above, best_any, None), dtype=object),
        })
        pos = np.clip(rel, 0, None)
        cat_arr = np.array(cats, dtype=object)
        summary = pd.DataFrame({
            "category": list(AUDIT_CATEGORIES),
            "n_components": [int((cat_arr == c).sum()) for c in AUDIT_CATEGORIES],
            "relevance": [float(pos[cat_arr == c].sum()) for c in AUDIT_CATEGORIES],
        })
        total = summary["relevance"].sum()
        summary["share"] = summary["relevance"] / total if total > 0 else 0.0
        flagged = np.nonzero(np.isin(cat_arr, ["spurious", "both"]))[0]
        topm = getattr(self, "topm", None)
        if topm is not None:
            idx = topm(layer).indices
            samples = {int(c): idx[int(c)].clone() for c in flagged}
        else:
            samples = {int(c): self.examples(layer, int(c)).indices for c in flagged}
        return AuditResult(layer=layer, target=target, valid=valid, spurious=spurious, table=table,
                           summary=summary, spurious_samples=samples)

    # ------------------------------------------------------------------ attribution graph (eq. 9)
    def attribution_graph(
        self,
        target: Any,
        layers: Any = None,
        concepts: Sequence[str] | None = None,
        *,
        top_k: int = 5,
        threshold: float = 0.0,
        over: str | None = None,
        max_samples: int = 32,
    ) -> AttributionGraph:
        """Attribution graph of class ``target`` through ``layers`` (DESIGN eq. 9), a Sankey.

        Components are grouped per layer by their label for ``concepts`` (default: the
        vocabulary; none: no concept nodes); the ``top_k`` most relevant unlabelled components
        of each layer are nodes of their own and the remaining ones one ``other`` node, so no
        relevance is hidden. Edges carry the conditional CRP relevance flowing from a lower-layer
        group into an upper-layer group (the last layer flows into the class node), averaged
        over up to ``max_samples`` samples of the class (each scaled to unit absolute relevance
        at the last layer). See :func:`semlens_widgets.kernels.relevance.build_attribution_graph`.
        """
        target = self._target(target)
        layers = [self._crp_layer(l) for l in self._sem_layers(layers)]
        over = _check_over(over, self)
        max_samples = _check_positive_int("max_samples", max_samples)
        if not _is_int(top_k) or top_k < 0:
            raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
        concepts = self.vocabulary if concepts is None else _concept_list(concepts)
        ckey = (target, tuple(layers), tuple(concepts or ()), top_k, float(threshold), over, max_samples)
        graphs = self._sem_state()["graphs"]
        if ckey in graphs:
            return graphs[ckey]
        fp = self._sem_fp("attribution_graph", *ckey)
        key = f"semantics/attribution_graph/{fp[:24]}"
        got = self.store.load(key, fp)
        if got is not None:
            graphs[ckey] = g = _graph_from_store(got, self.store.meta(key)["meta"])
            return g
        labels = None
        if concepts:
            labels = {l: self._label_result(concepts, l, float(threshold)).table["label"].tolist() for l in layers}
        samples = self._samples_of(target, over, max_samples)
        names = self.class_names
        g = _relevance.build_attribution_graph(
            self.model, self.model_inputs(samples), target, layers, self.composite, labels=labels,
            top_k=top_k, target_name=names[target] if names else None,
            batch_size=self._batch_size(), device=self.device, progress=self._progress(),
        )
        tensors, meta = _graph_to_store(g)
        self.store.save(key, tensors, fp, meta=meta)
        graphs[ckey] = g
        return g

    # ------------------------------------------------------------------ map
    def map(self, layer: Any, *, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> pd.DataFrame:
        """2-D UMAP coordinates (cosine metric, seeded) of the semantic embeddings:
        ``layer, component, x, y``. A list of layers gives one joint map of all their components
        (comparable positions). Cached in the store."""
        from semlens_widgets.kernels.projection import umap_2d

        layers = self._sem_layers(layer)
        key = "semantics/map/" + "+".join(layers)
        fp = self._sem_fp("map", layers, seed, n_neighbors, min_dist)
        got = self.store.load(key, fp)
        sizes = [self.num_components(l) for l in layers]
        if got is None:
            theta = torch.cat([self.embeddings(l) for l in layers])
            got = {"xy": umap_2d(theta, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)}
            self.store.save(key, got, fp, meta={"layers": layers})
        xy = got["xy"].numpy()
        return pd.DataFrame({
            "layer": np.repeat(np.array(layers, dtype=object), sizes),
            "component": np.concatenate([np.arange(s) for s in sizes]),
            "x": xy[:, 0].astype(float),
            "y": xy[:, 1].astype(float),
        })


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


# ---------------------------------------------------------------------------- compare (eq. 6)


def compare(lens_a, lens_b, layer_a: str, layer_b: str, concepts: Sequence[str] | None = None,
            *, threshold: float = 0.0) -> Comparison:
    """Compare the knowledge of two lenses' layers (DESIGN eq. 6, paper eqs. 5/6).

    ``s_ab = S(A -> B) = mean_{theta in A} max_{theta' in B} cos(theta, theta')`` and ``s_ba``;
    works across layers and architectures (C_a != C_b). Both lenses must share one foundation
    model (``fm.identity``), otherwise their embedding spaces are unrelated and this refuses.

    With ``concepts`` (default: lens_a's vocabulary, else lens_b's) both layers are labelled
    (eq. 5, ``threshold``): ``shared`` / ``unique_a`` / ``unique_b`` are the concepts carried
    by both / only A / only B, ``counts`` the label counts side by side. ``matches`` is the
    nearest B component of every A component (``component_a, component_b, cosine, label_a,
    label_b``). Without concepts the concept lists are empty.
    """
    ia, ib = lens_a.fm.identity, lens_b.fm.identity
    if ia != ib:
        raise ValueError(
            "cannot compare lenses built with different foundation models: their embedding spaces "
            f"differ (A: {ia}, B: {ib}); build both lenses with the same fm"
        )
    layer_a, layer_b = lens_a._sem_layer(layer_a), lens_b._sem_layer(layer_b)
    ta, tb = lens_a._theta_unit(layer_a), lens_b._theta_unit(layer_b)
    s_ab = _semantics.set_similarity(ta, tb)
    s_ba = _semantics.set_similarity(tb, ta)
    cos, nn_idx = _semantics.nearest_neighbours(ta, tb)
    if concepts is None:
        concepts = lens_a.vocabulary or lens_b.vocabulary
    else:
        concepts = _concept_list(concepts)
    la = lb = None
    shared: list[str] = []
    unique_a: list[str] = []
    unique_b: list[str] = []
    counts = pd.DataFrame(columns=["concept", "count_a", "count_b"])
    if concepts:
        ra = lens_a._label_result(list(concepts), layer_a, float(threshold))
        rb = lens_b._label_result(list(concepts), layer_b, float(threshold))
        la, lb = ra.table["label"].tolist(), rb.table["label"].tolist()
        ga, gb = set(ra.groups), set(rb.groups)
        shared = [c for c in concepts if c in ga and c in gb]
        unique_a = [c for c in concepts if c in ga and c not in gb]
        unique_b = [c for c in concepts if c in gb and c not in ga]
        counts = pd.DataFrame({"concept": list(concepts),
                               "count_a": [len(ra.groups.get(c, [])) for c in concepts],
                               "count_b": [len(rb.groups.get(c, [])) for c in concepts]})
    else:
        la, lb = lens_a._current_labels(layer_a), lens_b._current_labels(layer_b)
    nn_np = nn_idx.numpy()
    matches = pd.DataFrame({
        "component_a": np.arange(ta.shape[0]),
        "component_b": nn_np.astype(np.int64),
        "cosine": cos.numpy().astype(float),
        "label_a": pd.Series(la if la is not None else [None] * ta.shape[0], dtype=object),
        "label_b": pd.Series([lb[j] for j in nn_np] if lb is not None else [None] * ta.shape[0],
                             dtype=object),
    })
    return Comparison(layer_a=layer_a, layer_b=layer_b, s_ab=s_ab, s_ba=s_ba, shared=shared,
                      unique_a=unique_a, unique_b=unique_b, counts=counts, matches=matches)
