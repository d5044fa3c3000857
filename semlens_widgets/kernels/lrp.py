"""LRP rules and canonizers for the CRP crops and relevances (DESIGN eq. 1 crop, eq. 3, eq. 9).

One entry point, :func:`make_composite`, returns a zennit ``Composite`` whose canonizers are
chosen for the architecture by :func:`canonizers_for`:

- torchvision ``ResNet`` (or any model containing torchvision ``BasicBlock``/``Bottleneck``):
  ``zennit.torchvision.ResNetCanonizer`` (merges BatchNorm into the preceding conv and routes
  the residual addition through a ``Sum`` module so the Norm rule conserves relevance there).
- torchvision ``VGG``: ``zennit.torchvision.VGGCanonizer``.
- anything else with BatchNorm layers: ``zennit.canonizers.SequentialMergeBatchNorm`` (merges a
  BatchNorm into the linear/conv module that directly precedes it in module order).
- no BatchNorm: no canonizer.

Canonizers change the model in place only inside ``composite.context(model)`` (zennit restores
the parameters and the forward methods on exit). Checked on torch 2.x with zennit 0.4.6: the
merged model computes the same function, relevance is conserved through ZPlus/Flat/Norm layers,
and parameters are bit-identical after the context (tests/test_lrp.py). Known zennit 0.4.6
quirks and how they are handled here:

- ``MergeBatchNorm`` reduces the BatchNorm to ``(x - 0) / sqrt(1 + eps)`` instead of the exact
  identity (it keeps ``eps``); the function changes by a factor ``1/sqrt(1 + eps)`` (~5e-6 for
  the default eps) per merged BatchNorm, which is harmless for heatmaps and crops.
- ``MergeBatchNorm`` merges only in eval mode semantics (running statistics). Callers must run
  the model in eval mode; :func:`lrp_context` does that and restores the training flag.

:func:`supports_lrp` returns False for models with modules that have no LRP rule here (ViTs:
attention, LayerNorm, GELU; unknown custom leaf modules); the "activation" crop mode is used
for them instead.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = [
    "RULES",
    "make_composite",
    "canonizers_for",
    "supports_lrp",
    "unsupported_modules",
    "lrp_context",
]

#: composite names accepted by :func:`make_composite` -> zennit composite class name
RULES = {
    "epsilon_plus_flat": "EpsilonPlusFlat",
    "epsilon_plus": "EpsilonPlus",
    "epsilon_alpha2_beta1_flat": "EpsilonAlpha2Beta1Flat",
    "epsilon_alpha2_beta1": "EpsilonAlpha2Beta1",
}

# Leaf module types that the composites above handle (a rule, Pass, Norm, or plain gradient
# that is LRP-correct: max-pooling, dropout in eval, flatten, identity).
_LRP_LEAVES: tuple[type, ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Dropout,
    nn.Dropout2d,
    nn.Dropout1d,
    nn.Identity,
)

# Containers whose forward only chains children (so the leaves tell the whole story).
_PLAIN_CONTAINERS: tuple[type, ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _torchvision_types() -> dict[str, tuple[type, ...]]:
    try:
        from torchvision.models import VGG, ResNet
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return {"resnet": (), "resnet_blocks": (), "vgg": ()}
    return {"resnet": (ResNet,), "resnet_blocks": (BasicBlock, Bottleneck), "vgg": (VGG,)}


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def canonizers_for(model: nn.Module) -> list:
    """Zennit canonizers for ``model``'s architecture (see the module docstring).

    Returns a list of fresh canonizer instances (possibly empty).
    """
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tv = _torchvision_types()
    if isinstance(model, tv["resnet"]) or any(isinstance(m, tv["resnet_blocks"]) for m in model.modules()):
        return [ResNetCanonizer()]
    if isinstance(model, tv["vgg"]):
        return [VGGCanonizer()]
    if _has_batchnorm(model):
        return [SequentialMergeBatchNorm()]
    return []


def make_composite(model: nn.Module, rule: str = "epsilon_plus_flat", *, zero_bias: bool = True):
    """The zennit ``Composite`` for CRP on ``model`` with the canonizers of :func:`canonizers_for`.

    Args:
        model: the network the composite will be applied to (``composite.context(model)``).
        rule: one of :data:`RULES` (default ``"epsilon_plus_flat"``: Flat on the first linear
            layer, ZPlus on convolutions, Epsilon on dense layers; the SemanticLens default).
        zero_bias: when True (default) the biases take no relevance in any rule (what newer
            zennit spells ``zero_params="bias"``), so relevance is conserved from the start
            layer to the input up to the epsilon stabiliser. zennit 0.4.6's stock ZPlus keeps
            the positive bias in its numerator/denominator, and the biases that merged
            BatchNorms leave behind then absorb a share of the relevance (8-30 % on small
            random CNNs in tests/test_lrp.py). False gives the stock 0.4.6 rules.

    Returns:
        the zennit composite (an instance of the class named in :data:`RULES`); use it with
        ``composite.context(model)`` or pass it to ``crp.attribution.CondAttribution``.

    Raises:
        ValueError: unknown ``rule``, or a model without LRP support (see :func:`supports_lrp`).
    """
    import zennit.composites as zc

    if rule not in RULES:
        raise ValueError(f"unknown LRP rule {rule!r}; accepted: {list(RULES)}")
    bad = unsupported_modules(model)
    if bad:
        raise ValueError(
            f"model {type(model).__name__} has modules without LRP rules: {bad[:5]}"
            f"{' ...' if len(bad) > 5 else ''}; use crop='activation' (or 'full') for it"
        )
    composite = getattr(zc, RULES[rule])(canonizers=canonizers_for(model))
    if zero_bias:
        _zero_biases(composite)
    return composite


def _zero_bias_modifier(modifier):
    def modified(param: torch.Tensor, name: str) -> torch.Tensor:
        return torch.zeros_like(param) if name == "bias" else modifier(param, name)

    return modified


def _zero_biases(composite) -> None:
    """Make every BasicHook rule of ``composite`` treat biases as zero (in place).

    zennit's ``BasicHook.copy`` keeps ``param_modifiers``, so the per-module copies that the
    composite registers inherit the change.
    """
    from zennit.core import BasicHook

    maps = list(getattr(composite, "layer_map", [])) + list(getattr(composite, "first_map", []))
    for _, hook in maps:
        if isinstance(hook, BasicHook):
            hook.param_modifiers = [_zero_bias_modifier(f) for f in hook.param_modifiers]


def unsupported_modules(model: nn.Module) -> list[str]:
    """Names and types (``"name (Type)"``) of the modules that have no LRP rule here.

    - A leaf module is supported when it is a conv / linear / batch-norm / ReLU / pooling /
      flatten / dropout / identity module whose ``forward`` is not overridden.
    - A module with children is supported when it is a plain container
      (Sequential/ModuleList/ModuleDict), a torchvision ResNet / VGG or ResNet block (handled by
      the canonizers), or when ``torch.fx`` shows that its ``forward`` only chains submodules
      (plus flatten / view / reshape / ReLU). Residual additions, concatenations, means,
      attention and normalisation in a custom ``forward`` are reported, since plain gradients
      through them do not follow an LRP rule. The root model is checked like any block.

    Attention, LayerNorm and GELU (ViTs) are therefore reported.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tv = _torchvision_types()
    allowed_blocks = tv["resnet"] + tv["resnet_blocks"] + tv["vgg"]
    bad = []
    for name, mod in model.named_modules():
        label = name or "<root>"
        if next(mod.children(), None) is None:
            if not _leaf_ok(mod):
                bad.append(f"{label} ({type(mod).__name__})")
        elif isinstance(mod, _PLAIN_CONTAINERS + allowed_blocks):
            if type(mod).forward is not next(b for b in _PLAIN_CONTAINERS + allowed_blocks if isinstance(mod, b)).forward:
                if not _is_plain_chain(mod):
                    bad.append(f"{label} ({type(mod).__name__}, custom forward)")
        elif not _is_plain_chain(mod):
            bad.append(f"{label} ({type(mod).__name__}, custom forward)")
    return bad


def _leaf_ok(mod: nn.Module) -> bool:
    for base in _LRP_LEAVES:
        if isinstance(mod, base):
            return type(mod).forward is base.forward
    return False


_CHAIN_FUNCTIONS = {torch.flatten, torch.relu, torch.nn.functional.relu}
_CHAIN_METHODS = {"flatten", "view", "reshape", "relu", "contiguous", "size"}


def _is_plain_chain(module: nn.Module) -> bool:
    """True if ``module.forward`` only calls submodules (plus reshapes / ReLU), per torch.fx."""
    import operator

    import torch.fx

    class _ShallowTracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:  # children are checked on their own
            return True

    try:
        graph = _ShallowTracer().trace(module)
    except Exception:
        return False
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "call_module", "get_attr"):
            continue
        if node.op == "call_function" and (node.target in _CHAIN_FUNCTIONS or node.target is getattr
                                           or node.target is operator.getitem):
            continue
        if node.op == "call_method" and node.target in _CHAIN_METHODS:
            continue
        return False
    return True


def supports_lrp(model: nn.Module) -> bool:
    """True if every module of ``model`` has an LRP rule (see :func:`unsupported_modules`).

    False for ViTs and models with unknown operations: use activation crops for them.
    """
    return not unsupported_modules(model)


@contextlib.contextmanager
def lrp_context(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad`` flags restored on exit (CondAttribution clears them)."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
