"""The pipeline of a Lens: collect, crop and embed every layer, stored and resumable.

1. collection (paper: concept examples, the selection): one pass over the data for all layers
   at once (:func:`~semlens_widgets.kernels.collect.collect_topm`) -> per component the top-m
   sample indices and pooled activations, plus per-sample labels, predictions and the number
   of classes;
2. crops (concept examples, the crop): per chunk of components, the crop boxes ``[C, m, 4]``
   (CRP heatmaps, upsampled activation maps or the full image) -- boxes, not pixels: crops are
   re-made on demand from the dataset;
3. embedding (paper: semantic embedding): per chunk, the crops of the display images resized
   to the foundation model's input size and embedded -> ``V [C, m, d]`` and ``theta [C, d]``.

Every result is written to the store under the keys and fingerprints of
:mod:`semlens_widgets.lens_keys`. Steps 2 and 3 save one chunk (``chunk_size`` components) at a
time, so an interrupted run resumes from the last finished chunk; a rerun with identical inputs
loads everything without calling the model.

Where the work to come plugs in (one place each):

- the LRP set-up (``Lens(composite=, canonizers=)``): :func:`lrp_setup` builds it (the Lens
  calls it before anything is written), its id goes into the boxes' fingerprint
  (``crop_setup``), :meth:`Pipeline.heatmaps_of` and the attribution part use
  ``pipeline.composite``;
- checkpoints of the collection pass (``checkpoint_every``): :meth:`Pipeline._collect` is the
  only caller of ``collect_topm``, whose running state (``kernels.collect.RunningTopM``) is
  what a checkpoint saves;
- sharded runs (torch.distributed): the dataset shard goes into ``_collect`` (a sampler over the
  rank's indices, then ``merge_topm`` of the all-gathered results); component shards go into
  :func:`cached_in_chunks` (each rank computes its chunks, one rank writes);
- lazy reads of big entries: :meth:`Pipeline._load` is the one place results are read back.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from semlens_widgets import distributed
from semlens_widgets.kernels.crops import CROP_RULES
from semlens_widgets.lens_checks import is_int
from semlens_widgets.lens_data import DataView
from semlens_widgets.lens_keys import Entry, PipelineKeys
from semlens_widgets.lens_layers import LayerSet
from semlens_widgets.results import ComponentExamples, TopM
from semlens_widgets.store import Store, StoreError

__all__ = ["CROP_MODES", "CROP_RULE", "REL_THRESHOLD", "ACT_THRESHOLD", "ACT_PROBES", "LOW_CONSERVATION",
           "PipelineConfig", "Pipeline", "LrpSetup", "lrp_setup", "check_crop_rule", "cached_in_chunks", "step_lock"]

CROP_MODES = ("crp", "activation", "full")
#: the default crop rule of crop="crp" (kernels.crops.boxes_from_heatmaps), chosen by measurement
#: (benchmarks/bench_crop_rules.py, one run, 2 CPU cores). Demo world, all 2,000 test images,
#: m = 30: mean label AUC over the labelled components of both layers / of block4, and mean box
#: area of block3 / block4: "threshold" (the paper's 1 %) 0.737 / 0.758, 0.07 / 0.26;
#: "zennit_crp" 0.738 / 0.767, 0.05 / 0.18; "peak_region" 0.745 / 0.776, 0.05 / 0.17.
#: EfficientNet-Lite0 (real weights, 128 augmented real photos, 8 channels x 8 examples),
#: mean box area at _blocks.14 / _blocks.15: 0.61 / 0.91 (23 % whole images), 0.30 / 0.58,
#: 0.29 / 0.57 (zennit-crp's own reference crops of the same heatmaps: 0.35 / 0.57).
CROP_RULE = "peak_region"
REL_THRESHOLD = 0.01  # crop_rule "threshold": pixels with relevance >= 1% of the max
#: a CRP layer whose median input-heatmap sum is below this share of the start relevance is
#: reported (a warning naming the layer; lens.conservation shows every layer)
LOW_CONSERVATION = 0.5
# crop="activation": pixels whose activation is at least 25% of the way from the component's
# typical level (median over ACT_PROBES evenly spaced samples) to its peak on the image
ACT_THRESHOLD = 0.25
ACT_PROBES = 64


@dataclass(frozen=True)
class PipelineConfig:
    """The settings of the steps (validated by the Lens).

    m: concept examples per component; crop_mode: one of :data:`CROP_MODES`; pooling: one of
    ``kernels.hooks.POOLINGS``; batch_size / num_workers: DataLoader of the collection pass
    (batch_size is also the batch of crops and embeddings); chunk_size: components per
    resumable chunk; crop_size: default side of :meth:`Pipeline.crops` (None: the foundation
    model's input side); progress: tqdm bars; checkpoint_every: batches between checkpoints of
    the collection pass (None: after the first batch that ends a minute or more after the last);
    crop_rule: how crop="crp" turns a heatmap into a box (``kernels.crops.CROP_RULES``).
    """

    m: int
    crop_mode: str
    pooling: str
    batch_size: int
    num_workers: int
    chunk_size: int
    crop_size: int | None
    progress: bool
    checkpoint_every: int | None = None
    crop_rule: str = CROP_RULE


@dataclass(frozen=True)
class LrpSetup:
    """The LRP set-up of a model: a zennit composite (None: no LRP rules, relevance falls back
    to activation x gradient) and its id in the fingerprints of the results it shapes.

    ``id``: :func:`semlens_widgets.kernels.lrp.setup_id`, JSON text naming the rule (or the
    user composite's class, its rules and their plain settings), the canonizers and the versions
    of zennit and of this package's rules. A user composite or canonizer is named by its
    classes and settings, not its code: one whose behaviour changes under the same names gets
    the same id, so results stored with the old behaviour would be reused -- give such a set-up
    a new store (or ``overwrite=True``)."""

    composite: Any
    id: str | None


def check_crop_rule(crop_rule: Any, crop_mode: str) -> str:
    """The crop rule of a Lens: None -> :data:`CROP_RULE`; else one of ``kernels.crops.CROP_RULES``,
    which apply to the relevance heatmaps of ``crop="crp"`` only (activation crops keep their
    own rule, ``crop="full"`` has none): another crop mode with an explicit rule is refused."""
    from semlens_widgets.kernels.crops import CROP_RULES

    if crop_rule is None:
        return CROP_RULE
    if not isinstance(crop_rule, str) or crop_rule not in CROP_RULES:
        raise ValueError(f"unknown crop_rule {crop_rule!r}; accepted: None (the default {CROP_RULE!r}) or one of "
                         f"{list(CROP_RULES)}")
    if crop_mode != "crp":
        raise ValueError(f"crop_rule={crop_rule!r} applies to crop='crp' (relevance heatmaps); crop={crop_mode!r} "
                         "has its own rule: leave crop_rule=None")
    return crop_rule


def lrp_setup(model: nn.Module, crop_mode: str, composite: Any = None, canonizers: Any = None, *,
              example_input: torch.Tensor | None = None) -> LrpSetup:
    """The LRP set-up of ``model`` for the crops and the relevance (the Lens's ``composite=``,
    ``canonizers=``), made before any work.

    ``composite`` None (the default rule, zennit's EpsilonPlusFlat with this package's
    conserving z+ and zero biases), a rule name of ``kernels.lrp.RULES`` or a zennit Composite;
    ``canonizers`` None (the traced BatchNorm merging) or a list of zennit canonizers; this
    package's functional rules (residual sums, gates, attention) are always added
    (``kernels.lrp.resolve_composite``). ``example_input`` (a few model inputs on the model's
    device) traces the model: an operation on the relevance path without a rule raises, naming
    module and operation, when ``crop="crp"`` or when the user brought a composite / canonizers;
    otherwise (default set-up, activation or full crops) the set-up is None and relevance falls
    back to activation x gradient (``kernels.relevance``). Bad values raise before any work.
    """
    from semlens_widgets.kernels.lrp import check_setup, resolve_composite, setup_id, unsupported_modules

    check_setup(composite, canonizers)
    user = composite is not None or canonizers is not None
    resolved = resolve_composite(model, composite, canonizers)
    try:
        bad = [] if example_input is None else unsupported_modules(model, example_input, composite=resolved)
    except Exception as e:  # noqa: BLE001 -- a forward pass the audit cannot follow
        if crop_mode == "crp" or user:
            raise ValueError(f"the LRP set-up could not trace {type(model).__name__} ({type(e).__name__}: {e}); "
                             f"use crop='activation' (upsampled activation maps) or crop='full'") from e
        warnings.warn(f"no LRP set-up for {type(model).__name__} (the trace failed: {type(e).__name__}: {e}); "
                      "relevance uses activation x gradient", stacklevel=3)
        return LrpSetup(None, None)
    if bad:
        if crop_mode == "crp" or user:
            given = " (with the given composite / canonizers)" if user else ""
            raise ValueError(
                f"crop={crop_mode!r} needs LRP rules for every operation on the relevance path{given}; "
                f"{type(model).__name__} has none for {bad[:5]}{' ...' if len(bad) > 5 else ''}; "
                f"use crop='activation' (upsampled activation maps; relevance then uses activation x gradient) "
                f"or crop='full', or pass composite= / canonizers= whose rules cover them"
            )
        return LrpSetup(None, None)
    return LrpSetup(resolved, setup_id(composite, canonizers, resolved))


def cached_in_chunks(store: Store, entry: Entry, n: int, size: int, compute: Callable[[int, int], dict],
                     assemble: Callable[[list[dict]], dict], *, desc: str, progress: bool,
                     meta: dict | None = None) -> dict[str, torch.Tensor]:
    """The tensors of ``entry``: loaded, or computed in resumable chunks of ``size`` of ``n``
    items (``compute(a, b)``, checkpointed under ``entry.key/chunk<a>-<b>``), assembled into the
    final entry (``assemble(parts)``), saved, and the checkpoints dropped.

    Inside a sharded run (:func:`semlens_widgets.distributed.sharded` with a process group) the
    chunks are dealt out to the ranks and rank 0 alone writes (:func:`~semlens_widgets.distributed.chunked`);
    every rank returns the same tensors."""

    def run() -> dict[str, torch.Tensor]:
        parts = distributed.chunked(store, entry.key, entry.fingerprint, n, size, compute, desc=desc,
                                    progress=progress)
        return assemble(parts)

    if distributed.is_writer() and not store.has(entry.key, entry.fingerprint):
        check_writable(store, _unsaved_step(entry.key))
    got = distributed.cached(store, entry.key, entry.fingerprint, run, meta=meta, lazy=True)  # big: memory-mapped
    distributed.drop_chunks(store, entry.key)
    return got


def _unsaved_step(name: str) -> str:
    """Why a step must write: the reason :func:`check_writable` gives for step ``name``."""
    return (f"step {name!r} has no stored result for these inputs (another model, dataset, layer or setting "
            f"than the store holds results for) and could not save one")


def check_writable(store: Store, why: str) -> None:
    """Refuse, before the work starts, a store directory that cannot be written (read-only file
    system, permissions) when something must be written to it; ``why`` says what (in the error)."""
    if store.root is None:
        return
    try:
        with tempfile.TemporaryFile(dir=store.root):  # O_TMPFILE where it exists: no name appears
            pass
    except OSError as e:
        raise StoreError(
            f"store {str(store.root)!r} is not writable ({e.strerror}): {why}; accepted: a writable store "
            f"directory (e.g. a copy of this one), store=None to compute in memory, or the inputs the store "
            f"holds results for"
        ) from None


def step_lock(store: Store, name: str) -> Any:
    """The store's step lock ``name`` (:meth:`~semlens_widgets.store.Store.lock`) around a step
    that loads, else computes and saves: a second process computing the same step waits (a
    warning names the holder's pid), then re-loads what the first saved. Use it as
    ``got = load(); if got is None: with step_lock(store, key): got = load() or compute + save``.
    In a sharded run only the writer (rank 0) takes it: the other ranks wait in the collectives
    (outside one, every process locks as usual).
    A store that cannot be written is refused here, before the step's work (:func:`check_writable`)."""
    if not distributed.active() or distributed.is_writer():
        check_writable(store, _unsaved_step(name))
        return store.lock(name)
    return contextlib.nullcontext()


def _sorted_batches(flat_idx: torch.Tensor, batch: int):
    """Yield ``(pos, uniq, inv)`` over batches of flat positions sorted by sample index, so
    that each batch loads each distinct sample once: ``flat_idx[pos] == uniq[inv]``."""
    order = torch.argsort(flat_idx, stable=True)
    for s in range(0, order.numel(), batch):
        pos = order[s : s + batch]
        uniq, inv = torch.unique(flat_idx[pos], return_inverse=True)
        yield pos, uniq, inv


class Pipeline:
    """Collect, crop and embed the layers of a model over a dataset; holds the results.

    model: already on ``device`` and in eval mode; data: the :class:`DataView` of the dataset;
    fm: the foundation model; layers: the :class:`LayerSet`; store: where results live;
    model_fingerprint: of the model's parameters and buffers; lrp: the :class:`LrpSetup` of the
    crops and relevance; class_names: names of the model's outputs (or None).
    Implements :class:`~semlens_widgets.protocols.ComponentSource` and
    :class:`~semlens_widgets.protocols.ModelSource` for the Lens's parts.
    """

    def __init__(self, model: nn.Module, data: DataView, fm: Any, layers: LayerSet, config: PipelineConfig,
                 store: Store, device: torch.device, model_fingerprint: str, lrp: LrpSetup,
                 class_names: list[str] | None = None):
        self.model = model
        self.class_names = class_names
        self.data = data
        self.fm = fm
        self.layers = layers
        self.config = config
        self.store = store
        self.device = device
        self.composite = lrp.composite
        crp = config.crop_mode == "crp"
        self.keys = PipelineKeys(
            model=model_fingerprint, dataset=data.fingerprint, layers=tuple(layers.names), m=config.m,
            pooling=config.pooling, crop_mode=config.crop_mode,
            crop_setup=(REL_THRESHOLD, lrp.id if crp else None,
                        # CRP starts at the peak neuron for max poolings (crops.crp_heatmaps)
                        ("peak" if config.pooling in ("max", "absmax") else "map") if crp else None,
                        (config.pooling, "above-typical", ACT_THRESHOLD, ACT_PROBES)
                        if config.crop_mode == "activation" else None,
                        # the crop rule and its threshold; the boxes entry also holds the
                        # conservation ratios (crp)
                        *((config.crop_rule, CROP_RULES[config.crop_rule], "ratio") if crp else ())),
            fm=dict(fm.identity), display=data.display_id, crop_side=self.crop_side,
            saes=layers.sae_identities(),
        )
        self.ran = False
        self._topm: dict[str, TopM] = {}
        self._boxes: dict[str, torch.Tensor] = {}   # layer -> [C, m_eff, 4] int64
        self._embedded: dict[str, Mapping[str, torch.Tensor]] = {}  # layer -> V [C, m_eff, d] float16,
        #                                                          theta [C, d] float32 (taken when read)
        self._samples: dict[str, Any] = {}
        self._levels: dict[str, torch.Tensor] = {}  # layer -> [C] typical activation (crop="activation")
        self._warned: set[str] = set()               # layers warned about full-image activation crops
        self._warned_conservation: set[str] = set()  # layers warned about low / unstable conservation
        self._crp_checked: set[str] = set()          # layers whose CRP start was checked (one full forward)
        self._shapes: dict[str, list] = {}          # layer -> per-sample output shape (collection)
        self._ratios: dict[str, torch.Tensor] = {}   # layer -> [C, m_eff] input heatmap sum / start (crp)
        self._last_heatmaps: tuple | None = None     # (layer, k, heatmaps, start) of the last heatmaps()

    @property
    def crop_side(self) -> int:
        """The foundation model's input side: crops are resized to it for embedding."""
        s = self.fm.image_size
        return int(s) if isinstance(s, int) else int(max(s))

    # ====================================================================== run
    def run(self, on_step: Callable[[str, str | None, float], Any] | None = None) -> None:
        """Collect, crop and embed every layer (loading what the store holds); see
        :meth:`semlens_widgets.lens.Lens.run`."""
        from tqdm.auto import tqdm

        def step(name: str, layer: str | None, fn, *args) -> None:
            t = time.perf_counter()
            fn(*args)
            if on_step is not None:
                on_step(name, layer, time.perf_counter() - t)

        bars = not self.config.progress or len(self.layers) < 2 or not distributed.is_writer()
        with distributed.sharded():  # in a process group: every rank runs these steps, sharing the work
            distributed.check_same(self.keys.lens, "lens fingerprint (model, data, layers, settings, fm)")
            step("collect", None, self._collect)
            for layer in tqdm(self.layers.names, desc="crops", disable=bars, unit="layer"):
                step("crops", layer, self._run_boxes, layer)
            if self.config.crop_mode == "full":
                step("embed", None, self._embed_full)
            else:
                for layer in tqdm(self.layers.names, desc="embeddings", disable=bars, unit="layer"):
                    step("embed", layer, self._embed, layer)
        self.ran = True

    def _load(self, entry: Entry) -> Mapping[str, torch.Tensor] | None:
        """The one place stored results are read back (in a sharded run: by rank 0, sent to all).
        In one process, entries above 64 MiB are memory-mapped (``Store.load(lazy=True)``, each
        tensor verified when first taken), so a lens over a million components opens without
        reading its gigabytes."""
        return distributed.load(self.store, entry.key, entry.fingerprint, lazy=True)

    # ---------------------------------------------------------------- step 1: collection
    def _stored_collection(self) -> tuple[list[str], dict | None]:
        """(layers without a stored ``collect`` entry, the stored ``samples`` entry or None);
        keeps the stored top-m of the others."""
        missing = []
        for layer in self.layers.names:
            entry = self.keys.collect(layer)
            got = self._load(entry)
            if got is None:
                missing.append(layer)
            else:
                meta = distributed.meta(self.store, entry.key)["meta"]
                self._topm[layer] = TopM(got["indices"], got["values"], int(meta["m"]), int(meta["n_seen"]))
                self._shapes[layer] = list(meta.get("shape", []))
        return missing, self._load(self.keys.samples())

    def _collect(self) -> None:
        """The top-m of every layer and the per-sample labels / predictions: loaded, else one
        pass over the data for the layers that lack them. The pass runs under the store's step
        lock ``collect`` (a second process waits, then loads what the first saved), saves a
        checkpoint of its running state every ``checkpoint_every`` batches (default: about once
        a minute) and resumes from it after an interruption."""
        missing, samples = self._stored_collection()
        if missing or samples is None:
            with step_lock(self.store, "collect"):
                missing, samples = self._stored_collection()  # another process may have collected
                if missing or samples is None:
                    samples = self._collect_pass(missing or self.layers.names[:1])
        else:
            self._drop_stale_checkpoint()
        samples_entry = self.keys.samples()
        meta = distributed.meta(self.store, samples_entry.key)["meta"]
        self._samples = {
            "labels": samples.get("labels"),
            "predictions": samples.get("predictions"),
            "n_samples": int(meta["n_samples"]),
            "num_classes": meta.get("num_classes"),
        }
        nc, names = self._samples["num_classes"], self.class_names
        if names is not None and nc is not None and len(names) != nc:
            warnings.warn(f"class_names has {len(names)} entries but the model outputs {nc} classes", stacklevel=5)

    def _collect_pass(self, layers: list[str]) -> dict[str, torch.Tensor]:
        """One pass over the data for ``layers`` (resumed from its checkpoint when there is one);
        saves the ``collect/<layer>`` and ``samples`` entries, then drops the checkpoint.
        Returns the ``samples`` tensors. Called under the ``collect`` step lock."""
        from semlens_widgets.kernels.collect import RunningTopM, collect_topm

        cfg = self.config
        ck = self.keys.collect_checkpoint(layers, cfg.batch_size)
        state = self._resume_state(ck)

        def checkpoint(running: RunningTopM) -> None:
            tensors, meta = running.state_dict()
            self.store.save(ck.key, tensors, ck.fingerprint, meta=meta)

        if distributed.active():
            res = self._collect_sharded(layers, state, None if self.store.in_memory else checkpoint)
        else:
            res = collect_topm(
                self.model, self.data.dataset, layers, cfg.m, pooling=cfg.pooling, batch_size=cfg.batch_size,
                num_workers=cfg.num_workers, device=self.device, progress=cfg.progress, state=state,
                checkpoint=None if self.store.in_memory else checkpoint, checkpoint_every=cfg.checkpoint_every,
                check_labels=True, saes=self.layers.saes,
            )
        for layer, topm in res.topm.items():
            entry = self.keys.collect(layer)
            distributed.save(
                self.store, entry.key, {"indices": topm.indices.long(), "values": topm.values.float()}, entry.fingerprint,
                meta={"m": topm.m, "n_seen": topm.n_seen, "shape": list(res.shapes.get(layer, ())),
                      "pooling": cfg.pooling},
            )
            self._topm[layer] = TopM(topm.indices.long().cpu(), topm.values.float().cpu(), topm.m, topm.n_seen)
            self._shapes[layer] = list(res.shapes.get(layer, ()))
        samples = {"n_samples": torch.tensor([res.n_samples])}
        if res.labels is not None:
            samples["labels"] = res.labels.long().cpu()
        if res.predictions is not None:
            samples["predictions"] = res.predictions.long().cpu()
        entry = self.keys.samples()
        distributed.save(self.store, entry.key, samples, entry.fingerprint,
                         meta={"n_samples": res.n_samples, "num_classes": res.num_classes})
        if distributed.is_writer():
            self.store.delete(ck.key)
        return samples

    def _collect_sharded(self, layers: list[str], state: Any, checkpoint: Callable | None):
        """The collection pass of ``layers`` shared by the ranks of a process group
        (:func:`semlens_widgets.distributed.collect_sharded`): each rank collects blocks of
        whole batches of the one-process pass with ``collect_topm(indices=..., keep_state=True)``,
        the ranks' states are merged exactly after every round (rank 0 saves the merged state as
        the checkpoint). Returns the ``CollectResult`` of the whole pass (every rank)."""
        from semlens_widgets.kernels.collect import RunningTopM, collect_topm

        cfg = self.config
        n = len(self.data)

        def collect(indices: list[int], local: RunningTopM) -> RunningTopM:
            return collect_topm(
                self.model, self.data.dataset, layers, cfg.m, pooling=cfg.pooling, batch_size=cfg.batch_size,
                num_workers=cfg.num_workers, device=self.device, progress=False, indices=indices, state=local,
                check_labels=True, saes=self.layers.saes, keep_state=True,
            )

        merged = distributed.collect_sharded(
            collect, lambda: RunningTopM(layers, cfg.m, n, self.device), n_total=n, batch_size=cfg.batch_size,
            state=state, checkpoint=checkpoint, checkpoint_every=cfg.checkpoint_every, progress=cfg.progress,
            device=self.device,
        )
        return merged.result()

    def _drop_stale_checkpoint(self) -> None:
        """Delete the checkpoint of a pass whose final entries are all stored (a run killed after
        saving them, before it dropped the checkpoint); a checkpoint of another pass is kept."""
        if not distributed.is_writer():
            return
        key = self.keys.collect_checkpoint((), 0).key
        rec = self.store.meta(key)
        layers = (rec or {}).get("meta", {}).get("layers")
        if not isinstance(layers, list) or not set(layers) <= set(self.layers.names):
            return
        if rec["fingerprint"] == self.keys.collect_checkpoint(layers, self.config.batch_size).fingerprint:
            self.store.delete(key)

    def _resume_state(self, ck: Entry):
        """The running state saved under ``ck`` by an interrupted pass (None: start afresh); says
        where the pass resumes."""
        from semlens_widgets.kernels.collect import RunningTopM

        got = self._load(ck)
        if got is None:
            return None
        try:
            state = RunningTopM.from_state(got, distributed.meta(self.store, ck.key)["meta"], self.device)
        except ValueError as e:
            warnings.warn(f"collection: ignoring an unreadable checkpoint ({e}); starting afresh", stacklevel=5)
            return None
        warnings.warn(f"collection: resuming from checkpoint at {state.n_seen:,} / {state.n_total:,} samples",
                      stacklevel=5)
        return state

    # ---------------------------------------------------------------- step 2: crops (boxes)
    def _run_boxes(self, layer: str) -> None:
        entry = self.keys.boxes(layer)
        idx = self._topm[layer].indices  # [C, m_eff]
        C, me = idx.shape
        if self.config.crop_mode == "full":
            _, h, w = self.data.input_shape
            full = torch.tensor([0, 0, w, h], dtype=torch.long).expand(C, me, 4).clone()
            got = distributed.cached(self.store, entry.key, entry.fingerprint, lambda: {"boxes": full},
                                     meta={"crop_mode": self.config.crop_mode})
        else:
            keys = ("boxes", "ratio") if self.config.crop_mode == "crp" else ("boxes",)
            got = cached_in_chunks(
                self.store, entry, C, self.config.chunk_size,
                lambda a, b: self._compute_boxes(layer, idx[a:b], torch.arange(a, b)),
                lambda parts: {key: torch.cat([p[key] for p in parts]) for key in keys},
                desc=f"crops {layer}", progress=self.config.progress,
                meta={"crop_mode": self.config.crop_mode, "crop_rule": self.config.crop_rule
                      if self.config.crop_mode == "crp" else None},
            )
        self._boxes[layer] = got["boxes"].long()
        if self.config.crop_mode == "activation":
            self._warn_full_crops(layer)
        if "ratio" in got:
            self._ratios[layer] = got["ratio"].float()
            self._keep_conservation(layer)

    def _keep_conservation(self, layer: str) -> None:
        """Save the conservation summary of ``layer`` (``conservation/<layer>``: its numbers in the
        entry's meta, which ``semlens info`` prints) and warn when it is low or unstable."""
        from semlens_widgets.kernels.lrp import conservation_warning

        row = self.conservation_row(layer)
        entry = self.keys.conservation(layer)
        if distributed.is_writer() and not self.store.has(entry.key, entry.fingerprint):
            check_writable(self.store, f"the conservation summary of layer {layer!r} is not stored")
            self.store.save(entry.key, {"ratio_quantiles": self._ratio_quantiles(layer)}, entry.fingerprint, meta=row)
        msg = conservation_warning(row, LOW_CONSERVATION)
        if msg and layer not in self._warned_conservation:
            self._warned_conservation.add(layer)
            warnings.warn(msg, stacklevel=4)

    def _ratio_quantiles(self, layer: str) -> torch.Tensor:
        """``[11]`` the 0, 10, ..., 100 % quantiles of the layer's conservation ratios (NaN if none)."""
        r = self._ratios[layer].reshape(-1).double()
        r = r[torch.isfinite(r)]
        if not r.numel():
            return torch.full((11,), float("nan"), dtype=torch.float64)
        return torch.quantile(r, torch.linspace(0, 1, 11, dtype=torch.float64))

    def conservation_row(self, layer: str) -> dict:
        """The conservation of ``layer``'s CRP crops: ``layer, median, q10, q90, min, n`` over all
        its concept examples (``kernels.lrp.ratio_summary`` of the input heatmap sums over the
        start relevance, stored with the boxes)."""
        from semlens_widgets.kernels.lrp import ratio_summary

        r = self._ratios[layer].reshape(-1)
        ok = torch.isfinite(r)
        return {"layer": layer, **ratio_summary(r[ok], torch.ones(int(ok.sum())))}

    def _warn_full_crops(self, layer: str) -> None:
        """Warn once per layer when most activation crops of a spatial layer are the whole image
        (the crops then show the data, not the component)."""
        shape = self._shapes.get(layer) or []
        spatial = (len(shape) == 3 and shape[1] * shape[2] > 1) or (len(shape) == 2 and shape[0] > 1)
        if not spatial or layer in self._warned:
            return
        _, h, w = self.data.input_shape
        b = self._boxes[layer]
        share = float(((b[..., 0] == 0) & (b[..., 1] == 0) & (b[..., 2] == w) & (b[..., 3] == h)).float().mean())
        if share >= 0.5:
            self._warned.add(layer)
            warnings.warn(
                f"crop='activation': {share:.0%} of the concept-example crops of layer {layer!r} are the full "
                f"image (its components' maps are as high everywhere on their examples as at their peak), so "
                f"the embeddings describe whole images; crop='crp' (relevance) or another layer may crop better",
                stacklevel=4,
            )

    def heatmaps_of(self, layer: str, x: torch.Tensor, comps: torch.Tensor, *,
                    image_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x [u, C, H, W]`` model inputs (on the device), ``comps [n]`` -> ``(heatmaps [n, H, W],
        start [n] or None)`` on the device: CRP relevance and each start's summed relevance for
        ``crop="crp"``, else the upsampled activation map and None. ``image_index [n]``: heatmap
        i is on ``x[image_index[i]]`` (None: ``x`` has n rows); CRP then runs each distinct
        image forward once (``crp_heatmaps(image_index=...)``)."""
        from semlens_widgets.kernels.crops import activation_heatmaps, crp_heatmaps

        saes = self.layers.saes
        if self.config.crop_mode == "crp":
            checked = layer in self._crp_checked  # a name checked once (a reused module needs "name@i")
            got = crp_heatmaps(self.model, x, layer, comps, self.composite, pooling=self.config.pooling, saes=saes,
                               image_index=image_index, return_start=True, check_layer=not checked)
            self._crp_checked.add(layer)
            return got
        if image_index is not None:
            x = x[image_index.to(x.device)]
        return activation_heatmaps(self.model, x, layer, comps, self.config.pooling, saes=saes), None

    def _compute_boxes(self, layer: str, idx: torch.Tensor, comps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Boxes of the concept examples ``idx [c, me]`` of components ``comps [c]``: ``{"boxes":
        [c, me, 4]}``, with ``"ratio" [c, me]`` (input heatmap sum / start relevance, NaN where
        the start is not positive) for ``crop="crp"``. Boxes are computed on the device."""
        from semlens_widgets.kernels.crops import boxes_from_heatmaps

        c, me = idx.shape
        flat_idx = idx.reshape(-1)
        flat_comp = comps[:, None].expand(c, me).reshape(-1)
        out = torch.empty(flat_idx.numel(), 4, dtype=torch.long)
        ratio = torch.full((flat_idx.numel(),), float("nan"))
        act = self.config.crop_mode == "activation"
        levels = self._activation_levels(layer) if act else None
        for pos, uniq, inv in _sorted_batches(flat_idx, self.config.batch_size):
            x = self.data.model_inputs(uniq).to(self.device)
            heat, start = self.heatmaps_of(layer, x, flat_comp[pos], image_index=inv)
            if act:  # the part of the map above the component's typical level, not above 0
                boxes = boxes_from_heatmaps(heat, rel_threshold=ACT_THRESHOLD, baseline=levels[flat_comp[pos]])
            else:
                boxes = boxes_from_heatmaps(heat, crop_rule=self.config.crop_rule)
            out[pos] = boxes.long().cpu()
            if start is not None:
                sums = heat.flatten(1).sum(1)
                ratio[pos] = torch.where(start > 0, sums / start.clamp_min(1e-30), torch.nan).float().cpu()
        got = {"boxes": out.view(c, me, 4)}
        if self.config.crop_mode == "crp":
            got["ratio"] = ratio.view(c, me)
        return got

    def _activation_levels(self, layer: str) -> torch.Tensor:
        """``[C]`` the typical level of each component of ``layer`` (median of its activation
        map over ``ACT_PROBES`` evenly spaced samples; kernels.crops.activation_levels), what
        crop="activation" measures a crop from: without a ReLU, 0 is an arbitrary point of the
        range and a 1%-of-the-peak rule keeps the whole image."""
        from semlens_widgets.kernels.crops import activation_levels

        got = self._levels.get(layer)
        if got is None:
            n = len(self.data)
            probe = torch.unique(torch.linspace(0, n - 1, min(n, ACT_PROBES)).round().long())
            x = self.data.model_inputs(probe).to(self.device)
            got = self._levels[layer] = activation_levels(self.model, x, layer, self.config.pooling,
                                                          saes=self.layers.saes)
        return got

    # ---------------------------------------------------------------- step 3: embeddings
    def _embed_crops(self, idx: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Embed the crops ``boxes [n, 4]`` of samples ``idx [n]`` -> ``[n, d]`` float16.

        Each distinct sample of a batch is loaded once; crops are resized to the foundation
        model's input side on its device and encoded in one call per batch."""
        from semlens_widgets.kernels.crops import crop_resize

        out = torch.empty(idx.numel(), int(self.fm.dim), dtype=torch.float16)
        dev = getattr(self.fm, "device", torch.device("cpu"))
        bs = int(getattr(self.fm, "batch_size", self.config.batch_size))
        for pos, uniq, inv in _sorted_batches(idx, bs):
            imgs = self.data.images(uniq).to(dev)
            crops = crop_resize(imgs[inv.to(dev)], boxes[pos].to(dev), self.crop_side)
            out[pos] = self.fm.encode_images(crops).to(torch.float16)
        return out

    @staticmethod
    def _with_theta(V: torch.Tensor) -> dict[str, torch.Tensor]:
        """``V [C, m_eff, d]`` -> the ``embed`` entry: V (float16) and theta (the semantic
        embedding, float32)."""
        from semlens_widgets.kernels.embed import semantic_embedding

        return {"V": V.to(torch.float16), "theta": semantic_embedding(V.float(), None).float()}

    def _keep_embed(self, layer: str, got: Mapping[str, torch.Tensor]) -> None:
        # kept as loaded: a memory-mapped V (30 GB at 1M components, m=30) is verified and read
        # only when example_embeddings asks for it
        self._embedded[layer] = got

    def _embed_meta(self) -> dict:
        return {"fm": self.fm.identity.get("name")}

    def _embed(self, layer: str) -> None:
        idx, boxes = self._topm[layer].indices, self._boxes[layer]
        C, me = idx.shape

        def compute(a: int, b: int) -> dict:
            v = self._embed_crops(idx[a:b].reshape(-1), boxes[a:b].reshape(-1, 4))
            return {"V": v.view(b - a, me, -1)}

        got = cached_in_chunks(
            self.store, self.keys.embed(layer), C, self.config.chunk_size, compute,
            lambda parts: self._with_theta(torch.cat([p["V"] for p in parts])),
            desc=f"embed {layer}", progress=self.config.progress, meta=self._embed_meta(),
        )
        self._keep_embed(layer, got)

    def _embed_missing(self, layers: list[str]) -> list[str]:
        """Load the stored ``embed`` entries of ``layers``; return the layers without one."""
        todo = []
        for layer in layers:
            got = self._load(self.keys.embed(layer))
            if got is None:
                todo.append(layer)
            else:
                self._keep_embed(layer, got)
        return todo

    def _embed_full(self) -> None:
        """``crop="full"``: embed each distinct sample of all layers once, then gather (under the
        step lock ``fullemb``: a second process waits and loads)."""
        if not self._embed_missing(self.layers.names):
            return
        with step_lock(self.store, "fullemb"):  # the prefix of keys.sample_embeddings
            todo = self._embed_missing(self.layers.names)  # another process may have embedded them
            if todo:
                self._embed_full_of(todo)

    def _embed_full_of(self, todo: list[str]) -> None:
        """Embed the distinct samples of ``todo``'s concept examples (resumable chunks) and save
        each layer's ``embed`` entry."""
        uniq = torch.unique(torch.cat([self._topm[layer].indices.reshape(-1) for layer in todo]))  # sorted
        _, h, w = self.data.input_shape
        full = torch.tensor([0, 0, w, h], dtype=torch.long)
        chunks = self.keys.sample_embeddings(uniq)

        def compute(a: int, b: int) -> dict:
            part = uniq[a:b]
            return {"E": self._embed_crops(part, full.expand(part.numel(), 4))}

        size = self.config.chunk_size * max(self.config.m, 1)
        parts = distributed.chunked(self.store, chunks.key, chunks.fingerprint, uniq.numel(), size, compute,
                                    desc="embed samples", progress=self.config.progress)
        E = torch.cat([p["E"] for p in parts])  # [U, d] float16
        for layer in todo:
            idx = self._topm[layer].indices
            got = self._with_theta(E[torch.searchsorted(uniq, idx.reshape(-1))].view(*idx.shape, -1))
            entry = self.keys.embed(layer)
            distributed.save(self.store, entry.key, got, entry.fingerprint, meta=self._embed_meta())
            self._keep_embed(layer, got)
        distributed.drop_chunks(self.store, chunks.key)

    # ====================================================================== results
    def require_run(self) -> None:
        if not self.ran:
            raise RuntimeError("the Lens has no results yet: call lens.run() first (it loads stored results)")

    def samples(self, what: str) -> Any:
        """``labels`` / ``predictions`` ([N] or None), ``n_samples``, ``num_classes`` of the
        collection pass."""
        self.require_run()
        return self._samples[what]

    @property
    def sample_labels(self) -> torch.Tensor | None:
        return self.samples("labels")

    @property
    def sample_predictions(self) -> torch.Tensor | None:
        return self.samples("predictions")

    @property
    def num_classes(self) -> int | None:
        """K of the model's [B, K] output (known after the collection pass); else
        len(class_names); None when neither is known."""
        if self.ran and self._samples.get("num_classes") is not None:
            return int(self._samples["num_classes"])
        if self.class_names is not None:
            return len(self.class_names)
        self.require_run()
        return None

    def model_inputs(self, indices: Any) -> torch.Tensor:
        return self.data.model_inputs(indices)

    def topm(self, layer: str) -> TopM:
        self.require_run()
        return self._topm[self.layers.check(layer)]

    def num_components(self, layer: str) -> int:
        return self.topm(layer).num_components

    def check_component(self, layer: str, k: Any) -> int:
        if isinstance(k, torch.Tensor) and k.numel() == 1 and not k.is_floating_point():
            k = int(k)
        n = self.num_components(layer)
        if not is_int(k):
            raise TypeError(f"component index must be an int, got {k!r} ({type(k).__name__})")
        if not 0 <= int(k) < n:
            raise IndexError(f"component {k} out of range for layer {layer!r}: it has {n} components (0..{n - 1})")
        return int(k)

    def examples(self, layer: str, k: Any) -> ComponentExamples:
        t = self.topm(layer)
        k = self.check_component(layer, k)
        return ComponentExamples(layer, k, t.indices[k].clone(), t.values[k].clone())

    def boxes(self, layer: str) -> torch.Tensor:
        self.require_run()
        return self._boxes[self.layers.check(layer)].clone()

    def crops(self, layer: str, k: Any, size: int | None = None) -> torch.Tensor:
        from semlens_widgets.kernels.crops import crop_resize
        ex = self.examples(layer, k)
        if size is not None and (not is_int(size) or size < 1):
            raise ValueError(f"size must be None or an int >= 1, got {size!r}")
        side = int(size or self.config.crop_size or self.crop_side)
        crops = crop_resize(self.data.images(ex.indices), self._boxes[layer][ex.component], side)
        return (crops.clamp(0, 1) * 255).round().to(torch.uint8).cpu()

    def _heatmaps(self, layer: str, k: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """``(heatmaps [m_eff, H, W], start [m_eff] or None, examples)`` of component k on the CPU
        (the last call is kept: heatmaps() then heatmap_sums() runs the model once)."""
        ex = self.examples(layer, k)
        last = self._last_heatmaps
        if last is not None and last[0] == layer and last[1] == ex.component:
            return last[2], last[3], ex
        _, h, w = self.data.input_shape
        if self.config.crop_mode == "full":
            heat, start = torch.ones(len(ex), h, w), None
        else:
            x = self.data.model_inputs(ex.indices).to(self.device)
            comps = torch.full((len(ex),), ex.component, dtype=torch.long)
            heat, start = self.heatmaps_of(layer, x, comps)
            heat = heat.detach().float().cpu()
            start = None if start is None else start.detach().float().cpu()
        self._last_heatmaps = (layer, ex.component, heat, start)
        return heat, start, ex

    def heatmaps(self, layer: str, k: Any) -> torch.Tensor:
        return self._heatmaps(layer, k)[0].clone()

    def heatmap_sums(self, layer: str, k: Any):
        """DataFrame ``sample, start, sum, ratio`` of component k's heatmaps (see Lens.heatmap_sums)."""
        import pandas as pd

        heat, start, ex = self._heatmaps(layer, k)
        sums = heat.flatten(1).sum(1).double()
        if start is None:
            start_col = ratio = [float("nan")] * len(ex)
        else:
            start_col = start.double().tolist()
            ratio = torch.where(start > 0, sums / start.double().clamp_min(1e-30), torch.nan).tolist()
        return pd.DataFrame({"sample": ex.indices.tolist(), "start": start_col, "sum": sums.tolist(), "ratio": ratio})

    def conservation(self, layer: str | None = None):
        """DataFrame ``layer, median, q10, q90, min, n`` of the CRP layers (see Lens.conservation)."""
        import pandas as pd

        from semlens_widgets.kernels.lrp import SUMMARY_COLUMNS

        self.require_run()
        names = self.layers.names if layer is None else [self.layers.check(layer)]
        rows = [self.conservation_row(name) for name in names if name in self._ratios]
        return pd.DataFrame(rows, columns=["layer", *SUMMARY_COLUMNS])

    def embeddings(self, layer: str) -> torch.Tensor:
        self.require_run()
        return self._embedded[self.layers.check(layer)]["theta"].float().clone()

    def example_embeddings(self, layer: str) -> torch.Tensor:
        self.require_run()
        return self._embedded[self.layers.check(layer)]["V"].float()
