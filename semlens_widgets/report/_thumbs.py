"""Thumbnails of the report: every picture is encoded once and referenced from every section.

A section asks :class:`ThumbSheet` for a strip of a component's concept-example crops
(``sheet.strip(layer, k, n)``) or of dataset samples (``sheet.samples(indices)``) and gets back
an HTML element that names a CSS class. Nothing is drawn until :meth:`ThumbSheet.css` runs, once,
after all sections asked: it encodes ONE image per component (its first ``n`` crops side by side,
``n`` the most any section asked for) as a compact WebP ``data:`` URI in one CSS rule; an element
shows the first ``n`` tiles of that image (its width cuts the strip). So a component shown in
the labels, the search strips, the map's side panel and the audit costs its bytes once.

The crops are cut in batches: the dataset images of all the components of a layer are read with
one ``lens.images`` call (a sample shared by several components is read once) and cut to their
CRP boxes (``lens.boxes``) by :func:`semlens_widgets.kernels.crops.crop_resize`, the function
``lens.crops`` uses, so the tiles are the concept examples the foundation model embedded.
"""
from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch

from ..protocols import LensLike
from ._html import e, progress_bar

#: WebP quality of the tiles: crops of 56 px stay sharp at about 0.6 KB per tile
QUALITY = 70
#: white pixels between two tiles of a strip (in the encoded image)
GAP = 2
#: images per lens.images() call when reading samples
BATCH = 256


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


def strip_uri(images: Any, px: int, quality: int = QUALITY) -> str:
    """``images`` [n,3,H,W] side by side, each resized to ``px`` x ``px`` with :data:`GAP` white
    pixels between them, as one ``data:image/webp;base64`` URI (n >= 1)."""
    from PIL import Image

    arr = to_uint8_hwc(images)
    if arr.shape[0] == 0:
        raise ValueError("a strip needs at least one image")
    strip = Image.new("RGB", (arr.shape[0] * (px + GAP) - GAP, px), (255, 255, 255))
    for i, img in enumerate(arr):
        tile = Image.fromarray(img, "RGB")
        if tile.size != (px, px):
            tile = tile.resize((px, px), Image.BILINEAR)
        strip.paste(tile, (i * (px + GAP), 0))
    buf = io.BytesIO()
    strip.save(buf, format="WEBP", quality=int(quality), method=4)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def strip_width(n: int, height: float, px: int) -> float:
    """CSS width of the first ``n`` tiles of a strip shown ``height`` px high."""
    return n * height + (n - 1) * GAP * height / px


class ThumbSheet:
    """The registry of the report's pictures (see the module docstring).

    ``px``: side of an encoded tile; ``height``: default display height in CSS px.
    """

    def __init__(self, lens: LensLike, px: int = 56, height: int = 48, quality: int = QUALITY) -> None:
        self.lens = lens
        self.px = int(px)
        self.height = int(height)
        self.quality = int(quality)
        self._want: dict[tuple[str, int], int] = {}   # (layer, k) -> tiles wanted
        self._ids: dict[tuple, str] = {}               # key -> CSS class
        self._samples: dict[str, tuple[int, ...]] = {}  # class -> dataset indices
        self._css: str | None = None

    # ------------------------------------------------------------------ asking
    def _class(self, key: tuple) -> str:
        if self._css is not None:
            raise RuntimeError("ThumbSheet.css() already ran: no strip can be added after it")
        if key not in self._ids:
            self._ids[key] = f"t{len(self._ids)}"
        return self._ids[key]

    def component_class(self, layer: str, k: int, n: int) -> str:
        """The CSS class of component ``k``'s strip, with at least ``n`` crops in it."""
        key = (str(layer), int(k))
        self._want[key] = max(self._want.get(key, 0), max(1, int(n)))
        return self._class(("c",) + key)

    def strip(self, layer: str, k: int, n: int, height: int | None = None, title: str | None = None) -> str:
        """HTML of the first ``n`` concept-example crops of component ``k`` of ``layer``."""
        n = max(1, min(int(n), int(self.lens.m)))
        cls = self.component_class(layer, k, n)
        alt = title or f"concept examples of {layer} #{int(k)}"
        return self._element(cls, n, height, alt)

    def samples(self, indices: Any, height: int | None = None, title: str = "dataset samples") -> str:
        """HTML of the dataset samples ``indices`` (full images) side by side."""
        idx = tuple(int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices))
        if not idx:
            return ""
        cls = self._class(("s",) + idx)
        self._samples[cls] = idx
        return self._element(cls, len(idx), height, title)

    def _element(self, cls: str, n: int, height: int | None, alt: str) -> str:
        h = int(height or self.height)
        w = strip_width(n, h, self.px)
        return (f'<span class="th {cls}" role="img" aria-label="{e(alt)}" title="{e(alt)}" '
                f'style="width:{w:.1f}px;height:{h}px"></span>')

    # ------------------------------------------------------------------ drawing
    def css(self, progress: bool = False) -> str:
        """Encode every asked-for picture once; returns the CSS rules (one ``data:`` URI each)."""
        if self._css is not None:
            return self._css
        rules: list[str] = []
        by_layer: dict[str, list[tuple[int, int]]] = {}
        for (layer, k), n in self._want.items():
            by_layer.setdefault(layer, []).append((k, n))
        for layer, wants in by_layer.items():
            for k, uri in self._component_strips(layer, wants, progress):
                rules.append(f".{self._ids[('c', layer, k)]}{{background-image:url({uri})}}")
        if self._samples:  # all the sample strips from one read of their images
            needed = sorted({i for idx in self._samples.values() for i in idx})
            row = {s: r for r, s in enumerate(needed)}
            images = self._read(needed)
            for cls, idx in self._samples.items():
                imgs = images[torch.tensor([row[i] for i in idx], dtype=torch.long)]
                rules.append(f".{cls}{{background-image:url({strip_uri(imgs, self.px, self.quality)})}}")
        self._css = "\n".join(rules)
        return self._css

    def _component_strips(self, layer: str, wants: list[tuple[int, int]], progress: bool):
        """(k, data URI) of the first n crops of each (k, n) of one layer."""
        from semlens_widgets.kernels.crops import crop_resize

        boxes = self.lens.boxes(layer)  # [C, m, 4]
        examples = {k: self.lens.examples(layer, k).indices[:n].long() for k, n in wants}
        needed = sorted({int(i) for idx in examples.values() for i in idx.tolist()})
        row = {s: r for r, s in enumerate(needed)}
        images = self._read(needed)
        for k, n in progress_bar(wants, len(wants), f"thumbnails {layer}", progress):
            idx = examples[k]
            rows = torch.tensor([row[int(i)] for i in idx.tolist()], dtype=torch.long)
            crops = crop_resize(images[rows], boxes[k, : len(idx)], self.px)
            yield k, strip_uri(crops.clamp(0, 1), self.px, self.quality)

    def _read(self, indices: list[int]) -> torch.Tensor:
        """The dataset images ``indices`` [n, 3, H, W] float, read in batches of :data:`BATCH`."""
        return torch.cat([self.lens.images(indices[a:a + BATCH]).float() for a in range(0, len(indices), BATCH)])

    @property
    def n_pictures(self) -> int:
        return len(self._ids)
