"""Crop rules of ``crop="crp"`` side by side: which default (``Lens(crop_rule=None)``) and why.

For every rule of ``kernels.crops.CROP_RULES`` (``"threshold"``: positive relevance >= 1 % of
the maximum; ``"zennit_crp"``: Gaussian smoothing, >= 10 % of the smoothed maximum;
``"peak_region"``: zennit-crp's, then only the connected region that holds the peak), prints:

1. Demo world (the shipped classifier over the 2,000-image test split, layers block3 + block4,
   m = 30, through the Lens): label faithfulness over ALL labelled components -- for every
   component that ``lens.label(vocabulary)`` labels, the AUC with which its pooled activation
   separates the dataset images that contain the label's concept from those that do not (the
   world's ground truth, ``demo.groundtruth``) -- mean over all layers and for block4, against
   the best single vocabulary concept per component (the ceiling, the same for every rule);
   the number of labelled components; the ``demo.evaluate`` figures (label accuracy over the
   clear components, search precision@5, shortcut found); the mean box area.
2. Real-model fixture (EfficientNet-Lite0, real ImageNet weights, augmented real photos at
   224 px, tests/_real_models.py): mean box area (fraction of the image) and the share of
   full-image boxes at the late blocks _blocks.14 / _blocks.15, for the same heatmaps
   (channels sampled at random, each with its real top-m examples over the photos).
   Target: mean area <= 0.5 without lowering the label AUC of part 1.

Run:  python benchmarks/bench_crop_rules.py            (about 20-40 minutes on 2 CPU cores; the
                                                        demo stores under --store-root are reused)
      python benchmarks/bench_crop_rules.py --quick    (smaller sizes, a smoke run)
      options: --rules threshold,peak_region  --json figures.json  --skip-demo  --skip-real
No asserts: the numbers are printed (and written with --json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def label_auc(world, lens, layer: str) -> dict:
    """AUC of each labelled component's activation for its label's concept (dataset ground
    truth): mean over the labelled components, their count, and the best-concept ceiling."""
    gt = world.ground_truth
    acts = gt.activations(layer, lens.pooling)  # [N, C] pooled over the world's dataset
    aucs = gt.aucs(layer, activations=acts)  # [C, concepts]
    labels = lens.label(list(world.vocabulary), layer).table["label"].tolist()
    vals = [float(aucs.iloc[k][lab]) for k, lab in enumerate(labels) if lab is not None and lab in aucs.columns]
    unknown = sum(1 for lab in labels if lab is not None and lab not in aucs.columns)
    best = np.nan_to_num(aucs.to_numpy(), nan=0.0).max(axis=1)
    return {"aucs": vals, "n_labelled": len(vals), "n_label_without_truth": unknown, "best": best.tolist()}


def _share_heatmaps() -> None:
    """The crop rules only differ in how a heatmap becomes a box: compute each batch's CRP
    heatmaps once for all rules (the Lens's batches are the same for every rule)."""
    from semlens_widgets.lens_pipeline import Pipeline

    original = Pipeline.heatmaps_of
    memo: dict = {}

    def heatmaps_of(self, layer, x, comps, *, image_index=None):
        key = (layer, tuple(x.shape), float(x.double().sum()), tuple(comps.tolist()),
               None if image_index is None else tuple(image_index.tolist()))
        if key not in memo:
            memo[key] = original(self, layer, x, comps, image_index=image_index)
        return memo[key]

    Pipeline.heatmaps_of = heatmaps_of


def demo_part(rules, args) -> dict:
    import semlens_widgets as slw

    world = slw.demo.load(n_per_class=args.n_per_class)
    world.dataset.materialize()
    _share_heatmaps()
    out = {}
    for rule in rules:
        t0 = time.perf_counter()
        lens = slw.Lens(world.model, world.dataset, world.fm, layers=world.layers, m=args.m, crop="crp",
                        crop_rule=rule, class_names=world.class_names, progress=False,
                        store=os.path.join(args.store_root, f"demo-{rule}-n{args.n_per_class}-m{args.m}"))
        lens.run()
        t_run = time.perf_counter() - t0
        lens.set_vocabulary(list(world.vocabulary))
        per_layer, all_aucs, all_best = {}, [], []
        for layer in lens.layers:
            got = label_auc(world, lens, layer)
            _, h, w = lens.model_inputs([0]).shape[1:]
            area = float(((lens.boxes(layer)[..., 2] - lens.boxes(layer)[..., 0]) *
                          (lens.boxes(layer)[..., 3] - lens.boxes(layer)[..., 1])).float().mean()) / (h * w)
            per_layer[layer] = {"label_auc": float(np.mean(got["aucs"])), "n_labelled": got["n_labelled"],
                                "best_concept_auc": float(np.mean(got["best"])), "box_area": area}
            all_aucs += got["aucs"]
            all_best += got["best"]
        ev = slw.demo.evaluate(lens, world)
        out[rule] = {
            "label_auc_all": float(np.mean(all_aucs)), "n_labelled": len(all_aucs),
            "best_concept_auc_all": float(np.mean(all_best)), "per_layer": per_layer,
            "label_accuracy": ev.label_accuracy, "search_precision_at_5": ev.search_precision_at_5,
            "shortcut_found": bool(ev.shortcut_found), "meets_targets": bool(ev.meets_targets),
            "conservation": lens.conservation().to_dict(orient="records"), "run_seconds": round(t_run, 1),
        }
        r = out[rule]
        b4 = per_layer.get("block4", {})
        print(f"[demo] {rule:>12}: label AUC all {r['label_auc_all']:.3f} ({r['n_labelled']} labelled; best concept "
              f"{r['best_concept_auc_all']:.3f}) | block4 {b4.get('label_auc', float('nan')):.3f} "
              f"({b4.get('n_labelled', 0)}; best {b4.get('best_concept_auc', float('nan')):.3f}) | label acc "
              f"{ev.label_accuracy:.3f}, P@5 {ev.search_precision_at_5:.3f}, shortcut "
              f"{'yes' if ev.shortcut_found else 'no'} | box area "
              + ", ".join(f"{k} {v['box_area']:.2f}" for k, v in per_layer.items())
              + f" | run {t_run:.0f} s", flush=True)
    return out


def real_part(rules, args) -> dict:
    from _real_models import augmented_photos, lite0, normalize

    from semlens_widgets.kernels.collect import collect_topm
    from semlens_widgets.kernels.crops import box_area, boxes_from_heatmaps, crp_heatmaps
    from semlens_widgets.kernels.lrp import resolve_composite

    model = lite0()
    images = augmented_photos(args.n, 224, seed=0)
    x = normalize(images)
    composite = resolve_composite(model, example_input=x[:2])
    layers = ["_blocks.14", "_blocks.15"]

    class Set(torch.utils.data.Dataset):
        def __len__(self):
            return x.shape[0]

        def __getitem__(self, i):
            return x[i], 0

    topm = collect_topm(model, Set(), layers, args.real_m, batch_size=32, progress=False).topm
    g = torch.Generator().manual_seed(0)
    out = {}
    for layer in layers:
        idx = topm[layer].indices  # [C, m]
        channels = torch.randperm(idx.shape[0], generator=g)[: args.channels]
        pairs_idx = idx[channels].reshape(-1)
        pairs_comp = channels.repeat_interleave(idx.shape[1])
        heats = []
        order = torch.argsort(pairs_idx, stable=True)
        heat = torch.empty(pairs_idx.numel(), 224, 224)
        for s in range(0, order.numel(), 32):
            pos = order[s : s + 32]
            uniq, inv = torch.unique(pairs_idx[pos], return_inverse=True)
            heat[pos] = crp_heatmaps(model, x[uniq], layer, pairs_comp[pos], composite, image_index=inv).cpu()
        heats.append(heat)
        out[layer] = {}
        for rule in rules:
            boxes = boxes_from_heatmaps(heat, crop_rule=rule)
            area = box_area(boxes, 224, 224)
            out[layer][rule] = {"mean_area": float(area.mean()), "full_share": float((area >= 0.999).float().mean()),
                                "n": int(area.numel())}
        print(f"[real] {layer} ({len(channels)} channels x m={idx.shape[1]}, {args.n} photos): " + ", ".join(
            f"{rule} area {v['mean_area']:.2f} (full {v['full_share']:.0%})" for rule, v in out[layer].items()),
            flush=True)
    return out


def main() -> None:
    from semlens_widgets.kernels.crops import CROP_RULES

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rules", default=",".join(CROP_RULES))
    ap.add_argument("--store-root", default="/tmp/bench-crop-rules")
    ap.add_argument("--n-per-class", type=int, default=None, help="demo images per class (default: the full split)")
    ap.add_argument("--m", type=int, default=30, help="demo concept examples per component")
    ap.add_argument("--n", type=int, default=None, help="augmented photos (default 256, quick 48)")
    ap.add_argument("--real-m", type=int, default=None, help="examples per channel on Lite0 (default 16, quick 4)")
    ap.add_argument("--channels", type=int, default=None, help="channels per Lite0 layer (default 16, quick 4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.n_per_class = args.n_per_class or 40
    args.n = args.n or (48 if args.quick else 256)
    args.real_m = args.real_m or (4 if args.quick else 16)
    args.channels = args.channels or (4 if args.quick else 16)
    torch.set_num_threads(args.threads)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    bad = [r for r in rules if r not in CROP_RULES]
    if bad:
        ap.error(f"unknown rules {bad}; accepted: {list(CROP_RULES)}")
    fig = {"rules": rules}
    if not args.skip_demo:
        fig["demo"] = demo_part(rules, args)
    if not args.skip_real:
        fig["real"] = real_part(rules, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(fig, f, indent=1)


if __name__ == "__main__":
    main()
