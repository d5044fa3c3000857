"""Measures (DESIGN eq. 8; paper eqs. 7, 9, 10) against direct implementations of the formulas."""
import math

import pytest
import torch

from semlens_widgets.kernels import measures as M


def _pairwise_clarity(V):
    """Direct eq. 7: mean off-diagonal cosine of the m examples, one component at a time."""
    out = []
    for v in V:
        v = v / v.norm(dim=-1, keepdim=True)
        s = v @ v.T
        m = v.shape[0]
        out.append((s.sum() - s.diagonal().sum()) / (m * (m - 1)))
    return torch.stack(out)


def test_clarity_equals_mean_pairwise_cosine():
    g = torch.Generator().manual_seed(0)
    V = torch.randn(17, 9, 12, generator=g) + 0.7 * torch.randn(17, 1, 12, generator=g)
    got = M.clarity(V, chunk=5)  # chunking must not change anything
    assert torch.allclose(got, _pairwise_clarity(V), atol=1e-5)
    # the range: identical examples -> 1
    same = torch.randn(1, 1, 12).expand(2, 6, 12)
    assert torch.allclose(M.clarity(same), torch.ones(2), atol=1e-5)


def test_clarity_with_valid_mask_and_float16():
    g = torch.Generator().manual_seed(1)
    V = torch.randn(6, 8, 10, generator=g)
    valid = torch.ones(6, 8, dtype=torch.bool)
    valid[0, 5:] = False
    valid[1, 1:] = False  # a single example: clarity undefined
    got = M.clarity(V, valid)
    assert torch.allclose(got[0], _pairwise_clarity(V[:1, :5])[0], atol=1e-5)
    assert math.isnan(float(got[1]))
    assert torch.allclose(got[2:], _pairwise_clarity(V[2:]), atol=1e-5)
    half = M.clarity(V.half())
    assert torch.allclose(half, _pairwise_clarity(V), atol=2e-3)


def test_redundancy_duplicates_one_orthogonal_zero():
    base = torch.randn(5, 16)
    dup = torch.cat([base, 3.0 * base])  # each vector has a (scaled) duplicate
    per, _ = M.max_similarity(dup, chunk=3)
    assert per.shape == (10,)
    assert M.redundancy(per) == pytest.approx(1.0, abs=1e-5)
    assert M.redundancy(M.max_similarity(torch.eye(8)[:6])[0]) == pytest.approx(0.0, abs=1e-6)


def test_redundancy_against_direct_formula_and_max_similarity():
    theta = torch.randn(23, 7)
    t = theta / theta.norm(dim=1, keepdim=True)
    S = t @ t.T
    S.fill_diagonal_(-float("inf"))
    per, idx = M.max_similarity(theta, chunk=4)
    assert torch.allclose(per, S.max(1).values, atol=1e-5)
    assert torch.equal(idx, S.argmax(1))
    assert M.redundancy(per) == pytest.approx(float(S.max(1).values.mean()), abs=1e-5)
    # cross matrix: no self exclusion
    other = torch.randn(4, 7)
    v2, i2 = M.max_similarity(theta, other)
    assert torch.allclose(v2, M.cosine_similarity_matrix(theta, other).max(1).values)
    with pytest.raises(ValueError, match="at least 2"):
        M.redundancy(M.max_similarity(torch.randn(1, 7))[0])
    with pytest.raises(ValueError, match="empty"):
        M.max_similarity(torch.zeros(0, 7), theta)


def test_component_measures_and_layer_summary():
    """The measures table of a layer and its summary: the same numbers as the single measures,
    redundancy (eq. 9) from the per-component maxima."""
    g = torch.Generator().manual_seed(3)
    V = torch.randn(6, 5, 8, generator=g)
    theta = V.mean(1)
    t = M.component_measures(V, theta, seed=0)
    assert set(t) == {"clarity", "polysemanticity", "max_similarity", "nearest"}
    assert torch.equal(t["clarity"], M.clarity(V))
    assert torch.equal(t["polysemanticity"], M.polysemanticity(V, seed=0))
    per, nearest = M.max_similarity(theta)
    assert torch.equal(t["max_similarity"], per) and torch.equal(t["nearest"], nearest)
    s = M.layer_summary(t)
    assert s["n_components"] == 6
    assert s["redundancy"] == pytest.approx(float(per.mean()))
    assert s["clarity"] == pytest.approx(float(M.clarity(V).mean()), abs=1e-6)
    one = M.layer_summary(M.component_measures(V[:1], theta[:1]))
    assert one["n_components"] == 1 and math.isnan(one["redundancy"])
    with pytest.raises(ValueError, match="components"):
        M.component_measures(V, theta[:3])


def test_similarity_matrix_shape_and_values():
    a, b = torch.randn(3, 5), torch.randn(4, 5)
    S = M.cosine_similarity_matrix(a, b)
    assert S.shape == (3, 4)
    assert S[1, 2] == pytest.approx(float(torch.nn.functional.cosine_similarity(a[1], b[2], dim=0)), abs=1e-6)
    with pytest.raises(ValueError, match="dims differ"):
        M.cosine_similarity_matrix(a, torch.randn(2, 6))
    with pytest.raises(ValueError, match=r"\[C, d\]"):
        M.cosine_similarity_matrix(torch.randn(5))


def _clusters(C, m, d, separated, g):
    """Examples around one direction (separated=False) or two orthogonal ones."""
    centres = torch.randn(C, 2, d, generator=g)
    if not separated:
        centres[:, 1] = centres[:, 0]
    pick = torch.arange(m) % 2
    return centres[:, pick] + 0.15 * torch.randn(C, m, d, generator=g)


def test_polysemanticity_two_clusters_higher_than_one():
    g = torch.Generator().manual_seed(3)
    one = M.polysemanticity(_clusters(8, 12, 32, False, g))
    two = M.polysemanticity(_clusters(8, 12, 32, True, g))
    assert (two > one + 0.3).all(), (one, two)
    assert ((one >= 0) & (two <= 2)).all()


def test_polysemanticity_matches_direct_eq10_on_known_clusters():
    """With the clusters known, eq. 10 is 1 - cos(sum of cluster 1, sum of cluster 2)."""
    g = torch.Generator().manual_seed(4)
    V = _clusters(5, 10, 16, True, g)
    pick = torch.arange(10) % 2
    vh = V / V.norm(dim=-1, keepdim=True)
    u1, u2 = vh[:, pick == 0].sum(1), vh[:, pick == 1].sum(1)
    direct = 1 - torch.nn.functional.cosine_similarity(u1, u2, dim=-1)
    assert torch.allclose(M.polysemanticity(V), direct, atol=1e-5)


def test_two_means_batched_and_deterministic():
    g = torch.Generator().manual_seed(5)
    V = _clusters(6, 10, 16, True, g)
    a = M.two_means(V)
    truth = torch.arange(10) % 2
    agree = (a == truth).all(1) | (a == 1 - truth).all(1)
    assert agree.all()
    p1 = M.polysemanticity(V, seed=7, chunk=2)
    p2 = M.polysemanticity(V, seed=7, chunk=6)
    assert torch.equal(p1, p2)  # seeded and independent of chunking


def test_polysemanticity_valid_mask_and_degenerate():
    V = torch.randn(3, 6, 8)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[0, 1:] = False
    valid[1, 3:] = False
    p = M.polysemanticity(V, valid)
    assert math.isnan(float(p[0]))
    assert torch.allclose(p[1:2], M.polysemanticity(V[1:2, :3]), atol=1e-5)
    ident = torch.randn(1, 1, 8).expand(2, 5, 8).contiguous()
    assert torch.allclose(M.polysemanticity(ident), torch.zeros(2), atol=1e-5)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[C, m, d\]"):
        M.clarity(torch.randn(4, 5))
    with pytest.raises(ValueError, match="valid"):
        M.polysemanticity(torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
