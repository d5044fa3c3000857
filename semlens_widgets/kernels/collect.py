"""Streaming top-m activation collection (paper, Methods: concept examples -- the selection of
the m most activating samples per component).

For every requested layer and every component k of it, :func:`collect_topm` finds the m
samples of a dataset with the highest pooled activation ``M_k^l(x)`` in ONE forward pass over
the data, for all layers at once (forward hooks). Memory is O(layers x C x m): after each batch
the pooled activations ``[B, C]`` are merged into the running top-m with one ``torch.topk``
over the concatenation ``[C, m + B]``; nothing of size N is kept except the per-sample labels
and predictions (two LongTensor[N]).

Pieces: layer names, hooks and pooling live in :mod:`.hooks`; dataset items, global indices
and loaders in :mod:`.data`; this module holds the top-m maths (:func:`merge_topm`, the
running state :class:`RunningTopM`) and the loop. The running state is everything a pass
holds, so a checkpoint of a pass is a copy of it, and the top-m of disjoint shards of the data
(one per process) merge exactly with :func:`merge_topm`.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..results import TopM
from .data import (ACCEPTED_ITEMS, SAME_SIZE, build_loader, check_item, labels_from, split_batch,
                   uses_default_collate)
from .hooks import POOLINGS, ModuleRecorder, check_layer_names, describe_value, model_device, resolve_layers

_clock = time.monotonic  # the checkpoint clock (a test replaces it)

__all__ = [
    "CollectResult",
    "RunningTopM",
    "collect_topm",
    "merge_topm",
    "merge_states",
    "PRECISIONS",
]

#: numeric precisions of the collection pass (see :func:`collect_topm`)
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


# ----------------------------------------------------------------------------- results


@dataclass
class CollectResult:
    """Output of :func:`collect_topm`.

    topm:        layer name (as requested, e.g. ``"layer1.0.relu@1"``) -> :class:`TopM` with
                 ``indices/values [C, m_eff]`` on the CPU, values float32, descending.
    labels:      LongTensor [N] (N = len(dataset)) of the integer labels ``y`` of the items, or
                 None when the items carry no integer label (or not every sample was visited).
    predictions: LongTensor [N] ``argmax`` of the model output when it is ``[B, K]`` logits,
                 else None (also None when not every sample was visited).
    n_samples:   number of samples scanned.
    shapes:      layer name -> per-sample output shape, e.g. ``(64, 7, 7)`` or ``(197, 768)``.
    num_classes: K of the model's ``[B, K]`` logits, None when the output is not 2-D.
    """

    topm: dict[str, TopM]
    labels: torch.Tensor | None
    predictions: torch.Tensor | None
    n_samples: int
    shapes: dict[str, tuple]
    num_classes: int | None = None


# ----------------------------------------------------------------------------- top-m merging


def _merge_running(
    values: torch.Tensor, indices: torch.Tensor, new_values: torch.Tensor, new_indices: torch.Tensor, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge candidates into a running top-m, vectorised over components.

    values/indices: ``[C, m_cur]``; new_values/new_indices: ``[C, B]``.
    Returns ``[C, min(m, m_cur + B)]`` sorted descending.

    The order is total: by value, descending, and among equal values by sample index,
    ascending (``-0.0`` counts as ``0.0``). Ties are common (a ReLU channel that is 0 on most
    images), and with a total order the selection does not depend on the order in which
    samples arrive: a pass in any batch order, a resumed pass and the merge of any shards
    (:func:`merge_topm`, :func:`merge_states`) select exactly the same samples. One ``topk``
    over an int64 key: the float's order-preserving bits above the complement of the index
    (indices < 2**32, checked by :class:`RunningTopM`).
    """
    cat_v = torch.cat([values, new_values], dim=1)
    cat_i = torch.cat([indices, new_indices], dim=1)
    k = min(m, cat_v.shape[1])
    bits = (cat_v.float() + 0.0).view(torch.int32)  # + 0.0: -0.0 becomes 0.0
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # signed-int order == float order
    key = (bits.to(torch.int64) << 32) + (0xFFFFFFFF - cat_i)  # value first, then the lower index
    _, pos = torch.topk(key, k, dim=1, largest=True, sorted=True)
    return torch.gather(cat_v, 1, pos), torch.gather(cat_i, 1, pos)


def merge_topm(a: TopM, b: TopM) -> TopM:
    """Exact merge of the top-m of two disjoint shards of a dataset (concept examples).

    The top-m of a union is contained in the union of the top-m's, so merging is exact:
    ``merge_topm(topm(D1), topm(D2)) == topm(D1 u D2)``, ties included (equal values are
    ordered by sample index, see :func:`_merge_running`). Built for sharded
    collection (each torch.distributed rank collects a shard; the shards are all-gathered and
    merged with this function).

    Args:
        a, b: :class:`TopM` with ``indices/values [C, m_eff]`` of the same layer, the same C
            and the same requested m; indices are global dataset indices and the two shards
            must not share a sample (checked per component).

    Returns:
        :class:`TopM` with ``[C, min(m, a.m_eff + b.m_eff)]`` on ``a``'s device,
        ``n_seen = a.n_seen + b.n_seen``.
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, TopM):
            raise TypeError(f"merge_topm expects TopM objects, got {type(t).__name__} for {name}")
    if a.m != b.m:
        raise ValueError(f"cannot merge top-m of different m: a.m={a.m}, b.m={b.m}")
    if a.num_components != b.num_components:
        raise ValueError(
            "cannot merge top-m of different layers: a has "
            f"{a.num_components} components, b has {b.num_components}"
        )
    bi = b.indices.to(a.indices.device)
    bv = b.values.to(a.values.device)
    cat_i = torch.cat([a.indices, bi], dim=1)
    if cat_i.shape[1] > 1:
        srt = cat_i.sort(dim=1).values
        dup = (srt[:, 1:] == srt[:, :-1]).any(dim=1)
        if bool(dup.any()):
            k = int(dup.nonzero()[0, 0])
            raise ValueError(
                f"shards overlap: component {k} lists a sample index in both a and b; "
                "merge_topm needs disjoint shards of the dataset"
            )
    values, indices = _merge_running(a.values, a.indices, bv, bi, a.m)
    return TopM(indices=indices, values=values, m=a.m, n_seen=a.n_seen + b.n_seen)


# ----------------------------------------------------------------------------- model outputs


def _model_logits(output: Any) -> torch.Tensor | None:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    elif not isinstance(output, torch.Tensor) and isinstance(getattr(output, "logits", None), torch.Tensor):
        output = output.logits
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        return output
    return None


def _some(indices: torch.Tensor, limit: int = 10) -> str:
    """``[3, 17, ...]``: the first ``limit`` of some dataset indices, and how many in all."""
    vals = sorted(set(indices.reshape(-1).tolist()))
    text = ", ".join(str(v) for v in vals[:limit])
    return f"[{text}]" if len(vals) <= limit else f"[{text}, ...] ({len(vals)} in all)"


NON_FINITE = (
    "accepted: finite images (check the dataset's files and transforms, or leave these items out, "
    "e.g. with torch.utils.data.Subset)"
)


class RunningTopM:
    """The state of one collection pass: per layer the running top-m ``[C, m_cur]`` (values
    descending, global sample indices), per sample the labels / predictions ``[N]`` and visit
    counts ``[N]``, and what the model output told (number of classes).

    :meth:`update` merges one batch; :meth:`result` turns the state into a
    :class:`CollectResult`. All tensors live on ``device``. :meth:`state_dict` /
    :meth:`from_state` turn the whole state into CPU tensors + JSON meta and back: a checkpoint
    of the pass (a resumed pass visits the samples whose visit count is 0).

    Checks that would need the host to wait for the device (non-finite inputs, labels outside
    the model's classes, when the batch lives on an accelerator) are recorded per sample on the
    device and raised by :meth:`verify`, which runs before every checkpoint and in
    :meth:`result`: nothing made from a bad input is handed out.
    """

    def __init__(self, layers: list[str], m: int, n_total: int, device: torch.device):
        if not 0 <= int(n_total) < 2 ** 32:
            raise ValueError(f"a collection pass covers at most 2**32 - 1 samples, got {n_total}")
        self.layers = list(layers)
        self.m = int(m)
        self.n_total = int(n_total)
        self.device = torch.device(device)
        self.values: dict[str, torch.Tensor] = {}   # layer -> [C, m_cur] float32
        self.indices: dict[str, torch.Tensor] = {}  # layer -> [C, m_cur] int64
        self.labels = torch.zeros(n_total, dtype=torch.long, device=device)       # [N]
        self.predictions = torch.zeros(n_total, dtype=torch.long, device=device)  # [N]
        self.visits = torch.zeros(n_total, dtype=torch.int32, device=device)      # [N]
        self.have_labels = True
        self.have_predictions = True
        self.num_classes: int | None = None
        self.n_seen = 0
        self.batches = 0
        self.shapes: dict[str, tuple] = {}
        self.input_shape: tuple | None = None  # [C, H, W] of the first image, and its sample index
        self.input_ref: int | None = None
        self.flags: dict[str, torch.Tensor] = {}  # "non_finite" / "label" -> BoolTensor [N] (deferred checks)

    # ------------------------------------------------------------------ checks
    def flag(self, kind: str, idx: torch.Tensor, bad: torch.Tensor, now: bool) -> None:
        """Samples ``idx [B]`` where ``bad [B]`` failed check ``kind``: raised now when ``now``, else
        recorded on the device for :meth:`verify` (no host sync). Callers pass ``now`` when
        ``bad`` is on the CPU (nothing to wait for) or for the first batch."""
        if now:
            if bool(bad.any()):
                self._raise(kind, idx.to(bad.device)[bad].cpu())
            return
        f = self.flags.get(kind)
        if f is None:
            f = self.flags[kind] = torch.zeros(self.n_total, dtype=torch.bool, device=self.device)
        idx = idx.to(self.device)
        f[idx] = f[idx] | bad.to(self.device)  # no host sync

    def _raise(self, kind: str, samples: torch.Tensor) -> None:
        if kind == "non_finite":
            raise ValueError(f"dataset items {_some(samples)} have non-finite pixel values (NaN or +-inf); "
                             f"{NON_FINITE}")
        if kind == "label":
            K = self.num_classes
            vals = self.labels[samples.to(self.labels.device)].cpu()
            raise ValueError(
                f"dataset items {_some(samples)} have labels {_some(vals)} outside the model's classes: the "
                f"model has {K} outputs, so a label must be a class index in [0, {K}); map the dataset's "
                f"labels to the model's classes, or give items without labels (relevance then explains "
                f"the model's predictions, over='prediction')"
            )
        raise AssertionError(kind)  # pragma: no cover

    def verify(self) -> None:
        """Raise the deferred checks (non-finite inputs, labels outside the classes) and refuse
        non-finite activations: NaN and +inf rank first in a top-m, so any sample whose pooled
        activation is not finite sits in it. Waits for the device (call it rarely)."""
        for kind in ("non_finite", "label"):
            f = self.flags.get(kind)
            if f is not None and bool(f.any()):
                self._raise(kind, f.nonzero()[:, 0].cpu())
        for name in self.layers:
            v = self.values.get(name)
            if v is not None and not bool(torch.isfinite(v).all()):
                bad = self.indices[name][~torch.isfinite(v)].cpu()
                raise ValueError(
                    f"layer {name!r} has non-finite activations (NaN or +-inf) for dataset items {_some(bad)}, "
                    f"whose pixels are finite: the model's output there is not a number, and it would rank "
                    f"first among the concept examples; accepted: a model with finite activations on the "
                    f"dataset (check its weights and operations, e.g. a log or a division)"
                )

    # ------------------------------------------------------------------ the pass
    def update(self, pooled: dict[str, torch.Tensor], idx: torch.Tensor, y: Any, output: Any, bnum: int,
               check_labels: bool = False) -> None:
        """Merge one batch: ``pooled[layer] [B, C]``, global ``idx [B]``, collated labels ``y``
        and the model ``output`` of the batch (``[B, K]`` logits give predictions).
        ``check_labels``: integer labels must be class indices of the ``[B, K]`` logits."""
        bsz = idx.shape[0]
        for name in self.layers:
            cand_v = pooled[name].t()  # [C, B]
            cand_i = idx.unsqueeze(0).expand(cand_v.shape[0], -1)
            if name not in self.values:
                self.values[name], self.indices[name] = _merge_running(
                    cand_v[:, :0], cand_i[:, :0], cand_v, cand_i, self.m
                )
                continue
            if cand_v.shape[0] != self.values[name].shape[0]:
                raise RuntimeError(
                    f"layer {name!r} changed its number of components from "
                    f"{self.values[name].shape[0]} to {cand_v.shape[0]} at batch {bnum}"
                )
            self.values[name], self.indices[name] = _merge_running(
                self.values[name], self.indices[name], cand_v, cand_i, self.m
            )
        self.visits.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))
        logits = _model_logits(output)
        if logits is not None and self.num_classes is None:
            self.num_classes = int(logits.shape[1])
        if self.have_labels:
            lab = labels_from(y, bsz)
            if lab is None:
                self.have_labels = False
            else:
                self.labels[idx] = lab.to(self.labels.device, non_blocking=True)
                if check_labels and logits is not None:
                    bad = (lab < 0) | (lab >= self.num_classes)
                    self.flag("label", idx, bad, now=bnum == 0 or bad.device.type == "cpu")
        if self.have_predictions:
            if logits is None or logits.shape[0] != bsz:
                self.have_predictions = False
            else:
                self.predictions[idx] = logits.argmax(dim=1)
        self.n_seen += bsz
        self.batches += 1

    def result(self) -> CollectResult:
        """The :class:`CollectResult` of the samples merged so far (checks the visits)."""
        if self.n_seen == 0:
            raise ValueError(
                "the DataLoader yielded no batch (is drop_last=True with fewer samples than batch_size?)"
            )
        self.verify()
        visits = self.visits.cpu()
        if bool((visits > 1).any()):
            dup = int((visits > 1).nonzero()[0, 0])
            raise ValueError(
                f"sample {dup} was visited {int(visits[dup])} times; each sample must be visited at "
                "most once (a sampler with replacement or a padded DistributedSampler would put "
                "duplicates into the top-m)"
            )
        full = self.n_seen == self.n_total
        if not full:
            warnings.warn(
                f"the sampler visited {self.n_seen} of {self.n_total} samples; the top-m covers those "
                "only and labels/predictions are not returned (they are per dataset index)",
                stacklevel=3,
            )
        topm = {
            name: TopM(indices=self.indices[name].cpu(), values=self.values[name].cpu(), m=self.m,
                       n_seen=self.n_seen)
            for name in self.layers
        }
        return CollectResult(
            topm=topm,
            labels=self.labels.cpu() if (self.have_labels and full) else None,
            predictions=self.predictions.cpu() if (self.have_predictions and full) else None,
            n_samples=self.n_seen,
            shapes={name: self.shapes[name] for name in self.layers},
            num_classes=self.num_classes,
        )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The whole state as CPU tensors and JSON-able meta (a checkpoint; :meth:`from_state`
        restores it). Tensors: ``values.<i>`` / ``indices.<i>`` ``[C, m_cur]`` of layer i,
        ``visits [N]``, ``labels [N]`` and ``predictions [N]`` when known. Call :meth:`verify`
        first: deferred checks are not part of a checkpoint."""
        tensors: dict[str, torch.Tensor] = {"visits": self.visits.cpu()}
        for i, name in enumerate(self.layers):
            if name in self.values:
                tensors[f"values.{i}"] = self.values[name].cpu()
                tensors[f"indices.{i}"] = self.indices[name].cpu()
        if self.have_labels:
            tensors["labels"] = self.labels.cpu()
        if self.have_predictions:
            tensors["predictions"] = self.predictions.cpu()
        meta = {
            "layers": self.layers, "m": self.m, "n_total": self.n_total, "n_seen": self.n_seen,
            "batches": self.batches, "num_classes": self.num_classes,
            "have_labels": self.have_labels, "have_predictions": self.have_predictions,
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "input_ref": self.input_ref,
        }
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict, device: torch.device) -> "RunningTopM":
        """The state saved by :meth:`state_dict`, on ``device``."""
        try:
            state = cls(list(meta["layers"]), int(meta["m"]), int(meta["n_total"]), device)
            state.visits = tensors["visits"].to(device, torch.int32)
            for i, name in enumerate(state.layers):
                if f"values.{i}" in tensors:
                    state.values[name] = tensors[f"values.{i}"].to(device, torch.float32)
                    state.indices[name] = tensors[f"indices.{i}"].to(device, torch.long)
            state.have_labels, state.have_predictions = bool(meta["have_labels"]), bool(meta["have_predictions"])
            if state.have_labels:
                state.labels = tensors["labels"].to(device, torch.long)
            if state.have_predictions:
                state.predictions = tensors["predictions"].to(device, torch.long)
            state.n_seen, state.batches = int(meta["n_seen"]), int(meta["batches"])
            state.num_classes = None if meta["num_classes"] is None else int(meta["num_classes"])
            state.shapes = {k: tuple(v) for k, v in meta["shapes"].items()}
            state.input_shape = None if meta["input_shape"] is None else tuple(meta["input_shape"])
            state.input_ref = meta["input_ref"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a collection checkpoint (RunningTopM.state_dict): {e!r}") from None
        if state.visits.shape != (state.n_total,) or int(state.visits.sum()) != state.n_seen:
            raise ValueError(f"not a collection checkpoint: visits {tuple(state.visits.shape)} do not add up to "
                             f"n_seen={state.n_seen} of {state.n_total} samples")
        return state


def merge_states(states: Sequence[RunningTopM]) -> RunningTopM:
    """The state of one pass over the union of disjoint parts of the data, from the states of
    the parts (the ranks of a sharded pass, a resumed pass's checkpoint and what followed it):
    the running top-m of every layer merged exactly (:func:`_merge_running`'s total order, so
    the result is the state of a one-process pass over the same samples), visits, labels and
    predictions summed over the parts (each sample is visited in one part only), counts added.

    All states must be of the same pass (layers, m, number of samples); the result lives on the
    first state's device. States that saw no sample only contribute nothing.
    """
    if not states:
        raise ValueError("merge_states needs at least one state")
    first = states[0]
    for s in states[1:]:
        if s.layers != first.layers or s.m != first.m or s.n_total != first.n_total:
            raise ValueError(f"cannot merge states of different passes: layers {s.layers} m={s.m} N={s.n_total} "
                             f"vs layers {first.layers} m={first.m} N={first.n_total}")
    dev = first.device
    out = RunningTopM(first.layers, first.m, first.n_total, dev)
    seen = [s for s in states if s.n_seen > 0]
    for name in out.layers:
        parts = [(s.values[name].to(dev), s.indices[name].to(dev)) for s in seen if name in s.values]
        if not parts:
            continue
        v, i = parts[0]
        v, i = _merge_running(v[:, :0], i[:, :0], v, i, out.m)
        for pv, pi in parts[1:]:
            if pv.shape[0] != v.shape[0]:
                raise ValueError(f"layer {name!r} has {pv.shape[0]} components in one part, {v.shape[0]} in another")
            v, i = _merge_running(v, i, pv, pi, out.m)
        out.values[name], out.indices[name] = v, i
    out.have_labels = all(s.have_labels for s in seen)
    out.have_predictions = all(s.have_predictions for s in seen)
    for s in seen:
        out.visits += s.visits.to(dev)
        if out.have_labels:
            out.labels += torch.where(s.visits.to(dev) > 0, s.labels.to(dev), 0)
        if out.have_predictions:
            out.predictions += torch.where(s.visits.to(dev) > 0, s.predictions.to(dev), 0)
        for kind, f in s.flags.items():
            out.flags[kind] = out.flags[kind] | f.to(dev) if kind in out.flags else f.to(dev).clone()
        out.shapes.update(s.shapes)
        if out.num_classes is None:
            out.num_classes = s.num_classes
        if out.input_shape is None:
            out.input_shape, out.input_ref = s.input_shape, s.input_ref
    out.n_seen = sum(s.n_seen for s in states)
    out.batches = sum(s.batches for s in states)
    if bool((out.visits > 1).any()):
        dup = int((out.visits > 1).nonzero()[0, 0])
        raise ValueError(f"the parts overlap: sample {dup} was visited in more than one; merge_states needs "
                         "disjoint parts of the data")
    return out


# ----------------------------------------------------------------------------- collection


def _input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype images are cast to: the model's floating-point parameters' (float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _check_images(x: torch.Tensor, idx: torch.Tensor, state: RunningTopM, bnum: int) -> None:
    """One batch of images ``x [B, C, H, W]`` of samples ``idx [B]`` (both where the pass runs):
    floating point, the size of the pass's first image, finite (checked where x lives, see
    :meth:`RunningTopM.flag`: on an accelerator without waiting for it)."""
    if not x.is_floating_point():
        raise TypeError(
            f"batch {bnum} (dataset items {_some(idx)}) has images of dtype {x.dtype}; the model eats "
            f"floating-point images: convert them in the dataset, e.g. torchvision.transforms.ToTensor() "
            f"or transforms.v2.ToDtype(torch.float32, scale=True) (values in [0, 1]); accepted: float32 "
            f"(float16, bfloat16 and float64 are cast to float32)"
        )
    shape = tuple(x.shape[1:])
    if state.input_shape is None:
        state.input_shape, state.input_ref = shape, int(idx[0])
    elif shape != state.input_shape:
        raise ValueError(
            f"dataset items {_some(idx)} have images of shape {shape} but item {state.input_ref} has "
            f"{state.input_shape}: {SAME_SIZE}"
        )
    bad = ~torch.isfinite(x).flatten(1).all(dim=1)  # [B]
    state.flag("non_finite", idx, bad, now=bnum == 0 or bad.device.type == "cpu")


@contextlib.contextmanager
def _precision(device: torch.device, precision: str):
    """The numeric precision of a collection pass (:data:`PRECISIONS`): TF32 on or off for CUDA
    convolutions and matrix products (restored afterwards), autocast for bf16 / fp16."""
    cuda = device.type == "cuda"
    if cuda:
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    cast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    try:
        with torch.autocast(device.type, dtype=cast) if cast is not None else contextlib.nullcontext():
            yield
    finally:
        if cuda:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def collect_topm(
    model: nn.Module,
    dataset_or_loader: Any,
    layers: list[str],
    m: int,
    *,
    pooling: str = "max",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    indices: Sequence[int] | None = None,
    state: RunningTopM | None = None,
    checkpoint: Callable[[RunningTopM], Any] | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 60.0,
    check_labels: bool = False,
    saes: dict[str, nn.Module] | None = None,
    keep_state: bool = False,
    pin_memory: bool | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> CollectResult | RunningTopM:
    """Top-m samples per component of every requested layer, in one pass (paper, Methods:
    concept examples, ``E_k = top_m(M_k^l, D)``).

    Args:
        model: a ``torch.nn.Module`` already on ``device``; run in eval mode under
            ``torch.inference_mode`` (its training flag is restored afterwards).
        dataset_or_loader: a map-style dataset (``__len__`` + ``__getitem__``) whose items are
            a Tensor ``[C, H, W]``, a tuple/list ``(x, y, ...)`` or a dict
            (``"image"``/``"pixel_values"``/``"x"`` and ``"label"``/``"y"``); or a DataLoader over
            one. A DataLoader is rebuilt over the index-wrapped dataset with the same
            sampler / batch_sampler, batch_size, drop_last, num_workers, collate_fn,
            pin_memory, worker settings (``batch_size``/``num_workers`` arguments are ignored
            then). Each sample must be visited at most once. Images must be floating point
            (cast to the model's dtype), of one size, and finite: a batch that breaks this
            raises naming its dataset indices.
        layers: layer names (see :mod:`semlens_widgets.kernels.hooks`: ``"name"``, ``"name@i"``,
            ``"name[j]"``).
        m: how many top samples to keep per component (>= 1).
        pooling: one of :data:`~.hooks.POOLINGS` (see :func:`~.hooks.pool_activations`).
        batch_size, num_workers: DataLoader settings when a dataset is given.
        device: where the inputs are moved and the running top-m lives.
        progress: show a tqdm.auto progress bar.
        indices: visit only these global sample indices, in this order (a shard); None: all.
            Needs a dataset, not a DataLoader.
        state: resume this pass (a :class:`RunningTopM`, e.g. ``RunningTopM.from_state`` of a
            checkpoint): only the samples it has not visited are read, in order, so with the
            same ``batch_size`` the batches and the result are those of an uninterrupted pass,
            bit for bit. Needs a dataset.
        checkpoint: called with the running state after every ``checkpoint_every`` batches
            (None: after the first batch that ends ``checkpoint_seconds`` or more after the start
            or the last checkpoint), never after the last batch; the state has passed
            :meth:`RunningTopM.verify` (a checkpoint is the one moment the host waits for
            the device). Save ``state.state_dict()`` there.
        check_labels: refuse integer labels that are not class indices ``[0, K)`` of the
            model's ``[B, K]`` logits (naming the items).
        saes: ``{"LAYER": sae}`` for SAE layers ``"LAYER:sae"`` in ``layers`` (components: the
            SAE's latents, see :mod:`.hooks`).
        keep_state: return the running state (a :class:`RunningTopM`, verified, possibly of a
            part of the data, possibly empty) instead of its :class:`CollectResult`: a shard
            of a sharded pass, merged later with :func:`merge_states`.
        pin_memory: the DataLoader built from a dataset pins its batches (page-locked host
            memory: the copies to the device are asynchronous); None: on CUDA devices.
        precision: ``"fp32"`` (default: exact float32; on CUDA TF32 is switched off for the
            pass), ``"tf32"`` (CUDA's TF32 convolutions and matrix products, PyTorch's default for
            convolutions), ``"bf16"`` / ``"fp16"`` (autocast). Reduced precisions reorder
            near-equal activations: measured on EfficientNet-Lite0 (real weights, 256 photos,
            CPU bf16 autocast), the top-10 set of about half of the components changed (94 %
            of the examples kept), with swapped-in samples up to 8 % of the component's maximum
            below the fp32 m-th value, i.e. not ties; use them for speed, knowing that.
        channels_last: feed the images in channels-last memory format (faster convolutions on
            tensor cores when the model's weights are channels-last too, e.g.
            ``model.to(memory_format=torch.channels_last)``; the model is not changed here).

    Returns:
        :class:`CollectResult`; every ``TopM`` has ``indices/values [C, min(m, N)]`` on the
        CPU (``complete`` is False when N < m: never padded).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = check_layer_names(layers)
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ValueError(f"m must be an int >= 1 (examples per component), got {m!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; accepted: {list(POOLINGS)}")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool)
                                         or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be None or an int >= 1 (batches), got {checkpoint_every!r}")
    if checkpoint is not None and not callable(checkpoint):
        raise TypeError(f"checkpoint must be callable (state) or None, got {type(checkpoint).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; accepted: {list(PRECISIONS)}")
    device = torch.device(device)
    pin = device.type == "cuda" if pin_memory is None else bool(pin_memory)
    on = model_device(model)
    if on is not None and on.type != device.type:
        raise ValueError(
            f"the model is on {on} but device={str(device)!r}; move the model with "
            f"model.to({str(device)!r}) or pass device={str(on)!r}"
        )

    resolved = resolve_layers(model, layers, saes)
    loader, dataset = build_loader(dataset_or_loader, batch_size, num_workers, indices, pin_memory=pin)
    n_total = len(dataset)  # type: ignore[arg-type]
    if n_total == 0:
        raise ValueError("the dataset is empty (len 0); collect_topm needs at least one sample")
    if state is not None:
        if not isinstance(state, RunningTopM):
            raise TypeError(f"state must be a RunningTopM (a resumed pass) or None, got {type(state).__name__}")
        if state.layers != list(layers) or state.m != m or state.n_total != n_total:
            raise ValueError(
                f"the resume state is of another pass (layers {state.layers}, m={state.m}, {state.n_total} "
                f"samples); this pass: layers {list(layers)}, m={m}, {n_total} samples"
            )
        visited = state.visits.cpu() > 0
        order = range(n_total) if indices is None else indices
        todo = [int(i) for i in order if not visited[int(i)]]
        loader, dataset = build_loader(dataset_or_loader, batch_size, num_workers, todo, pin_memory=pin)
    if uses_default_collate(loader):
        # Items reach the model as they are: check the first one for a clear message (a custom
        # collate_fn may legitimately turn non-tensor items into tensors; its batches are
        # checked below instead).
        check_item(dataset[0])

    by_module: dict[str, list] = {}
    for spec, _ in resolved.values():
        by_module.setdefault(spec.module, []).append(spec)
    modules = dict(model.named_modules())
    pooled: dict[str, torch.Tensor] = {}  # layer -> [B, C] of the current batch
    recorders = {name: ModuleRecorder(name, specs, pooling, pooled=pooled, saes=saes) for name, specs in by_module.items()}
    if state is None:
        state = RunningTopM(layers, m, n_total, device)
    in_dtype = _input_dtype(model)

    from tqdm.auto import tqdm

    handles = [modules[name].register_forward_hook(rec) for name, rec in recorders.items()]
    was_training = model.training
    model.eval()
    n_batches = len(loader)
    last = _clock()
    try:
        with torch.inference_mode(), _precision(device, precision):
            for i, (idx, batch) in enumerate(
                tqdm(loader, total=state.batches + n_batches, initial=state.batches, desc="collect top-m",
                     disable=not progress, unit="batch")
            ):
                bnum = state.batches  # over the whole pass (a resumed pass goes on counting)
                x, y = split_batch(batch, what=f"batch {bnum}")
                if not isinstance(x, torch.Tensor):
                    raise TypeError(
                        f"batch {bnum} has no image tensor: its image is {describe_value(x)}; "
                        f"accepted items: {ACCEPTED_ITEMS}"
                    )
                if x.dim() != 4:
                    raise ValueError(
                        f"batch {bnum} has images of shape {tuple(x.shape)}; expected "
                        "[B, C, H, W] (rank 3 [C, H, W] per item)"
                    )
                # copy first, then check where the batch lives: on an accelerator the finiteness
                # check is recorded there (no host sync per batch, see RunningTopM.flag)
                idx = idx.to(device, non_blocking=True)
                x = x.to(device, non_blocking=True)
                _check_images(x, idx, state, bnum)
                x = x.to(in_dtype)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                for rec in recorders.values():
                    rec.reset()
                output = model(x)
                for rec in recorders.values():
                    rec.check()
                state.update(pooled, idx, y, output, bnum, check_labels=check_labels)
                if checkpoint is None or i == n_batches - 1:
                    continue
                if checkpoint_every is not None:
                    due = state.batches % checkpoint_every == 0
                else:
                    now = _clock()
                    due = now - last >= checkpoint_seconds
                if due:
                    for rec in recorders.values():
                        state.shapes.update(rec.shapes)
                    state.verify()
                    checkpoint(state)
                    last = _clock()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    for rec in recorders.values():
        state.shapes.update(rec.shapes)
    if keep_state:
        state.verify()
        return state
    return state.result()
