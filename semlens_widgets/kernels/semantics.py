"""Semantic operations on the component embeddings: search (paper eq. 4), labelling, model
comparison (paper eqs. 5/6) and the alignment audit (paper section 3.4).

Pure torch, no disk, no UI. Everything is vectorised over components and chunked over them so
that 100k components are fine. Cosine similarity ``s`` is computed on L2-normalised vectors
(:func:`~.vectors.normalize`).

Shapes: ``theta [C, d]`` semantic embeddings of one layer, ``probes [Q, d]`` query embeddings,
``concepts [V, d]`` concept (text) embeddings, ``null [d]`` the empty-template embedding.

Search over big layers (:class:`SearchIndex`): eq. 4's score is an inner product of the unit
``theta_hat_k`` with one direction per query, so its top-k is a maximum-inner-product search.
A dense product over a million components reads ``C * d * 4`` bytes (2 GB) per query, about
0.2 s on two cores, so layers from :data:`INDEX_MIN_COMPONENTS` components up are searched
through inverted lists: spherical k-means cells over the unit thetas, the query's best cells
scanned exactly (float32, the same product as the dense path), the top-k of the scanned
components returned with their exact scores. How many cells are scanned is calibrated when the
index is built: the smallest number whose recall@k, measured against the dense search on probes
made from the layer's own components, reaches :data:`TARGET_RECALL`; a layer where none does is
searched densely (exact). Smaller layers are always searched densely.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from semlens_widgets.results import AUDIT_CATEGORIES

from .measures import max_similarity
from .vectors import normalize

__all__ = [
    "search_direction",
    "search_scores",
    "top_hits",
    "top_hits_over_layers",
    "merge_hits_over_layers",
    "SearchIndex",
    "build_search_index",
    "calibration_probes",
    "index_top_hits",
    "INDEX_MIN_COMPONENTS",
    "TARGET_RECALL",
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


def search_direction(probes: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """The direction of each query in eq. 4's score (see :func:`search_scores`):
    ``probe_hat - null_hat``. probes: [Q, d]; null: [d]. Returns float32 [Q, d] (not unit)."""
    _check(probes, 2, "probes", "[Q, d]")
    _check(null, 1, "null", "[d]")
    if probes.shape[1] != null.shape[0]:
        raise ValueError(f"probes have embedding dim {probes.shape[1]} but null has {null.shape[0]}")
    return normalize(probes) - normalize(null).unsqueeze(0)


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
    _check(theta, 2, "theta", "[C, d]")
    _check_dims(theta, ("probes", probes), ("null", null))
    direction = search_direction(probes, null)  # [Q, d]
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
    return merge_hits_over_layers([top_hits(sc, k) for sc in scores], k)


def merge_hits_over_layers(hits: list[tuple[torch.Tensor, torch.Tensor]], k: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank the per-layer top hits of the same Q queries together.

    hits: one ``(values [Q, k_l], components [Q, k_l])`` pair per layer, each sorted descending
    (from :func:`top_hits` or :func:`index_top_hits`). Returns ``(values [Q, k'], components
    [Q, k'], layer positions [Q, k'])`` sorted descending (ties keep layer order),
    ``k' = min(k, sum_l k_l)``; a layer position indexes ``hits``.
    """
    if not hits:
        raise ValueError("hits is empty: pass one (values, components) pair per layer")
    vals, comps, lays = [], [], []
    for li, (v, i) in enumerate(hits):
        vals.append(v)
        comps.append(i)
        lays.append(torch.full_like(i, li))
    v, i, lay = torch.cat(vals, 1), torch.cat(comps, 1), torch.cat(lays, 1)  # [Q, sum k_l]
    order = torch.argsort(v, dim=1, descending=True, stable=True)[:, :k]
    return v.gather(1, order), i.gather(1, order), lay.gather(1, order)


# ---------------------------------------------------------------------- search over big layers
INDEX_MIN_COMPONENTS = 32768  # layers with fewer components are always searched densely (exact)
TARGET_RECALL = 0.995         # recall@k an index must reach on its calibration probes
_CHUNK_ROWS = 16384           # rows of theta per matrix product while building


@dataclass
class SearchIndex:
    """Inverted lists over the unit thetas of one layer (see the module docstring).

    centroids: [L, d] float32 unit cell centres (spherical k-means);
    order:     [C] int64 component ids sorted by cell; offsets: [L + 1] int64, cell ``j`` holds
               ``order[offsets[j]:offsets[j + 1]]``;
    n_probe:   cells scanned per query; recall: recall@k measured at build on the calibration
               probes with ``n_probe`` cells (against the dense search); k: that k.
    """

    centroids: torch.Tensor
    order: torch.Tensor
    offsets: torch.Tensor
    n_probe: int
    recall: float
    k: int

    @property
    def num_components(self) -> int:
        return int(self.order.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The index as tensors (for a store entry); :meth:`from_tensors` reads them back."""
        return {"centroids": self.centroids, "order": self.order, "offsets": self.offsets,
                "params": torch.tensor([float(self.n_probe), float(self.recall), float(self.k)], dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, t: Any, num_components: int, dim: int) -> "SearchIndex":
        """The index saved by :meth:`tensors`, checked against the layer it searches (``C``
        components of dimension ``d``): a ValueError names what does not fit (a stale or
        damaged entry), never an index that reads outside theta."""
        try:
            n_probe, recall, k = t["params"].tolist()
            cent, order, offsets = t["centroids"].float(), t["order"].long(), t["offsets"].long()
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise ValueError(f"search index entry is incomplete ({e})") from None
        L = cent.shape[0] if cent.ndim == 2 else -1
        ok = (cent.ndim == 2 and cent.shape[1] == dim and L >= 1 and bool(torch.isfinite(cent).all())
              and order.shape == (num_components,) and offsets.shape == (L + 1,)
              and int(offsets[0]) == 0 and int(offsets[-1]) == num_components and bool((offsets.diff() >= 0).all())
              and 1 <= n_probe <= L and k >= 1)
        if ok and num_components:
            ok = int(order.min()) >= 0 and int(order.max()) < num_components and \
                bool((torch.bincount(order, minlength=num_components) == 1).all())
        if not ok:
            raise ValueError(f"search index entry does not fit a layer of {num_components} components of "
                             f"dimension {dim}")
        return cls(cent, order, offsets, int(n_probe), float(recall), int(k))


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Best cell (largest inner product) of each row of ``x [n, d]`` -> [n] int64."""
    return torch.cat([(x[s:s + _CHUNK_ROWS] @ centroids.T).argmax(1) for s in range(0, x.shape[0], _CHUNK_ROWS)])


def _spherical_kmeans(x: torch.Tensor, n: int, *, iters: int, g: torch.Generator) -> torch.Tensor:
    """``n`` unit centres of the unit rows ``x [S, d]`` (seeded; an empty cell restarts at a random row)."""
    cent = x[torch.randperm(x.shape[0], generator=g)[:n]].clone()
    for _ in range(iters):
        a = _assign(x, cent)
        new = torch.zeros_like(cent).index_add_(0, a, x)
        empty = torch.bincount(a, minlength=n) == 0
        if bool(empty.any()):
            new[empty] = x[torch.randint(0, x.shape[0], (int(empty.sum()),), generator=g)]
        cent = normalize(new)
    return cent


def calibration_probes(theta_unit: torch.Tensor, n: int = 64, *, seed: int = 0) -> torch.Tensor:
    """Image-like probe embeddings ``[n, d]`` for calibrating an index: random components' unit
    thetas plus random unit noise of norm 0.5 or 0.75 (cosine with the component about 0.9 or
    0.8: another image of the concept). Text probes (encoded concept names) complement them."""
    _check(theta_unit, 2, "theta_unit", "[C, d]")
    g = torch.Generator().manual_seed(int(seed))
    C, d = theta_unit.shape
    rows = theta_unit[torch.randint(0, C, (n,), generator=g)].float()
    noise = normalize(torch.randn(n, d, generator=g))
    scale = torch.tensor([0.5, 0.75]).repeat(n // 2 + 1)[:n, None]
    return normalize(rows + scale * noise)


def _cells_rows(index: SearchIndex, cells: torch.Tensor) -> torch.Tensor:
    """Component ids of the cells ``cells [n]`` concatenated -> [R] int64."""
    starts, ends = index.offsets[cells], index.offsets[cells + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return torch.empty(0, dtype=torch.long)
    shift = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths)
    return index.order[torch.arange(total) + shift]


@contextlib.contextmanager
def _one_thread():
    """torch's intra-op threads set to 1 inside (restored after): a query's scan is a few hundred
    small operations on ~1 MB each, which threads cannot speed up, while every parallel region
    waits for its slowest thread (on a busy machine: a scheduler time slice, 10-50x the work)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def index_top_hits(index: SearchIndex, theta_unit: torch.Tensor, directions: torch.Tensor, k: int,
                   n_probe: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k components of each query through the inverted lists of ``index``.

    theta_unit: [C, d] the unit thetas the index was built over (float32); directions: [Q, d]
    from :func:`search_direction`; n_probe: cells scanned (default ``index.n_probe``, times
    ``ceil(k / index.k)`` for a k above the one it was calibrated for). The
    scanned components get their exact eq. 4 scores (the product of :func:`search_scores`), so
    every returned score is exact; a component in an unscanned cell can be missed (the recall
    measured at build says how often). Returns ``(values [Q, k'], components [Q, k'])`` sorted
    descending, ``k' = min(k, C)``.
    """
    _check(directions, 2, "directions", "[Q, d]")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if theta_unit.shape[0] != index.num_components:
        raise ValueError(f"the index covers {index.num_components} components but theta has {theta_unit.shape[0]}")
    L = index.centroids.shape[0]
    if n_probe is None:
        n_probe = index.n_probe * -(-k // max(1, index.k))
    n_probe = min(L, int(n_probe))
    kk = min(k, theta_unit.shape[0])
    directions = directions.float()
    cells = torch.topk(directions @ index.centroids.T, n_probe, dim=1).indices  # [Q, n_probe]
    vals, comps = [], []
    with _one_thread():
        for q in range(directions.shape[0]):
            rows = _cells_rows(index, cells[q])
            if rows.numel() < kk:  # cells too small: widen to every cell (exact)
                rows = torch.arange(theta_unit.shape[0])
            sc = theta_unit.index_select(0, rows) @ directions[q]
            v, i = torch.topk(sc, kk)
            vals.append(v)
            comps.append(rows[i])
    return torch.stack(vals), torch.stack(comps)


def build_search_index(theta_unit: torch.Tensor, probes: torch.Tensor, null: torch.Tensor, *, k: int = 10,
                       seed: int = 0, n_lists: int | None = None, iters: int = 8,
                       target_recall: float = TARGET_RECALL) -> SearchIndex | None:
    """Build and calibrate the inverted lists of one layer (see the module docstring).

    theta_unit: [C, d] unit thetas (float32); probes: [P, d] calibration probes, standing in for
    the queries to come (encoded concept names, :func:`calibration_probes`); null: [d] the
    empty-template embedding; n_lists: cells (default ``sqrt(C)``, 16..4096), trained by
    spherical k-means on a sample of ``64 * n_lists`` rows. ``n_probe`` is the smallest of 4, 8,
    16, ... (up to a quarter of the cells) whose recall@k on the probes, against the dense top-k
    (:func:`search_scores`), is at least ``target_recall``. Returns None when none reaches it
    (search that layer densely). Seeded: the same inputs give the same index.
    """
    _check(theta_unit, 2, "theta_unit", "[C, d]")
    _check(probes, 2, "probes", "[P, d]")
    _check(null, 1, "null", "[d]")
    C = theta_unit.shape[0]
    L = int(n_lists) if n_lists is not None else max(16, min(4096, round(math.sqrt(C))))
    if not 1 <= L <= C:
        raise ValueError(f"n_lists must be in 1..{C} (the number of components), got {L}")
    g = torch.Generator().manual_seed(int(seed))
    theta_unit = theta_unit.float()
    sample = theta_unit[torch.randperm(C, generator=g)[:min(C, 64 * L)]]
    centroids = _spherical_kmeans(sample, L, iters=iters, g=g)
    cell = _assign(theta_unit, centroids)
    order = torch.argsort(cell, stable=True)
    offsets = torch.zeros(L + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.bincount(cell, minlength=L), 0)
    index = SearchIndex(centroids, order, offsets, n_probe=L, recall=1.0, k=int(k))

    # recall@k of n_probe cells, for every n_probe at once: scanned components keep their exact
    # scores, so a dense top-k component is found iff its cell is among the query's n_probe best
    kk = min(int(k), C)
    exact = torch.topk(search_scores(probes, null, theta_unit, theta_normalized=True), kk, dim=1).indices  # [P, k]
    cell_order = torch.argsort(search_direction(probes, null) @ centroids.T, dim=1, descending=True)  # [P, L]
    cell_rank = torch.empty_like(cell_order).scatter_(1, cell_order, torch.arange(L).expand_as(cell_order))
    needed = cell_rank.gather(1, cell[exact])  # [P, k] rank of each dense hit's cell
    n_probe = 4
    while n_probe <= max(4, L // 4):
        hit = float((needed < n_probe).float().mean())
        if hit >= target_recall:
            index.n_probe, index.recall = min(n_probe, L), hit
            return index
        n_probe *= 2
    return None


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
