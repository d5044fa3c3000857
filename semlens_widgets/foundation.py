"""Foundation models: the shared embedding space of SemanticLens (the semantic embedding and
the search of paper eq. 4).

:class:`FoundationModel` wraps an image encoder and a text encoder that map into one space.
It owns the image preprocessing (done on tensors, batched), prompt templates, the
empty-template null embedding and an :attr:`~FoundationModel.identity` used in store
fingerprints. :meth:`FoundationModel.open_clip` builds one from any open_clip config name
(built-in or registered at runtime with ``open_clip.add_model_config``) with random weights,
a hub tag or a local weights file.

Shapes: images ``[n, 3, H, W]`` float in [0, 1] (uint8 in [0, 255] is accepted too),
embeddings ``[n, d]`` float32, L2-normalised, on the CPU.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from semlens_widgets.store import module_fingerprint

__all__ = ["FoundationModel", "DEFAULT_TEMPLATES"]

#: Prompt templates averaged by :meth:`FoundationModel.encode_concepts` (each has one ``{}``).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "an image of {}.",
    "a close-up photo of {}.",
    "a cropped photo of {}.",
    "a picture showing {}.",
    "a photo of the {}.",
)

_RESIZE_MODES = ("shortest", "longest", "squash")
_INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "area")
_PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16", "amp", "amp_bf16", "amp_bfloat16")


def _check_templates(templates: Any) -> tuple[str, ...]:
    if templates is None:
        return DEFAULT_TEMPLATES
    if isinstance(templates, str):
        templates = [templates]
    templates = list(templates)
    if not templates:
        raise ValueError("templates must be a non-empty list of strings with one '{}', got []")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(
                f"each prompt template must be a str with exactly one '{{}}' placeholder "
                f"(e.g. 'a photo of {{}}.'), got {t!r}"
            )
    return tuple(templates)


def _check_texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} expects a list of strings, got a single str {texts!r}; wrap it: [{texts!r}]")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{what} expects a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError(f"{what} got an empty list; pass at least one string")
    bad = [(i, t) for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        i, t = bad[0]
        raise TypeError(f"{what} expects strings only; entry {i} is {type(t).__name__}: {t!r}")
    return texts


def _file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


class FoundationModel:
    """An image encoder and a text encoder sharing one embedding space.

    Build one with :meth:`open_clip` (the usual way) or directly from two callables::

        FoundationModel(encode_image_fn, encode_text_fn, image_size=224,
                        mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28),
                        identity={"name": "my-model", ...})

    ``encode_image_fn(x)``: ``x [n, 3, S, S]`` normalised model input on :attr:`device` ->
    ``[n, d]``; ``encode_text_fn(texts: list[str])`` -> ``[n, d]``. Outputs need not be
    normalised; this class normalises and returns float32 CPU tensors.

    Attributes: ``dim`` (d), ``image_size`` (int S, or (H, W) for non-square models),
    ``device``, ``templates``, ``identity`` (JSON-able dict for store fingerprints),
    ``batch_size`` (default batch of :meth:`encode_images` / :meth:`encode_text`),
    ``model`` (the wrapped ``nn.Module`` or None).
    """

    def __init__(
        self,
        encode_image_fn: Callable[[torch.Tensor], torch.Tensor],
        encode_text_fn: Callable[[list[str]], torch.Tensor],
        *,
        image_size: int | tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        identity: dict,
        dim: int | None = None,
        device: str | torch.device = "cpu",
        templates: Sequence[str] | None = None,
        resize_mode: str = "shortest",
        interpolation: str = "bicubic",
        batch_size: int = 64,
        autocast: bool | None = None,
        autocast_dtype: torch.dtype | None = None,
        input_dtype: torch.dtype = torch.float32,
        model: torch.nn.Module | None = None,
    ):
        if not callable(encode_image_fn) or not callable(encode_text_fn):
            raise TypeError("encode_image_fn and encode_text_fn must be callables")
        if isinstance(image_size, (tuple, list)):
            if len(image_size) != 2 or not all(isinstance(s, int) and s > 0 for s in image_size):
                raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
            image_size = (int(image_size[0]), int(image_size[1]))
            if image_size[0] == image_size[1]:
                image_size = image_size[0]
        elif not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std must have 3 entries (std > 0), got mean={mean}, std={std}")
        if resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
        if not isinstance(identity, dict) or "name" not in identity:
            raise ValueError(f"identity must be a dict with at least a 'name', got {identity!r}")
        self._encode_image_fn = encode_image_fn
        self._encode_text_fn = encode_text_fn
        self.image_size = image_size
        self.mean, self.std = mean, std
        self.resize_mode, self.interpolation = resize_mode, interpolation
        self.device = torch.device(device)
        self.templates = _check_templates(templates)
        self.batch_size = self._check_batch_size(batch_size)
        self._autocast_pref = autocast
        self.autocast = (self.device.type == "cuda") if autocast is None else bool(autocast)
        if autocast_dtype is None:
            autocast_dtype = (
                torch.bfloat16
                if self.device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                else torch.float16
            )
        self.autocast_dtype = autocast_dtype
        self.input_dtype = input_dtype
        self.model = model
        self._null: tuple[tuple[str, ...], torch.Tensor] | None = None
        if dim is None:
            dim = int(self.encode_text([""]).shape[1])
        self.dim = int(dim)
        self._identity = dict(identity)
        self._identity.update(
            dim=self.dim,
            image_size=image_size if isinstance(image_size, int) else list(image_size),
            mean=list(mean),
            std=list(std),
            resize_mode=resize_mode,
            interpolation=interpolation,
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def open_clip(
        cls,
        name: str,
        pretrained: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        templates: Sequence[str] | None = None,
        precision: str | None = None,
        batch_size: int = 64,
    ) -> "FoundationModel":
        """An open_clip model as foundation model.

        name:       an open_clip config name: built-in (``"ViT-B-32"``), registered at runtime
                    with ``open_clip.add_model_config``, or ``"hf-hub:org/repo"``.
        pretrained: ``None`` (random weights, e.g. for tests), an open_clip pretrained tag
                    (``"laion2b_s34b_b79k"``, downloaded by open_clip) or a local weights file
                    (``.safetensors``, or ``.pt`` / ``.bin`` / ``.pth`` read by open_clip's
                    loader with ``weights_only=True``).
        device:     where the model runs; embeddings always come back on the CPU.
        templates:  prompt templates for :meth:`encode_concepts` (default
                    :data:`DEFAULT_TEMPLATES`); each needs one ``{}``.
        precision:  open_clip precision (``"fp32"``, ``"fp16"``, ``"bf16"``, ``"amp"``...).
                    ``None``: fp32 weights, autocast on CUDA.
        """
        try:
            import open_clip
        except ImportError as e:  # pragma: no cover - declared dependency
            raise ImportError("FoundationModel.open_clip needs open_clip_torch: pip install open_clip_torch") from e
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be an open_clip model config name (str), got {name!r}")
        if precision is not None and precision not in _PRECISIONS:
            raise ValueError(f"precision must be None or one of {_PRECISIONS}, got {precision!r}")
        from open_clip.factory import get_model_config, parse_model_name

        schema, _ = parse_model_name(name)
        if schema is None and get_model_config(name.replace("/", "-")) is None:
            raise ValueError(
                f"unknown open_clip model config {name!r}; known configs: "
                f"{', '.join(open_clip.list_models())} (register your own with "
                f"open_clip.add_model_config(path_to_json))"
            )
        identity: dict[str, Any] = {"name": name, "source": "open_clip"}
        ckpt: str | None = None
        if pretrained is not None:
            if not isinstance(pretrained, (str, os.PathLike)) or not str(pretrained):
                raise ValueError(
                    f"pretrained must be None, an open_clip tag or a weights file path, got {pretrained!r}"
                )
            p = str(pretrained)
            tags = open_clip.list_pretrained_tags_by_model(name) if schema is None else []
            looks_like_path = (
                os.sep in p or p.endswith((".safetensors", ".pt", ".bin", ".pth", ".npz")) or os.path.exists(p)
            )
            if p in tags:
                identity["pretrained"] = p
            elif looks_like_path:
                path = Path(p).expanduser()
                if not path.is_file():
                    raise FileNotFoundError(
                        f"pretrained weights file {p!r} does not exist (pretrained must be None, an "
                        f"open_clip tag such as {tags[:3]} or an existing .safetensors/.pt/.bin file)"
                    )
                ckpt = str(path)
                identity["weights_sha256"] = _file_sha256(path)
            else:
                raise ValueError(
                    f"pretrained={p!r} is neither an open_clip tag for {name!r} (known: {tags}) "
                    f"nor an existing weights file"
                )
        dev = torch.device(device)
        kwargs: dict[str, Any] = dict(device=dev, precision=precision or "fp32")
        if ckpt is not None:
            # open_clip reads .safetensors with safetensors and .pt/.bin with
            # torch.load(weights_only=True), and loads them with strict key matching
            try:
                model, _, _ = open_clip.create_model_and_transforms(name, pretrained=ckpt, **kwargs)
            except RuntimeError as e:
                raise ValueError(f"weights file {ckpt!r} does not fit open_clip config {name!r}: {e}") from None
        else:
            model, _, _ = open_clip.create_model_and_transforms(
                name, pretrained=identity.get("pretrained"), **kwargs
            )
        model.eval()
        tokenizer = open_clip.get_tokenizer(name)
        pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        size = pp.get("size", getattr(model.visual, "image_size", 224))
        if isinstance(size, (tuple, list)):
            size = tuple(int(s) for s in size)
        else:
            size = int(size)
        mean = pp.get("mean", getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        std = pp.get("std", getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        interp = pp.get("interpolation", "bicubic")
        interp = interp if interp in _INTERPOLATIONS else "bicubic"
        resize_mode = pp.get("resize_mode", "shortest")
        cfg = get_model_config(name.replace("/", "-")) if schema is None else None
        dim = cfg.get("embed_dim") if cfg else None
        if ckpt is None and "pretrained" not in identity:
            identity["pretrained"] = None
        # the weights themselves, whatever their source (random init differs per seed)
        identity["params"] = module_fingerprint(model)
        identity["precision"] = precision or "fp32"
        param_dtype = next(model.visual.parameters()).dtype
        # None = automatic: autocast exactly when running on CUDA (also after fm.to("cuda"))
        use_autocast = None if (precision is None or precision.startswith("amp")) else False

        def encode_image(x: torch.Tensor) -> torch.Tensor:
            return model.encode_image(x)

        def encode_text(texts: list[str]) -> torch.Tensor:
            tokens = tokenizer(texts).to(next(model.parameters()).device)
            return model.encode_text(tokens)

        fm = cls(
            encode_image,
            encode_text,
            image_size=size,
            mean=mean,
            std=std,
            identity=identity,
            dim=dim,
            device=dev,
            templates=templates,
            resize_mode=resize_mode if resize_mode in _RESIZE_MODES else "shortest",
            interpolation=interp,
            batch_size=batch_size,
            autocast=use_autocast,
            input_dtype=param_dtype if use_autocast is False else torch.float32,
            model=model,
        )
        fm.tokenizer = tokenizer
        return fm

    # ------------------------------------------------------------------ properties
    @property
    def identity(self) -> dict:
        """JSON-able description of what produces the image embeddings (name, weights
        tag / file sha256 / parameter fingerprint, dim, preprocessing). Templates are not part
        of it: they change text embeddings only, which are never stored."""
        return dict(self._identity)

    @property
    def square_size(self) -> int:
        """The side of the square crops to prepare for this model (max of image_size)."""
        s = self.image_size
        return s if isinstance(s, int) else max(s)

    def __repr__(self) -> str:
        return (
            f"FoundationModel({self._identity.get('name')!r}, dim={self.dim}, "
            f"image_size={self.image_size}, device={str(self.device)!r})"
        )

    @staticmethod
    def _check_batch_size(batch_size: Any) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        return batch_size

    def _autocast(self):
        if self.autocast:
            return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
        import contextlib

        return contextlib.nullcontext()

    # ------------------------------------------------------------------ images
    def _check_images(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"encode_images expects a torch.Tensor [n, 3, H, W] in [0, 1], got {type(x).__name__}")
        if x.dim() == 3:
            raise ValueError(
                f"encode_images expects a batch [n, 3, H, W]; got one image of shape {tuple(x.shape)} "
                f"(use x[None])"
            )
        if x.dim() != 4:
            raise ValueError(f"encode_images expects rank 4 [n, 3, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(
                f"encode_images expects 3 (RGB) or 1 (gray) channels in dim 1, got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError("encode_images got an empty batch (n = 0)")
        if x.dtype == torch.uint8:
            return x
        if not x.dtype.is_floating_point:
            raise TypeError(f"encode_images expects float images in [0, 1] or uint8, got dtype {x.dtype}")
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("encode_images got NaN or infinite pixel values")
        if lo < -0.02 or hi > 1.02:
            raise ValueError(
                f"encode_images expects images in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]. "
                f"Looks like normalised model inputs: undo the normalisation first "
                f"(e.g. semlens_widgets.lens.imagenet_unnormalize)"
            )
        return x

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own preprocessing, on tensors: ``x [n, 3, H, W]`` in [0, 1] (on any
        device) -> ``[n, 3, S, S]`` normalised, float32, on the same device.

        ``resize_mode="shortest"``: resize the shorter side to S (antialiased), centre crop;
        ``"longest"``: resize the longer side to S, pad centred with 0; ``"squash"``: resize to
        (S, S). Then subtract ``mean`` and divide by ``std``. Images already S x S are only
        normalised.
        """
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        x = x.float()
        th, tw = (self.image_size, self.image_size) if isinstance(self.image_size, int) else self.image_size
        h, w = x.shape[-2:]
        if (h, w) != (th, tw):
            mode = self.interpolation
            kw = {"antialias": True} if mode in ("bicubic", "bilinear") else {}
            if mode in ("bicubic", "bilinear"):
                kw["align_corners"] = False
            if self.resize_mode == "squash":
                x = F.interpolate(x, size=(th, tw), mode=mode, **kw)
            else:
                ratio_h, ratio_w = h / th, w / tw
                ratio = min(ratio_h, ratio_w) if self.resize_mode == "shortest" else max(ratio_h, ratio_w)
                nh, nw = max(1, round(h / ratio)), max(1, round(w / ratio))
                if (nh, nw) != (h, w):
                    x = F.interpolate(x, size=(nh, nw), mode=mode, **kw)
                # centre crop (shortest) or centre pad (longest); both via one padded slice
                pad_h, pad_w = max(th - nh, 0), max(tw - nw, 0)
                if pad_h or pad_w:
                    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
                hh, ww = x.shape[-2:]
                top, left = int(round((hh - th) / 2.0)), int(round((ww - tw) / 2.0))
                x = x[..., top : top + th, left : left + tw]
            if mode == "bicubic":
                x = x.clamp_(0.0, 1.0)  # bicubic overshoots; PIL clamps to uint8 as well
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_images(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Image embeddings (the encoder F of the semantic embedding).

        x: ``[n, 3, H, W]`` float in [0, 1] (or uint8 in [0, 255]; 1-channel images are
        repeated to RGB), on any device. Preprocessed with :meth:`preprocess`, encoded in
        batches of ``batch_size`` (default :attr:`batch_size`) under ``torch.inference_mode``
        (autocast on CUDA).
        Returns ``[n, d]`` float32, L2-normalised, on the CPU.
        """
        x = self._check_images(x)
        bs = self.batch_size if batch_size is None else self._check_batch_size(batch_size)
        out = []
        with torch.inference_mode(), self._autocast():
            for i in range(0, x.shape[0], bs):
                xb = self.preprocess(x[i : i + bs].to(self.device, non_blocking=True))
                feats = self._encode_image_fn(xb.to(self.input_dtype))
                out.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)

    # ------------------------------------------------------------------ text
    def encode_text(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        """Embeddings of raw strings (no templates): ``[n, d]`` float32, L2-normalised, CPU."""
        texts = _check_texts(texts, "encode_text")
        bs = self.batch_size if batch_size is None else self._check_batch_size(batch_size)
        out = []
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(texts), bs):
                feats = self._encode_text_fn(texts[i : i + bs])
                out.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)

    def encode_concepts(self, concepts: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """Concept embeddings (paper eq. 4, text probes): for each concept the mean over the
        prompt templates of the template embeddings, re-normalised.

        concepts: n strings; templates: override :attr:`templates` for this call.
        Returns ``[n, d]`` float32, L2-normalised, CPU.
        """
        concepts = _check_texts(concepts, "encode_concepts")
        tpl = self.templates if templates is None else _check_templates(templates)
        prompts = [t.format(c) for c in concepts for t in tpl]
        emb = self.encode_text(prompts).view(len(concepts), len(tpl), -1)
        return F.normalize(emb.mean(dim=1), dim=-1)

    def null_embedding(self) -> torch.Tensor:
        """The empty-template baseline (paper eq. 4, ``null``): every template filled with
        ``""``, embedded, averaged and re-normalised. Returns ``[d]`` float32 (cached)."""
        tpl = _check_templates(self.templates)
        if self._null is None or self._null[0] != tpl:
            prompts = [t.format("") for t in tpl]
            self._null = (tpl, F.normalize(self.encode_text(prompts).mean(dim=0), dim=-1))
        return self._null[1].clone()

    def to(self, device: str | torch.device) -> "FoundationModel":
        """Move the wrapped model to ``device`` (in place; returns self)."""
        dev = torch.device(device)
        if self.model is None:
            raise RuntimeError("this FoundationModel wraps plain callables; it cannot be moved")
        self.model.to(dev)
        self.device = dev
        self.autocast = (dev.type == "cuda") if self._autocast_pref is None else self._autocast_pref
        return self
