"""Streaming top-m activation collection (DESIGN eq. 1, the selection half).

For every requested layer and every component k of it, :func:`collect_topm` finds the m
samples of a dataset with the highest pooled activation ``M_k^l(x)`` in ONE forward pass over
the data, for all layers at once (forward hooks). Memory is O(layers x C x m): after each batch
the pooled activations ``[B, C]`` are merged into the running top-m with one ``torch.topk``
over the concatenation ``[C, m + B]``; nothing of size N is kept except the per-sample labels
and predictions (two LongTensor[N]).

Layer names
    ``"name"``        the output of ``model.get_submodule(name)`` (a name of ``named_modules``).
    ``"name@i"``      the output of the i-th call (0-based, in call order) of a module that is
                      called several times per forward pass (torchvision's ``Bottleneck``
                      applies its ``self.relu`` three times). Plain ``"name"`` for such a
                      module is refused with an error, never silently mixed.
    ``"name[j]"``     element j of a module output that is a tuple/list. Without ``[j]`` a
                      tuple output uses element 0 (e.g. ``nn.MultiheadAttention`` returns
                      ``(attn_output, attn_weights)``). Both suffixes combine: ``"name[j]@i"``.

Output ranks
    ``[B, C, H, W]`` (conv maps, any rank >= 4: channels at dim 1) pooled over space,
    ``[B, T, D]`` token maps (rank 3 is always read as tokens, channels last: components are
    the D features) pooled over tokens, ``[B, C]`` linear outputs (pooling is the identity,
    or ``abs`` for the abs variants).

Global sample indices travel with every item: the dataset is wrapped so that item i yields
``(i, item)``, so any sampler, shuffling or number of workers keeps them aligned.
"""
from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset
from torch.utils.data.dataloader import default_collate

from ..results import TopM

__all__ = [
    "CollectResult",
    "collect_topm",
    "merge_topm",
    "pool_activations",
    "parse_layer",
    "LayerSpec",
    "POOLINGS",
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "split_batch",
    "LayerCapture",
]

POOLINGS = ("max", "mean", "absmax", "absmean", "cls")
IMAGE_KEYS = ("image", "pixel_values", "x")
LABEL_KEYS = ("label", "y")

_ACCEPTED_ITEMS = (
    "a Tensor [C,H,W]; a tuple/list (x, y, ...) whose first element is the image tensor; or a "
    f"dict with the image under one of {list(IMAGE_KEYS)} (label under one of {list(LABEL_KEYS)})"
)


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
    """

    topm: dict[str, TopM]
    labels: torch.Tensor | None
    predictions: torch.Tensor | None
    n_samples: int
    shapes: dict[str, tuple]


# ----------------------------------------------------------------------------- pooling


def pool_activations(out: torch.Tensor, pooling: str = "max") -> torch.Tensor:
    """Pool a layer output to one value per sample and component (DESIGN eq. 1, ``M_k^l``).

    Args:
        out: ``[B, C, H, W]`` (or any rank >= 4, channels at dim 1: pooled over dims >= 2),
            ``[B, T, D]`` token map (pooled over T; components are the D features) or
            ``[B, C]`` linear output.
        pooling: ``"max"`` / ``"mean"`` over positions, ``"absmax"`` / ``"absmean"`` the same
            on ``|out|``, ``"cls"`` token 0 of a ``[B, T, D]`` token map (tokens only).
            For ``[B, C]`` outputs max and mean are the identity and the abs variants ``|out|``.

    Returns:
        FloatTensor ``[B, C]`` (``[B, D]`` for tokens), float32, on ``out``'s device. Signs are
        kept (no clamping), so negative-valued layers rank correctly.
    """
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"pool_activations expects a Tensor, got {type(out).__name__}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; accepted: {list(POOLINGS)}")
    if out.dim() < 2:
        raise ValueError(
            f"cannot pool a layer output of shape {tuple(out.shape)}: expected [B, C], "
            "[B, T, D] or [B, C, H, W]"
        )
    out = out.detach()
    if pooling == "cls":
        if out.dim() != 3:
            raise ValueError(
                f"pooling='cls' needs a token map [B, T, D], got shape {tuple(out.shape)}; "
                "use 'max', 'mean', 'absmax' or 'absmean' for this layer"
            )
        return out[:, 0, :].float()
    if pooling.startswith("abs"):
        out = out.abs()
    if out.dim() == 2:
        return out.float()
    if out.dim() == 3:  # tokens [B, T, D]: reduce over T
        flat = out
        dim = 1
    else:  # [B, C, *spatial]
        flat = out.flatten(2)
        dim = 2
    if pooling.endswith("max"):
        return flat.amax(dim=dim).float()
    return flat.float().mean(dim=dim)


# ----------------------------------------------------------------------------- top-m merging


def _merge_running(
    values: torch.Tensor, indices: torch.Tensor, new_values: torch.Tensor, new_indices: torch.Tensor, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge candidates into a running top-m, vectorised over components.

    values/indices: ``[C, m_cur]``; new_values/new_indices: ``[C, B]``.
    Returns ``[C, min(m, m_cur + B)]`` sorted descending.
    """
    cat_v = torch.cat([values, new_values], dim=1)
    cat_i = torch.cat([indices, new_indices], dim=1)
    k = min(m, cat_v.shape[1])
    top_v, pos = torch.topk(cat_v, k, dim=1, largest=True, sorted=True)
    return top_v, torch.gather(cat_i, 1, pos)


def merge_topm(a: TopM, b: TopM) -> TopM:
    """Exact merge of the top-m of two disjoint shards of a dataset (DESIGN eq. 1).

    The top-m of a union is contained in the union of the top-m's, so merging is exact:
    ``merge_topm(topm(D1), topm(D2)) == topm(D1 u D2)`` (ties aside). Built for sharded
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


# ----------------------------------------------------------------------------- layer names

_SPEC_RE = re.compile(r"^(?P<module>[^@\[\]]*)(?:\[(?P<element>\d+)\])?(?:@(?P<call>\d+))?$")


@dataclass(frozen=True)
class LayerSpec:
    """A parsed layer name: ``module[element]@call`` (element/call None when absent)."""

    name: str
    module: str
    element: int | None
    call: int | None


def parse_layer(name: str) -> LayerSpec:
    """Parse ``"module"``, ``"module@i"``, ``"module[j]"`` or ``"module[j]@i"``."""
    if not isinstance(name, str):
        raise TypeError(f"layer names must be str, got {name!r} ({type(name).__name__})")
    match = _SPEC_RE.match(name)
    if match is None:
        raise ValueError(
            f"cannot parse layer name {name!r}; accepted: 'module', 'module@i' (i-th call, "
            "0-based), 'module[j]' (element j of a tuple output) or 'module[j]@i'"
        )
    element = match.group("element")
    call = match.group("call")
    return LayerSpec(
        name=name,
        module=match.group("module"),
        element=None if element is None else int(element),
        call=None if call is None else int(call),
    )


def _resolve_modules(model: nn.Module, layers: Sequence[str]) -> dict[str, tuple[LayerSpec, nn.Module]]:
    modules = dict(model.named_modules())
    out: dict[str, tuple[LayerSpec, nn.Module]] = {}
    for name in layers:
        spec = parse_layer(name)
        if spec.module not in modules or spec.module == "":
            names = [n for n in modules if n]
            close = difflib.get_close_matches(spec.module, names, n=5, cutoff=0.5)
            hint = f" Close matches: {close}." if close else ""
            raise ValueError(
                f"unknown layer {name!r}: the model has no module {spec.module!r}.{hint} "
                f"The model has {len(names)} named modules, e.g. {names[:8]} "
                "(see [n for n, _ in model.named_modules()])."
            )
        out[name] = (spec, modules[spec.module])
    return out


# ----------------------------------------------------------------------------- data plumbing


class _Indexed(Dataset):
    """Wraps a map-style dataset so that item i is ``(i, dataset[i])``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.dataset[i]


class _IndexedCollate:
    """Collates ``[(i, item), ...]`` into ``(LongTensor[B] indices, collate_fn(items))``."""

    def __init__(self, collate_fn: Callable[[list], Any] | None):
        self.collate_fn = collate_fn if collate_fn is not None else default_collate

    def __call__(self, batch: list) -> tuple[torch.Tensor, Any]:
        idx = torch.tensor([b[0] for b in batch], dtype=torch.long)
        return idx, self.collate_fn([b[1] for b in batch])


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"Tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        return f"dict with keys {list(obj.keys())}"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of length {len(obj)} ({[type(o).__name__ for o in obj]})"
    return type(obj).__name__


def split_batch(batch: Any, *, what: str = "batch") -> tuple[Any, Any]:
    """Split a dataset item or collated batch into ``(x, y)``; y is None when absent.

    Accepts a tensor, a tuple/list ``(x, y, ...)`` or a dict with the image under one of
    :data:`IMAGE_KEYS` and the label under one of :data:`LABEL_KEYS`. Raises TypeError naming
    what was found otherwise. Does not check ranks.
    """
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise TypeError(f"{what} is an empty {type(batch).__name__}; accepted items: {_ACCEPTED_ITEMS}")
        return batch[0], batch[1] if len(batch) > 1 else None
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in IMAGE_KEYS if k in batch), None)
        if x is None:
            raise TypeError(
                f"{what} is a dict with keys {list(batch.keys())} but none of the image keys "
                f"{list(IMAGE_KEYS)}; accepted items: {_ACCEPTED_ITEMS}"
            )
        y = next((batch[k] for k in LABEL_KEYS if k in batch), None)
        return x, y
    raise TypeError(f"{what} has no image tensor: got {_describe(batch)}; accepted items: {_ACCEPTED_ITEMS}")


def _check_item(item: Any) -> None:
    x, _ = split_batch(item, what="dataset item 0")
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"dataset item 0 has no image tensor: its image is a {type(x).__name__} "
            f"(convert it with a transform, e.g. torchvision.transforms.ToTensor()); "
            f"accepted items: {_ACCEPTED_ITEMS}"
        )
    if x.dim() != 3:
        raise ValueError(
            f"dataset item 0 has an image tensor of shape {tuple(x.shape)} (rank {x.dim()}); "
            "expected rank 3, [C, H, W] per item (the DataLoader adds the batch dimension)"
        )


def _build_loader(dataset_or_loader: Any, batch_size: int, num_workers: int) -> tuple[DataLoader, Dataset]:
    """Return a DataLoader over the index-wrapped dataset and the original dataset."""
    if isinstance(dataset_or_loader, DataLoader):
        loader = dataset_or_loader
        dataset = loader.dataset
        if isinstance(dataset, IterableDataset):
            raise TypeError(
                "collect_topm needs a map-style dataset (with __len__ and __getitem__) so that "
                "every sample has a global index; got a DataLoader over an IterableDataset"
            )
        if loader.batch_size is None and loader.batch_sampler is None:
            raise ValueError(
                "collect_topm needs a DataLoader with automatic batching (batch_size or "
                "batch_sampler set); got batch_size=None"
            )
        kwargs: dict[str, Any] = dict(
            num_workers=loader.num_workers,
            collate_fn=_IndexedCollate(loader.collate_fn),
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            generator=loader.generator,
            persistent_workers=loader.persistent_workers,
        )
        if loader.num_workers > 0:
            kwargs["prefetch_factor"] = loader.prefetch_factor
        # The (batch) sampler yields indices into the original dataset, which the wrapper
        # shares: re-iterating it keeps the user's order, shuffling and sharding.
        if type(loader.batch_sampler) is BatchSampler:
            kwargs.update(sampler=loader.sampler, batch_size=loader.batch_size, drop_last=loader.drop_last)
        else:
            kwargs.update(batch_sampler=loader.batch_sampler)
        return DataLoader(_Indexed(dataset), **kwargs), dataset
    if isinstance(dataset_or_loader, IterableDataset) or not hasattr(dataset_or_loader, "__getitem__"):
        raise TypeError(
            "collect_topm needs a map-style dataset (with __len__ and __getitem__) or a "
            f"DataLoader over one; got {type(dataset_or_loader).__name__}"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    dataset = dataset_or_loader
    loader = DataLoader(
        _Indexed(dataset),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_IndexedCollate(None),
    )
    return loader, dataset


def _labels_from(y: Any, batch: int) -> torch.Tensor | None:
    """Integer labels [B] from a collated y, else None (e.g. masks, float targets, strings)."""
    if isinstance(y, torch.Tensor) and y.dim() == 1 and y.shape[0] == batch and not y.is_floating_point() \
            and not y.is_complex() and y.dtype != torch.bool:
        return y.long()
    return None


def _model_logits(output: Any) -> torch.Tensor | None:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    elif not isinstance(output, torch.Tensor) and isinstance(getattr(output, "logits", None), torch.Tensor):
        output = output.logits
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        return output
    return None


# ----------------------------------------------------------------------------- hooks


class _ModuleRecorder:
    """Forward hook of one module: counts calls per forward pass and pools the requested ones.

    ``specs`` are the requested names on this module. Pooled activations of the current batch
    land in ``pooled[name] -> [B, C]``; validation of the call counts happens in
    :meth:`check`, after the forward pass, when the total count is known.
    """

    def __init__(
        self,
        module_name: str,
        specs: list[LayerSpec],
        pooling: str | None,
        pooled: dict[str, torch.Tensor] | None = None,
        retain_grad: bool = False,
    ):
        self.module_name = module_name
        self.specs = specs
        self.pooling = pooling  # None: keep the raw output
        self.retain_grad = retain_grad
        self.calls = 0
        self.pooled: dict[str, torch.Tensor] = {} if pooled is None else pooled
        self.shapes: dict[str, tuple] = {}

    def reset(self) -> None:
        self.calls = 0
        for spec in self.specs:
            self.pooled.pop(spec.name, None)

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        call = self.calls
        self.calls += 1
        for spec in self.specs:
            if (spec.call if spec.call is not None else 0) != call:
                continue
            out = output
            if isinstance(out, (tuple, list)):
                element = spec.element if spec.element is not None else 0
                if element >= len(out):
                    raise ValueError(
                        f"layer {spec.name!r}: module {self.module_name!r} returns a "
                        f"{type(out).__name__} of length {len(out)}; element {element} does not exist"
                    )
                out = out[element]
            elif spec.element is not None:
                raise ValueError(
                    f"layer {spec.name!r} selects element {spec.element} but module "
                    f"{self.module_name!r} returns a {_describe(out)}, not a tuple; drop the "
                    f"'[{spec.element}]' suffix"
                )
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"layer {spec.name!r}: module {self.module_name!r} returns {_describe(out)}; "
                    "expected a Tensor (or a tuple whose selected element is a Tensor)"
                )
            self.shapes[spec.name] = tuple(out.shape[1:])
            if self.pooling is None:
                if self.retain_grad and out.requires_grad:
                    out.retain_grad()
                    self.pooled[spec.name] = out
                else:
                    # a copy: a later in-place op (ReLU(inplace=True) after a conv or a
                    # BatchNorm) would otherwise overwrite the recorded output
                    self.pooled[spec.name] = out.detach().clone()
            else:
                self.pooled[spec.name] = pool_activations(out, self.pooling)

    def check(self) -> None:
        if self.calls == 0:
            raise RuntimeError(
                f"module {self.module_name!r} (requested as "
                f"{[s.name for s in self.specs]}) was not called in the forward pass; "
                "choose a module that the model's forward uses"
            )
        for spec in self.specs:
            if spec.call is None and self.calls > 1:
                raise ValueError(
                    f"module {self.module_name!r} is called {self.calls} times in one forward "
                    "pass (a reused module, e.g. the self.relu that torchvision's Bottleneck "
                    "applies after each conv), so its output is ambiguous. Name one call: "
                    + ", ".join(repr(f"{spec.name}@{i}") for i in range(self.calls))
                    + " (0-based, in call order)."
                )
            if spec.call is not None and spec.call >= self.calls:
                raise ValueError(
                    f"layer {spec.name!r} asks for call {spec.call} of module "
                    f"{self.module_name!r}, which is called only {self.calls} time(s) per "
                    f"forward pass; accepted: @0 .. @{self.calls - 1}"
                )


class LayerCapture:
    """Record the raw outputs of layers (``"name"``, ``"name@i"``, ``"name[j]"``) during the
    forward passes run inside a ``with`` block.

    ``capture.outputs[name]`` is the selected output of the last forward pass: a detached copy
    (safe from later in-place ops), or with ``retain_grad=True`` and an output that requires
    grad, the tensor itself with ``retain_grad()`` called (CRP reads its relevance).
    Call :meth:`check` after a forward pass: it raises for a module that was called several
    times per forward under a plain name, for ``@i`` beyond the number of calls and for a
    module that was not called. Call :meth:`reset` before each forward pass when reusing it.

    Args:
        model: the network.
        layers: layer names (unknown names raise with close matches).
        outputs: dict to store the outputs in (default: a new dict).
        retain_grad: call ``retain_grad()`` on outputs that require grad.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        outputs: dict[str, torch.Tensor] | None = None,
        retain_grad: bool = False,
    ):
        self.model = model
        self.resolved = _resolve_modules(model, list(layers))
        self.outputs: dict[str, torch.Tensor] = {} if outputs is None else outputs
        by_module: dict[str, list[LayerSpec]] = {}
        for spec, _ in self.resolved.values():
            by_module.setdefault(spec.module, []).append(spec)
        self.recorders = {
            name: _ModuleRecorder(name, specs, None, pooled=self.outputs, retain_grad=retain_grad)
            for name, specs in by_module.items()
        }
        self._handles: list = []

    def __enter__(self) -> "LayerCapture":
        modules = dict(self.model.named_modules())
        self._handles = [modules[name].register_forward_hook(rec) for name, rec in self.recorders.items()]
        self.reset()
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def reset(self) -> None:
        for rec in self.recorders.values():
            rec.reset()

    def check(self) -> None:
        for rec in self.recorders.values():
            rec.check()


# ----------------------------------------------------------------------------- collection


def _model_device(model: nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return None


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
) -> CollectResult:
    """Top-m samples per component of every requested layer, in one pass (DESIGN eq. 1).

    Args:
        model: a ``torch.nn.Module`` already on ``device``; run in eval mode under
            ``torch.inference_mode`` (its training flag is restored afterwards).
        dataset_or_loader: a map-style dataset (``__len__`` + ``__getitem__``) whose items are
            a Tensor ``[C, H, W]``, a tuple/list ``(x, y, ...)`` or a dict
            (``"image"``/``"pixel_values"``/``"x"`` and ``"label"``/``"y"``); or a DataLoader over
            one. A DataLoader is rebuilt over the index-wrapped dataset with the same
            sampler / batch_sampler, batch_size, drop_last, num_workers, collate_fn,
            pin_memory, worker settings (``batch_size``/``num_workers`` arguments are ignored
            then). Each sample must be visited at most once.
        layers: layer names (see the module docstring: ``"name"``, ``"name@i"``, ``"name[j]"``).
        m: how many top samples to keep per component (>= 1).
        pooling: one of :data:`POOLINGS` (see :func:`pool_activations`).
        batch_size, num_workers: DataLoader settings when a dataset is given.
        device: where the inputs are moved and the running top-m lives.
        progress: show a tqdm.auto progress bar.

    Returns:
        :class:`CollectResult`; every ``TopM`` has ``indices/values [C, min(m, N)]`` on the
        CPU (``complete`` is False when N < m: never padded).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or len(layers) == 0:
        raise ValueError(f"layers must be a non-empty list of layer names, got {layers!r}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers contains duplicates: {list(layers)}")
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ValueError(f"m must be an int >= 1 (examples per component), got {m!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; accepted: {list(POOLINGS)}")
    device = torch.device(device)
    model_device = _model_device(model)
    if model_device is not None and model_device.type != device.type:
        raise ValueError(
            f"the model is on {model_device} but device={str(device)!r}; move the model with "
            f"model.to({str(device)!r}) or pass device={str(model_device)!r}"
        )

    resolved = _resolve_modules(model, layers)
    loader, dataset = _build_loader(dataset_or_loader, batch_size, num_workers)
    n_total = len(dataset)  # type: ignore[arg-type]
    if n_total == 0:
        raise ValueError("the dataset is empty (len 0); collect_topm needs at least one sample")
    collate = getattr(getattr(loader, "collate_fn", None), "collate_fn", None)
    if collate is default_collate:
        # Items reach the model as they are: check the first one for a clear message (a custom
        # collate_fn may legitimately turn non-tensor items into tensors; its batches are
        # checked below instead).
        _check_item(dataset[0])

    by_module: dict[str, list[LayerSpec]] = {}
    for spec, _ in resolved.values():
        by_module.setdefault(spec.module, []).append(spec)
    modules = dict(model.named_modules())
    recorders = {name: _ModuleRecorder(name, specs, pooling) for name, specs in by_module.items()}

    run_values: dict[str, torch.Tensor] = {}
    run_indices: dict[str, torch.Tensor] = {}
    labels_buf = torch.empty(n_total, dtype=torch.long, device=device)
    preds_buf = torch.empty(n_total, dtype=torch.long, device=device)
    visits = torch.zeros(n_total, dtype=torch.int32, device=device)
    have_labels = True
    have_preds = True
    n_seen = 0

    from tqdm.auto import tqdm

    handles = [modules[name].register_forward_hook(rec) for name, rec in recorders.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for bnum, (idx, batch) in enumerate(
                tqdm(loader, total=len(loader), desc="collect top-m", disable=not progress, unit="batch")
            ):
                x, y = split_batch(batch, what=f"batch {bnum}")
                if not isinstance(x, torch.Tensor):
                    raise TypeError(
                        f"batch {bnum} has no image tensor: its image is {_describe(x)}; "
                        f"accepted items: {_ACCEPTED_ITEMS}"
                    )
                if x.dim() != 4:
                    raise ValueError(
                        f"batch {bnum} has images of shape {tuple(x.shape)}; expected "
                        "[B, C, H, W] (rank 3 [C, H, W] per item)"
                    )
                bsz = x.shape[0]
                idx = idx.to(device, non_blocking=True)
                x = x.to(device, non_blocking=True)
                for rec in recorders.values():
                    rec.reset()
                output = model(x)
                for rec in recorders.values():
                    rec.check()
                for name in layers:
                    pooled = recorders[resolved[name][0].module].pooled[name].t()  # [C, B]
                    cand_i = idx.unsqueeze(0).expand(pooled.shape[0], -1)
                    if name not in run_values:
                        run_values[name], run_indices[name] = _merge_running(
                            pooled[:, :0], cand_i[:, :0], pooled, cand_i, m
                        )
                    else:
                        if pooled.shape[0] != run_values[name].shape[0]:
                            raise RuntimeError(
                                f"layer {name!r} changed its number of components from "
                                f"{run_values[name].shape[0]} to {pooled.shape[0]} at batch {bnum}"
                            )
                        run_values[name], run_indices[name] = _merge_running(
                            run_values[name], run_indices[name], pooled, cand_i, m
                        )
                visits.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))
                if have_labels:
                    lab = _labels_from(y, bsz)
                    if lab is None:
                        have_labels = False
                    else:
                        labels_buf[idx] = lab.to(device, non_blocking=True)
                if have_preds:
                    logits = _model_logits(output)
                    if logits is None or logits.shape[0] != bsz:
                        have_preds = False
                    else:
                        preds_buf[idx] = logits.argmax(dim=1)
                n_seen += bsz
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    if n_seen == 0:
        raise ValueError("the DataLoader yielded no batch (is drop_last=True with fewer samples than batch_size?)")
    visits = visits.cpu()
    if bool((visits > 1).any()):
        dup = int((visits > 1).nonzero()[0, 0])
        raise ValueError(
            f"sample {dup} was visited {int(visits[dup])} times; each sample must be visited at "
            "most once (a sampler with replacement or a padded DistributedSampler would put "
            "duplicates into the top-m)"
        )
    full = n_seen == n_total
    if not full:
        warnings.warn(
            f"the sampler visited {n_seen} of {n_total} samples; the top-m covers those only and "
            "labels/predictions are not returned (they are per dataset index)",
            stacklevel=2,
        )
    shapes: dict[str, tuple] = {}
    for rec in recorders.values():
        shapes.update(rec.shapes)
    topm = {
        name: TopM(indices=run_indices[name].cpu(), values=run_values[name].cpu(), m=m, n_seen=n_seen)
        for name in layers
    }
    return CollectResult(
        topm=topm,
        labels=labels_buf.cpu() if (have_labels and full) else None,
        predictions=preds_buf.cpu() if (have_preds and full) else None,
        n_samples=n_seen,
        shapes={name: shapes[name] for name in layers},
    )
