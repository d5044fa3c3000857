"""The demo world: procedurally rendered 64x64 scenes with full annotations and captions.

A scene is 1 to 3 objects (shape, colour, fill texture, size, position, rotation) on a
background, plus optional artefacts known from real datasets (a watermark text overlay, a ruler,
a band-aid patch, a global red tint). Everything is deterministic: a :class:`Scene` is a complete
specification (its ``seed`` drives the background and noise), and the samplers take a numpy
``Generator``.

The renderer doubles as a text-to-image generator: :func:`parse_caption` reads the captions
that :func:`caption` writes, and :func:`render` accepts either a caption or a scene::

    >>> r = render("a red striped star and a small blue circle on sand, with a watermark", seed=0)
    >>> r.image.shape, r.caption
    (torch.Size([3, 64, 64]), 'a red striped star and a small blue circle on sand, with a watermark')

Caption grammar (what :func:`caption` writes and :func:`parse_caption` reads)::

    caption    := objects " " background [", with " artefacts]
    objects    := object | object " and " object | object ", " object " and " object
    object     := ("a" | "an") [size] [colour] [texture] shape
    size       := "small" | "large"            (omitted: medium)
    texture    := "striped" | "dotted" | "checkered"   (omitted: solid)
    background := "on a plain background" | "on grass" | "against the sky" | "on sand" | "on water"
    artefacts  := "a watermark", "a ruler", "a band-aid", "a red tint" joined like objects

The renderer is also the world's text-to-image *generator* for open-vocabulary descriptions:
:func:`generator` ``(concept, n, seed) -> FloatTensor [n, 3, 64, 64]`` draws ``n`` images of a
concept phrase (a caption, or a looser phrase such as ``"red star"``, ``"striped"``,
``"star with a watermark"``, see :func:`concept_spec`), every unsaid attribute drawn from the seed.

The parser also accepts a few synonyms (``big``, ``tiny``, ``stripy``, ``spotted``, ``checked``,
``solid``, ``medium``, ``on the sand``...). When a caption leaves the colour or the background
open, :func:`render` draws it from the seed; texture and size default to solid and medium.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "IMAGE_SIZE",
    "SHAPES",
    "COLOURS",
    "TEXTURES",
    "SIZES",
    "BACKGROUNDS",
    "ARTEFACTS",
    "VOCABULARY",
    "CONCEPTS",
    "SceneObject",
    "Artefact",
    "Scene",
    "Rendered",
    "sample_scene",
    "render_scene",
    "render",
    "caption",
    "parse_caption",
    "scene_concepts",
    "UnrenderableConcept",
    "concept_spec",
    "generator",
    "CATEGORY_ROLES",
]

IMAGE_SIZE = 64

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.08, 0.08),
    "orange": (1.0, 0.55, 0.0),
    "yellow": (0.98, 0.9, 0.1),
    "green": (0.1, 0.62, 0.15),
    "blue": (0.1, 0.25, 0.95),
    "purple": (0.55, 0.12, 0.75),
    "pink": (1.0, 0.5, 0.78),
    "black": (0.06, 0.06, 0.06),
}
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
SIZES: dict[str, tuple[float, float]] = {"small": (5.5, 8.0), "medium": (9.5, 12.0), "large": (12.0, 14.5)}
BACKGROUNDS: tuple[str, ...] = ("plain", "grass", "sky", "sand", "water")
ARTEFACTS: tuple[str, ...] = ("watermark", "ruler", "band-aid", "red tint")

#: concept -> category, the world's vocabulary (what the ground truth annotates).
VOCABULARY: dict[str, str] = {
    **{s: "shape" for s in SHAPES},
    **{c: "colour" for c in COLOURS},
    **{t: "texture" for t in TEXTURES},
    **{b: "background" for b in BACKGROUNDS},
    **{a: "artefact" for a in ARTEFACTS},
}
#: the concepts in a fixed order (columns of concept matrices).
CONCEPTS: tuple[str, ...] = tuple(VOCABULARY)
#: how each category goes into a concept phrase (the roles of the offline description proposer,
#: ``semlens_widgets.kernels.describe.OfflineProposer``): "red striped star on sand with a watermark".
CATEGORY_ROLES: dict[str, str] = {
    "shape": "head",
    "colour": "modifier",
    "texture": "modifier",
    "background": "scene",
    "artefact": "attachment",
}

_BG_PHRASE = {
    "plain": "on a plain background",
    "grass": "on grass",
    "sky": "against the sky",
    "sand": "on sand",
    "water": "on water",
}
_WATERMARK_TEXTS = ("\u00a9 stock", "SAMPLE", "\u00a9photo", "PREVIEW")


@dataclass(frozen=True)
class SceneObject:
    """One object: ``x, y`` centre in pixels, ``radius`` in pixels, ``angle`` in radians."""

    shape: str
    colour: str
    texture: str
    size: str
    x: float
    y: float
    radius: float
    angle: float = 0.0

    def __post_init__(self) -> None:
        _check("shape", self.shape, SHAPES)
        _check("colour", self.colour, COLOURS)
        _check("texture", self.texture, TEXTURES)
        _check("size", self.size, SIZES)
        if not self.radius > 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")

    @property
    def concepts(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.texture)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Bounding box ``(x0, y0, x1, y1)`` (x1/y1 exclusive), clipped to the image."""
        r = self.radius + 1.5  # the outline
        return _clip_box(self.x - r, self.y - r, self.x + r + 1, self.y + r + 1)


@dataclass(frozen=True)
class Artefact:
    """An artefact: ``kind`` in ARTEFACTS, ``box`` ``(x0, y0, x1, y1)`` exclusive, and a
    ``variant`` (which watermark text, ruler orientation, band-aid orientation)."""

    kind: str
    box: tuple[int, int, int, int]
    variant: int = 0

    def __post_init__(self) -> None:
        _check("artefact", self.kind, ARTEFACTS)


@dataclass(frozen=True)
class Scene:
    """A complete scene specification. ``objects[0]`` is the main object (the classifier's
    label is its shape). ``seed`` drives the background texture and pixel noise."""

    background: str
    objects: tuple[SceneObject, ...]
    artefacts: tuple[Artefact, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        _check("background", self.background, BACKGROUNDS)
        if not 1 <= len(self.objects) <= 3:
            raise ValueError(f"a scene has 1 to 3 objects, got {len(self.objects)}")
        kinds = [a.kind for a in self.artefacts]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"each artefact kind at most once, got {kinds}")

    @property
    def artefact_kinds(self) -> tuple[str, ...]:
        return tuple(a.kind for a in self.artefacts)

    def has(self, concept: str) -> bool:
        """Whether ``concept`` (a VOCABULARY name) is present in the scene."""
        return concept in scene_concepts(self)

    def with_artefact(self, kind: str, rng: np.random.Generator) -> "Scene":
        """This scene plus an artefact of ``kind`` (unchanged if it has one already)."""
        if kind in self.artefact_kinds:
            return self
        arts = [*self.artefacts, _sample_artefact(kind, rng, self.objects)]
        arts.sort(key=lambda a: ARTEFACTS.index(a.kind))
        return replace(self, artefacts=tuple(arts))


@dataclass
class Rendered:
    """A rendered scene.

    image:  FloatTensor [3, 64, 64] in [0, 1].
    scene:  the complete :class:`Scene` that was drawn.
    caption: its canonical caption.
    concepts: the VOCABULARY concepts present.
    object_masks: BoolTensor [n_objects, 64, 64] (visible pixels of each object, in scene order).
    artefact_masks: dict kind -> BoolTensor [64, 64] (pixels the artefact changed).
    boxes: dict name -> (x0, y0, x1, y1) exclusive; names ``object0..`` and artefact kinds.
    """

    image: torch.Tensor
    scene: Scene
    caption: str
    concepts: frozenset[str]
    object_masks: torch.Tensor
    artefact_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


def _check(what: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")


def _clip_box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    s = IMAGE_SIZE
    b = (int(max(0, np.floor(x0))), int(max(0, np.floor(y0))), int(min(s, np.ceil(x1))), int(min(s, np.ceil(y1))))
    return b


def scene_concepts(scene: Scene) -> frozenset[str]:
    """The VOCABULARY concepts present in ``scene`` (shapes, colours, textures of all objects,
    the background, the artefacts)."""
    out = {scene.background, *scene.artefact_kinds}
    for o in scene.objects:
        out.update(o.concepts)
    return frozenset(out)


# --------------------------------------------------------------------------- sampling


def _radius(size: str, rng: np.random.Generator) -> float:
    lo, hi = SIZES[size]
    return float(rng.uniform(lo, hi))


def _place(radius: float, placed: Sequence[SceneObject], rng: np.random.Generator) -> tuple[float, float]:
    """A centre inside the image that overlaps earlier objects as little as possible."""
    lo, hi = radius + 1.0, IMAGE_SIZE - radius - 2.0
    best, best_gap = None, -np.inf
    for _ in range(12):
        x, y = rng.uniform(lo, hi, size=2)
        gap = min((np.hypot(x - o.x, y - o.y) - (o.radius + radius) for o in placed), default=np.inf)
        if gap > 1.0:
            return float(x), float(y)
        if gap > best_gap:
            best, best_gap = (float(x), float(y)), gap
    return best


def _sample_artefact(kind: str, rng: np.random.Generator, objects: Sequence[SceneObject] = ()) -> Artefact:
    s = IMAGE_SIZE
    if kind == "red tint":
        return Artefact(kind, (0, 0, s, s), 0)
    if kind == "watermark":
        variant = int(rng.integers(len(_WATERMARK_TEXTS)))
        h, w = _watermark_stamp(variant).shape
        x0 = int(rng.integers(0, s - w + 1))
        y0 = int(rng.integers(2, s - h - 1))
        return Artefact(kind, (x0, y0, x0 + w, y0 + h), variant)
    if kind == "ruler":
        variant = int(rng.integers(4))  # 0 bottom, 1 top, 2 left, 3 right
        length = int(rng.integers(28, 46))
        start = int(rng.integers(1, s - length))
        if variant == 0:
            box = (start, s - 8, start + length, s - 1)
        elif variant == 1:
            box = (start, 1, start + length, 8)
        elif variant == 2:
            box = (1, start, 8, start + length)
        else:
            box = (s - 8, start, s - 1, start + length)
        return Artefact(kind, box, variant)
    if kind == "band-aid":
        variant = int(rng.integers(2))  # 0 horizontal, 1 vertical
        w, h = (20, 9) if variant == 0 else (9, 20)
        main = objects[0] if objects else None
        for _ in range(10):  # keep most of the main object visible
            x0 = int(rng.integers(0, s - w + 1))
            y0 = int(rng.integers(0, s - h + 1))
            if main is None or np.hypot(x0 + w / 2 - main.x, y0 + h / 2 - main.y) > main.radius + 3:
                break
        return Artefact(kind, (x0, y0, x0 + w, y0 + h), variant)
    raise ValueError(f"unknown artefact {kind!r}; expected one of {list(ARTEFACTS)}")


def sample_scene(
    rng: np.random.Generator,
    *,
    main_shape: str | None = None,
    background: str | None = None,
    background_probs: dict[str, float] | None = None,
    artefact_probs: dict[str, float] | None = None,
    n_objects: int | None = None,
    seed: int | None = None,
) -> Scene:
    """Draw a random scene.

    main_shape: shape of ``objects[0]`` (the main, largest object); random when None.
    background / background_probs: fixed background, or a distribution over BACKGROUNDS
        (uniform when both are None).
    artefact_probs: kind -> independent probability (default: 0.1 each).
    n_objects: 1 to 3 (default: drawn with probabilities 0.4, 0.35, 0.25).
    Distractor objects are small, the main object medium or large (at least 1.5 px more radius).
    """
    if main_shape is None:
        main_shape = SHAPES[int(rng.integers(len(SHAPES)))]
    _check("shape", main_shape, SHAPES)
    if background is None:
        if background_probs is None:
            background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        else:
            keys = list(background_probs)
            p = np.array([background_probs[k] for k in keys], dtype=float)
            background = keys[int(rng.choice(len(keys), p=p / p.sum()))]
    if n_objects is None:
        n_objects = int(rng.choice(3, p=[0.4, 0.35, 0.25])) + 1
    if artefact_probs is None:
        artefact_probs = {k: 0.1 for k in ARTEFACTS}
    for k in artefact_probs:
        _check("artefact", k, ARTEFACTS)

    main_size = ("medium", "large")[int(rng.integers(2))]
    sizes = [main_size] + ["small"] * (n_objects - 1)
    objects: list[SceneObject] = []
    for i, size in enumerate(sizes):
        shape = main_shape if i == 0 else SHAPES[int(rng.integers(len(SHAPES)))]
        r = _radius(size, rng)
        x, y = _place(r, objects, rng)
        objects.append(
            SceneObject(
                shape=shape,
                colour=list(COLOURS)[int(rng.integers(len(COLOURS)))],
                texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
                size=size,
                x=x,
                y=y,
                radius=r,
                angle=float(rng.uniform(0, 2 * np.pi)),
            )
        )
    artefacts = tuple(
        _sample_artefact(kind, rng, objects)
        for kind in ARTEFACTS
        if rng.random() < artefact_probs.get(kind, 0.0)
    )
    if seed is None:
        seed = int(rng.integers(2**31 - 1))
    return Scene(background=background, objects=tuple(objects), artefacts=artefacts, seed=seed)


# --------------------------------------------------------------------------- rendering

_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5


def _regular_polygon(dx, dy, apothem, k, angle):
    inside = np.ones_like(dx, dtype=bool)
    for i in range(k):
        a = angle + 2 * np.pi * i / k
        inside &= dx * np.cos(a) + dy * np.sin(a) <= apothem
    return inside


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Boolean mask of ``shape`` with circumradius about ``r`` centred at dx = dy = 0."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    d = np.hypot(dx, dy)
    if shape == "circle":
        return d <= r
    if shape == "ring":
        return (d <= r) & (d >= 0.55 * r)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.74 * r
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape == "triangle":
        return _regular_polygon(dx, dy, 0.5 * r * 1.12, 3, angle)
    if shape == "hexagon":
        return _regular_polygon(dx, dy, 0.87 * r, 6, angle)
    if shape == "cross":
        w = 0.3 * r
        return ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    if shape == "star":
        theta = np.arctan2(v, u)
        t = (theta * 5 / (2 * np.pi)) % 1.0
        tri = np.abs(2 * t - 1)  # 1 at the tips, 0 between them
        rho = r * (0.42 + 0.58 * tri**1.5)
        return d <= rho
    raise ValueError(f"unknown shape {shape!r}; expected one of {list(SHAPES)}")


def _texture_mask(texture: str, dx: np.ndarray, dy: np.ndarray, angle: float) -> np.ndarray:
    """True where the secondary (darker) colour of the fill pattern goes."""
    if texture == "solid":
        return np.zeros_like(dx, dtype=bool)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if texture == "striped":
        return (u / 5.0) % 1.0 < 0.5
    if texture == "dotted":
        gu, gv = (u % 5.0) - 2.5, (v % 5.0) - 2.5
        return gu * gu + gv * gv <= 1.6**2
    if texture == "checkered":
        return ((np.floor(u / 4.0) + np.floor(v / 4.0)) % 2) == 0
    raise ValueError(f"unknown texture {texture!r}; expected one of {list(TEXTURES)}")


def _background(kind: str, rng: np.random.Generator) -> np.ndarray:
    s = IMAGE_SIZE
    yy, xx = _YY / s, _XX / s
    if kind == "plain":
        g = rng.uniform(0.35, 0.6)
        tint = rng.uniform(-0.04, 0.04, size=3)
        img = np.broadcast_to(g + tint, (s, s, 3)).copy()
    elif kind == "grass":
        base = np.array([0.18, 0.5, 0.12]) * rng.uniform(0.85, 1.1)
        streaks = rng.normal(0, 1, size=(s // 2 + 1, s))
        streaks = np.repeat(streaks, 2, axis=0)[:s]  # vertical blades
        img = base + 0.07 * streaks[..., None] * np.array([0.6, 1.0, 0.4])
    elif kind == "sky":
        top, bottom = np.array([0.35, 0.6, 0.95]), np.array([0.7, 0.85, 1.0])
        img = top + (bottom - top) * yy[..., None]
        for _ in range(int(rng.integers(1, 3))):  # clouds
            cx, cy, r = rng.uniform(0, s), rng.uniform(0, s * 0.7), rng.uniform(5, 10)
            blob = np.exp(-(((_XX - cx) / (1.8 * r)) ** 2 + ((_YY - cy) / r) ** 2))
            img = img + (np.array([0.97, 0.97, 1.0]) - img) * (0.8 * blob)[..., None]
    elif kind == "sand":
        base = np.array([0.87, 0.76, 0.52]) * rng.uniform(0.95, 1.05)
        dunes = 0.05 * np.sin(2 * np.pi * (yy * 3 + 0.4 * np.sin(2 * np.pi * xx)) + rng.uniform(0, 6.3))
        grain = rng.normal(0, 0.05, size=(s, s))
        img = base + (dunes + grain)[..., None] * np.array([1.0, 0.9, 0.7])
    elif kind == "water":
        base = np.array([0.08, 0.35, 0.6])
        phase = rng.uniform(0, 6.3)
        waves = np.sin(2 * np.pi * (yy * 6 + 0.15 * np.sin(2 * np.pi * xx * 2 + phase)) + phase)
        img = base + 0.1 * waves[..., None] * np.array([0.6, 0.9, 1.0])
        img = img + (waves > 0.92)[..., None] * 0.25  # foam crests
    else:
        raise ValueError(f"unknown background {kind!r}; expected one of {list(BACKGROUNDS)}")
    return img.astype(np.float32)


@lru_cache(maxsize=None)
def _watermark_stamp(variant: int) -> np.ndarray:
    """Alpha mask [h, w] float32 of watermark text ``variant`` (Pillow's bundled font)."""
    from PIL import Image, ImageDraw, ImageFont

    text = _WATERMARK_TEXTS[variant]
    font = ImageFont.load_default(size=11)
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    im = Image.new("L", (x1 - x0 + 2, y1 - y0 + 2), 0)
    ImageDraw.Draw(im).text((1 - x0, 1 - y0), text, fill=255, font=font)
    return np.asarray(im, dtype=np.float32) / 255.0


def _draw_artefact(img: np.ndarray, art: Artefact) -> np.ndarray:
    """Draw ``art`` into ``img`` [H, W, 3] in place; returns the changed-pixel mask [H, W]."""
    s = IMAGE_SIZE
    x0, y0, x1, y1 = art.box
    mask = np.zeros((s, s), dtype=bool)
    if art.kind == "red tint":
        img *= np.array([1.0, 0.6, 0.6], dtype=np.float32)
        img += np.array([0.3, 0.0, 0.0], dtype=np.float32)
        mask[:] = True
    elif art.kind == "watermark":
        alpha = _watermark_stamp(art.variant)[: y1 - y0, : x1 - x0] * 0.8
        region = img[y0:y1, x0:x1]
        # dark shadow one pixel down-right, then white text: readable on any background
        shadow = np.zeros_like(alpha)
        shadow[1:, 1:] = alpha[:-1, :-1]
        region *= (1 - 0.5 * shadow)[..., None]
        region += (1.0 - region) * alpha[..., None]
        mask[y0:y1, x0:x1] = (alpha > 0.1) | (shadow > 0.1)
    elif art.kind == "ruler":
        img[y0:y1, x0:x1] = np.array([0.95, 0.92, 0.62], dtype=np.float32)
        horizontal = art.variant in (0, 1)
        length = (x1 - x0) if horizontal else (y1 - y0)
        for t in range(1, length - 1, 3):
            tick = 4 if (t // 3) % 5 == 0 else 2
            if horizontal:
                ys = slice(y0, y0 + tick) if art.variant == 1 else slice(y1 - tick, y1)
                img[ys, x0 + t] = 0.05
            else:
                xs = slice(x0, x0 + tick) if art.variant == 2 else slice(x1 - tick, x1)
                img[y0 + t, xs] = 0.05
        mask[y0:y1, x0:x1] = True
    elif art.kind == "band-aid":
        h, w = y1 - y0, x1 - x0
        yy, xx = np.mgrid[0:h, 0:w]
        rr = min(h, w) / 2
        # rounded ends: distance to the central segment
        if w >= h:
            cx = np.clip(xx + 0.5, rr, w - rr)
            inside = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - h / 2) ** 2 <= rr**2
        else:
            cy = np.clip(yy + 0.5, rr, h - rr)
            inside = (xx + 0.5 - w / 2) ** 2 + (yy + 0.5 - cy) ** 2 <= rr**2
        patch = np.where(inside[..., None], np.array([0.85, 0.62, 0.45], dtype=np.float32), img[y0:y1, x0:x1])
        pad = inside & (np.abs(xx + 0.5 - w / 2) <= min(h, w) * 0.38) & (np.abs(yy + 0.5 - h / 2) <= min(h, w) * 0.38)
        patch[pad] = np.array([0.97, 0.88, 0.8], dtype=np.float32)
        holes = inside & ~pad & ((xx % 3 == 1) & (yy % 3 == 1))
        patch[holes] = np.array([0.7, 0.48, 0.33], dtype=np.float32)
        img[y0:y1, x0:x1] = patch
        mask[y0:y1, x0:x1] = inside
    else:  # pragma: no cover - guarded by Artefact.__post_init__
        raise ValueError(art.kind)
    return mask


def _render_array(scene: Scene) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render to (image [H, W, 3] float32 in [0, 1], object masks [n, H, W], artefact masks)."""
    rng = np.random.default_rng(scene.seed)
    img = _background(scene.background, rng)
    visible = np.zeros((len(scene.objects), IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    # draw the distractors first, the main object last (on top)
    for i in reversed(range(len(scene.objects))):
        o = scene.objects[i]
        bx0, by0, bx1, by1 = o.box  # work inside the object's window only
        win = (slice(by0, by1), slice(bx0, bx1))
        dx, dy = _XX[win] - o.x, _YY[win] - o.y
        fill = _shape_mask(o.shape, dx, dy, o.radius, o.angle)
        outline = _shape_mask(o.shape, dx, dy, o.radius + 1.4, o.angle) & ~fill
        if o.shape == "ring":  # outline the hole too
            outline |= (np.hypot(dx, dy) < 0.55 * o.radius) & (np.hypot(dx, dy) >= 0.55 * o.radius - 1.2)
        col = np.array(COLOURS[o.colour], dtype=np.float32)
        second = np.array([0.45, 0.45, 0.45], dtype=np.float32) if o.colour == "black" else col * 0.42
        edge = np.array([0.9, 0.9, 0.9], dtype=np.float32) if o.colour == "black" else np.full(3, 0.04, np.float32)
        tex = _texture_mask(o.texture, dx, dy, o.angle)
        sub = img[win]  # a view: writes go to img
        sub[outline] = edge
        sub[fill] = col
        sub[fill & tex] = second
        drawn = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        drawn[win] = fill | outline
        visible[i] = drawn
        visible[i + 1 :] &= ~drawn  # later (smaller) objects hidden under this one
    art_masks = {}
    for art in scene.artefacts:
        if art.kind != "red tint":
            m = _draw_artefact(img, art)
            art_masks[art.kind] = m
            visible &= ~m[None]
    img += np.float32(0.015) * rng.standard_normal(size=img.shape, dtype=np.float32)
    for art in scene.artefacts:
        if art.kind == "red tint":  # global: applied last
            art_masks[art.kind] = _draw_artefact(img, art)
    np.clip(img, 0.0, 1.0, out=img)
    return img, visible, art_masks


def render_scene(scene: Scene) -> Rendered:
    """Render a complete :class:`Scene` (deterministic: same scene, same pixels)."""
    img, visible, art_masks = _render_array(scene)
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for i, o in enumerate(scene.objects):
        boxes[f"object{i}"] = o.box
    for a in scene.artefacts:
        boxes[a.kind] = a.box
    return Rendered(
        image=torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
        scene=scene,
        caption=caption(scene),
        concepts=scene_concepts(scene),
        object_masks=torch.from_numpy(visible),
        artefact_masks={k: torch.from_numpy(v) for k, v in art_masks.items()},
        boxes=boxes,
    )


def render_uint8(scenes: Sequence[Scene]) -> torch.Tensor:
    """Render many scenes to a ByteTensor [n, 3, 64, 64] (the compact form datasets keep)."""
    out = np.empty((len(scenes), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, sc in enumerate(scenes):
        img, _, _ = _render_array(sc)
        out[i] = np.round(img.transpose(2, 0, 1) * 255.0).astype(np.uint8)
    return torch.from_numpy(out)


# --------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def describe_object(o: SceneObject, *, size=True, colour=True, texture=True, shape=True) -> str:
    """Noun phrase of one object, e.g. ``"a small red striped star"`` (canonical order)."""
    words = []
    if size and o.size != "medium":
        words.append(o.size)
    if colour:
        words.append(o.colour)
    if texture and o.texture != "solid":
        words.append(o.texture)
    words.append(o.shape if shape else "object")
    return f"{_article(words[0])} {' '.join(words)}"


def caption(scene: Scene) -> str:
    """The canonical caption of ``scene`` (main object first); :func:`parse_caption` inverts it."""
    text = _join([describe_object(o) for o in scene.objects]) + " " + _BG_PHRASE[scene.background]
    if scene.artefacts:
        text += ", with " + _join([f"{_article(a.kind)} {a.kind}" for a in scene.artefacts])
    return text


_SYNONYMS = {
    "big": "large",
    "huge": "large",
    "tiny": "small",
    "little": "small",
    "stripy": "striped",
    "stripes": "striped",
    "spotted": "dotted",
    "polka-dot": "dotted",
    "checked": "checkered",
    "chequered": "checkered",
    "plain-coloured": "solid",
    "bandaid": "band-aid",
    "plaster": "band-aid",
    "scale bar": "ruler",
}
_BG_PATTERNS = [
    (re.compile(r"\b(?:on|against|in|over)\s+(?:an?\s+|the\s+)?plain(?:\s+background)?$"), "plain"),
    (re.compile(r"\b(?:on|in)\s+(?:the\s+)?grass$"), "grass"),
    (re.compile(r"\b(?:against|in|on)\s+(?:the\s+)?(?:blue\s+)?sky$"), "sky"),
    (re.compile(r"\b(?:on|in)\s+(?:the\s+)?sand$"), "sand"),
    (re.compile(r"\b(?:on|in)\s+(?:the\s+)?water$"), "water"),
]


@dataclass(frozen=True)
class ObjectSpec:
    """A parsed object phrase; None means "not said"."""

    shape: str
    colour: str | None = None
    texture: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class CaptionSpec:
    """A parsed caption: object specs (main first), background (None: not said), artefacts."""

    objects: tuple[ObjectSpec, ...]
    background: str | None
    artefacts: tuple[str, ...]


def _split_list(text: str) -> list[str]:
    parts = []
    for chunk in text.split(","):
        parts.extend(p for p in re.split(r"\s+and\s+", chunk.strip()) if p.strip())
    return [p.strip() for p in parts]


def parse_caption(text: str) -> CaptionSpec:
    """Parse a caption of the grammar in the module docstring into a :class:`CaptionSpec`.

    Raises ValueError naming the first word it does not know and the accepted vocabulary.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected a non-empty caption string, got {text!r}")
    t = text.strip().lower().rstrip(".").strip()
    for k, v in _SYNONYMS.items():
        t = re.sub(rf"\b{re.escape(k)}\b", v, t)
    artefacts: list[str] = []
    if " with " in t:
        t, art_text = t.split(" with ", 1)
        t = t.rstrip(", ")
        for phrase in _split_list(art_text):
            words = [w for w in phrase.split() if w not in ("a", "an", "the", "some")]
            name = " ".join(words)
            if name not in ARTEFACTS:
                raise ValueError(f"unknown artefact {name!r} in caption {text!r}; expected one of {list(ARTEFACTS)}")
            if name not in artefacts:
                artefacts.append(name)
    background = None
    for pat, bg in _BG_PATTERNS:
        m = pat.search(t)
        if m:
            background, t = bg, t[: m.start()].strip()
            break
    else:
        if re.search(r"\b(on|against)\b", t):
            raise ValueError(
                f"unknown background in caption {text!r}; expected one of {[_BG_PHRASE[b] for b in BACKGROUNDS]}"
            )
    objects = []
    for phrase in _split_list(t):
        words = [w for w in phrase.split() if w not in ("a", "an", "one", "the")]
        if not words:
            continue
        kw: dict[str, str] = {}
        shape = None
        for w in words:
            if w in SHAPES:
                shape = w
            elif w in COLOURS:
                kw["colour"] = w
            elif w in TEXTURES:
                kw["texture"] = w
            elif w in SIZES:
                kw["size"] = w
            else:
                raise ValueError(
                    f"unknown word {w!r} in caption {text!r}; expected shapes {list(SHAPES)}, colours "
                    f"{list(COLOURS)}, textures {list(TEXTURES)}, sizes {list(SIZES)}"
                )
        if shape is None:
            raise ValueError(f"object phrase {phrase!r} in caption {text!r} names no shape; expected one of {list(SHAPES)}")
        objects.append(ObjectSpec(shape=shape, **kw))
    if not 1 <= len(objects) <= 3:
        raise ValueError(f"a caption describes 1 to 3 objects, got {len(objects)} in {text!r}")
    return CaptionSpec(objects=tuple(objects), background=background, artefacts=tuple(artefacts))


def scene_from_spec(spec: CaptionSpec, rng: np.random.Generator) -> Scene:
    """Lay out a :class:`CaptionSpec`: unsaid colours/background drawn from ``rng``, unsaid
    texture solid, unsaid size medium; positions and rotations random."""
    objects: list[SceneObject] = []
    for o in spec.objects:
        size = o.size or "medium"
        r = _radius(size, rng)
        x, y = _place(r, objects, rng)
        objects.append(
            SceneObject(
                shape=o.shape,
                colour=o.colour or list(COLOURS)[int(rng.integers(len(COLOURS)))],
                texture=o.texture or "solid",
                size=size,
                x=x,
                y=y,
                radius=r,
                angle=float(rng.uniform(0, 2 * np.pi)),
            )
        )
    background = spec.background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    kinds = sorted(spec.artefacts, key=ARTEFACTS.index)
    arts = tuple(_sample_artefact(k, rng, objects) for k in kinds)
    return Scene(background=background, objects=tuple(objects), artefacts=arts, seed=int(rng.integers(2**31 - 1)))


def render(caption_or_scene: str | Scene, seed: int = 0) -> Rendered:
    """Render a caption (text-to-image for this world) or a :class:`Scene`.

    A caption is parsed with :func:`parse_caption` and laid out with ``seed``; a Scene is drawn
    exactly (its own ``seed`` drives the noise, ``seed`` here is ignored). Deterministic.
    """
    if isinstance(caption_or_scene, Scene):
        return render_scene(caption_or_scene)
    if isinstance(caption_or_scene, str):
        spec = parse_caption(caption_or_scene)
        return render_scene(scene_from_spec(spec, np.random.default_rng(seed)))
    raise TypeError(f"render expects a caption string or a Scene, got {type(caption_or_scene).__name__}")


# --------------------------------------------------------------------------- text-to-image generator


class UnrenderableConcept(ValueError):
    """A concept phrase the demo world cannot draw (a word outside its vocabulary, or a
    contradiction such as two colours for one object). A ``ValueError``: the description loop
    records such a proposal as unusable, with this message as the reason, and goes on."""


#: words a concept phrase may contain that name nothing (articles, prepositions, generic nouns).
_FILLER = frozenset(
    "a an the one some of with on in against over showing containing having object objects shape shapes "
    "thing things scene image picture photo background".split()
)
_MULTIWORD = (("red tint", "red-tint"), ("band-aid", "band-aid"), ("plain background", "plain"))


def concept_spec(text: str) -> CaptionSpec:
    """Parse a concept phrase into a :class:`CaptionSpec` whose unsaid parts are None.

    Reads every caption of the grammar (:func:`parse_caption`) and looser phrases, taking
    the vocabulary words in any order: shapes, colours, textures, sizes
    (``"red striped star"``, ``"striped"``, ``"a red object"``), a background anywhere
    (``"sand"``, ``"star on sand"``), artefacts with or without ``with``
    (``"watermark"``, ``"star with a watermark"``, ``"red tint"``), up to 3 objects joined by
    ``and``. Colour/texture/size words attach to the next shape; trailing ones to the last
    object (or to one object of unsaid shape when the phrase names no shape). Filler words
    (articles, prepositions, ``object``, ``background``, ``image``...) are ignored.

    Raises :class:`UnrenderableConcept` (a ValueError) naming the first word it cannot draw,
    or the contradiction (two colours for one object, two backgrounds, > 3 objects).
    Returns a CaptionSpec whose ObjectSpec.shape may be None (unsaid shape).
    """
    if not isinstance(text, str) or not text.strip():
        raise UnrenderableConcept(f"expected a non-empty concept phrase, got {text!r}")
    t = text.strip().lower().rstrip(".").strip()
    for k, v in _SYNONYMS.items():
        t = re.sub(rf"\b{re.escape(k)}\b", v, t)
    for phrase, token in _MULTIWORD:
        t = re.sub(rf"\b{re.escape(phrase)}\b", token, t)
    tokens = [w for w in re.split(r"[\s,;]+", t) if w]
    objects: list[dict] = []
    current: dict = {}
    background: str | None = None
    artefacts: list[str] = []

    def add_attr(obj: dict, key: str, value: str) -> None:
        if key in obj and obj[key] != value:
            raise UnrenderableConcept(
                f"cannot render {text!r}: one object with two {key}s ({obj[key]!r} and {value!r})"
            )
        obj[key] = value

    for w in tokens:
        name = "red tint" if w == "red-tint" else w
        if name in _FILLER or name == "and":
            continue
        if name in SHAPES:
            if "shape" in current:
                raise UnrenderableConcept(f"cannot render {text!r}: one object with two shapes")
            current["shape"] = name
            objects.append(current)
            current = {}
        elif name in COLOURS:
            add_attr(current, "colour", name)
        elif name in TEXTURES:
            add_attr(current, "texture", name)
        elif name in SIZES:
            add_attr(current, "size", name)
        elif name in BACKGROUNDS:
            if background is not None and background != name:
                raise UnrenderableConcept(f"cannot render {text!r}: two backgrounds ({background!r} and {name!r})")
            background = name
        elif name in ARTEFACTS:
            if name not in artefacts:
                artefacts.append(name)
        else:
            raise UnrenderableConcept(
                f"cannot render {text!r}: unknown word {w!r}; the demo world draws shapes {list(SHAPES)}, "
                f"colours {list(COLOURS)}, textures {list(TEXTURES)}, sizes {list(SIZES)}, backgrounds "
                f"{list(BACKGROUNDS)} and artefacts {list(ARTEFACTS)}"
            )
    if current:  # attributes after the last shape (or a phrase without a shape)
        if objects:
            last = objects[-1]
            for key, value in current.items():
                add_attr(last, key, value)
        else:
            objects.append(current)
    if not objects:
        objects.append({})  # only a background and/or artefacts: one object of unsaid kind
    if len(objects) > 3:
        raise UnrenderableConcept(f"cannot render {text!r}: a scene has 1 to 3 objects, got {len(objects)}")
    return CaptionSpec(
        objects=tuple(ObjectSpec(**o) if "shape" in o else ObjectSpec(shape=None, **o) for o in objects),
        background=background,
        artefacts=tuple(artefacts),
    )


def _fill_spec(spec: CaptionSpec, rng: np.random.Generator) -> CaptionSpec:
    """Draw every unsaid object attribute as :func:`sample_scene` does: shape, colour and
    texture uniform, the main object medium or large and the others small."""
    objs = []
    for i, o in enumerate(spec.objects):
        shape = o.shape or SHAPES[int(rng.integers(len(SHAPES)))]
        colour = o.colour or list(COLOURS)[int(rng.integers(len(COLOURS)))]
        texture = o.texture or TEXTURES[int(rng.integers(len(TEXTURES)))]
        size = o.size or (("medium", "large")[int(rng.integers(2))] if i == 0 else "small")
        objs.append(ObjectSpec(shape=shape, colour=colour, texture=texture, size=size))
    return replace(spec, objects=tuple(objs))


def generator(concept: str, n: int, seed: int = 0) -> torch.Tensor:
    """The demo world as a text-to-image generator: ``n`` images of ``concept``.

    concept: a concept phrase (see :func:`concept_spec`): a caption, ``"red star"``,
             ``"striped"``, ``"sand"``, ``"star with a watermark"``...
    n:       number of images (>= 1).
    seed:    images are deterministic per ``(concept, n, seed)``; image i depends only on
             ``(seed, i)`` and the phrase, so ``generator(c, 8, s)`` is the first 8 of
             ``generator(c, 32, s)`` and two phrases with one seed share their random layouts.
    Every attribute the phrase leaves open is drawn from the seed as the world samples it
    (shape, colour, texture; main object medium or large, background uniform); nothing that is
    not asked for is added (no extra objects, no artefacts).

    Returns FloatTensor [n, 3, 64, 64] in [0, 1]. Raises :class:`UnrenderableConcept` (a
    ValueError) before rendering anything when the phrase cannot be drawn.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1 (number of images), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    spec = concept_spec(concept)
    out = np.empty((int(n), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), i])
        img, _, _ = _render_array(scene_from_spec(_fill_spec(spec, rng), rng))
        out[i] = img.transpose(2, 0, 1)
    return torch.from_numpy(out)
