"""Benchmark on the real-model fixture: EfficientNet-Lite0 with real ImageNet weights over
augmented crops of the real photos in scikit-image's wheel (tests/_real_models.py).

Prints, in one run:

1. Crop step vs zennit-crp: wall time of our crop step (``crp_heatmaps`` + ``boxes_from_heatmaps``
   over batches of (channel, example) pairs sorted by sample, each distinct image of a batch
   run forward once: ``image_index``) divided by zennit-crp 0.6's
   ``FeatureVisualization.get_max_reference(..., rf=True, plot_fn=None)`` for the same channels,
   the same reference examples (zennit-crp's own activation top-m), the same composite
   (``resolve_composite``) and the same batch size. The two alternate ``--repeats`` times in
   one process; the minimum of each is compared (the least-disturbed run on a shared machine),
   the median ratio of the pairs is printed too. Target: <= 0.5.
2. Collection vs bare forward: ``collect_topm`` for the late blocks over the photos divided by
   a bare ``torch.inference_mode`` forward pass with the same batches (alternating, minimum).
3. Box areas (fraction of the image) of both crop rules (``"threshold"``: 1 % of the max;
   ``"zennit_crp"``: Gaussian smoothing + 10 % of the smoothed max) on the late blocks, for
   all examples of the benchmarked channels; and zennit-crp's own reference crops' area
   (``crp.image.get_crop_range`` on its heatmaps) as the reference.
4. Conservation: median input-heatmap sum / start relevance, and per block, for local starts
   at the late blocks (``lrp.conservation``), with the default set-up and with stock z+.

Run:  python benchmarks/bench_real_model.py             (about 5-10 minutes on 2 CPU cores)
      python benchmarks/bench_real_model.py --quick     (smaller sizes, a smoke run)
No asserts: the numbers are printed, one run, one machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from _real_models import LITE0_BLOCKS, augmented_photos, lite0, normalize  # noqa: E402

from semlens_widgets.kernels.collect import collect_topm  # noqa: E402
from semlens_widgets.kernels.crops import box_area, boxes_from_heatmaps, crp_heatmaps  # noqa: E402
from semlens_widgets.kernels.lrp import ZPlusConserving, conservation, resolve_composite  # noqa: E402


class PhotoSet(torch.utils.data.Dataset):
    """Augmented photos in [0, 1] with label 0 (zennit-crp's run needs a target; the Lens never does)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i], 0


class NormalizedSet(PhotoSet):
    def __getitem__(self, i):
        return normalize(self.images[i : i + 1])[0], 0


def zennit_crp_references(model, data: PhotoSet, layers, composite, path, batch_size):
    """zennit-crp's FeatureVisualization over ``data``: its activation top-m per channel."""
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from crp.visualization import FeatureVisualization

    attribution = CondAttribution(model, no_param_grad=True)
    fv = FeatureVisualization(attribution, data, {l: ChannelConcept() for l in layers},
                              preprocess_fn=normalize, path=path)
    fv.run(composite, 0, len(data), batch_size=batch_size)
    return fv


def time_ours(model, images, layer, channels, d_idx, composite, batch_size, crop_rule="threshold"):
    """Our crop step for the (channel, example) pairs: sorted by sample, batches of batch_size."""
    comps = torch.tensor(channels).repeat_interleave(d_idx.shape[0])  # d_idx [m, C] -> pairs c-major
    idx = d_idx.t().reshape(-1)
    order = torch.argsort(idx, stable=True)
    t0 = time.perf_counter()
    boxes = torch.empty(idx.numel(), 4, dtype=torch.long)
    heats = torch.empty(idx.numel(), images.shape[2], images.shape[3])
    for s in range(0, idx.numel(), batch_size):
        pos = order[s : s + batch_size]
        uniq, inv = torch.unique(idx[pos], return_inverse=True)  # the Lens's sorted batches
        h = crp_heatmaps(model, normalize(images[uniq]), layer, comps[pos], composite, image_index=inv)
        heats[pos] = h
        boxes[pos] = boxes_from_heatmaps(h, crop_rule=crop_rule)
    return time.perf_counter() - t0, heats, boxes


def time_theirs(fv, layer, channels, m, composite, batch_size):
    t0 = time.perf_counter()
    ref = fv.get_max_reference(list(channels), layer, "activation", (0, m), composite=composite, rf=True,
                               plot_fn=None, batch_size=batch_size)
    return time.perf_counter() - t0, ref


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="augmented photos (default 128, quick 40)")
    ap.add_argument("--m", type=int, default=None, help="examples per channel (default 32, quick 8)")
    ap.add_argument("--channels", type=int, default=None, help="channels per layer (default 4, quick 2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    n = args.n or (40 if args.quick else 128)
    m = args.m or (8 if args.quick else 32)
    n_ch = args.channels or (2 if args.quick else 4)
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    layers = ["_blocks.14", "_blocks.15"]

    model = lite0()
    images = augmented_photos(n, 224, seed=0)
    composite = resolve_composite(model, example_input=normalize(images[:2]))
    print(f"EfficientNet-Lite0 (real weights), {n} augmented photos 224 px, layers {layers}, "
          f"{n_ch} channels x m={m} per layer, batch {args.batch_size}, {args.threads} threads")

    # ---------------------------------------------------------------- 2. collection
    loader_batch = 32
    data = NormalizedSet(images)
    bare_t, coll_t = [], []
    for _ in range(max(2, repeats)):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, n, loader_batch):
                model(torch.stack([data[i][0] for i in range(s, min(n, s + loader_batch))]))
        bare_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = collect_topm(model, data, layers, m, batch_size=loader_batch, progress=False)
        coll_t.append(time.perf_counter() - t0)
    print(f"\n[2] collection / bare forward: {min(coll_t) / min(bare_t):.2f} "
          f"(min of {len(coll_t)}: {min(coll_t):.2f} s vs {min(bare_t):.2f} s)")
    del res

    # ---------------------------------------------------------------- 1. crop step vs zennit-crp
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fv = zennit_crp_references(model, PhotoSet(images), layers, composite, tmp, args.batch_size)
        print(f"\n(zennit-crp FeatureVisualization.run over {n} photos: {time.perf_counter() - t0:.1f} s, not timed below)")
        from crp.helper import load_maximization

        all_areas = {}
        for layer in layers:
            d_sorted, _, _ = load_maximization(fv.ActMax.PATH, layer)  # [N_kept, C]
            d_sorted = torch.as_tensor(d_sorted[:m].copy())
            # channels: the n_ch with the highest top-1 activation
            _, a_sorted, _ = load_maximization(fv.ActMax.PATH, layer)
            channels = torch.as_tensor(a_sorted[0].copy()).argsort(descending=True)[:n_ch].tolist()
            d_idx = d_sorted[:, channels].long()  # [m, C]
            ours_t, theirs_t = [], []
            for _ in range(repeats):
                t_o, heats, boxes = time_ours(model, images, layer, channels, d_idx, composite, args.batch_size)
                t_t, ref = time_theirs(fv, layer, channels, m, composite, args.batch_size)
                ours_t.append(t_o)
                theirs_t.append(t_t)
            ratios = [a / b for a, b in zip(ours_t, theirs_t)]
            print(f"[1] {layer}: our crop step / get_max_reference = {min(ours_t) / min(theirs_t):.2f} "
                  f"(min of {repeats}: {min(ours_t):.2f} s vs {min(theirs_t):.2f} s; median pair ratio "
                  f"{statistics.median(ratios):.2f}; {len(channels) * m} heatmaps)")
            # same heatmaps? (zennit-crp's heatmaps for channel c, examples in its order)
            theirs_h = torch.cat([ref[c][1] for c in channels])  # [C*m, H, W]
            diff = (heats - theirs_h).abs().amax() / theirs_h.abs().amax()
            print(f"    max |ours - zennit-crp| / max |zennit-crp| = {float(diff):.1e}")
            areas = {rule: float(box_area(boxes_from_heatmaps(heats, crop_rule=rule), 224, 224).mean())
                     for rule in ("threshold", "zennit_crp")}
            from crp.image import get_crop_range
            from crp.helper import max_norm
            from torchvision.transforms.functional import gaussian_blur

            ref_area = []
            for h in theirs_h:
                r1, r2, c1, c2 = get_crop_range(max_norm(gaussian_blur(h[None], kernel_size=19)[0]), 0.1)
                ref_area.append(max(0, int(r2) - int(r1)) * max(0, int(c2) - int(c1)) / 224**2 if int(r2) >= 0 else 1.0)
            areas["zennit-crp reference (its slicing)"] = sum(ref_area) / len(ref_area)
            all_areas[layer] = areas

    print("\n[3] mean box area (fraction of the image):")
    for layer, areas in all_areas.items():
        print("    " + layer + ": " + ", ".join(f"{k} {v:.2f}" for k, v in areas.items()))

    # ---------------------------------------------------------------- 4. conservation
    print("\n[4] conservation: median sum of relevance / start relevance (peak-neuron starts, each photo's top channel)")
    x = normalize(images[: min(n, 32)])
    from zennit.rules import ZPlus

    stock = resolve_composite(model, example_input=x[:2])
    stock.layer_map = [(t, ZPlus() if isinstance(h, ZPlusConserving) else h) for t, h in stock.layer_map]
    for name, comp in (("default (conserving z+)", composite), ("stock z+ (zero bias)", stock)):
        for layer in layers:
            rec = ["_conv_stem", *LITE0_BLOCKS[: int(layer.split(".")[1])]]
            table = conservation(model, x, layer, composite=comp, record=rec)
            per = " ".join(f"{r.layer.replace('_blocks.', 'b')}:{r.median:.3f}" for r in table.itertuples())
            print(f"    {name}, start {layer}: input {float(table['median'].iloc[-1]):.4f} | {per}")


if __name__ == "__main__":
    main()
