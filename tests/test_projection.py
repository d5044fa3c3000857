"""The semantic map (kernels.projection.umap_2d): small layers in one fit, big layers fitted on a
sample and placed in chunks (bounded memory), seeded."""
from __future__ import annotations

import pytest
import torch

from semlens_widgets.kernels.projection import umap_2d

torch.set_num_threads(1)


def clusters(n_per: int, k: int = 3, d: int = 32, seed: int = 0):
    """``k`` well-separated clusters of ``n_per`` points each -> (theta [k*n_per, d], labels)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 3
    labels = torch.arange(k).repeat_interleave(n_per)
    theta = centres[labels] + 0.3 * torch.randn(k * n_per, d, generator=g)
    perm = torch.randperm(k * n_per, generator=g)
    return theta[perm], labels[perm]


def test_sampled_fit_and_chunked_placement():
    theta, labels = clusters(100)  # 300 components, fitted on 120, placed 64 at a time
    xy = umap_2d(theta, seed=3, max_fit=120, chunk=64, n_epochs=60)
    assert xy.shape == (300, 2) and xy.dtype == torch.float32 and torch.isfinite(xy).all()
    # deterministic for a seed
    assert torch.equal(xy, umap_2d(theta, seed=3, max_fit=120, chunk=64, n_epochs=60))
    # the sample is the one fit of those components (same seed, same sample)
    fit = torch.randperm(300, generator=torch.Generator().manual_seed(3))[:120].sort().values
    assert torch.equal(xy[fit], umap_2d(theta[fit], seed=3, n_epochs=60))
    # placed components land with their own cluster: nearest fitted cluster centre is their own
    rest = torch.ones(300, dtype=torch.bool)
    rest[fit] = False
    centres = torch.stack([xy[fit][labels[fit] == c].mean(0) for c in range(3)])
    nearest = torch.cdist(xy[rest], centres).argmin(1)
    assert (nearest == labels[rest]).float().mean() >= 0.95


def test_small_layers_are_one_fit_regardless_of_chunk():
    theta, _ = clusters(20)
    a = umap_2d(theta, seed=1, n_epochs=50)
    assert torch.equal(a, umap_2d(theta, seed=1, n_epochs=50, max_fit=60, chunk=4))
    assert a.shape == (60, 2)


def test_tiny_layers_and_errors():
    xy = umap_2d(torch.randn(3, 8))
    assert xy.shape == (3, 2)
    with pytest.raises(ValueError, match="at least 2 components"):
        umap_2d(torch.randn(1, 8))
    with pytest.raises(ValueError, match="max_fit must be an int >= 4"):
        umap_2d(torch.randn(10, 8), max_fit=2)
    with pytest.raises(ValueError, match="chunk must be an int >= 4"):
        umap_2d(torch.randn(10, 8), chunk=1.5)


def test_non_finite_theta_is_refused_in_any_chunk():
    """The finiteness check runs in chunks (no whole-input copies): a NaN or inf in the last
    chunk is found as well as one in the first."""
    for row, bad in ((0, float("nan")), (29, float("inf")), (17, -float("inf"))):
        theta = torch.randn(30, 8)
        theta[row, 3] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            umap_2d(theta, max_fit=10, chunk=4)
