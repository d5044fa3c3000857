"""``slw.demo.evaluate(lens)``: how well labels, search and audits recover the demo world's
ground truth.

Over the components with a clear ground-truth concept (AUC >= 0.9, see
:mod:`~semlens_widgets.demo.groundtruth`), per analysed layer:

- **label accuracy**: share of those components whose ``lens.label(vocabulary, layer)`` label
  equals their ground-truth concept (``label_accuracy``); ``label_accuracy_lenient`` also
  accepts any concept the component carries with AUC >= 0.9 (a red-star detector labelled
  "red" instead of "star").
- **search precision@5**: for every concept that is the clear ground truth of some component,
  ``lens.search(concept, layer, k)`` with ``k = min(5, number of such components)``; precision
  is the share of the hits whose ground-truth (best-AUC) concept is the query; averaged over
  the queried concepts.
- **shortcut found**: ``lens.audit(valid=[shortcut class], spurious=[artefacts + backgrounds],
  layer, target=shortcut class)``; found when some component whose ground truth is the
  shortcut artefact (watermark, AUC >= 0.9) is categorised ``spurious`` and is relevant:
  positive mean relevance for the class, ranked in the top 20% of the layer. ``both`` does
  not count: when the foundation model scores every concept above the empty prompt, every
  component is ``both`` and the audit has separated nothing.

Targets of the demo world: label accuracy >= 0.85, precision@5 >= 0.8, shortcut found.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data import CLASS_NAMES, SHORTCUT_ARTEFACT, SHORTCUT_CLASS
from .groundtruth import CLEAR_AUC, GroundTruth
from .world import ARTEFACTS, BACKGROUNDS, VOCABULARY

__all__ = ["Evaluation", "evaluate", "TARGETS"]

#: the quality targets of the demo world.
TARGETS = {"label_accuracy": 0.85, "search_precision_at_5": 0.8, "shortcut_found": True}
#: an audited component counts as relevant when its relevance ranks in this top share.
RELEVANT_TOP_SHARE = 0.2


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    label_accuracy, label_accuracy_lenient, search_precision_at_5: pooled over the layers
        (weighted by the number of clear components / queries); NaN when no layer has any.
    shortcut_found: whether any layer's audit flags a watermark component as spurious + relevant.
    n_clear: clear components over all layers.
    per_layer: DataFrame ``layer, n_components, n_clear, label_accuracy,
        label_accuracy_lenient, n_queries, search_precision_at_5, shortcut_found,
        n_watermark_components, n_watermark_flagged``.
    components: DataFrame per component: ground truth (``concept, category, auc, clear``),
        ``label`` and ``label_correct``, plus audit columns ``category_audit, relevance,
        relevance_rank``.
    queries: DataFrame ``layer, concept, k, precision, hits`` (hits = component ids).
    """

    label_accuracy: float
    label_accuracy_lenient: float
    search_precision_at_5: float
    shortcut_found: bool
    n_clear: int
    per_layer: pd.DataFrame
    components: pd.DataFrame
    queries: pd.DataFrame
    targets: dict = field(default_factory=lambda: dict(TARGETS))

    @property
    def meets_targets(self) -> bool:
        """All three targets of the demo world reached."""
        return bool(
            self.label_accuracy >= self.targets["label_accuracy"]
            and self.search_precision_at_5 >= self.targets["search_precision_at_5"]
            and self.shortcut_found
        )

    def summary(self) -> str:
        """A few readable lines (what ``semlens demo`` prints)."""
        t = self.targets
        lines = [
            f"components with a clear ground-truth concept (AUC >= {CLEAR_AUC}): {self.n_clear}",
            f"label accuracy      {self.label_accuracy:.3f}  (lenient {self.label_accuracy_lenient:.3f}; target >= {t['label_accuracy']})",
            f"search precision@5  {self.search_precision_at_5:.3f}  (target >= {t['search_precision_at_5']})",
            f"shortcut found      {'yes' if self.shortcut_found else 'no'}  "
            f"(audit of {SHORTCUT_CLASS!r} flags {SHORTCUT_ARTEFACT} components as spurious and relevant)",
        ]
        for r in self.per_layer.itertuples():
            lines.append(
                f"  {r.layer}: {r.n_clear}/{r.n_components} clear, label acc {r.label_accuracy:.3f}, "
                f"P@5 {r.search_precision_at_5:.3f} over {r.n_queries} concepts, "
                f"{r.n_watermark_flagged}/{r.n_watermark_components} watermark components flagged"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _weighted(values: pd.Series, weights: pd.Series) -> float:
    w = weights.to_numpy(dtype=float)
    v = values.to_numpy(dtype=float)
    ok = w > 0
    if not ok.any():
        return float("nan")
    return float(np.average(v[ok], weights=w[ok]))


def _activations(lens, gt: GroundTruth, layer: str):
    """Pooled activations [N, C] of ``layer`` (the lens's model and pooling), cached in the
    lens's store (``demo/groundtruth/<layer>``) so a second evaluation skips the forward pass."""
    entry = lens.semantics.keys.demo_groundtruth(layer, lens.pooling)
    return lens.store.cached(
        entry.key, entry.fingerprint,
        lambda: {"activations": gt._resolve(layer, lens).float().contiguous()},
        meta={"layer": layer},
    )["activations"]


def evaluate(lens, world=None, layers=None, *, audit_max_samples: int = 64) -> Evaluation:
    """Evaluate ``lens`` (a run :class:`~semlens_widgets.Lens` over a demo dataset) against the
    world's ground truth. See the module docstring for the definitions.

    world:  the :class:`~semlens_widgets.demo.DemoWorld` (only its ground truth is reused when
            it covers ``lens.dataset``); None builds the ground truth from the lens.
    layers: the layers to evaluate (default all of ``lens.layers``).
    audit_max_samples: samples of the shortcut class used for the audit's relevance.
    """
    dataset = lens.dataset
    if not hasattr(dataset, "concept_matrix"):
        raise TypeError(
            "evaluate needs a Lens over a demo dataset (slw.demo.load().dataset or another "
            f"DemoDataset); this lens's dataset is {type(dataset).__name__}"
        )
    if world is not None and world.ground_truth.dataset is dataset and world.ground_truth.model is lens.model:
        gt = world.ground_truth
    else:
        gt = GroundTruth(lens.model, dataset, pooling=lens.pooling)
    layers = list(lens.layers) if layers is None else list(layers)
    unknown = [l for l in layers if l not in lens.layers]
    if unknown:
        raise ValueError(f"layers {unknown} are not analysed by this lens; it has {list(lens.layers)}")
    vocab = list(VOCABULARY)
    target = CLASS_NAMES.index(SHORTCUT_CLASS)
    spurious = list(ARTEFACTS) + list(BACKGROUNDS)
    layer_rows, comp_frames, query_rows = [], [], []
    for layer in layers:
        acts = _activations(lens, gt, layer)
        truth = gt.table(layer, activations=acts)
        aucs = gt.aucs(layer, activations=acts)
        labels = lens.label(vocab, layer).table
        comp = truth.copy()
        comp["label"] = labels["label"].to_numpy()
        comp["label_correct"] = comp["label"].to_numpy() == comp["concept"].to_numpy()
        carried = aucs.to_numpy() >= CLEAR_AUC  # [C, K]
        col = {c: j for j, c in enumerate(aucs.columns)}
        comp["label_carried"] = [
            lab is not None and lab in col and bool(carried[k, col[lab]]) for k, lab in enumerate(comp["label"])
        ]
        clear = comp[comp["clear"]]
        # search precision: one query per clear ground-truth concept of this layer
        n_q, precs = 0, []
        for concept, n_c in clear["concept"].value_counts().items():
            k = int(min(5, n_c))
            hits = lens.search(concept, layer=layer, k=k)["component"].to_numpy()
            prec = float((comp["concept"].to_numpy()[hits] == concept).mean())
            query_rows.append({"layer": layer, "concept": concept, "k": k, "precision": prec, "hits": hits.tolist()})
            precs.append(prec)
            n_q += 1
        # audit of the shortcut class
        audit = lens.audit(valid=[SHORTCUT_CLASS], spurious=spurious, layer=layer, target=target,
                           max_samples=audit_max_samples).table
        rel = audit["relevance"].to_numpy()
        rank = pd.Series(-rel).rank(method="min").to_numpy().astype(int)  # 1 = most relevant
        comp["category_audit"] = audit["category"].to_numpy()
        comp["relevance"] = rel
        comp["relevance_rank"] = rank
        wm = comp[(comp["concept"] == SHORTCUT_ARTEFACT) & comp["clear"]]
        relevant = (wm["relevance"] > 0) & (wm["relevance_rank"] <= max(1, int(np.ceil(RELEVANT_TOP_SHARE * len(comp)))))
        flagged = (wm["category_audit"] == "spurious") & relevant
        layer_rows.append({
            "layer": layer,
            "n_components": len(comp),
            "n_clear": len(clear),
            "label_accuracy": float(clear["label_correct"].mean()) if len(clear) else float("nan"),
            "label_accuracy_lenient": float(comp.loc[comp["clear"], "label_carried"].mean()) if len(clear) else float("nan"),
            "n_queries": n_q,
            "search_precision_at_5": float(np.mean(precs)) if precs else float("nan"),
            "shortcut_found": bool(flagged.any()),
            "n_watermark_components": int(len(wm)),
            "n_watermark_flagged": int(flagged.sum()),
        })
        comp_frames.append(comp)
    per_layer = pd.DataFrame(layer_rows)
    return Evaluation(
        label_accuracy=_weighted(per_layer["label_accuracy"], per_layer["n_clear"]),
        label_accuracy_lenient=_weighted(per_layer["label_accuracy_lenient"], per_layer["n_clear"]),
        search_precision_at_5=_weighted(per_layer["search_precision_at_5"], per_layer["n_queries"]),
        shortcut_found=bool(per_layer["shortcut_found"].any()),
        n_clear=int(per_layer["n_clear"].sum()),
        per_layer=per_layer,
        components=pd.concat(comp_frames, ignore_index=True),
        queries=pd.DataFrame(query_rows, columns=["layer", "concept", "k", "precision", "hits"]),
    )
