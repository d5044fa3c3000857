"""The demo world's two models: a small CNN classifier and a small CLIP in open_clip's format.

``DemoCNN`` is a plain ``nn.Sequential`` of named Conv/BN/ReLU blocks (``block1`` .. ``block4``),
so that zennit's ``SequentialMergeBatchNorm`` canonizer and CRP apply, and every ReLU module is
used once per forward. It eats images in [0, 1] directly (no normalisation layer).

The CLIP is an ordinary open_clip ``CLIP`` described by ``semlens-demo-clip.json`` (registered
with ``open_clip.add_model_config`` by :func:`register_clip_config`) and loaded through
``open_clip.create_model(CLIP_CONFIG_NAME, pretrained=<local .safetensors>)``.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "DemoCNN",
    "CLIP_CONFIG_NAME",
    "CLIP_CONFIG_PATH",
    "WEIGHTS_DIR",
    "CLASSIFIER_WEIGHTS",
    "CLIP_WEIGHTS",
    "register_clip_config",
    "load_classifier",
    "load_fm",
    "DEMO_TEMPLATES",
]

_HERE = Path(__file__).resolve().parent
CLIP_CONFIG_NAME = "semlens-demo-clip"
CLIP_CONFIG_PATH = _HERE / f"{CLIP_CONFIG_NAME}.json"
WEIGHTS_DIR = _HERE / "weights"
CLASSIFIER_WEIGHTS = WEIGHTS_DIR / "classifier.safetensors"
CLIP_WEIGHTS = WEIGHTS_DIR / "clip.safetensors"

#: prompt templates the demo CLIP was trained with (pass as FoundationModel templates).
DEMO_TEMPLATES: tuple[str, ...] = ("{}", "a picture with {}", "an image showing {}")


class DemoCNN(nn.Sequential):
    """Small CNN for 64x64 images: 4 blocks Conv3x3-BN-ReLU(-MaxPool), global max pool, fc.

    Named layers: ``block1`` [B, 16, 32, 32], ``block2`` [B, 32, 16, 16], ``block3``
    [B, 64, 8, 8], ``block4`` [B, 128, 8, 8] (block1 has a stride-2 conv, blocks 2-3 a 2x2 max pool), ``fc`` [B, classes].
    About 100k parameters and 16M multiply-adds per image for the default widths: small enough
    that CRP crops for all 192 components of block3 + block4 take seconds on a laptop CPU.
    """

    def __init__(self, num_classes: int = 8, widths: tuple[int, ...] = (16, 32, 64, 128)):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        c_in = 3
        for i, w in enumerate(widths, start=1):
            block: "OrderedDict[str, nn.Module]" = OrderedDict(
                # the first conv is strided: 64x64 -> 32x32 at once (cheap on a CPU)
                conv=nn.Conv2d(c_in, w, kernel_size=3, padding=1, stride=2 if i == 1 else 1),
                bn=nn.BatchNorm2d(w),
                relu=nn.ReLU(),
            )
            if 1 < i < len(widths):
                block["pool"] = nn.MaxPool2d(2)
            layers[f"block{i}"] = nn.Sequential(block)
            c_in = w
        # global max pool: "is there a star anywhere", robust to clutter and position
        layers["pool"] = nn.AdaptiveMaxPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(c_in, num_classes)
        super().__init__(layers)
        self.num_classes = num_classes
        self.widths = tuple(widths)


def register_clip_config() -> str:
    """Register the demo CLIP's config with open_clip (idempotent); returns its name."""
    import open_clip

    if CLIP_CONFIG_NAME not in open_clip.list_models():
        open_clip.add_model_config(CLIP_CONFIG_PATH)
    return CLIP_CONFIG_NAME


def load_classifier(path: str | Path = CLASSIFIER_WEIGHTS, device: str = "cpu") -> DemoCNN:
    """The shipped classifier in eval mode (float32), from a safetensors file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"classifier weights not found at {path}; regenerate them with `python -m semlens_widgets.demo.train`"
        )
    state = load_file(str(path))
    model = DemoCNN()
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval()


def load_fm(path: str | Path = CLIP_WEIGHTS, device: str = "cpu", batch_size: int = 256):
    """The demo CLIP as a :class:`~semlens_widgets.foundation.FoundationModel`, through the
    real loading path: ``FoundationModel.open_clip("semlens-demo-clip", pretrained=<.safetensors>)``.

    batch_size: images per encoder call (64x64 inputs: batches of 256 encode ~2.5x faster per
    image than open_clip-sized batches of 64).
    """
    from semlens_widgets.foundation import FoundationModel

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"demo CLIP weights not found at {path}; regenerate with `python -m semlens_widgets.demo.train`"
        )
    return FoundationModel.open_clip(register_clip_config(), pretrained=str(path), device=device,
                                     templates=DEMO_TEMPLATES, batch_size=batch_size)
