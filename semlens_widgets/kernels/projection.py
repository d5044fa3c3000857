"""2-D map of the semantic embeddings (the paper's UMAP views of a model's concepts).

Pure numpy/torch + umap-learn (imported lazily: numba compiles on first use), no disk.

Big layers in bounded memory: UMAP's neighbour graph and layout grow with the number of points
(and its time more than linearly), so above ``max_fit`` components (default 10,000) the map is
fitted on a seeded sample of ``max_fit`` components and the others are placed by UMAP's own
``transform`` (their neighbours among the sample, then a short optimisation with the sample
fixed), ``chunk`` components at a time. Peak memory is then that of a ``max_fit`` fit plus one
chunk, whatever the layer's size; layers up to ``max_fit`` are mapped as before, in one fit.

Cold start: umap-learn and pynndescent compile about 250 numba functions on first use (20-35 s
on two cores), and most of them are not marked for numba's on-disk cache. :func:`umap_module`
turns that cache on for them (numba writes it beside their sources, or in the user's cache
directory when those are read-only), so only the first map after installing compiles;
:func:`warm_up` compiles (or loads) them in a background thread while other work runs.
"""
from __future__ import annotations

import sys
import threading
import warnings

import numpy as np
import torch

from .vectors import normalize

__all__ = ["umap_2d", "umap_module", "warm_up", "MAX_FIT", "CHUNK"]

_UMAP_LOCK = threading.Lock()
_UMAP = None


def umap_module():
    """``import umap`` with numba's on-disk cache turned on for the jitted functions of umap-learn
    and pynndescent (see the module docstring); imported once per process."""
    global _UMAP
    with _UMAP_LOCK:
        if _UMAP is None:
            import umap  # noqa: PLC0415  (slow import: numba)
            from numba.core.dispatcher import Dispatcher  # noqa: PLC0415

            for name, mod in list(sys.modules.items()):
                if mod is None or not (name.split(".")[0] in ("umap", "pynndescent")):
                    continue
                for fn in list(vars(mod).values()):
                    if isinstance(fn, Dispatcher) and type(fn._cache).__name__ == "NullCache":
                        try:
                            fn.enable_caching()
                        except Exception:  # noqa: BLE001 - a function numba cannot cache compiles as before
                            pass
            _UMAP = umap
    return _UMAP


def warm_up() -> threading.Thread:
    """Compile (or load from numba's cache) what a first map needs, in a daemon thread: a tiny
    seeded map of random points, fitted and transformed. Returns the started thread; errors are
    ignored (the map then compiles when it is made)."""

    def run() -> None:
        try:
            x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
            umap_2d(x, seed=0, n_epochs=10, max_fit=48, chunk=16)
        except Exception:  # noqa: BLE001 - an optimisation only
            pass

    t = threading.Thread(target=run, name="semlens-umap-warm-up", daemon=True)
    t.start()
    return t


MAX_FIT = 10_000   # components fitted at once; more are placed by transform (module docstring)
CHUNK = 10_000     # components placed per transform call


def umap_2d(
    theta: torch.Tensor,
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    max_fit: int = MAX_FIT,
    chunk: int = CHUNK,
    progress: bool = False,
) -> torch.Tensor:
    """2-D UMAP coordinates of semantic embeddings with the cosine metric, seeded.

    theta: [C, d] semantic embeddings (C >= 2). ``n_neighbors`` is capped at C - 1 for small
    layers. With ``seed`` fixed the layout is reproducible (umap then runs single-threaded).
    For C <= 3 UMAP's spectral layout is undefined; the coordinates are then the first two
    principal components of the normalised embeddings (still a faithful 2-D picture).
    Above ``max_fit`` components: fitted on a seeded sample of ``max_fit``, the rest placed by
    ``transform`` in chunks of ``chunk`` (bounded memory, see the module docstring; a tqdm bar
    with ``progress``). Returns FloatTensor [C, 2].
    """
    for name, v in (("max_fit", max_fit), ("chunk", chunk)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 4:
            raise ValueError(f"{name} must be an int >= 4, got {v!r}")
    if not isinstance(theta, torch.Tensor) or theta.ndim != 2:
        got = tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise ValueError(f"theta must be a tensor [C, d], got {got}")
    C = theta.shape[0]
    if C < 2:
        raise ValueError(f"a map needs at least 2 components, got {C}")
    # in chunks: torch.isfinite builds a float copy (abs) and two bool masks of the whole input
    # (680 MiB at 200k x 512, more than the whole map of a 200k layer otherwise needs)
    if not all(bool(torch.isfinite(theta[s:s + chunk]).all()) for s in range(0, C, chunk)):
        raise ValueError("theta contains NaN or inf: run the lens to completion before mapping")
    if C <= 3:
        x = normalize(theta)
        xc = x - x.mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(xc, full_matrices=False)
        coords = xc @ vh[:2].T
        if coords.shape[1] < 2:
            coords = torch.cat([coords, torch.zeros(C, 2 - coords.shape[1])], 1)
        return coords.float()
    umap = umap_module()
    n_fit = min(C, max_fit)
    reducer = umap.UMAP(
        n_components=2,
        metric="cosine",
        n_neighbors=max(2, min(n_neighbors, n_fit - 1)),
        min_dist=min_dist,
        random_state=seed,
        n_epochs=n_epochs,
        init="spectral" if n_fit > 10 else "random",
    )

    def unit(rows: torch.Tensor) -> np.ndarray:  # normalised per use: no second [C, d] copy
        return normalize(rows).numpy().astype(np.float32, copy=False)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state; small-graph notes
        if C <= max_fit:
            coords = reducer.fit_transform(unit(theta))
            return torch.from_numpy(np.asarray(coords, dtype=np.float32))
        from tqdm.auto import tqdm

        fit = torch.randperm(C, generator=torch.Generator().manual_seed(int(seed)))[:max_fit].sort().values
        rest = torch.ones(C, dtype=torch.bool)
        rest[fit] = False
        rest_idx = torch.nonzero(rest).squeeze(1)
        out = np.empty((C, 2), dtype=np.float32)
        out[fit.numpy()] = reducer.fit_transform(unit(theta[fit]))
        for s in tqdm(range(0, rest_idx.numel(), chunk), desc="map: placing components", unit="chunk",
                      disable=not progress):
            part = rest_idx[s:s + chunk]
            out[part.numpy()] = reducer.transform(unit(theta[part]))
    return torch.from_numpy(out)
