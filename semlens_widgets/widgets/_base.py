"""Shared plumbing of the widgets: message dispatch with validation, the error trait, the linked
selection, and thumbnails as binary buffers.

Every front-end -> kernel action is a custom message ``{"type": ..., "req": ..., ...}``. Each
type maps to one handler; arguments are validated here (types, ranges, known layers) and a bad
message sets the ``error`` trait (shown as a banner in the view) and is answered with
``{"type": "error", "req": ..., "message": ...}``. No exception from a handler escapes into the
kernel's comm machinery. Handlers only call Lens methods and reshape their results for display.
"""
from __future__ import annotations

import io
import logging
import math
import numbers
from pathlib import Path
from typing import Any, Callable, ClassVar

import anywidget
import numpy as np
import torch
import traitlets as t

log = logging.getLogger("semlens_widgets.widgets")

STATIC = Path(__file__).resolve().parent.parent / "static"

MAX_STR = 500          # longest accepted free-text field (queries, concept names)
MAX_LIST = 200         # most concepts in an edited list
MAX_THUMBS = 64        # most thumbnails per request
MAX_REPLY_BYTES = 512 * 1024  # binary payload of one reply: front ends (VS Code, Colab) choke on messages near 1 MB
THUMB_SIZES = (16, 256)
FORMATS = ("png", "raw")


class MessageError(ValueError):
    """A front-end message that is malformed: shown in the widget, never raised into the kernel."""


class WidgetValueError(t.TraitError, ValueError):
    """A bad widget argument or trait value (from Python or from the front end's state sync).

    Both a ``traitlets.TraitError`` (what trait validators raise) and a ``ValueError`` (what the
    Lens raises for bad arguments), so either ``except`` catches it. The message names the bad
    value and what is accepted."""


def is_int(v: Any) -> bool:
    """An integer, but not a bool (``True`` is not component 1) and not a float (2.7 is not 2)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_int(name: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``v`` as an int in [lo, hi] (inclusive), else :class:`WidgetValueError`."""
    if not is_int(v):
        raise WidgetValueError(f"{name}={v!r:.80} is not accepted: expected an int"
                               f"{_range_text(lo, hi)}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise WidgetValueError(f"{name}={v} is out of range: expected an int{_range_text(lo, hi)}")
    return v


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}" if hi >= lo else " (there is none to choose)"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def check_choice(name: str, v: Any, choices) -> Any:
    if v not in list(choices):
        raise WidgetValueError(f"{name}={v!r:.80} is not accepted; accepted: {list(choices)}")
    return v


def check_layer(layer: Any, layers: list[str], *, allow_none: bool = False) -> Any:
    """One known layer name (or None where that means "all layers")."""
    if layer is None and allow_none:
        return None
    if not isinstance(layer, str) or layer not in layers:
        raise WidgetValueError(f"unknown layer {layer!r:.80}; accepted: {list(layers)}"
                               f"{' or None (all layers)' if allow_none else ''}")
    return layer


def check_concepts(name: str, v: Any, *, allow_empty: bool = True) -> list[str]:
    """A list of distinct, non-blank concept names; a single str is ONE concept (as in
    ``Lens.audit``), never split into its characters."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, (list, tuple)):
        raise WidgetValueError(f"{name}={v!r:.80} is not accepted: expected a list of concept names (str)")
    if len(v) > MAX_LIST:
        raise WidgetValueError(f"{name} has {len(v)} concepts; at most {MAX_LIST} are accepted")
    out: list[str] = []
    for c in v:
        if not isinstance(c, str) or not c.strip() or len(c) > MAX_STR:
            raise WidgetValueError(f"{name} contains {c!r:.80}: expected non-empty strings of at most "
                                   f"{MAX_STR} characters")
        if c in out:
            raise WidgetValueError(f"{name} contains {c!r:.80} twice; concepts must be distinct")
        out.append(c)
    if not out and not allow_empty:
        raise WidgetValueError(f"{name} is empty: expected at least one concept name")
    return out


def check_query(q: str) -> str:
    """A free-text query trait: at most ``MAX_STR`` characters."""
    if len(q) > MAX_STR:
        raise WidgetValueError(f"query is {len(q)} characters long; at most {MAX_STR} are accepted")
    return q


def check_layers(layers: Any, all_layers: list[str]) -> list[str]:
    """A non-empty list of known layer names; one str is one layer (never split into characters)."""
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not layers:
        raise WidgetValueError(f"layers={layers!r:.80} is not accepted: expected a non-empty list of "
                               f"layer names from {all_layers}")
    bad = [l for l in layers if l not in all_layers]
    if bad:
        raise WidgetValueError(f"unknown layer(s) {bad!r:.80}; known layers: {all_layers}")
    return list(layers)


def check_lens(lens: Any, widget: str) -> None:
    """A clear error before anything else when a widget is given something that is not a Lens."""
    if lens is None or not all(hasattr(lens, a) for a in ("layers", "num_components")):
        raise WidgetValueError(f"{widget} needs a Lens (slw.Lens(model, dataset, fm, layers=...)), "
                               f"got {lens!r:.80}")


def check_target(lens: Any, target: Any, name: str = "target") -> int:
    """A class index, or a class name of ``lens.class_names`` -> its index."""
    names = [str(c) for c in (getattr(lens, "class_names", None) or [])]
    n = len(names) or int(getattr(lens, "num_classes", None) or 0)
    if isinstance(target, str) and names:
        if target not in names:
            raise WidgetValueError(f"{name}={target!r:.80} is not a class name; accepted: a class index "
                                   f"in 0..{n - 1} or one of {names[:20]}")
        return names.index(target)
    return check_int(name, target, 0, n - 1 if n else None)


# ---------------------------------------------------------------------------- validation helpers
def get_str(content: dict, key: str, *, default: Any = ..., choices: tuple | list | None = None,
            max_len: int = MAX_STR, allow_empty: bool = True) -> str:
    if key not in content:
        if default is ...:
            raise MessageError(f"missing field {key!r}")
        return default
    v = content[key]
    if not isinstance(v, str):
        raise MessageError(f"field {key!r} must be a string, got {type(v).__name__}")
    if len(v) > max_len:
        raise MessageError(f"field {key!r} is longer than {max_len} characters")
    if not allow_empty and not v.strip():
        raise MessageError(f"field {key!r} must not be empty")
    if choices is not None and v not in choices:
        raise MessageError(f"{key}={v!r} is not one of {list(choices)}")
    return v


def get_int(content: dict, key: str, *, lo: int | None = None, hi: int | None = None,
            default: Any = ...) -> int:
    """An integer in [lo, hi] (inclusive)."""
    if key not in content or content[key] is None and default is not ...:
        if default is ...:
            raise MessageError(f"missing field {key!r}")
        return default
    v = content[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise MessageError(f"field {key!r} must be an integer, got {v!r:.60}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise MessageError(f"{key}={v} is out of range [{lo}, {hi}]")
    return v


def get_str_list(content: dict, key: str, *, max_items: int = MAX_LIST) -> list[str]:
    v = content.get(key)
    if not isinstance(v, list):
        raise MessageError(f"field {key!r} must be a list of strings")
    if len(v) > max_items:
        raise MessageError(f"field {key!r} has more than {max_items} items")
    out = []
    for s in v:
        if not isinstance(s, str) or not s.strip() or len(s) > MAX_STR:
            raise MessageError(f"field {key!r} must contain non-empty strings of at most {MAX_STR} characters")
        if s.strip() not in out:
            out.append(s.strip())
    return out


# ---------------------------------------------------------------------------- images
def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[n, 3, H, W] float in [0, 1] or uint8 -> uint8 [n, 3, H, W]."""
    if images.dtype == torch.uint8:
        return images
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def resize_max(images: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """Downsample uint8 [n, C, H, W] so that max(H, W) <= size (never upsample: the browser
    scales). Returns the images and the scale factor applied."""
    h, w = images.shape[-2:]
    if max(h, w) <= size or images.shape[0] == 0:
        return images, 1.0
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = torch.nn.functional.interpolate(images.float(), size=(nh, nw), mode="bilinear",
                                          antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8), scale


def encode_images(images: torch.Tensor, fmt: str) -> tuple[dict, list[bytes]]:
    """uint8 [n, C, H, W] (C = 1 or 3) -> (message fields, buffers).

    raw: one buffer of n*H*W*C bytes, shape [n, H, W, C] (channels last, like ImageData).
    png: one PNG per image.
    """
    arr = images.permute(0, 2, 3, 1).contiguous().numpy()  # [n, H, W, C]
    if fmt == "raw":
        return {"format": "raw", "shape": list(arr.shape)}, [arr.tobytes()]
    from PIL import Image

    bufs = []
    for a in arr:
        b = io.BytesIO()
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(b, format="PNG", compress_level=6)
        bufs.append(b.getvalue())
    return {"format": "png", "shape": list(arr.shape)}, bufs


def f32(values) -> bytes:
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32)).tobytes()


def i32(values) -> bytes:
    return np.ascontiguousarray(np.asarray(values, dtype=np.int32)).tobytes()


def finite(x) -> float | None:
    """A float for JSON (NaN/inf become None)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def clean(v):
    """Strings/None for labels coming out of pandas (NaN -> None)."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    return str(v)


# ---------------------------------------------------------------------------- base widget
class LensWidget(anywidget.AnyWidget):
    """Base class: ``error`` and ``selection`` traits, message dispatch, thumbnails.

    Traits
    ------
    error: str            message shown in the view's banner ("" = none)
    selection: dict       the selected component ``{"layer": str, "component": int}`` or ``{}``;
                          linked across the views of an Explorer
    Messages (front end -> kernel)
    --------
    {"type": "select", "layer", "component"}           select a component everywhere
    {"type": "thumbs", "layer", "component", "start", "count", "size", "kind", "format"}
        -> reply {"type": "thumbs", ...} + buffers (see :meth:`_msg_thumbs`)
    """

    _css = STATIC / "semlens.css"
    error = t.Unicode("").tag(sync=True)
    selection = t.Dict().tag(sync=True)

    #: message type -> method name; subclasses extend
    _handlers: ClassVar[dict[str, str]] = {"select": "_msg_select", "thumbs": "_msg_thumbs"}

    def __init__(self, lens=None, **kwargs):
        check_lens(lens, type(self).__name__)
        self.lens = lens
        self.bytes_sent = 0  # custom-message bytes (JSON + buffers), for the benchmarks
        super().__init__(**kwargs)
        self.on_msg(self._on_custom_msg)

    @t.validate("selection")
    def _valid_selection(self, proposal):
        """``{}`` or ``{"layer": one of lens.layers, "component": int in range}``."""
        sel = proposal["value"]
        if not sel:
            return {}
        layers = list(self.lens.layers)
        accepted = (f"accepted: {{}} or {{'layer': one of {layers}, 'component': an int in "
                    f"0..num_components(layer) - 1}}")
        if set(sel) != {"layer", "component"}:
            raise WidgetValueError(f"selection={sel!r:.120} is not accepted; {accepted}")
        layer, comp = sel["layer"], sel["component"]
        if layer not in layers:
            raise WidgetValueError(f"selection={sel!r:.120}: unknown layer {layer!r:.60}; {accepted}")
        n = int(self.lens.num_components(layer))
        if not is_int(comp) or not 0 <= comp < n:
            raise WidgetValueError(f"selection={sel!r:.120}: component {comp!r:.40} is not an int in "
                                   f"0..{n - 1} (layer {layer!r})")
        return {"layer": str(layer), "component": int(comp)}

    # -- lens access: only reading results, never computing them here
    def _lens_for(self, content: dict):
        return self.lens

    def _layers_of(self, lens) -> list[str]:
        return list(lens.layers)

    def _check_layer(self, lens, layer: str) -> str:
        layers = self._layers_of(lens)
        if layer not in layers:
            raise MessageError(f"unknown layer {layer!r}; known layers: {layers}")
        return layer

    def _check_component(self, lens, layer: str, component: int) -> int:
        n = int(lens.num_components(layer))
        if not 0 <= component < n:
            raise MessageError(f"component {component} is out of range for layer {layer!r} (0..{n - 1})")
        return component

    # -- dispatch
    def _on_custom_msg(self, _widget, content, buffers) -> None:
        req = content.get("req") if isinstance(content, dict) else None
        if not (isinstance(req, (str, int)) and not isinstance(req, bool) and len(str(req)) <= 64):
            req = None
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if not isinstance(content, dict):
                raise MessageError(f"expected a JSON object, got {type(content).__name__}")
            method = self._handlers.get(kind) if isinstance(kind, str) else None
            if method is None:
                raise MessageError(f"unknown message type {kind!r:.60}; accepted: {sorted(self._handlers)}")
            result = getattr(self, method)(content, list(buffers or []))
            if req is not None:
                reply, bufs = result if isinstance(result, tuple) else (result or {}, [])
                self._reply({"type": kind, "req": req, **reply}, bufs)
        except Exception as err:  # noqa: BLE001 - nothing may escape into the comm handler
            if isinstance(err, MessageError):
                message = f"rejected {kind!r:.40} message: {err}"
            else:
                log.exception("widget handler failed")
                message = f"{kind!r:.40} failed: {type(err).__name__}: {err}"
            self.error = message
            if req is not None:
                try:
                    self._reply({"type": "error", "req": req, "message": message}, [])
                except Exception:  # noqa: BLE001
                    log.exception("could not send the error reply")

    def _reply(self, content: dict, buffers: list[bytes]) -> None:
        import json

        self.bytes_sent += len(json.dumps(content)) + sum(len(b) for b in buffers)
        self.send(content, buffers=buffers or None)

    def set_state(self, sync_data):
        """Trait updates from the front end: a bad value sets ``error`` instead of raising."""
        try:
            super().set_state(sync_data)
        except Exception as err:  # noqa: BLE001
            self.error = f"rejected state update {sorted(sync_data)}: {err}"

    # -- common handlers
    def _msg_select(self, content: dict, buffers) -> dict:
        lens = self._lens_for(content)
        layer = self._check_layer(lens, get_str(content, "layer"))
        comp = self._check_component(lens, layer, get_int(content, "component"))
        self.select(layer, comp)
        return {}

    def select(self, layer: str, component: int) -> None:
        """Select a component (in every linked view)."""
        new = {"layer": str(layer), "component": int(component)}
        if self.selection != new:
            self.selection = new

    def _msg_thumbs(self, content: dict, buffers) -> tuple[dict, list[bytes]]:
        """Thumbnails of one component as binary buffers.

        kind: "crops"   the concept-example crops (lens.crops)
              "full"    the full example images (lens.images of lens.examples) with the crop
                        boxes in thumbnail pixels (and heatmaps [n, h, w] uint8 when the lens
                        has them), for the gallery's "full image" mode
        format: "png" (one buffer per image) or "raw" (one buffer, [n, h, w, 3] uint8)
        """
        lens = self._lens_for(content)
        layer = self._check_layer(lens, get_str(content, "layer"))
        comp = self._check_component(lens, layer, get_int(content, "component"))
        start = get_int(content, "start", lo=0, hi=100_000, default=0)
        count = get_int(content, "count", lo=0, hi=MAX_THUMBS, default=8)
        size = get_int(content, "size", lo=THUMB_SIZES[0], hi=THUMB_SIZES[1], default=64)
        kind = get_str(content, "kind", default="crops", choices=self._thumb_kinds)
        fmt = get_str(content, "format", default="png", choices=FORMATS)
        return self._thumbs(lens, layer, comp, start, count, size, kind, fmt, content)

    _thumb_kinds: ClassVar[tuple[str, ...]] = ("crops", "full")

    def _thumbs(self, lens, layer, comp, start, count, size, kind, fmt, content):
        """The reply carries as many of the ``count`` images as fit in :data:`MAX_REPLY_BYTES`
        (at least one) and says how many in ``count``; the front end asks for the rest
        (``requestThumbs`` in js/lib/thumbs.js)."""
        imgs, total, extra, bufs_extra = self._thumb_images(lens, layer, comp, start, count, size, kind, content)
        n = int(imgs.shape[0])
        hs = extra.get("heatmap_shape")
        heat = int(hs[1]) * int(hs[2]) if (bufs_extra and hs) else 0  # bytes of one heatmap
        meta, bufs = encode_images(imgs, fmt)
        if fmt == "raw":  # one buffer [n, h, w, C]: cut it at the images that fit
            per_image = len(bufs[0]) // max(1, n) + heat
            fit = max(1, min(n, MAX_REPLY_BYTES // max(1, per_image))) if n else 0
            bufs = [bufs[0][: fit * (len(bufs[0]) // max(1, n))]]
        else:  # one compressed buffer per image: keep those whose bytes fit
            fit, used = 0, 0
            while fit < n and (fit == 0 or used + len(bufs[fit]) + heat <= MAX_REPLY_BYTES):
                used += len(bufs[fit]) + heat
                fit += 1
            bufs = bufs[:fit]
        if fit < n:
            meta["shape"] = [fit, *meta["shape"][1:]]
            extra = {k: (v[:fit] if k in ("indices", "boxes") else v) for k, v in extra.items()}
            if bufs_extra:  # the heatmaps [n, h, w] uint8
                extra["heatmap_shape"] = [fit, *extra["heatmap_shape"][1:]]
                bufs_extra = [bufs_extra[0][: fit * heat]]
            n = fit
        return ({"layer": layer, "component": comp, "start": start, "count": n, "total": total,
                 "kind": kind, **meta, **extra}, bufs + bufs_extra)

    def _thumb_images(self, lens, layer, comp, start, count, size, kind, content):
        """The images ``start:start + count`` of ``kind`` -> (uint8 [n, C, h, w] at most ``size``
        px, the total there is, extra reply fields, extra buffers). Subclasses add kinds."""
        if kind == "crops":
            crops = self._crops(lens, layer, comp, size)  # uint8 [m, 3, S, S]
            imgs, _ = resize_max(to_uint8(crops[start:start + count]), size)
            return imgs, int(crops.shape[0]), {}, []
        ex = lens.examples(layer, comp)
        idx = ex.indices[start:start + count]
        imgs, extra, bufs_extra = self._full_images(lens, layer, comp, idx, start, size)
        return imgs, len(ex), extra, bufs_extra

    @staticmethod
    def _crops(lens, layer: str, comp: int, size: int) -> torch.Tensor:
        """lens.crops at thumbnail size (never above the lens's own crop size)."""
        native = lens.crop_size
        return lens.crops(layer, comp, size=min(size, int(native)) if native else size)

    def _full_images(self, lens, layer, comp, idx, start, size):
        """Full images, crop boxes (scaled to thumbnail pixels) and optional heatmaps."""
        imgs = to_uint8(lens.images(idx))
        imgs, scale = resize_max(imgs, size)
        n = int(imgs.shape[0])
        extra: dict = {"indices": [int(i) for i in idx]}
        bufs: list[bytes] = []
        boxes_fn = getattr(lens, "boxes", None)
        if boxes_fn is not None and n:
            try:
                boxes = boxes_fn(layer)[comp, start:start + n].float() * scale
                extra["boxes"] = [[round(float(v), 1) for v in b] for b in boxes]
            except Exception:  # noqa: BLE001 - boxes are optional decoration
                log.debug("no boxes for %s #%d", layer, comp, exc_info=True)
        heat_fn = getattr(lens, "heatmaps", None)
        if heat_fn is not None and n:
            try:
                hm = heat_fn(layer, comp)[start:start + n].float()  # [n, H, W]
                hm = hm.clamp(min=0)
                hm = hm / hm.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
                hm = (hm * 255).round().to(torch.uint8)[:, None]
                hm, _ = resize_max(hm, size)
                extra["heatmap_shape"] = [n, int(hm.shape[-2]), int(hm.shape[-1])]
                bufs.append(hm.contiguous().numpy().tobytes())
            except Exception:  # noqa: BLE001
                log.debug("no heatmaps for %s #%d", layer, comp, exc_info=True)
        return imgs, extra, bufs

    # -- helpers for subclasses
    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run a recomputation triggered by a trait change; errors go to the banner."""
        try:
            out = fn()
        except MessageError as err:
            self.error = str(err)
            return None
        except Exception as err:  # noqa: BLE001
            log.exception("widget update failed")
            self.error = f"{type(err).__name__}: {err}"
            return None
        return out


def vocabulary(lens, concepts) -> list[str]:
    """The concepts given, else the lens' vocabulary (``lens.set_vocabulary``), else []."""
    if concepts:
        return [str(c) for c in concepts]
    return [str(c) for c in (getattr(lens, "vocabulary", None) or [])]


def is_sae_layer(name: str) -> bool:
    """``"LAYER:sae"``: a layer whose components are a sparse autoencoder's latents."""
    return isinstance(name, str) and name.endswith(":sae")


def flow_layers(lens) -> list[str]:
    """The layers an attribution graph can run through: all but the SAE layers (relevance flows
    between a model's own layers; a latent's relevance is its share of its base layer's)."""
    return [l for l in lens.layers if not is_sae_layer(l)]


def class_options(lens) -> list[list]:
    """[[index, name], ...] for the target pickers (names are shown as text)."""
    names = getattr(lens, "class_names", None)
    n = getattr(lens, "num_classes", None)
    if names:
        return [[i, str(s)] for i, s in enumerate(names)]
    if n:
        return [[i, f"class {i}"] for i in range(int(n))]
    return []
