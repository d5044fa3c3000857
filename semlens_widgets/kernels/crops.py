"""Concept-example crops (paper: concept examples, the crop): heatmaps, boxes, batched crops.

Two heatmap sources, both batched over n (image, component) pairs in one forward/backward:

- :func:`crp_heatmaps`: Concept Relevance Propagation with the relevance started *locally* at
  the layer (zennit-crp's ``CondAttribution(start_layer=layer)``, condition ``{layer: [k]}``):
  the initial relevance is the layer's activation masked to component k of each image -- for
  max pooling only at the neuron where the component peaks (its receptive field, zennit-crp's
  ``rf=True`` reference images) -- propagated to the input with the LRP composite
  (:mod:`.lrp`); the forward pass stops at the layer; the heatmap is the input relevance summed
  over colour channels.
- :func:`activation_heatmaps`: the component's own spatial activation map, bilinearly
  upsampled to the input size (models without LRP rules, e.g. ViTs).

:func:`boxes_from_heatmaps` turns heatmaps into boxes by one of :data:`CROP_RULES`: the
paper's (positive heatmap >= 1 % of the maximum), zennit-crp's (Gaussian smoothing, >= 10 %
of the smoothed maximum), or zennit-crp's restricted to the connected region of the peak (the
Lens's default, ``lens_pipeline.CROP_RULE``). :func:`crop_resize` cuts and resizes all boxes at once with
``torchvision.ops.roi_align``.

Layer names follow :mod:`semlens_widgets.kernels.collect` (``"name"``, ``"name@i"`` for the
i-th call of a reused module, ``"name[j]"`` for element j of a tuple output).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import POOLINGS, LayerCapture, check_saes, parse_layer
from .lrp import component_start, resolve_composite, start_relevance

__all__ = [
    "crp_heatmaps",
    "activation_heatmaps",
    "activation_levels",
    "boxes_from_heatmaps",
    "crop_resize",
    "CROP_RULES",
    "REGION_GRID",
    "box_area",
    "zennit_crp_kernel_size",
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


def _num_components(act: torch.Tensor) -> int:
    return int(act.shape[2] if act.dim() == 3 else act.shape[1])


# ----------------------------------------------------------------------------- CRP


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
    image_index: torch.Tensor | None = None,
    saes: dict[str, nn.Module] | None = None,
    return_start: bool = False,
    check_layer: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """CRP heatmaps of component ``components[i]`` of ``layer`` on image i (paper: concept examples,
    the crop).

    Relevance starts locally at ``layer`` (zennit-crp ``CondAttribution(...,
    start_layer=layer)`` with condition ``{layer: [k]}``): the initial relevance of image i is
    the positive part of the layer's activation (``|a|`` for the abs poolings) masked to
    component ``components[i]`` (:func:`~semlens_widgets.kernels.lrp.component_start`), and is
    propagated to the input with the LRP rules of ``composite``. The forward pass stops at
    ``layer`` (:func:`~semlens_widgets.kernels.lrp.start_relevance`): a local start needs
    nothing above it. Starting from the positive part explains what made the component fire
    (what put the image into its top-m); on post-ReLU layers it is the activation itself, on
    pre-activation layers the negative surround would otherwise swamp the heatmap.

    ``peak`` (default: True for the ``max``/``absmax`` poolings, False for the mean poolings)
    keeps only the single neuron where the component's map peaks: that neuron's value is what
    max pooling ranked the image by, and its relevance stays inside its receptive field, so the
    crop shows the part of the image that made the component fire rather than everything
    the channel responds to anywhere in the image (zennit-crp's ``rf=True`` reference images,
    which the SemanticLens reference implementation crops). Mean pooling ranks by the whole
    map, so there the whole map starts the relevance.

    Conservation: with the default composite (:func:`~semlens_widgets.kernels.lrp.resolve_composite`)
    ``heatmap[i].sum()`` equals the summed initial relevance up to the epsilon stabilisers and
    sums of opposite sign (measured: median 0.99-1.00 on EfficientNet-Lite0 and random-weight
    ResNets / VGG / EfficientNets / MobileNetV3 / ConvNeXt, see
    :func:`~semlens_widgets.kernels.lrp.conservation`); a user composite may lose relevance
    (stock z+ at bias-only units), and AttnLRP's rules on ViTs do not conserve it reliably.
    ``return_start=True`` also returns each start's summed initial relevance, so the ratio
    ``heat.sum((1, 2)) / start`` is at hand.

    Args:
        model: the network (its eval/train mode and ``requires_grad`` flags are restored).
        images: ``[n, C, H, W]`` float, the model's input (moved to the model's device).
        layer: a layer name (``"name"``, ``"name@i"``, ``"name[j]"``).
        components: LongTensor ``[n]``, the component of each image (channel for conv maps,
            feature for token maps ``[n, T, D]``, unit for linear outputs).
        composite: a zennit composite; None builds ``resolve_composite(model)`` (traced on
            ``images``).
        pooling: the pooling the examples were selected with (see above).
        peak: start from the peak neuron only (see above); None picks by ``pooling``.
        image_index: None, or LongTensor ``[n]``: ``images`` are distinct inputs ``[u, C, H,
            W]`` and heatmap i is of component ``components[i]`` on ``images[image_index[i]]``;
            each distinct image then runs forward once and its components share that pass
            (:func:`~semlens_widgets.kernels.lrp.start_relevance`). Same heatmaps, less work
            when images are examples of several components (the Lens's sorted batches).
        saes: ``{"LAYER": sae}`` for an SAE layer ``"LAYER:sae"``: the start is the latent's
            (as above, on the latents), moved onto LAYER's output through the encoder
            (``sae.input_relevance``, the epsilon rule of its linear map) and propagated from
            there.
        return_start: also return the start relevance of each heatmap (see above).
        check_layer: first run one image through the whole model, so that a plain name of a
            module called several times is refused rather than read at its first call
            (:func:`~semlens_widgets.kernels.lrp.start_relevance`); False when the name is known
            to be fine (the Lens checks its layers once).

    Returns:
        FloatTensor ``[n, H, W]`` on the model's device: input relevance summed over channels
        (signed); with ``return_start`` the pair ``(heatmaps, start [n])``, ``start[i]`` the sum
        of the initial relevance of heatmap i (for an SAE latent: on the latents).
    """
    _check_images(images)
    if image_index is not None:
        image_index = torch.as_tensor(image_index)
        if image_index.dim() != 1 or image_index.is_floating_point() or (
            image_index.numel() and (int(image_index.min()) < 0 or int(image_index.max()) >= images.shape[0])
        ):
            raise ValueError(
                f"image_index must be a LongTensor [n] with values in [0, {images.shape[0]}), got {image_index!r}"
            )
        n = image_index.shape[0]
    else:
        n = images.shape[0]
    components = _check_components(components, n)
    if n == 0:
        empty = torch.zeros(0, images.shape[2], images.shape[3], device=_model_device(model))
        return (empty, empty.new_zeros(0)) if return_start else empty
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str), got {layer!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; accepted: {list(POOLINGS)}")
    if peak is None:
        peak = pooling in ("max", "absmax")
    elif not isinstance(peak, bool):
        raise ValueError(f"peak must be True, False or None, got {peak!r}")
    if composite is None:
        composite = resolve_composite(model, example_input=images[:2])

    spec = parse_layer(layer)
    sae = check_saes(saes).get(spec.base) if spec.sae else None
    if spec.sae and sae is None:
        raise ValueError(f"layer {layer!r} needs saes={{{spec.base!r}: sae}}")

    starts: list[torch.Tensor] = []  # the summed start of each init call ([n_call])

    def init_for(comps: torch.Tensor):
        def init(activation: torch.Tensor) -> torch.Tensor:
            latents = activation if sae is None else sae(activation)
            _check_range(comps, _num_components(latents), layer)
            start = component_start(latents, comps, absolute=pooling.startswith("abs"), peak=peak)
            starts.append(start.flatten(1).sum(1).float())
            return start if sae is None else sae.input_relevance(activation, start)

        return init

    if image_index is None:
        heat, _ = start_relevance(model, images, spec.base, init_for(components), composite, check_layer=check_layer)
        heat = heat.sum(1).float()
        return (heat, starts[-1]) if return_start else heat
    device = _model_device(model)
    out = torch.empty(n, images.shape[2], images.shape[3], device=device)
    start_out = torch.empty(n, device=device)
    for g, (rows, imgs) in enumerate(_balanced_groups(image_index)):
        sub_index = torch.searchsorted(imgs, image_index[rows].long().cpu())
        heat, _ = start_relevance(model, images[imgs.to(images.device)], spec.base, init_for(components[rows]),
                                  composite, image_index=sub_index, check_layer=check_layer and g == 0)
        rows_d = rows.to(device)
        out[rows_d] = heat.sum(1).float()
        start_out[rows_d] = starts[-1].to(device)
    return (out, start_out) if return_start else out


#: an image joins a group of shared forward passes when its number of starts is at least this
#: share of the group's largest (the rest of the group's backward rounds is wasted on it)
GROUP_FILL = 0.8


def _balanced_groups(image_index: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split (image, component) pairs into groups of images with similar numbers of pairs.

    A shared forward pass runs one backward pass per round (the r-th pair of every image), and
    an image without an r-th pair still costs its share of that pass. An image joins a group
    only if its count is at least ``GROUP_FILL`` of the group's largest, which bounds the waste
    at 20 % (images with 1 and 2 pairs, the common case when components rarely share an image,
    go to separate groups: in one group the second round would cost as much as the first).
    Splitting costs no forward work (each image is still in one group). Returns
    ``[(rows [k], images [u_g])]`` with ``images`` sorted."""
    idx = image_index.long().cpu()
    counts = torch.bincount(idx)
    present = (counts > 0).nonzero().squeeze(1)
    order = present[torch.argsort(counts[present], descending=True, stable=True)]
    groups: list[list[int]] = []
    current: list[int] = []
    top = 0
    for img in order.tolist():
        c = int(counts[img])
        if current and c < GROUP_FILL * top:
            groups.append(current)
            current = []
        if not current:
            top = c
        current.append(img)
    if current:
        groups.append(current)
    out = []
    for imgs in groups:
        imgs_t = torch.tensor(sorted(imgs), dtype=torch.long)
        rows = torch.isin(idx, imgs_t).nonzero().squeeze(1)
        out.append((rows, imgs_t))
    return out


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


def _layer_output(model: nn.Module, images: torch.Tensor, layer: str,
                  saes: dict[str, nn.Module] | None) -> torch.Tensor:
    """The raw output of ``layer`` on ``images`` (eval and inference mode; the mode restored)."""
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), LayerCapture(model, [layer], saes=saes) as capture:
            model(images.to(device))
            capture.check()
            return capture.outputs[layer]
    finally:
        model.train(was_training)


def activation_heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    components: torch.Tensor,
    pooling: str = "max",
    saes: dict[str, nn.Module] | None = None,
) -> torch.Tensor:
    """Upsampled activation maps of component ``components[i]`` on image i (paper: concept
    examples, the crop, for models without LRP rules).

    Args:
        model: the network (run in eval mode under ``torch.inference_mode``; mode restored).
        images: ``[n, C, H, W]`` model inputs.
        layer: a layer name (``"name"``, ``"name@i"``, ``"name[j]"``).
        components: LongTensor ``[n]``.
        pooling: the pooling the examples were selected with; ``"absmax"``/``"absmean"`` use
            ``|map|`` (the magnitude drove the selection), the others the signed map.
        saes: ``{"LAYER": sae}`` for an SAE layer ``"LAYER:sae"`` (the maps of its latents).

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
    acts = _layer_output(model, images, layer, saes)
    maps = component_maps(acts, components, layer).float()  # [n, h, w]
    if pooling.startswith("abs"):
        maps = maps.abs()
    maps = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return maps.cpu()


def activation_levels(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    pooling: str = "max",
    saes: dict[str, nn.Module] | None = None,
) -> torch.Tensor:
    """The typical level of every component's activation map: the median over all positions of
    its maps (:func:`component_maps`, ``|map|`` for the abs poolings) on ``images``, e.g. a fixed
    sample of the dataset. An activation crop is measured from this level, not from 0: without a
    ReLU (raw convs, BatchNorm outputs, tokens) 0 is an arbitrary point of the range.

    Args: as :func:`activation_heatmaps` (``images [n, C, H, W]`` model inputs).
    Returns: FloatTensor ``[C]`` on the CPU.
    """
    _check_images(images)
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; accepted: {list(POOLINGS)}")
    if images.shape[0] == 0:
        raise ValueError("activation_levels needs at least one image")
    acts = _layer_output(model, images, layer, saes).float()
    g = component_maps(acts[:1], torch.zeros(1, dtype=torch.long), layer)  # checks the layout: [1, h, w]
    if acts.dim() == 4:
        values = acts.transpose(0, 1).flatten(1)  # [C, n*h*w]
    elif acts.dim() == 3:  # tokens: the patch tokens only (the same as component_maps)
        values = acts[:, acts.shape[1] - g.shape[1] * g.shape[2]:].permute(2, 0, 1).flatten(1)
    else:
        values = acts.t()
    if pooling.startswith("abs"):
        values = values.abs()
    return values.median(dim=1).values.cpu()


# ----------------------------------------------------------------------------- boxes and crops


def _box_of(keep: torch.Tensor) -> torch.Tensor:
    """Bounding box ``[n, 4]`` (x0, y0, x1, y1; x1, y1 exclusive) of the True pixels of
    ``keep [n, H, W]``; an image without True pixels gets the full box. Vectorised over n."""
    n, height, width = keep.shape
    rows = keep.any(dim=2)  # [n, H]
    cols = keep.any(dim=1)  # [n, W]
    # first / last True via argmax on int (argmax returns the first maximum)
    y0 = rows.int().argmax(dim=1)
    y1 = height - rows.flip(1).int().argmax(dim=1)
    x0 = cols.int().argmax(dim=1)
    x1 = width - cols.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).long()
    full = torch.tensor([0, 0, width, height], dtype=torch.long, device=keep.device)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], full.expand(n, 4), boxes)


#: crop rules of :func:`boxes_from_heatmaps` -> their default relative threshold
CROP_RULES = {"threshold": 0.01, "zennit_crp": 0.1, "peak_region": 0.1}

#: ``"peak_region"`` follows connections on a grid of about this many cells per side (gaps
#: narrower than one cell, ``min(H, W) / REGION_GRID`` px, are bridged)
REGION_GRID = 56


def _region_of_peak(keep: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """The connected part of ``keep [n, H, W]`` (bool) that holds the maximum of ``heat [n, H, W]``
    (8-connected on a grid of about :data:`REGION_GRID` cells per side: gaps narrower than a
    cell are bridged). Runs on ``keep``'s device; an image whose peak is not kept keeps nothing."""
    n, height, width = keep.shape
    f = max(1, round(min(height, width) / REGION_GRID))
    coarse = F.max_pool2d(keep[:, None].float(), f, f, ceil_mode=True)  # [n, 1, h, w]
    h, w = coarse.shape[2:]
    peak = heat.flatten(1).argmax(dim=1)  # [n]
    rows = torch.arange(n, device=keep.device)
    region = torch.zeros_like(coarse)
    region[rows, 0, (peak // width) // f, (peak % width) // f] = 1
    region = region * coarse
    for step in range(h * w):  # the flood fill ends long before: each step grows every region by a cell
        grown = F.max_pool2d(region, 3, 1, 1) * coarse
        if step % 4 == 3 and torch.equal(grown, region):
            break
        region = grown
    full = region.repeat_interleave(f, 2).repeat_interleave(f, 3)[:, 0, :height, :width] > 0
    return keep & full


def zennit_crp_kernel_size(height: int, width: int) -> int:
    """zennit-crp's Gaussian kernel (19 px, made for 224 px images) scaled to the image: the odd
    integer nearest ``19 * min(H, W) / 224``, at least 3."""
    k = int(round(19 * min(height, width) / 224))
    k = max(3, k)
    return k if k % 2 == 1 else k + 1


def boxes_from_heatmaps(
    heatmaps: torch.Tensor,
    rel_threshold: float | None = None,
    *,
    crop_rule: str = "threshold",
    kernel_size: int | None = None,
    baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop boxes from heatmaps (paper: concept examples, the crop), by one of the crop rules.

    - ``crop_rule="threshold"`` (the paper's rule): pixel (y, x) of image i is kept when
      ``heatmaps[i, y, x] > 0`` and ``>= rel_threshold * heatmaps[i].max()`` (default 1 %).
      Only the positive part counts: negative relevance (evidence against the component) never
      enlarges a box.
    - ``crop_rule="zennit_crp"`` (zennit-crp's reference images, ``crp.image.vis_opaque_img``
      with ``rf=True``): the heatmap is smoothed with a Gaussian (``kernel_size``, default
      :func:`zennit_crp_kernel_size`: 19 px at 224 px, torchvision's default sigma), divided
      by its maximum, and the pixels above ``rel_threshold`` (default 10 %) are kept. One
      difference: zennit-crp's slice drops the last row and column of its box; here the box
      includes them.
    - ``crop_rule="peak_region"``: as ``"zennit_crp"``, then only the connected region of kept
      pixels that holds the smoothed heatmap's peak (8-connected, gaps narrower than
      ``min(H, W) / 56`` px bridged). The relevance of a peak-neuron start is one blob
      around what made the component fire; distant specks above the threshold (texture,
      edges elsewhere) would stretch the bounding box over the background.

    The box is the bounding box of the kept pixels; an image with none (all-zero or
    all-negative heatmap) gets the full box.

    Args:
        heatmaps: ``[n, H, W]`` float.
        rel_threshold: in ``[0, 1]``; None: the rule's default (:data:`CROP_RULES`).
        crop_rule: one of :data:`CROP_RULES`.
        kernel_size: odd Gaussian kernel side for ``"zennit_crp"`` / ``"peak_region"``.
        baseline: ``[n]`` levels subtracted from the heatmaps first (activation maps: each
            component's typical level, :func:`activation_levels`, so the rule reads the part
            above it); None: 0.

    Returns:
        LongTensor ``[n, 4]`` ``(x0, y0, x1, y1)`` with x1, y1 exclusive (``image[:, y0:y1,
        x0:x1]`` is the crop), on ``heatmaps``' device.
    """
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.dim() != 3:
        shape = tuple(heatmaps.shape) if isinstance(heatmaps, torch.Tensor) else type(heatmaps).__name__
        raise ValueError(f"heatmaps must be a Tensor [n, H, W], got {shape}")
    if crop_rule not in CROP_RULES:
        raise ValueError(f"unknown crop_rule {crop_rule!r}; accepted: {list(CROP_RULES)}")
    if rel_threshold is None:
        rel_threshold = CROP_RULES[crop_rule]
    if isinstance(rel_threshold, bool) or not isinstance(rel_threshold, (int, float)) or not 0.0 <= rel_threshold <= 1.0:
        raise ValueError(f"rel_threshold must be a number in [0, 1], got {rel_threshold!r}")
    n, height, width = heatmaps.shape
    heat = heatmaps.float()
    if baseline is not None:
        if not isinstance(baseline, torch.Tensor) or baseline.shape != (n,):
            got = tuple(baseline.shape) if isinstance(baseline, torch.Tensor) else type(baseline).__name__
            raise ValueError(f"baseline must be None or a Tensor [n] = [{n}], got {got}")
        heat = heat - baseline.to(heat.device, torch.float32)[:, None, None]
    if crop_rule in ("zennit_crp", "peak_region"):
        from torchvision.transforms.functional import gaussian_blur

        if kernel_size is None:
            kernel_size = zennit_crp_kernel_size(height, width)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}")
        if n:
            heat = gaussian_blur(heat[:, None], kernel_size=[kernel_size, kernel_size])[:, 0]
        peak = heat.flatten(1).amax(dim=1) if n else heat.new_zeros(0)  # [n]
        keep = (peak[:, None, None] > 0) & (heat / (peak[:, None, None] + 1e-10) > rel_threshold)
        if crop_rule == "peak_region" and n:
            keep = _region_of_peak(keep, heat)
        return _box_of(keep)
    pos = heat.clamp(min=0)
    peak = pos.flatten(1).amax(dim=1) if n else pos.new_zeros(0)  # [n]
    keep = (pos > 0) & (pos >= rel_threshold * peak[:, None, None])  # [n, H, W]
    return _box_of(keep)


def box_area(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Area of each box ``[n, 4]`` (x0, y0, x1, y1) as a fraction of the image: FloatTensor ``[n]``."""
    b = boxes.float()
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / float(height * width)


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
