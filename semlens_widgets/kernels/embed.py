"""Semantic embedding of components (paper: the semantic embedding theta_k of a component)."""
from __future__ import annotations

import torch

__all__ = ["semantic_embedding"]


def semantic_embedding(V: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Semantic embedding (paper: the semantic embedding of a component):
    ``theta_k = mean_{x in E_k} F(x)``, the mean of a component's example embeddings.

    Args:
        V: ``[C, m, d]`` float, the foundation-model embeddings of the m concept examples of
            each of the C components (``F(crop)``, usually L2-normalised).
        valid: optional BoolTensor ``[C, m]``: which of the m slots hold a real example (e.g.
            False where a component has fewer examples); None means all are valid. Invalid
            slots are ignored whatever they contain (they may be NaN).

    Returns:
        theta ``[C, d]`` float32 on ``V``'s device: the plain mean over the valid examples (not
        re-normalised; cosine similarities downstream do not depend on the norm).

    Raises:
        ValueError: on shapes that do not match, or when a component has no valid example
            (its theta would be undefined; the message lists the first such components).
    """
    if not isinstance(V, torch.Tensor) or V.dim() != 3:
        shape = tuple(V.shape) if isinstance(V, torch.Tensor) else type(V).__name__
        raise ValueError(f"V must be a Tensor [C, m, d] (examples per component), got {shape}")
    if not V.is_floating_point():
        raise TypeError(f"V must be a floating-point tensor, got dtype {V.dtype}")
    num, m, _ = V.shape
    if m == 0:
        raise ValueError(f"V has no examples per component (shape {tuple(V.shape)}); need m >= 1")
    V = V.float()
    if valid is None:
        return V.mean(dim=1)
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or tuple(valid.shape) != (num, m):
        desc = f"{valid.dtype} {tuple(valid.shape)}" if isinstance(valid, torch.Tensor) else type(valid).__name__
        raise ValueError(f"valid must be a BoolTensor [C, m] = [{num}, {m}] or None, got {desc}")
    valid = valid.to(V.device)
    counts = valid.sum(dim=1)  # [C]
    if bool((counts == 0).any()):
        empty = (counts == 0).nonzero()[:, 0]
        raise ValueError(
            f"{int(empty.numel())} component(s) have no valid example, e.g. {empty[:5].tolist()}; "
            "theta is the mean over at least one example"
        )
    summed = torch.where(valid[:, :, None], V, torch.zeros((), dtype=V.dtype, device=V.device)).sum(dim=1)
    return summed / counts[:, None].to(V.dtype)
