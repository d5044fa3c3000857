"""Per-device settings of a Lens: the batch size when none is given, and the loader's pinned memory.

``Lens(..., batch_size=None)`` (the default) asks :func:`default_batch_size`:

- CPU (and any device without a memory query, e.g. MPS): :data:`CPU_BATCH` (64);
- CUDA: a probe measures the memory of one forward and backward pass of
  :data:`PROBE_SAMPLES` samples of the dataset's input shape (the crop step's CRP is the most
  memory-hungry use of the batch), and the batch is the largest power of two whose estimate
  fits in :data:`MEMORY_FRACTION` of the free memory, between :data:`MIN_BATCH` and
  :data:`MAX_BATCH` (:func:`batch_for_memory`).

The batch size does not enter any fingerprint: results are the same with any batch size, up to
float rounding (a stored run resumes only with the batch size it started with; see
``Lens(checkpoint_every=)``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["CPU_BATCH", "MIN_BATCH", "MAX_BATCH", "MEMORY_FRACTION", "PROBE_SAMPLES", "default_batch_size",
           "batch_for_memory", "pin_memory"]

CPU_BATCH = 64
MIN_BATCH = 16
MAX_BATCH = 512
MEMORY_FRACTION = 0.4
PROBE_SAMPLES = 4


def batch_for_memory(free_bytes: int, per_sample_bytes: float, *, fraction: float = MEMORY_FRACTION,
                     lo: int = MIN_BATCH, hi: int = MAX_BATCH) -> int:
    """The largest power of two ``b`` with ``b * per_sample_bytes <= fraction * free_bytes``,
    clamped to ``[lo, hi]``."""
    if per_sample_bytes <= 0:
        return hi
    fit = int(fraction * free_bytes / per_sample_bytes)
    b = lo
    while b * 2 <= min(fit, hi):
        b *= 2
    return max(lo, min(b, hi))


def _probe_bytes(model: nn.Module, input_shape: Sequence[int], device: torch.device) -> float:
    """Peak CUDA memory per sample of a forward + backward pass (gradient to the input, as CRP
    needs) of :data:`PROBE_SAMPLES` zero images ``[C, H, W]``."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x = torch.zeros(PROBE_SAMPLES, *input_shape, device=device, dtype=dtype, requires_grad=True)
    was = model.training
    model.eval()
    try:
        out = model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            out = getattr(out, "logits", None)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            torch.autograd.grad(out.float().sum(), x)
        peak = torch.cuda.max_memory_allocated(device) - base
    finally:
        model.train(was)
        del x
        torch.cuda.empty_cache()
    return peak / PROBE_SAMPLES


def default_batch_size(model: nn.Module, input_shape: Sequence[int], device: torch.device | str) -> int:
    """The batch size of ``Lens(batch_size=None)`` on ``device`` (see the module docstring)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    return batch_for_memory(free, _probe_bytes(model, input_shape, device))


def pin_memory(device: torch.device | str) -> bool:
    """Whether the collection loader pins its batches (page-locked host memory, so that the copy
    to the device is asynchronous): on CUDA devices."""
    return torch.device(device).type == "cuda"
