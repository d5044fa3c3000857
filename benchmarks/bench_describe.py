"""Open-vocabulary descriptions (LINE loop), label faithfulness and SAE latents on the demo world,
through the Lens API (``lens.describe``, ``lens.faithfulness``, ``Lens(..., saes=...)``).

Prints, for the demo classifier's block4 (the demo renderer as text-to-image generator,
``world.proposer`` as the offline proposer, SemanticLens's label candidates as its start):

1. Label faithfulness over every component that ``lens.label(vocabulary)`` labels: the mean AUC
   of the fixed-vocabulary labels vs of the loop's final descriptions, both re-measured by
   ``lens.faithfulness`` on fresh images (seed 1, 32 per concept) against control images the loop
   never saw (300 dataset samples; the loop used 200 others); how often the description is a
   compound that the single-word vocabulary lacks; how often the loop flags a component
   polysemantic; the loop's first proposal vs its best in-loop AUC.
2. A TopK SAE on block4 (every spatial position; 512 latents, k=8, ``SAE.fit(lens, layer=...)``)
   as the layer ``block4:sae`` of a Lens next to ``block4`` (the same crop mode for both, default
   activation crops): the mean label AUC of neurons and latents on generated images and on the
   dataset (ground-truth presence of the label's concept), and their mean clarity.
3. ``--sweep``: the same for n_latents in (256, 512) x k in (4, 8, 16) (latents only; m=15).
4. Times: describe per component (each proposal drawn; and with the images of a concept shared
   between components), faithfulness of one layer (128 components), the SAE fit.

Run:  python benchmarks/bench_describe.py [--quick] [--sweep] [--store DIR] [--json OUT]
      (about 10 minutes on 2 CPU cores without --sweep, the sweep adds about as much; the first
      run also builds the demo lens and the SAE lens in their stores). Times are indicative only
      on a shared machine. No asserts.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="/tmp/bench-describe-store", help="store of the demo lens (crop='crp')")
    ap.add_argument("--sae-store", default="/tmp/bench-describe-sae-store", help="store of the block4 + SAE lens")
    ap.add_argument("--sae-crop", default="activation", choices=["activation", "crp"],
                    help="crop mode of the SAE comparison (both layers)")
    ap.add_argument("--quick", action="store_true", help="20 components, skip the SAE part")
    ap.add_argument("--sweep", action="store_true", help="also n_latents 256/512 x k 4/8/16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-images", type=int, default=16)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    torch.manual_seed(0)

    import semlens_widgets as slw

    world = slw.demo.load()
    world.dataset.materialize()
    lens = slw.Lens(world.model, world.dataset, world.fm, layers=world.layers, m=30, crop="crp",
                    class_names=world.class_names, store=args.store, progress=False)
    lens.run()
    layer = "block4"
    vocab = world.concepts()
    lens.set_vocabulary(vocab)
    labels = lens.label(vocab, layer).table["label"].tolist()
    perm = np.random.default_rng(0).permutation(len(world.dataset))
    ctrl_loop, ctrl_eval = perm[:200].tolist(), perm[200:500].tolist()  # the loop's / the evaluation's controls

    comps = [k for k, lab in enumerate(labels) if lab is not None]
    if args.quick:
        comps = comps[:20]

    def describe(k, generator):
        return lens.describe(layer, k, generator, proposer=world.proposer, rounds=args.rounds,
                             n_images=args.n_images, control=ctrl_loop)

    cache: dict = {}

    def shared_generator(concept, n, seed):  # the images of a concept drawn once for all components
        key = (concept, n, seed)
        if key not in cache:
            cache[key] = world.generator(concept, n, seed)
        return cache[key]

    describe(comps[0], world.generator)  # control activations stored, caches warm
    t = time.perf_counter()
    for k in comps[:8]:
        describe(k, world.generator)
    t_cold = (time.perf_counter() - t) / len(comps[:8])
    t = time.perf_counter()
    descs = {k: describe(k, shared_generator) for k in comps}
    t_shared = (time.perf_counter() - t) / len(comps)

    voc_labels = {k: labels[k] for k in comps}
    best = {k: descs[k].best for k in comps}
    fresh = dict(n_images=32, seed=1, control=ctrl_eval)
    key = lens.describer.keys.faithfulness(layer).key
    lens.store.delete(key)  # time a computation, not a read
    t = time.perf_counter()
    f_voc = lens.faithfulness(layer, world.generator, labels=voc_labels, **fresh)
    t_faith = time.perf_counter() - t
    f_desc = lens.faithfulness(layer, world.generator, labels=best, **fresh)
    s_voc, s_desc = f_voc.attrs["summary"], f_desc.attrs["summary"]
    first_auc = np.mean([descs[k].history.auc[0] for k in comps])
    loop_auc = np.mean([descs[k].auc for k in comps])
    compound = np.mean([descs[k].best not in vocab for k in comps])
    poly = np.mean([descs[k].polysemantic for k in comps])
    fig = {
        "layer": layer,
        "n_labelled": len(comps),
        "vocabulary_label_auc": s_voc["mean_auc"],
        "description_auc": s_desc["mean_auc"],
        "gain": s_desc["mean_auc"] - s_voc["mean_auc"],
        "loop_first_proposal_auc": float(first_auc),
        "loop_best_auc_in_loop": float(loop_auc),
        "compound_share": float(compound),
        "polysemantic_share": float(poly),
        "describe_seconds_per_component": round(t_cold, 3),
        "describe_seconds_per_component_shared_images": round(t_shared, 3),
        "faithfulness_seconds_per_layer": round(t_faith, 3),
    }
    print(f"block4, {len(comps)} labelled components (fresh images: seed 1, 32 per concept; 300 held-out controls)")
    print(f"  vocabulary labels  mean AUC {s_voc['mean_auc']:.3f}  (median {s_voc['median_auc']:.3f})")
    print(f"  descriptions       mean AUC {s_desc['mean_auc']:.3f}  (median {s_desc['median_auc']:.3f})  gain {fig['gain']:+.3f}")
    print(f"  in the loop: first proposal {first_auc:.3f} -> best {loop_auc:.3f}")
    print(f"  compound descriptions {compound:.1%}, polysemantic {poly:.1%}")
    print(f"  describe {t_cold:.2f} s/component ({t_shared:.2f} s with shared images), "
          f"faithfulness {t_faith:.2f} s/layer ({len(comps)} labelled components)")
    for k in comps[:12]:
        print(f"    {k:3d}  {labels[k]:>10s} {f_voc.auc[k]:.3f}  ->  {best[k]} {f_desc.auc[k]:.3f}")

    if not args.quick:
        fig["sae"] = sae_part(world, lens, vocab, ctrl_eval, args, layer)
        if args.sweep:
            fig["sweep"] = sweep(world, lens, vocab, ctrl_eval, args, layer)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(fig, f, indent=1)


def _dataset_auc(world, lens, layer, labels) -> float:
    """Mean AUC of each labelled component's activation on the dataset for its label's concept
    (the world's ground-truth presence)."""
    acts = lens.describer.activations(layer, lens.model_inputs(range(len(world.dataset))))
    aucs = world.ground_truth.aucs(layer, activations=acts)  # [C, concepts]
    got = [aucs.loc[k, lab] for k, lab in enumerate(labels) if lab is not None and lab in aucs.columns]
    return float(np.mean(got)) if got else float("nan")


def _layer_figures(world, lens, layer, vocab, ctrl_eval) -> dict:
    labels = lens.label(vocab, layer).table["label"].tolist()
    t = time.perf_counter()
    f = lens.faithfulness(layer, world.generator, labels=labels, n_images=32, seed=1, control=ctrl_eval)
    seconds = time.perf_counter() - t
    s = f.attrs["summary"]
    clar = lens.clarity(layer).float()
    lab_mask = torch.tensor([lab is not None for lab in labels])
    alive = lens.topm(layer).values[:, 0] > 0
    return {
        "n": len(labels),
        "n_labelled": s["n_labelled"],
        "label_auc_generated": s["mean_auc"],
        "label_auc_dataset": _dataset_auc(world, lens, layer, labels),
        "clarity_mean": float(clar[alive].nanmean()),
        "clarity_mean_labelled": float(clar[lab_mask & alive].nanmean()),
        "n_alive": int(alive.sum()),
        "faithfulness_seconds": round(seconds, 2),
    }


def sae_part(world, base_lens, vocab, ctrl_eval, args, layer) -> dict:
    import semlens_widgets as slw

    t = time.perf_counter()
    sae = slw.SAE.fit(base_lens, 512, "topk", k=8, layer=layer, seed=0, progress=False)
    t_fit = time.perf_counter() - t
    print(f"TopK SAE on block4 (512 latents, k=8): {sae.fit_info}  ({t_fit:.1f} s)")
    lens = slw.Lens(world.model, world.dataset, world.fm, layers=[layer, f"{layer}:sae"], saes={layer: sae}, m=30,
                    crop=args.sae_crop, class_names=world.class_names, store=args.sae_store, progress=False)
    lens.run()
    out = {"fit_info": sae.fit_info, "fit_seconds": round(t_fit, 1), "crop": args.sae_crop}
    for name, lay in (("neurons", layer), ("latents", f"{layer}:sae")):
        out[name] = r = _layer_figures(world, lens, lay, vocab, ctrl_eval)
        print(f"  {name:8s}: {r['n_labelled']}/{r['n']} labelled, label AUC {r['label_auc_generated']:.3f} on generated "
              f"images, {r['label_auc_dataset']:.3f} on the dataset; clarity {r['clarity_mean']:.3f} (labelled "
              f"{r['clarity_mean_labelled']:.3f}); {r['n_alive']} ever active; faithfulness {r['faithfulness_seconds']} s")
    return out


def sweep(world, base_lens, vocab, ctrl_eval, args, layer) -> list:
    import semlens_widgets as slw

    rows = []
    print("sweep (latents only, m=15):")
    for n_latents in (256, 512):
        for k in (4, 8, 16):
            sae = slw.SAE.fit(base_lens, n_latents, "topk", k=k, layer=layer, seed=0, progress=False)
            lens = slw.Lens(world.model, world.dataset, world.fm, layers=[f"{layer}:sae"], saes={layer: sae}, m=15,
                            crop=args.sae_crop, store=f"{args.sae_store}-{n_latents}-{k}", progress=False)
            lens.run()
            r = _layer_figures(world, lens, f"{layer}:sae", vocab, ctrl_eval)
            r.update(n_latents=n_latents, k=k, fvu=sae.fit_info["fvu"], dead=sae.fit_info["dead"])
            rows.append(r)
            print(f"  n_latents {n_latents:3d} k {k:2d}: fvu {r['fvu']:.3f}, {r['n_labelled']} labelled, label AUC "
                  f"{r['label_auc_generated']:.3f} (dataset {r['label_auc_dataset']:.3f}), clarity {r['clarity_mean']:.3f}")
    return rows


if __name__ == "__main__":
    main()
