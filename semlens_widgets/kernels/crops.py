"""Concept-example crops (DESIGN eq. 1, the crop half): heatmaps, boxes, batched crops.

Two heatmap sources, both batched over n (image, component) pairs in one forward/backward:

- :func:`crp_heatmaps`: Concept Relevance Propagation (zennit-crp ``CondAttribution``) with
  the relevance started *locally* at the layer (``start_layer=layer``): the initial relevance
  is the layer's activation masked to component k of each image (condition
  ``{layer: [k]}``) -- for max pooling only at the neuron where the component peaks (its
  receptive field, zennit-crp's ``rf=True`` reference images) -- propagated to the input with
  the LRP composite; the heatmap is the input relevance summed over colour channels
  (``attr.heatmap``).
- :func:`activation_heatmaps`: the component's own spatial activation map, bilinearly
  upsampled to the input size (models without LRP rules, e.g. ViTs).

:func:`boxes_from_heatmaps` keeps the pixels whose *positive* heatmap value is at least
``rel_threshold`` (1 %) of the image's maximum and returns their bounding box; negative
relevance (evidence against the component) never enlarges a box. :func:`crop_resize` cuts
and resizes all boxes at once with ``torchvision.ops.roi_align``.

Layer names follow :mod:`semlens_widgets.kernels.collect` (``"name"``, ``"name@i"`` for the
i-th call of a reused module, ``"name[j]"`` for element j of a tuple output).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import POOLINGS, LayerCapture
from .lrp import lrp_context, make_composite

__all__ = [
    "crp_heatmaps",
    "activation_heatmaps",
    "boxes_from_heatmaps",
    "crop_resize",
    "component_maps",
    "MAX_PREFIX_TOKENS",
]

#: at most this many leading non-patch tokens (CLS, registers) in a token map
MAX_PREFIX_TOKENS = 16


# ----------------------------------------------------------------------------- validation


def _check_images(images: Any, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor [n, C, H, W], got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must be [n, C, H, W] (rank 4), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {images.dtype}")


def _check_components(components: Any, n: int) -> torch.Tensor:
    if not isinstance(components, torch.Tensor):
        components = torch.as_tensor(components)
    if components.dim() != 1 or components.shape[0] != n:
        raise ValueError(
            f"components must be a LongTensor [n] with one component per image (n={n}), got "
            f"shape {tuple(components.shape)}"
        )
    if components.is_floating_point() or components.dtype == torch.bool:
        raise TypeError(f"components must be integer component ids, got dtype {components.dtype}")
    if n and int(components.min()) < 0:
        raise ValueError(f"components must be >= 0, got {int(components.min())}")
    return components.long()


def _check_range(components: torch.Tensor, num: int, layer: str) -> None:
    if components.numel() and int(components.max()) >= num:
        raise ValueError(
            f"component {int(components.max())} does not exist in layer {layer!r}, which has "
            f"{num} components (accepted: 0 .. {num - 1})"
        )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _component_onehot(act: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Mask of ``act`` keeping component ``components[i]`` of image i.

    act: [n, C, *spatial] (channels at dim 1), [n, T, D] (tokens: components are D), [n, C].
    Returns a float mask of act's shape.
    """
    comps = components.to(act.device)
    if act.dim() == 3:  # tokens [n, T, D]
        onehot = F.one_hot(comps, act.shape[2]).to(act.dtype)  # [n, D]
        return onehot[:, None, :].expand_as(act)
    onehot = F.one_hot(comps, act.shape[1]).to(act.dtype)  # [n, C]
    return onehot.view(*onehot.shape, *([1] * (act.dim() - 2))).expand_as(act)


def _peak_onehot(start: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Mask of ``start`` keeping only the single position where component ``components[i]``
    of image i peaks (the neuron that max pooling selected the image with).

    start: [n, C, *spatial] or [n, T, D] (tokens); [n, C] has no positions (plain one-hot).
    """
    if start.dim() == 2:
        return _component_onehot(start, components)
    n = start.shape[0]
    rows = torch.arange(n, device=start.device)
    comps = components.to(start.device)
    if start.dim() == 3:  # tokens [n, T, D]: the peak token of feature k
        peak = start[rows, :, comps].argmax(dim=1)  # [n]
        mask = torch.zeros_like(start)
        mask[rows, peak, comps] = 1
        return mask
    maps = start[rows, comps].flatten(1)  # [n, h*w]
    peak = maps.argmax(dim=1)
    mask = torch.zeros_like(start)
    mask[rows, comps] = F.one_hot(peak, maps.shape[1]).to(start.dtype).view(n, *start.shape[2:])
    return mask


def _num_components(act: torch.Tensor) -> int:
    return int(act.shape[2] if act.dim() == 3 else act.shape[1])


# ----------------------------------------------------------------------------- CRP


@functools.lru_cache(maxsize=None)
def _crp_attribution_class():
    from crp.attribution import CondAttribution

    class _LayerSpecCondAttribution(CondAttribution):
        """CondAttribution that records layers named ``"name@i"`` / ``"name[j]"`` (the i-th
        call of a reused module / element j of a tuple output) through :class:`LayerCapture`;
        plain names behave exactly as in zennit-crp."""

        capture: LayerCapture | None = None

        def _append_recording_layer_hooks(self, record_l_names, start_layer, cond_l_names):
            names = list(dict.fromkeys([*record_l_names, *cond_l_names, *([start_layer] if start_layer else [])]))
            layer_out: dict[str, torch.Tensor] = {}
            capture = LayerCapture(self.model, names, outputs=layer_out, retain_grad=True)
            capture.__enter__()
            self.capture = capture
            return [_CaptureHandle(capture)], layer_out

    return _LayerSpecCondAttribution


class _CaptureHandle:
    def __init__(self, capture: LayerCapture):
        self.capture = capture

    def remove(self) -> None:
        self.capture.__exit__(None, None, None)


def component_mask(batch_id: int, concept_ids: list[int], layer_name: str | None = None):
    """CRP ``mask_map`` (like ``ChannelConcept.mask``): keep only the relevance of
    ``concept_ids`` of sample ``batch_id``; the component axis is 1, or the last one for token
    maps ``[B, T, D]``. Shared by the crops here and the relevance kernel."""
    ids = list(concept_ids)

    def mask_fn(grad: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros_like(grad[batch_id])
        if grad.dim() == 3:
            keep[:, ids] = 1
        else:
            keep[ids] = 1
        grad[batch_id] = grad[batch_id] * keep
        return grad

    return mask_fn


def crp_heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    components: torch.Tensor,
    composite: Any = None,
    *,
    pooling: str = "max",
    peak: bool | None = None,
) -> torch.Tensor:
    """CRP heatmaps of component ``components[i]`` of ``layer`` on image i (DESIGN eq. 1 crop).

    Relevance starts locally at ``layer`` (``CondAttribution(..., start_layer=layer)``): the
    initial relevance of image i is the positive part of the layer's activation (``|a|`` for
    the abs poolings), masked to component ``components[i]`` (condition ``{layer: [k]}``), and
    is propagated to the input with the LRP rules of ``composite``. Starting from the positive
    part explains what made the component fire (what put the image into its top-m); on
    post-ReLU layers it is the activation itself, on pre-activation layers the negative
    surround would otherwise swamp the heatmap.

    ``peak`` (default: True for the ``max``/``absmax`` poolings, False for the mean poolings)
    keeps only the single neuron where the component's map peaks: that neuron's value is what
    max pooling ranked the image by, and its relevance stays inside its receptive field, so the
    crop shows the part of the image that made the component fire rather than everything
    the channel responds to anywhere in the image (zennit-crp's ``rf=True`` reference images,
    which the SemanticLens reference implementation crops). Mean pooling ranks by the whole
    map, so there the whole map starts the relevance. With
    :func:`~semlens_widgets.kernels.lrp.make_composite`'s default (``zero_bias=True``),
    ``heatmap[i].sum()`` equals the summed initial relevance (conservation), up to the
    epsilon stabiliser.

    Args:
        model: the network (its eval/train mode and ``requires_grad`` flags are restored).
        images: ``[n, C, H, W]`` float, the model's input (moved to the model's device).
        layer: a layer name (``"name"``, ``"name@i"``, ``"name[j]"``).
        components: LongTensor ``[n]``, the component of each image (channel for conv maps,
            feature for token maps ``[n, T, D]``, unit for linear outputs).
        composite: a zennit composite; None builds ``make_composite(model)``.
        pooling: the pooling the examples were selected with (see above).
        peak: start from the peak neuron only (see above); None picks by ``pooling``.

    Returns:
        FloatTensor ``[n, H, W]`` on the CPU: input relevance summed over channels (signed).
    """
    _check_images(images)
    n = images.shape[0]
    components = _check_components(components, n)
    if n == 0:
        return torch.zeros(0, images.shape[2], images.shape[3])
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str), got {layer!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; accepted: {list(POOLINGS)}")
    if peak is None:
        peak = pooling in ("max", "absmax")
    elif not isinstance(peak, bool):
        raise ValueError(f"peak must be True, False or None, got {peak!r}")
    if composite is None:
        composite = make_composite(model)
    device = _model_device(model)
    attribution_cls = _crp_attribution_class()

    def init_rel(activation: torch.Tensor) -> torch.Tensor:
        # called by crp after the forward pass, before the backward pass
        attribution.capture.check()
        _check_range(components, _num_components(activation), layer)
        start = activation.abs() if pooling.startswith("abs") else activation.clamp(min=0)
        return start * (_peak_onehot(start, components) if peak else _component_onehot(activation, components))

    conditions = [{layer: [k]} for k in components.tolist()]
    with lrp_context(model), torch.inference_mode(False), torch.enable_grad():
        attribution = attribution_cls(model, device=device, no_param_grad=True)
        data = images.detach().clone().to(device=device, dtype=torch.float32).requires_grad_(True)
        try:
            result = attribution(
                data,
                conditions,
                composite,
                start_layer=layer,
                init_rel=init_rel,
                mask_map=component_mask,
            )
        finally:
            if attribution.capture is not None:
                attribution.capture.__exit__(None, None, None)
    return result.heatmap.detach().float().cpu()


# ----------------------------------------------------------------------------- activation maps


def component_maps(acts: torch.Tensor, components: torch.Tensor, layer: str = "layer") -> torch.Tensor:
    """The spatial map of component ``components[i]`` in ``acts[i]``.

    Args:
        acts: ``[n, C, h, w]`` conv maps, ``[n, T, D]`` token maps or ``[n, C]`` linear outputs.
            For tokens, the first ``p = T - floor(sqrt(T))**2`` tokens are taken as prefix
            tokens (CLS, registers; ``p <= MAX_PREFIX_TOKENS``) and dropped, the remaining
            ``g*g`` patch tokens are reshaped row-major to a ``g x g`` grid (square inputs).
            A linear output has no spatial extent: its map is the activation, constant over a
            ``1 x 1`` grid.
        components: LongTensor ``[n]``.

    Returns:
        ``[n, h, w]`` (``[n, g, g]`` for tokens, ``[n, 1, 1]`` for linear outputs).
    """
    n = acts.shape[0]
    components = _check_components(components, n).to(acts.device)
    _check_range(components, _num_components(acts) if acts.dim() >= 2 else 0, layer)
    rows = torch.arange(n, device=acts.device)
    if acts.dim() == 4:
        return acts[rows, components]
    if acts.dim() == 3:
        tokens = acts[rows, :, components]  # [n, T]
        t = tokens.shape[1]
        g = math.isqrt(t)
        prefix = t - g * g
        if prefix > MAX_PREFIX_TOKENS or g == 0:
            raise ValueError(
                f"layer {layer!r} has {t} tokens, which is not a square grid of patch tokens plus "
                f"at most {MAX_PREFIX_TOKENS} prefix (CLS/register) tokens; activation heatmaps "
                "need square patch grids"
            )
        return tokens[:, prefix:].reshape(n, g, g)
    if acts.dim() == 2:
        return acts[rows, components].view(n, 1, 1)
    raise ValueError(
        f"layer {layer!r} has outputs of shape {tuple(acts.shape)}; activation heatmaps accept "
        "[n, C, h, w], [n, T, D] or [n, C]"
    )


def activation_heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    components: torch.Tensor,
    pooling: str = "max",
) -> torch.Tensor:
    """Upsampled activation maps of component ``components[i]`` on image i (DESIGN eq. 1 crop,
    for models without LRP rules).

    Args:
        model: the network (run in eval mode under ``torch.inference_mode``; mode restored).
        images: ``[n, C, H, W]`` model inputs.
        layer: a layer name (``"name"``, ``"name@i"``, ``"name[j]"``).
        components: LongTensor ``[n]``.
        pooling: the pooling the examples were selected with; ``"absmax"``/``"absmean"`` use
            ``|map|`` (the magnitude drove the selection), the others the signed map.

    Returns:
        FloatTensor ``[n, H, W]`` on the CPU: the component map (see :func:`component_maps`)
        bilinearly upsampled to the input size. A linear layer gives a constant map.
    """
    _check_images(images)
    n, _, height, width = images.shape
    components = _check_components(components, n)
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; accepted: {list(POOLINGS)}")
    if n == 0:
        return torch.zeros(0, height, width)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), LayerCapture(model, [layer]) as capture:
            model(images.to(device))
            capture.check()
            acts = capture.outputs[layer]
            maps = component_maps(acts, components, layer).float()  # [n, h, w]
    finally:
        model.train(was_training)
    if pooling.startswith("abs"):
        maps = maps.abs()
    maps = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return maps.cpu()


# ----------------------------------------------------------------------------- boxes and crops


def boxes_from_heatmaps(heatmaps: torch.Tensor, rel_threshold: float = 0.01) -> torch.Tensor:
    """Bounding boxes of the pixels with heatmap >= ``rel_threshold`` x max (DESIGN eq. 1 crop).

    Only the positive part counts: pixel (y, x) of image i is kept when
    ``heatmaps[i, y, x] > 0`` and ``heatmaps[i, y, x] >= rel_threshold * heatmaps[i].max()``.
    An image without positive values (all-zero or all-negative heatmap) gets the full box.
    Vectorised over n.

    Args:
        heatmaps: ``[n, H, W]`` float.
        rel_threshold: in ``[0, 1]``; the paper's 1 % is 0.01.

    Returns:
        LongTensor ``[n, 4]`` ``(x0, y0, x1, y1)`` with x1, y1 exclusive (``image[:, y0:y1,
        x0:x1]`` is the crop), on ``heatmaps``' device.
    """
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.dim() != 3:
        shape = tuple(heatmaps.shape) if isinstance(heatmaps, torch.Tensor) else type(heatmaps).__name__
        raise ValueError(f"heatmaps must be a Tensor [n, H, W], got {shape}")
    if isinstance(rel_threshold, bool) or not isinstance(rel_threshold, (int, float)) or not 0.0 <= rel_threshold <= 1.0:
        raise ValueError(f"rel_threshold must be a number in [0, 1], got {rel_threshold!r}")
    n, height, width = heatmaps.shape
    pos = heatmaps.float().clamp(min=0)
    peak = pos.flatten(1).amax(dim=1) if n else pos.new_zeros(0)  # [n]
    keep = (pos > 0) & (pos >= rel_threshold * peak[:, None, None])  # [n, H, W]
    rows = keep.any(dim=2)  # [n, H]
    cols = keep.any(dim=1)  # [n, W]
    # first / last True via argmax on int (argmax returns the first maximum)
    y0 = rows.int().argmax(dim=1)
    y1 = height - rows.flip(1).int().argmax(dim=1)
    x0 = cols.int().argmax(dim=1)
    x1 = width - cols.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).long()
    full = torch.tensor([0, 0, width, height], dtype=torch.long, device=heatmaps.device)
    empty = ~(peak > 0)
    return torch.where(empty[:, None], full.expand(n, 4), boxes)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut box i out of image i and resize it to ``size x size``, all at once (roi_align).

    Args:
        images: ``[n, C, H, W]`` float (e.g. in [0, 1]).
        boxes: LongTensor ``[n, 4]`` ``(x0, y0, x1, y1)``, x1/y1 exclusive, within the image
            and non-empty.
        size: output side length (>= 1).

    Returns:
        ``[n, C, size, size]`` float32 on ``images``' device. Bilinear sampling at the pixel
        centres of the output grid (``aligned=True``), averaging ``ceil(box/size)`` samples per
        output pixel when shrinking; a full-image box with ``size == H == W`` returns the image.
        The aspect ratio of the box is not kept (the crop is stretched to a square).
    """
    from torchvision.ops import roi_align

    _check_images(images)
    n, _, height, width = images.shape
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape != (n, 4):
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a Tensor [n, 4] = [{n}, 4] (x0, y0, x1, y1), got {shape}")
    if n == 0:
        return images.new_zeros(0, images.shape[1], size, size, dtype=torch.float32)
    b = boxes.long()
    bad = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > width) | (b[:, 3] > height) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"box {i} = {b[i].tolist()} is not a non-empty (x0, y0, x1, y1) box inside a "
            f"{width}x{height} image (need 0 <= x0 < x1 <= {width}, 0 <= y0 < y1 <= {height})"
        )
    rois = torch.cat(
        [torch.arange(n, device=images.device, dtype=torch.float32)[:, None], b.to(images.device, torch.float32)],
        dim=1,
    )  # [n, 5] (batch index, x0, y0, x1, y1)
    return roi_align(images.float(), rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
