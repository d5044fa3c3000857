"""LRP on the CNNs people audit: one traced mechanism instead of per-architecture canonizers.

Real networks (torchvision / timm ResNets, EfficientNets, MobileNets, ConvNeXt, the
efficientnet-pytorch family) compute much of their forward pass *between* modules: residual
additions, squeeze-excitation gates, layer scales and LayerNorms written in a block's
``forward``, convolutions that pad in their own ``forward``, BatchNorms that are not the leaf
sibling of their convolution. zennit's rules are attached to modules, so those functional
operations would be differentiated with plain gradients, which is not LRP: relevance doubles at
every residual addition and leaks into squeeze-excitation branches. This module makes them LRP
operations without knowing the architecture:

1. :class:`FunctionalRules` (a zennit ``Canonizer``) runs the model's forward pass under a
   ``torch`` function mode that gives the functional operations on activations an LRP rule
   (in zennit's convention the gradient that flows *is* the relevance):

   - ``a + b`` (and ``a - b``, in place or not) of two activations: the z-rule of a sum,
     ``R_a = a / (a + b) R`` (what ``zennit.layer.Sum`` + ``Norm`` computes; stabiliser
     ``eps`` with the sign of the denominator).
   - ``a * b`` of two activations (squeeze-excitation, gating): the gate is a constant, all
     relevance passes to the other operand ("gate" = the output of a sigmoid / hard sigmoid,
     else the operand with fewer elements; two equal ungated operands share it equally).
     ``a * c`` / ``a / c`` with a constant ``c`` (layer scale, drop-path scaling) passes the
     relevance unchanged (the z-rule of a one-input product).
   - activations without a ReLU-like gradient (SiLU, GELU, Hardswish, Mish, ELU, ...), and
     normalisations (LayerNorm, GroupNorm, a BatchNorm that could not be merged): the
     identity ("pass") rule, as zennit's ``Pass`` for activation modules; a LayerNorm's
     statistics are treated as constants (the identity rule AttnLRP, Achtibat et al. 2024,
     uses for them).
   - everything else keeps its gradient: reshapes, padding, concatenation, max pooling (the
     relevance goes to the maximum), mean pooling (split evenly; conservative).

2. :class:`TracedMergeBatchNorm` merges every BatchNorm into the convolution / linear layer
   whose output it alone consumes, found by running the model once and following tensor
   identities (so non-sibling modules, depthwise convolutions, padded ``Conv2d`` subclasses and
   timm's ``BatchNormAct2d`` are merged too). The trace runs on the first forward pass inside
   the composite context (hooks suspended, one sample) and is cached per model.

3. :func:`trace_model` also audits the forward pass: every operation on the relevance path that
   neither a zennit rule nor (1) covers is reported with its module (attention's matrix
   products and softmax, custom autograd functions), which is how :mod:`.lrp` refuses a model
   with a message that names the module.

A ``Conv2d`` subclass that pads in its own ``forward`` needs nothing: zennit's rules re-run the
module's ``forward`` with modified parameters, so the padding is part of the rule (zero inputs
take no relevance; the Flat rule pads its ones with zeros as well).
"""
from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from zennit.canonizers import Canonizer, MergeBatchNorm

__all__ = [
    "FunctionalRules",
    "TracedMergeBatchNorm",
    "Trace",
    "trace_model",
    "default_canonizers",
]

EPS = 1e-6

_ADD = {"add", "add_", "__add__", "__radd__", "__iadd__"}
_SUB = {"sub", "sub_", "__sub__", "__isub__", "subtract"}
_MUL = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"}
_DIV = {"div", "div_", "__truediv__", "__itruediv__", "true_divide", "divide"}
_PASS = {
    # activations whose gradient is not LRP (zennit's Pass rule for their modules)
    "silu", "gelu", "hardswish", "mish", "elu", "selu", "celu", "softplus", "leaky_relu",
    "hardtanh", "relu6",
    # normalisations: statistics as constants, the affine part carries the relevance through
    "layer_norm", "group_norm", "batch_norm", "instance_norm", "rms_norm",
}
_GATES = {"sigmoid", "hardsigmoid"}
# operations whose gradient is already a conservative relevance flow
_SAFE = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "contiguous", "clone",
    "unsqueeze", "squeeze", "expand", "expand_as", "view_as", "reshape_as", "__getitem__",
    "cat", "concat", "concatenate", "stack", "split", "chunk", "narrow", "unbind", "pad",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices", "amax", "max",
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "mean", "sum", "relu", "relu_", "threshold", "dropout", "dropout1d",
    "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "to", "float", "type_as",
    "half", "double", "__get__", "detach", "flip", "roll", "movedim", "select", "index_select",
    "interpolate", "upsample", "upsample_nearest2d", "pixel_shuffle", "pixel_unshuffle",
    "identity", "float_power",
}
_MATMUL = {"matmul", "__matmul__", "bmm"}
_ATTENTION = {"softmax", "scaled_dot_product_attention"}
_HANDLED = _ADD | _SUB | _MUL | _DIV | _PASS | _GATES | _MATMUL | _ATTENTION


def _is_act(t: Any) -> bool:
    """An activation: a tensor on the relevance path (requires grad), not a parameter."""
    return isinstance(t, torch.Tensor) and t.requires_grad and not isinstance(t, nn.Parameter)


def _name(func: Any) -> str:
    return getattr(func, "__name__", "") or ""


# ----------------------------------------------------------------------------- rules


class _SumRule(torch.autograd.Function):
    """``out = a + alpha * b``; backward: ``R_a = a R / z``, ``R_b = alpha b R / z`` (z-rule)."""

    @staticmethod
    def forward(ctx, a, b, alpha, eps):  # noqa: D102
        ctx.alpha, ctx.eps = alpha, eps
        ctx.save_for_backward(a, b)
        return a + alpha * b

    @staticmethod
    def backward(ctx, rel):  # noqa: D102
        a, b = ctx.saved_tensors
        za, zb = a, ctx.alpha * b
        z = za + zb
        z = z + ctx.eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        share = rel / z
        return (za * share).sum_to_size(a.shape), (zb * share).sum_to_size(b.shape), None, None


class _GateMul(torch.autograd.Function):
    """``out = value * gate``; backward: all relevance to ``value``, none to the gate."""

    @staticmethod
    def forward(ctx, value, gate):  # noqa: D102
        ctx.shape, ctx.gate_shape = value.shape, gate.shape
        return value * gate

    @staticmethod
    def backward(ctx, rel):  # noqa: D102
        # zeros, not None: zennit's rules in the gate branch expect a relevance tensor
        return rel.sum_to_size(ctx.shape), rel.new_zeros(ctx.gate_shape)


class _ShareMul(torch.autograd.Function):
    """``out = a * b`` of two equal, ungated operands; backward: half of the relevance each."""

    @staticmethod
    def forward(ctx, a, b):  # noqa: D102
        ctx.shapes = (a.shape, b.shape)
        return a * b

    @staticmethod
    def backward(ctx, rel):  # noqa: D102
        half = rel / 2
        return half.sum_to_size(ctx.shapes[0]), half.sum_to_size(ctx.shapes[1])


class _PassOp(torch.autograd.Function):
    """``out = compute(x)`` (an elementwise op of ``x``, computed without a graph); backward:
    the identity to ``x`` (the pass rule)."""

    @staticmethod
    def forward(ctx, x, compute):  # noqa: D102
        ctx.shape = x.shape
        return compute(x)

    @staticmethod
    def backward(ctx, rel):  # noqa: D102
        return rel.sum_to_size(ctx.shape), None


def _stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class _MatmulRule(torch.autograd.Function):
    """``out = a @ b``; backward: the epsilon rule on the contributions ``a_ik b_kj``, the
    relevance split evenly between two activations (AttnLRP's uniform rule, Achtibat et al.
    2024, eq. 7); all of it to ``a`` when ``b`` is a constant (a linear map)."""

    @staticmethod
    def forward(ctx, a, b, eps):  # noqa: D102
        ctx.eps = eps
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, rel):  # noqa: D102
        a, b = ctx.saved_tensors
        both = ctx.needs_input_grad[0] and ctx.needs_input_grad[1]
        share = 0.5 if both else 1.0
        g = rel / _stab(a @ b, ctx.eps)
        ra = rb = None
        if ctx.needs_input_grad[0]:
            ra = (share * a * (g @ b.transpose(-1, -2))).sum_to_size(a.shape)
        if ctx.needs_input_grad[1]:
            rb = (share * b * (a.transpose(-1, -2) @ g)).sum_to_size(b.shape)
        return ra, rb, None


class _SoftmaxRule(torch.autograd.Function):
    """``s = softmax(x)``; backward: AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.3):
    ``R_x = x (R - s sum(R))`` (the softmax linearised at x; its bias takes a share)."""

    @staticmethod
    def forward(ctx, x, dim):  # noqa: D102
        s = torch.softmax(x, dim)
        ctx.dim = dim
        ctx.save_for_backward(x, s)
        return s

    @staticmethod
    def backward(ctx, rel):  # noqa: D102
        x, s = ctx.saved_tensors
        return x * (rel - s * rel.sum(ctx.dim, keepdim=True)), None


class _AttentionRule(torch.autograd.Function):
    """``softmax(q k^T scale) v`` (``F.scaled_dot_product_attention`` without mask or dropout)
    with AttnLRP's rules: uniform epsilon rule on both products, the softmax rule between."""

    @staticmethod
    def forward(ctx, q, k, v, scale, eps):  # noqa: D102
        s = (q @ k.transpose(-1, -2)) * scale
        a = torch.softmax(s, -1)
        ctx.scale, ctx.eps = scale, eps
        ctx.save_for_backward(q, k, v, a)
        return a @ v

    @staticmethod
    def backward(ctx, rel):  # noqa: D102
        q, k, v, a = ctx.saved_tensors
        g = rel / _stab(a @ v, ctx.eps)
        r_a = 0.5 * a * (g @ v.transpose(-1, -2))
        r_v = 0.5 * v * (a.transpose(-1, -2) @ g)
        # softmax rule R_s = s (R_a - a sum R_a), then the epsilon rule on s = q k^T scale
        # divides by s again: both cancel exactly, so h = R_s / s without dividing by a logit
        h = (r_a - a * r_a.sum(-1, keepdim=True)) * ctx.scale
        r_q = 0.5 * q * (h @ k)
        r_k = 0.5 * k * (h.transpose(-1, -2) @ q)
        return r_q, r_k, r_v, None, None


for _fn in (_SumRule, _GateMul, _ShareMul, _PassOp, _MatmulRule, _SoftmaxRule, _AttentionRule):
    _fn.lrp_rule = True  # an autograd function that is an LRP rule (the audit accepts it)


def _inplace(name: str) -> bool:
    return name.endswith("_") and not name.endswith("__") or name.startswith("__i")


def _out_of_place(name: str) -> Any:
    for family, fn in ((_ADD, torch.add), (_SUB, torch.sub), (_MUL, torch.mul), (_DIV, torch.div)):
        if name in family:
            return fn
    raise KeyError(name)


def _rule_applies(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether :class:`FunctionalRules` gives this call of a handled operation an LRP rule
    (the audit of :func:`trace_model`); the calls it leaves to autograd are reported."""
    if name in _DIV:
        _, b = _binary_args(name, args, kwargs)
        return not _is_act(b)
    if name == "scaled_dot_product_attention":
        extra = dict(zip(("attn_mask", "dropout_p", "is_causal"), args[3:]))
        extra.update(kwargs)
        return extra.get("attn_mask") is None and not extra.get("dropout_p") and not extra.get("is_causal") \
            and not extra.get("enable_gqa")
    if name == "softmax":
        return kwargs.get("dtype") is None and len(args) <= 2 and (len(args) == 2 or "dim" in kwargs)
    return True


def _binary_args(name: str, args: tuple, kwargs: dict) -> tuple[Any, Any]:
    a = args[0]
    b = args[1] if len(args) > 1 else kwargs.get("other")
    return a, b


class _RuleMode(TorchFunctionMode):
    """Torch function mode that applies the functional LRP rules while ``active`` (set by
    :class:`FunctionalRules` around the root module's forward pass)."""

    def __init__(self, eps: float = EPS):
        super().__init__()
        self.eps = eps
        self.active = False
        self.gates: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            not self.active
            or not torch.is_grad_enabled()
            or torch._C._current_graph_task_id() != -1  # inside a backward pass (zennit's rules)
        ):
            return func(*args, **kwargs)
        name = _name(func)
        if name not in _HANDLED or "out" in kwargs:
            return func(*args, **kwargs)
        if name in _GATES:
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                self.gates[id(out)] = out
            return out
        if name in _PASS:
            x = args[0] if args else kwargs.get("input")
            if not _is_act(x):
                return func(*args, **kwargs)
            kw = {k: v for k, v in kwargs.items() if k != "inplace"}
            rest = args[1:] if args else ()
            if not args:
                kw = {k: v for k, v in kw.items() if k != "input"}
            return _PassOp.apply(x, lambda xx: func(xx, *rest, **kw))
        if name == "softmax":
            x = args[0] if args else kwargs.get("input")
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if not _is_act(x) or dim is None or kwargs.get("dtype") is not None or len(args) > 2:
                return func(*args, **kwargs)
            return _SoftmaxRule.apply(x, dim)
        if name == "scaled_dot_product_attention":
            q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")][len(args):])[:3]
            extra = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale"), args[3:]))
            extra.update({n: kwargs[n] for n in ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa") if n in kwargs})
            if (extra.get("attn_mask") is not None or extra.get("dropout_p", 0.0) or extra.get("is_causal")
                    or extra.get("enable_gqa") or not all(_is_act(t) for t in (q, k, v))):
                return func(*args, **kwargs)
            scale = extra.get("scale")
            scale = q.shape[-1] ** -0.5 if scale is None else scale
            return _AttentionRule.apply(q, k, v, scale, self.eps)
        a, b = _binary_args(name, args, kwargs)
        if name in _MATMUL:
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or not (_is_act(a) or _is_act(b)):
                return func(*args, **kwargs)
            return _MatmulRule.apply(a, b, self.eps)
        if name in _ADD or name in _SUB:
            if not (_is_act(a) and _is_act(b)):
                return func(*args, **kwargs)  # activation + constant: the gradient passes it on
            alpha = kwargs.get("alpha", 1)
            alpha = -alpha if name in _SUB else alpha
            return self._finish(name, a, lambda aa: _SumRule.apply(aa, b, alpha, self.eps))
        if name in _DIV:
            if _is_act(a) and not _is_act(b):
                kw = {k: v for k, v in kwargs.items() if k == "rounding_mode"}
                return self._finish(name, a, lambda aa: _PassOp.apply(aa, lambda xx: torch.div(xx, b, **kw)))
            return func(*args, **kwargs)
        # multiplication
        acts = [t for t in (a, b) if _is_act(t)]
        if not acts:
            return func(*args, **kwargs)
        if len(acts) == 1:
            if acts[0] is a:
                return self._finish(name, a, lambda aa: _PassOp.apply(aa, lambda xx: torch.mul(xx, b)))
            if _inplace(name):  # constant *= activation: leave it to autograd
                return func(*args, **kwargs)
            return _PassOp.apply(b, lambda xx: torch.mul(a, xx))
        gated = [self.gates.get(id(t)) is t for t in (a, b)]
        if gated[0] != gated[1]:
            value, gate = (b, a) if gated[0] else (a, b)
        elif a.numel() != b.numel():
            value, gate = (a, b) if a.numel() > b.numel() else (b, a)
        else:
            return self._finish(name, a, lambda aa: _ShareMul.apply(aa, b))
        if value is b and _inplace(name):
            return func(*args, **kwargs)
        return self._finish(name, a, lambda aa: _GateMul.apply(aa, gate) if value is a else _GateMul.apply(value, aa))

    @staticmethod
    def _finish(name: str, a: torch.Tensor, compute) -> torch.Tensor:
        """Out of place: ``compute(a)``. In place (``a += b``, ``a.mul_(b)``): the rule is computed
        on a clone of ``a`` (the saved operand stays unmodified) and copied back into ``a``."""
        if not _inplace(name):
            return compute(a)
        out = compute(a.clone())
        a.copy_(out)
        return a


class FunctionalRules(Canonizer):
    """zennit ``Canonizer``: LRP rules for the functional operations of the forward pass (see the
    module docstring, part 1). Registered for the duration of a composite context; the rules
    apply only inside the root module's forward pass."""

    def __init__(self, eps: float = EPS):
        self.eps = eps
        self.mode: _RuleMode | None = None
        self.handles: list = []

    def copy(self) -> "FunctionalRules":
        return FunctionalRules(self.eps)

    def apply(self, root_module: nn.Module) -> list:
        inst = self.copy()
        inst.register(root_module)
        return [inst]

    def register(self, root_module: nn.Module) -> None:
        mode = _RuleMode(self.eps)
        self.mode = mode

        def pre(module, args):
            mode.active = True

        def post(module, args, output):
            mode.active = False

        self.handles = [
            root_module.register_forward_pre_hook(pre),
            root_module.register_forward_hook(post, always_call=True),
        ]
        mode.__enter__()

    def deactivate(self) -> None:
        """End the rules' forward pass early (a forward stopped at a layer)."""
        if self.mode is not None:
            self.mode.active = False

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        if self.mode is not None:
            self.mode.active = False
            self.mode.__exit__(None, None, None)
            self.mode = None


# ----------------------------------------------------------------------------- trace


@dataclass
class Trace:
    """What one traced forward pass found.

    Attributes:
        merges: ``(linear_name, batchnorm_name)`` pairs: the BatchNorm alone consumes the output
            of the convolution / linear layer and can be merged into it.
        unsupported: ``"module (Type): operation"`` for every operation on the relevance path
            that neither a zennit rule of the composite nor :class:`FunctionalRules` covers.
    """

    merges: list[tuple[str, str]] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _hooks_suspended(model: nn.Module) -> Iterator[None]:
    """Run a forward pass without the module hooks (zennit's, zennit-crp's, ours) of ``model``."""
    saved = []
    for m in model.modules():
        saved.append((m, m._forward_pre_hooks, m._forward_hooks))
        m._forward_pre_hooks = OrderedDict()
        m._forward_hooks = OrderedDict()
    try:
        yield
    finally:
        for m, pre, post in saved:
            m._forward_pre_hooks = pre
            m._forward_hooks = post


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _first_sample(args: tuple) -> tuple:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0 and args[0].shape[0] > 1:
        return (args[0][:1], *args[1:])
    return args


def trace_model(model: nn.Module, example_input: torch.Tensor | tuple, composite=None) -> Trace:
    """Run ``model`` once on ``example_input`` (its first sample) and return the :class:`Trace`.

    ``composite``: the zennit composite whose rules cover whole modules (operations inside a
    module with a rule are not audited); None: zennit's ``EpsilonPlusFlat``, whose layer map
    covers the same module types as every rule set of :mod:`.lrp` (which rule each module gets
    does not change what is audited). Module hooks are suspended during the pass; eval mode, no
    parameter gradients.
    """
    from zennit.composites import EpsilonPlusFlat
    from zennit.types import BatchNorm, Linear

    if composite is None:  # zennit's, not .lrp's: .lrp imports this module (one-way imports)
        composite = EpsilonPlusFlat()
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    args = _first_sample(args)
    names = {id(m): n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    ruled = set()
    for name, mod in modules.items():
        if isinstance(mod, nn.MultiheadAttention):  # zennit 0.4.6 files it under Activation (Pass)
            continue
        with contextlib.suppress(Exception):
            if composite.module_map({}, name, mod) is not None:
                ruled.add(id(mod))

    producers: dict[int, tuple[str, torch.Tensor]] = {}
    consumers: dict[int, set[str]] = defaultdict(set)
    bn_inputs: dict[str, list[torch.Tensor]] = defaultdict(list)
    calls: dict[str, int] = defaultdict(int)
    stack: list[str] = []
    in_rule = [0]
    unsupported: list[str] = []

    def label(name: str) -> str:
        mod = modules.get(name)
        return f"{name or '<root>'} ({type(mod).__name__})" if mod is not None else name

    class _Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            owner = stack[-1] if stack else ""
            ins = list(_tensors(args)) + list(_tensors(kwargs))
            for t in ins:
                if id(t) in producers and producers[id(t)][1] is t:
                    consumers[id(t)].add(owner)
            out = func(*args, **kwargs)
            name = _name(func)
            if (
                not in_rule[0]
                and torch.is_grad_enabled()
                and any(_is_act(t) for t in ins)
                and any(_is_act(t) for t in _tensors(out))
                and name not in _SAFE
                and not (name in _HANDLED and _rule_applies(name, args, kwargs))
            ):
                entry = f"{label(owner)}: {name or func}"
                if entry not in unsupported:
                    unsupported.append(entry)
            return out

    def pre(mod, inputs):
        name = names.get(id(mod))
        if name is None:
            return
        calls[name] += 1
        for t in _tensors(inputs):
            if id(t) in producers and producers[id(t)][1] is t:
                consumers[id(t)].add(name)
        if isinstance(mod, BatchNorm):
            bn_inputs[name].extend(t for t in _tensors(inputs))
        stack.append(name)
        if id(mod) in ruled:
            in_rule[0] += 1

    def post(mod, inputs, output):
        name = names.get(id(mod))
        if name is None:
            return
        stack.pop()
        if isinstance(mod, Linear):
            for t in _tensors(output):
                producers[id(t)] = (name, t)
                break
        if id(mod) in ruled:
            in_rule[0] -= 1
            return
        if not in_rule[0]:
            for t in _tensors(output):
                fn = t.grad_fn
                if isinstance(fn, torch.autograd.function.BackwardCFunction) and not getattr(
                    getattr(fn, "_forward_cls", None), "lrp_rule", False
                ):
                    entry = f"{label(name)}: custom autograd function {type(fn).__name__}"
                    if entry not in unsupported:
                        unsupported.append(entry)

    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    xs = tuple(a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
               for a in args)
    h_pre = register_module_forward_pre_hook(pre)
    h_post = register_module_forward_hook(post)
    try:
        with _hooks_suspended(model), torch.enable_grad(), _Recorder():
            model(*xs)
    finally:
        h_pre.remove()
        h_post.remove()
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)

    merges = []
    for bn_name, ins in bn_inputs.items():
        if calls[bn_name] != 1 or len(ins) != 1:
            continue
        t = ins[0]
        prod = producers.get(id(t))
        if prod is None or prod[1] is not t:
            continue
        lin_name = prod[0]
        if calls[lin_name] == 1 and consumers[id(t)] == {bn_name}:
            merges.append((lin_name, bn_name))
    return Trace(merges=merges, unsupported=unsupported)


class TracedMergeBatchNorm(Canonizer):
    """zennit ``Canonizer``: merge each BatchNorm into the convolution / linear layer whose output
    it alone consumes (found by :func:`trace_model`; see the module docstring, part 2).

    Args:
        example_input: a model input to trace with now; None traces lazily on the first forward
            pass inside the composite context (with that pass's first sample). The trace is
            cached per model.
    """

    def __init__(self, example_input: Any = None, _cache: "weakref.WeakKeyDictionary | None" = None):
        self.example_input = example_input
        self._cache = weakref.WeakKeyDictionary() if _cache is None else _cache
        self.merged: list = []
        self.handles: list = []

    def copy(self) -> "TracedMergeBatchNorm":
        return TracedMergeBatchNorm(self.example_input, self._cache)

    def merges_for(self, model: nn.Module, example_input: Any) -> list[tuple[str, str]]:
        """The ``(linear, batchnorm)`` name pairs of ``model`` (traced once, then cached).

        Raises ValueError, naming module and operation, when the trace finds operations
        without LRP rules (the refusal for a composite made without an example input)."""
        if model not in self._cache:
            self._cache[model] = trace_model(model, example_input)
        trace = self._cache[model]
        if trace.unsupported:
            raise ValueError(
                f"model {type(model).__name__} has operations without LRP rules: {trace.unsupported[:5]}"
                f"{' ...' if len(trace.unsupported) > 5 else ''}; use crop='activation' (or 'full') for it, "
                "or pass a composite / canonizers that cover them"
            )
        return trace.merges

    def apply(self, root_module: nn.Module) -> list:
        inst = self.copy()
        inst.register(root_module)
        return [inst]

    def _merge(self, root: nn.Module, pairs: list[tuple[str, str]]) -> None:
        modules = dict(root.named_modules())
        for lin, bn in pairs:
            merge = _Merge()
            merge.register((modules[lin],), modules[bn])
            self.merged.append(merge)

    def register(self, root: nn.Module) -> None:
        if root in self._cache or self.example_input is not None:
            self._merge(root, self.merges_for(root, self.example_input))
            return

        def pre(module, args):
            handle.remove()
            with _hooks_suspended(module):
                pairs = self.merges_for(module, args)
            self._merge(module, pairs)

        handle = root.register_forward_pre_hook(pre, prepend=True)
        self.handles = [handle]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        for merge in reversed(self.merged):
            merge.remove()
        self.merged = []


class _Merge(MergeBatchNorm):
    """One merged (linear, BatchNorm) pair (zennit's merge; ``remove`` restores both)."""

    def apply(self, root_module: nn.Module) -> list:  # pairs come from the trace, not from here
        return []

    def register(self, linears, batch_norm) -> None:
        """zennit's merge, then the BatchNorm made the exact identity: zennit 0.4.6 leaves
        ``x / sqrt(1 + eps)`` (a 0.05 logit shift over EfficientNet-Lite0's 49 BatchNorms with
        eps = 1e-3); a running variance of ``1 - eps`` removes it (restored by ``remove``)."""
        super().register(linears, batch_norm)
        eps = float(getattr(batch_norm, "eps", 0.0))
        if 0.0 < eps < 1.0:
            batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 1.0 - eps)
        # a stock BatchNorm is now the identity: skip its pass (timm's BatchNormAct2d and other
        # subclasses with their own forward keep it: they do more than normalise)
        self.skipped = type(batch_norm).forward is nn.modules.batchnorm._BatchNorm.forward and \
            "forward" not in batch_norm.__dict__
        if self.skipped:
            batch_norm.forward = _identity

    def remove(self) -> None:
        if getattr(self, "skipped", False):
            self.batch_norm.__dict__.pop("forward", None)
        super().remove()


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def default_canonizers(example_input: Any = None) -> list:
    """The canonizers the default LRP set-up uses: ``[TracedMergeBatchNorm(), FunctionalRules()]``."""
    return [TracedMergeBatchNorm(example_input), FunctionalRules()]
