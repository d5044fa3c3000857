"""Interpretability measures of components (paper, "Human-interpretability measures": clarity
eq. 7, similarity, redundancy eq. 9, polysemanticity eq. 10).

All functions are vectorised over components and work in chunks of components so that
100k components x m = 30 x d = 512 (6 GB in float32) can be processed from float16 storage
with a bounded working set (``chunk`` components are upcast to float32 at a time).

Shapes: ``V`` is the per-example embedding tensor ``[C, m, d]`` (the semantic embedding step
keeps it), ``theta`` the semantic embeddings ``[C, d]``, ``valid`` an optional
``BoolTensor[C, m]`` marking the examples that exist (a component seen on fewer than m samples
has fewer examples).

Ranges (stated honestly):

- clarity (eq. 7) is the mean pairwise cosine of the m examples: in ``[-1/(m-1), 1]``; 1 means
  all examples embed identically. NaN for a component with fewer than 2 valid examples.
- redundancy (eq. 9) of a layer is in ``[-1, 1]``; 1 when every component has a duplicate.
- polysemanticity (eq. 10) with h = 2 is ``1 - cos(u_1, u_2)`` of the two 2-means cluster means,
  in ``[0, 2]``. Note that 2-means *always* splits the examples, so even a perfectly
  monosemantic component with noisy embeddings gets a value above 0; the measure is meant for
  ranking components of one layer against each other, not as an absolute test.
"""
from __future__ import annotations

import math

import torch

from .vectors import normalize

__all__ = [
    "clarity",
    "cosine_similarity_matrix",
    "max_similarity",
    "redundancy",
    "two_means",
    "polysemanticity",
    "component_measures",
    "layer_summary",
    "default_chunk",
]

# Bound on the float32 working set of one chunk, in elements (16 M elements = 64 MB).
_WORKSET_ELEMENTS = 16 * 2**20


# Bound on one chunk of a similarity matrix, in elements (64 M elements = 256 MB).
_SIM_ELEMENTS = 64 * 2**20


def default_chunk(m: int, d: int) -> int:
    """Components per chunk so that one float32 chunk ``[chunk, m, d]`` stays near 64 MB."""
    return max(1, _WORKSET_ELEMENTS // max(1, m * d))


def _check_V(V: torch.Tensor, valid: torch.Tensor | None) -> None:
    if not isinstance(V, torch.Tensor) or V.ndim != 3:
        shape = tuple(V.shape) if isinstance(V, torch.Tensor) else type(V).__name__
        raise ValueError(f"V must be a tensor [C, m, d] of per-example embeddings, got {shape}")
    if valid is not None:
        if valid.shape != V.shape[:2]:
            raise ValueError(
                f"valid must be a BoolTensor [C, m] = {tuple(V.shape[:2])}, got {tuple(valid.shape)}"
            )


def _check_theta(theta: torch.Tensor, name: str = "theta") -> None:
    if not isinstance(theta, torch.Tensor) or theta.ndim != 2:
        shape = tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise ValueError(f"{name} must be a tensor [C, d], got {shape}")


def clarity(
    V: torch.Tensor, valid: torch.Tensor | None = None, *, chunk: int | None = None
) -> torch.Tensor:
    """Clarity of each component, in closed form (paper eq. 7, clarity).

    ``clarity_k = m/(m-1) * (||mean_i v_hat_i||^2 - 1/m)``, which equals the mean pairwise
    off-diagonal cosine similarity of the m example embeddings ``v_hat_i = v_i/||v_i||`` (since
    ``||sum v_hat||^2 = m + sum_{i!=j} cos(v_i, v_j)``), computed in O(m d) instead of O(m^2 d).

    V:     [C, m, d] per-example embeddings (any float dtype; float16 storage is fine).
    valid: BoolTensor [C, m] or None; with a mask, m is the number of valid examples per
           component.
    Returns FloatTensor [C] in [-1/(m-1), 1]; NaN where a component has < 2 valid examples.
    """
    _check_V(V, valid)
    C, m, d = V.shape
    chunk = chunk or default_chunk(m, d)
    out = torch.empty(C, dtype=torch.float32)
    for s in range(0, C, chunk):
        x = V[s : s + chunk].float()  # [b, m, d]
        w = 1.0 / x.norm(dim=-1).clamp_min(1e-12)  # [b, m]: normalisation folded into the sum
        if valid is None:
            n = torch.full((x.shape[0],), float(m))
        else:
            vm = valid[s : s + chunk].float()
            w = w * vm
            n = vm.sum(1)
        sq = torch.einsum("bm,bmd->bd", w, x).pow(2).sum(-1)  # ||sum v_hat||^2 [b]
        c = (sq - n) / (n * (n - 1))
        c[n < 2] = float("nan")
        out[s : s + chunk] = c.cpu()
    return out


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Similarity of components (paper, human-interpretability measures: similarity), the
    cosine of their semantic embeddings.

    a: [Ca, d]; b: [Cb, d] or None (then b = a). Returns FloatTensor [Ca, Cb].
    The full matrix is materialised (Ca * Cb floats); for max-similarity statistics over large
    layers use :func:`max_similarity`, which works in chunks.
    """
    _check_theta(a, "a")
    if b is None:
        b = a
    _check_theta(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding dims differ: a has d={a.shape[1]}, b has d={b.shape[1]}")
    return normalize(a) @ normalize(b).T


def max_similarity(
    a: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    exclude_self: bool | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row of ``a`` the best cosine match in ``b``: the package's one nearest-neighbour
    search (chunked; memory ``chunk x Cb``, by default ``chunk = 2**26 / Cb`` rows, about 256 MB).

    a: [Ca, d]; b: [Cb, d] or None (then b = a and the diagonal is excluded, as ``j != k``).
    Returns ``(values [Ca] float32, indices [Ca] int64)``. When ``b`` has a single row and self
    matches are excluded there is no other component: values are NaN and indices refer to that
    row, so always check ``values`` for NaN.
    """
    _check_theta(a, "a")
    same = b is None
    if exclude_self is None:
        exclude_self = same
    b = a if same else b
    _check_theta(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding dims differ: a has d={a.shape[1]}, b has d={b.shape[1]}")
    if exclude_self and a.shape[0] != b.shape[0]:
        raise ValueError("exclude_self needs a and b to index the same components")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError(f"cannot match empty sets of components ({a.shape[0]} vs {b.shape[0]})")
    bn = normalize(b)
    chunk = chunk or max(1, _SIM_ELEMENTS // max(1, b.shape[0]))
    vals = torch.empty(a.shape[0], dtype=torch.float32)
    idx = torch.empty(a.shape[0], dtype=torch.int64)
    for s in range(0, a.shape[0], chunk):
        sim = normalize(a[s : s + chunk]) @ bn.T  # [b, Cb]
        if exclude_self:
            r = torch.arange(sim.shape[0])
            sim[r, r + s] = -math.inf
        v, i = sim.max(dim=1)
        vals[s : s + chunk] = v
        idx[s : s + chunk] = i
    vals[torch.isinf(vals)] = float("nan")
    return vals, idx


def redundancy(max_sim: torch.Tensor) -> float:
    """Redundancy of a layer (paper eq. 9, redundancy).

    ``redundancy = mean_k max_{j != k} cos(theta_k, theta_j)``: 1 when every component has an
    exact duplicate, 0 for mutually orthogonal embeddings.

    max_sim: FloatTensor [C] (C >= 2), per component the cosine to its most similar other
        component, as :func:`max_similarity` ``(theta)`` returns it (the measures table keeps
        it, so the layer's redundancy needs no second pass over theta).
    Returns a float in [-1, 1].
    """
    if not isinstance(max_sim, torch.Tensor) or max_sim.ndim != 1:
        shape = tuple(max_sim.shape) if isinstance(max_sim, torch.Tensor) else type(max_sim).__name__
        raise ValueError(f"max_sim must be a tensor [C] of per-component maxima, got {shape}")
    if max_sim.numel() < 2:
        raise ValueError(f"redundancy needs at least 2 components, got {max_sim.numel()}")
    return float(max_sim.float().mean())


def two_means(
    V: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    first: torch.Tensor | None = None,
    n_iter: int = 20,
    normalized: bool = False,
) -> torch.Tensor:
    """Batched spherical 2-means of the example embeddings of each component (no loop over
    components).

    Initialisation (deterministic): the first centre of component k is example ``first[k]``
    (default: the valid example least similar to the component's mean direction), the second the
    valid example least similar to the first (farthest point). Then at most ``n_iter`` Lloyd
    steps with cosine assignment; a cluster that becomes empty keeps its previous centre.

    V:     [b, m, d] (normalised here unless ``normalized=True`` says rows are unit already).
    valid: BoolTensor [b, m] or None.
    first: LongTensor [b] or None, index (into m) of each component's first centre.
    Returns LongTensor [b, m] of cluster ids in {0, 1} (invalid examples get an id but are
    ignored by the centres).
    """
    _check_V(V, valid)
    b, m, _ = V.shape
    v = V.float() if normalized else normalize(V)
    w = torch.ones(b, m) if valid is None else valid.float()
    rows = torch.arange(b)
    if first is None:
        mean = (v * w.unsqueeze(-1)).sum(1)  # [b, d]
        first = torch.einsum("bmd,bd->bm", v, mean).masked_fill(w == 0, math.inf).argmin(1)
    elif first.shape != (b,):
        raise ValueError(f"first must be a LongTensor [{b}], got {tuple(first.shape)}")
    c0 = v[rows, first]  # [b, d]
    sim0 = torch.bmm(v, c0.unsqueeze(-1)).squeeze(-1).masked_fill(w == 0, math.inf)  # [b, m]
    c1 = v[rows, sim0.argmin(1)]
    total = torch.bmm(w.unsqueeze(1), v).squeeze(1)  # [b, d] sum of all (valid) examples
    assign = torch.full((b, m), -1, dtype=torch.int64)
    for _ in range(n_iter):
        # with unit centres, argmax_h cos(v, c_h) is the side of the bisecting hyperplane
        new = (torch.bmm(v, (c1 - c0).unsqueeze(-1)).squeeze(-1) > 0).long()  # [b, m]
        if torch.equal(new, assign):
            break
        assign = new
        w1 = w * assign  # [b, m] weights of cluster 1
        s1 = torch.bmm(w1.unsqueeze(1), v).squeeze(1)  # [b, d]
        s0 = total - s1
        n1 = w1.sum(1, keepdim=True)
        n0 = w.sum(1, keepdim=True) - n1
        c0 = torch.where(n0 > 0, normalize(s0), c0)
        c1 = torch.where(n1 > 0, normalize(s1), c1)
    return assign


def polysemanticity(
    V: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    n_iter: int = 20,
    seed: int | None = 0,
    chunk: int | None = None,
) -> torch.Tensor:
    """Polysemanticity of each component with h = 2 clusters (paper eq. 10, polysemanticity).

    ``poly_k = 1 - clarity({u_1, u_2})`` where ``u_i`` is the (normalised) sum of the example
    embeddings in cluster i of a batched, seeded spherical 2-means (:func:`two_means`) of V_k.
    Clarity of h = 2 vectors (eq. 7 with m = 2) is ``cos(u_1, u_2)``, so ``poly_k = 1 - cos(u_1,
    u_2)`` in [0, 2] (see the module docstring on its interpretation).

    V: [C, m, d]; valid: BoolTensor [C, m] or None.
    seed: the first 2-means centre of every component is a valid example drawn with a
    ``torch.Generator`` seeded with ``seed`` (drawn for all C components up front, so results do
    not depend on ``chunk``); ``seed=None`` uses the deterministic farthest-from-mean start.
    Returns FloatTensor [C]; NaN where a component has < 2 valid examples; 0 where all examples
    fall into one cluster (identical embeddings).
    """
    _check_V(V, valid)
    C, m, d = V.shape
    chunk = chunk or default_chunk(m, d)
    out = torch.empty(C, dtype=torch.float32)
    if seed is not None:
        r = torch.rand(C, generator=torch.Generator().manual_seed(int(seed)))  # [C] in [0, 1)
        n_valid = torch.full((C,), m) if valid is None else valid.sum(1)
        # rank of the chosen valid example, then its position among the m slots
        rank = (r * n_valid.clamp_min(1)).long()
    for s in range(0, C, chunk):
        v = normalize(V[s : s + chunk])
        w = torch.ones(v.shape[:2]) if valid is None else valid[s : s + chunk].float()
        vm = None if valid is None else valid[s : s + chunk]
        first = None
        if seed is not None:
            if vm is None:
                first = rank[s : s + chunk]
            else:  # position of the rank-th valid slot
                csum = vm.long().cumsum(1)  # [b, m]
                first = (csum <= rank[s : s + chunk].unsqueeze(1)).sum(1).clamp_max(m - 1)
        assign = two_means(v, vm, first=first, n_iter=n_iter, normalized=True)
        onehot = torch.nn.functional.one_hot(assign, 2).float() * w.unsqueeze(-1)  # [b, m, 2]
        u = normalize(torch.bmm(onehot.transpose(1, 2), v))  # [b, 2, d] cluster sums
        counts = onehot.sum(1)  # [b, 2]
        cos = (u[:, 0] * u[:, 1]).sum(-1)
        p = 1.0 - cos
        p[(counts == 0).any(1)] = 0.0  # one cluster only: a single direction
        p[w.sum(1) < 2] = float("nan")
        out[s : s + chunk] = p
    return out


def component_measures(V: torch.Tensor, theta: torch.Tensor, *, seed: int | None = 0) -> dict[str, torch.Tensor]:
    """All per-component measures of one layer, as the Lens stores them.

    V: [C, m, d] example embeddings; theta: [C, d] semantic embeddings.
    Returns ``clarity [C]`` (eq. 7), ``polysemanticity [C]`` (eq. 10), ``max_similarity [C]``
    (cosine to the most similar other component; NaN when C = 1) and ``nearest [C]`` (its
    index), everything float32 / int64 on the CPU.
    """
    _check_V(V, None)
    _check_theta(theta)
    if V.shape[0] != theta.shape[0]:
        raise ValueError(f"V has {V.shape[0]} components but theta has {theta.shape[0]}")
    maxsim, nearest = max_similarity(theta)
    return {
        "clarity": clarity(V),
        "polysemanticity": polysemanticity(V, seed=seed),
        "max_similarity": maxsim,
        "nearest": nearest,
    }


def layer_summary(measures: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """One layer's summary from :func:`component_measures`: ``n_components``, NaN-aware mean
    ``clarity`` and ``polysemanticity``, and ``redundancy`` (eq. 9; NaN for a single
    component)."""
    ms = measures["max_similarity"]
    return {
        "n_components": int(ms.numel()),
        "clarity": float(torch.nanmean(measures["clarity"].float())),
        "polysemanticity": float(torch.nanmean(measures["polysemanticity"].float())),
        "redundancy": redundancy(ms) if ms.numel() > 1 else float("nan"),
    }
