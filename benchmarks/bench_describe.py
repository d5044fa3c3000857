"""Open-vocabulary descriptions (LINE loop), label faithfulness and SAE latents on the demo world.

Prints, for the demo classifier's block4 (the demo renderer as text-to-image generator, the
offline proposer, SemanticLens's label candidates as its start):

1. Label faithfulness over every component that ``lens.label(vocabulary)`` labels: the mean AUC
   of the fixed-vocabulary labels vs of the loop's final descriptions, both re-measured on
   fresh images (seed 1, 32 images) against control images the loop never saw (300 test
   images); how often the description is a compound that the single-word vocabulary lacks;
   how often the loop flags a component polysemantic.
2. A TopK SAE on block4 (every spatial position; 512 latents, k=8): a Lens over
   ``block1..block4 -> sae`` (crop="activation" for both layers, the same crops for a fair
   comparison) labels neurons and latents with the vocabulary; their mean label AUC on
   generated images and on the dataset (ground-truth presence), and their mean clarity.
3. Times: describe per component (no image cache; and with the generated images shared
   between components), faithfulness of a layer, the SAE fit.

Run:  python benchmarks/bench_describe.py [--quick] [--store DIR] [--json OUT]
      (about 5-10 minutes on 2 CPU cores; the first run also builds the demo lens and the SAE
      lens in their stores). Times are indicative only on a shared machine. No asserts.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="/tmp/h5-demo-store", help="store of the demo lens (crop='crp')")
    ap.add_argument("--sae-store", default="/tmp/h13-sae-store", help="store of the block4 + SAE lens")
    ap.add_argument("--quick", action="store_true", help="20 components, skip the SAE part")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-images", type=int, default=16)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    torch.manual_seed(0)

    import semlens_widgets as slw
    from semlens_widgets.demo import world as W
    from semlens_widgets.kernels.describe import OfflineProposer, describe_component
    from semlens_widgets.kernels.faithfulness import faithfulness_summary, layer_faithfulness

    world = slw.demo.load()
    lens = slw.Lens(world.model, world.dataset, world.fm, layers=world.layers, m=30, crop="crp",
                    class_names=world.class_names, store=args.store, progress=False)
    lens.run()
    layer = "block4"
    vocab = world.concepts()
    labels = lens.label(vocab, layer).table["label"].tolist()
    scores = lens.search_scores(vocab, layer)  # [V, C]: s(c, theta) - s(null, theta)

    def pooled(module_path):
        mod = dict(world.model.named_modules())[module_path]

        @torch.no_grad()
        def acts(x):  # images [n, 3, 64, 64] -> [n, C] max-pooled (the lens's pooling)
            out = []
            h = mod.register_forward_hook(lambda m, i, o: out.append(o.amax((2, 3))))
            try:
                world.model(x)
            finally:
                h.remove()
            return out[0]

        return acts

    acts = pooled(layer)
    perm = np.random.default_rng(0).permutation(len(world.dataset))
    ctrl_loop = world.dataset.images(perm[:200].tolist())  # the loop's control images
    ctrl_eval = world.dataset.images(perm[200:500].tolist())  # held out for the evaluation
    A_loop, A_eval = acts(ctrl_loop), acts(ctrl_eval)

    cache: dict = {}

    def cached_generator(concept, n, seed):
        key = (concept, n, seed)
        if key not in cache:
            cache[key] = W.generator(concept, n, seed)
        return cache[key]

    comps = [k for k, lab in enumerate(labels) if lab is not None]
    if args.quick:
        comps = comps[:20]

    def describe(k, gen):
        cand = [vocab[i] for i in torch.argsort(scores[:, k], descending=True).tolist()]
        prop = OfflineProposer(cand, W.VOCABULARY, W.CATEGORY_ROLES, scene_phrases=W._BG_PHRASE)
        return describe_component(lambda x: acts(x)[:, k], gen, prop, A_loop[:, k], rounds=args.rounds,
                                  n_images=args.n_images, seed=0, layer=layer, component=k)

    t = time.perf_counter()
    for k in comps[:8]:
        describe(k, W.generator)
    t_cold = (time.perf_counter() - t) / len(comps[:8])
    t = time.perf_counter()
    descs = {k: describe(k, cached_generator) for k in comps}
    t_cached = (time.perf_counter() - t) / len(comps)

    voc_labels = [labels[k] if k in descs else None for k in range(len(labels))]
    best = [descs[k].best if k in descs else None for k in range(len(labels))]
    t = time.perf_counter()
    f_voc = layer_faithfulness(acts, W.generator, voc_labels, A_eval, n_images=32, seed=1)
    t_faith = time.perf_counter() - t
    f_desc = layer_faithfulness(acts, W.generator, best, A_eval, n_images=32, seed=1)
    s_voc, s_desc = faithfulness_summary(f_voc), faithfulness_summary(f_desc)
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
        "describe_seconds_per_component_shared_images": round(t_cached, 3),
        "faithfulness_seconds_per_layer": round(t_faith, 3),
    }
    print(f"block4, {len(comps)} labelled components (fresh images: seed 1, 32 per concept; 300 held-out controls)")
    print(f"  vocabulary labels  mean AUC {s_voc['mean_auc']:.3f}  (median {s_voc['median_auc']:.3f})")
    print(f"  descriptions       mean AUC {s_desc['mean_auc']:.3f}  (median {s_desc['median_auc']:.3f})  gain {fig['gain']:+.3f}")
    print(f"  in the loop: first proposal {first_auc:.3f} -> best {loop_auc:.3f}")
    print(f"  compound descriptions {compound:.1%}, polysemantic {poly:.1%}")
    print(f"  describe {t_cold:.2f} s/component ({t_cached:.2f} s with shared images), faithfulness {t_faith:.2f} s/layer")
    examples = [(k, labels[k], descs[k].best, f_voc.auc[k], f_desc.auc[k]) for k in comps[:12]]
    for k, lab, b, a, c in examples:
        print(f"    {k:3d}  {lab:>10s} {a:.3f}  ->  {b} {c:.3f}")

    if not args.quick:
        fig.update(sae_part(world, acts, A_eval, vocab, args, layer))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(fig, f, indent=1)


def sae_part(world, acts, A_eval_neurons, vocab, args, layer) -> dict:
    import semlens_widgets as slw
    from semlens_widgets.demo import world as W
    from semlens_widgets.kernels.faithfulness import faithfulness_summary, layer_faithfulness

    # block4 maps at every spatial position of the dataset
    mod = dict(world.model.named_modules())[layer]
    maps = []
    h = mod.register_forward_hook(lambda m, i, o: maps.append(o.detach()))
    with torch.no_grad():
        for s in range(0, len(world.dataset), 256):
            world.model(world.dataset.images(range(s, min(s + 256, len(world.dataset)))))
    h.remove()
    X = torch.cat(maps)
    t = time.perf_counter()
    sae = slw.SAE.fit(X, 512, "topk", k=8, seed=0, progress=False)
    t_fit = time.perf_counter() - t
    print(f"TopK SAE on block4: {sae.fit_info}  ({t_fit:.1f} s)")

    trunk = torch.nn.Sequential(OrderedDict([(n, getattr(world.model, n)) for n in ("block1", "block2", "block3", "block4")]))
    trunk.add_module("sae", sae)
    trunk.eval()
    lens = slw.Lens(trunk, world.dataset, world.fm, layers=[layer, "sae"], m=30, crop="activation",
                    store=args.sae_store, progress=False)
    lens.run()

    @torch.no_grad()
    def pooled_all(x):  # [n, 3, 64, 64] -> ([n, 128], [n, 512])
        feats = trunk[:4](x)
        return feats.amax((2, 3)), sae(feats).amax((2, 3))

    perm = np.random.default_rng(0).permutation(len(world.dataset))
    ctrl = world.dataset.images(perm[200:500].tolist())
    c_n, c_s = pooled_all(ctrl)
    out = {}
    gt = world.ground_truth
    for name, idx, ctrl_acts in (("neurons", 0, c_n), ("latents", 1, c_s)):
        lay = layer if name == "neurons" else "sae"
        labels = lens.label(vocab, lay).table["label"].tolist()
        f = layer_faithfulness(lambda x: pooled_all(x)[idx], W.generator, labels, ctrl_acts, n_images=32, seed=1)
        s = faithfulness_summary(f)
        # dataset AUC of each component for its label's concept (ground-truth presence)
        data_acts = torch.cat([pooled_all(world.dataset.images(range(a, min(a + 256, len(world.dataset)))))[idx]
                               for a in range(0, len(world.dataset), 256)])
        aucs = gt.aucs(layer, activations=data_acts)  # [C, concepts]
        d_auc = [aucs.loc[k, lab] for k, lab in enumerate(labels) if lab is not None and lab in aucs.columns]
        clar = lens.clarity(lay).float()
        lab_mask = torch.tensor([lab is not None for lab in labels])
        alive = (data_acts.amax(0) > 0)
        out[name] = {
            "n": len(labels),
            "n_labelled": s["n_labelled"],
            "label_auc_generated": s["mean_auc"],
            "label_auc_dataset": float(np.mean(d_auc)),
            "clarity_mean": float(clar[alive].mean()),
            "clarity_mean_labelled": float(clar[lab_mask & alive].mean()),
            "n_alive": int(alive.sum()),
        }
        print(f"  {name:8s}: {s['n_labelled']}/{len(labels)} labelled, label AUC {s['mean_auc']:.3f} on generated images, "
              f"{np.mean(d_auc):.3f} on the dataset; clarity {out[name]['clarity_mean']:.3f} "
              f"(labelled {out[name]['clarity_mean_labelled']:.3f}); {int(alive.sum())} ever active")
    return {"sae": {"fit_info": sae.fit_info, "fit_seconds": round(t_fit, 1), **out}}


if __name__ == "__main__":
    main()
