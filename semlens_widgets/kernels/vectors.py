"""Vector helpers shared by the semantic kernels: the one L2 normalisation of the package.

Pure torch, no disk, no UI. Cosine similarity everywhere in the package is the dot product of
rows normalised by :func:`normalize`.
"""
from __future__ import annotations

import torch

__all__ = ["normalize"]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last axis in float32 (zero vectors stay zero).

    x: ``[..., d]`` any float dtype. Returns float32 ``[..., d]`` with unit rows.
    """
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
