"""Every store key and fingerprint of a Lens, built in one place.

A stored entry is valid only for the inputs that made it: each key below comes with the
fingerprint (sha256 of JSON-able parts, :func:`~semlens_widgets.store.fingerprint`) of those
inputs, and a stale fingerprint means "not there". ``<layer>`` is the layer name as given.

Pipeline (:class:`PipelineKeys`)::

    samples                     labels [N], predictions [N] (when known); meta: n_samples, num_classes
    collect/<layer>             indices [C, m_eff] int64, values [C, m_eff] float32; meta: m, n_seen
    collect_checkpoint          the running top-m of a collection pass in progress
                                (kernels.collect.RunningTopM.state_dict; deleted once collected)
    boxes/<layer>               boxes [C, m_eff, 4] int64 (x0, y0, x1, y1; x1/y1 exclusive);
                                crop="crp": ratio [C, m_eff] float32 (input heatmap sum / start
                                relevance, NaN where the start is not positive); meta: crop_mode, crop_rule
    conservation/<layer>        ratio_quantiles [11] float64; meta: layer, median, q10, q90, min, n
                                (crop="crp": what lens.conservation and `semlens info` show)
    embed/<layer>               V [C, m_eff, d] float16, theta [C, d] float32
    boxes/<layer>/chunk<a>-<b>, embed/<layer>/chunk<a>-<b>, fullemb/chunk<a>-<b>
                                partial results of a run in progress (deleted once assembled)

Analysis (:class:`AnalysisKeys`, fingerprints include the Lens fingerprint)::

    semantics/measures/<layer>                  clarity, polysemanticity, max_similarity, nearest [C]
    semantics/map/<layer>[+<layer>...]          xy [C, 2]
    semantics/search_index/<layer>              centroids [L, d], order [C], offsets [L+1], params [3]
                                                (layers of >= 32768 components; kernels.semantics)
    semantics/relevance/<layer>/<over>/<target> samples [n], R [n, C] (raw CRP relevance)
    semantics/class_relevance/<layer>/<over>    mean_raw, mean_abs [K, C], counts [K]
    semantics/class_relevance_run/<over>/chunk<a>-<b>   the resumable pass behind them
    semantics/attribution_graph/<fp[:24]>       node relevance, edge weights (+ JSON meta)
    demo/groundtruth/<layer>                    activations [N, C] (the demo's evaluation)
    describe/control/<layer>                    samples [n], activations [n, C]: the control
                                                images of describe / faithfulness
    describe/description/<layer>/<k>            round, score, auc [R] (+ JSON meta: concepts,
                                                notes, best, candidates, senses, settings)
    describe/faithfulness/<layer>               auc, mad [C] (+ JSON meta: labels, notes)
    describe/faithfulness/<layer>/chunk<a>-<b>  the resumable pass behind it (chunks of labels)

SAE layers (``"LAYER:sae"``): the Lens fingerprint includes every SAE's identity (weights
digest, activation, k), and ``collect/LAYER:sae`` (so its boxes and embeddings) its own SAE's;
a Lens without SAEs has the fingerprints it had before SAE layers existed.

Bump :data:`PIPELINE_VERSION` / :data:`ANALYSIS_VERSION` when an algorithm changes: every
stored result of that kind is then recomputed, never reused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from semlens_widgets.kernels.hooks import parse_layer
from semlens_widgets.store import fingerprint, tensor_digest

__all__ = ["Entry", "PipelineKeys", "AnalysisKeys", "PIPELINE_VERSION", "ANALYSIS_VERSION"]

PIPELINE_VERSION = 1
ANALYSIS_VERSION = 1


@dataclass(frozen=True)
class Entry:
    """One store entry: its key (or the prefix of its resumable chunks) and fingerprint."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class PipelineKeys:
    """Keys of the collect / crop / embed steps.

    model, dataset: fingerprints of the model's parameters and buffers and of the dataset;
    crop_setup: everything besides the crop mode that decides the boxes (relevance threshold,
    LRP set-up id, where CRP starts, the pooling of activation maps, the crop rule); fm: the foundation model's
    identity; display: the display transform's id; crop_side: the side crops are resized to;
    saes: ``{"LAYER": sae.identity}`` of the SAE layers (``LayerSet.sae_identities``).
    """

    model: str
    dataset: str
    layers: tuple[str, ...]
    m: int
    pooling: str
    crop_mode: str
    crop_setup: tuple
    fm: dict = field(hash=False)
    display: str
    crop_side: int
    saes: dict = field(default_factory=dict, hash=False)

    def _with_saes(self, *parts: Any) -> tuple:
        return (*parts, {"saes": self.saes}) if self.saes else parts

    @property
    def lens(self) -> str:
        """The fingerprint of the whole Lens (model, data, layers, settings, fm, display, SAEs)."""
        return fingerprint(*self._with_saes("lens", PIPELINE_VERSION, self.model, self.dataset, list(self.layers),
                                            self.m, self.pooling, self.crop_mode, self.fm, self.display))

    def samples(self) -> Entry:
        return Entry("samples", fingerprint("samples", PIPELINE_VERSION, self.model, self.dataset))

    def collect(self, layer: str) -> Entry:
        spec = parse_layer(layer)
        sae = ({"sae": self.saes[spec.base]},) if spec.sae else ()
        return Entry(f"collect/{layer}", fingerprint("collect", PIPELINE_VERSION, self.model, self.dataset,
                                                     layer, self.m, self.pooling, *sae))

    def collect_checkpoint(self, layers: Sequence[str], batch_size: int) -> Entry:
        """The running state of a collection pass over ``layers`` in progress (deleted once the
        ``collect/<layer>`` and ``samples`` entries are saved). The batch size is part of the
        fingerprint: a resumed pass reads the same batches, so its result is bit-identical."""
        return Entry("collect_checkpoint", fingerprint("collect-checkpoint", PIPELINE_VERSION, self.model,
                                                       self.dataset, list(layers), self.m, self.pooling,
                                                       batch_size))

    def boxes(self, layer: str) -> Entry:
        return Entry(f"boxes/{layer}", fingerprint("boxes", self.collect(layer).fingerprint, self.crop_mode,
                                                   *self.crop_setup))

    def conservation(self, layer: str) -> Entry:
        """The conservation summary of a CRP layer's crops (its numbers in the entry's meta, the
        quantiles of the ratios as a tensor), derived from the ``ratio`` of its boxes entry."""
        return Entry(f"conservation/{layer}", fingerprint("conservation", self.boxes(layer).fingerprint))

    def embed(self, layer: str) -> Entry:
        return Entry(f"embed/{layer}", fingerprint("embed", self.boxes(layer).fingerprint, self.fm, self.display,
                                                   self.crop_side))

    def sample_embeddings(self, samples: Any) -> Entry:
        """``crop="full"``: the embeddings of the distinct samples ``samples`` (LongTensor) of all
        layers, computed once (chunks only; gathered into each layer's ``embed`` entry)."""
        return Entry("fullemb", fingerprint("fullemb", PIPELINE_VERSION, self.dataset, self.fm, self.display,
                                            self.crop_side, tensor_digest(samples)))


@dataclass(frozen=True)
class AnalysisKeys:
    """Keys of the semantic index and the attribution part; ``lens`` is the Lens fingerprint
    (:attr:`PipelineKeys.lens`), so any change of model, data or foundation model recomputes;
    ``lrp`` names the LRP set-up (``LrpSetup.id``) that relevances and graphs depend on."""

    lens: str
    lrp: str | None = None

    def _fp(self, *parts: Any) -> str:
        return fingerprint("semantics", ANALYSIS_VERSION, self.lens, *parts)

    def _fp_lrp(self, *parts: Any) -> str:
        return self._fp(*parts, {"lrp": self.lrp})

    def measures(self, layer: str, seed: int) -> Entry:
        return Entry(f"semantics/measures/{layer}", self._fp("measures", layer, seed))

    def map(self, layers: Sequence[str], seed: int, n_neighbors: int, min_dist: float) -> Entry:
        layers = list(layers)
        return Entry("semantics/map/" + "+".join(layers), self._fp("map", layers, seed, n_neighbors, min_dist))

    def search_index(self, layer: str, settings: dict) -> Entry:
        """The inverted lists that search a big layer (``settings``: how they are built)."""
        return Entry(f"semantics/search_index/{layer}", self._fp("search_index", layer, settings))

    def relevance(self, layer: str, target: int, over: str, max_samples: int) -> Entry:
        return Entry(f"semantics/relevance/{layer}/{over}/{target}",
                     self._fp_lrp("relevance", layer, target, over, max_samples))

    def relevance_run(self, target: int, over: str, max_samples: int) -> Entry:
        """The step lock of the pass behind :meth:`relevance` (one pass saves every CRP layer)."""
        return Entry(f"semantics/relevance_run/{over}/{target}",
                     self._fp_lrp("relevance_run", target, over, max_samples))

    def class_relevance(self, layer: str, over: str, max_per_class: int) -> Entry:
        return Entry(f"semantics/class_relevance/{layer}/{over}",
                     self._fp_lrp("class_relevance", layer, over, max_per_class))

    def class_relevance_run(self, layers: Sequence[str], over: str, max_per_class: int) -> Entry:
        """The chunk prefix of the resumable per-sample pass behind :meth:`class_relevance`."""
        return Entry(f"semantics/class_relevance_run/{over}",
                     self._fp_lrp("class_relevance_run", tuple(layers), over, max_per_class))

    def attribution_graph(self, *params: Any) -> Entry:
        fp = self._fp_lrp("attribution_graph", *params)
        return Entry(f"semantics/attribution_graph/{fp[:24]}", fp)

    def describe_control(self, layer: str, *params: Any) -> Entry:
        """Activations of the control images (dataset samples) of describe / faithfulness."""
        return Entry(f"describe/control/{layer}", self._fp("describe_control", layer, *params))

    def description(self, layer: str, k: int) -> Entry:
        """The last description of component k (kept for the views; never reused as a result)."""
        return Entry(f"describe/description/{layer}/{int(k)}", self._fp("description", layer, int(k)))

    def faithfulness(self, layer: str, *params: Any) -> Entry:
        """Label faithfulness of ``layer`` (and the chunk prefix of its resumable pass)."""
        return Entry(f"describe/faithfulness/{layer}", self._fp("faithfulness", layer, *params))

    def demo_groundtruth(self, layer: str, pooling: str) -> Entry:
        """The demo world's pooled activations of ``layer`` (its evaluation)."""
        return Entry(f"demo/groundtruth/{layer}", fingerprint("demo-groundtruth", self.lens, layer, pooling))
