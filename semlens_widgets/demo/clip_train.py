"""Contrastive training of the demo CLIP on the world's image-caption pairs.

The "web" the demo CLIP learns from: a pool of random scenes (all shapes, backgrounds uniform,
each artefact on 25% of the images). Each training pair is a *view* of a scene with a text:

- the full image with its canonical caption, a partial description (a subset of the objects
  and attributes, synonyms of the grammar), or one concept in a prompt template;
- a crop around one object with a (partial) description of that object;
- a crop around an artefact with its name; a random crop with the background's name.

Crops teach the model what SemanticLens feeds it: CRP crops of concept examples. Because many
texts are true of many images ("red" is true of every image with a red object), the loss uses
soft targets: text t and image j match when every concept the text names is present in the
image view (multi-hot subset test), and each row/column's targets are spread over its matches.
Two dense terms join it (see :func:`train_clip`): a sigmoid loss of every view against every
vocabulary prompt, and a calibration that puts the empty prompt between the concepts a view
shows and the ones it does not, the baseline SemanticLens subtracts before it reads a sign.

The model (``semlens-demo-clip.json``): open_clip's ModifiedResNet image tower (width 24, one
block per stage, 64x64 input) and a 2-layer, 64-wide text transformer, 128-d embeddings;
6.3M parameters, 12.6 MB in fp16, most of it the 49k-token embedding table of the text tower.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from . import world
from ._training import log, save_fp16
from .models import CLIP_CONFIG_NAME, CLIP_WEIGHTS, DEMO_TEMPLATES, load_fm, register_clip_config
from .world import ARTEFACTS, CONCEPTS, IMAGE_SIZE, Scene

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["CLIPPool", "make_pool", "sample_batch", "train_clip", "report_clip", "concept_aucs"]

_COL = {c: j for j, c in enumerate(CONCEPTS)}
_EXTRA_TEMPLATES = ("a photo with {}", "{} in the picture", "there is {}")
#: cosine margin of the null-prompt calibration (see :func:`_null_calibration`).
NULL_MARGIN = 0.05
_BG_WORDS = {
    "plain": ["on a plain background", "on a plain background", "on a grey background"],
    "grass": ["on grass", "on the grass", "on green grass"],
    "sky": ["against the sky", "in the sky", "against a blue sky"],
    "sand": ["on sand", "on the sand", "on a beach of sand"],
    "water": ["on water", "on the water", "over water"],
}


@dataclass
class CLIPPool:
    """Rendered training scenes: ``images`` ByteTensor [n, 3, 64, 64] and the scenes."""

    scenes: list[Scene]
    images: torch.Tensor


def make_pool(n: int, seed: int) -> CLIPPool:
    """``n`` random scenes for CLIP training (artefacts at 25% each, uniform backgrounds)."""
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, artefact_probs={k: 0.25 for k in ARTEFACTS}) for _ in range(n)]
    return CLIPPool(scenes=scenes, images=world.render_uint8(scenes))


def _multi_hot(concepts) -> np.ndarray:
    v = np.zeros(len(CONCEPTS), dtype=bool)
    for c in concepts:
        v[_COL[c]] = True
    return v


def _template(rng: np.random.Generator, extra: bool = True) -> str:
    pool = DEMO_TEMPLATES + (_EXTRA_TEMPLATES if extra else ())
    return pool[int(rng.integers(len(pool)))]


def _object_phrase(o: world.SceneObject, rng: np.random.Generator) -> tuple[str, set[str]]:
    """A partial description of one object and the concepts it names."""
    while True:
        keep_shape = rng.random() < 0.75
        keep_colour = rng.random() < 0.6
        keep_texture = rng.random() < 0.5
        if keep_shape or keep_colour or keep_texture:
            break
    words, named = [], set()
    if o.size != "medium" and rng.random() < 0.3:
        words.append(o.size)
    if keep_colour:
        words.append(o.colour)
        named.add(o.colour)
    if keep_texture and (o.texture != "solid" or rng.random() < 0.5):
        words.append(o.texture)
        named.add(o.texture)
    if keep_shape:
        words.append(o.shape)
        named.add(o.shape)
    else:
        words.append("object" if rng.random() < 0.5 else "shape")
    if not named:  # texture "solid" dropped and nothing else kept: name the shape
        words[-1] = o.shape
        named.add(o.shape)
    return f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}", named


def _scene_text(scene: Scene, rng: np.random.Generator) -> tuple[str, set[str]]:
    """A text for the full image: canonical caption, partial description or one concept."""
    u = rng.random()
    if u < 0.25:
        text = world.caption(scene)
        named = {scene.background, *scene.artefact_kinds}
        for o in scene.objects:
            named.update({o.shape, o.colour} | ({o.texture} if o.texture != "solid" else set()))
        return text, named
    if u < 0.6:
        objs = [o for o in scene.objects if rng.random() < 0.6] or [scene.objects[0]]
        phrases, named = [], set()
        for o in objs:
            p, n = _object_phrase(o, rng)
            phrases.append(p)
            named |= n
        text = world._join(phrases)
        if rng.random() < 0.5:
            opts = _BG_WORDS[scene.background]
            text += " " + opts[int(rng.integers(len(opts)))]
            named.add(scene.background)
        arts = [a for a in scene.artefact_kinds if rng.random() < 0.5]
        if arts:
            text += ", with " + world._join([f"{'an' if a[0] in 'aeiou' else 'a'} {a}" for a in arts])
            named.update(arts)
        return text, named
    present = sorted(world.scene_concepts(scene))
    c = present[int(rng.integers(len(present)))]
    return _template(rng).format(c), {c}


def _inside_fraction(box, crop) -> float:
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = crop
    iw = max(0.0, min(x1, cx1) - max(x0, cx0))
    ih = max(0.0, min(y1, cy1) - max(y0, cy0))
    area = max(1e-6, (x1 - x0) * (y1 - y0))
    return iw * ih / area


def _crop_concepts(scene: Scene, crop) -> set[str]:
    """Concepts visible in a crop: background, objects / artefacts with >= 40% of their box inside."""
    out = {scene.background}
    for o in scene.objects:
        if _inside_fraction(o.box, crop) >= 0.4:
            out.update(o.concepts)
    for a in scene.artefacts:
        if a.kind == "red tint" or _inside_fraction(a.box, crop) >= 0.4:
            out.add(a.kind)
    return out


def _expand(box, rng: np.random.Generator, lo: float = 1.1, hi: float = 1.9) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0) * rng.uniform(lo, hi)
    side = max(side, 10.0)
    cx += rng.uniform(-0.1, 0.1) * side
    cy += rng.uniform(-0.1, 0.1) * side
    s = IMAGE_SIZE
    bx0, by0 = max(0.0, cx - side / 2), max(0.0, cy - side / 2)
    bx1, by1 = min(float(s), cx + side / 2), min(float(s), cy + side / 2)
    return bx0, by0, bx1, by1


def sample_view(scene: Scene, rng: np.random.Generator) -> tuple[tuple[float, float, float, float], str, np.ndarray, np.ndarray]:
    """One training view: (crop box, text, text concepts multi-hot, image concepts multi-hot)."""
    s = float(IMAGE_SIZE)
    u = rng.random()
    local_arts = [a for a in scene.artefacts if a.kind != "red tint"]
    if u < 0.35:
        m = rng.uniform(0, 3, size=4) * (rng.random() < 0.5)
        crop = (m[0], m[1], s - m[2], s - m[3])
        text, named = _scene_text(scene, rng)
    elif u < 0.72 or (u < 0.87 and not local_arts):
        i = int(rng.integers(len(scene.objects)))
        o = scene.objects[i]
        crop = _expand(o.box, rng)
        if rng.random() < 0.55:
            text, named = _object_phrase(o, rng)
            if rng.random() < 0.4:
                text = _template(rng, extra=False).format(text)
        else:
            c = list(o.concepts)[int(rng.integers(3))]
            text, named = _template(rng).format(c), {c}
    elif u < 0.87:
        a = local_arts[int(rng.integers(len(local_arts)))]
        crop = _expand(a.box, rng, 1.05, 1.5)
        text, named = _template(rng).format(a.kind), {a.kind}
    elif u < 0.93:
        side = rng.uniform(16, 40)
        x0, y0 = rng.uniform(0, s - side, size=2)
        crop = (x0, y0, x0 + side, y0 + side)
        text, named = _template(rng).format(scene.background), {scene.background}
    else:
        # random-resized crop (what CRP crops look like): one concept visible in it
        side = rng.uniform(20, 60)
        x0, y0 = rng.uniform(0, s - side, size=2)
        crop = (x0, y0, x0 + side, y0 + side)
        visible = sorted(_crop_concepts(scene, crop))
        c = visible[int(rng.integers(len(visible)))]
        text, named = _template(rng).format(c), {c}
    img_concepts = _crop_concepts(scene, crop) | named  # what the text names is in view by construction
    return crop, text, _multi_hot(named), _multi_hot(img_concepts)


def sample_batch(pool: CLIPPool, batch_size: int, rng: np.random.Generator):
    """(images FloatTensor [B, 3, 64, 64] in [0, 1], texts list[str], match BoolTensor [B, B],
    presence FloatTensor [B, len(CONCEPTS)]) where ``match[t, j]``: every concept text t names is
    in image view j, and ``presence[j]`` the concepts visible in view j."""
    from torchvision.ops import roi_align

    idx = rng.integers(len(pool.scenes), size=batch_size)
    boxes, texts, tn, im = [], [], [], []
    for b, i in enumerate(idx):
        crop, text, t_hot, i_hot = sample_view(pool.scenes[int(i)], rng)
        boxes.append([float(b), *crop])
        texts.append(text)
        tn.append(t_hot)
        im.append(i_hot)
    src = pool.images[torch.as_tensor(idx)].float() / 255.0
    rois = torch.tensor(boxes, dtype=torch.float32)
    images = roi_align(src, rois, output_size=IMAGE_SIZE, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    t = torch.from_numpy(np.stack(tn)).float()
    i_ = torch.from_numpy(np.stack(im)).float()
    match = (t @ (1.0 - i_).T) == 0  # [B_text, B_image]
    return images.clamp_(0, 1), texts, match, i_


def _soft_clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """Soft-target symmetric contrastive loss: ``match[t, j]`` spreads each row's (column's)
    target over the views (texts) that match it."""
    logits = scale * txt @ img.T  # [T, I]
    tgt = match.float()
    loss_t = -(F.log_softmax(logits, dim=1) * (tgt / tgt.sum(1, keepdim=True))).sum(1).mean()
    tgt_i = tgt.T / tgt.T.sum(1, keepdim=True)
    loss_i = -(F.log_softmax(logits.T, dim=1) * tgt_i).sum(1).mean()
    return (loss_t + loss_i) / 2


def _null_calibration(s_concepts: torch.Tensor, s_null: torch.Tensor, presence: torch.Tensor,
                      margin: float = NULL_MARGIN) -> torch.Tensor:
    """Two-sided ranking of every view's concepts around the empty prompt: a concept in view
    scores at least ``margin`` above the null prompt, a concept not in view at least ``margin``
    below it (hinge, mean over all view x concept pairs). SemanticLens scores a component by
    ``s(concept, theta) - s(null, theta)`` and the audit reads its sign: the null prompt must
    sit between what an image shows and what it does not, like a real CLIP's empty caption,
    not below everything (then every concept "beats the baseline")."""
    gap = s_concepts - s_null[:, None]  # [B, K]
    above = F.relu(margin - gap) * presence
    below = F.relu(margin + gap) * (1.0 - presence)
    return (above.sum() / presence.sum().clamp(min=1) + below.sum() / (1.0 - presence).sum().clamp(min=1)) / 2


def _normalize(x: torch.Tensor) -> torch.Tensor:
    import open_clip

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def train_clip(
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 2e-3,
    pool_size: int = 6_000,
    seed: int = 0,
    out: Path = CLIP_WEIGHTS,
    log_every: int = 10,
    concept_weight: float = 2.0,
    null_weight: float = 1.0,
    init: Path | None = None,
):
    """Train the demo CLIP from scratch and save it (fp16 safetensors). Returns the model.

    Loss, per batch of (view, text) pairs:

    - the soft-target contrastive loss over the batch (:func:`_soft_clip_loss`);
    - ``concept_weight`` x a multi-label sigmoid loss of every view against every vocabulary
      concept prompt (mean over DEMO_TEMPLATES, exactly the probes SemanticLens encodes): dense
      supervision that teaches shapes and textures in a few hundred steps;
    - ``null_weight`` x the calibration against the empty prompt (the DEMO_TEMPLATES filled
      with ``""``, what ``FoundationModel.null_embedding`` encodes): every concept in view
      above it, every concept not in view below it, by a cosine margin
      (:func:`_null_calibration`). Search, labels and audits score ``s(c, theta) - s(null,
      theta)`` and the audit reads its sign, so this is what makes them meaningful.

    ``init``: start from these weights instead of from scratch (fine-tuning)."""
    import open_clip

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 100)
    t0 = time.time()
    pool = make_pool(pool_size, seed + 200)
    log(f"clip: rendered a pool of {pool_size} scenes in {time.time() - t0:.1f}s")
    name = register_clip_config()
    model = open_clip.create_model(name, pretrained=None)
    if init is not None:  # continue from earlier weights (fine-tuning with the current losses)
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(str(init)).items()})
        log(f"clip: initialised from {init}")
    tokenizer = open_clip.get_tokenizer(name)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warm = max(1, steps // 20)

    def lr_at(s: int) -> float:
        if s < warm:
            return lr * (s + 1) / warm
        return lr * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    concept_tokens = tokenizer([t.format(c) for c in CONCEPTS for t in DEMO_TEMPLATES])
    # the empty prompt exactly as FoundationModel.null_embedding() encodes it
    null_tokens = tokenizer([t.format("") for t in DEMO_TEMPLATES])
    concept_bias = torch.nn.Parameter(torch.tensor(-4.0))
    opt.add_param_group({"params": [concept_bias], "weight_decay": 0.0})
    model.train()
    run = 0.0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        images, texts, match, presence = sample_batch(pool, batch_size, rng)
        img = F.normalize(model.encode_image(_normalize(images)), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        loss = _soft_clip_loss(img, txt, scale, match)
        if concept_weight > 0 or null_weight > 0:
            ct = F.normalize(model.encode_text(concept_tokens), dim=-1).view(len(CONCEPTS), len(DEMO_TEMPLATES), -1)
            ct = F.normalize(ct.mean(1), dim=-1)  # [K, d], like fm.encode_concepts
            s_concepts = img @ ct.T  # [B, K]
        if concept_weight > 0:
            logits = scale * s_concepts + concept_bias
            loss = loss + concept_weight * F.binary_cross_entropy_with_logits(logits, presence)
        if null_weight > 0:
            nt = F.normalize(model.encode_text(null_tokens), dim=-1)  # [Z, d]
            null = F.normalize(nt.mean(0), dim=-1)  # [d], like fm.null_embedding()
            loss = loss + null_weight * _null_calibration(s_concepts, img @ null, presence)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run = loss.item() if step == 0 else 0.95 * run + 0.05 * loss.item()
        if (step + 1) % log_every == 0 or step == steps - 1:
            log(f"clip step {step + 1}/{steps}: loss {run:.4f} scale {model.logit_scale.exp().item():.1f} ({time.time() - t0:.0f}s)")
    model.eval()
    save_fp16(model.state_dict(), out)
    log(f"clip saved to {out} ({out.stat().st_size / 1e6:.2f} MB) after {time.time() - t0:.0f}s")
    return model


def concept_aucs(fm, dataset) -> "pd.DataFrame":
    """Per vocabulary concept: AUC of the text-image similarity (concept prompt vs image)
    between the dataset's images with and without the concept. DataFrame ``concept,
    category, auc, n_pos``."""
    import pandas as pd

    from .groundtruth import auc_matrix

    presence = dataset.concept_matrix
    img = fm.encode_images(dataset.images())
    txt = fm.encode_concepts(list(CONCEPTS))
    sim = img @ txt.T  # [N, K]
    rows = []
    for j, c in enumerate(CONCEPTS):
        p = presence[:, j]
        if p.all() or not p.any():
            continue
        rows.append({"concept": c, "category": world.VOCABULARY[c], "auc": float(auc_matrix(sim[:, j], p)[0, 0]), "n_pos": int(p.sum())})
    return pd.DataFrame(rows)


def report_clip(path: Path = CLIP_WEIGHTS) -> "pd.DataFrame":
    """Print the FM quality figure of the weights at ``path`` on the clean test split."""
    from .data import make_split

    fm = load_fm(path)
    test = make_split("test").materialize()
    t = concept_aucs(fm, test)
    print(f"demo CLIP ({CLIP_CONFIG_NAME}, {path.name}): text-image AUC per concept on the clean test split")
    for cat, g in t.groupby("category", sort=False):
        print(f"  {cat:<10} " + "  ".join(f"{r.concept} {r.auc:.3f}" for r in g.itertuples()))
    print(f"  median AUC {t.auc.median():.3f}   min {t.auc.min():.3f} ({t.loc[t.auc.idxmin(), 'concept']})")
    return t
