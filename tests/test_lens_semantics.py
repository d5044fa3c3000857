"""The Lens's analysis parts (SemanticIndex, Attribution) over a small stand-in pipeline with
hand-set embeddings, plus end-to-end runs on the real Lens with a tiny CLIP and on the demo world."""
from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from zennit.composites import EpsilonPlusFlat

from semlens_widgets.kernels import measures as M
from semlens_widgets.kernels import relevance as R
from semlens_widgets.lens_keys import AnalysisKeys
from semlens_widgets.lens_layers import LayerSet
from semlens_widgets.lens_relevance import Attribution
from semlens_widgets.lens_semantics import ComponentInfo, SemanticIndex, compare
from semlens_widgets.results import AttributionGraph, AuditResult, ComponentExamples, LabelResult
from semlens_widgets.store import Store

torch.set_num_threads(1)

D = 10
E = torch.eye(D)
CONCEPTS = {"dog": E[0], "cat": E[1], "car": E[2], "grass": E[3], "watermark": E[4], "text": E[5]}
NULL = E[9]


class FakeFM:
    """Concept embeddings are unit axes; an image embeds to (mean R, mean G, mean B) on axes 6-8."""

    def __init__(self, name="fake-clip"):
        self.identity = {"name": name, "dim": D}
        self.dim = D
        self.encoded: list[str] = []

    def encode_concepts(self, names):
        self.encoded += list(names)
        return torch.stack([CONCEPTS[n] if n in CONCEPTS else E[8] for n in names])

    def null_embedding(self):
        return NULL.clone()

    def encode_images(self, x):
        out = torch.zeros(x.shape[0], D)
        out[:, 6:9] = x.mean((2, 3))
        return out / out.norm(dim=1, keepdim=True)


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


class StandIn:
    """A pipeline stand-in: the ComponentSource and ModelSource protocols, nothing else."""

    def __init__(self, fm=None, seed=0, n=12):
        torch.manual_seed(seed)
        self.model = nn.Sequential(
            nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.ReLU(),
            nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3, bias=False),
        ).eval()
        with torch.no_grad():
            self.model[2].weight.abs_()
            self.model[6].weight.abs_()
        self.fm = fm or FakeFM()
        self.fingerprint = f"standin-{seed}"
        self.layers = ["1", "3"]
        self.class_names = ["zero", "one", "two"]
        self.num_classes = 3
        self.device = torch.device("cpu")
        self.composite = EpsilonPlusFlat()
        self.X = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        self.sample_labels = torch.arange(n) % 3
        self.sample_predictions = self.model(self.X).argmax(1).detach()
        self.m = 4
        g = torch.Generator().manual_seed(seed + 1)
        noise = lambda *s: 0.05 * torch.randn(*s, generator=g)  # noqa: E731
        # layer "1": dog, watermark, dog+grass;  layer "3": dog, cat, watermark, null-ish, text, grass+watermark
        self._theta = {
            "1": _unit(torch.stack([E[0], E[4], E[0] + E[3]]) + 0.3 * NULL),
            "3": _unit(torch.stack([E[0], E[1], E[4], NULL + 0.1 * E[2], E[5], E[3] + E[4]]) + 0.3 * NULL),
        }
        self._V = {l: _unit(t[:, None, :] + noise(t.shape[0], self.m, D)) for l, t in self._theta.items()}
        self._idx = {l: torch.stack([torch.randperm(n, generator=g)[: self.m] for _ in range(t.shape[0])])
                     for l, t in self._theta.items()}

    def embeddings(self, layer):
        return self._theta[self._check_layer(layer)].clone()

    def example_embeddings(self, layer):
        return self._V[self._check_layer(layer)].clone()

    def num_components(self, layer):
        return self._theta[self._check_layer(layer)].shape[0]

    def examples(self, layer, k):
        idx = self._idx[self._check_layer(layer)][k]
        return ComponentExamples(layer, k, idx.clone(), torch.linspace(1, 0, self.m))

    def model_inputs(self, indices):
        return self.X[torch.as_tensor(indices)]

    def _check_layer(self, layer):
        if layer not in self.layers:
            raise ValueError(f"unknown layer {layer!r}; this Lens has layers {self.layers}")
        return layer


def analysis(src: StandIn, store: Store | None = None, chunk_size: int = 64) -> SemanticIndex:
    """The semantic index and its attribution part over ``src``, wired as the Lens wires them."""
    store = store or Store(None)
    layers = LayerSet(src.model, src.layers)
    keys = AnalysisKeys(src.fingerprint)
    attribution = Attribution(src, store, keys, layers, batch_size=5, chunk=chunk_size * src.m, progress=False)
    return SemanticIndex(src, src.fm, store, keys, layers, attribution)


@pytest.fixture
def src():
    return StandIn()


@pytest.fixture
def lens(src):
    """The semantic index over the stand-in (its relevance part is ``lens.attribution``)."""
    return analysis(src)


# ------------------------------------------------------------------ search / label


def test_search_table_and_labels(lens):
    df = lens.search("dog", k=3)
    assert list(df.columns) == ["query", "rank", "layer", "component", "score", "label"]
    assert df["rank"].tolist() == [0, 1, 2] and (df.score.diff().dropna() <= 0).all()
    assert (df.layer.iloc[0], df.component.iloc[0]) in {("1", 0), ("3", 0)}
    assert df.label.isna().all()  # nothing labelled yet
    lens.label(["dog", "cat", "watermark"], "3")
    df3 = lens.search("cat", layer="3", k=2)
    assert df3.component.iloc[0] == 1 and df3.label.iloc[0] == "cat"
    # with a vocabulary, unlabelled layers get labelled on demand
    lens.set_vocabulary(["dog", "watermark"])
    df1 = lens.search("watermark", layer="1", k=1)
    assert df1.component.iloc[0] == 1 and df1.label.iloc[0] == "watermark"
    multi = lens.search(["dog", "cat"], layer="3", k=2)
    assert multi["query"].tolist() == ["dog", "dog", "cat", "cat"]


def test_search_square_case_and_scores(lens, src):
    C = src.num_components("3")
    queries = ["dog", "cat", "car", "grass", "watermark", "text"]
    assert len(queries) == C
    S = lens.search_scores(queries, "3")
    assert S.shape == (C, C)
    theta = _unit(src.embeddings("3"))
    for q, name in enumerate(queries):  # row q is query q
        assert torch.allclose(S[q], theta @ CONCEPTS[name] - theta @ NULL, atol=1e-5)
    df = lens.search(queries, layer="3", k=1)
    # "car" is not carried by any component: the null-ish component 3 (raw cosine to "car" > 0)
    # is pushed to the bottom by the null baseline, the least null-like one (5) comes first
    assert df.component.tolist() == [0, 1, 5, 5, 2, 4]
    assert S[2].argmin() == 3 and float(theta[3] @ CONCEPTS["car"]) > 0


def test_search_image_probe(src):
    red = torch.zeros(3, 4, 4)
    red[0] = 1.0
    src._theta["1"][2] = _unit(torch.tensor([0.0] * 6 + [1.0, 0.0, 0.0, 0.0]))
    lens = analysis(src)
    df = lens.search(red, layer="1", k=1)
    assert df.component.iloc[0] == 2 and df["query"].iloc[0] == "image"
    two = lens.search(torch.stack([red, red]), layer="1", k=1)
    assert two["query"].tolist() == ["image 0", "image 1"]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lens.search(red * 5, layer="1")


def test_search_bad_input(lens):
    with pytest.raises(ValueError, match="whitespace"):
        lens.search("   ")
    with pytest.raises(ValueError, match="empty list"):
        lens.search([])
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        lens.search("dog", layer="nope")
    with pytest.raises(ValueError, match="k must be"):
        lens.search("dog", k=0)
    with pytest.raises(TypeError, match="query must be"):
        lens.search(3)


def test_label_result(lens):
    res = lens.label(["dog", "cat", "car", "watermark"], "3")
    assert isinstance(res, LabelResult)
    assert res.table.label.tolist() == ["dog", "cat", "watermark", None, None, "watermark"]
    assert set(res.table.columns) >= {"layer", "component", "label", "score", "baseline"}
    assert res.gaps == ["car"]
    assert res.groups == {"dog": [0], "cat": [1], "watermark": [2, 5]}
    assert res.counts["watermark"] == 2
    strict = lens.label(["dog", "cat", "car", "watermark"], "3", threshold=0.9)
    assert strict.table.label.tolist()[5] is None  # the mixed component falls below 0.9
    with pytest.raises(ValueError, match="non-empty list"):
        lens.label([], "3")
    with pytest.raises(ValueError, match="duplicates"):
        lens.label(["dog", "dog"], "3")
    with pytest.raises(ValueError, match="unknown layer"):
        lens.label(["dog"], "9")


# ------------------------------------------------------------------ measures / map


def test_measures(lens, src):
    df = lens.measures("3")
    assert list(df.columns) == ["layer", "component", "clarity", "polysemanticity", "max_similarity",
                                "nearest", "label"]
    assert np.allclose(df.clarity, M.clarity(src.example_embeddings("3")).numpy(), atol=1e-6)
    assert torch.allclose(lens.measure_tensors("3")["clarity"], torch.tensor(df.clarity.values, dtype=torch.float32))
    assert lens.measure_tensors("3")["polysemanticity"].shape == (6,)
    theta = _unit(src.embeddings("3"))
    S = theta @ theta.T
    S.fill_diagonal_(-2)
    assert lens.redundancy("3") == pytest.approx(float(S.max(1).values.mean()), abs=1e-5)
    assert df.nearest.tolist() == S.argmax(1).tolist()
    assert lens.similarity("1", "3").shape == (3, 6)
    summ = lens.measures_summary()
    assert summ.layer.tolist() == ["1", "3"] and summ.n_components.tolist() == [3, 6]
    assert lens.store.has(*astuple(lens.keys.measures("3", 0)))


def test_map_small_layer_cached(lens):
    df = lens.map("1")
    assert list(df.columns) == ["layer", "component", "x", "y"] and len(df) == 3
    key = "semantics/map/1"
    assert lens.store.meta(key) is not None
    pd.testing.assert_frame_equal(df, lens.map("1"))


@pytest.mark.slow
def test_map_umap_joint_layers(lens):
    df = lens.map(["1", "3"], seed=1)
    assert df.layer.tolist() == ["1"] * 3 + ["3"] * 6
    assert np.isfinite(df[["x", "y"]].values).all()
    again = lens.map(["1", "3"], seed=1)
    pd.testing.assert_frame_equal(df, again)


# ------------------------------------------------------------------ relevance


def test_relevance_matches_kernel_and_is_cached(lens, monkeypatch, src):
    df = lens.attribution.relevance(1, "3")
    assert list(df.columns) == ["layer", "component", "relevance"] and len(df) == 6
    samples = torch.nonzero(src.sample_labels == 1).reshape(-1)
    direct = R.component_relevance(src.model, src.X[samples], torch.ones(len(samples), dtype=torch.int64),
                                   ["3"], EpsilonPlusFlat(), normalize="abs")["3"].mean(0)
    assert np.allclose(df.relevance.values, direct.numpy(), atol=1e-5)
    raw = lens.attribution.relevance(1, "3", normalize="none", per_sample=True)
    assert list(raw.columns) == ["sample", "layer", "component", "relevance"] and len(raw) == 6 * len(samples)
    logits = src.model(src.X[samples])[:, 1].detach().numpy()
    assert np.allclose(raw.groupby("sample").relevance.sum().values, logits, rtol=1e-3)
    # the other layer came from the same pass, everything is in the store now
    calls = []
    monkeypatch.setattr(R, "component_relevance", lambda *a, **k: calls.append(1))
    lens.attribution.relevance(1, "1")
    lens.attribution.relevance(1, "3", max_samples=256)
    assert calls == []


def test_relevance_over_predictions_and_errors(lens, src):
    pred = int(src.sample_predictions[0])
    df = lens.attribution.relevance(pred, "1", over="prediction", max_samples=2)
    assert len(df) == 3
    assert lens.attribution.relevance("two", "1").shape == (3, 3)  # class names work too
    with pytest.raises(ValueError, match=r"target class 3 out of range.*\[0, 3\)"):
        lens.attribution.relevance(3, "1")
    with pytest.raises(ValueError, match="out of range"):
        lens.attribution.relevance(-1, "1")
    with pytest.raises(ValueError, match="over must be"):
        lens.attribution.relevance(0, "1", over="everything")
    with pytest.raises(ValueError, match="unknown layer"):
        lens.attribution.relevance(0, "fc")


def test_top_classes_and_component_info(lens, src):
    rel = lens.attribution.class_relevance("3")
    assert rel.shape == (3, 6)
    for t in range(3):  # per-class means agree with the per-target computation
        assert np.allclose(rel[t].numpy(), lens.attribution.relevance(t, "3", max_samples=32).relevance.values, atol=1e-5)
    tc = lens.attribution.top_classes("3", k=2)
    assert list(tc.columns) == ["layer", "component", "rank", "class", "name", "relevance"]
    assert len(tc) == 12
    assert tc[tc["rank"] == 0]["class"].tolist() == rel.argmax(0).tolist()
    assert tc.name.iloc[0] == src.class_names[tc["class"].iloc[0]]
    lens.label(["dog", "cat"], "3")
    info = lens.component_info("3", 1, k=2)
    assert isinstance(info, ComponentInfo) and info.label == "cat"
    assert torch.equal(info.examples.indices, src._idx["3"][1])
    assert len(info.top_classes) == 2 and set(info.measures) >= {"clarity", "polysemanticity", "nearest"}


def test_class_relevance_resumes_after_an_interruption(monkeypatch):
    """The class-relevance pass saves chunks of chunk_size * m samples: after a failure in the
    third chunk the next call computes only the third, ends identical to an uninterrupted
    pass, and leaves no chunk entries behind."""
    ref = analysis(StandIn()).attribution.class_relevance("3", normalize="none")
    lens = analysis(StandIn(), chunk_size=1)  # chunks of m = 4 samples: 12 samples -> 3 chunks
    real, calls = R.component_relevance, []

    def failing(model, inputs, targets, *a, **kw):
        calls.append(len(targets))
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return real(model, inputs, targets, *a, **kw)

    monkeypatch.setattr(R, "component_relevance", failing)
    with pytest.raises(RuntimeError, match="injected"):
        lens.attribution.class_relevance("3")
    assert sorted(lens.store.keys("semantics/class_relevance_run/")) == [
        "semantics/class_relevance_run/label/chunk0-4", "semantics/class_relevance_run/label/chunk4-8"]
    calls.clear()
    monkeypatch.setattr(R, "component_relevance", lambda *a, **kw: calls.append(len(a[2])) or real(*a, **kw))
    torch.testing.assert_close(lens.attribution.class_relevance("3", normalize="none"), ref)
    assert calls == [4]  # only the unfinished chunk
    assert lens.store.keys("semantics/class_relevance_run/") == []
    assert lens.attribution.class_relevance("1").shape == (3, 3) and calls == [4]  # both layers came from that pass


# ------------------------------------------------------------------ audit


def test_audit_categories_relevance_and_samples(lens, src):
    res = lens.audit(valid=["dog", "cat"], spurious=["watermark", "text"], layer="3", target=0)
    assert isinstance(res, AuditResult)
    t = res.table
    assert t.category.tolist() == ["valid", "valid", "spurious", "unexpected", "spurious", "spurious"]
    assert t.best_valid.tolist()[:2] == ["dog", "cat"] and t.best_spur.iloc[2] == "watermark"
    assert t.label.tolist()[3] is None and t.label.iloc[4] == "text"
    assert np.allclose(t.relevance.values, lens.attribution.relevance(0, "3").relevance.values)
    s = res.summary.set_index("category")
    assert s.loc["spurious", "n_components"] == 3
    assert s.share.sum() == pytest.approx(1.0)
    pos = np.clip(t.relevance.values, 0, None)
    assert s.loc["valid", "relevance"] == pytest.approx(pos[:2].sum())
    assert sorted(res.spurious_samples) == [2, 4, 5]
    assert torch.equal(res.spurious_samples[4], src._idx["3"][4])
    with pytest.raises(ValueError, match="spurious must be a non-empty list"):
        lens.audit(["dog"], [], "3", 0)
    with pytest.raises(ValueError, match="out of range"):
        lens.audit(["dog"], ["text"], "3", 7)


# ------------------------------------------------------------------ attribution graph


def test_attribution_graph_is_stored_and_reloaded(tmp_path, monkeypatch):
    """A second lens on the same store (a new kernel) gets the same graph without running CRP;
    other parameters compute a new one."""
    a = analysis(StandIn(), Store(tmp_path / "s"))
    g = a.attribution_graph(0, ["3", "1"], ["dog", "watermark"], top_k=1)
    b = analysis(StandIn(), Store(tmp_path / "s"))
    monkeypatch.setattr(R, "build_attribution_graph", lambda *a, **kw: pytest.fail("recomputed"))
    h = b.attribution_graph(0, ["3", "1"], ["dog", "watermark"], top_k=1)
    assert h.target == g.target and h.layers == g.layers
    pd.testing.assert_frame_equal(h.nodes, g.nodes)
    pd.testing.assert_frame_equal(h.edges, g.edges)
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        b.attribution_graph(0, ["3", "1"], ["dog", "watermark"], top_k=2)


def test_attribution_graph_groups_and_conservation(lens):
    g = lens.attribution_graph(0, ["3", "1"], ["dog", "watermark"], top_k=1)
    assert isinstance(g, AttributionGraph) and g.layers == ["1", "3"]
    nodes = g.nodes.set_index("id")
    assert nodes.loc["3:concept:dog", "components"] == [0]
    assert sorted(nodes.loc["3:concept:watermark", "components"]) == [2, 5]
    assert nodes.loc["output:0", "label"] == "zero"
    # the lower layer: "1" comp 0 and 2 are dog-ish, 1 is watermark
    assert sorted(nodes.loc["1:concept:dog", "components"]) == [0, 2]
    into = g.edges.groupby("target").signed_weight.sum()
    for nid, row in nodes.iterrows():
        if row.layer != "1":
            assert into[nid] == pytest.approx(row.relevance, rel=1e-3, abs=1e-5)
    assert lens.attribution_graph(0, ["3", "1"], ["dog", "watermark"], top_k=1) is g  # cached
    plain = lens.attribution_graph(0, top_k=2)  # no concepts: all unlabelled, nothing hidden
    assert not plain.nodes[plain.nodes.layer != "output"].labelled.any()
    with pytest.raises(ValueError, match="out of range"):
        lens.attribution_graph(5)


# ------------------------------------------------------------------ compare


def test_compare(lens):
    b = StandIn(seed=1)
    b._theta["3"] = b._theta["3"][[0, 2, 3]]  # B: dog, watermark, null-ish
    other = analysis(b)
    c = lens.compare(other, "3", "3", concepts=["dog", "cat", "watermark", "car"])
    assert c.shared == ["dog", "watermark"] and c.unique_a == ["cat"] and c.unique_b == []
    assert c.counts.set_index("concept").loc["watermark"].tolist() == [2, 1]
    assert c.s_ba == pytest.approx(1.0, abs=1e-5)  # B's components all exist in A
    assert c.s_ab < 1.0
    # A's "cat" has no counterpart in B: its nearest B component is the null-ish one
    assert c.matches.component_b.tolist()[:3] == [0, 2, 1]
    assert c.matches.label_b.tolist()[:3] == ["dog", None, "watermark"]
    # across layers with different sizes
    c2 = lens.compare(other, "1", "3")
    assert len(c2.matches) == 3 and c2.shared == []
    foreign = analysis(StandIn(fm=FakeFM("another-clip")))
    with pytest.raises(ValueError, match="different foundation models"):
        lens.compare(foreign, "3", "3")
    with pytest.raises(TypeError, match="two semlens_widgets.Lens objects"):
        compare(lens, other, "3", "3")  # the public function takes lenses


def test_public_export():
    import semlens_widgets as slw

    assert slw.compare is compare


# ------------------------------------------------------------------ the real Lens


def test_real_lens_end_to_end(tmp_path):
    from _models import TinyCNN, red_square_images, tiny_clip_fm

    from semlens_widgets.lens import Lens

    fm = tiny_clip_fm(tmp_path)
    x, _ = red_square_images(18, size=16, square=4)
    data = torch.utils.data.TensorDataset(x, torch.arange(18) % 3)
    layers = ["features.relu1", "features.relu2"]
    lens = Lens(TinyCNN(num_classes=3), data, fm, layers, m=4, crop="full", store=tmp_path / "s",
                progress=False, batch_size=8)
    lens.run()
    hits = lens.search("a red square", k=4)
    assert len(hits) == 4 and set(hits.layer) <= set(layers)
    lab = lens.label(["red", "gray", "square"], "features.relu2")
    assert len(lab.table) == 16
    m = lens.measures("features.relu1")
    assert len(m) == 8 and m.clarity.between(-1, 1).all()
    rel = lens.relevance(0, "features.relu2", normalize="none")
    assert len(rel) == 16 and np.isfinite(rel.relevance).all()
    res = lens.audit(["red"], ["gray"], "features.relu2", 0)
    assert len(res.table) == 16 and res.summary.n_components.sum() == 16
    g = lens.attribution_graph(1, layers, ["red", "gray"], top_k=2, max_samples=4)
    assert set(g.nodes.layer) == {"features.relu1", "features.relu2", "output"}
    tc = lens.top_classes("features.relu1", k=2)
    assert len(tc) == 16
    # a second Lens on the same store reuses the stored relevance without running CRP
    lens2 = Lens(TinyCNN(num_classes=3), data, fm, layers, m=4, crop="full", store=tmp_path / "s",
                 progress=False, batch_size=8).run()
    orig = R.component_relevance
    try:
        R.component_relevance = None  # would fail if called
        rel2 = lens2.relevance(0, "features.relu2", normalize="none")
    finally:
        R.component_relevance = orig
    pd.testing.assert_frame_equal(rel, rel2)


# ------------------------------------------------------------------ the demo world


@pytest.mark.slow
def test_audit_demo_world_watermark_components_are_spurious(tmp_path):
    """The planted shortcut (star <- watermark): components whose activation is best predicted by
    the watermark (ground truth, clear AUC) are mostly audited spurious (not both: the empty
    prompt must separate what their crops show from what they do not) and are more relevant for
    the shortcut class than the average component."""
    from semlens_widgets import demo
    from semlens_widgets.lens import Lens

    world = demo.load(n_per_class=12)
    layer = world.layers[-1]
    lens = Lens(world.model, world.dataset, world.fm, [layer], m=8, store=tmp_path / "s", progress=False,
                batch_size=128).run()
    truth = world.ground_truth.table(layer)
    wm = truth[(truth.concept == world.shortcut_artefact) & truth.clear].component.to_numpy()
    assert len(wm) > 0, "the demo classifier should have watermark components"
    res = lens.audit(valid=world.valid_concepts[world.shortcut_class], spurious=[world.shortcut_artefact],
                     layer=layer, target=world.shortcut_target)
    t = res.table.set_index("component")
    assert (t.category[wm] == "spurious").mean() >= 0.5
    assert t.relevance[wm].mean() > t.relevance.mean()
    assert set(int(c) for c in wm) & set(res.spurious_samples)
