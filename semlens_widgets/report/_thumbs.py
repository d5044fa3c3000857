"""Thumbnails of the report: concept-example crops as small PNG strips (``data:`` URIs)."""
from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from ..protocols import LensLike
from ._html import BLANK_PNG

def to_uint8_hwc(images: Any) -> np.ndarray:
    """``images``: [n,3,H,W] uint8 (crops) or float in [0,1] (display images) -> [n,H,W,3] uint8."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape [n, 3, H, W], got {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.nan_to_num(arr.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)
    return np.ascontiguousarray(arr.transpose(0, 2, 3, 1))


def png_strip(images: Any, px: int, limit: int) -> str:
    """The first ``limit`` of ``images`` [n,3,H,W] side by side, each ``px`` x ``px``, as a
    ``data:image/png;base64`` URI (the blank pixel when there are none)."""
    from PIL import Image

    arr = to_uint8_hwc(images)[: max(0, int(limit))]
    if arr.shape[0] == 0:
        return BLANK_PNG
    gap = 2
    strip = Image.new("RGB", (arr.shape[0] * (px + gap) - gap, px), (255, 255, 255))
    for i, img in enumerate(arr):
        tile = Image.fromarray(img, "RGB").resize((px, px), Image.BILINEAR)
        strip.paste(tile, (i * (px + gap), 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Thumbs:
    """Caches the PNG strips of concept-example crops, one ``lens.crops(size=px)`` call per
    component."""

    def __init__(self, lens: LensLike, px: int) -> None:
        self.lens = lens
        self.px = int(px)
        self._cache: dict[tuple[str, int, int], str] = {}
        self._crops: dict[tuple[str, int], Any] = {}

    def crops(self, layer: str, component: int, n: int) -> str:
        key = (str(layer), int(component), int(n))
        if key not in self._cache:
            ck = (str(layer), int(component))
            if ck not in self._crops:
                self._crops[ck] = self.lens.crops(layer, int(component), size=self.px)
            self._cache[key] = png_strip(self._crops[ck], self.px, n)
        return self._cache[key]
