"""Comparing two stores entry by entry (kill-and-resume, two-process runs, races).

Every tensor must be bit-identical, with one documented exception: the conservation diagnostic
of ``crop="crp"`` (``ratio`` in ``boxes/<layer>``, ``ratio_quantiles`` and the meta numbers of
``conservation/<layer>``). Those are sums of heatmap pixels, and a convolution's last bits
depend on the batch an image is computed in (mkldnn picks its algorithm per batch size), which
sharding or resuming changes. The boxes made from the same heatmaps are identical (a threshold
is far from every pixel's last bit); the ratios must agree to 1e-4 with NaN at the same places.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from semlens_widgets.store import Store

DIAGNOSTIC = {"ratio", "ratio_quantiles"}


def store_entries(root: Path) -> dict[str, tuple[str, dict, dict[str, torch.Tensor]]]:
    """key -> (fingerprint, meta, tensors) of every entry of the store at ``root``."""
    store = Store(root)
    out = {}
    for key in store.keys():
        rec = store.meta(key)
        got = store.load(key, rec["fingerprint"])
        assert got is not None, f"{root}: entry {key!r} unreadable"
        out[key] = (rec["fingerprint"], rec["meta"], got)
    return out


def _close_meta(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close_meta(a[k], b[k]) for k in a)
    return a == b


def assert_same_stores(a: Path, b: Path) -> None:
    """The stores at ``a`` and ``b`` hold the same keys, fingerprints, metas and tensors
    (bit for bit, the conservation diagnostic to 1e-4)."""
    ea, eb = store_entries(a), store_entries(b)
    assert sorted(ea) == sorted(eb)
    for key in ea:
        fa, ma, ta = ea[key]
        fb, mb, tb = eb[key]
        assert fa == fb, key
        if key.startswith("conservation/"):
            assert _close_meta(ma, mb), (key, ma, mb)
        else:
            assert ma == mb, key
        assert ta.keys() == tb.keys(), key
        for name in ta:
            assert ta[name].dtype == tb[name].dtype and ta[name].shape == tb[name].shape, f"{key}: {name}"
            if name in DIAGNOSTIC:
                torch.testing.assert_close(ta[name], tb[name], rtol=1e-4, atol=1e-6, equal_nan=True,
                                           msg=f"{key}: {name}")
            else:
                assert torch.equal(ta[name], tb[name]), f"{key}: {name} differs"
