"""Semantic operations on the component embeddings: search (paper eq. 4), labelling, model
comparison (paper eqs. 5/6) and the alignment audit (paper section 3.4).

Pure torch, no disk, no UI. Everything is vectorised over components and chunked over them so
that 100k components are fine. Cosine similarity ``s`` is computed on L2-normalised vectors
(:func:`~.vectors.normalize`).

Shapes: ``theta [C, d]`` semantic embeddings of one layer, ``probes [Q, d]`` query embeddings,
``concepts [V, d]`` concept (text) embeddings, ``null [d]`` the empty-template embedding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from semlens_widgets.results import AUDIT_CATEGORIES

from .measures import max_similarity
from .vectors import normalize

__all__ = [
    "search_scores",
    "top_hits",
    "top_hits_over_layers",
    "Assignment",
    "assign_labels",
    "label_gaps_and_groups",
    "alignment_scores",
    "audit_categories",
    "audit_labels",
    "audit_summary",
    "set_similarity",
    "concept_overlap",
]


def _check(x: torch.Tensor, ndim: int, name: str, shape: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != ndim:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor {shape}, got {got}")


def _check_dims(theta: torch.Tensor, *others: tuple[str, torch.Tensor]) -> None:
    d = theta.shape[-1]
    for name, t in others:
        if t.shape[-1] != d:
            raise ValueError(
                f"{name} has embedding dim {t.shape[-1]} but theta has d={d}: were they made by the"
                " same foundation model?"
            )


def search_scores(
    probes: torch.Tensor,
    null: torch.Tensor,
    theta: torch.Tensor,
    *,
    theta_normalized: bool = False,
    chunk: int = 65536,
) -> torch.Tensor:
    """Search scores (paper eq. 4, search): ``s(probe, theta_k) - s(null, theta_k)``.

    Because both terms are cosines against the same ``theta_hat_k`` the score is one product
    ``theta_hat_k . (probe_hat - null_hat)``: a single [C, d] x [d, Q] matmul.

    probes: [Q, d] text embeddings (mean over templates) or image embeddings.
    null:   [d] the empty-template embedding.
    theta:  [C, d] semantic embeddings (pass ``theta_normalized=True`` if already unit rows, as
            a cache does, to save the normalisation pass).
    Returns FloatTensor [Q, C]: row q is query q, column k is component k, also when Q == C.
    """
    _check(probes, 2, "probes", "[Q, d]")
    _check(null, 1, "null", "[d]")
    _check(theta, 2, "theta", "[C, d]")
    _check_dims(theta, ("probes", probes), ("null", null))
    direction = normalize(probes) - normalize(null).unsqueeze(0)  # [Q, d]
    if theta_normalized and theta.dtype == torch.float32:
        # no temporary copy of theta needed: one pass over it (memory bound, C*d*4 bytes)
        return (theta @ direction.T).T.contiguous()
    out = torch.empty(probes.shape[0], theta.shape[0], dtype=torch.float32)
    for s in range(0, theta.shape[0], chunk):
        t = theta[s : s + chunk].float()
        if not theta_normalized:
            t = normalize(t)
        out[:, s : s + chunk] = direction @ t.T
    return out


def top_hits(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k components per query. scores: [Q, C]. Returns (values [Q, k'], indices [Q, k'])
    with ``k' = min(k, C)``, sorted descending."""
    _check(scores, 2, "scores", "[Q, C]")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return torch.topk(scores, min(k, scores.shape[1]), dim=1)


def top_hits_over_layers(scores: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k components per query over several layers, ranked together.

    scores: one ``[Q, C_l]`` tensor per layer (search scores of the same Q queries).
    Returns ``(values [Q, k'], components [Q, k'], layer positions [Q, k'])`` sorted descending
    (ties keep layer order), ``k' = min(k, sum_l C_l)``; a layer position indexes ``scores``.
    """
    if not scores:
        raise ValueError("scores is empty: pass one [Q, C] tensor per layer")
    vals, comps, lays = [], [], []
    for li, sc in enumerate(scores):
        v, i = top_hits(sc, k)
        vals.append(v)
        comps.append(i)
        lays.append(torch.full_like(i, li))
    v, i, lay = torch.cat(vals, 1), torch.cat(comps, 1), torch.cat(lays, 1)  # [Q, sum k_l]
    order = torch.argsort(v, dim=1, descending=True, stable=True)[:, :k]
    return v.gather(1, order), i.gather(1, order), lay.gather(1, order)


@dataclass
class Assignment:
    """Best concept per component (the paper's labelling, see :func:`assign_labels`).

    best:     LongTensor [C] index of the best concept (always a real concept index).
    score:    FloatTensor [C] ``s(best, theta) - s(null, theta)``.
    baseline: FloatTensor [C] ``s(null, theta)``.
    labelled: BoolTensor [C] whether ``score > max(0, threshold)``; only those carry a label.
    """

    best: torch.Tensor
    score: torch.Tensor
    baseline: torch.Tensor
    labelled: torch.Tensor


def assign_labels(
    theta: torch.Tensor,
    concepts: torch.Tensor,
    null: torch.Tensor,
    *,
    threshold: float = 0.0,
    chunk: int = 65536,
) -> Assignment:
    """Labelling (paper, labelling of components with a concept set): each component gets its
    best concept
    ``argmax_c s(c, theta_k) - s(null, theta_k)`` if that beats the empty baseline and the
    threshold, i.e. if it is ``> max(0, threshold)``; otherwise no label.

    theta: [C, d]; concepts: [V, d] (V >= 1); null: [d]. Returns :class:`Assignment`.
    """
    _check(theta, 2, "theta", "[C, d]")
    _check(concepts, 2, "concepts", "[V, d]")
    _check(null, 1, "null", "[d]")
    if concepts.shape[0] == 0:
        raise ValueError("the concept set is empty: pass at least one concept")
    _check_dims(theta, ("concepts", concepts), ("null", null))
    cn, nn_ = normalize(concepts), normalize(null)
    C = theta.shape[0]
    best = torch.empty(C, dtype=torch.int64)
    score = torch.empty(C)
    base = torch.empty(C)
    for s in range(0, C, chunk):
        t = normalize(theta[s : s + chunk])
        b = t @ nn_  # [b]
        v, i = (t @ cn.T).max(1)
        best[s : s + chunk], score[s : s + chunk], base[s : s + chunk] = i, v - b, b
    return Assignment(best, score, base, score > max(0.0, float(threshold)))


def label_gaps_and_groups(
    assignment: Assignment, names: list[str]
) -> tuple[list[str], dict[str, list[int]]]:
    """From an :class:`Assignment`, the concepts that label no component (gaps, in vocabulary
    order) and ``concept -> component ids`` (groups, only concepts with >= 1 component)."""
    comps = torch.nonzero(assignment.labelled).squeeze(1)
    labels = assignment.best[comps]
    groups: dict[str, list[int]] = {}
    order = torch.argsort(labels, stable=True)
    for c, lab in zip(comps[order].tolist(), labels[order].tolist()):
        groups.setdefault(names[lab], []).append(c)
    gaps = [n for n in names if n not in groups]
    return gaps, groups


def alignment_scores(
    theta: torch.Tensor, concepts: torch.Tensor, null: torch.Tensor, *, chunk: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alignment of the audit (paper section 3.4, auditing):
    ``a_k = max_{v in concepts} s(v, theta_k) - s(null, theta_k)``.

    Used once with the valid and once with the spurious concept set.
    theta: [C, d]; concepts: [V, d] (V >= 1); null: [d].
    Returns (a [C] float32, best [C] int64 index of the maximising concept).
    """
    a = assign_labels(theta, concepts, null, chunk=chunk)
    return a.score, a.best


_CATEGORY_BY_CODE = {0: "unexpected", 1: "valid", 2: "spurious", 3: "both"}
if set(_CATEGORY_BY_CODE.values()) != set(AUDIT_CATEGORIES):  # keep in sync with results.py
    raise ImportError("audit categories out of sync with semlens_widgets.results.AUDIT_CATEGORIES")


def audit_categories(a_valid: torch.Tensor, a_spur: torch.Tensor, tau: float = 0.0) -> list[str]:
    """Audit category per component (paper section 3.4, auditing).

    With ``hv = a_valid > tau`` and ``hs = a_spur > tau``: ``valid`` if only hv, ``spurious`` if
    only hs, ``both`` if hv and hs, ``unexpected`` if neither (the component aligns with no
    expected concept and needs a look). a_valid, a_spur: [C]. Returns list[str] of length C.
    """
    if a_valid.shape != a_spur.shape:
        raise ValueError(f"a_valid {tuple(a_valid.shape)} and a_spur {tuple(a_spur.shape)} differ")
    hv, hs = a_valid > tau, a_spur > tau
    code = hv.long() + 2 * hs.long()  # 0 neither, 1 valid, 2 spurious, 3 both
    names = _CATEGORY_BY_CODE
    return [names[c] for c in code.tolist()]


def audit_labels(
    a_valid: torch.Tensor, best_valid: torch.Tensor, a_spur: torch.Tensor, best_spur: torch.Tensor,
    n_valid: int, tau: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The audit's label of each component: the best of the valid and spurious concepts.

    a_valid/best_valid, a_spur/best_spur: [C] from :func:`alignment_scores`; concepts are indexed
    as ``valid + spurious`` (spurious ones shifted by ``n_valid``).
    Returns ``(concept index [C] int64 into valid + spurious, labelled [C] bool: the better
    alignment is > tau)``.
    """
    use_spur = a_spur > a_valid
    best = torch.where(use_spur, best_spur + int(n_valid), best_valid)
    return best, torch.maximum(a_valid, a_spur) > tau


def audit_summary(categories: list[str], relevance: torch.Tensor) -> dict[str, list]:
    """Per audit category (in :data:`AUDIT_CATEGORIES` order) the number of components, their
    summed positive relevance and its share of the total positive relevance (0 when there is
    none). categories: length C; relevance: [C]. Returns columns ``category, n_components,
    relevance, share`` as lists."""
    if len(categories) != relevance.shape[0]:
        raise ValueError(f"{len(categories)} categories for {relevance.shape[0]} relevances")
    pos = relevance.double().clamp_min(0)
    codes = torch.tensor([AUDIT_CATEGORIES.index(c) for c in categories], dtype=torch.int64)
    n = torch.bincount(codes, minlength=len(AUDIT_CATEGORIES))
    rel = torch.zeros(len(AUDIT_CATEGORIES), dtype=torch.float64).index_add_(0, codes, pos)
    total = float(rel.sum())
    share = (rel / total).tolist() if total > 0 else [0.0] * len(AUDIT_CATEGORIES)
    return {"category": list(AUDIT_CATEGORIES), "n_components": n.tolist(), "relevance": rel.tolist(),
            "share": share}


def set_similarity(a: torch.Tensor, b: torch.Tensor, *, chunk: int | None = None) -> float:
    """Model similarity (paper eqs. 5/6, comparing models):
    ``S(M -> N) = mean_{theta in M} max_{theta' in N} cos(theta, theta')``.

    Asymmetric: how much of M's knowledge is found in N. a: [Ca, d] (M), b: [Cb, d] (N);
    Ca and Cb may differ (other layers, other architectures). Returns a float in [-1, 1].
    """
    vals, _ = max_similarity(a, b, chunk=chunk)
    return float(vals.mean())


def concept_overlap(
    concepts: list[str], groups_a: dict[str, list[int]], groups_b: dict[str, list[int]]
) -> tuple[list[str], list[str], list[str], list[int], list[int]]:
    """Which labelled concepts two layers share (comparing models by their labels,
    NetDissect-style counts).

    groups_a/groups_b: concept -> labelled component ids (from :func:`label_gaps_and_groups`).
    Returns ``(shared, unique_a, unique_b, count_a, count_b)``: concepts carried by both / only
    A / only B, in ``concepts`` order, and per concept the number of components in A and B.
    """
    shared = [c for c in concepts if c in groups_a and c in groups_b]
    unique_a = [c for c in concepts if c in groups_a and c not in groups_b]
    unique_b = [c for c in concepts if c in groups_b and c not in groups_a]
    count_a = [len(groups_a.get(c, [])) for c in concepts]
    count_b = [len(groups_b.get(c, [])) for c in concepts]
    return shared, unique_a, unique_b, count_a, count_b
