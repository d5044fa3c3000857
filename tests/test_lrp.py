"""LRP composites and canonizers on this torch/zennit: function kept, relevance conserved,
parameters restored, architectures classified."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlus, EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

from semlens_widgets.kernels.lrp import (
    RULES,
    canonizers_for,
    lrp_context,
    make_composite,
    supports_lrp,
    unsupported_modules,
)

from _models import RedNet, ReuseNet, TinyCNN, TokenNet, TupleNet, tiny_resnet, tiny_vgg

torch.set_num_threads(1)


def _logit_relevance(model, composite, x, target=0):
    """Input relevance [n, 3, H, W] of logit `target`, the logits inside and outside the context."""
    with composite.context(model) as mod:
        xx = x.clone().requires_grad_(True)
        out = mod(xx)
        grad = torch.zeros_like(out)
        grad[:, target] = out[:, target]
        (rel,) = torch.autograd.grad(out, xx, grad)
    return rel, out.detach()


@pytest.mark.parametrize(
    "make_model", [TinyCNN, tiny_resnet, tiny_vgg], ids=["conv-bn-relu", "torchvision-resnet", "torchvision-vgg"]
)
def test_canonized_attribution_conserves_and_restores(make_model):
    model = make_model()
    x = torch.rand(3, 3, 32, 32)
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        before = model(x)
    composite = make_composite(model)
    assert isinstance(composite, EpsilonPlusFlat)
    rel, inside = _logit_relevance(model, composite, x)
    # canonization (BatchNorm merged into the convs) keeps the function
    torch.testing.assert_close(inside, before, atol=1e-4, rtol=1e-4)
    # biases take no relevance (zero_bias=True): the logit is conserved down to the input
    torch.testing.assert_close(rel.sum(dim=(1, 2, 3)), inside[:, 0], atol=1e-4, rtol=1e-3)
    # the canonizers are removed: same parameters, buffers and outputs as before
    after_state = model.state_dict()
    assert set(after_state) == set(state)
    assert all(torch.equal(after_state[k], v) for k, v in state.items())
    assert all(type(m).forward is m.forward.__func__ for m in model.modules())  # no overloaded forward
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_stock_rules_leak_relevance_into_biases():
    """zero_bias=False gives zennit 0.4.6's stock ZPlus, where the merged BatchNorm biases
    absorb relevance: the reason zero_bias=True is the default."""
    model = TinyCNN()
    x = torch.rand(3, 3, 32, 32)
    rel, out = _logit_relevance(model, make_composite(model, zero_bias=False), x)
    ratio = rel.sum(dim=(1, 2, 3)) / out[:, 0]
    assert bool(((ratio - 1).abs() > 0.02).all())


def test_canonizers_for_architectures():
    assert [type(c) for c in canonizers_for(tiny_resnet())] == [ResNetCanonizer]
    vgg = tiny_vgg()
    assert [type(c) for c in canonizers_for(vgg)] == [VGGCanonizer]
    assert [type(c) for c in canonizers_for(TinyCNN())] == [SequentialMergeBatchNorm]
    assert canonizers_for(RedNet()) == []
    assert isinstance(make_composite(RedNet(), "epsilon_plus"), EpsilonPlus)


def test_supports_lrp():
    assert supports_lrp(TinyCNN()) and supports_lrp(RedNet()) and supports_lrp(tiny_resnet())
    assert supports_lrp(tiny_vgg())
    # ViT-like: LayerNorm and a custom forward with concatenation
    bad = unsupported_modules(TokenNet())
    assert any("LayerNorm" in b for b in bad) and any("<root>" in b for b in bad)
    assert not supports_lrp(TokenNet())
    # functional residual additions in a custom block: plain gradients are not LRP
    assert any(b.startswith("block1 ") for b in unsupported_modules(ReuseNet()))
    assert not supports_lrp(TupleNet())  # root concatenates and max-pools functionally

    class GeluNet(nn.Sequential):
        pass

    assert not supports_lrp(GeluNet(nn.Conv2d(3, 4, 3), nn.GELU()))
    assert supports_lrp(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)))


def test_make_composite_errors():
    with pytest.raises(ValueError, match=r"unknown LRP rule 'gamma'.*'epsilon_plus_flat'"):
        make_composite(TinyCNN(), "gamma")
    with pytest.raises(ValueError, match=r"modules without LRP rules.*LayerNorm.*crop='activation'"):
        make_composite(TokenNet())
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        canonizers_for("resnet")
    assert set(RULES) >= {"epsilon_plus_flat"}


def test_lrp_context_restores_flags():
    model = TinyCNN().train()
    model.fc.weight.requires_grad_(False)
    with lrp_context(model):
        assert not model.training
        model.requires_grad_(False)
    assert model.training
    assert model.features.conv1.weight.requires_grad and not model.fc.weight.requires_grad
