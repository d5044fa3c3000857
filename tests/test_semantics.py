"""Search, label, audit and compare kernels (DESIGN eqs. 4-7)."""
import pytest
import torch

from semlens_widgets.kernels import semantics as S


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def test_search_null_subtraction_changes_ranking():
    """Component 0 is close to the null (generic) direction and so has the higher raw cosine to the
    probe; component 1 carries the probe's specific part. Only eq. 4 ranks 1 first."""
    null = torch.tensor([1.0, 0.0, 0.0])
    probe = _unit(torch.tensor([0.8, 0.6, 0.0]))
    theta = torch.stack([_unit(torch.tensor([1.0, 0.1, 0.0])), _unit(torch.tensor([0.3, 0.9, 0.3]))])
    raw = probe @ theta.T
    assert raw.argmax() == 0
    scores = S.search_scores(probe[None], null, theta)
    assert scores.shape == (1, 2)
    assert scores.argmax() == 1
    expected = raw - null @ theta.T
    assert torch.allclose(scores[0], expected, atol=1e-6)


def test_search_square_case_is_queries_by_components():
    """Q == C: row q must be query q. Build scores that are not symmetric and check entries."""
    g = torch.Generator().manual_seed(0)
    Q = C = 5
    theta = torch.randn(C, 8, generator=g)
    probes = torch.randn(Q, 8, generator=g)
    null = torch.randn(8, generator=g)
    sc = S.search_scores(probes, null, theta, chunk=2)
    assert sc.shape == (Q, C)
    direct = torch.stack(
        [torch.stack([torch.cosine_similarity(probes[q], theta[k], 0) - torch.cosine_similarity(null, theta[k], 0)
                      for k in range(C)]) for q in range(Q)]
    )
    assert torch.allclose(sc, direct, atol=1e-5)
    assert not torch.allclose(sc, sc.T, atol=1e-3)
    # pre-normalised path gives the same
    assert torch.allclose(S.search_scores(probes, null, _unit(theta), theta_normalized=True), sc, atol=1e-6)
    v, i = S.top_hits(sc, 3)
    assert i.shape == (Q, 3) and torch.equal(i[:, 0], sc.argmax(1))
    with pytest.raises(ValueError, match="k must be"):
        S.top_hits(sc, 0)


def test_search_dim_mismatch_message():
    with pytest.raises(ValueError, match="same foundation model"):
        S.search_scores(torch.randn(1, 4), torch.randn(4), torch.randn(3, 5))


def test_labels_gaps_and_groups():
    # concepts: 0 "dog" = e1, 1 "cat" = e2, 2 "car" = e3; null = e4
    eye = torch.eye(5)
    concepts, null = eye[:3], eye[3]
    theta = torch.stack([
        eye[0] + 0.1 * eye[4],  # dog
        eye[0] + 0.3 * eye[1],  # dog (cat second)
        eye[1] + 0.2 * eye[4],  # cat
        eye[3] + 0.05 * eye[0],  # mostly null: best concept below baseline -> no label
        eye[4],  # nothing
    ])
    a = S.assign_labels(theta, concepts, null)
    assert a.best[:3].tolist() == [0, 0, 1]
    assert a.labelled.tolist() == [True, True, True, False, False]
    gaps, groups = S.label_gaps_and_groups(a, ["dog", "cat", "car"])
    assert gaps == ["car"]
    assert groups == {"dog": [0, 1], "cat": [2]}
    # a threshold removes the weaker ones
    a2 = S.assign_labels(theta, concepts, null, threshold=0.99)
    assert a2.labelled.tolist() == [True, False, False, False, False]
    with pytest.raises(ValueError, match="empty"):
        S.assign_labels(theta, torch.zeros(0, 5), null)


def test_alignment_and_categories():
    eye = torch.eye(6)
    valid, spur, null = eye[0:2], eye[2:4], eye[5]
    theta = torch.stack([eye[0], eye[2], eye[1] + eye[3], eye[4]])
    av, bv = S.alignment_scores(theta, valid, null)
    asp, bs = S.alignment_scores(theta, spur, null)
    assert bv[2] == 1 and bs[2] == 1
    cats = S.audit_categories(av, asp)
    assert cats == ["valid", "spurious", "both", "unexpected"]
    # a stricter tau turns the weaker "both" (cos 0.707 each) into unexpected
    assert S.audit_categories(av, asp, tau=0.8)[2] == "unexpected"
    with pytest.raises(ValueError, match="differ"):
        S.audit_categories(av, asp[:2])


def test_set_similarity_asymmetric_and_direct():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(7, 6, generator=g)
    b = torch.cat([a[:3], torch.randn(2, 6, generator=g)])  # B holds part of A
    direct_ab = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1).max(1).values.mean()
    assert S.set_similarity(a, b, chunk=3) == pytest.approx(float(direct_ab), abs=1e-5)
    # B is contained in A far better than A in B
    sub = a[:3]
    assert S.set_similarity(sub, a) == pytest.approx(1.0, abs=1e-5)
    assert S.set_similarity(a, sub) < 1.0
    with pytest.raises(ValueError, match="empty"):
        S.set_similarity(torch.zeros(0, 6), a)


def test_concept_overlap_and_top_hits_over_layers():
    shared, ua, ub, ca, cb = S.concept_overlap(["dog", "cat", "car", "sky"], {"dog": [0, 2], "cat": [1]},
                                               {"dog": [4], "sky": [0, 1, 3]})
    assert (shared, ua, ub, ca, cb) == (["dog"], ["cat"], ["sky"], [2, 1, 0, 0], [1, 0, 0, 3])
    a = torch.tensor([[0.1, 0.9, 0.3]])  # layer 0: 3 components
    b = torch.tensor([[0.5, 0.95]])      # layer 1: 2 components
    v, comp, lay = S.top_hits_over_layers([a, b], 3)
    assert v.tolist() == [[pytest.approx(0.95), pytest.approx(0.9), pytest.approx(0.5)]]
    assert comp.tolist() == [[1, 1, 0]] and lay.tolist() == [[1, 0, 1]]
    with pytest.raises(ValueError, match="one \\[Q, C\\] tensor per layer"):
        S.top_hits_over_layers([], 3)


def test_audit_labels_and_summary():
    a_v, b_v = torch.tensor([0.3, -0.1, 0.05]), torch.tensor([1, 0, 0])
    a_s, b_s = torch.tensor([0.1, 0.2, -0.2]), torch.tensor([0, 1, 0])
    best, labelled = S.audit_labels(a_v, b_v, a_s, b_s, n_valid=2, tau=0.1)
    assert best.tolist() == [1, 3, 0]  # valid 1; spurious 1 (shifted by 2); valid 0
    assert labelled.tolist() == [True, True, False]
    cats = S.audit_categories(a_v, a_s, 0.0)
    summ = S.audit_summary(cats, torch.tensor([0.5, 0.25, -1.0]))
    assert summ["category"] == ["valid", "spurious", "both", "unexpected"]
    assert summ["n_components"] == [1, 1, 1, 0]
    assert summ["relevance"] == [0.0, 0.25, 0.5, 0.0] and summ["share"] == [0.0, 1 / 3, 2 / 3, 0.0]
    assert S.audit_summary(cats, torch.zeros(3))["share"] == [0.0] * 4
