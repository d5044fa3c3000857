"""crop="activation" on layers without a ReLU: crops measured from each component's typical level.

Without a ReLU (a raw conv, a BatchNorm output, tokens) 0 is an arbitrary point of a
component's range: a map that is positive everywhere made the 1%-of-the-peak rule keep the
whole image (81-100% full-image crops). The crop now keeps the pixels at least 25% of the way
from the component's typical level (median over a fixed sample of the data) to its peak, which
is invariant to a shift or a positive scale of the channel, and a layer whose crops are still
mostly full images gets one warning naming it and the share.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from semlens_widgets.lens import Lens

from _models import red_square_images, tiny_clip_fm

torch.set_num_threads(1)


class RedDetector(nn.Module):
    """``conv`` channel 0 = scale * (R - G - B) + shift, no ReLU: positive everywhere for a large
    shift; red pixels (1, 0, 0) give scale + shift, gray (0.5) ones shift - 0.5 * scale."""

    def __init__(self, scale: float = 1.0, shift: float = 5.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, :, 0, 0] = torch.tensor([1.0, -1.0, -1.0]) * scale
            self.conv.bias.copy_(torch.tensor([shift, 1.0]))
            self.conv.weight[1, :, 0, 0] = 0.0  # channel 1: a constant map
            self.head.weight.copy_(torch.eye(2))
            self.head.bias.zero_()
        self.eval()

    def forward(self, x):
        return self.head(self.conv(x).amax(dim=(2, 3)))


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    return tiny_clip_fm(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def squares():
    x, boxes = red_square_images(16, size=16, square=4, seed=3)
    return [(x[i], 0) for i in range(16)], boxes


def run(model, data, fm):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lens = Lens(model, data, fm, ["conv"], m=4, crop="activation", store=None, progress=False).run()
    return lens, [str(w.message) for w in caught if "crop='activation'" in str(w.message)]


def test_a_raw_conv_crops_to_what_drives_it(fm, squares):
    """Channel 0 is positive on every pixel (shift 5): its crops are the red square, not the
    image."""
    data, true = squares
    lens, _ = run(RedDetector(), data, fm)
    idx, _ = lens.examples("conv", 0)
    b, t = lens.boxes("conv")[0], true[idx]
    assert (b[:, :2] <= t[:, :2]).all() and (b[:, 2:] >= t[:, 2:]).all()  # contains the square
    assert ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) <= 6 * 6).all()      # and little more


@pytest.mark.parametrize("scale, shift", [(1.0, -3.0), (0.1, 40.0), (7.0, 0.0)])
def test_crops_do_not_depend_on_where_zero_is(fm, squares, scale, shift):
    data, _ = squares
    ref, _ = run(RedDetector(), data, fm)
    other, _ = run(RedDetector(scale=scale, shift=shift), data, fm)
    assert torch.equal(other.examples("conv", 0).indices, ref.examples("conv", 0).indices)
    assert torch.equal(other.boxes("conv")[0], ref.boxes("conv")[0])


def test_mostly_full_image_crops_are_named_once(fm, squares):
    """Channel 1 is a constant map: every crop is the full image. One warning names the layer and
    the share (half of the layer's crops here); a second run does not repeat it."""
    data, _ = squares
    lens, said = run(RedDetector(), data, fm)
    assert len(said) == 1 and "layer 'conv'" in said[0] and "50% of the concept-example crops" in said[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lens.run()
    assert not [w for w in caught if "crop='activation'" in str(w.message)]
