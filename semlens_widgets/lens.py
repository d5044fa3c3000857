"""The Lens: the one object a user holds.

``Lens(model, dataset, fm, layers, ...)`` validates its inputs early and assembles the parts it
owns; every method below checks nothing twice and computes nothing itself, it calls one of them:

- :attr:`Lens.pipeline` (:class:`~semlens_widgets.lens_pipeline.Pipeline`): collection, crops
  and embeddings of every layer (:meth:`Lens.run`), and the results (examples, boxes, crops,
  heatmaps, embeddings);
- :attr:`Lens.semantics` (:class:`~semlens_widgets.lens_semantics.SemanticIndex`): vocabulary,
  labels, search, measures, audit, maps, comparison;
- :attr:`Lens.attribution` (:class:`~semlens_widgets.lens_relevance.Attribution`): CRP relevance,
  class relevance, top classes, attribution graphs;
- :attr:`Lens.describer` (:class:`~semlens_widgets.lens_describe.Describer`): open-vocabulary
  descriptions (the LINE loop) and label faithfulness.

The layers are a :class:`~semlens_widgets.lens_layers.LayerSet`, the dataset a
:class:`~semlens_widgets.lens_data.DataView`, and every store key and fingerprint comes from
:mod:`semlens_widgets.lens_keys`. The method, equation by equation, and the function of each
equation: ``docs/METHOD.md``; how the parts fit: ``docs/INTERNALS.md``.

Results are written to a :class:`~semlens_widgets.store.Store` under fingerprints of their
inputs. Any change of the model's parameters/buffers, the dataset (length + content sample), m,
pooling, crop mode, the foundation model or the display transform changes the fingerprints,
and the affected results are recomputed, never reused:

- model: :func:`~semlens_widgets.store.module_fingerprint` -- names, shapes, dtypes and content
  of every parameter and buffer; tensors over 2**20 elements are hashed from a strided sample
  of 2**16 elements plus their float64 sum and sum of squares;
- dataset: its class, its length and the full content of 8 evenly spaced items (image bytes
  and label);
- foundation model: ``fm.identity`` (name, weights tag / file sha256 / parameter fingerprint,
  preprocessing);
- display transform: its qualified name (functions) or ``repr`` (objects such as
  ``torchvision.transforms.Normalize``).

A store directory remembers the architecture it was made for (class, parameter names and
shapes). Opening it with a model of another architecture raises :class:`StoreError`
(pass another ``store=`` directory, or ``overwrite=True`` to wipe it); the same architecture
with other weights simply recomputes.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from semlens_widgets import distributed
from semlens_widgets.kernels.hooks import POOLINGS
from semlens_widgets.lens_checks import check_device, check_model, describe, is_int
from semlens_widgets.lens_data import DataView
from semlens_widgets.lens_keys import AnalysisKeys
from semlens_widgets.lens_layers import LayerSet
from semlens_widgets.kernels.lrp import check_setup
from semlens_widgets.lens_pipeline import CROP_MODES, Pipeline, PipelineConfig, check_crop_rule, check_writable, lrp_setup
from semlens_widgets.lens_relevance import Attribution
from semlens_widgets.lens_describe import Describer
from semlens_widgets.lens_semantics import ComponentInfo, SemanticIndex
from semlens_widgets.results import AttributionGraph, AuditResult, ComponentExamples, Description, LabelResult, TopM
from semlens_widgets.store import Store, StoreError, module_fingerprint, module_signature

__all__ = ["Lens", "CROP_MODES", "imagenet_unnormalize", "imagenet_normalize", "IMAGENET_MEAN", "IMAGENET_STD",
           "StoreError"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_unnormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo torchvision's ImageNet normalisation: ``x * std + mean``, clamped to [0, 1].

    x: ``[n, 3, H, W]`` or ``[3, H, W]`` normalised model inputs. Use it as
    ``Lens(..., display_transform=imagenet_unnormalize)`` for datasets that apply
    ``transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)``.
    """
    mean, std = _imagenet_stats(x, "imagenet_unnormalize")
    return (x * std + mean).clamp(0.0, 1.0)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """torchvision's ImageNet normalisation ``(x - mean) / std`` of images ``[n, 3, H, W]`` /
    ``[3, H, W]`` in [0, 1]: the inverse of :func:`imagenet_unnormalize`, and what
    ``lens.describe`` / ``lens.faithfulness`` apply to generated images when the Lens shows its
    inputs with ``display_transform=imagenet_unnormalize``."""
    mean, std = _imagenet_stats(x, "imagenet_normalize")
    return (x - mean) / std


def _imagenet_stats(x: torch.Tensor, caller: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std ``[3, 1, 1]`` in ``x``'s dtype and device, after checking that ``x``
    is ``[n, 3, H, W]`` or ``[3, H, W]`` (the error names ``caller``)."""
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{caller} expects [n, 3, H, W] or [3, H, W], got {shape}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return mean, std


def _open_store(store: Any, model: nn.Module, model_fp: str, dataset_fp: str, overwrite: bool) -> Store:
    """The Store of ``store`` (a directory, a Store or None: in memory), claimed for this model's
    architecture: a store of another architecture raises (unless ``overwrite`` wipes it)."""
    if isinstance(store, Store):
        pass
    elif store is None or isinstance(store, (str, os.PathLike)):
        store = Store(store)
    else:
        raise TypeError(f"store must be a directory path, a Store or None, got {type(store).__name__}")
    signature = module_signature(model)
    info = store.get_info("lens")
    current = {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_signature": signature,
        "model_fingerprint": model_fp,
        "dataset_fingerprint": dataset_fp,
    }
    writer = distributed.is_writer()  # in a process group only rank 0 writes (the others read)
    if overwrite:
        if writer:
            check_writable(store, "overwrite=True would delete its contents")
            store.clear()
    elif info is not None and info.get("model_signature") != signature:
        where = "the in-memory store" if store.root is None else f"store {str(store.root)!r}"
        raise StoreError(
            f"{where} holds results of a different model ({info.get('model_class')}, other "
            f"architecture) than this {current['model_class']}; pass another directory as "
            f"store=..., or overwrite=True to delete its contents"
        )
    if info != current and writer:
        check_writable(store, "it holds results of another model or dataset, and the record of this one cannot "
                              "be saved")
        store.set_info("lens", current)
    return store


class Lens:
    """SemanticLens over the components of some layers of a vision model.

    Args:
        model: ``torch.nn.Module`` mapping ``[B, C, H, W]`` to anything (``[B, K]`` logits give
            predictions). Moved to ``device`` and put in eval mode.
        dataset: map-style dataset (``__len__``, ``__getitem__``) whose items are a tensor
            ``[C, H, W]``, a tuple ``(x, y, ...)`` or a dict (``"image"`` and ``"label"``);
            ``x`` is what the model eats (possibly normalised).
        fm: a :class:`~semlens_widgets.foundation.FoundationModel`.
        layers: layer names (``model.named_modules()`` names, ``"name@i"`` for the i-th call
            of a reused module, ``"name[j]"`` for element j of a tuple output); a str is one layer.
            ``"name:sae"``: the latents of the sparse autoencoder ``saes["name"]`` on that layer's
            output (conv maps encoded at every position), analysed like any layer.
        m: concept examples per component (>= 1; the paper's default is 30).
        crop: ``"crp"`` (CRP relevance crops, models with LRP rules; for max poolings the
            relevance starts at the neuron where the component peaks, so a crop shows what
            made it fire, see :func:`~semlens_widgets.kernels.crops.crp_heatmaps`), ``"activation"``
            (upsampled activation map, e.g. ViTs) or ``"full"`` (whole image).
        store: a directory (str / PathLike), a :class:`Store`, or None (in memory).
        device: where the model runs; default: where its parameters are (cpu if none).
        pooling: ``"max"``, ``"mean"``, ``"absmax"``, ``"absmean"`` or ``"cls"`` (tokens).
        batch_size, num_workers: DataLoader settings of the collection pass; batch_size is also
            the batch of the crop and embedding steps. ``batch_size=None``: chosen for the device
            (64 on CPUs; on CUDA from a probe of the model's memory per sample, see
            :func:`semlens_widgets.lens_device.default_batch_size`).
        class_names: optional names of the output classes.
        display_transform: ``[n, C, H, W]`` model inputs -> ``[n, 3, H, W]`` images in [0, 1]
            (same H, W); default: identity + clamp. Use :func:`imagenet_unnormalize` for
            ImageNet-normalised datasets.
        saes: ``{"name": SAE}`` (:class:`semlens_widgets.SAE`) for the SAE layers ``"name:sae"``;
            moved to ``device``. Their identity (weights digest) is part of the fingerprint. CRP
            crops of latents start at the latent and pass its relevance through the encoder
            (``SAE.input_relevance``); the relevance of latents for a class (relevance, audit,
            top classes) is their share of their layer's relevance (``SAE.latent_relevance``);
            attribution graphs refuse SAE layers (CRP conditions on module outputs).
        crop_size: default side of :meth:`crops` (default: the foundation model's input size).
        progress: show tqdm.auto progress bars.
        overwrite: wipe the store (all entries) before use.
        chunk_size: components per resumable chunk of the crop and embedding steps.
        checkpoint_every: batches between checkpoints of the collection pass (its running
            top-m, saved in the store; an interrupted run resumes from the last one and ends with
            the same results, bit for bit, as long as batch_size is the same). None: after the
            first batch that ends a minute or more after the last checkpoint.
        composite: the LRP rules of CRP crops and relevance: None (the default, zennit's
            EpsilonPlusFlat with a z+ rule that conserves relevance at units active only through
            a bias, and zero biases), a rule name (``"epsilon_plus_flat"``, ``"epsilon_plus"``,
            ``"epsilon_alpha2_beta1_flat"``, ``"epsilon_alpha2_beta1"``) or a zennit
            ``Composite`` (used with its own rules).
        canonizers: a list of zennit canonizers (e.g. ``[zennit.torchvision.ResNetCanonizer()]``)
            or None: BatchNorms merged into the convolution whose output they alone consume,
            found by tracing the model (torchvision / timm ResNet, VGG, EfficientNet, MobileNet,
            ConvNeXt, efficientnet-pytorch). Rules for residual sums, gates, layer scales,
            SiLU / GELU and attention (AttnLRP) are always added. The model is traced on two
            samples here: with ``crop="crp"`` (or a composite / canonizers given) an operation
            without a rule is refused, naming module and operation; otherwise relevance falls back
            to activation x gradient. Results depend on the set-up's id
            (:attr:`lrp_id`; a user composite is named by its classes and settings: one whose
            code changes under the same names needs a new store or ``overwrite=True``).
        crop_rule: how ``crop="crp"`` turns a heatmap into a box
            (:func:`~semlens_widgets.kernels.crops.boxes_from_heatmaps`): ``"threshold"``,
            ``"zennit_crp"`` or ``"peak_region"``; None: the default
            (:data:`~semlens_widgets.lens_pipeline.CROP_RULE`, chosen by measurement in
            ``benchmarks/bench_crop_rules.py``). Part of the boxes' fingerprint.

    Parts: :attr:`pipeline`, :attr:`semantics`, :attr:`attribution`, :attr:`describer` (see the
    module docstring).
    Attributes: ``model, dataset, fm, device, store, m, crop_mode, crop_rule, pooling, layers, fingerprint,
    class_names, num_classes, sample_labels, sample_predictions, composite, lrp_id, n_samples,
    batch_size, num_workers, chunk_size, checkpoint_every, crop_size, display_transform, progress,
    model_fingerprint, model_signature, dataset_fingerprint``.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Any,
        fm: Any,
        layers: Sequence[str] | str,
        m: int = 30,
        crop: str = "crp",
        store: str | os.PathLike | Store | None = "./lens-store",
        device: str | torch.device | None = None,
        *,
        pooling: str = "max",
        batch_size: int | None = None,
        num_workers: int = 0,
        class_names: Sequence[str] | None = None,
        display_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        saes: Mapping[str, Any] | None = None,
        crop_size: int | None = None,
        progress: bool = True,
        overwrite: bool = False,
        chunk_size: int = 64,
        checkpoint_every: int | None = None,
        composite: Any = None,
        canonizers: Sequence[Any] | None = None,
        crop_rule: str | None = None,
    ):
        # ---- cheap argument checks first -------------------------------------------------
        check_model(model)
        for attr in ("encode_images", "encode_concepts", "identity", "image_size", "dim"):
            if not hasattr(fm, attr):
                raise TypeError(
                    f"fm must be a semlens_widgets.FoundationModel (e.g. FoundationModel.open_clip"
                    f"('ViT-B-32')), got {describe(fm)} without {attr!r}"
                )
        if crop not in CROP_MODES:
            raise ValueError(f"unknown crop mode {crop!r}; accepted: {list(CROP_MODES)}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; accepted: {list(POOLINGS)}")
        if not is_int(m) or m < 1:
            raise ValueError(f"m must be an int >= 1 (concept examples per component), got {m!r}")
        if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
            raise ValueError(f"batch_size must be None (chosen for the device) or an int >= 1, got {batch_size!r}")
        for name, v, lo in (("num_workers", num_workers, 0), ("chunk_size", chunk_size, 1)):
            if not is_int(v) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        if checkpoint_every is not None and (not is_int(checkpoint_every) or checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be None (about one checkpoint a minute) or an int >= 1 "
                             f"(batches between checkpoints of the collection pass), got {checkpoint_every!r}")
        if crop_size is not None and (not is_int(crop_size) or crop_size < 1):
            raise ValueError(f"crop_size must be None or an int >= 1, got {crop_size!r}")
        check_setup(composite, canonizers)
        crop_rule = check_crop_rule(crop_rule, crop)
        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
                raise TypeError(f"class_names must be a list of str or None, got {class_names!r:.100}")
            class_names = list(class_names)
        layer_set = LayerSet(model, layers, saes)
        data = DataView(dataset, display_transform)

        # ---- device, model, LRP set-up (before anything is written) ---------------------------
        if device is None:
            p = next(iter(model.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        device = check_device(device)
        model = model.to(device).eval()
        layer_set.to(device)
        lrp = lrp_setup(model, crop, composite, canonizers,
                        example_input=data.model_inputs(range(min(2, len(data)))).to(device))
        if batch_size is None:
            from semlens_widgets.lens_device import default_batch_size

            batch_size = default_batch_size(model, data.input_shape, device)
        self.fm = fm
        self.config = PipelineConfig(m=int(m), crop_mode=crop, pooling=pooling, batch_size=int(batch_size),
                                     num_workers=int(num_workers), chunk_size=int(chunk_size),
                                     crop_size=crop_size, progress=bool(progress),
                                     checkpoint_every=None if checkpoint_every is None else int(checkpoint_every),
                                     crop_rule=crop_rule)

        # ---- store and parts ---------------------------------------------------------------
        self.model_fingerprint = module_fingerprint(model)
        self.model_signature = module_signature(model)
        self.store = _open_store(store, model, self.model_fingerprint, data.fingerprint, bool(overwrite))
        self.pipeline = Pipeline(model, data, fm, layer_set, self.config, self.store, device,
                                 self.model_fingerprint, lrp, class_names)
        keys = AnalysisKeys(self.pipeline.keys.lens, lrp.id)
        self.attribution = Attribution(self.pipeline, self.store, keys, layer_set, batch_size=self.config.batch_size,
                                       chunk=self.config.chunk_size * self.config.m, progress=self.config.progress)
        self.semantics = SemanticIndex(self.pipeline, fm, self.store, keys, layer_set, self.attribution)
        self.describer = Describer(self.pipeline, self.semantics, self.store, keys, layer_set,
                                   batch_size=self.config.batch_size, progress=self.config.progress)

    @classmethod
    def from_store(cls, store: str | os.PathLike, *, device: str | torch.device | None = None,
                   recompute: bool = False, progress: bool = True, batch_size: int | None = None,
                   num_workers: int | None = None) -> "Lens":
        """Reopen the Lens of a store made by ``semlens run`` (or ``torchrun ... -m semlens_widgets
        run``), with its results loaded: the store's run record names the model, dataset and
        foundation model, which are rebuilt and checked against the results (see
        :func:`semlens_widgets.lens_open.open_lens`). ``recompute=False``: an unfinished run or
        a model / dataset that no longer matches raises :class:`StoreError` instead of computing;
        ``device`` defaults to cuda when available."""
        from semlens_widgets.lens_open import open_lens

        return open_lens(store, device=device, recompute=recompute, progress=progress, batch_size=batch_size,
                         num_workers=num_workers)

    # ====================================================================== attributes
    @property
    def model(self) -> nn.Module:
        return self.pipeline.model

    @property
    def dataset(self) -> Any:
        return self.pipeline.data.dataset

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    @property
    def composite(self) -> Any:
        """The zennit composite of the crops and relevance (None: no LRP rules)."""
        return self.pipeline.composite

    @property
    def lrp_id(self) -> str | None:
        """The id of the LRP set-up (JSON text: rule or composite class and rules, canonizers,
        versions; ``kernels.lrp.setup_id``); None without LRP rules."""
        return self.attribution.keys.lrp

    @property
    def crop_rule(self) -> str:
        """How ``crop="crp"`` turns a heatmap into a box (``kernels.crops.CROP_RULES``)."""
        return self.config.crop_rule

    @property
    def fingerprint(self) -> str:
        """sha256 of everything the results depend on (model, data, layers, settings, fm)."""
        return self.pipeline.keys.lens

    @property
    def dataset_fingerprint(self) -> str:
        return self.pipeline.data.fingerprint

    @property
    def display_transform(self) -> Callable | None:
        return self.pipeline.data.display_transform

    @property
    def m(self) -> int:
        return self.config.m

    @property
    def crop_mode(self) -> str:
        return self.config.crop_mode

    @property
    def pooling(self) -> str:
        return self.config.pooling

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def num_workers(self) -> int:
        return self.config.num_workers

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def checkpoint_every(self) -> int | None:
        return self.config.checkpoint_every

    @property
    def crop_size(self) -> int | None:
        return self.config.crop_size

    @property
    def progress(self) -> bool:
        return self.config.progress

    @property
    def class_names(self) -> list[str] | None:
        return self.pipeline.class_names

    @property
    def layers(self) -> list[str]:
        """The analysed layer names, in the order given."""
        return self.pipeline.layers.names

    @property
    def graph_layers(self) -> list[str]:
        """The layers :meth:`attribution_graph` can include (its default): module outputs that
        CRP conditions on -- not SAE layers, not one call (``"name@i"``) or one element
        (``"name[j]"``) of a module."""
        return self.pipeline.layers.flow_layers()

    @property
    def saes(self) -> dict[str, Any]:
        """``{"name": SAE}`` of the SAE layers ``"name:sae"`` (empty without SAE layers)."""
        return self.pipeline.layers.saes

    @property
    def n_samples(self) -> int:
        """Number of samples in the dataset."""
        return len(self.pipeline.data)

    @property
    def sample_labels(self) -> torch.Tensor | None:
        """LongTensor [N] of dataset labels (None when items carry no integer label)."""
        return self.pipeline.sample_labels

    @property
    def sample_predictions(self) -> torch.Tensor | None:
        """LongTensor [N] of the model's argmax predictions (None when the output is not [B, K])."""
        return self.pipeline.sample_predictions

    @property
    def num_classes(self) -> int | None:
        """Number of model outputs K (from the model's [B, K] output; else len(class_names))."""
        return self.pipeline.num_classes

    # ====================================================================== run and results
    def run(self, *, on_step: Callable[[str, str | None, float], Any] | None = None) -> "Lens":
        """Collect, crop and embed every layer (loads what the store already holds).

        Resumable: interrupted runs continue from the last finished chunk. Returns self.

        on_step: called after each step as ``on_step(step, layer, seconds)`` with ``step`` one
            of ``"collect"`` (layer None: all layers in one pass), ``"crops"`` and ``"embed"``
            (per layer; layer None for ``crop="full"``, which embeds each sample once), and the
            wall time of that step (near zero when it was loaded from the store). For timings
            and progress outside tqdm, e.g. ``semlens demo``'s per-stage summary.
        """
        if on_step is not None and not callable(on_step):
            raise TypeError(f"on_step must be callable (step, layer, seconds), got {on_step!r}")
        self.pipeline.run(on_step)
        self.semantics.forget_embeddings()
        return self

    def num_components(self, layer: str) -> int:
        """Number of components C of ``layer``."""
        return self.pipeline.num_components(layer)

    def topm(self, layer: str) -> TopM:
        """The collection result of ``layer``: indices / values ``[C, m_eff]``."""
        return self.pipeline.topm(layer)

    def examples(self, layer: str, k: int) -> ComponentExamples:
        """Concept examples of component k: dataset ``indices [m_eff]`` and pooled
        ``activations [m_eff]`` (float32, descending). ``m_eff = min(m, N)``."""
        return self.pipeline.examples(layer, k)

    def boxes(self, layer: str) -> torch.Tensor:
        """Crop boxes ``LongTensor [C, m_eff, 4]`` (x0, y0, x1, y1 in model-input pixels,
        x1/y1 exclusive) of every component's concept examples."""
        return self.pipeline.boxes(layer)

    def crops(self, layer: str, k: int, size: int | None = None) -> torch.Tensor:
        """The concept-example crops of component k: ``uint8 [m_eff, 3, S, S]`` with
        S = ``size`` or ``crop_size`` or the foundation model's input side."""
        return self.pipeline.crops(layer, k, size)

    def heatmaps(self, layer: str, k: int) -> torch.Tensor:
        """Heatmaps ``[m_eff, H, W]`` float32 of component k on its concept examples (CRP
        relevance or activation map by crop mode; ones for ``crop="full"``). Runs the model.

        The sums are reported by :meth:`heatmap_sums` (each heatmap's sum over its start
        relevance; the heatmaps of the last call are kept, so it does not run the model again),
        and per layer, over all concept examples, by :meth:`conservation`."""
        return self.pipeline.heatmaps(layer, k)

    def heatmap_sums(self, layer: str, k: int) -> pd.DataFrame:
        """How much relevance each heatmap of :meth:`heatmaps` holds: DataFrame ``sample, start,
        sum, ratio`` (one row per concept example: the summed start relevance at the layer, the
        summed input heatmap, their ratio; 1.0 is perfect conservation). ``crop="crp"`` only:
        other crop modes have no relevance (NaN start and ratio)."""
        return self.pipeline.heatmap_sums(layer, k)

    def conservation(self, layer: str | None = None) -> pd.DataFrame:
        """How well the LRP set-up conserves relevance, per CRP layer: DataFrame ``layer, median,
        q10, q90, min, n`` of the ratio input heatmap sum / start relevance over all concept
        examples of the layer (1.0 is perfect; measured in the crop step, stored with the boxes).
        A layer whose median is below 0.5, or whose 10-90 % range leaves [0.5, 2], is warned
        about when the crops are made or loaded: its relevance values (:meth:`relevance`, the
        audit, attribution graphs) are unreliable. Empty for ``crop="activation"`` / ``"full"``."""
        return self.pipeline.conservation(layer)

    def embeddings(self, layer: str) -> torch.Tensor:
        """Semantic embeddings theta ``[C, d]`` float32 (the mean of the example embeddings;
        not re-normalised)."""
        return self.pipeline.embeddings(layer)

    def example_embeddings(self, layer: str) -> torch.Tensor:
        """Per-example embeddings ``V [C, m_eff, d]`` float32 (L2-normalised rows)."""
        return self.pipeline.example_embeddings(layer)

    def model_inputs(self, indices: Any) -> torch.Tensor:
        """What the model eats for these samples: ``[n, C, H, W]`` float32 on the CPU."""
        return self.pipeline.data.model_inputs(indices)

    def images(self, indices: Any) -> torch.Tensor:
        """Display images ``[n, 3, H, W]`` in [0, 1] (float32, CPU): ``display_transform`` of
        the model inputs (default identity), clamped; gray inputs are repeated to RGB."""
        return self.pipeline.data.images(indices)

    # ====================================================================== semantics
    def set_vocabulary(self, concepts: Sequence[str] | None) -> None:
        """Set the concept vocabulary used for labels shown by ``search``, ``component_info``,
        ``attribution_graph`` and ``compare`` when no explicit concepts are given; ``None`` unsets
        it. Forgets labels from earlier :meth:`label` calls."""
        self.semantics.set_vocabulary(concepts)

    @property
    def vocabulary(self) -> list[str] | None:
        """The vocabulary set by :meth:`set_vocabulary` (or None)."""
        return self.semantics.vocabulary

    def label(self, concepts: Sequence[str], layer: str, threshold: float = 0.0) -> LabelResult:
        """Label every component of ``layer`` with its best concept (the paper's labelling).

        A component gets concept ``c* = argmax_c s(c, theta) - s(null, theta)`` when that score is
        ``> max(0, threshold)``, else ``label=None``. Returns :class:`LabelResult` with ``table``
        (``layer, component, label, score, baseline, best`` -- ``best`` is the best concept even
        when it does not qualify), ``gaps`` (concepts no component carries) and ``groups``
        (concept -> components; ``.counts`` gives NetDissect-style label counts).
        These labels become the layer's current labels (shown by ``search``).
        """
        return self.semantics.label(concepts, layer, threshold)

    def search_scores(self, queries: Any, layer: str) -> torch.Tensor:
        """Scores ``[Q, C]`` of paper eq. 4, ``s(probe_q, theta_k) - s(null, theta_k)``, of the
        queries (str, list of str, image ``[3,H,W]`` / ``[n,3,H,W]`` in [0,1], or probe
        embeddings ``[Q, d]``) against every component of ``layer``. Row q is query q, also
        when Q equals C."""
        return self.semantics.search_scores(queries, layer)

    def search(self, query: Any, layer: str | None = None, k: int = 10) -> pd.DataFrame:
        """Components that best match ``query`` (paper eq. 4, search), over one layer or all layers.

        query: text (str; averaged over prompt templates), a list of texts, an image tensor
        ``[3, H, W]`` / ``[n, 3, H, W]`` in [0, 1] (each image one query) or probe embeddings
        ``[Q, d]``. Returns a DataFrame ``query, rank, layer, component, score, label`` with the
        k best components per query (over all searched layers), rank 0 = best; ``label`` is the
        layer's current label (its last :meth:`label`, else the vocabulary's, else None).
        """
        return self.semantics.search(query, layer, k)

    def clarity(self, layer: str) -> torch.Tensor:
        """Clarity per component ``[C]`` (paper eq. 7, closed form; mean pairwise cosine of the
        concept examples, in [-1/(m-1), 1]; NaN with < 2 examples)."""
        return self.semantics.measure_tensors(layer)["clarity"].clone()

    def polysemanticity(self, layer: str) -> torch.Tensor:
        """Polysemanticity per component ``[C]`` (paper eq. 10, h = 2 clusters by a seeded batched
        2-means): ``1 - cos`` of the two cluster means, in [0, 2]; rank components with it (even
        a monosemantic component scores > 0 because 2-means always splits)."""
        return self.semantics.measure_tensors(layer)["polysemanticity"].clone()

    def redundancy(self, layer: str) -> float:
        """Redundancy of a layer (paper eq. 9): mean over components of the max cosine to
        another component of the layer, in [-1, 1]."""
        return self.semantics.redundancy(layer)

    def similarity(self, layer_a: str, layer_b: str | None = None) -> torch.Tensor:
        """Cosine similarity matrix of the semantic embeddings ``[C_a, C_b]`` (``layer_b=None``:
        the layer with itself). Refuses matrices above 2**30 entries (use ``measures`` for
        nearest neighbours of big layers)."""
        return self.semantics.similarity(layer_a, layer_b)

    def measures(self, layer: str) -> pd.DataFrame:
        """Per-component measures of ``layer``: ``layer, component, clarity, polysemanticity,
        max_similarity, nearest, label`` (max_similarity = cosine to the most similar other
        component, whose mean over the layer is the redundancy, eq. 9)."""
        return self.semantics.measures(layer)

    def measures_summary(self, layers: Any = None) -> pd.DataFrame:
        """Per-layer summary: ``layer, n_components, clarity, polysemanticity, redundancy``
        (clarity and polysemanticity are NaN-aware means over components)."""
        return self.semantics.measures_summary(layers)

    def component_info(self, layer: str, component: int, k: int = 5) -> ComponentInfo:
        """Concept examples, label, measures and top-k relevant classes of one component."""
        return self.semantics.component_info(layer, component, k)

    def audit(self, valid: Sequence[str], spurious: Sequence[str], layer: str, target: Any, *, tau: float = 0.0,
              over: str | None = None, max_samples: int = 256) -> AuditResult:
        """Audit the components of ``layer`` for class ``target`` (paper section 3.4, auditing).

        ``a_valid_k = max_{v in valid} s(v, theta_k) - s(null, theta_k)``, ``a_spur_k`` alike.
        Category (threshold ``tau``): ``valid`` if only a_valid > tau, ``spurious`` if only
        a_spur > tau, ``both`` if both, ``unexpected`` if neither. ``relevance`` is the mean
        abs-normalised CRP relevance for the target (:meth:`relevance`); ``label`` the best of
        valid + spurious concepts when above tau. ``summary``: per category the number of
        components, the summed positive relevance and its share of the total positive relevance.
        ``spurious_samples``: for every ``spurious`` or ``both`` component its concept examples
        (dataset indices): the data to inspect or clean.
        """
        return self.semantics.audit(valid, spurious, layer, target, tau=tau, over=over, max_samples=max_samples)

    def attribution_graph(self, target: Any, layers: Any = None, concepts: Sequence[str] | None = None, *,
                          top_k: int = 5, threshold: float = 0.0, over: str | None = None,
                          max_samples: int = 32) -> AttributionGraph:
        """Attribution graph of class ``target`` through ``layers`` (the paper's attribution
        graphs), a Sankey.

        Components are grouped per layer by their label for ``concepts`` (default: the
        vocabulary; none: no concept nodes); the ``top_k`` most relevant unlabelled components
        of each layer are nodes of their own and the remaining ones one ``other`` node, so no
        relevance is hidden. Edges carry the conditional CRP relevance flowing from a lower-layer
        group into an upper-layer group (the last layer flows into the class node), averaged
        over up to ``max_samples`` samples of the class (each scaled to unit absolute relevance
        at the last layer). See :func:`semlens_widgets.kernels.relevance.build_attribution_graph`.
        ``layers`` default: :attr:`graph_layers` (SAE layers are refused: CRP conditions on module
        outputs, and the latents are a read-out the prediction does not pass through).
        """
        return self.semantics.attribution_graph(target, layers, concepts, top_k=top_k, threshold=threshold,
                                                over=over, max_samples=max_samples)

    def map(self, layer: Any, *, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> pd.DataFrame:
        """2-D UMAP coordinates (cosine metric, seeded) of the semantic embeddings:
        ``layer, component, x, y``. A list of layers gives one joint map of all their components
        (comparable positions). Cached in the store."""
        return self.semantics.map(layer, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)

    # ====================================================================== relevance
    def relevance(self, target: Any, layer: str, *, over: str | None = None, max_samples: int = 256,
                  normalize: str = "abs", per_sample: bool = False) -> pd.DataFrame:
        """CRP relevance of every component of ``layer`` for class ``target`` (the paper's
        relevance of components for a prediction).

        Samples: those whose ``over`` (dataset "label" or model "prediction"; default None: labels
        when the dataset has them, else predictions) equals ``target``, the first
        ``max_samples`` by dataset index. Relevance starts at the target logit and is
        propagated with ``lens.composite`` (without LRP rules: activation x gradient).
        ``normalize="abs"`` (default) divides each sample's vector by its summed absolute
        relevance (shares in [-1, 1], every sample weighs the same); ``"none"`` keeps raw LRP
        values (their sum is the relevance entering the layer).

        Returns ``layer, component, relevance`` (mean over the samples, one row per component)
        or, with ``per_sample=True``, ``sample, layer, component, relevance`` (n x C rows).
        """
        return self.attribution.relevance(target, layer, over=over, max_samples=max_samples, normalize=normalize,
                                          per_sample=per_sample)

    def class_relevance(self, layer: str, *, over: str | None = None, max_per_class: int = 32,
                        normalize: str = "abs") -> torch.Tensor:
        """Mean relevance of every component for every class ``[K, C]``: each sample explained
        for its own class (``over``: label or prediction), at most ``max_per_class`` samples per
        class, all classes in one batched pass over the data (all CRP-capable layers at once);
        cached in the store, and resumable: the pass saves chunks of ``chunk_size * m`` samples,
        so an interrupted call continues where it stopped. Rows of classes without samples are 0."""
        return self.attribution.class_relevance(layer, over=over, max_per_class=max_per_class, normalize=normalize)

    def top_classes(self, layer: str, k: int = 3, *, over: str | None = None, max_per_class: int = 32) -> pd.DataFrame:
        """For every component the k output classes it is most relevant for (the paper's
        "Indian person" neuron that matters for "butcher shop", "scale", "rickshaw").

        Returns ``layer, component, rank, class, name, relevance`` (C x k rows; relevance is the
        mean abs-normalised CRP relevance over the class's samples, see :meth:`class_relevance`).
        """
        return self.attribution.top_classes(layer, k, over=over, max_per_class=max_per_class)

    # ====================================================================== descriptions and faithfulness
    def describe(self, layer: str, k: int, generator: Callable, proposer: Any = None, rounds: int = 5,
                 n_images: int = 16, *, seed: int = 0, control: Any = 256,
                 model_transform: Callable | None = None, concepts: Sequence[str] | None = None,
                 **loop: Any) -> Description:
        """An open-vocabulary description of component k (the LINE loop, Zaigrajew et al. 2025).

        Each round the ``proposer`` reads the history (``round, concept, score, auc, note``) and
        proposes concepts; ``generator(concept, n_images, seed)`` draws each (images in [0, 1]
        of any size, resized to the model's input and passed through ``model_transform``); the
        component's pooled activation on them is scored against ``control`` dataset samples:
        ``auc`` (the label-faithfulness AUC) and ``score`` (CoSy's mean activation difference).

        proposer: None: :class:`~semlens_widgets.kernels.describe.OfflineProposer` over the
            component's label candidates (``concepts``, default the vocabulary, ranked by paper
            eq. 4's score for the component); a proposer with ``with_candidates`` (the built-in
            ones, e.g. ``world.proposer`` or an ``LLMProposer``) gets those candidates; any
            other callable ``history -> list[str]`` is used as it is.
        control: the number of control samples (a fixed seeded subset of the dataset) or a
            list of dataset indices.
        model_transform: images in [0, 1] -> model inputs; default: identity, or ImageNet
            normalisation for ``display_transform=imagenet_unnormalize`` (any other display
            transform needs it given).
        loop: further settings of :func:`~semlens_widgets.kernels.describe.describe_component`
            (``top``, ``max_per_round``, ``parsimony``, ``high_auc``, ``max_similarity``).

        Returns a :class:`~semlens_widgets.results.Description` (``history``, ``best``, ``auc``,
        ``candidates``, ``polysemantic``, ``senses``, ``examples``: a few generated images of
        each candidate). Its AUC was selected in the loop (optimistic): :meth:`faithfulness`
        with other controls or another seed re-measures it. The description is stored
        (:meth:`stored_description`); a generator that returns anything but a float Tensor
        ``[n, 3, H, W]`` in [0, 1] raises on its first call, naming what it returned.
        """
        return self.describer.describe(layer, k, generator, proposer, rounds, n_images, seed=seed, control=control,
                                       model_transform=model_transform, concepts=concepts, **loop)

    def faithfulness(self, layer: str, generator: Callable, labels: Any = None, n_images: int = 32, *,
                     seed: int = 0, control: Any = 256, model_transform: Callable | None = None) -> pd.DataFrame:
        """Label faithfulness of every component of ``layer`` (the SemanticLens paper's label
        evaluation, CoSy's AUC): the AUC with which the component's pooled activation separates
        ``n_images`` generated images of its label (``generator(label, n_images, seed)``) from
        ``control`` dataset samples (ties count 1/2; 0.5 = no preference, 1 = always higher).

        labels: one str or None per component, a dict component -> label, or a
            ``LabelResult``; default: the layer's current labels (its last :meth:`label`, else
            the vocabulary's). Each distinct label is drawn once, shared by its components.
        control, model_transform: as in :meth:`describe`.

        Returns a DataFrame ``layer, component, label, auc, mad, note`` (``auc`` NaN for
        unlabelled components and labels the generator cannot draw, ``note`` then says why;
        ``mad`` is CoSy's mean activation difference) with the layer summary in
        ``.attrs["summary"]`` (``mean_auc``, ``median_auc``, ``share_auc_0.9``, counts). Stored,
        resumable by chunks of labels, and reused for the same labels, generator, images,
        seed and controls (see :mod:`semlens_widgets.lens_describe` for how a generator is
        identified); :meth:`stored_faithfulness` reads the last table back.
        """
        return self.describer.faithfulness(layer, generator, labels, n_images, seed=seed, control=control,
                                           model_transform=model_transform)

    def stored_description(self, layer: str, k: int) -> Description | None:
        """The last :meth:`describe` result of component k of ``layer`` on this Lens (from the
        store; None if it was never described). Nothing is computed."""
        return self.describer.stored_description(layer, k)

    def stored_faithfulness(self, layer: str) -> pd.DataFrame | None:
        """The last :meth:`faithfulness` table of ``layer`` on this Lens (from the store; None
        if none was computed). Nothing is computed."""
        return self.describer.stored_faithfulness(layer)

    # ====================================================================== views and export
    def explorer(self, layer: str | None = None, concepts: Sequence[str] | None = None,
                 target: int | str | None = None, valid: Sequence[str] = (),
                 spurious: Sequence[str] = (), **kwargs: Any):
        """The composed notebook widget: search box, concept gallery, semantic map, attribution
        Sankey and audit, with linked selection (selecting a component selects it everywhere).

        ``layer`` defaults to the last layer, ``concepts`` to :attr:`vocabulary`; ``target``,
        ``valid`` and ``spurious`` seed the Sankey and the audit. Widgets are imported here,
        lazily: nothing in the analysis path depends on them.
        """
        from semlens_widgets.widgets import Explorer  # lazy: the Lens never needs UI code

        return Explorer(self, layer, concepts=concepts, target=target, valid=valid,
                        spurious=spurious, **kwargs)

    def report(self, path: str | os.PathLike, **kwargs: Any):
        """Write a standalone HTML report (map, search results, audit, measures) that opens
        with no kernel and no network; see :func:`semlens_widgets.report.write_report`."""
        from semlens_widgets.report import write_report

        return write_report(self, path, **kwargs)

    def __repr__(self) -> str:
        state = "run" if self.pipeline.ran else "not run"
        return (
            f"Lens({type(self.model).__name__}, layers={self.layers}, m={self.m}, crop={self.crop_mode!r}, "
            f"pooling={self.pooling!r}, N={self.n_samples}, fm={self.fm.identity.get('name')!r}, {state})"
        )
