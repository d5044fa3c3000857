"""Argument checks shared by the Lens and its parts: each names the bad value and what is accepted.

No maths and no state: the Lens and its parts (pipeline, semantic index, attribution) call these
before any work starts.
"""
from __future__ import annotations

import math
import numbers
from itertools import chain
from typing import Any

import torch
from torch import nn

__all__ = ["is_int", "positive_int", "nonnegative_int", "real_number", "concept_list", "OVER", "check_over",
           "describe", "check_model", "check_device"]

OVER = ("label", "prediction")


def is_int(v: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def positive_int(name: str, v: Any) -> int:
    """``v`` as an int >= 1, else ValueError naming ``name``."""
    if not is_int(v) or v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return int(v)


def nonnegative_int(name: str, v: Any) -> int:
    """``v`` as an int >= 0, else ValueError naming ``name``."""
    if not is_int(v) or v < 0:
        raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    return int(v)


def real_number(name: str, v: Any) -> float:
    """``v`` as a finite float (a bool, NaN or +-inf is refused), else ValueError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{name} must be a finite number (int or float), got {v!r}")
    return float(v)


def concept_list(concepts: Any, what: str = "concepts") -> list[str]:
    """A non-empty list of distinct, non-blank strings (a single str is one concept)."""
    if isinstance(concepts, str):
        concepts = [concepts]
    if concepts is None or not isinstance(concepts, (list, tuple)) or len(concepts) == 0:
        raise ValueError(f"{what} must be a non-empty list of concept names (str), got {concepts!r}")
    out = []
    for c in concepts:
        if not isinstance(c, str):
            raise TypeError(f"{what} must be strings, got {c!r} ({type(c).__name__})")
        if not c.strip():
            raise ValueError(f"{what} contains an empty or whitespace-only concept {c!r}")
        out.append(c)
    dup = sorted({c for c in out if out.count(c) > 1})
    if dup:
        raise ValueError(f"{what} contains duplicates {dup}")
    return out


def check_over(over: Any, has_labels: bool) -> str:
    """``over=None``: the dataset labels when there are any, else the model's predictions."""
    if over is None:
        return "label" if has_labels else "prediction"
    if over not in OVER:
        raise ValueError(f"over must be one of {list(OVER)} or None, got {over!r}")
    return over


def describe(v: Any, limit: int = 80) -> str:
    """``repr(v)`` (cut to ``limit`` characters) and its type, for messages."""
    r = repr(v)
    if len(r) > limit:
        r = r[: limit - 3] + "..."
    return f"{r} ({type(v).__name__})"


def check_model(model: Any) -> None:
    """A ``torch.nn.Module`` whose tensors hold values (none on the meta device) and whose
    floating-point parameters are float32 (the Lens feeds it float32 images everywhere)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    for name, t in chain(model.named_parameters(), model.named_buffers()):
        if t.is_meta:
            raise ValueError(
                f"model tensor {name!r} is on the meta device: it has a shape but no values (a model built "
                f"under torch.device('meta') or without loading its weights); accepted: a model whose "
                f"tensors hold values, e.g. model.to_empty(device='cpu') then model.load_state_dict(...)"
            )
    for name, p in model.named_parameters():
        if p.is_floating_point() and p.dtype != torch.float32:
            raise ValueError(
                f"model parameter {name!r} is {p.dtype}; the Lens feeds the model float32 images (collection, "
                f"crops and relevance); accepted: a float32 model (model.float())"
            )


def check_device(device: Any) -> torch.device:
    """``device`` as a torch.device that exists here (cuda / mps only when available)."""
    accepted = "'cpu', 'cuda', 'cuda:<i>', 'mps', a torch.device, or None (where the model's parameters are)"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {describe(device)}; accepted: {accepted}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"device {device!r} is not a torch device ({str(e)[:120]}); accepted: {accepted}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            raise ValueError(f"device {device!r}: this machine has {n} CUDA device(s); accepted: {accepted}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here; accepted: {accepted}")
    return dev
