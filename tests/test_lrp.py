"""LRP set-up on this torch/zennit: the traced mechanism (BatchNorm merging by tensor identity,
functional rules for sums / gates / pass-through activations), the conserving z+ rule, the
refusal that names module and operation, the user's composite / canonizers, local starts that
equal zennit-crp, and the conservation measure."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from zennit.composites import EpsilonPlus, EpsilonPlusFlat
from zennit.rules import ZPlus
from zennit.torchvision import ResNetCanonizer

from semlens_widgets.kernels.canonize import FunctionalRules, TracedMergeBatchNorm, trace_model
from semlens_widgets.kernels.lrp import (
    RULES,
    ZPlusConserving,
    canonizers_for,
    component_start,
    conservation,
    low_conservation,
    lrp_context,
    make_composite,
    resolve_composite,
    start_relevance,
    supports_lrp,
    unsupported_modules,
)

from _models import RedNet, ReuseNet, TinyCNN, TokenNet, TupleNet, tiny_resnet, tiny_vgg

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- test models


class PadConv(nn.Conv2d):
    """A Conv2d subclass that pads in its own forward through a child module (as
    efficientnet-pytorch's Conv2dStaticSamePadding): not a leaf, not a sibling of its BatchNorm."""

    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=False)
        p = k - 1
        self.static_padding = nn.ZeroPad2d((p // 2, p - p // 2, p // 2, p - p // 2))

    def forward(self, x):
        return nn.functional.conv2d(self.static_padding(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBBlock(nn.Module):
    """Inverted residual: expand conv + BN + SiLU, depthwise conv + BN + SiLU, squeeze-excitation
    gate written functionally, project conv + BN, residual addition in the block's forward."""

    def __init__(self, c=8, expand=2):
        super().__init__()
        e = c * expand
        self.expand = PadConv(c, e, 1)
        self.bn0 = nn.BatchNorm2d(e)
        self.dw = PadConv(e, e, 3, groups=e)
        self.bn1 = nn.BatchNorm2d(e)
        self.se_reduce = nn.Conv2d(e, 4, 1)
        self.se_expand = nn.Conv2d(4, e, 1)
        self.project = PadConv(e, c, 1)
        self.bn2 = nn.BatchNorm2d(c)
        self.act = nn.SiLU()

    def forward(self, inputs):
        x = self.act(self.bn0(self.expand(inputs)))
        x = nn.functional.silu(self.bn1(self.dw(x)))
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        s = self.se_expand(self.act(self.se_reduce(s)))
        x = torch.sigmoid(s) * x
        x = self.bn2(self.project(x))
        return x + inputs


class MBNet(nn.Module):
    def __init__(self, c=8, classes=5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = PadConv(3, c, 3, stride=2)
        self.bn_stem = nn.BatchNorm2d(c)
        self.blocks = nn.ModuleList([MBBlock(c), MBBlock(c)])
        self.head = nn.Linear(c, classes)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(-1.0, 1.5)  # negative scales too: merged weights flip sign
                    m.bias.uniform_(-0.3, 0.3)
        self.eval()

    def forward(self, x):
        x = nn.functional.relu6(self.bn_stem(self.stem(x)))
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean((2, 3)))


class NormNet(nn.Module):
    """Divides by the norm of its own activation: no LRP rule for that."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.unit = _UnitNorm()
        self.head = nn.Linear(4, 2)
        self.eval()

    def forward(self, x):
        return self.head(self.unit(self.conv(x)).mean((2, 3)))


class _UnitNorm(nn.Module):
    def forward(self, x):
        return x / x.norm(dim=1, keepdim=True)


class AttnNet(nn.Module):
    """Token model with explicit softmax attention (AttnLRP's rules apply)."""

    def __init__(self, d=8):
        super().__init__()
        self.embed = nn.Conv2d(3, d, 4, stride=4)
        self.attn = _Attn(d)
        self.head = nn.Linear(d, 3)
        self.eval()

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.attn(t).mean(1))


class _Attn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)

    def forward(self, t):
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        return torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v


class _SwishFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * s * (1 + x * (1 - s))


class MemorySwish(nn.Module):
    def forward(self, x):
        return _SwishFn.apply(x)


def _logit_relevance(model, composite, x, target=0):
    """Input relevance [n, 3, H, W] of logit `target`, the logits inside the context."""
    with composite.context(model) as mod:
        xx = x.clone().requires_grad_(True)
        out = mod(xx)
        grad = torch.zeros_like(out)
        grad[:, target] = out[:, target]
        (rel,) = torch.autograd.grad(out, xx, grad)
    return rel, out.detach()


# ----------------------------------------------------------------------------- canonization


@pytest.mark.parametrize(
    "make_model", [TinyCNN, tiny_resnet, tiny_vgg, MBNet], ids=["conv-bn-relu", "torchvision-resnet", "torchvision-vgg", "mbconv"]
)
def test_default_setup_keeps_function_conserves_and_restores(make_model):
    model = make_model()
    x = torch.rand(3, 3, 32, 32)
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        before = model(x)
    composite = make_composite(model)  # traced lazily on the first forward pass
    assert isinstance(composite, EpsilonPlusFlat)
    rel, inside = _logit_relevance(model, composite, x)
    # merged BatchNorms (exact identity afterwards) keep the function
    torch.testing.assert_close(inside, before, atol=1e-5, rtol=1e-4)
    # relevance of the logit reaches the input in full (biases take none, z+ falls back)
    torch.testing.assert_close(rel.sum(dim=(1, 2, 3)), inside[:, 0], atol=1e-4, rtol=1e-3)
    # everything restored: parameters, buffers, forwards, no torch function mode left behind
    after_state = model.state_dict()
    assert set(after_state) == set(state)
    assert all(torch.equal(after_state[k], v) for k, v in state.items())
    assert all(type(m).forward is m.forward.__func__ for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not torch.overrides._get_current_function_mode_stack()
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_trace_merges_non_sibling_and_depthwise_convs():
    model = MBNet()
    trace = trace_model(model, torch.rand(2, 3, 32, 32))
    merged = dict(trace.merges)
    # every BatchNorm follows a padded conv subclass (not a leaf): all 7 are merged
    assert merged == {
        "stem": "bn_stem",
        **{f"blocks.{i}.{c}": f"blocks.{i}.{b}" for i in range(2) for c, b in (("expand", "bn0"), ("dw", "bn1"), ("project", "bn2"))},
    }
    assert trace.unsupported == []


def test_trace_does_not_merge_a_shared_conv_output():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # y is used twice: merging would change the second use

    assert trace_model(Shared().eval(), torch.rand(1, 3, 8, 8)).merges == []


def test_residual_sum_rule_equals_zennit_resnet_canonizer():
    """The traced set-up on torchvision's ResNet gives zennit's ResNetCanonizer's heatmaps."""
    model = tiny_resnet()
    x = torch.rand(3, 3, 32, 32)
    ours, _ = _logit_relevance(model, make_composite(model), x)
    ref, _ = _logit_relevance(model, make_composite(model, canonizers=[ResNetCanonizer()]), x)
    torch.testing.assert_close(ours, ref, atol=1e-4 * float(ref.abs().max()), rtol=1e-3)


def test_plain_gradient_through_residual_sums_is_not_conservative():
    """Without the functional rules the residual additions double relevance: what they fix."""
    model = ReuseNet()
    x = torch.rand(2, 3, 16, 16)
    rel, out = _logit_relevance(model, make_composite(model), x)
    torch.testing.assert_close(rel.sum(dim=(1, 2, 3)), out[:, 0], atol=1e-4, rtol=1e-3)
    composite = EpsilonPlusFlat()  # no canonizers, no functional rules
    rel_plain, _ = _logit_relevance(model, composite, x)
    assert bool(((rel_plain.sum(dim=(1, 2, 3)) / out[:, 0] - 1).abs() > 0.05).all())


def test_gate_gets_no_relevance_and_constant_scale_passes():
    """SE gate: relevance of x * sigmoid(s) all goes to x; x * c (layer scale) keeps it."""

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.se = nn.Conv2d(4, 4, 1)
            self.scale = nn.Parameter(torch.tensor([0.5, -2.0, 3.0, 1.0]).view(4, 1, 1))

        def forward(self, x):
            y = torch.relu(self.conv(x))
            g = torch.sigmoid(self.se(y.mean((2, 3), keepdim=True)))
            return (y * g) * self.scale

    model = Gate().eval()
    x = torch.rand(2, 3, 8, 8)
    comp = make_composite(model)
    acts = {}

    def keep(module, inputs, output):
        output.retain_grad()
        acts["conv"] = output

    with lrp_context(model), comp.context(model) as mod:
        model.requires_grad_(False)
        h = model.conv.register_forward_hook(keep)
        out = mod(x.clone().requires_grad_(True))
        h.remove()
        out.backward(out.detach())
    # the relevance of the output reaches conv's output unchanged: the gate takes none, the
    # constant scale (negative for one channel) passes it on
    torch.testing.assert_close(acts["conv"].grad.sum(dim=(1, 2, 3)), out.detach().sum(dim=(1, 2, 3)), rtol=1e-4, atol=1e-5)


def test_zplus_conserving_keeps_bias_only_units():
    """A unit active only through its bias (z+ = 0) passes its relevance on (stock z+ drops it)."""
    conv = nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]).view(2, 2, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 5.0]))
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), conv).eval()  # first conv: Flat
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        model[0].bias.zero_()
    x = torch.rand(1, 2, 4, 4) + 0.1
    start = lambda a: a.detach().clamp(min=0)  # noqa: E731
    ours, _ = start_relevance(model, x, "2", start, make_composite(model))
    with torch.no_grad():
        total = model(x).clamp(min=0).sum()
    torch.testing.assert_close(ours.sum(), total, rtol=1e-5, atol=1e-5)
    stock = make_composite(model)
    stock.layer_map = [(t, ZPlus() if isinstance(h, ZPlusConserving) else h) for t, h in stock.layer_map]
    lost, _ = start_relevance(model, x, "2", start, stock)
    unit0 = model(x)[:, 0].clamp(min=0).sum()  # only channel 0 has z+ > 0
    torch.testing.assert_close(lost.sum(), unit0.detach(), rtol=1e-4, atol=1e-4)
    assert float(lost.sum()) < 0.5 * float(total)


# ----------------------------------------------------------------------------- refusal


def test_supports_lrp_static_and_traced():
    for model in (TinyCNN(), RedNet(), tiny_resnet(), tiny_vgg(), ReuseNet(), TupleNet(), TokenNet(), MBNet()):
        assert supports_lrp(model), type(model).__name__
    assert supports_lrp(MBNet(), torch.rand(1, 3, 32, 32))
    assert supports_lrp(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2)))
    # explicit attention has AttnLRP's rules (matmul: uniform epsilon rule, softmax rule)
    assert supports_lrp(AttnNet()) and supports_lrp(AttnNet(), torch.rand(1, 3, 16, 16))
    # dividing by an activation's norm has none: static and traced checks name module and op
    static = unsupported_modules(NormNet())
    assert static and static[0].startswith("unit (_UnitNorm): ")
    traced = unsupported_modules(NormNet(), torch.rand(1, 3, 16, 16))
    assert traced and all(b.startswith("unit (_UnitNorm): ") for b in traced)
    assert any("norm" in b for b in traced) and any("div" in b for b in traced)
    assert not supports_lrp(NormNet(), torch.rand(1, 3, 16, 16))
    # nn.MultiheadAttention: zennit 0.4.6 gives it the Pass rule as an "activation"; not LRP
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    class MhaNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.att = nn.Linear(3, 8), mha

        def forward(self, x):
            t = self.embed(x)
            return self.att(t, t, t, need_weights=False)[0]

    bad = unsupported_modules(MhaNet().eval(), torch.rand(1, 5, 3))
    assert bad and bad[0].startswith("att (MultiheadAttention): ")
    assert unsupported_modules(MhaNet())[0].startswith("att (MultiheadAttention)")
    # a custom autograd function (memory-efficient Swish) has no rule either
    swish = nn.Sequential(nn.Conv2d(3, 4, 3), MemorySwish(), nn.Conv2d(4, 2, 1))
    traced = unsupported_modules(swish, torch.rand(1, 3, 8, 8))
    assert traced == ["1 (MemorySwish): custom autograd function _SwishFnBackward"]


def test_make_composite_and_resolve_errors():
    with pytest.raises(ValueError, match=r"unknown LRP rule 'gamma'.*'epsilon_plus_flat'"):
        make_composite(TinyCNN(), "gamma")
    with pytest.raises(ValueError, match=r"operations without LRP rules.*unit \(_UnitNorm\).*crop='activation'"):
        make_composite(NormNet(), example_input=torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"operations without LRP rules.*unit"):
        resolve_composite(NormNet(), example_input=torch.rand(1, 3, 16, 16))
    # without an example input the refusal comes at the first forward pass in the context
    lazy = make_composite(NormNet())
    with pytest.raises(ValueError, match=r"operations without LRP rules.*unit \(_UnitNorm\)"):
        _logit_relevance(NormNet(), lazy, torch.rand(1, 3, 16, 16))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        canonizers_for("resnet")
    with pytest.raises(TypeError, match="composite must be None, a rule name"):
        resolve_composite(TinyCNN(), composite=3)
    with pytest.raises(TypeError, match="canonizers must be a list"):
        resolve_composite(TinyCNN(), canonizers="merge")
    assert set(RULES) >= {"epsilon_plus_flat"}


def test_resolve_composite_user_choices():
    model = TinyCNN()
    x = torch.rand(2, 3, 16, 16)
    default = resolve_composite(model, example_input=x)
    assert isinstance(default, EpsilonPlusFlat)
    assert [type(c) for c in default.canonizers] == [TracedMergeBatchNorm, FunctionalRules]
    assert isinstance(resolve_composite(model, "epsilon_plus"), EpsilonPlus)
    # a user composite without canonizers gets the default ones on a copy; its rules are kept
    user = EpsilonPlus()
    got = resolve_composite(model, user)
    assert got is not user and user.canonizers == [] and any(isinstance(c, TracedMergeBatchNorm) for c in got.canonizers)
    assert any(isinstance(h, ZPlus) for _, h in got.layer_map)
    # user canonizers replace the merging; the functional rules are added
    got = resolve_composite(model, None, [ResNetCanonizer()])
    assert [type(c) for c in got.canonizers] == [ResNetCanonizer, FunctionalRules]
    # a composite with its own canonizers keeps them
    got = resolve_composite(tiny_resnet(), EpsilonPlusFlat(canonizers=[ResNetCanonizer()]))
    assert [type(c) for c in got.canonizers] == [ResNetCanonizer, FunctionalRules]
    rel, out = _logit_relevance(model, resolve_composite(model, user), x)
    assert rel.shape == x.shape


# ----------------------------------------------------------------------------- local starts


def test_start_relevance_equals_zennit_crp_and_stops_early():
    from crp.attribution import CondAttribution

    model = tiny_resnet()
    x = torch.rand(3, 3, 32, 32)
    comps = torch.tensor([1, 5, 9])
    init = lambda a: component_start(a, comps)  # noqa: E731
    composite = make_composite(model)
    calls = []
    h = model.fc.register_forward_hook(lambda *a: calls.append(1))
    heat, rec = start_relevance(model, x, "layer3", init, composite, check_layer=False)
    assert calls == []  # nothing above the start layer ran
    start_relevance(model, x, "layer3", init, composite)
    h.remove()
    assert calls == [1]  # the one-sample probe that checks the layer name
    attribution = CondAttribution(model, no_param_grad=True)
    ref = attribution(x.clone().requires_grad_(True), [{"layer3": [int(c)]} for c in comps], composite,
                      start_layer="layer3", init_rel=init, exclude_parallel=False)
    torch.testing.assert_close(heat.sum(1), ref.heatmap, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(heat.sum(dim=(1, 2, 3)), rec["layer3"].sum(dim=(1, 2, 3)), rtol=1e-4, atol=1e-6)


def test_start_relevance_refuses_ambiguous_layer_names():
    with pytest.raises(ValueError, match=r"called 2 times"):
        start_relevance(ReuseNet(), torch.rand(1, 3, 8, 8), "block1.relu", lambda a: a, make_composite(ReuseNet()))


def test_conservation_table_and_warning():
    model = MBNet()
    x = torch.rand(4, 3, 32, 32)
    table = conservation(model, x, "blocks.1", record=["stem", "blocks.0"])
    assert list(table["layer"]) == ["blocks.0", "stem", "input"]
    assert (table["median"] - 1).abs().max() < 1e-3
    assert low_conservation(table) == []
    leaky = make_composite(model, zero_bias=False)  # stock rules: biases absorb relevance
    bad = conservation(model, x, "blocks.1", composite=leaky, record=["stem", "blocks.0"])
    assert float(bad["median"].iloc[-1]) < 0.9
    msgs = low_conservation(bad, threshold=float(bad["median"].iloc[-1]) + 1e-3)
    assert len(msgs) == 1 and "median sum" in msgs[0] and repr(str(bad[bad["median"] < float(bad["median"].iloc[-1]) + 1e-3].iloc[0]["layer"])) in msgs[0]


def test_stock_rules_leak_relevance_into_biases():
    """zero_bias=False gives zennit 0.4.6's stock ZPlus, where the merged BatchNorm biases
    absorb relevance: the reason zero_bias=True is the default."""
    model = TinyCNN()
    x = torch.rand(3, 3, 32, 32)
    rel, out = _logit_relevance(model, make_composite(model, zero_bias=False), x)
    ratio = rel.sum(dim=(1, 2, 3)) / out[:, 0]
    assert bool(((ratio - 1).abs() > 0.02).all())


def test_lrp_context_restores_flags():
    model = TinyCNN().train()
    model.fc.weight.requires_grad_(False)
    with lrp_context(model):
        assert not model.training
        model.requires_grad_(False)
    assert model.training
    assert model.features.conv1.weight.requires_grad and not model.fc.weight.requires_grad


def test_attention_rules_match_explicit_operations():
    """F.scaled_dot_product_attention gets the same AttnLRP relevance as the explicit
    matmul / softmax / matmul it stands for."""

    class Fused(nn.Module):
        def forward(self, q, k, v):
            return nn.functional.scaled_dot_product_attention(q, k, v)

    class Explicit(nn.Module):
        def forward(self, q, k, v):
            a = torch.softmax((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)
            return a @ v

    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    rels = []
    for model in (Fused(), Explicit()):
        rules = FunctionalRules()
        rules.register(model)
        try:
            ins = [t.clone().requires_grad_(True) for t in (q, k, v)]
            out = model(*ins)
            grads = torch.autograd.grad(out, ins, out.detach())
        finally:
            rules.remove()
        rels.append(grads)
    for a, b in zip(*rels):
        torch.testing.assert_close(a, b, atol=1e-3 * float(b.abs().max()), rtol=1e-2)  # eps at tiny logits
    # the value path takes half of the output relevance (uniform rule)
    out = torch.softmax(q @ k.transpose(-1, -2) / 2, -1) @ v
    torch.testing.assert_close(rels[0][2].sum(), 0.5 * out.sum(), atol=1e-4, rtol=1e-3)


def test_canonize_does_not_import_lrp():
    """One-way imports between the two LRP modules: lrp uses canonize, never the reverse."""
    import ast
    import inspect

    import semlens_widgets.kernels.canonize as canonize

    tree = ast.parse(inspect.getsource(canonize))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(m and m.split(".")[-1] == "lrp" for m in imported), imported
    # its trace audits with zennit's layer map: the same modules the default rule set covers
    model = TinyCNN()
    assert trace_model(model, torch.rand(1, 3, 16, 16)).unsupported == []


# ----------------------------------------------------------------------------- the Lens's LRP set-up


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    from _models import tiny_clip_fm

    return tiny_clip_fm(tmp_path_factory.mktemp("cfg"))


class _Images(torch.utils.data.Dataset):
    def __init__(self, n=12, size=16, seed=0):
        self.x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], i % 2


def _lens(fm, model=None, layers=("features.relu2",), **kw):
    from semlens_widgets.lens import Lens

    kw.setdefault("crop", "crp")
    kw.setdefault("store", None)
    return Lens(model if model is not None else TinyCNN(num_classes=3), _Images(), fm, list(layers), m=3,
                progress=False, batch_size=8, **kw)


def test_lens_takes_a_rule_name_a_composite_or_canonizers(fm):
    """composite= / canonizers= reach the crops and relevance, and name the set-up in the
    fingerprints of everything they shape (boxes, relevance), not in those of the collection."""
    import json
    import warnings

    from zennit.canonizers import SequentialMergeBatchNorm

    default = _lens(fm)
    ident = json.loads(default.lrp_id)
    assert ident["rule"] == "epsilon_plus_flat" and ident["zennit"] and ident["semlens_lrp"]
    assert [c[0].rsplit(".", 1)[-1] for c in ident["canonizers"]] == ["TracedMergeBatchNorm", "FunctionalRules"]
    assert any(isinstance(h, ZPlusConserving) for _, h in default.composite.layer_map)

    named = _lens(fm, composite="epsilon_plus")
    assert isinstance(named.composite, EpsilonPlus) and json.loads(named.lrp_id)["rule"] == "epsilon_plus"

    user = EpsilonPlusFlat()
    given = _lens(fm, composite=user)
    ident = json.loads(given.lrp_id)
    assert ident["composite"] == "zennit.composites.EpsilonPlusFlat"
    assert ["zennit.types.Convolution", "zennit.rules.ZPlus"] in [r[:2] for r in ident["layer_map"]]
    assert given.composite is not user and type(given.composite) is EpsilonPlusFlat
    assert any(isinstance(c, FunctionalRules) for c in given.composite.canonizers)

    merged = _lens(fm, canonizers=[SequentialMergeBatchNorm()])
    names = [c[0] for c in json.loads(merged.lrp_id)["canonizers"]]
    assert names == ["zennit.canonizers.SequentialMergeBatchNorm", "semlens_widgets.kernels.canonize.FunctionalRules"]

    lenses = (default, named, given, merged)
    boxes = {lens.pipeline.keys.boxes("features.relu2").fingerprint for lens in lenses}
    relevance = {lens.attribution.keys.relevance("features.relu2", 0, "label", 8).fingerprint for lens in lenses}
    collect = {lens.pipeline.keys.collect("features.relu2").fingerprint for lens in lenses}
    assert len(boxes) == 4 and len(relevance) == 4 and len(collect) == 1
    # the crops use it: the user's stock z+ gives relevance to biases, the default does not
    heat = {}
    for name, composite in (("default", None), ("user", EpsilonPlusFlat())):
        lens = _lens(fm, model=_BiasNet(), layers=("relu2",), composite=composite)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the user's composite leaks (tested below)
            lens.run()
        heat[name] = lens.heatmaps("relu2", 1)
    assert heat["user"].sum() < 0.5 * heat["default"].sum()


def test_lens_refuses_bad_lrp_values_before_any_work(fm, tmp_path):
    """Each bad value is named with what is accepted, before the model runs or the store is made."""
    model = TinyCNN(num_classes=3)
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    store = tmp_path / "never"
    cases = [
        (dict(composite="gamma"), ValueError, r"unknown LRP rule composite='gamma'; accepted: .*'epsilon_plus_flat'"),
        (dict(composite=EpsilonPlusFlat), TypeError, r"composite must be None, a rule name .* got <class"),
        (dict(composite=3), TypeError, r"composite must be None, a rule name .*zennit Composite.* got 3 \(builtins.int\)"),
        (dict(canonizers="merge"), TypeError, r"canonizers must be a list of zennit canonizers .* got 'merge'"),
        (dict(canonizers=ResNetCanonizer()), TypeError, r"canonizers must be a list of zennit canonizers"),
        (dict(canonizers=[ResNetCanonizer(), "x"]), TypeError, r"item 'x' \(builtins.str\) is not one"),
        (dict(crop_rule="blur"), ValueError, r"unknown crop_rule 'blur'; accepted: None .*'peak_region'"),
        (dict(crop="activation", crop_rule="zennit_crp"), ValueError, r"crop_rule='zennit_crp' applies to crop='crp'"),
    ]
    for kw, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            _lens(fm, model=model, store=str(store), **kw)
    assert not calls and not store.exists()


def test_lens_without_rules_refuses_crp_and_falls_back_otherwise(fm):
    """An operation without an LRP rule: crop='crp' is refused naming module and operation and
    suggesting activation crops; activation crops run, relevance is activation x gradient."""
    with pytest.raises(ValueError, match=r"crop='crp' needs LRP rules.*unit \(_UnitNorm\): div.*crop='activation'"):
        _lens(fm, model=NormNet(), layers=("conv",))
    with pytest.raises(ValueError, match=r"with the given composite / canonizers.*unit \(_UnitNorm\)"):
        _lens(fm, model=NormNet(), layers=("conv",), crop="activation", composite="epsilon_plus")
    lens = _lens(fm, model=NormNet(), layers=("conv",), crop="activation")
    assert lens.composite is None and lens.lrp_id is None
    lens.run()
    assert lens.conservation().empty
    sums = lens.heatmap_sums("conv", 0)
    assert list(sums.columns) == ["sample", "start", "sum", "ratio"] and sums["ratio"].isna().all()


def test_crop_rule_is_part_of_the_boxes_fingerprint(fm):
    from semlens_widgets.lens_pipeline import CROP_RULE

    by_rule = {rule: _lens(fm, crop_rule=rule) for rule in ("threshold", "zennit_crp", "peak_region")}
    assert _lens(fm).crop_rule == CROP_RULE
    assert len({lens.pipeline.keys.boxes("features.relu2").fingerprint for lens in by_rule.values()}) == 3
    assert len({lens.pipeline.keys.collect("features.relu2").fingerprint for lens in by_rule.values()}) == 1
    assert len({lens.fingerprint for lens in by_rule.values()}) == 1  # the collection is shared


class _BiasNet(nn.Module):
    """Two convolutions with large positive biases: zennit's stock z+ hands most relevance to
    the biases, so little reaches the input."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=g) * 0.01)
                conv.bias.fill_(3.0)
        self.relu1, self.relu2, self.head = nn.ReLU(), nn.ReLU(), nn.Linear(4, 3)
        self.eval()

    def forward(self, x):
        return self.head(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean((2, 3)))


def test_lens_conservation_table_sums_and_low_conservation_warning(fm, tmp_path, capsys):
    """The crop step measures conservation over every concept example and stores it; the Lens
    shows it per layer (and `semlens info` from the store), reports each heatmap's sum, and
    warns naming a layer that leaks."""
    import warnings

    from semlens_widgets.cli import main

    lens = _lens(fm, model=_BiasNet(), layers=("relu1", "relu2"), store=str(tmp_path / "s"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default set-up conserves: no warning
        lens.run()
    table = lens.conservation()
    assert list(table.columns) == ["layer", "median", "q10", "q90", "min", "n"]
    assert table["layer"].tolist() == ["relu1", "relu2"] and (table["n"] == 4 * 3).all()
    assert (table["median"] > 0.99).all() and (table["min"] > 0.95).all(), table
    assert lens.conservation("relu2")["layer"].tolist() == ["relu2"]
    sums = lens.heatmap_sums("relu2", 1)
    heat = lens.heatmaps("relu2", 1)
    torch.testing.assert_close(torch.tensor(sums["sum"].to_numpy()).float(), heat.sum((1, 2)), rtol=1e-4, atol=1e-5)
    assert sums["sample"].tolist() == lens.examples("relu2", 1).indices.tolist()
    assert ((sums["ratio"] - 1).abs() < 0.01).all()
    stored = lens.store.meta("conservation/relu2")["meta"]
    assert stored["layer"] == "relu2" and abs(stored["median"] - float(table["median"][1])) < 1e-9
    capsys.readouterr()
    assert main(["info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "LRP conservation of the CRP crops" in out and f"relu2: median {float(table['median'][1]):.3f}" in out

    leaky = _lens(fm, model=_BiasNet(), layers=("relu1", "relu2"), composite=EpsilonPlusFlat())
    with pytest.warns(UserWarning, match=r"layer 'relu2': LRP relevance is not conserved: the median input heatmap sum is 0\.\d\d"):
        leaky.run()
    assert float(leaky.conservation("relu2")["median"][0]) < 0.5


def test_zplus_flat_share_of_convolutions_equals_ones_through_the_module():
    """The one-channel probe gives ungrouped convolutions (padded subclass, strided, dilated,
    1-d) the same relevance as running ones through the module; grouped ones use the module."""
    torch.manual_seed(0)
    cases = [
        (PadConv(4, 6, 3, stride=2), torch.randn(2, 4, 9, 9)),
        (nn.Conv2d(4, 6, 3, padding=2, dilation=2), torch.rand(2, 4, 8, 8)),
        (nn.Conv1d(3, 5, 4, stride=3, padding=1), torch.randn(2, 3, 17)),
        (nn.Conv2d(4, 4, 3, padding=1, groups=2), torch.rand(2, 4, 6, 6)),
    ]
    for conv, x in cases:
        with torch.no_grad():
            conv.weight.mul_(torch.where(torch.rand_like(conv.weight) < 0.7, -1.0, 1.0))  # many z+ = 0
        rel = torch.rand_like(conv(x))
        got = {}
        for probe in (True, False):
            rule = ZPlusConserving()
            rule.probe = probe
            rule.stored_tensors["input"] = (x,)
            got[probe] = rule.backward(conv, (x,), (rel,))[0]
        torch.testing.assert_close(got[True], got[False], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got[True].sum(), rel.sum(), rtol=1e-4, atol=1e-4)  # conserved


def test_channels_last_inputs_fall_back_for_a_model_that_views():
    """Local starts run channels-last on the CPU; a model whose forward .view()s a permuted
    tensor is rerun contiguous (and remembered), with the same relevance."""
    from semlens_widgets.kernels.lrp import _CONTIGUOUS_ONLY

    class ViewNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Linear(4 * 8 * 8, 5)

        def forward(self, x):
            h = self.relu(self.conv(x))
            return self.fc(h.view(h.shape[0], -1))  # fails on a channels-last tensor

    model = ViewNet().eval()
    x = torch.rand(3, 3, 8, 8)
    init = lambda a: a.clamp(min=0)  # noqa: E731
    comp = make_composite(model)
    heat, _ = start_relevance(model, x, "fc", init, comp)
    assert model in _CONTIGUOUS_ONLY
    plain = TinyCNN()
    a, _ = start_relevance(plain, x, "features.relu2", init, make_composite(plain))
    assert plain not in _CONTIGUOUS_ONLY
    ref, _ = _start_relevance_contiguous(plain, x, "features.relu2", init)
    torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6)
    assert heat.shape == x.shape and torch.isfinite(heat).all()


def _start_relevance_contiguous(model, x, layer, init):
    from semlens_widgets.kernels.lrp import _start_relevance

    return _start_relevance(model, x, layer, init, make_composite(model), record=(), check_layer=True, image_index=None)
