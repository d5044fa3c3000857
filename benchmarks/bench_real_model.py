"""Benchmark on the real-model fixture: EfficientNet-Lite0 with real ImageNet weights over
augmented crops of the real photos in scikit-image's wheel (tests/_real_models.py).

Prints, in one run:

1. Crop step vs zennit-crp: wall time of the Lens's own crop step (``Pipeline._compute_boxes``:
   the (channel, example) pairs sorted by sample, batches of ``--batch-size`` pairs, each
   distinct image of a batch run forward once, CRP heatmaps, boxes by the default crop rule on
   the device, the conservation ratios) divided by zennit-crp 0.6's
   ``FeatureVisualization.get_max_reference(..., rf=True, plot_fn=None)`` for the same
   channels, the same reference examples (zennit-crp's own activation top-m), the same
   composite (``resolve_composite``) and the same batch size, on two workloads per late block:

   - ``[lens]``: what a Lens run does -- ``--channels`` random channels of the block (``--full``:
     all of them), each with its top-m examples over ``--n`` augmented photos; a photo set of
     a few hundred photos shares its top images between channels (the overlap is printed);
   - ``[low-overlap]``: the 3 channels with the highest top-1 activation, whose examples
     rarely share an image (little work to share: the worst case for our crop step).

   Both alternate ``--repeats`` times in one process; the minimum of each is compared (the
   least-disturbed run on a shared machine), the median ratio of the pairs is printed too.
   Target: <= 0.5.
2. Collection vs bare forward: ``collect_topm`` for the late blocks over the photos divided by
   a bare ``torch.inference_mode`` forward pass with the same batches (alternating, minimum).
3. Box areas (fraction of the image) of every crop rule on the ``[lens]`` heatmaps, and
   zennit-crp's own reference crops' area (``crp.image.get_crop_range``) as the reference.
4. Conservation: the Lens's (input heatmap sum / start relevance over the ``[lens]`` pairs:
   what ``lens.conservation()`` shows) and per block for local starts at the late blocks
   (``lrp.conservation``), with the default set-up and with stock z+.

Run:  python benchmarks/bench_real_model.py             (about 10 minutes on 2 quiet CPU cores)
      python benchmarks/bench_real_model.py --quick     (smaller sizes, a smoke run)
      python benchmarks/bench_real_model.py --full      (all channels of both blocks: hours)
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
from semlens_widgets.kernels.crops import CROP_RULES, box_area, boxes_from_heatmaps, crp_heatmaps  # noqa: E402
from semlens_widgets.kernels.lrp import ZPlusConserving, conservation, ratio_summary, resolve_composite  # noqa: E402


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


def lens_over(model, images, layers, batch_size):
    """A Lens over the photos (in memory, a tiny random CLIP: only its crop step is timed)."""
    import tempfile as _tf
    from pathlib import Path

    from _models import tiny_clip_fm

    from semlens_widgets.lens import Lens

    fm = tiny_clip_fm(Path(_tf.mkdtemp()))
    return Lens(model, NormalizedSet(images), fm, layers, m=1, crop="crp", store=None, batch_size=batch_size,
                progress=False)


def time_ours(lens, layer, channels, d_idx):
    """The Lens's crop step for channels ``channels`` with examples ``d_idx [m, C]``:
    ``Pipeline._compute_boxes`` (boxes [C, m, 4] and conservation ratios [C, m])."""
    idx = d_idx.t().contiguous()  # [C, m]
    t0 = time.perf_counter()
    got = lens.pipeline._compute_boxes(layer, idx, torch.as_tensor(channels))
    return time.perf_counter() - t0, got


def overlap(d_idx, batch_size):
    """Mean pairs per distinct image within the Lens's sorted batches (1: nothing to share)."""
    flat = d_idx.t().reshape(-1)
    order = torch.argsort(flat, stable=True)
    per = [flat[order[s : s + batch_size]] for s in range(0, flat.numel(), batch_size)]
    return sum(p.numel() for p in per) / sum(torch.unique(p).numel() for p in per)


def time_theirs(fv, layer, channels, m, composite, batch_size):
    t0 = time.perf_counter()
    ref = fv.get_max_reference(list(channels), layer, "activation", (0, m), composite=composite, rf=True,
                               plot_fn=None, batch_size=batch_size)
    return time.perf_counter() - t0, ref


def main() -> None:
    ap = argparse.ArgumentParser()
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--full", action="store_true", help="all channels of both blocks (hours on a CPU)")
    ap.add_argument("--n", type=int, default=None, help="augmented photos (default 256, quick 64)")
    ap.add_argument("--m", type=int, default=None, help="examples per channel (default 16, quick 8)")
    ap.add_argument("--channels", type=int, default=None, help="random channels per layer, [lens] (default 32, quick 6)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    n = args.n or (64 if args.quick else 256)
    m = args.m or (8 if args.quick else 16)
    n_ch = args.channels or (6 if args.quick else 32)
    repeats = args.repeats or (1 if args.quick else 2)
    torch.set_num_threads(args.threads)
    layers = ["_blocks.14", "_blocks.15"]

    model = lite0()
    images = augmented_photos(n, 224, seed=0)
    composite = resolve_composite(model, example_input=normalize(images[:2]))
    lens = lens_over(model, images, layers, args.batch_size)
    print(f"EfficientNet-Lite0 (real weights), {n} augmented photos 224 px, layers {layers}, m={m}, batch "
          f"{args.batch_size}, {args.threads} threads, default crop rule {lens.crop_rule!r}")

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
    g = torch.Generator().manual_seed(0)
    lens_heats, lens_ratios = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fv = zennit_crp_references(model, PhotoSet(images), layers, composite, tmp, args.batch_size)
        print(f"\n(zennit-crp FeatureVisualization.run over {n} photos: {time.perf_counter() - t0:.1f} s, not timed below)")
        from crp.helper import load_maximization

        for layer in layers:
            d_sorted, a_sorted, _ = load_maximization(fv.ActMax.PATH, layer)  # [N_kept, C]
            d_sorted = torch.as_tensor(d_sorted[:m].copy()).long()
            n_channels = d_sorted.shape[1]
            workloads = {
                "lens": (torch.arange(n_channels) if args.full else
                         torch.randperm(n_channels, generator=g)[: min(n_ch, n_channels)]).tolist(),
                "low-overlap": torch.as_tensor(a_sorted[0].copy()).argsort(descending=True)[:3].tolist(),
            }
            for name, channels in workloads.items():
                d_idx = d_sorted[:, channels]  # [m, C]
                ours_t, theirs_t = [], []
                for _ in range(repeats):
                    t_o, got = time_ours(lens, layer, channels, d_idx)
                    t_t, ref = time_theirs(fv, layer, channels, m, composite, args.batch_size)
                    ours_t.append(t_o)
                    theirs_t.append(t_t)
                ratios = [a / b for a, b in zip(ours_t, theirs_t)]
                print(f"[1] {layer}[{name}]: our crop step / get_max_reference = {min(ours_t) / min(theirs_t):.2f} "
                      f"(min of {repeats}: {min(ours_t):.2f} s vs {min(theirs_t):.2f} s; median pair ratio "
                      f"{statistics.median(ratios):.2f}; {len(channels)} channels x m={m} = {len(channels) * m} "
                      f"heatmaps, {overlap(d_idx, args.batch_size):.2f} pairs per distinct image in a batch)")
                theirs_h = torch.cat([ref[c][1] for c in channels])  # [C*m, H, W], channel-major
                if name == "low-overlap":  # same heatmaps? (ours, recomputed for the check)
                    comps = torch.tensor(channels).repeat_interleave(m)
                    idx = d_idx.t().reshape(-1)
                    ours_h = torch.cat([crp_heatmaps(model, normalize(images[idx[s:s + 16]]), layer, comps[s:s + 16],
                                                     composite).cpu() for s in range(0, idx.numel(), 16)])
                    diff = (ours_h - theirs_h).abs().amax() / theirs_h.abs().amax()
                    print(f"    max |ours - zennit-crp| / max |zennit-crp| = {float(diff):.1e}")
                else:
                    lens_heats[layer] = theirs_h
                    lens_ratios[layer] = got["ratio"].reshape(-1)

        print("\n[3] mean box area (fraction of the image) on the [lens] heatmaps; share of full-image boxes:")
        from crp.helper import max_norm
        from crp.image import get_crop_range
        from torchvision.transforms.functional import gaussian_blur

        for layer, heats in lens_heats.items():
            parts = []
            for rule in CROP_RULES:
                area = box_area(boxes_from_heatmaps(heats, crop_rule=rule), 224, 224)
                parts.append(f"{rule} {float(area.mean()):.2f} ({float((area >= 0.999).float().mean()):.0%} full)")
            ref_area = []
            for h in heats:
                r1, r2, c1, c2 = get_crop_range(max_norm(gaussian_blur(h[None], kernel_size=19)[0]), 0.1)
                ref_area.append(max(0, int(r2) - int(r1)) * max(0, int(c2) - int(c1)) / 224**2 if int(r2) >= 0 else 1.0)
            parts.append(f"zennit-crp reference (its slicing) {sum(ref_area) / len(ref_area):.2f}")
            print(f"    {layer}: " + ", ".join(parts))

    # ---------------------------------------------------------------- 4. conservation
    print("\n[4] conservation: sum of relevance / start relevance (peak-neuron starts)")
    for layer, r in lens_ratios.items():
        row = ratio_summary(r[torch.isfinite(r)], torch.ones(int(torch.isfinite(r).sum())))
        print(f"    the Lens's crop step (lens.conservation), {layer}: median {row['median']:.4f}, 10-90 % "
              f"{row['q10']:.4f} .. {row['q90']:.4f}, min {row['min']:.4f} over {row['n']} concept examples")
    x = normalize(images[: min(n, 32)])
    from zennit.rules import ZPlus

    stock = resolve_composite(model, example_input=x[:2])
    stock.layer_map = [(t, ZPlus() if isinstance(h, ZPlusConserving) else h) for t, h in stock.layer_map]
    for name, comp in (("default (conserving z+)", composite), ("stock z+ (zero bias)", stock)):
        for layer in layers:
            rec = ["_conv_stem", *LITE0_BLOCKS[: int(layer.split(".")[1])]]
            table = conservation(model, x, layer, composite=comp, record=rec)
            per = " ".join(f"{r.layer.replace('_blocks.', 'b')}:{r.median:.3f}" for r in table.itertuples())
            print(f"    {name}, start {layer}, each photo's top channel: input {float(table['median'].iloc[-1]):.4f} | {per}")


if __name__ == "__main__":
    main()
