"""Semantic operations on the component embeddings (DESIGN eqs. 4-7; paper section 3).

Pure torch, no disk, no UI. Everything is vectorised over components and chunked over them so
that 100k components are fine. Cosine similarity ``s`` is computed on L2-normalised vectors.

Shapes: ``theta [C, d]`` semantic embeddings of one layer, ``probes [Q, d]`` query embeddings,
``concepts [V, d]`` concept (text) embeddings, ``null [d]`` the empty-template embedding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from semlens_widgets.results import AUDIT_CATEGORIES

__all__ = [
    "normalize",
    "search_scores",
    "top_hits",
    "Assignment",
    "assign_labels",
    "label_gaps_and_groups",
    "alignment_scores",
    "audit_categories",
    "set_similarity",
    "nearest_neighbours",
]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last axis in float32 (zero vectors stay zero)."""
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


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
    """Search scores, DESIGN eq. 4 (paper eq. 4): ``s(probe, theta_k) - s(null, theta_k)``.

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


@dataclass
class Assignment:
    """Best concept per component (DESIGN eq. 5).

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
    """Labelling, DESIGN eq. 5: each component gets its best concept
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
    """Audit alignment, DESIGN eq. 7 (paper section 3.4):
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
    """Audit category per component (DESIGN eq. 7).

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


def nearest_neighbours(
    a: torch.Tensor, b: torch.Tensor, *, chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best cosine match in ``b`` for every row of ``a`` (chunked: memory ``chunk x Cb``, by
    default about 256 MB).

    a: [Ca, d]; b: [Cb, d]. Returns (cosine [Ca] float32, index into b [Ca] int64)."""
    _check(a, 2, "a", "[Ca, d]")
    _check(b, 2, "b", "[Cb, d]")
    _check_dims(a, ("b", b))
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError(f"cannot match empty sets of components ({a.shape[0]} vs {b.shape[0]})")
    bn = normalize(b)
    chunk = chunk or max(1, 64 * 2**20 // b.shape[0])
    vals = torch.empty(a.shape[0])
    idx = torch.empty(a.shape[0], dtype=torch.int64)
    for s in range(0, a.shape[0], chunk):
        v, i = (normalize(a[s : s + chunk]) @ bn.T).max(1)
        vals[s : s + chunk], idx[s : s + chunk] = v, i
    return vals, idx


def set_similarity(a: torch.Tensor, b: torch.Tensor, *, chunk: int | None = None) -> float:
    """Model similarity, DESIGN eq. 6 (paper eqs. 5/6):
    ``S(M -> N) = mean_{theta in M} max_{theta' in N} cos(theta, theta')``.

    Asymmetric: how much of M's knowledge is found in N. a: [Ca, d] (M), b: [Cb, d] (N);
    Ca and Cb may differ (other layers, other architectures). Returns a float in [-1, 1].
    """
    vals, _ = nearest_neighbours(a, b, chunk=chunk)
    return float(vals.mean())
