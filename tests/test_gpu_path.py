"""The device path of a run, as far as a CPU can check it: collection precisions, channels-last
inputs, pinned loaders, and the batch size chosen per device (``Lens(batch_size=None)``).
``benchmarks/bench_gpu.py`` measures the rest on a GPU (speed, host syncs per batch)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cli_world  # noqa: E402

from semlens_widgets.kernels.collect import PRECISIONS, collect_topm  # noqa: E402
from semlens_widgets.kernels.data import build_loader  # noqa: E402
from semlens_widgets.lens_device import CPU_BATCH, batch_for_memory, default_batch_size  # noqa: E402

LAYERS = ["features.relu1", "features.relu2", "fc"]


def _collect(**kw):
    return collect_topm(_cli_world.model(), _cli_world.dataset(), LAYERS, 5, batch_size=8, progress=False, **kw)


def test_precisions():
    ref = _collect()
    for p in ("fp32", "tf32"):  # TF32 only exists on CUDA: on the CPU both are exact float32
        got = _collect(precision=p)
        for name in LAYERS:
            assert torch.equal(got.topm[name].indices, ref.topm[name].indices)
            assert torch.equal(got.topm[name].values, ref.topm[name].values)
    bf = _collect(precision="bf16")
    for name in LAYERS:
        assert bf.topm[name].indices.shape == ref.topm[name].indices.shape
        assert bf.topm[name].values.dtype == torch.float32
        # reduced precision: close values, not the same bits
        assert torch.allclose(bf.topm[name].values, ref.topm[name].values, rtol=0.05, atol=0.05)
    assert not all(torch.equal(bf.topm[n].values, ref.topm[n].values) for n in LAYERS)
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'; accepted: \['fp32', 'tf32', 'bf16', 'fp16'\]"):
        _collect(precision="fp8")
    assert PRECISIONS == ("fp32", "tf32", "bf16", "fp16")


def test_channels_last_inputs_give_the_same_examples():
    ref, got = _collect(), _collect(channels_last=True)
    for name in LAYERS:
        assert torch.equal(got.topm[name].indices, ref.topm[name].indices)
        assert torch.allclose(got.topm[name].values, ref.topm[name].values, rtol=1e-5, atol=1e-6)


def test_loader_pins_memory_on_request():
    assert build_loader(_cli_world.dataset(), 4, 0, pin_memory=True)[0].pin_memory is True
    assert build_loader(_cli_world.dataset(), 4, 0)[0].pin_memory is False


def test_batch_size_per_device():
    # the largest power of two that fits in 40 % of the free memory, within [16, 512]
    assert batch_for_memory(10 * 2**30, 50 * 2**20) == 64      # 81.9 fit -> 64
    assert batch_for_memory(80 * 2**30, 50 * 2**20) == 512     # capped
    assert batch_for_memory(2**30, 50 * 2**20) == 16           # floor
    assert batch_for_memory(2**30, 0) == 512
    model = _cli_world.model()
    assert default_batch_size(model, (3, 16, 16), "cpu") == CPU_BATCH == 64
    from semlens_widgets.lens import Lens

    lens = Lens(model, _cli_world.dataset(), _cli_world.fm(), ["features.relu1"], m=2, crop="activation", store=None,
                progress=False)
    assert lens.batch_size == 64  # batch_size=None: chosen for the CPU
    with pytest.raises(ValueError, match=r"batch_size must be None \(chosen for the device\) or an int >= 1, got 0"):
        Lens(model, _cli_world.dataset(), lens.fm, ["features.relu1"], batch_size=0, store=None)
