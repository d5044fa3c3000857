"""2-D map of the semantic embeddings (the paper's UMAP views of a model's concepts).

Pure numpy/torch + umap-learn (imported lazily: numba compiles on first use), no disk.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .vectors import normalize

__all__ = ["umap_2d"]


def umap_2d(
    theta: torch.Tensor,
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
) -> torch.Tensor:
    """2-D UMAP coordinates of semantic embeddings with the cosine metric, seeded.

    theta: [C, d] semantic embeddings (C >= 2). ``n_neighbors`` is capped at C - 1 for small
    layers. With ``seed`` fixed the layout is reproducible (umap then runs single-threaded).
    For C <= 3 UMAP's spectral layout is undefined; the coordinates are then the first two
    principal components of the normalised embeddings (still a faithful 2-D picture).
    Returns FloatTensor [C, 2].
    """
    if not isinstance(theta, torch.Tensor) or theta.ndim != 2:
        got = tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise ValueError(f"theta must be a tensor [C, d], got {got}")
    C = theta.shape[0]
    if C < 2:
        raise ValueError(f"a map needs at least 2 components, got {C}")
    if not torch.isfinite(theta).all():
        raise ValueError("theta contains NaN or inf: run the lens to completion before mapping")
    x = normalize(theta)
    if C <= 3:
        xc = x - x.mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(xc, full_matrices=False)
        coords = xc @ vh[:2].T
        if coords.shape[1] < 2:
            coords = torch.cat([coords, torch.zeros(C, 2 - coords.shape[1])], 1)
        return coords.float()
    import umap  # noqa: PLC0415  (slow import: numba)

    reducer = umap.UMAP(
        n_components=2,
        metric="cosine",
        n_neighbors=max(2, min(n_neighbors, C - 1)),
        min_dist=min_dist,
        random_state=seed,
        n_epochs=n_epochs,
        init="spectral" if C > 10 else "random",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state; small-graph notes
        coords = reducer.fit_transform(x.numpy().astype(np.float32))
    return torch.from_numpy(np.asarray(coords, dtype=np.float32))
