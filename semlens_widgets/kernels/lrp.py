"""LRP set-up for the CRP crops and relevances (paper: concept examples, the crop; relevance of
components; attribution graphs).

One entry point for callers, :func:`resolve_composite`, turns what the user brings (a zennit
``Composite`` or a rule name, a list of canonizers, or None for both) into the composite the
kernels use. The default set-up works on real architectures (torchvision / timm ResNet, VGG,
EfficientNet, MobileNet, ConvNeXt, efficientnet-pytorch) through one traced mechanism
(:mod:`.canonize`): BatchNorms merged into the convolution / linear layer whose output they alone
consume, LRP rules for the functional operations of a forward pass (residual sums, gates, layer
scales, SiLU / GELU / Hardswish, LayerNorm), and a refusal that names the module and operation
where neither a zennit rule nor those rules apply (attention: use ``crop="activation"``).

Rules (the default ``"epsilon_plus_flat"``, the SemanticLens choice): Flat on the first linear
layer, :class:`ZPlusConserving` on the other convolutions, Epsilon on dense layers, Pass on
activation modules, Norm on average pooling. Biases take no relevance (``zero_bias=True``, what
newer zennit spells ``zero_params="bias"``).

Conservation. The z+ rule divides a unit's relevance by its positive pre-activation ``z+``;
on real networks many units are active only through a bias (43 % of EfficientNet-Lite0's
depthwise outputs, merged BatchNorm biases), so ``z+ = 0`` and stock z+ drops their relevance:
the input heatmap then holds a few percent of the start relevance. :class:`ZPlusConserving`
hands the share ``eps / (z+ + eps)`` of each unit's relevance to its receptive field evenly
(the Flat rule), so every unit passes on all of its relevance. With it, the remaining losses are
the epsilon stabilisers and sums of opposite sign; :func:`conservation` measures them per layer.

Known zennit 0.4.6 quirks: ``MergeBatchNorm`` keeps ``eps`` (the merged model differs by a
factor ``1/sqrt(1 + eps)`` per BatchNorm, ~5e-6), and merges use running statistics, so the
model runs in eval mode (:func:`lrp_context`). zennit 1.0.0 (Python >= 3.11.11) brings
``zero_params`` and the same two torchvision canonizers, nothing for the architectures above.
"""
from __future__ import annotations

import contextlib
import copy
import json
import weakref
from collections import OrderedDict
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from zennit.core import BasicHook, mod_params

from .canonize import FunctionalRules, _HANDLED, _SAFE, default_canonizers, trace_model

__all__ = [
    "RULES",
    "LRP_VERSION",
    "check_setup",
    "setup_id",
    "ratio_summary",
    "SUMMARY_COLUMNS",
    "ZPlusConserving",
    "make_composite",
    "resolve_composite",
    "canonizers_for",
    "supports_lrp",
    "unsupported_modules",
    "lrp_context",
    "component_start",
    "start_relevance",
    "fast_rules",
    "conservation",
    "low_conservation",
    "conservation_warning",
]

#: composite names accepted by :func:`make_composite` -> zennit composite class name
RULES = {
    "epsilon_plus_flat": "EpsilonPlusFlat",
    "epsilon_plus": "EpsilonPlus",
    "epsilon_alpha2_beta1_flat": "EpsilonAlpha2Beta1Flat",
    "epsilon_alpha2_beta1": "EpsilonAlpha2Beta1",
}

#: version of this package's LRP rules (ZPlusConserving, zero biases, the functional rules of
#: :mod:`.canonize`); part of :func:`setup_id`, bumped when a rule changes what it computes
LRP_VERSION = 2


# ----------------------------------------------------------------------------- rules


def _zero_bias(modifier):
    def modified(param: torch.Tensor, name: str) -> torch.Tensor:
        return torch.zeros_like(param) if name == "bias" else modifier(param, name)

    return modified


_POS = _zero_bias(lambda p, _: p.clamp(min=0))
_NEG = _zero_bias(lambda p, _: p.clamp(max=0))
_ONES = _zero_bias(lambda p, _: torch.ones_like(p))


def _flat_probe(module: nn.Module) -> nn.Module | None:
    """A one-channel stand-in of a (padded, strided, grouped) convolution for the Flat share of
    :class:`ZPlusConserving`: the module's own ``forward`` (its padding, stride, dilation)
    with one input and one output channel, an all-ones kernel, no bias, no hooks. None for
    anything but a non-transposed ``ConvNd`` (the rule then runs ones through the module)."""
    from torch.nn.modules.conv import _ConvNd

    if not isinstance(module, _ConvNd) or module.transposed or not isinstance(getattr(module, "weight", None), torch.Tensor):
        return None
    probe = copy.copy(module)  # shallow: children (a padding module) are shared
    probe.__dict__.pop("forward", None)  # fast_rules' wrapper of the module: not the probe's
    probe._parameters = {"weight": nn.Parameter(module.weight.new_ones(1, 1, *module.weight.shape[2:]),
                                                requires_grad=False), "bias": None}
    probe._forward_hooks, probe._forward_pre_hooks = OrderedDict(), OrderedDict()
    probe._backward_hooks, probe._backward_pre_hooks = OrderedDict(), OrderedDict()
    probe.groups, probe.in_channels, probe.out_channels = 1, 1, 1
    return probe


class ZPlusConserving(BasicHook):
    """The z+ rule with a flat fallback for units without positive contributions.

    For output unit j with relevance ``R_j`` and input i (bias ignored):
    ``z_ij = x_i+ w_ij+ + x_i- w_ij-``, ``z_j = sum_i z_ij >= 0``,
    ``R_i = sum_j [ z_ij / (z_j + eps) + eps / (z_j + eps) * 1_ij / n_j ] R_j`` with ``1_ij``
    the receptive field of j (ones through the layer) and ``n_j`` its size. Where ``z_j >> eps``
    this is zennit's ``ZPlus``; where ``z_j = 0`` (a unit active only through its bias) the
    relevance is spread evenly over the receptive field (the Flat rule) instead of being lost.
    Both shares add up to 1, so the rule conserves relevance exactly.

    Cost: the z+ pass (one, or two when the input has negative values) and the Flat share.
    For an ungrouped convolution the Flat share is a one-channel all-ones convolution
    (:func:`_flat_probe`): its receptive fields are the same for every input and output
    channel, so the share is one box sum of the output channels' summed relevance. Other
    modules (grouped / depthwise convolutions, ``probe=False``) run ones through the module
    itself, and only when some unit hands on more than 1e-3 of its relevance flat.
    """

    #: use the one-channel probe for convolutions (False: ones through the module; same result)
    probe = True

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__()
        self.stabilizer = float(stabilizer)

    def copy(self) -> "ZPlusConserving":
        return ZPlusConserving(self.stabilizer)

    def _state(self, module, x: torch.Tensor):
        """What the rule needs from the input alone: the modified forward passes (with their
        graphs), ``1 / (z + eps)`` and the Flat share's ``(how, eps / ((z + eps) n))``."""
        if bool(x.amin() >= 0):  # post-ReLU input: x+ = x, no x- path
            paths = [(x.detach(), _POS)]
        else:
            paths = [(x.clamp(min=0), _POS), (x.clamp(max=0), _NEG)]
        inputs, outputs = [], []
        for inp, modifier in paths:
            inp = inp.requires_grad_()
            with mod_params(module, modifier) as modified, torch.enable_grad():
                outputs.append(modified.forward(inp))
            inputs.append(inp)
        z = outputs[0].detach() if len(outputs) == 1 else (outputs[0] + outputs[1]).detach()
        inv_den = (z + self.stabilizer).reciprocal_()
        probe = _flat_probe(module) if self.probe and getattr(module, "groups", None) == 1 else None
        if probe is not None:
            with torch.no_grad():  # receptive-field sizes [1, 1, *out]: the same for every channel
                count = type(probe).forward(probe, x.new_ones(1, 1, *x.shape[2:])) * x.shape[1]
            how = ("probe", probe, x.shape, 1)
        elif bool(z.amin() < 999 * self.stabilizer):  # some unit hands on more than 1e-3 flat
            ones = torch.ones_like(x).requires_grad_()
            with mod_params(module, _ONES) as modified, torch.enable_grad():
                count = modified.forward(ones)
            how = ("module", ones, count)
        else:
            return inputs, outputs, inv_den, None
        flat = (how, inv_den * self.stabilizer / count.detach().clamp(min=1e-12))
        return inputs, outputs, inv_den, flat

    @staticmethod
    def _spread(how, share: torch.Tensor, keep: bool) -> torch.Tensor:
        """The Flat share ``share [n, C_out, *out]`` (relevance x eps / ((z + eps) n)) spread
        evenly over the receptive fields -> ``[n, C_in, *in]``."""
        if how[0] == "module":
            _, ones, count = how
            (spread,) = torch.autograd.grad(count, ones, grad_outputs=share, retain_graph=keep)
            return spread
        _, probe, in_shape, groups = how
        n, c_out = share.shape[:2]
        c_in = in_shape[1]
        per_group = share.reshape(n, groups, c_out // groups, *share.shape[2:]).sum(2)
        per_group = per_group.reshape(n * groups, 1, *share.shape[2:])
        with torch.enable_grad():
            ones = share.new_ones(n * groups, 1, *in_shape[2:]).requires_grad_()
            (spread,) = torch.autograd.grad(type(probe).forward(probe, ones), ones, grad_outputs=per_group)
        spread = spread.reshape(n, groups, 1, *in_shape[2:]).expand(n, groups, c_in // groups, *in_shape[2:])
        return spread.reshape(n, c_in, *in_shape[2:])

    def backward(self, module, grad_input, grad_output):
        rel = grad_output[0]
        if rel is None:  # no relevance reaches this layer
            return tuple(None for _ in grad_input)
        # a cache (fast_rules' nodes): several relevances through the same forward pass reuse
        # the modified forward passes (their graphs are kept)
        cache = self.stored_tensors.get("cache")
        state = cache.get("state") if cache is not None else None
        if state is None:
            state = self._state(module, self.stored_tensors["input"][0].detach())
            if cache is not None:
                cache["state"] = state
        inputs, outputs, inv_den, flat = state
        keep = cache is not None
        scaled = rel * inv_den
        grads = torch.autograd.grad(outputs, inputs, grad_outputs=[scaled] * len(outputs), retain_graph=keep)
        relevance = inputs[0].detach() * grads[0]
        if len(inputs) > 1:
            relevance = relevance + inputs[1].detach() * grads[1]
        if flat is not None:
            how, weight = flat
            relevance = relevance + self._spread(how, rel * weight, keep)
        return tuple(relevance if original.shape == relevance.shape else None for original in grad_input)


def _zero_biases(composite) -> None:
    """Make every BasicHook rule of ``composite`` treat biases as zero (in place)."""
    maps = list(getattr(composite, "layer_map", [])) + list(getattr(composite, "first_map", []))
    for _, hook in maps:
        if isinstance(hook, BasicHook) and not isinstance(hook, ZPlusConserving):
            hook.param_modifiers = [_zero_bias(f) for f in hook.param_modifiers]


def _conserving_zplus(composite) -> None:
    """Replace zennit's ``ZPlus`` in ``composite``'s layer map by :class:`ZPlusConserving`."""
    from zennit.rules import ZPlus

    if hasattr(composite, "layer_map"):
        composite.layer_map = [(t, ZPlusConserving() if isinstance(h, ZPlus) else h) for t, h in composite.layer_map]


def canonizers_for(model: nn.Module, example_input: Any = None) -> list:
    """The default canonizers: ``[TracedMergeBatchNorm, FunctionalRules]`` (:mod:`.canonize`).

    The same for every architecture: the trace finds what to merge. ``example_input`` traces
    now; None traces on the first forward pass inside the composite context.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return default_canonizers(example_input)


def make_composite(
    model: nn.Module,
    rule: str = "epsilon_plus_flat",
    *,
    zero_bias: bool = True,
    canonizers: list | None = None,
    example_input: Any = None,
    check: bool = True,
):
    """The zennit ``Composite`` for CRP on ``model``: rule ``rule`` + canonizers.

    Args:
        model: the network the composite will be applied to (``composite.context(model)``).
        rule: one of :data:`RULES` (default ``"epsilon_plus_flat"``: Flat on the first linear
            layer, z+ on convolutions, Epsilon on dense layers; the SemanticLens default).
        zero_bias: when True (default) the biases take no relevance and the z+ rule is
            :class:`ZPlusConserving`, so relevance is conserved from the start layer to the
            input up to the epsilon stabilisers (see :func:`conservation`). False gives zennit
            0.4.6's stock rules, whose biases absorb relevance.
        canonizers: zennit canonizers; None: :func:`canonizers_for`. A user list replaces the
            BatchNorm merging; :class:`~.canonize.FunctionalRules` is added to it unless present
            (plain gradients through a residual sum are not LRP).
        example_input: a model input (a few samples are enough); with ``check`` the model is
            traced on it now and refused if it has operations without LRP rules. Without it the
            default canonizers trace on the first forward pass inside the composite context
            and refuse there.
        check: refuse models with operations without LRP rules (with ``example_input``).

    Returns:
        the zennit composite (an instance of the class named in :data:`RULES`).

    Raises:
        ValueError: unknown ``rule``, or a model with operations without LRP rules.
    """
    import zennit.composites as zc

    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"unknown LRP rule {rule!r}; accepted: {list(RULES)}")
    check_setup(None, canonizers)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    composite = getattr(zc, RULES[rule])(canonizers=_with_rules(model, canonizers, example_input))
    if zero_bias:
        _conserving_zplus(composite)
        _zero_biases(composite)
    if check and example_input is not None:
        _refuse_unsupported(model, example_input, composite)
    return composite


def _describe(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{text} ({type(value).__module__}.{type(value).__qualname__})"


def check_setup(composite: Any = None, canonizers: Any = None) -> None:
    """Refuse a bad LRP set-up before any work (the Lens's ``composite=`` / ``canonizers=``).

    Accepted: ``composite`` None, a rule name of :data:`RULES` or a zennit
    ``zennit.core.Composite``; ``canonizers`` None or a list / tuple of
    ``zennit.canonizers.Canonizer`` instances (zennit's, e.g. ``SequentialMergeBatchNorm()``,
    ``ResNetCanonizer()``, or this package's :class:`~.canonize.TracedMergeBatchNorm`,
    :class:`~.canonize.FunctionalRules`).

    Raises:
        ValueError: an unknown rule name (the message names it and lists :data:`RULES`).
        TypeError: anything else of the wrong type (named, with what is accepted).
    """
    from zennit.canonizers import Canonizer
    from zennit.core import Composite

    if isinstance(composite, str):
        if composite not in RULES:
            raise ValueError(f"unknown LRP rule composite={composite!r}; accepted: None (the default "
                             f"{next(iter(RULES))!r}), a rule name {list(RULES)} or a zennit Composite")
    elif composite is not None and not isinstance(composite, Composite):
        raise TypeError(f"composite must be None, a rule name {list(RULES)} or a zennit Composite "
                        f"(zennit.core.Composite, e.g. zennit.composites.EpsilonPlusFlat()), got {_describe(composite)}")
    if canonizers is None:
        return
    if isinstance(canonizers, (str, bytes)) or not isinstance(canonizers, Sequence):
        raise TypeError(f"canonizers must be a list of zennit canonizers (zennit.canonizers.Canonizer instances, "
                        f"e.g. [zennit.torchvision.ResNetCanonizer()]) or None, got {_describe(canonizers)}")
    for c in canonizers:
        if not isinstance(c, Canonizer):
            raise TypeError(f"canonizers must be a list of zennit canonizers (zennit.canonizers.Canonizer "
                            f"instances, e.g. [zennit.torchvision.ResNetCanonizer()]); item {_describe(c)} is not one")


def _with_rules(model: nn.Module, canonizers: list | None, example_input: Any) -> list:
    if canonizers is None:
        return canonizers_for(model, example_input)
    check_setup(None, canonizers)
    out = list(canonizers)
    if not any(isinstance(c, FunctionalRules) for c in out):
        out.append(FunctionalRules())
    return out


def resolve_composite(model: nn.Module, composite: Any = None, canonizers: list | None = None, *, example_input: Any = None):
    """The composite the kernels use for ``model``, from what the user brings (Lens ``composite=``,
    ``canonizers=``).

    Args:
        model: the network.
        composite: None (the default rule, ``"epsilon_plus_flat"``), a rule name of
            :data:`RULES`, or a zennit ``Composite`` (used with its own rules; its canonizers
            are kept if it has any, else ``canonizers`` / the default ones are attached to a copy).
        canonizers: a list of zennit canonizers, or None for the default traced set-up
            (:func:`canonizers_for`).
        example_input: model input used to trace (BatchNorm pairs, refusal check); a few samples.

    Returns:
        a zennit Composite.

    Raises:
        ValueError: a model with operations that no rule covers (names module and operation,
            and the alternative ``crop="activation"``), or an unknown rule name.
        TypeError: ``composite`` / ``canonizers`` of the wrong type.
    """
    from zennit.core import RemovableHandleList

    check_setup(composite, canonizers)
    if composite is None or isinstance(composite, str):
        return make_composite(model, composite or "epsilon_plus_flat", canonizers=canonizers, example_input=example_input)
    out = copy.copy(composite)
    out.handles = RemovableHandleList()
    own = list(getattr(composite, "canonizers", None) or [])
    out.canonizers = _with_rules(model, canonizers if canonizers is not None else (own or None), example_input)
    if example_input is not None:
        _refuse_unsupported(model, example_input, out)
    return out


def _qualname(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _simple_state(obj: Any) -> dict:
    """The plain settings of a rule or canonizer: its int / float / bool / str attributes, and
    those its callables close over (zennit's ``Epsilon`` keeps ``epsilon`` in a closure)."""
    out: dict = {}
    for name, value in sorted(vars(obj).items()):
        if isinstance(value, (bool, int, float, str)) and not name.startswith("_"):
            out[name] = value
        values = value if isinstance(value, (list, tuple)) else [value]
        for i, fn in enumerate(values):
            code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
            if code is None or not cells:
                continue
            for var, cell in zip(code.co_freevars, cells):
                try:
                    v = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if isinstance(v, (bool, int, float, str)):
                    out[f"{name}[{i}].{var}" if len(values) > 1 else f"{name}.{var}"] = v
    return out


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def setup_id(composite: Any = None, canonizers: Any = None, resolved: Any = None) -> str:
    """The name of an LRP set-up, for the fingerprints of everything it shapes (crop boxes,
    relevances, attribution graphs): JSON text.

    - ``composite`` None or a rule name: ``{"rule": name, "zero_bias": true, "canonizers":
      [class names], ...}``;
    - a user zennit ``Composite``: its class, each rule of its layer map (and first-layer map)
      as ``[module type, rule class, plain settings]``, and its canonizers' classes.

    Both carry the versions of zennit and of this package's rules (:data:`LRP_VERSION`) and the
    canonizers' plain settings. ``resolved`` (the composite :func:`resolve_composite` made) gives
    the canonizers actually attached (the default ones, or the user's with
    :class:`~.canonize.FunctionalRules` added); without it they are read from the arguments.

    A user composite is named by its classes and their plain settings, not by its code: a
    composite (or canonizer) whose behaviour changes under the same class names and settings
    gets the same id, and the results stored with the old one would be reused. Use a new store
    (or ``overwrite=True``) after changing such a composite.
    """
    check_setup(composite, canonizers)
    attached = getattr(resolved, "canonizers", None)
    if attached is None:
        attached = list(canonizers) if canonizers is not None else list(getattr(composite, "canonizers", None) or [])
    out: dict = {
        "canonizers": [[_qualname(c), _simple_state(c)] for c in attached],
        "zennit": _version("zennit"),
        "semlens_lrp": LRP_VERSION,
    }
    if composite is None or isinstance(composite, str):
        out.update(rule=composite or "epsilon_plus_flat", zero_bias=True)
    else:
        out["composite"] = _qualname(composite)
        for attr in ("layer_map", "first_map"):
            if hasattr(composite, attr):
                out[attr] = [[_qualname(t), _qualname(h), _simple_state(h)] for t, h in getattr(composite, attr)]
        if not hasattr(composite, "layer_map"):  # a Composite with a custom module_map
            out["module_map"] = _qualname(getattr(composite, "module_map", None))
    return json.dumps(out, sort_keys=True, default=str)


def _refuse_unsupported(model: nn.Module, example_input: Any, composite) -> None:
    bad = unsupported_modules(model, example_input, composite=composite)
    if bad:
        raise ValueError(
            f"model {type(model).__name__} has operations without LRP rules: {bad[:5]}"
            f"{' ...' if len(bad) > 5 else ''}; use crop='activation' (or 'full') for it, or pass a "
            "composite / canonizers that cover them"
        )


# ----------------------------------------------------------------------------- refusal


# Leaf module types that have a rule or whose gradient is LRP-correct (max-pooling, dropout in
# eval, flatten, identity); used by the static check only.
_LRP_LEAVES: tuple[type, ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
    nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Mish, nn.ELU,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Dropout, nn.Dropout2d,
    nn.Dropout1d, nn.Identity, nn.ZeroPad2d, nn.ConstantPad2d, nn.LayerNorm, nn.GroupNorm,
)
_PLAIN_CONTAINERS: tuple[type, ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def unsupported_modules(model: nn.Module, example_input: Any = None, *, composite=None) -> list[str]:
    """``"module (Type): operation"`` for each operation of ``model`` that has no LRP rule.

    With ``example_input`` (the precise check): the model runs once and every operation on the
    relevance path that neither a zennit rule of ``composite`` (default: the default composite)
    nor :class:`~.canonize.FunctionalRules` covers is reported (attention's matrix products and
    softmax, custom autograd functions such as memory-efficient Swish).

    Without it (static): leaves must be known module types with their stock ``forward`` (or a
    ``forward`` that torch.fx shows uses only covered operations), and other modules must be
    plain containers or have a ``forward`` that torch.fx shows uses only submodules and covered
    operations; a module that cannot be traced is reported.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if example_input is not None:
        if composite is None:
            composite = make_composite(model, check=False)
        return trace_model(model, example_input, composite).unsupported
    bad = []
    for name, mod in model.named_modules():
        label = name or "<root>"
        if next(mod.children(), None) is None and _leaf_ok(mod):
            continue
        if isinstance(mod, _PLAIN_CONTAINERS) and type(mod).forward is next(
            b for b in _PLAIN_CONTAINERS if isinstance(mod, b)
        ).forward:
            continue
        op = _static_unsupported_op(mod)
        if op is not None:
            bad.append(f"{label} ({type(mod).__name__}): {op}")
    return bad


def _leaf_ok(mod: nn.Module) -> bool:
    for base in _LRP_LEAVES:
        if isinstance(mod, base):
            return type(mod).forward is base.forward
    return False


_STATIC_OK = _SAFE | _HANDLED | {"conv1d", "conv2d", "conv3d", "linear", "getattr", "getitem", "size", "dim"}


def _static_unsupported_op(module: nn.Module) -> str | None:
    """The first operation of ``module.forward`` (torch.fx, children as leaves) without a rule,
    ``"custom forward (not traceable)"`` if it cannot be traced, else None."""
    import torch.fx

    class _ShallowTracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:  # children are checked on their own
            return True

    try:
        graph = _ShallowTracer().trace(module)
    except Exception:
        return "custom forward (not traceable)"
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "call_module", "get_attr"):
            continue
        name = getattr(node.target, "__name__", node.target) if node.op == "call_function" else node.target
        if str(name) not in _STATIC_OK:
            return str(name)
    return None


def supports_lrp(model: nn.Module, example_input: Any = None) -> bool:
    """True if every operation of ``model`` has an LRP rule (see :func:`unsupported_modules`).

    False for ViTs (attention) and models with unknown operations: use activation crops for them.
    """
    return not unsupported_modules(model, example_input)


@contextlib.contextmanager
def lrp_context(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad`` flags restored on exit (attribution clears them)."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


# ----------------------------------------------------------------------------- local starts


def _component_onehot(act: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Mask of ``act`` keeping component ``components[i]`` of image i.

    act: [n, C, *spatial] (channels at dim 1), [n, T, D] (tokens: components are D), [n, C].
    Returns a float mask of act's shape.
    """
    comps = components.to(act.device)
    if act.dim() == 3:  # tokens [n, T, D]
        onehot = F.one_hot(comps, act.shape[2]).to(act.dtype)  # [n, D]
        return onehot[:, None, :].expand_as(act)
    onehot = F.one_hot(comps, act.shape[1]).to(act.dtype)  # [n, C]
    return onehot.view(*onehot.shape, *([1] * (act.dim() - 2))).expand_as(act)


def _peak_onehot(start: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Mask of ``start`` keeping only the single position where component ``components[i]``
    of image i peaks (the neuron that max pooling selected the image with).

    start: [n, C, *spatial] or [n, T, D] (tokens); [n, C] has no positions (plain one-hot).
    """
    if start.dim() == 2:
        return _component_onehot(start, components)
    n = start.shape[0]
    rows = torch.arange(n, device=start.device)
    comps = components.to(start.device)
    if start.dim() == 3:  # tokens [n, T, D]: the peak token of feature k
        peak = start[rows, :, comps].argmax(dim=1)  # [n]
        mask = torch.zeros_like(start)
        mask[rows, peak, comps] = 1
        return mask
    maps = start[rows, comps].flatten(1)  # [n, h*w]
    peak = maps.argmax(dim=1)
    mask = torch.zeros_like(start)
    mask[rows, comps] = F.one_hot(peak, maps.shape[1]).to(start.dtype).view(n, *start.shape[2:])
    return mask


def component_start(activation: torch.Tensor, components: torch.Tensor, *, absolute: bool = False, peak: bool = True) -> torch.Tensor:
    """Initial relevance of a local CRP start at component ``components[i]`` of image i.

    ``activation``: the layer's output ``[n, C, *spatial]``, ``[n, T, D]`` or ``[n, C]``. The
    start is the positive part of the activation (``|a|`` with ``absolute``) masked to the
    component, and with ``peak`` to the single position where it peaks (zennit-crp's ``rf=True``).
    Returns a tensor of ``activation``'s shape (detached).
    """
    a = activation.detach()
    start = a.abs() if absolute else a.clamp(min=0)
    return start * (_peak_onehot(start, components) if peak else _component_onehot(a, components))


class _RuleFn(torch.autograd.Function):
    """A module with a zennit rule as one autograd node: the module's forward runs without a
    graph, the backward is the rule (``hook.backward``) on the saved input."""

    lrp_rule = True  # the audit of canonize.trace_model accepts it

    @staticmethod
    def forward(ctx, x, fwd, hook, module):  # noqa: D102
        ctx.hook, ctx.module, ctx.cache = hook, module, {}
        ctx.save_for_backward(x)
        return fwd(x)

    @staticmethod
    def backward(ctx, rel):  # noqa: D102
        (x,) = ctx.saved_tensors
        hook, module = ctx.hook, ctx.module
        hook.stored_tensors["input"] = (x,)
        hook.stored_tensors["cache"] = ctx.cache  # rules that can reuse work across backward passes
        override = module.__dict__.pop("forward", None)  # the rule re-runs the original forward
        try:
            with torch.enable_grad():
                out = hook.backward(module, (x,), (rel,))
        finally:
            hook.stored_tensors.clear()
            if override is not None:
                module.forward = override
        return out[0], None, None, None


@contextlib.contextmanager
def fast_rules(composite, model: nn.Module) -> Iterator[nn.Module]:
    """``composite.context(model)`` with the same canonizers and rules, applied without zennit's
    hooks: each module with a rule runs its forward without an autograd graph and becomes one
    node whose backward is the rule (:class:`_RuleFn`). The relevance is zennit's; the original
    backward through the module, which zennit computes and then replaces, is skipped (about a
    third of the backward work on EfficientNet-Lite0), and nothing is cloned per module.

    Rules other than zennit ``Hook`` subclasses, and modules whose ``forward`` is already
    overridden on the instance, use zennit's own registration; a ruled module called with
    several inputs or keyword arguments on the relevance path raises (a rule explains one input).
    """
    from zennit.core import Hook

    handles: list = []
    overridden: list[nn.Module] = []
    try:
        for canonizer in getattr(composite, "canonizers", None) or []:
            handles.extend(canonizer.apply(model))
        ctx: dict = {}
        for name, child in model.named_modules():
            template = composite.module_map(ctx, name, child)
            if template is None:
                continue
            hook = template.copy()
            if not isinstance(hook, Hook) or "forward" in child.__dict__:
                handles.append(hook.register(child))
                continue
            original = child.forward

            def wrapped(*args, _orig=original, _hook=hook, _mod=child, _name=name, **kwargs):
                if not torch.is_grad_enabled() or not any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
                    return _orig(*args, **kwargs)
                if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
                    raise RuntimeError(
                        f"module {_name!r} ({type(_mod).__name__}) has the LRP rule {type(_hook).__name__} but is "
                        "called with several inputs or keyword arguments; a rule explains one input"
                    )
                return _RuleFn.apply(args[0], _orig, _hook, _mod)

            child.forward = wrapped
            overridden.append(child)
        yield model
    finally:
        for child in overridden:
            child.__dict__.pop("forward", None)
        for h in reversed(handles):
            h.remove()


class _Stop(Exception):
    """Raised by a forward hook once the start layer has run: nothing above it is needed."""


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def start_relevance(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    init: Callable[[torch.Tensor], torch.Tensor],
    composite,
    *,
    record: Sequence[str] = (),
    check_layer: bool = True,
    image_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Local LRP: relevance ``init(activation)`` started at ``layer``, propagated to the input.

    The forward pass stops once ``layer`` has run (a local start needs nothing above it), with
    the composite's canonizers and rules applied by :func:`fast_rules`; this is what
    zennit-crp's ``CondAttribution(start_layer=layer, init_rel=init)`` computes, without the
    forward pass above the layer and without the backward that zennit's hooks discard.

    Args:
        model: the network (eval mode and ``requires_grad`` flags restored).
        images: ``[n, C, H, W]`` float model inputs (moved to the model's device).
        layer: a layer name (``"name"``, ``"name@i"``, ``"name[j]"``).
        init: ``activation -> initial relevance`` of the same shape.
        composite: a zennit composite (e.g. :func:`resolve_composite`).
        record: module names below ``layer`` whose output relevance is returned.
        check_layer: first run one sample without stopping, so that a plain name of a module
            called several times is refused (as in collection) rather than read at its first call.
        image_index: None (start i on ``images[i]``), or LongTensor ``[n]``: ``images`` are
            distinct inputs and start i runs on ``images[image_index[i]]``. The forward pass
            then runs once per distinct image; the starts of one image share it and the rules'
            forward work (:class:`ZPlusConserving` keeps it), one backward pass per round (the
            r-th start of every image). ``init`` receives ``activation[image_index]`` ``[n, ...]``.
            Not combinable with ``record``.

    Returns:
        ``(input_relevance [n, C, H, W], {name: relevance at the output [n, ...]})`` on the
        model's device, detached.

    On the CPU, image inputs run in the channels-last layout (mkldnn's convolutions: about 30 %
    less time for EfficientNet-Lite0's crop step on 1-2 cores); a model whose forward refuses
    that layout (a ``.view`` of a permuted tensor) is rerun, and from then on run, contiguous.
    """
    fmt = torch.contiguous_format
    if images.dim() == 4 and _model_device(model).type == "cpu" and model not in _CONTIGUOUS_ONLY:
        fmt = torch.channels_last
    kw = dict(record=record, check_layer=check_layer, image_index=image_index)
    if fmt is torch.contiguous_format:
        return _start_relevance(model, images, layer, init, composite, **kw)
    try:
        return _start_relevance(model, images, layer, init, composite, memory_format=fmt, **kw)
    except RuntimeError as e:
        if "view" not in str(e) and "contiguous" not in str(e):
            raise
        _CONTIGUOUS_ONLY[model] = True
        return _start_relevance(model, images, layer, init, composite, **kw)


#: models whose forward refused channels-last inputs: run contiguous (weak keys)
_CONTIGUOUS_ONLY: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


def _start_relevance(model, images, layer, init, composite, *, record, check_layer, image_index,
                     memory_format: torch.memory_format = torch.contiguous_format):
    """:func:`start_relevance` (same arguments) with the input in ``memory_format``."""
    from .hooks import LayerCapture

    device = _model_device(model)
    data = images.detach().to(device=device, dtype=torch.float32).clone(memory_format=memory_format).requires_grad_(True)
    names = list(dict.fromkeys([layer, *record]))
    if image_index is not None:
        if record:
            raise ValueError("record is not available with image_index (shared forward passes)")
        image_index = torch.as_tensor(image_index).long()
        if image_index.dim() != 1 or (image_index.numel() and (int(image_index.min()) < 0 or int(image_index.max()) >= images.shape[0])):
            raise ValueError(f"image_index must be a LongTensor [n] with values in [0, {images.shape[0]}), got {image_index!r}")
    with lrp_context(model), torch.inference_mode(False), torch.enable_grad():
        model.requires_grad_(False)
        if check_layer:
            with torch.no_grad(), LayerCapture(model, [layer]) as probe:
                model(data[:1].detach())
                probe.check()
        with fast_rules(composite, model) as modified, LayerCapture(model, names, retain_grad=True) as cap:
            spec_module = dict(model.named_modules())[cap.resolved[layer][0].module]

            def stop(module, inputs, output):
                if layer in cap.outputs:
                    raise _Stop

            handle = spec_module.register_forward_hook(stop)
            try:
                modified(data)
            except _Stop:
                pass
            finally:
                handle.remove()
            if layer not in cap.outputs:
                cap.check()
                raise RuntimeError(f"layer {layer!r} produced no output in the forward pass")
            act = cap.outputs[layer]
            if not act.requires_grad:
                raise RuntimeError(f"layer {layer!r}: its output does not depend on the input")
            if image_index is not None:
                return _shared_rounds(act, data, init, image_index), {}
            rel0 = init(act.detach())
            act.backward(rel0)
            recorded = {}
            for name in record:
                t = cap.outputs.get(name)
                recorded[name] = (t.grad.detach() if t is not None and t.grad is not None
                                  else torch.zeros_like(t) if t is not None else None)
            recorded[layer] = rel0
    heat = data.grad.detach()
    return heat, recorded


def _shared_rounds(act: torch.Tensor, data: torch.Tensor, init, image_index: torch.Tensor) -> torch.Tensor:
    """Input relevance ``[n, C, H, W]`` of n starts on u distinct images (act ``[u, ...]``,
    data ``[u, C, H, W]``): round r runs the r-th start of every image in one backward pass."""
    idx = image_index.to(act.device).long()
    rel0 = init(act.detach()[idx])  # [n, ...]
    n = idx.numel()
    order = torch.argsort(idx, stable=True)
    counts = torch.bincount(idx, minlength=act.shape[0])
    first = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(idx)
    rank[order] = torch.arange(n, device=idx.device) - first[idx[order]]
    rounds = int(rank.max()) + 1 if n else 0
    heat = data.new_empty(n, *data.shape[1:])
    for r in range(rounds):
        rows = (rank == r).nonzero().squeeze(1)
        start = torch.zeros_like(act)
        start[idx[rows]] = rel0[rows]
        (grad,) = torch.autograd.grad(act, data, start, retain_graph=r < rounds - 1)
        heat[rows] = grad[idx[rows]]
    return heat.detach()


def conservation(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    components: torch.Tensor | None = None,
    composite=None,
    *,
    record: Sequence[str] = (),
    absolute: bool = False,
    peak: bool = True,
):
    """How much of a local CRP start's relevance arrives at each recorded layer and at the input.

    The start is what the crops use (:func:`component_start`: component ``components[i]`` of
    image i at ``layer``, default: each image's most active component by its peak). For every
    recorded module (below ``layer``) and for the input, the ratio ``sum(relevance) /
    sum(start relevance)`` per image; 1.0 is perfect conservation.

    Args:
        model, images ``[n, C, H, W]``, layer: as :func:`start_relevance`.
        components: LongTensor ``[n]`` or None.
        composite: None: :func:`resolve_composite` (model) with ``images`` as example input.
        record: module names (e.g. the blocks of the network) in forward order; those above
            ``layer`` are skipped.

    Returns:
        pandas DataFrame with one row per recorded layer plus ``"input"``, ordered from the
        start layer down to the input: ``layer, median, q10, q90, min, n``.
    """
    import pandas as pd

    if composite is None:
        composite = resolve_composite(model, example_input=images[:2])
    if components is None:
        from .hooks import LayerCapture

        with torch.no_grad(), lrp_context(model), LayerCapture(model, [layer]) as cap:
            model(images.to(_model_device(model)))
            act = cap.outputs[layer]
        pooled = act.flatten(2).amax(-1) if act.dim() > 2 else act
        if act.dim() == 3:
            pooled = act.amax(1)
        components = pooled.argmax(1).cpu()
    components = torch.as_tensor(components).long()

    def init(act):
        return component_start(act, components, absolute=absolute, peak=peak)

    heat, rec = start_relevance(model, images, layer, init, composite, record=list(record))
    start = rec[layer].flatten(1).sum(1)
    rows = []
    order = [name for name in reversed(list(record)) if rec.get(name) is not None]
    for name in [*order, "input"]:
        r = heat if name == "input" else rec[name]
        rows.append(dict(layer=name, **ratio_summary(r.flatten(1).sum(1), start)))
    return pd.DataFrame(rows, columns=["layer", *SUMMARY_COLUMNS])


#: the columns of :func:`ratio_summary` (and of the conservation tables)
SUMMARY_COLUMNS = ("median", "q10", "q90", "min", "n")


def ratio_summary(sums: torch.Tensor, start: torch.Tensor) -> dict:
    """Conservation of relevance over n starts: the ratios ``sums[i] / start[i]`` (``[n]`` each;
    1.0 is perfect), summarised as ``median, q10, q90, min`` and ``n`` (starts with a positive
    start relevance; the others have no ratio). NaN statistics when n is 0."""
    sums, start = sums.detach().double().cpu().reshape(-1), start.detach().double().cpu().reshape(-1)
    ok = start > 0
    ratio = sums[ok] / start[ok]
    if not ratio.numel():
        return dict(median=float("nan"), q10=float("nan"), q90=float("nan"), min=float("nan"), n=0)
    return dict(median=float(ratio.median()), q10=float(ratio.quantile(0.1)), q90=float(ratio.quantile(0.9)),
                min=float(ratio.min()), n=int(ratio.numel()))


def low_conservation(table, threshold: float = 0.5) -> list[str]:
    """Warnings for the layers of a :func:`conservation` table whose median ratio is below
    ``threshold``: one message naming the first such layer (from the start down) and the input."""
    msgs = []
    below = table[table["median"] < threshold]
    if len(below):
        first = below.iloc[0]
        msgs.append(
            f"LRP relevance is not conserved: at {first['layer']!r} the median sum is "
            f"{first['median']:.2f} of the start relevance (threshold {threshold}); heatmap crops "
            "keep their shape, but relevance values (relevance(), audit, attribution graph) lose "
            "mass from there on. Pass a composite / canonizers that cover this layer."
        )
    return msgs


def conservation_warning(row: dict, low: float = 0.5, high: float = 2.0) -> str | None:
    """The warning for one layer's CRP heatmaps (a :func:`ratio_summary` row with its ``layer``:
    the input heatmap sums over the start relevance of local starts at that layer), or None.

    Low: the median ratio is below ``low``. Unstable: the median is fine but one heatmap in ten
    holds less than ``low`` or more than ``high`` times its start (``q10`` / ``q90``; AttnLRP on
    a ViT with random weights: median 0.9-1.2, q90 1.6-3.5). Crop boxes only use a heatmap's
    shape; relevance values (``relevance``, class relevance, the audit, attribution graphs)
    are what such a set-up makes unreliable.
    """
    median, q10, q90, n = row.get("median"), row.get("q10"), row.get("q90"), row.get("n", 0)
    if not n or median != median:  # no start with positive relevance: nothing measured
        return None
    layer = row.get("layer")
    if median < low:
        what = f"is not conserved: the median input heatmap sum is {median:.2f} of the start relevance"
    elif q10 < low or q90 > high:
        what = (f"is not conserved reliably: the input heatmap sums range from {q10:.2f} to {q90:.2f} of the start "
                f"relevance (10-90 %, median {median:.2f})")
    else:
        return None
    return (f"layer {layer!r}: LRP relevance {what} over {n} concept examples. Crop boxes use only the heatmaps' "
            "shape, but relevance values (lens.relevance, class relevance, the audit, attribution graphs) are "
            "unreliable with this LRP set-up; pass composite= / canonizers= whose rules conserve relevance for "
            "this model, or use crop='activation' (recommended for ViTs unless lens.conservation() is close to "
            "1 with a narrow range)")
