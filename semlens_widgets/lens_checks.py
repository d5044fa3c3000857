"""Argument checks shared by the Lens and its parts: each names the bad value and what is accepted.

No maths and no state: the Lens and its parts (pipeline, semantic index, attribution) call these
before any work starts.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["is_int", "positive_int", "nonnegative_int", "real_number", "concept_list", "OVER", "check_over"]

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
    """``v`` as a finite float (a bool or NaN is refused), else ValueError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(float(v)):
        raise ValueError(f"{name} must be a number, got {v!r}")
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
