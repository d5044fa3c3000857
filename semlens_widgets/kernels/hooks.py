"""Layers of a model: names, forward hooks, and how a layer output is read as components.

One module says what a *layer* is, for collection, crops and relevance alike:

Layer names
    ``"name"``        the output of ``model.get_submodule(name)`` (a name of ``named_modules``).
    ``"name@i"``      the output of the i-th call (0-based, in call order) of a module that is
                      called several times per forward pass (torchvision's ``Bottleneck``
                      applies its ``self.relu`` three times). Plain ``"name"`` for such a
                      module is refused with an error, never silently mixed.
    ``"name[j]"``     element j of a module output that is a tuple/list. Without ``[j]`` a
                      tuple output uses element 0 (e.g. ``nn.MultiheadAttention`` returns
                      ``(attn_output, attn_weights)``). Both suffixes combine: ``"name[j]@i"``.
    ``"LAYER:sae"``   the latents of a sparse autoencoder on layer ``LAYER`` (any of the names
                      above): ``LAYER``'s output encoded by ``saes[LAYER]`` (given to
                      :func:`resolve_layers`, :class:`ModuleRecorder` and :class:`LayerCapture`
                      as ``saes={"LAYER": sae}``; conv maps encoded at every position,
                      ``[B, d, H, W] -> [B, n_latents, H, W]``), whose components are the latents.

Components of a layer output (the axes :func:`pool_activations` reduces)
    ``[B, C, H, W]`` (conv maps, any rank >= 4: channels at dim 1) pooled over space,
    ``[B, T, D]`` token maps (rank 3 is always read as tokens, channels last: components are
    the D features) pooled over tokens, ``[B, C]`` linear outputs (pooling is the identity,
    or ``abs`` for the abs variants).

:func:`parse_layer` reads a name, :func:`resolve_layers` validates a list of names against a
model (the one check every caller uses), :class:`ModuleRecorder` is the forward hook of one
module and :class:`LayerCapture` records the selected outputs of several layers. A layer that
is not a module output, the latents of a sparse autoencoder (``"LAYER:sae"``), is a case of
:class:`LayerSpec` (``sae=True``, ``base="LAYER"``) whose recorded output the
:class:`ModuleRecorder` encodes with the SAE; a kernel that needs more than the recorded output
(relevance, CRP starts) reads ``spec.sae`` / ``spec.base``.

Pure torch: no disk, no UI.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "POOLINGS",
    "pool_activations",
    "LayerSpec",
    "SAE_SUFFIX",
    "parse_layer",
    "resolve_layers",
    "check_layer_names",
    "require_whole_module",
    "describe_value",
    "model_device",
    "ModuleRecorder",
    "LayerCapture",
]

POOLINGS = ("max", "mean", "absmax", "absmean", "cls")


# ----------------------------------------------------------------------------- pooling


def pool_activations(out: torch.Tensor, pooling: str = "max") -> torch.Tensor:
    """Pool a layer output to one value per sample and component (``M_k^l`` of the paper's
    concept examples).

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


# ----------------------------------------------------------------------------- layer names

_SPEC_RE = re.compile(r"^(?P<module>[^@\[\]]*)(?:\[(?P<element>\d+)\])?(?:@(?P<call>\d+))?$")


#: the suffix of a layer whose components are the latents of a sparse autoencoder
SAE_SUFFIX = ":sae"


@dataclass(frozen=True)
class LayerSpec:
    """A parsed layer name: ``module[element]@call`` (element/call None when absent), or with
    ``sae=True`` the SAE latents ``"module[element]@call:sae"`` on top of that output."""

    name: str
    module: str
    element: int | None
    call: int | None
    sae: bool = False

    @property
    def base(self) -> str:
        """The name of the module output the layer reads (the name without ``:sae``)."""
        return self.name[: -len(SAE_SUFFIX)] if self.sae else self.name


def parse_layer(name: str) -> LayerSpec:
    """Parse ``"module"``, ``"module@i"``, ``"module[j]"`` or ``"module[j]@i"``, each optionally
    followed by ``":sae"`` (the latents of a sparse autoencoder on that output)."""
    if not isinstance(name, str):
        raise TypeError(f"layer names must be str, got {name!r} ({type(name).__name__})")
    sae = name.endswith(SAE_SUFFIX)
    match = _SPEC_RE.match(name[: -len(SAE_SUFFIX)] if sae else name)
    if match is None:
        raise ValueError(
            f"cannot parse layer name {name!r}; accepted: 'module', 'module@i' (i-th call, "
            "0-based), 'module[j]' (element j of a tuple output) or 'module[j]@i', each optionally "
            "followed by ':sae' (the latents of a sparse autoencoder on that output)"
        )
    element = match.group("element")
    call = match.group("call")
    return LayerSpec(
        name=name,
        module=match.group("module"),
        element=None if element is None else int(element),
        call=None if call is None else int(call),
        sae=sae,
    )


def check_layer_names(layers: Any) -> list[str]:
    """Layer names as a list: a str is one layer; refuses an empty list, non-str entries and
    duplicates (naming them). Does not look at a model (see :func:`resolve_layers`)."""
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or len(layers) == 0:
        raise ValueError(f"layers must be a non-empty list of layer names, got {layers!r}")
    layers = list(layers)
    for layer in layers:
        if not isinstance(layer, str):
            raise TypeError(f"layer names must be str, got {layer!r} ({type(layer).__name__})")
    if len(set(layers)) != len(layers):
        dup = sorted({n for n in layers if layers.count(n) > 1})
        raise ValueError(f"layers contains duplicates {dup}")
    return layers


def check_saes(saes: Any) -> dict[str, nn.Module]:
    """``saes`` as a dict (None: empty): layer name -> a module that encodes that layer's
    output (``semlens_widgets.SAE``)."""
    if saes is None:
        return {}
    if not isinstance(saes, Mapping):
        raise TypeError(f"saes must be a dict {{layer name: SAE}}, got {type(saes).__name__}")
    for k, v in saes.items():
        if not isinstance(k, str):
            raise TypeError(f"saes keys must be layer names (str), got {k!r}")
        if not isinstance(v, nn.Module) or not callable(getattr(v, "encode", None)):
            raise TypeError(
                f"saes[{k!r}] must be a semlens_widgets.SAE (wrap other sparse autoencoders with "
                f"SAE(W_enc, b_enc, W_dec, b_dec, activation=..., k=...)), got {type(v).__name__}"
            )
    return dict(saes)


def resolve_layers(model: nn.Module, layers: Any, saes: Mapping[str, nn.Module] | None = None
                   ) -> dict[str, tuple[LayerSpec, nn.Module]]:
    """Validate layer names against ``model``: name -> (its :class:`LayerSpec`, its module).

    The one place where a layer name is checked: every caller (collection, crops, relevance,
    the Lens) goes through it, so that all of them accept and refuse the same names. An unknown
    module raises ValueError with close matches and examples of the model's module names.
    ``"LAYER:sae"`` needs ``saes["LAYER"]`` (its module is LAYER's module).
    """
    modules = dict(model.named_modules())
    saes = check_saes(saes)
    out: dict[str, tuple[LayerSpec, nn.Module]] = {}
    for name in check_layer_names(layers):
        spec = parse_layer(name)
        if spec.sae and spec.base not in saes:
            raise ValueError(
                f"layer {name!r} is the latents of a sparse autoencoder on {spec.base!r}, but no SAE was "
                f"given for {spec.base!r} (SAEs given for: {sorted(saes)}); pass saes={{{spec.base!r}: sae}}"
            )
        if spec.module not in modules or spec.module == "":
            names = [n for n in modules if n]
            close = difflib.get_close_matches(spec.module, names, n=5, cutoff=0.5)
            hint = f" Close matches: {close}." if close else ""
            raise ValueError(
                f"unknown layer {name!r}: {type(model).__name__} has no module {spec.module!r}.{hint} "
                f"The model has {len(names)} named modules, e.g. {names[:8]} "
                "(see [n for n, _ in model.named_modules()])."
            )
        out[name] = (spec, modules[spec.module])
    return out


def require_whole_module(spec: LayerSpec, what: str = "relevance") -> str:
    """The module name of ``spec`` when it names a whole module output; else ValueError.

    CRP (zennit-crp) records and conditions on whole modules, so relevance, CRP crops started
    from a condition and attribution graphs need a module that is called once and returns a
    tensor: not ``"name@i"`` (one call of a reused module) nor ``"name[j]"`` (one element of a
    tuple output). An SAE layer ``"LAYER:sae"`` needs it of ``LAYER`` (its relevance is read there).
    """
    if spec.call is not None or spec.element is not None:
        raise ValueError(
            f"{what} cannot be computed for layer {spec.name!r}: CRP conditions on whole modules, "
            "not on one call of a reused module ('name@i') or one element of a tuple output "
            "('name[j]'); analyse a module that is called once and returns a tensor"
        )
    return spec.module


# ----------------------------------------------------------------------------- hooks


def describe_value(obj: Any) -> str:
    """A short description of a value for error messages (type, shape, keys, length)."""
    if isinstance(obj, torch.Tensor):
        return f"Tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        return f"dict with keys {list(obj.keys())}"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of length {len(obj)} ({[type(o).__name__ for o in obj]})"
    return type(obj).__name__


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the first parameter (or buffer) of ``model``; None when it has neither."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return None


class ModuleRecorder:
    """Forward hook of one module: counts calls per forward pass and pools the requested ones.

    ``specs`` are the requested names on this module. Pooled activations of the current batch
    land in ``pooled[name] -> [B, C]``; validation of the call counts happens in
    :meth:`check`, after the forward pass, when the total count is known. An SAE layer
    (``spec.sae``) records ``saes[spec.base](output)``, the latents, instead of the output.
    """

    def __init__(
        self,
        module_name: str,
        specs: list[LayerSpec],
        pooling: str | None,
        pooled: dict[str, torch.Tensor] | None = None,
        retain_grad: bool = False,
        saes: Mapping[str, nn.Module] | None = None,
    ):
        self.module_name = module_name
        self.specs = specs
        self.pooling = pooling  # None: keep the raw output
        self.retain_grad = retain_grad
        self.saes = check_saes(saes)
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
                    f"{self.module_name!r} returns a {describe_value(out)}, not a tuple; drop the "
                    f"'[{spec.element}]' suffix"
                )
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"layer {spec.name!r}: module {self.module_name!r} returns {describe_value(out)}; "
                    "expected a Tensor (or a tuple whose selected element is a Tensor)"
                )
            if spec.sae:
                out = self._encode(spec, out)
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

    def _encode(self, spec: LayerSpec, out: torch.Tensor) -> torch.Tensor:
        """The SAE latents of ``out`` for layer ``spec`` (``"LAYER:sae"``)."""
        sae = self.saes.get(spec.base)
        if sae is None:
            raise ValueError(f"layer {spec.name!r} needs saes[{spec.base!r}], which was not given")
        try:
            return sae(out)
        except (ValueError, RuntimeError) as e:
            raise ValueError(
                f"layer {spec.name!r}: the SAE on {spec.base!r} cannot encode its output of shape "
                f"{tuple(out.shape)} ({e})"
            ) from e

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
        saes: ``{"LAYER": sae}`` for SAE layers ``"LAYER:sae"`` (their output is the latents).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        outputs: dict[str, torch.Tensor] | None = None,
        retain_grad: bool = False,
        saes: Mapping[str, nn.Module] | None = None,
    ):
        self.model = model
        self.resolved = resolve_layers(model, layers, saes)
        self.outputs: dict[str, torch.Tensor] = {} if outputs is None else outputs
        by_module: dict[str, list[LayerSpec]] = {}
        for spec, _ in self.resolved.values():
            by_module.setdefault(spec.module, []).append(spec)
        self.recorders = {
            name: ModuleRecorder(name, specs, None, pooled=self.outputs, retain_grad=retain_grad, saes=saes)
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
