"""Crops (paper: concept examples, the crop): CRP and activation heatmaps find a known driving
region; boxes and roi_align crops are exact; errors are clear; semantic embedding."""
from __future__ import annotations

import pytest
import torch

from semlens_widgets.kernels.hooks import LayerCapture
from semlens_widgets.kernels.crops import (
    activation_heatmaps,
    boxes_from_heatmaps,
    component_maps,
    crop_resize,
    crp_heatmaps,
)
from semlens_widgets.kernels.embed import semantic_embedding

from _models import RedNet, TinyCNN, TokenNet, red_square_images, tiny_resnet

torch.set_num_threads(1)


def _contains(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """[n] bool: box outer[i] contains box inner[i] (x0, y0, x1, y1; exclusive ends)."""
    return (outer[:, 0] <= inner[:, 0]) & (outer[:, 1] <= inner[:, 1]) & (outer[:, 2] >= inner[:, 2]) & (
        outer[:, 3] >= inner[:, 3]
    )


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


@pytest.fixture(scope="module")
def red():
    images, squares = red_square_images(8, size=32, square=6, seed=1)
    return RedNet(), images, squares


@pytest.mark.parametrize("layer", ["conv1", "relu1", "conv2", "relu2"])
def test_crp_box_contains_red_square(red, layer):
    """conv1 channel 0 fires only on red; conv2 channel 0 copies it. Relevance started at the
    whole map of component 0 (peak=False, what mean pooling uses): the CRP box must contain the
    red square and be much smaller than the 32x32 image."""
    model, images, squares = red
    comps = torch.zeros(len(images), dtype=torch.long)
    heat = crp_heatmaps(model, images, layer, comps, peak=False)
    torch.testing.assert_close(heat, crp_heatmaps(model, images, layer, comps, pooling="mean"))
    assert heat.shape == (8, 32, 32) and heat.dtype == torch.float32
    boxes = boxes_from_heatmaps(heat)
    assert bool(_contains(boxes, squares).all()), (boxes, squares)
    assert bool((_area(boxes) <= 4 * _area(squares)).all())  # 64 px at most vs 1024 px image
    # conservation: the heatmap sums to the (positive) activation of the component,
    # 0.5 per red pixel (36 pixels)
    torch.testing.assert_close(heat.sum(dim=(1, 2)), torch.full((8,), 18.0), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("layer", ["relu1", "relu2"])
def test_crp_peak_neuron_box_inside_red_square(red, layer):
    """Max pooling (the default) starts the relevance at the single neuron where the component
    peaks: every red pixel scores 0.5, argmax takes the first one in row-major order (the
    square's top-left pixel); the centre-tap convolutions pass it straight down and the Flat
    rule of the first layer spreads it over that pixel's 3x3 window."""
    model, images, squares = red
    comps = torch.zeros(len(images), dtype=torch.long)
    heat = crp_heatmaps(model, images, layer, comps)
    torch.testing.assert_close(heat, crp_heatmaps(model, images, layer, comps, peak=True))
    torch.testing.assert_close(heat.sum(dim=(1, 2)), torch.full((8,), 0.5), atol=1e-4, rtol=1e-4)
    boxes = boxes_from_heatmaps(heat)
    window = torch.cat([(squares[:, :2] - 1).clamp(min=0), (squares[:, :2] + 2).clamp(max=32)], dim=1)
    torch.testing.assert_close(boxes, window)
    with pytest.raises(ValueError, match="peak must be True, False or None, got 'yes'"):
        crp_heatmaps(model, images, layer, comps, peak="yes")


def test_crp_peak_neuron_stays_in_receptive_field():
    """On a CNN whose every pixel drives the channel, the peak-neuron heatmap is zero outside
    the peak's receptive field (two 3x3 convs: 5x5), the whole-map heatmap is not."""
    model = TinyCNN()
    torch.manual_seed(3)
    x = torch.rand(2, 3, 16, 16)
    comps = torch.tensor([1, 4])
    with torch.no_grad(), LayerCapture(model, ["features.relu2"]) as cap:
        model(x)
        act = cap.outputs["features.relu2"][torch.arange(2), comps]  # [2, h, w]
    assert act.shape[-1] == 16  # no striding before relu2: neuron (y, x) sees pixels y-2..y+2
    heat = crp_heatmaps(model, x, "features.relu2", comps)
    whole = crp_heatmaps(model, x, "features.relu2", comps, peak=False)
    for i in range(2):
        y, xx = divmod(int(act[i].flatten().argmax()), 16)
        outside = torch.ones(16, 16, dtype=torch.bool)
        outside[max(0, y - 2) : y + 3, max(0, xx - 2) : xx + 3] = False
        assert float(heat[i][outside].abs().max()) == 0.0
        assert float(whole[i][outside].abs().max()) > 0.0
        torch.testing.assert_close(heat[i].sum(), act[i].max(), atol=1e-4, rtol=1e-3)


def test_crp_other_component_elsewhere(red):
    """Component 2 (brightness) fires on the gray background: its whole-map box is much larger
    than the square, and its peak neuron (the brightest gray pixel) lies off the square."""
    model, images, squares = red
    comps = torch.full((8,), 2)
    boxes = boxes_from_heatmaps(crp_heatmaps(model, images, "relu1", comps, peak=False))
    assert bool((_area(boxes) > 4 * _area(squares)).all())
    peak = boxes_from_heatmaps(crp_heatmaps(model, images, "relu1", comps))
    assert bool((_area(peak) <= 9).all())
    overlap_x = (peak[:, 0] + 1 < squares[:, 2]) & (peak[:, 2] - 1 > squares[:, 0])
    overlap_y = (peak[:, 1] + 1 < squares[:, 3]) & (peak[:, 3] - 1 > squares[:, 1])
    assert not bool((overlap_x & overlap_y).any())  # the window's centre pixel is not red


def test_activation_box_contains_red_square(red):
    model, images, squares = red
    comps = torch.zeros(len(images), dtype=torch.long)
    for layer in ["relu1", "conv2"]:
        heat = activation_heatmaps(model, images, layer, comps)
        assert heat.shape == (8, 32, 32)
        boxes = boxes_from_heatmaps(heat)
        assert bool(_contains(boxes, squares).all())
        assert bool((_area(boxes) <= 4 * _area(squares)).all())


def test_crp_mixed_components_one_batch():
    """Different components per image in one call give the same heatmaps as one call each."""
    model = TinyCNN()
    x = torch.rand(4, 3, 16, 16)
    comps = torch.tensor([0, 3, 7, 3])
    together = crp_heatmaps(model, x, "features.relu2", comps)
    alone = torch.cat([crp_heatmaps(model, x[i : i + 1], "features.relu2", comps[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[1], together[0])


def test_crp_reused_relu_call_syntax_and_conservation():
    """torchvision BasicBlock reuses self.relu: '@1' picks the post-residual ReLU; the heatmap
    sums to the channel's activation (relevance started locally at that call)."""
    model = tiny_resnet()
    x = torch.rand(3, 3, 32, 32)
    comps = torch.tensor([0, 5, 9])
    heat = crp_heatmaps(model, x, "layer1.0.relu@1", comps, peak=False)
    peak = crp_heatmaps(model, x, "layer1.0.relu@1", comps)
    with torch.no_grad(), LayerCapture(model, ["layer1.0.relu@1"]) as cap:
        model(x)
        act = cap.outputs["layer1.0.relu@1"]
    torch.testing.assert_close(heat.sum(dim=(1, 2)), act[torch.arange(3), comps].sum(dim=(1, 2)), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(peak.sum(dim=(1, 2)), act[torch.arange(3), comps].amax(dim=(1, 2)), atol=1e-3, rtol=1e-3)
    assert all(p.requires_grad for p in model.parameters())  # CondAttribution's flags undone
    with pytest.raises(ValueError, match=r"called 2 times.*'layer1\.0\.relu@0'"):
        crp_heatmaps(model, x, "layer1.0.relu", comps)
    with pytest.raises(ValueError, match=r"component 64 does not exist in layer 'layer1.0.relu@0'.*0 \.\. 63"):
        crp_heatmaps(model, x, "layer1.0.relu@0", torch.tensor([0, 1, 64]))


def test_token_activation_maps():
    """Token maps [n, 1 + g*g, D]: the CLS token is dropped, the g x g grid upsampled."""
    model = TokenNet(dim=8, patch=4)
    x = torch.zeros(2, 3, 16, 16)
    x[0, :, 0:4, 12:16] = 3.0  # patch (row 0, col 3)
    x[1, :, 8:12, 4:8] = 3.0  # patch (row 2, col 1)
    with torch.no_grad(), LayerCapture(model, ["embed"]) as cap:
        model(x)
        emb = cap.outputs["embed"]  # [2, 8, 4, 4]
    w = model.embed.weight.sum(dim=(1, 2, 3))  # response of each feature to a bright patch
    k = int(w.argmax())
    heat = activation_heatmaps(model, x, "embed", torch.tensor([k, k]))  # conv map [n, C, 4, 4]
    boxes = boxes_from_heatmaps(heat, rel_threshold=0.5)
    assert boxes[0].tolist()[0] >= 8 and boxes[0].tolist()[1] <= 4  # upper right
    assert boxes[1].tolist()[0] <= 8 and boxes[1].tolist()[2] <= 10
    tokens = torch.cat([torch.full((2, 1, 8), 100.0), emb.flatten(2).transpose(1, 2)], dim=1)  # [2, 17, 8]
    maps = component_maps(tokens, torch.tensor([k, k]))
    assert maps.shape == (2, 4, 4)
    torch.testing.assert_close(maps, emb[:, k])  # CLS (value 100) dropped, grid row-major
    with pytest.raises(ValueError, match="not a square grid"):
        component_maps(torch.zeros(1, 288, 3), torch.tensor([0]))  # 16*16 + 32 prefix tokens?


def test_boxes_from_heatmaps():
    heat = torch.zeros(4, 10, 12)
    heat[0, 2:5, 3:9] = 1.0
    heat[0, 7, 1] = 0.005  # below 1 % of max: ignored
    heat[1, 4, 6] = 2.0
    heat[1, 0, 0] = -5.0  # negative relevance never enlarges a box
    heat[2] = -1.0  # no positive value: full image
    # image 3 all zero: full image
    boxes = boxes_from_heatmaps(heat)
    assert boxes.dtype == torch.long
    assert boxes.tolist() == [[3, 2, 9, 5], [6, 4, 7, 5], [0, 0, 12, 10], [0, 0, 12, 10]]
    assert boxes_from_heatmaps(heat, rel_threshold=0.0)[0].tolist() == [1, 2, 9, 8]
    with pytest.raises(ValueError, match=r"rel_threshold must be a number in \[0, 1\], got 5"):
        boxes_from_heatmaps(heat, 5)
    with pytest.raises(ValueError, match=r"heatmaps must be a Tensor \[n, H, W\], got \(10, 12\)"):
        boxes_from_heatmaps(heat[0])


def test_crop_resize():
    images = torch.rand(3, 3, 8, 8)
    full = torch.tensor([[0, 0, 8, 8]] * 3)
    torch.testing.assert_close(crop_resize(images, full, 8), images)  # identity crop is exact
    boxes = torch.tensor([[2, 4, 4, 6], [0, 0, 8, 8], [5, 1, 6, 2]])
    out = crop_resize(images, boxes, 4)
    assert out.shape == (3, 3, 4, 4) and out.dtype == torch.float32
    # a 2x2 box (x 2..4, y 4..6) blown up to 4x4: output pixel (0, 0) samples the continuous
    # point (x, y) = (2.25, 4.25), i.e. pixel-index coordinates (1.75, 3.75): bilinear weights
    # 0.25 / 0.75 on pixel columns 1 / 2 and rows 3 / 4
    img = images[0]
    expected = 0.25 * (0.25 * img[:, 3, 1] + 0.75 * img[:, 3, 2]) + 0.75 * (0.25 * img[:, 4, 1] + 0.75 * img[:, 4, 2])
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    # output pixel (1, 1) samples (2.75, 4.75) = pixel centre (2, 4) region: weights 0.75 / 0.25
    expected = 0.75 * (0.75 * img[:, 4, 2] + 0.25 * img[:, 4, 3]) + 0.25 * (0.75 * img[:, 5, 2] + 0.25 * img[:, 5, 3])
    torch.testing.assert_close(out[0, :, 1, 1], expected)
    # 8x8 -> 4x4 averages 2x2 blocks
    torch.testing.assert_close(out[1], torch.nn.functional.avg_pool2d(images[1:2], 2)[0], atol=1e-6, rtol=1e-5)
    # a 1-pixel box (x 5, y 1): the centre of the crop is that pixel's value
    out1 = crop_resize(images[2:], boxes[2:], 1)
    torch.testing.assert_close(out1[0, :, 0, 0], images[2, :, 1, 5])
    with pytest.raises(ValueError, match=r"box 0 = \[4, 0, 4, 8\] is not a non-empty"):
        crop_resize(images[:1], torch.tensor([[4, 0, 4, 8]]), 4)
    with pytest.raises(ValueError, match=r"box 0 = \[0, 0, 9, 8\]"):
        crop_resize(images[:1], torch.tensor([[0, 0, 9, 8]]), 4)
    with pytest.raises(ValueError, match=r"boxes must be a Tensor \[n, 4\] = \[3, 4\]"):
        crop_resize(images, boxes[:2], 4)
    with pytest.raises(ValueError, match="size must be an int >= 1, got 0"):
        crop_resize(images, boxes, 0)


def test_heatmap_input_errors(red):
    model, images, _ = red
    with pytest.raises(ValueError, match=r"components must be a LongTensor \[n\].*n=8.*\(3,\)"):
        crp_heatmaps(model, images, "relu1", torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"images must be \[n, C, H, W\] \(rank 4\), got shape \(3, 32, 32\)"):
        activation_heatmaps(model, images[0], "relu1", torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"unknown layer 'relu9'.*Close matches"):
        activation_heatmaps(model, images, "relu9", torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"component 3 does not exist in layer 'relu1'.*0 \.\. 2"):
        activation_heatmaps(model, images, "relu1", torch.full((8,), 3))
    with pytest.raises(ValueError, match=r"component 5 does not exist in layer 'conv1'"):
        crp_heatmaps(model, images, "conv1", torch.full((8,), 5))
    with pytest.raises(ValueError, match=r"unknown pooling 'top'"):
        crp_heatmaps(model, images, "conv1", torch.zeros(8, dtype=torch.long), pooling="top")


def test_semantic_embedding():
    V = torch.randn(4, 3, 5)
    torch.testing.assert_close(semantic_embedding(V), V.mean(dim=1))
    valid = torch.tensor([[True, True, True], [True, False, False], [False, True, True], [True, True, False]])
    V[1, 1:] = float("nan")  # invalid slots may hold anything
    theta = semantic_embedding(V, valid)
    torch.testing.assert_close(theta[1], V[1, 0])
    torch.testing.assert_close(theta[2], V[2, 1:].mean(dim=0))
    torch.testing.assert_close(theta[0], V[0].mean(dim=0))
    with pytest.raises(ValueError, match=r"1 component\(s\) have no valid example, e.g. \[2\]"):
        semantic_embedding(V, torch.tensor([[True] * 3, [True] * 3, [False] * 3, [True] * 3]))
    with pytest.raises(ValueError, match=r"V must be a Tensor \[C, m, d\]"):
        semantic_embedding(V[0])
    with pytest.raises(ValueError, match=r"valid must be a BoolTensor \[C, m\] = \[4, 3\]"):
        semantic_embedding(V, valid.long())


def test_activation_map_survives_inplace_relu():
    """A conv followed by ReLU(inplace=True): the recorded conv map keeps its negative values."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(inplace=True)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model[0](x)
    assert (ref < 0).any()
    heat = activation_heatmaps(model, x, "0", torch.tensor([1, 2]))  # same size: no resampling
    torch.testing.assert_close(heat, ref[torch.arange(2), torch.tensor([1, 2])])


def test_crp_shared_forward_equals_separate_passes():
    """image_index: each distinct image runs forward once, its components share it: the same
    heatmaps as one pass per (image, component) pair."""
    model = tiny_resnet()
    images = torch.rand(3, 3, 32, 32)
    idx = torch.tensor([0, 0, 1, 2, 2, 2, 0])
    comps = torch.tensor([1, 5, 3, 2, 7, 9, 11])
    separate = crp_heatmaps(model, images[idx], "layer3", comps)
    shared = crp_heatmaps(model, images, "layer3", comps, image_index=idx)
    torch.testing.assert_close(shared, separate, atol=1e-6 * float(separate.abs().max()), rtol=1e-5)
    with pytest.raises(ValueError, match=r"image_index must be a LongTensor \[n\] with values in \[0, 3\)"):
        crp_heatmaps(model, images, "layer3", comps, image_index=torch.tensor([0, 1, 2, 3, 0, 0, 0]))
    # images share backward rounds when their pair counts are within 80 % of the group's
    # largest (waste <= 20 %); 1 and 2 pairs go apart (a shared second round would be all waste
    # for the 1-pair images), 5 and 4 pairs together; every image is in exactly one group
    from semlens_widgets.kernels.crops import _balanced_groups

    groups = _balanced_groups(torch.tensor([0, 0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 0]))
    assert [g[1].tolist() for g in groups] == [[0, 3], [2], [1]]
    assert [g[0].tolist() for g in groups] == [[0, 1, 2, 3, 7, 8, 9, 10, 11], [5, 6], [4]]


def test_box_rules():
    """zennit-crp's rule smooths and keeps 10 % of the smoothed max: an isolated hot pixel far
    from the main blob does not stretch its box (it does stretch the 1 % rule's box)."""
    from semlens_widgets.kernels.crops import CROP_RULES, box_area, zennit_crp_kernel_size

    heat = torch.zeros(2, 64, 64)
    heat[:, 20:30, 20:30] = 1.0
    heat[0, 60, 60] = 0.5  # a stray pixel
    t = boxes_from_heatmaps(heat, crop_rule="threshold")
    z = boxes_from_heatmaps(heat, crop_rule="zennit_crp")
    assert t[0].tolist() == [20, 20, 61, 61] and t[1].tolist() == [20, 20, 30, 30]
    assert z[0].tolist() == z[1].tolist()  # the stray pixel is smoothed away
    assert z[1, 0] < 20 and z[1, 2] > 30 and z[1, 0] > 10 and z[1, 2] < 40  # blur widens a little
    assert float(box_area(z, 64, 64)[0]) < float(box_area(t, 64, 64)[0])
    assert zennit_crp_kernel_size(224, 224) == 19 and zennit_crp_kernel_size(64, 64) == 5
    assert set(CROP_RULES) == {"threshold", "zennit_crp", "peak_region"}
    full = boxes_from_heatmaps(-torch.ones(1, 8, 8), crop_rule="zennit_crp")
    assert full.tolist() == [[0, 0, 8, 8]]
    with pytest.raises(ValueError, match="unknown crop_rule 'blur'"):
        boxes_from_heatmaps(heat, crop_rule="blur")
    with pytest.raises(ValueError, match="kernel_size must be an odd int"):
        boxes_from_heatmaps(heat, crop_rule="zennit_crp", kernel_size=4)


def test_peak_region_rule_keeps_the_blob_of_the_peak():
    """A second blob above the threshold, away from the peak's, stretches the zennit-crp box over
    the background between them; the peak-region box holds only the peak's blob. Gaps narrower
    than a grid cell are bridged; an image without positive relevance gets the full box."""
    from semlens_widgets.kernels.crops import box_area

    heat = torch.zeros(3, 112, 112)
    heat[:, 10:30, 10:30] = 1.0          # the peak's blob
    heat[0, 80:95, 80:95] = 0.6          # a distant second blob
    heat[1, 10:30, 31:50] = 0.9          # a neighbour one pixel away (bridged)
    heat[2] = -1.0                       # nothing positive
    z = boxes_from_heatmaps(heat, crop_rule="zennit_crp")
    p = boxes_from_heatmaps(heat, crop_rule="peak_region")
    assert z[0, 2] > 90 and z[0, 3] > 90   # zennit-crp spans both blobs
    assert p[0, 2] < 40 and p[0, 3] < 40 and p[0, 0] < 10 and p[0, 1] < 10
    assert p[1, 2] > 45                    # the neighbour joins the peak's region
    assert p[2].tolist() == [0, 0, 112, 112]
    assert float(box_area(p, 112, 112)[0]) < 0.2 * float(box_area(z, 112, 112)[0]) + 0.05
    # the same boxes on the heatmaps' device and dtype-independent
    torch.testing.assert_close(boxes_from_heatmaps(heat.double(), crop_rule="peak_region"), p)
