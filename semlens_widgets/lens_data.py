"""The dataset as a Lens reads it: checked once, fingerprinted, and read by sample index.

``model_inputs(indices)`` is what the model eats, ``images(indices)`` what a person sees (the
display transform of the model inputs). Items are a tensor ``[C, H, W]``, a tuple ``(x, y, ...)``
or a dict (``"image"``, ``"label"``), as in :mod:`semlens_widgets.kernels.data`.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from semlens_widgets.kernels.data import SAME_SIZE, split_batch
from semlens_widgets.lens_checks import is_int
from semlens_widgets.store import fingerprint, tensor_digest

__all__ = ["DataView", "callable_id"]


def callable_id(fn: Callable | None) -> str:
    """A stable id of a function or callable object (for fingerprints)."""
    if fn is None:
        return "identity"
    qual = getattr(fn, "__qualname__", None)
    if qual is not None and getattr(fn, "__module__", None) is not None:
        return f"{fn.__module__}.{qual}"
    return f"{type(fn).__module__}.{type(fn).__qualname__}:{fn!r}"


def _item_image(item: Any, index: int) -> torch.Tensor:
    x, _ = split_batch(item, what=f"dataset item {index}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"dataset item {index} has no image tensor (its image is a {type(x).__name__}); "
            "items must be a Tensor [C, H, W], a tuple (x, y, ...) or a dict with 'image'"
        )
    if x.dim() != 3:
        raise ValueError(
            f"dataset item {index} has an image tensor of shape {tuple(x.shape)} (rank {x.dim()}); "
            "expected rank 3, [C, H, W]"
        )
    return x


class DataView:
    """A map-style dataset and its display transform, read by sample index.

    dataset: ``__len__`` + ``__getitem__`` (not a DataLoader, not an IterableDataset, not empty);
    display_transform: ``[n, C, H, W]`` model inputs -> ``[n, 3, H, W]`` images in [0, 1] (same
    H, W), or None (identity; 1-channel inputs are repeated to RGB).
    All checks run in the constructor, on item 0.
    """

    def __init__(self, dataset: Any, display_transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        from torch.utils.data import DataLoader, IterableDataset

        if isinstance(dataset, DataLoader):
            raise TypeError(
                "Lens needs the dataset itself (map-style, indexable), not a DataLoader: pass "
                "loader.dataset and set batch_size= / num_workers= on the Lens"
            )
        if isinstance(dataset, IterableDataset) or not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"dataset must be map-style (with __len__ and __getitem__), got {type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError("the dataset is empty (len 0); the Lens needs at least one sample")
        if display_transform is not None and not callable(display_transform):
            raise TypeError(f"display_transform must be callable or None, got {type(display_transform).__name__}")
        self.dataset = dataset
        self.display_transform = display_transform
        x0 = _item_image(dataset[0], 0)
        if not x0.is_floating_point():
            raise TypeError(
                f"dataset item 0 has an image of dtype {x0.dtype}; the model eats floating-point images: "
                f"convert them in the dataset, e.g. torchvision.transforms.ToTensor() or "
                f"transforms.v2.ToDtype(torch.float32, scale=True) (values in [0, 1]); accepted: float32 "
                f"(float16, bfloat16 and float64 are cast to float32)"
            )
        self.input_shape: tuple[int, int, int] = tuple(x0.shape)  # (C, H, W) of the model inputs
        self._check_display(x0)
        self.display_id = callable_id(display_transform)
        self.fingerprint = self._fingerprint()

    def __len__(self) -> int:
        return len(self.dataset)

    def _check_display(self, x0: torch.Tensor) -> None:
        c, h, w = self.input_shape
        if self.display_transform is None:
            if c not in (1, 3):
                raise ValueError(
                    f"model inputs have {c} channels; pass display_transform= mapping them to "
                    f"RGB images [n, 3, H, W] in [0, 1]"
                )
            lo, hi = float(x0.min()), float(x0.max())
            if lo < -0.02 or hi > 1.02:
                warnings.warn(
                    f"dataset images have values in [{lo:.3g}, {hi:.3g}], not [0, 1]: they look "
                    f"normalised. Crops would be clamped; pass display_transform="
                    f"semlens_widgets.lens.imagenet_unnormalize (or your own inverse).",
                    stacklevel=4,
                )
            return
        out = self.display_transform(x0[None].float())
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != 1 or out.shape[1] != 3 \
                or tuple(out.shape[2:]) != (h, w):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"display_transform must map [n, {c}, {h}, {w}] model inputs to [n, 3, {h}, {w}] "
                f"images in [0, 1] (same size: crop boxes are in input pixels); got {shape}"
            )

    def _fingerprint(self) -> str:
        """Class, length and the full content of 8 evenly spaced items (image bytes and label)."""
        dataset = self.dataset
        n = len(dataset)
        picks = sorted(set(torch.linspace(0, n - 1, min(n, 8)).round().long().tolist()))
        parts: list[Any] = [type(dataset).__module__ + "." + type(dataset).__qualname__, n]
        for i in picks:
            x, y = split_batch(dataset[i], what=f"dataset item {i}")
            if isinstance(x, torch.Tensor) and tuple(x.shape) != self.input_shape:  # found early, not at run
                raise ValueError(f"dataset item {i} has an image of shape {tuple(x.shape)} but item 0 has "
                                 f"{self.input_shape}: {SAME_SIZE}")
            if isinstance(y, torch.Tensor):
                y = tensor_digest(y)
            elif not isinstance(y, (int, float, str, type(None))):
                y = repr(y)
            parts.append([i, tensor_digest(x) if isinstance(x, torch.Tensor) else repr(x), y])
        return fingerprint(*parts)

    def check_indices(self, indices: Any) -> torch.Tensor:
        """Sample indices as a LongTensor [n] on the CPU (an int is one index); out-of-range and
        non-integer indices raise."""
        if is_int(indices):
            indices = [int(indices)]
        try:
            idx = torch.as_tensor(indices)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"indices must be ints (list / LongTensor), got {type(indices).__name__}") from None
        if idx.numel() and (idx.is_floating_point() or idx.dtype == torch.bool):
            raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
        idx = idx.reshape(-1).long().cpu()
        n = len(self.dataset)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise IndexError(f"sample index {int(bad)} out of range: the dataset has {n} samples (0..{n - 1})")
        return idx

    def model_inputs(self, indices: Any) -> torch.Tensor:
        """What the model eats for these samples: ``[n, C, H, W]`` float32 on the CPU."""
        idx = self.check_indices(indices)
        c, h, w = self.input_shape
        if idx.numel() == 0:
            return torch.zeros(0, c, h, w)
        xs = [_item_image(self.dataset[i], i) for i in idx.tolist()]
        bad = next((i for i, x in zip(idx.tolist(), xs) if tuple(x.shape) != self.input_shape), None)
        if bad is not None:
            raise ValueError(
                f"dataset item {bad} has an image of shape {tuple(xs[idx.tolist().index(bad)].shape)} but item 0 "
                f"has {self.input_shape}: {SAME_SIZE}"
            )
        return torch.stack(xs).float().cpu()

    def images(self, indices: Any) -> torch.Tensor:
        """Display images ``[n, 3, H, W]`` in [0, 1] (float32, CPU): ``display_transform`` of
        the model inputs (default identity), clamped; gray inputs are repeated to RGB."""
        x = self.model_inputs(indices)
        if self.display_transform is not None and x.shape[0] > 0:
            x = self.display_transform(x).float()
        elif x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.clamp(0.0, 1.0).contiguous().cpu()
