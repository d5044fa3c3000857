"""Search over big layers (paper eq. 4 through inverted lists): exact scores, measured recall,
calibration, the dense fallback, and the SemanticIndex wiring (stored index, small layers
unchanged)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from semlens_widgets.kernels import semantics as S
from semlens_widgets.kernels.vectors import normalize
from semlens_widgets.lens_keys import AnalysisKeys
from semlens_widgets.lens_layers import LayerSet
from semlens_widgets.lens_relevance import Attribution
from semlens_widgets.lens_semantics import SemanticIndex
from semlens_widgets.store import Store

torch.set_num_threads(1)
D = 256


def clustered(C: int, seed: int = 0, per_concept: int = 40):
    """Unit thetas [C, D] shaped like CLIP's: a common direction, concept groups, concepts, noise;
    plus text-like probes [Q, D] of random concepts and a null embedding."""
    g = torch.Generator().manual_seed(seed)
    mu = normalize(torch.randn(D, generator=g))
    n_con = max(2, C // per_concept)
    groups = normalize(torch.randn(max(1, n_con // 10), D, generator=g))
    concepts = normalize(0.6 * groups[torch.randint(0, groups.shape[0], (n_con,), generator=g)]
                         + 0.8 * normalize(torch.randn(n_con, D, generator=g)))
    cc = torch.randint(0, n_con, (C,), generator=g)
    theta = normalize(0.6 * mu + 0.6 * concepts[cc] + 0.5 * normalize(torch.randn(C, D, generator=g)))
    text = normalize(torch.randn(D, generator=g))  # the text side's own common direction
    null = normalize(text + 0.3 * normalize(torch.randn(D, generator=g)))

    def probes(q: int, seed: int) -> torch.Tensor:
        h = torch.Generator().manual_seed(seed)
        ci = torch.randint(0, n_con, (q,), generator=h)
        return normalize(0.5 * text + 0.5 * concepts[ci] + 0.6 * normalize(torch.randn(q, D, generator=h)))

    return theta, null, probes


def recall(got: torch.Tensor, exact: torch.Tensor) -> float:
    return float((got[:, :, None] == exact[:, None, :]).any(2).float().mean())


def test_index_scores_are_exact_and_exhaustive_scan_is_the_dense_top_k():
    theta, null, probes = clustered(3000)
    p = probes(20, 1)
    index = S.build_search_index(theta, torch.cat([probes(32, 2), S.calibration_probes(theta, 32)]), null,
                                 n_lists=40)
    assert index is not None and 4 <= index.n_probe <= 10 and index.recall >= S.TARGET_RECALL
    dense = S.search_scores(p, null, theta, theta_normalized=True)  # [Q, C]
    v, i = S.index_top_hits(index, theta, S.search_direction(p, null), 10)
    # every returned score is the dense score of that component (eq. 4, float32)
    torch.testing.assert_close(v, dense.gather(1, i), rtol=0, atol=1e-6)
    assert (v[:, :-1] >= v[:, 1:]).all()
    # scanning every cell is the dense search
    v_all, i_all = S.index_top_hits(index, theta, S.search_direction(p, null), 10, n_probe=40)
    ve, ie = S.top_hits(dense, 10)
    torch.testing.assert_close(v_all, ve, rtol=0, atol=1e-6)
    assert torch.equal(i_all, ie)
    # cells partition the components
    assert torch.equal(torch.sort(index.order).values, torch.arange(3000))
    assert int(index.offsets[-1]) == 3000 and (index.offsets.diff() >= 0).all()


def test_measured_recall_on_a_medium_clustered_case():
    """40k components: the calibrated index finds >= 99% of the dense top-10 of held-out text-like
    probes (other seeds than the calibration's) while scanning a fraction of the cells."""
    theta, null, probes = clustered(40000)
    cal = torch.cat([probes(48, 100), S.calibration_probes(theta, 64)])
    index = S.build_search_index(theta, cal, null)
    assert index is not None
    L = index.centroids.shape[0]
    assert L == 200 and index.n_probe <= L // 4
    test = probes(100, 7)
    exact = torch.topk(S.search_scores(test, null, theta, theta_normalized=True), 10, dim=1).indices
    _, got = S.index_top_hits(index, theta, S.search_direction(test, null), 10)
    assert recall(got, exact) >= 0.99
    # a larger k scans proportionally more cells
    _, got50 = S.index_top_hits(index, theta, S.search_direction(test, null), 50)
    exact50 = torch.topk(S.search_scores(test, null, theta, theta_normalized=True), 50, dim=1).indices
    assert recall(got50, exact50) >= 0.98


def test_build_is_seeded_and_round_trips_through_tensors():
    theta, null, probes = clustered(2000)
    cal = probes(16, 3)
    a = S.build_search_index(theta, cal, null, n_lists=20, seed=5)
    b = S.build_search_index(theta, cal, null, n_lists=20, seed=5)
    assert a is not None and b is not None
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.order, b.order) and a.n_probe == b.n_probe
    c = S.SearchIndex.from_tensors(a.tensors(), 2000, D)
    assert torch.equal(c.order, a.order) and (c.n_probe, c.recall, c.k) == (a.n_probe, a.recall, a.k)
    # an entry that does not fit the layer is refused, never used to index theta
    bad = a.tensors()
    bad["order"] = bad["order"].clone()
    bad["order"][0] = 2000
    for t, C, d in ((bad, 2000, D), (a.tensors(), 1999, D), (a.tensors(), 2000, D + 1)):
        with pytest.raises(ValueError, match="does not fit a layer"):
            S.SearchIndex.from_tensors(t, C, d)
    dup = a.tensors()
    dup["order"] = dup["order"].clone()
    dup["order"][1] = dup["order"][0]
    with pytest.raises(ValueError, match="does not fit"):
        S.SearchIndex.from_tensors(dup, 2000, D)


def test_unstructured_layer_falls_back_to_dense_search():
    """Uniformly random thetas have no cells worth the name: no n_probe up to a quarter of the
    cells reaches the target recall, so the build says 'search densely' (None)."""
    g = torch.Generator().manual_seed(0)
    theta = normalize(torch.randn(4000, D, generator=g))
    null = normalize(torch.randn(D, generator=g))
    assert S.build_search_index(theta, normalize(torch.randn(32, D, generator=g)), null, n_lists=64) is None


def test_merge_hits_over_layers_is_top_hits_over_layers():
    g = torch.Generator().manual_seed(0)
    scores = [torch.randn(3, 7, generator=g), torch.randn(3, 2, generator=g), torch.randn(3, 30, generator=g)]
    a = S.top_hits_over_layers(scores, 5)
    b = S.merge_hits_over_layers([S.top_hits(s, 5) for s in scores], 5)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="hits is empty"):
        S.merge_hits_over_layers([], 3)


def test_index_input_errors():
    theta, null, probes = clustered(500)
    index = S.build_search_index(theta, probes(8, 1), null, n_lists=16)
    assert index is not None
    with pytest.raises(ValueError, match="covers 500 components but theta has 10"):
        S.index_top_hits(index, theta[:10], S.search_direction(probes(1, 2), null), 3)
    with pytest.raises(ValueError, match="k must be a positive int"):
        S.index_top_hits(index, theta, S.search_direction(probes(1, 2), null), 0)
    with pytest.raises(ValueError, match="n_lists must be in 1..500"):
        S.build_search_index(theta, probes(8, 1), null, n_lists=501)


# ------------------------------------------------------------------ the SemanticIndex wiring


class WordFM:
    """A foundation model stand-in: each concept name embeds to a fixed pseudo-random unit vector
    near the thetas' concepts (seeded by the name)."""

    def __init__(self, theta: torch.Tensor, null: torch.Tensor):
        self.theta, self._null = theta, null
        self.identity = {"name": "word-fm", "dim": D}
        self.dim = D
        self.encoded = 0

    def encode_concepts(self, names):
        self.encoded += len(names)
        out = []
        for n in names:
            h = torch.Generator().manual_seed(sum(map(ord, n)) * 7919)
            row = self.theta[torch.randint(0, self.theta.shape[0], (1,), generator=h)][0]
            out.append(normalize(row + 0.8 * normalize(torch.randn(D, generator=h))))
        return torch.stack(out)

    def null_embedding(self):
        return self._null.clone()


class Source:
    """The ComponentSource protocol over fixed thetas (one small, one big layer)."""

    def __init__(self, thetas: dict[str, torch.Tensor]):
        self.thetas = thetas
        self.model = nn.Sequential(*[nn.Identity() for _ in thetas])
        self.num_classes, self.sample_labels, self.sample_predictions = None, None, None

    def embeddings(self, layer):
        return self.thetas[layer].clone()

    def example_embeddings(self, layer):
        return self.thetas[layer][:, None].clone()

    def num_components(self, layer):
        return self.thetas[layer].shape[0]


def index_over(src: Source, fm: WordFM, store: Store) -> SemanticIndex:
    layers = LayerSet(src.model, list(src.thetas))
    keys = AnalysisKeys("lens-fp")
    return SemanticIndex(src, fm, store, keys, layers, Attribution(src, store, keys, layers, batch_size=4,
                                                                     chunk=64, progress=False))


def test_semantic_index_searches_big_layers_through_a_stored_index(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "INDEX_MIN_COMPONENTS", 5000)
    big, null, probes = clustered(12000, seed=3)
    small = big[:300].flip(1).contiguous()
    src = Source({"0": small, "1": big})
    fm = WordFM(big, null)
    store = Store(tmp_path / "s")
    si = index_over(src, fm, store)
    assert si.search_index("0") is None  # small: dense, exact
    index = si.search_index("1")
    assert index is not None and store.keys("semantics/search_index/") == ["semantics/search_index/1"]
    q = probes(30, 11)
    df = si.search(q, k=10)
    assert list(df.columns) == ["query", "rank", "layer", "component", "score", "label"]
    # exact scores; recall against the dense search over both layers
    dense = {l: S.search_scores(q, null, normalize(t), theta_normalized=True) for l, t in src.thetas.items()}
    for row in df.itertuples():
        assert abs(row.score - float(dense[row.layer][int(row.query.split()[-1]), row.component])) < 1e-5
    v, comp, lay = S.top_hits_over_layers([dense["0"], dense["1"]], 10)
    exact = {(qi, ["0", "1"][int(l)], int(c)) for qi in range(30) for l, c in zip(lay[qi], comp[qi])}
    got = {(int(r.query.split()[-1]), r.layer, int(r.component)) for r in df.itertuples()}
    assert len(exact & got) / len(exact) >= 0.99
    # a second index over the same store loads the index instead of building it again
    encoded = fm.encoded
    again = index_over(src, fm, store)
    monkeypatch.setattr(S, "build_search_index", lambda *a, **k: pytest.fail("rebuilt"))
    assert torch.equal(again.search_index("1").order, index.order)
    assert fm.encoded == encoded
    assert again.search(q, k=10).equals(df)
    # a damaged stored index is rebuilt (with a warning), not used
    monkeypatch.undo()
    monkeypatch.setattr(S, "INDEX_MIN_COMPONENTS", 5000)
    key = "semantics/search_index/1"
    t = dict(store.load(key, store.meta(key)["fingerprint"]))
    t["offsets"] = t["offsets"].flip(0)
    store.save(key, t, store.meta(key)["fingerprint"])
    with pytest.warns(UserWarning, match="does not fit a layer.*rebuilding"):
        third = index_over(src, fm, store).search_index("1")
    assert torch.equal(third.order, index.order)


def test_small_layers_search_exactly_as_before(tmp_path):
    """Below INDEX_MIN_COMPONENTS the search is the dense top-k, bit for bit."""
    theta, null, probes = clustered(2000, seed=4)
    src = Source({"0": theta[:700], "1": theta[700:]})
    si = index_over(src, WordFM(theta, null), Store(None))
    q = probes(5, 1)
    df = si.search(q, k=7)
    v, comp, lay = S.top_hits_over_layers(
        [S.search_scores(q, null, normalize(src.thetas[l]), theta_normalized=True) for l in ("0", "1")], 7)
    assert df.component.tolist() == comp.reshape(-1).tolist()
    assert df.layer.tolist() == [["0", "1"][int(x)] for x in lay.reshape(-1)]
    assert df.score.tolist() == v.reshape(-1).double().tolist()
