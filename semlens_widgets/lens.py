"""The Lens: the one object a user holds (DESIGN "Public API").

``Lens(model, dataset, fm, layers, ...)`` validates its inputs early, then :meth:`Lens.run`
does SemanticLens steps 1 and 2 for every requested layer:

1. collection (DESIGN eq. 1, selection): one pass over the data for all layers at once
   (:func:`~semlens_widgets.kernels.collect.collect_topm`) -> per component the top-m sample
   indices and pooled activations, plus per-sample labels and predictions;
2. crops (DESIGN eq. 1, crop): per chunk of components, the crop boxes ``[C, m, 4]`` of the
   concept examples (CRP heatmaps, upsampled activation maps or the full image) -- boxes, not
   pixels: crops are re-made on demand from the dataset;
3. embedding (DESIGN eq. 2): per chunk, the crops of the display images resized to the
   foundation model's input size and embedded -> ``V [C, m, d]`` and ``theta [C, d]``.

Everything is written to a :class:`~semlens_widgets.store.Store` under fingerprints of its
inputs. Keys (``<layer>`` is the layer name as given)::

    samples                 labels [N], predictions [N] (when known); meta: n_samples, num_classes
    collect/<layer>         indices [C, m_eff] int64, values [C, m_eff] float32
    boxes/<layer>           boxes [C, m_eff, 4] int64 (x0, y0, x1, y1; x1/y1 exclusive)
    embed/<layer>           V [C, m_eff, d] float16, theta [C, d] float32
    boxes/<layer>/chunk<a>-<b>, embed/<layer>/chunk<a>-<b>, fullemb/chunk<a>-<b>
                            partial results of a run in progress (deleted once assembled)

Steps 2 and 3 save one chunk (``chunk_size`` components) at a time, so an interrupted run
(Ctrl-C, killed process) resumes from the last finished chunk; a rerun with identical inputs
loads everything without calling the model. Any change of the model's parameters/buffers, the
dataset (length + content sample), m, pooling, crop mode, the foundation model or the display
transform changes the fingerprints, and the affected results are recomputed, never reused.

Fingerprints (all sha256, see :func:`~semlens_widgets.store.fingerprint`):

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

import numbers
import os
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import nn

from semlens_widgets.results import ComponentExamples, TopM
from semlens_widgets.store import (
    Store,
    StoreError,
    fingerprint,
    module_fingerprint,
    module_signature,
    tensor_digest,
)

# the semantic methods (search, label, audit, ...) live in a mixin of their own
from semlens_widgets.lens_semantics import LensSemanticsMixin

__all__ = ["Lens", "CROP_MODES", "imagenet_unnormalize", "IMAGENET_MEAN", "IMAGENET_STD", "StoreError"]

CROP_MODES = ("crp", "activation", "full")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REL_THRESHOLD = 0.01  # crop box: pixels with relevance >= 1% of the max (DESIGN eq. 1)
_PIPELINE_VERSION = 1  # bump when a step's algorithm changes: invalidates stored results


def imagenet_unnormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo torchvision's ImageNet normalisation: ``x * std + mean``, clamped to [0, 1].

    x: ``[n, 3, H, W]`` or ``[3, H, W]`` normalised model inputs. Use it as
    ``Lens(..., display_transform=imagenet_unnormalize)`` for datasets that apply
    ``transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"imagenet_unnormalize expects [n, 3, H, W] or [3, H, W], got {shape}")
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(shape)
    return (x * std + mean).clamp(0.0, 1.0)


def _callable_id(fn: Callable | None) -> str:
    if fn is None:
        return "identity"
    qual = getattr(fn, "__qualname__", None)
    if qual is not None and getattr(fn, "__module__", None) is not None:
        return f"{fn.__module__}.{qual}"
    return f"{type(fn).__module__}.{type(fn).__qualname__}:{fn!r}"


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class Lens(LensSemanticsMixin):
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
        m: concept examples per component (>= 1; the paper's default is 30).
        crop: ``"crp"`` (CRP relevance crops, models with LRP rules; for max poolings the
            relevance starts at the neuron where the component peaks, so a crop shows what
            made it fire, see :func:`~semlens_widgets.kernels.crops.crp_heatmaps`), ``"activation"``
            (upsampled activation map, e.g. ViTs) or ``"full"`` (whole image).
        store: a directory (str / PathLike), a :class:`Store`, or None (in memory).
        device: where the model runs; default: where its parameters are (cpu if none).
        pooling: ``"max"``, ``"mean"``, ``"absmax"``, ``"absmean"`` or ``"cls"`` (tokens).
        batch_size, num_workers: DataLoader settings of the collection pass; batch_size is also
            the batch of the crop and embedding steps.
        class_names: optional names of the output classes.
        display_transform: ``[n, C, H, W]`` model inputs -> ``[n, 3, H, W]`` images in [0, 1]
            (same H, W); default: identity + clamp. Use :func:`imagenet_unnormalize` for
            ImageNet-normalised datasets.
        crop_size: default side of :meth:`crops` (default: the foundation model's input size).
        progress: show tqdm.auto progress bars.
        overwrite: wipe the store (all entries) before use.
        chunk_size: components per resumable chunk of the crop and embedding steps.

    Attributes used by the semantic methods and widgets: ``model, dataset, fm, device, store,
    m, crop_mode, pooling, layers, fingerprint, class_names, num_classes, sample_labels,
    sample_predictions, composite, n_samples``.
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
        batch_size: int = 64,
        num_workers: int = 0,
        class_names: Sequence[str] | None = None,
        display_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        crop_size: int | None = None,
        progress: bool = True,
        overwrite: bool = False,
        chunk_size: int = 64,
    ):
        from semlens_widgets.kernels.hooks import POOLINGS

        # ---- cheap argument checks first -------------------------------------------------
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        for attr in ("encode_images", "encode_concepts", "identity", "image_size", "dim"):
            if not hasattr(fm, attr):
                raise TypeError(
                    f"fm must be a semlens_widgets.FoundationModel (e.g. FoundationModel.open_clip"
                    f"('ViT-B-32')), got {type(fm).__name__} without {attr!r}"
                )
        if crop not in CROP_MODES:
            raise ValueError(f"unknown crop mode {crop!r}; accepted: {list(CROP_MODES)}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; accepted: {list(POOLINGS)}")
        if not _is_int(m) or m < 1:
            raise ValueError(f"m must be an int >= 1 (concept examples per component), got {m!r}")
        for name, v, lo in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0), ("chunk_size", chunk_size, 1)):
            if not _is_int(v) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        if crop_size is not None and (not _is_int(crop_size) or crop_size < 1):
            raise ValueError(f"crop_size must be None or an int >= 1, got {crop_size!r}")
        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
                raise TypeError(f"class_names must be a list of str or None, got {class_names!r:.100}")
            class_names = list(class_names)
        if display_transform is not None and not callable(display_transform):
            raise TypeError(f"display_transform must be callable or None, got {type(display_transform).__name__}")
        self._layers = self._check_layers(model, layers)

        # ---- dataset -----------------------------------------------------------------------
        self._check_dataset(dataset)
        self.dataset = dataset
        x0 = self._item_image(dataset[0], 0)
        self._input_shape = tuple(x0.shape)  # (C, H, W) of the model inputs

        # ---- device, model -----------------------------------------------------------------
        if device is None:
            p = next(iter(model.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.fm = fm
        self.m = int(m)
        self.crop_mode = crop
        self.pooling = pooling
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.class_names = class_names
        self.display_transform = display_transform
        self.crop_size = crop_size
        self.progress = bool(progress)
        self.chunk_size = int(chunk_size)

        from semlens_widgets.kernels.lrp import make_composite, supports_lrp, unsupported_modules

        lrp_ok = bool(supports_lrp(self.model))
        if crop == "crp" and not lrp_ok:
            raise ValueError(
                f"crop='crp' needs LRP rules, which {type(model).__name__} does not support "
                f"(no rule for modules {unsupported_modules(self.model)[:5]}; e.g. ViTs or unknown "
                f"ops); use crop='activation' (upsampled activation maps) or crop='full'"
            )
        self.composite = make_composite(self.model) if lrp_ok else None

        self._check_display(x0)

        # ---- fingerprints and store ----------------------------------------------------------
        self.model_fingerprint = module_fingerprint(self.model)
        self.model_signature = module_signature(self.model)
        self.dataset_fingerprint = self._dataset_fingerprint(dataset)
        self._display_id = _callable_id(display_transform)
        self.fingerprint = fingerprint(
            "lens", _PIPELINE_VERSION, self.model_fingerprint, self.dataset_fingerprint, self._layers,
            self.m, self.pooling, self.crop_mode, fm.identity, self._display_id,
        )
        if isinstance(store, Store):
            self.store = store
        elif store is None or isinstance(store, (str, os.PathLike)):
            self.store = Store(store)
        else:
            raise TypeError(f"store must be a directory path, a Store or None, got {type(store).__name__}")
        self._claim_store(bool(overwrite))

        # ---- results (filled by run) -----------------------------------------------------
        self._ran = False
        self._topm: dict[str, TopM] = {}
        self._boxes: dict[str, torch.Tensor] = {}
        self._V: dict[str, torch.Tensor] = {}
        self._theta: dict[str, torch.Tensor] = {}
        self._samples: dict[str, Any] = {}

    # ====================================================================== validation
    @staticmethod
    def _check_layers(model: nn.Module, layers: Any) -> list[str]:
        from semlens_widgets.kernels.hooks import resolve_layers

        return list(resolve_layers(model, layers))

    @staticmethod
    def _check_dataset(dataset: Any) -> None:
        from torch.utils.data import DataLoader, IterableDataset

        if isinstance(dataset, DataLoader):
            raise TypeError(
                "Lens needs the dataset itself (map-style, indexable), not a DataLoader: pass "
                "loader.dataset and set batch_size= / num_workers= on the Lens"
            )
        if isinstance(dataset, IterableDataset) or not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"dataset must be map-style (with __len__ and __getitem__), got {type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError("the dataset is empty (len 0); the Lens needs at least one sample")

    @staticmethod
    def _item_image(item: Any, index: int) -> torch.Tensor:
        from semlens_widgets.kernels.data import split_batch

        x, _ = split_batch(item, what=f"dataset item {index}")
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"dataset item {index} has no image tensor (its image is a {type(x).__name__}); "
                "items must be a Tensor [C, H, W], a tuple (x, y, ...) or a dict with 'image'"
            )
        if x.dim() != 3:
            raise ValueError(
                f"dataset item {index} has an image tensor of shape {tuple(x.shape)} (rank {x.dim()}); "
                "expected rank 3, [C, H, W]"
            )
        return x

    def _check_display(self, x0: torch.Tensor) -> None:
        c, h, w = self._input_shape
        if self.display_transform is None:
            if c not in (1, 3):
                raise ValueError(
                    f"model inputs have {c} channels; pass display_transform= mapping them to "
                    f"RGB images [n, 3, H, W] in [0, 1]"
                )
            lo, hi = float(x0.min()), float(x0.max())
            if lo < -0.02 or hi > 1.02:
                warnings.warn(
                    f"dataset images have values in [{lo:.3g}, {hi:.3g}], not [0, 1]: they look "
                    f"normalised. Crops would be clamped; pass display_transform="
                    f"semlens_widgets.lens.imagenet_unnormalize (or your own inverse).",
                    stacklevel=3,
                )
            return
        out = self.display_transform(x0[None].float())
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != 1 or out.shape[1] != 3 \
                or tuple(out.shape[2:]) != (h, w):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"display_transform must map [n, {c}, {h}, {w}] model inputs to [n, 3, {h}, {w}] "
                f"images in [0, 1] (same size: crop boxes are in input pixels); got {shape}"
            )

    def _dataset_fingerprint(self, dataset: Any) -> str:
        from semlens_widgets.kernels.data import split_batch

        n = len(dataset)
        picks = sorted(set(torch.linspace(0, n - 1, min(n, 8)).round().long().tolist()))
        parts: list[Any] = [type(dataset).__module__ + "." + type(dataset).__qualname__, n]
        for i in picks:
            x, y = split_batch(dataset[i], what=f"dataset item {i}")
            if isinstance(y, torch.Tensor):
                y = tensor_digest(y)
            elif not isinstance(y, (int, float, str, type(None))):
                y = repr(y)
            parts.append([i, tensor_digest(x) if isinstance(x, torch.Tensor) else repr(x), y])
        return fingerprint(*parts)

    def _claim_store(self, overwrite: bool) -> None:
        info = self.store.get_info("lens")
        current = {
            "model_class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "model_signature": self.model_signature,
            "model_fingerprint": self.model_fingerprint,
            "dataset_fingerprint": self.dataset_fingerprint,
        }
        if overwrite:
            self.store.clear()
        elif info is not None and info.get("model_signature") != self.model_signature:
            where = "the in-memory store" if self.store.root is None else f"store {str(self.store.root)!r}"
            raise StoreError(
                f"{where} holds results of a different model ({info.get('model_class')}, other "
                f"architecture) than this {current['model_class']}; pass another directory as "
                f"store=..., or overwrite=True to delete its contents"
            )
        if info != current:
            self.store.set_info("lens", current)

    # ====================================================================== fingerprints
    def _fp_collect(self, layer: str) -> str:
        return fingerprint("collect", _PIPELINE_VERSION, self.model_fingerprint, self.dataset_fingerprint,
                           layer, self.m, self.pooling)

    def _fp_samples(self) -> str:
        return fingerprint("samples", _PIPELINE_VERSION, self.model_fingerprint, self.dataset_fingerprint)

    def _fp_boxes(self, layer: str) -> str:
        return fingerprint("boxes", self._fp_collect(layer), self.crop_mode, REL_THRESHOLD,
                           "epsilon_plus_flat" if self.crop_mode == "crp" else None,
                           # CRP started at the peak neuron for max poolings (crops.crp_heatmaps)
                           ("peak" if self.pooling in ("max", "absmax") else "map") if self.crop_mode == "crp" else None,
                           self.pooling if self.crop_mode == "activation" else None)

    def _fp_embed(self, layer: str) -> str:
        return fingerprint("embed", self._fp_boxes(layer), self.fm.identity, self._display_id, self._crop_side)

    @property
    def _crop_side(self) -> int:
        s = self.fm.image_size
        return int(s) if isinstance(s, int) else int(max(s))

    # ====================================================================== run
    def run(self, *, on_step: Callable[[str, str | None, float], Any] | None = None) -> "Lens":
        """Collect, crop and embed every layer (loads what the store already holds).

        Resumable: interrupted runs continue from the last finished chunk. Returns self.

        on_step: called after each step as ``on_step(step, layer, seconds)`` with ``step`` one
            of ``"collect"`` (layer None: all layers in one pass), ``"crops"`` and ``"embed"``
            (per layer; layer None for ``crop="full"``, which embeds each sample once), and the
            wall time of that step (near zero when it was loaded from the store). For timings
            and progress outside tqdm, e.g. ``semlens demo``'s per-stage summary.
        """
        import time

        from tqdm.auto import tqdm

        if on_step is not None and not callable(on_step):
            raise TypeError(f"on_step must be callable (step, layer, seconds), got {on_step!r}")

        def step(name: str, layer: str | None, fn, *args) -> None:
            t = time.perf_counter()
            fn(*args)
            if on_step is not None:
                on_step(name, layer, time.perf_counter() - t)

        step("collect", None, self._run_collect)
        for layer in tqdm(self._layers, desc="crops", disable=not self.progress or len(self._layers) < 2, unit="layer"):
            step("crops", layer, self._run_boxes, layer)
        if self.crop_mode == "full":
            step("embed", None, self._run_embed_full)
        else:
            for layer in tqdm(self._layers, desc="embeddings", disable=not self.progress or len(self._layers) < 2, unit="layer"):
                step("embed", layer, self._run_embed, layer)
        self._ran = True
        return self

    # ---------------------------------------------------------------- step 1: collection
    def _run_collect(self) -> None:
        fp_s = self._fp_samples()
        samples = self.store.load("samples", fp_s)
        missing = []
        for layer in self._layers:
            got = self.store.load(f"collect/{layer}", self._fp_collect(layer))
            if got is None:
                missing.append(layer)
            else:
                meta = self.store.meta(f"collect/{layer}")["meta"]
                self._topm[layer] = TopM(got["indices"], got["values"], int(meta["m"]), int(meta["n_seen"]))
        if missing or samples is None:
            from semlens_widgets.kernels.collect import collect_topm

            res = collect_topm(
                self.model, self.dataset, missing or self._layers[:1], self.m, pooling=self.pooling,
                batch_size=self.batch_size, num_workers=self.num_workers, device=self.device,
                progress=self.progress,
            )
            for layer, topm in res.topm.items():
                self.store.save(
                    f"collect/{layer}",
                    {"indices": topm.indices.long(), "values": topm.values.float()},
                    self._fp_collect(layer),
                    meta={"m": topm.m, "n_seen": topm.n_seen, "shape": list(res.shapes.get(layer, ())),
                          "pooling": self.pooling},
                )
                self._topm[layer] = TopM(topm.indices.long().cpu(), topm.values.float().cpu(), topm.m, topm.n_seen)
            tensors = {"n_samples": torch.tensor([res.n_samples])}
            if res.labels is not None:
                tensors["labels"] = res.labels.long().cpu()
            if res.predictions is not None:
                tensors["predictions"] = res.predictions.long().cpu()
            self.store.save("samples", tensors, fp_s, meta={"n_samples": res.n_samples, "num_classes": res.num_classes})
            samples = tensors
        meta = self.store.meta("samples")["meta"]
        self._samples = {
            "labels": samples.get("labels"),
            "predictions": samples.get("predictions"),
            "n_samples": int(meta["n_samples"]),
            "num_classes": meta.get("num_classes"),
        }
        nc = self._samples["num_classes"]
        if self.class_names is not None and nc is not None and len(self.class_names) != nc:
            warnings.warn(
                f"class_names has {len(self.class_names)} entries but the model outputs {nc} classes",
                stacklevel=3,
            )

    # ---------------------------------------------------------------- chunking helpers
    def _sorted_batches(self, flat_idx: torch.Tensor, batch: int):
        """Yield ``(pos, uniq, inv)`` over batches of flat positions sorted by sample index, so
        that each batch loads each distinct sample once: ``flat_idx[pos] == uniq[inv]``."""
        order = torch.argsort(flat_idx, stable=True)
        for s in range(0, order.numel(), batch):
            pos = order[s : s + batch]
            uniq, inv = torch.unique(flat_idx[pos], return_inverse=True)
            yield pos, uniq, inv

    # ---------------------------------------------------------------- step 2: crops (boxes)
    def _run_boxes(self, layer: str) -> None:
        fp = self._fp_boxes(layer)
        got = self.store.load(f"boxes/{layer}", fp)
        if got is None:
            idx = self._topm[layer].indices  # [C, m_eff]
            C, me = idx.shape
            if self.crop_mode == "full":
                _, h, w = self._input_shape
                boxes = torch.tensor([0, 0, w, h], dtype=torch.long).expand(C, me, 4).clone()
            else:
                parts = self.store.chunked(
                    f"boxes/{layer}", fp, C, self.chunk_size,
                    lambda a, b: {"boxes": self._compute_boxes(layer, idx[a:b], torch.arange(a, b))},
                    desc=f"crops {layer}", progress=self.progress,
                )
                boxes = torch.cat([p["boxes"] for p in parts])
            self.store.save(f"boxes/{layer}", {"boxes": boxes}, fp, meta={"crop_mode": self.crop_mode})
            self.store.drop_chunks(f"boxes/{layer}")
            got = {"boxes": boxes}
        self._boxes[layer] = got["boxes"].long()

    def _heatmaps(self, layer: str, x: torch.Tensor, comps: torch.Tensor) -> torch.Tensor:
        """``x [n, C, H, W]`` model inputs (on device), ``comps [n]`` -> heatmaps ``[n, H, W]``."""
        from semlens_widgets.kernels.crops import activation_heatmaps, crp_heatmaps

        if self.crop_mode == "crp":
            return crp_heatmaps(self.model, x, layer, comps, self.composite, pooling=self.pooling)
        return activation_heatmaps(self.model, x, layer, comps, self.pooling)

    def _compute_boxes(self, layer: str, idx: torch.Tensor, comps: torch.Tensor) -> torch.Tensor:
        """Boxes of the concept examples ``idx [c, me]`` of components ``comps [c]`` -> ``[c, me, 4]``."""
        from semlens_widgets.kernels.crops import boxes_from_heatmaps

        c, me = idx.shape
        flat_idx = idx.reshape(-1)
        flat_comp = comps[:, None].expand(c, me).reshape(-1)
        out = torch.empty(flat_idx.numel(), 4, dtype=torch.long)
        for pos, uniq, inv in self._sorted_batches(flat_idx, self.batch_size):
            x = self.model_inputs(uniq).to(self.device)[inv.to(self.device)]
            heat = self._heatmaps(layer, x, flat_comp[pos])
            out[pos] = boxes_from_heatmaps(heat, rel_threshold=REL_THRESHOLD).long().cpu()
        return out.view(c, me, 4)

    # ---------------------------------------------------------------- step 3: embeddings
    def _embed_crops(self, idx: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Embed the crops ``boxes [n, 4]`` of samples ``idx [n]`` -> ``[n, d]`` float16.

        Each distinct sample of a batch is loaded once; crops are resized to the foundation
        model's input side on its device and encoded in one call per batch."""
        from semlens_widgets.kernels.crops import crop_resize

        out = torch.empty(idx.numel(), int(self.fm.dim), dtype=torch.float16)
        side = self._crop_side
        dev = getattr(self.fm, "device", torch.device("cpu"))
        bs = int(getattr(self.fm, "batch_size", self.batch_size))
        for pos, uniq, inv in self._sorted_batches(idx, bs):
            imgs = self.images(uniq).to(dev)
            crops = crop_resize(imgs[inv.to(dev)], boxes[pos].to(dev), side)
            out[pos] = self.fm.encode_images(crops).to(torch.float16)
        return out

    def _finish_embed(self, layer: str, V: torch.Tensor) -> None:
        """Save ``V [C, m_eff, d]`` (float16) and theta (DESIGN eq. 2) of ``layer``."""
        from semlens_widgets.kernels.embed import semantic_embedding

        theta = semantic_embedding(V.float(), None).float()
        self.store.save(f"embed/{layer}", {"V": V.to(torch.float16), "theta": theta}, self._fp_embed(layer),
                        meta={"fm": self.fm.identity.get("name")})
        self._V[layer], self._theta[layer] = V.to(torch.float16), theta

    def _load_embed(self, layer: str) -> bool:
        got = self.store.load(f"embed/{layer}", self._fp_embed(layer))
        if got is None:
            return False
        self._V[layer], self._theta[layer] = got["V"].to(torch.float16), got["theta"].float()
        return True

    def _run_embed(self, layer: str) -> None:
        if self._load_embed(layer):
            return
        idx, boxes = self._topm[layer].indices, self._boxes[layer]
        C, me = idx.shape

        def compute(a: int, b: int) -> dict:
            v = self._embed_crops(idx[a:b].reshape(-1), boxes[a:b].reshape(-1, 4))
            return {"V": v.view(b - a, me, -1)}

        parts = self.store.chunked(f"embed/{layer}", self._fp_embed(layer), C, self.chunk_size, compute,
                              desc=f"embed {layer}", progress=self.progress)
        self._finish_embed(layer, torch.cat([p["V"] for p in parts]))
        self.store.drop_chunks(f"embed/{layer}")

    def _run_embed_full(self) -> None:
        """``crop="full"``: embed each distinct sample of all layers once, then gather."""
        todo = [layer for layer in self._layers if not self._load_embed(layer)]
        if not todo:
            return
        uniq = torch.unique(torch.cat([self._topm[layer].indices.reshape(-1) for layer in todo]))  # sorted
        _, h, w = self._input_shape
        full = torch.tensor([0, 0, w, h], dtype=torch.long)
        fp = fingerprint("fullemb", _PIPELINE_VERSION, self.dataset_fingerprint, self.fm.identity,
                         self._display_id, self._crop_side, tensor_digest(uniq))

        def compute(a: int, b: int) -> dict:
            part = uniq[a:b]
            return {"E": self._embed_crops(part, full.expand(part.numel(), 4))}

        size = self.chunk_size * max(self.m, 1)
        parts = self.store.chunked("fullemb", fp, uniq.numel(), size, compute, desc="embed samples",
                                  progress=self.progress)
        E = torch.cat([p["E"] for p in parts])  # [U, d] float16
        for layer in todo:
            idx = self._topm[layer].indices
            V = E[torch.searchsorted(uniq, idx.reshape(-1))].view(*idx.shape, -1)
            self._finish_embed(layer, V)
        self.store.drop_chunks("fullemb")

    # ====================================================================== accessors
    def _require_run(self) -> None:
        if not self._ran:
            raise RuntimeError("the Lens has no results yet: call lens.run() first (it loads stored results)")

    def _check_layer(self, layer: Any) -> str:
        if layer not in self._layers:
            raise ValueError(f"unknown layer {layer!r}; this Lens has layers {self._layers}")
        return layer

    def _check_component(self, layer: str, k: Any) -> int:
        if isinstance(k, torch.Tensor) and k.numel() == 1 and not k.is_floating_point():
            k = int(k)
        n = self.num_components(layer)
        if not _is_int(k):
            raise TypeError(f"component index must be an int, got {k!r} ({type(k).__name__})")
        if not 0 <= int(k) < n:
            raise IndexError(f"component {k} out of range for layer {layer!r}: it has {n} components (0..{n - 1})")
        return int(k)

    @property
    def layers(self) -> list[str]:
        """The analysed layer names, in the order given."""
        return list(self._layers)

    @property
    def n_samples(self) -> int:
        """Number of samples in the dataset."""
        return len(self.dataset)

    @property
    def sample_labels(self) -> torch.Tensor | None:
        """LongTensor [N] of dataset labels (None when items carry no integer label)."""
        self._require_run()
        return self._samples["labels"]

    @property
    def sample_predictions(self) -> torch.Tensor | None:
        """LongTensor [N] of the model's argmax predictions (None when the output is not [B, K])."""
        self._require_run()
        return self._samples["predictions"]

    @property
    def num_classes(self) -> int | None:
        """Number of model outputs K (from the model's [B, K] output; else len(class_names))."""
        if self._ran and self._samples.get("num_classes") is not None:
            return int(self._samples["num_classes"])
        if self.class_names is not None:
            return len(self.class_names)
        self._require_run()
        return None

    def num_components(self, layer: str) -> int:
        """Number of components C of ``layer``."""
        self._require_run()
        return self._topm[self._check_layer(layer)].num_components

    def topm(self, layer: str) -> TopM:
        """The collection result of ``layer``: indices / values ``[C, m_eff]``."""
        self._require_run()
        return self._topm[self._check_layer(layer)]

    def examples(self, layer: str, k: int) -> ComponentExamples:
        """Concept examples of component k: dataset ``indices [m_eff]`` and pooled
        ``activations [m_eff]`` (float32, descending). ``m_eff = min(m, N)``."""
        self._require_run()
        layer = self._check_layer(layer)
        k = self._check_component(layer, k)
        t = self._topm[layer]
        return ComponentExamples(layer, k, t.indices[k].clone(), t.values[k].clone())

    def boxes(self, layer: str) -> torch.Tensor:
        """Crop boxes ``LongTensor [C, m_eff, 4]`` (x0, y0, x1, y1 in model-input pixels,
        x1/y1 exclusive) of every component's concept examples."""
        self._require_run()
        return self._boxes[self._check_layer(layer)].clone()

    def crops(self, layer: str, k: int, size: int | None = None) -> torch.Tensor:
        """The concept-example crops of component k: ``uint8 [m_eff, 3, S, S]`` with
        S = ``size`` or ``crop_size`` or the foundation model's input side."""
        from semlens_widgets.kernels.crops import crop_resize

        ex = self.examples(layer, k)
        if size is not None and (not _is_int(size) or size < 1):
            raise ValueError(f"size must be None or an int >= 1, got {size!r}")
        side = int(size or self.crop_size or self._crop_side)
        imgs = self.images(ex.indices)
        crops = crop_resize(imgs, self._boxes[layer][ex.component], side)
        return (crops.clamp(0, 1) * 255).round().to(torch.uint8).cpu()

    def heatmaps(self, layer: str, k: int) -> torch.Tensor:
        """Heatmaps ``[m_eff, H, W]`` float32 of component k on its concept examples (CRP
        relevance or activation map by crop mode; ones for ``crop="full"``). Runs the model."""
        ex = self.examples(layer, k)
        _, h, w = self._input_shape
        if self.crop_mode == "full":
            return torch.ones(len(ex), h, w)
        x = self.model_inputs(ex.indices).to(self.device)
        comps = torch.full((len(ex),), ex.component, dtype=torch.long)
        return self._heatmaps(layer, x, comps).detach().float().cpu()

    def embeddings(self, layer: str) -> torch.Tensor:
        """Semantic embeddings theta ``[C, d]`` float32 (DESIGN eq. 2: mean of the example
        embeddings; not re-normalised)."""
        self._require_run()
        return self._theta[self._check_layer(layer)].clone()

    def example_embeddings(self, layer: str) -> torch.Tensor:
        """Per-example embeddings ``V [C, m_eff, d]`` float32 (L2-normalised rows)."""
        self._require_run()
        return self._V[self._check_layer(layer)].float()

    # ---------------------------------------------------------------- data access
    def _check_indices(self, indices: Any) -> torch.Tensor:
        if isinstance(indices, numbers.Integral) and not isinstance(indices, bool):
            indices = [int(indices)]
        try:
            idx = torch.as_tensor(indices)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"indices must be ints (list / LongTensor), got {type(indices).__name__}") from None
        if idx.numel() and (idx.is_floating_point() or idx.dtype == torch.bool):
            raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
        idx = idx.reshape(-1).long().cpu()
        n = len(self.dataset)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise IndexError(f"sample index {int(bad)} out of range: the dataset has {n} samples (0..{n - 1})")
        return idx

    def model_inputs(self, indices: Any) -> torch.Tensor:
        """What the model eats for these samples: ``[n, C, H, W]`` float32 on the CPU."""
        idx = self._check_indices(indices)
        c, h, w = self._input_shape
        if idx.numel() == 0:
            return torch.zeros(0, c, h, w)
        xs = [self._item_image(self.dataset[i], i) for i in idx.tolist()]
        bad = next((i for i, x in zip(idx.tolist(), xs) if tuple(x.shape) != self._input_shape), None)
        if bad is not None:
            raise ValueError(
                f"dataset item {bad} has shape {tuple(xs[idx.tolist().index(bad)].shape)} but item 0 has "
                f"{self._input_shape}; all images must share one size"
            )
        return torch.stack(xs).float().cpu()

    def images(self, indices: Any) -> torch.Tensor:
        """Display images ``[n, 3, H, W]`` in [0, 1] (float32, CPU): ``display_transform`` of
        the model inputs (default identity), clamped; gray inputs are repeated to RGB."""
        x = self.model_inputs(indices)
        if self.display_transform is not None and x.shape[0] > 0:
            x = self.display_transform(x).float()
        elif x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.clamp(0.0, 1.0).contiguous().cpu()

    # ------------------------------------------------------------------ views and export

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
        state = "run" if self._ran else "not run"
        return (
            f"Lens({type(self.model).__name__}, layers={self._layers}, m={self.m}, crop={self.crop_mode!r}, "
            f"pooling={self.pooling!r}, N={len(self.dataset)}, fm={self.fm.identity.get('name')!r}, {state})"
        )
