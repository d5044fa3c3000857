"""GPU benchmark of a SemanticLens run: ResNet-50, layers 3 and 4, m = 30, 50,000 synthetic
224 x 224 images; each stage's time and its ratio to the bare work it wraps.

One command on a machine with a GPU (about 5 minutes on one recent data-centre GPU):

    python benchmarks/bench_gpu.py --out bench_gpu.json

Stages (each timed with the device synchronised before and after; every number is printed and,
with ``--out``, written as JSON):

1. ``loader``: the collection DataLoader alone (pinned batches copied to the device): the data
   rate that bounds everything else;
2. ``forward``: the bare model forward over the same loader (``torch.inference_mode``, the same
   precision);
3. ``collect``: :func:`~semlens_widgets.kernels.collect.collect_topm` over all images for both
   layers (what ``Lens.run`` runs) -> ratio ``collect / forward`` (target <= 1.10 on a GPU);
4. ``crops`` per layer: the Lens's crop step (CRP heatmaps + boxes) for the first
   ``--components`` components (m examples each) -> ratio to the same number of batched
   forward + backward passes from the input to the layer (target <= 1.3), and the time
   extrapolated to all components;
5. ``embed``: the Lens's embedding step (load, crop, resize on the device, encode) for the same
   examples -> ratio to the bare foundation-model forward over prepared crops (target <= 1.25);
6. ``precision``: collection of the first ``--agree-n`` images in TF32 / bf16 / fp16 against fp32
   (exact): time ratio and how many components keep the identical top-m set (and the mean
   overlap) -- the evidence for the precision choice;
7. ``channels_last``: bare forward and collection with a channels-last copy of the model;
8. ``syncs`` (CUDA only): host synchronisations of the collection loop, counted with
   ``torch.cuda.set_sync_debug_mode('warn')`` over k and 2k batches: equal counts mean no
   per-batch sync;
9. ``--full``: the whole ``Lens.run`` (collect + crops + embed of every component, in memory)
   with its per-step times.

The images are generated from their index in the DataLoader workers (a 28 x 28 random pattern
upsampled to 224: cheap, deterministic, O(1) memory); the model and the foundation model have
random weights (nothing is downloaded). Check that it works without a GPU (seconds):

    python benchmarks/bench_gpu.py --tiny

No asserts: one run, one machine; the printed ratios are the result.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import traceback
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from semlens_widgets.kernels.collect import PRECISIONS, _precision, collect_topm  # noqa: E402
from semlens_widgets.kernels.data import build_loader  # noqa: E402


class SyntheticImages(Dataset):
    """``n`` images ``[3, size, size]`` in [0, 1] made from their index: a seeded 28 x 28 random
    pattern, bilinearly upsampled (deterministic, O(1) memory); label ``i % classes``."""

    def __init__(self, n: int, size: int, classes: int = 1000):
        self.n, self.size, self.classes = n, size, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(int(i))
        small = torch.rand(1, 3, 28, 28, generator=g)
        return F.interpolate(small, size=(self.size, self.size), mode="bilinear", align_corners=False)[0], i % self.classes


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self.t


class _Stop(Exception):
    pass


def forward_to(model: torch.nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of module ``layer`` on ``x``; the forward stops there (as CRP's local start does)."""
    out = {}

    def hook(_m, _i, o):
        out["o"] = o
        raise _Stop

    h = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        h.remove()
    return out["o"]


def build_model(arch: str, classes: int) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(num_classes=classes).eval()


def build_fm(spec: str, device: torch.device):
    from semlens_widgets.foundation import FoundationModel

    if spec == "demo":
        from semlens_widgets.demo.models import load_fm

        return load_fm(device=str(device))
    from semlens_widgets.lens_open import parse_fm

    name, pretrained = parse_fm(spec)
    torch.manual_seed(0)
    return FoundationModel.open_clip(name, pretrained=pretrained, device=device)


def topm_agreement(ref, other, layers) -> dict:
    """Per layer: the share of components whose top-m sets are identical, and the mean overlap."""
    out = {}
    for name in layers:
        a, b = ref.topm[name].indices, other.topm[name].indices
        same = sum(set(a[k].tolist()) == set(b[k].tolist()) for k in range(a.shape[0]))
        overlap = sum(len(set(a[k].tolist()) & set(b[k].tolist())) for k in range(a.shape[0])) / a.numel()
        out[name] = {"identical_sets": same / a.shape[0], "overlap": overlap}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="resnet50", help="torchvision model (random weights)")
    ap.add_argument("--layers", default="layer3,layer4")
    ap.add_argument("--n", type=int, default=50_000, help="images")
    ap.add_argument("--size", type=int, default=224, help="image side")
    ap.add_argument("--m", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=None, help="default: Lens(batch_size=None)'s choice")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 8 on CUDA, 0 on CPU)")
    ap.add_argument("--components", type=int, default=128, help="components per layer timed in crops/embed")
    ap.add_argument("--fm", default="ViT-B-32", help="open_clip NAME[@PRETRAINED] (random weights without @), or 'demo'")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS, help="precision of stages 1-3 (default fp32)")
    ap.add_argument("--compare", default="tf32,bf16,fp16", help="precisions compared with fp32 in stage 6")
    ap.add_argument("--agree-n", type=int, default=5000, help="images of the precision comparison")
    ap.add_argument("--no-channels-last", action="store_true", help="skip stage 7")
    ap.add_argument("--full", action="store_true", help="also run the whole Lens.run (stage 9)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--tiny", action="store_true",
                    help="a smoke run of every stage on the CPU: ResNet-18 layer1,layer2, 32 images of 32 px, m=3, "
                         "2 components, the demo CLIP, --full")
    args = ap.parse_args(argv)
    if args.tiny:
        args.device, args.arch, args.layers, args.n, args.size, args.m = "cpu", "resnet18", "layer1,layer2", 32, 32, 3
        args.components, args.fm, args.agree_n, args.compare = 2, "demo", 32, "bf16"
        args.batch_size, args.full = args.batch_size or 16, True
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    layers = [l.strip() for l in args.layers.split(",") if l.strip()]
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)
    results: dict = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "arch": args.arch, "layers": layers,
        "n": args.n, "size": args.size, "m": args.m, "workers": workers, "precision": args.precision, "stages": {},
    }
    stages = results["stages"]

    def report(name: str, **kw) -> None:
        stages[name] = kw
        text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in kw.items())
        print(f"{name:<28} {text}", flush=True)

    def stage(fn):
        try:
            fn()
        except Exception as e:  # one failing stage must not cost the others (a GPU run is one shot)
            traceback.print_exc()
            stages[fn.__name__] = {"error": f"{type(e).__name__}: {e}"}

    model = build_model(args.arch, 1000).to(device)
    data = SyntheticImages(args.n, args.size)
    if args.batch_size is None:
        from semlens_widgets.lens_device import default_batch_size

        args.batch_size = default_batch_size(model, (3, args.size, args.size), device)
    bs = args.batch_size
    results["batch_size"] = bs
    print(f"{results['device']}: {args.arch} {layers} m={args.m}, {args.n:,} images {args.size}px, batch {bs}, "
          f"{workers} workers, precision {args.precision}", flush=True)
    col: dict = {}

    # warm-up (untimed): kernels chosen, caches filled, lazy initialisation done
    with torch.inference_mode(), _precision(device, args.precision):
        warm = torch.stack([data[i][0] for i in range(min(bs, args.n))]).to(device)
        for _ in range(2):
            model(warm)
    sync(device)

    def loader():
        ld, _ = build_loader(data, bs, workers, pin_memory=device.type == "cuda")
        with Clock(device) as c:
            for _, (x, _y) in ld:
                x.to(device, non_blocking=True)
        report("loader", seconds=c.seconds, images_per_s=args.n / c.seconds)

    def forward():
        ld, _ = build_loader(data, bs, workers, pin_memory=device.type == "cuda")
        with torch.inference_mode(), _precision(device, args.precision), Clock(device) as c:
            for _, (x, _y) in ld:
                model(x.to(device, non_blocking=True))
        col["forward"] = c.seconds
        report("forward", seconds=c.seconds, images_per_s=args.n / c.seconds)

    def collect():
        with Clock(device) as c:
            col["res"] = collect_topm(model, data, layers, args.m, batch_size=bs, num_workers=workers, device=device,
                                      progress=False, precision=args.precision)
        kw = {"seconds": c.seconds, "images_per_s": args.n / c.seconds}
        if "forward" in col:
            kw["ratio_to_forward"] = c.seconds / col["forward"]
        report("collect", **kw)

    for fn in (loader, forward, collect):
        stage(fn)
    if "res" not in col:
        print("collection failed: the later stages need its top-m", flush=True)
        return _finish(results, args)

    # ---- crops and embeddings through the Lens's own steps ------------------------------------
    from semlens_widgets.lens import Lens
    from semlens_widgets.results import TopM

    fm = build_fm(args.fm, device)
    lens = Lens(model, data, fm, layers, m=args.m, crop="crp", store=None, device=device, batch_size=bs,
                num_workers=workers, progress=False)
    pipe = lens.pipeline
    for name, t in col["res"].topm.items():
        pipe._topm[name] = TopM(t.indices, t.values, t.m, t.n_seen)
    boxes: dict = {}

    def crops():
        for layer in layers:
            C = pipe._topm[layer].indices.shape[0]
            k = min(args.components, C)
            idx = pipe._topm[layer].indices[:k]
            pipe._compute_boxes(layer, idx[:1], torch.arange(1))  # warm-up (untimed)
            with Clock(device) as c:
                boxes[layer] = pipe._compute_boxes(layer, idx, torch.arange(k))["boxes"]
            # the same number of batched forward + backward passes from the input to the layer
            flat = idx.reshape(-1)
            with Clock(device) as b:
                for s in range(0, flat.numel(), bs):
                    x = data_inputs(flat[s:s + bs]).to(device).requires_grad_(True)
                    out = forward_to(model, layer, x)
                    torch.autograd.grad(out.sum(), x)
            report(f"crops {layer}", components=k, heatmaps=flat.numel(), seconds=c.seconds,
                   heatmaps_per_s=flat.numel() / c.seconds, ratio_to_fwd_bwd=c.seconds / b.seconds,
                   all_components_s=c.seconds * C / k)

    def data_inputs(indices: torch.Tensor) -> torch.Tensor:
        return pipe.data.model_inputs(indices)

    def embed():
        for layer in layers:
            if layer not in boxes:
                continue
            k = boxes[layer].shape[0]
            idx = pipe._topm[layer].indices[:k].reshape(-1)
            bx = boxes[layer].reshape(-1, 4)
            pipe._embed_crops(idx[:2], bx[:2])  # warm-up (untimed)
            with Clock(device) as c:
                pipe._embed_crops(idx, bx)
            from semlens_widgets.kernels.crops import crop_resize

            dev = getattr(fm, "device", device)
            prepared = crop_resize(pipe.data.images(idx).to(dev), bx.to(dev), pipe.crop_side)
            fbs = int(getattr(fm, "batch_size", bs))
            with Clock(device) as b:
                for s in range(0, prepared.shape[0], fbs):
                    fm.encode_images(prepared[s:s + fbs])
            C = pipe._topm[layer].indices.shape[0]
            report(f"embed {layer}", crops=idx.numel(), seconds=c.seconds, crops_per_s=idx.numel() / c.seconds,
                   ratio_to_fm_forward=c.seconds / b.seconds, all_components_s=c.seconds * C / k)

    def precision():
        sub = torch.utils.data.Subset(data, range(min(args.agree_n, args.n)))
        with Clock(device) as c:
            ref = collect_topm(model, sub, layers, args.m, batch_size=bs, num_workers=workers, device=device,
                               progress=False, precision="fp32")
        report("precision fp32", images=len(sub), seconds=c.seconds)
        for p in [q.strip() for q in args.compare.split(",") if q.strip()]:
            with Clock(device) as d:
                got = collect_topm(model, sub, layers, args.m, batch_size=bs, num_workers=workers, device=device,
                                   progress=False, precision=p)
            agree = topm_agreement(ref, got, layers)
            kw = {"seconds": d.seconds, "ratio_to_fp32": d.seconds / c.seconds}
            for name, a in agree.items():
                kw[f"{name}_identical_sets"] = a["identical_sets"]
                kw[f"{name}_overlap"] = a["overlap"]
            report(f"precision {p}", **kw)

    def channels_last():
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ld, _ = build_loader(data, bs, workers, pin_memory=device.type == "cuda")
        with torch.inference_mode(), _precision(device, args.precision), Clock(device) as c:
            for _, (x, _y) in ld:
                cl(x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last))
        with Clock(device) as d:
            collect_topm(cl, data, layers, args.m, batch_size=bs, num_workers=workers, device=device, progress=False,
                         precision=args.precision, channels_last=True)
        kw = {"forward_s": c.seconds, "collect_s": d.seconds, "collect_ratio": d.seconds / c.seconds}
        if "forward" in col:
            kw["forward_vs_contiguous"] = c.seconds / col["forward"]
        report("channels_last", **kw)

    def syncs():
        if device.type != "cuda":
            return
        counts = []
        for nb in (4, 8):
            sub = torch.utils.data.Subset(data, range(min(nb * bs, args.n)))
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    collect_topm(model, sub, layers, args.m, batch_size=bs, num_workers=workers, device=device,
                                 progress=False, precision=args.precision, keep_state=True)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            counts.append(sum("synchroniz" in str(x.message) for x in w))
        report("syncs", batches_4=counts[0], batches_8=counts[1], per_batch_syncs=(counts[1] - counts[0]) / 4)

    def full():
        times: dict = {}
        run_lens = Lens(model, data, fm, layers, m=args.m, crop="crp", store=None, device=device, batch_size=bs,
                        num_workers=workers, progress=True)
        with Clock(device) as c:
            run_lens.run(on_step=lambda step, layer, s: times.__setitem__(f"{step} {layer or ''}".strip(), s))
        report("full Lens.run", seconds=c.seconds, **{k: v for k, v in times.items()})

    for fn in (crops, embed, precision) + (() if args.no_channels_last else (channels_last,)) + (syncs,) \
            + ((full,) if args.full else ()):
        stage(fn)
    return _finish(results, args)


def _finish(results: dict, args) -> int:
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
        print(f"results written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
