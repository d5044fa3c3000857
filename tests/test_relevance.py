"""CRP component relevance (DESIGN eq. 3) and attribution graphs (DESIGN eq. 9) on tiny models."""
import pytest
import torch
from torch import nn
from zennit.composites import EpsilonPlusFlat

from semlens_widgets.kernels import relevance as R


def _cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3, bias=False),
    )
    with torch.no_grad():  # positive weights in the top layers: logits > 0, clean conservation
        model[2].weight.abs_()
        model[6].weight.abs_()
    return model.eval()


def _x(n=6, seed=1):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_component_relevances_sum_to_relevance_entering_layer():
    model, x = _cnn(), _x()
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    rel = R.component_relevance(model, x, t, ["1", "3"], EpsilonPlusFlat(), batch_size=4)
    logits = model(x)[torch.arange(6), t].detach()
    assert rel["1"].shape == (6, 4) and rel["3"].shape == (6, 5)
    # bias-free ReLU net, EpsilonPlusFlat: all relevance of the logit passes each layer
    assert torch.allclose(rel["3"].sum(1), logits, rtol=1e-3, atol=1e-5)
    assert torch.allclose(rel["1"].sum(1), logits, rtol=1e-3, atol=1e-5)
    # batching does not change anything
    rel1 = R.component_relevance(model, x, t, ["3"], EpsilonPlusFlat(), batch_size=1)
    assert torch.allclose(rel1["3"], rel["3"], atol=1e-6)
    # abs normalisation: unit mass per sample
    reln = R.component_relevance(model, x, t, ["3"], EpsilonPlusFlat(), normalize="abs")
    assert torch.allclose(reln["3"].abs().sum(1), torch.ones(6), atol=1e-5)


def test_cut_out_component_gets_zero_relevance():
    model, x = _cnn(), _x()
    with torch.no_grad():
        model[2].weight[:, 2] = 0.0  # channel 2 of layer "1" feeds nothing
        model[2].weight[3] = 0.0  # channel 3 of layer "3" receives nothing (activation 0)
    t = torch.zeros(6, dtype=torch.int64)
    rel = R.component_relevance(model, x, t, ["1", "3"], EpsilonPlusFlat())
    assert torch.all(rel["1"][:, 2] == 0)
    assert torch.all(rel["3"][:, 3] == 0)
    assert rel["1"][:, [0, 1, 3]].abs().sum() > 0


def test_model_flags_restored_and_input_callable():
    model, x = _cnn(), _x(4)
    model.train()
    calls = []

    def get(pos):
        calls.append(pos.tolist())
        return x[pos]

    rel = R.component_relevance(model, get, torch.ones(4, dtype=torch.int64), ["3"], EpsilonPlusFlat(), batch_size=3)
    assert calls == [[0, 1, 2], [3]]
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert rel["3"].shape == (4, 5)


def test_gradient_times_activation_without_composite():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.rand(5, 4)
    rel = R.component_relevance(model, x, torch.ones(5, dtype=torch.int64), ["1"], None)
    h = model[1](model[0](x))
    assert torch.allclose(rel["1"], h * model[2].weight[1].detach(), atol=1e-6)


def test_class_mean_relevance():
    per = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    mean, counts = R.class_mean_relevance(per, torch.tensor([0, 0, 2]), 4)
    assert counts.tolist() == [2, 0, 1, 0]
    assert torch.allclose(mean, torch.tensor([[2.0, 1.0], [0, 0], [5.0, 5.0], [0, 0]]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        R.class_mean_relevance(per, torch.tensor([0, 0, 4]), 4)


def test_sample_choice_abs_normalize_and_top_classes():
    classes = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    assert R.class_samples(classes, 2, 3).tolist() == [0, 2, 5]  # first by dataset index
    assert R.class_samples(classes, 3, 5).tolist() == []
    assert R.per_class_samples(classes, 2).tolist() == [1, 4, 3, 0, 2]  # grouped by class
    per = torch.tensor([[1.0, -3.0], [0.0, 0.0]])
    assert torch.allclose(R.abs_normalize(per), torch.tensor([[0.25, -0.75], [0.0, 0.0]]))
    v, c = R.top_classes(torch.tensor([[0.1, 0.5], [0.3, 0.2], [0.2, 0.9]]), 2)  # [K=3, C=2]
    assert c.tolist() == [[1, 2], [2, 0]] and torch.allclose(v, torch.tensor([[0.3, 0.2], [0.9, 0.5]]))


def test_bad_layer_and_normalize():
    model, x = _cnn(), _x(2)
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        R.component_relevance(model, x, torch.zeros(2, dtype=torch.int64), ["nope"], EpsilonPlusFlat())
    with pytest.raises(ValueError, match="CRP conditions on whole modules"):
        R.component_relevance(model, x, torch.zeros(2, dtype=torch.int64), ["1@0"], EpsilonPlusFlat())
    with pytest.raises(ValueError, match="normalize"):
        R.component_relevance(model, x, torch.zeros(2, dtype=torch.int64), ["1"], EpsilonPlusFlat(), normalize="l2")


def _mlp():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(3, 3, bias=False), nn.ReLU(),
        nn.Linear(3, 2, bias=False), nn.ReLU(),
        nn.Linear(2, 2, bias=False),
    )
    with torch.no_grad():
        for i in (0, 2, 4):
            model[i].weight.uniform_(0.1, 1.0)  # all positive: every unit active
    return model.eval()


def test_attribution_graph_hand_computed():
    """Epsilon rule, positive weights and activations: the flow from h1_j to h2_k for target t is
    h1_j * W2[k, j] * W3[t, k]; each sample is scaled by its logit y_t = sum_k R_{h2,k}."""
    model, t = _mlp(), 1
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(0)) + 0.1
    labels = {"1": ["a", "a", None], "3": ["b", None]}
    g = R.build_attribution_graph(model, x, t, ["3", "1"], EpsilonPlusFlat(), labels=labels, top_k=1,
                                  target_name="cls1")
    assert g.layers == ["1", "3"]  # sorted input -> output
    W2, W3 = model[2].weight.detach(), model[4].weight.detach()
    h1 = model[1](model[0](x)).detach()  # [n, 3]
    y = model(x)[:, t].detach()  # [n]
    flow = h1[:, None, :] * W2[None] * W3[t][None, :, None] / y[:, None, None]  # [n, k, j]
    flow = flow.mean(0)  # [2 (h2), 3 (h1)]
    nodes = g.nodes.set_index("id")
    assert set(nodes.index) == {"1:concept:a", "1:unit:2", "3:concept:b", "3:unit:1", "output:1"}
    assert nodes.loc["1:unit:2", "labelled"] == False  # noqa: E712
    assert nodes.loc["output:1", "label"] == "cls1"
    e = {(r.source, r.target): r.signed_weight for r in g.edges.itertuples()}
    assert e[("1:concept:a", "3:concept:b")] == pytest.approx(float(flow[0, :2].sum()), rel=1e-4)
    assert e[("1:unit:2", "3:concept:b")] == pytest.approx(float(flow[0, 2]), rel=1e-4)
    assert e[("1:concept:a", "3:unit:1")] == pytest.approx(float(flow[1, :2].sum()), rel=1e-4)
    assert e[("1:unit:2", "3:unit:1")] == pytest.approx(float(flow[1, 2]), rel=1e-4)
    rel_h2 = (model[3](model[2](h1)).detach() * W3[t] / y[:, None]).mean(0)
    assert e[("3:concept:b", "output:1")] == pytest.approx(float(rel_h2[0]), rel=1e-4)
    assert nodes.loc["output:1", "relevance"] == pytest.approx(1.0, rel=1e-4)
    assert nodes.loc["1:concept:a", "relevance"] == pytest.approx(float(flow[:, :2].sum()), rel=1e-4)


def test_attribution_graph_edges_into_node_sum_to_its_relevance():
    model, x = _cnn(), _x(3)
    labels = {"1": ["edge", None, "edge", None], "3": [None, "round", None, None, "round"]}
    g = R.build_attribution_graph(model, x, 2, ["1", "3"], EpsilonPlusFlat(), labels=labels, top_k=1,
                                  batch_size=5)
    nodes = g.nodes.set_index("id")
    into = g.edges.groupby("target").signed_weight.sum()
    out_of = g.edges.groupby("source").signed_weight.sum()
    for nid, row in nodes.iterrows():
        if row.layer != "1":  # every node above the lowest layer receives its relevance
            assert into[nid] == pytest.approx(row.relevance, rel=1e-3, abs=1e-5), nid
        if row.layer != "output":  # and passes it on
            assert out_of[nid] == pytest.approx(row.relevance, rel=1e-3, abs=1e-5), nid
    # nothing hidden: every component of every layer is in exactly one node
    for layer, C in (("1", 4), ("3", 5)):
        comps = sorted(c for cs in g.nodes[g.nodes.layer == layer].components for c in cs)
        assert comps == list(range(C))
    assert (g.edges.weight >= 0).all()
    assert set(g.nodes.columns) >= {"id", "layer", "label", "components", "relevance", "labelled"}
