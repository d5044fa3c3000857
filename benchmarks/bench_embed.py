"""Embedding overhead of the Lens (issue 2 figure; target <= 1.25).

    ratio = time of the Lens's embedding step (load the display images of the concept examples,
            crop + resize them to the foundation model's input on tensors, encode, save the
            chunks and the final V / theta to a disk store)
            / time of a bare ``model.encode_image`` over the same number of already-prepared
              (cropped, resized, normalised) crops, same batch size.

Run from the repository root::

    python benchmarks/bench_embed.py                 # ViT-B-32 (random init, 224 px)
    python benchmarks/bench_embed.py --fm tiny       # a tiny CLIP: worst case for the ratio

Prints the measured times and the ratio (best of ``--repeats``). No downloads: the foundation
model has random weights, the model and data are synthetic. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import OrderedDict

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from semlens_widgets.foundation import FoundationModel  # noqa: E402
from semlens_widgets.lens import Lens  # noqa: E402

TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


class Net(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, width, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(width, width, 3, padding=1), relu2=nn.ReLU(),
        ))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, x):
        return self.head(self.features(x))


def make_fm(kind: str) -> FoundationModel:
    import open_clip

    if kind == "tiny":
        path = os.path.join(tempfile.mkdtemp(), "bench-tiny-clip.json")
        with open(path, "w") as f:
            json.dump(TINY_CFG, f)
        open_clip.add_model_config(path)
        return FoundationModel.open_clip("bench-tiny-clip", batch_size=64)
    return FoundationModel.open_clip("ViT-B-32", batch_size=64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fm", choices=["vit-b-32", "tiny"], default="vit-b-32")
    ap.add_argument("--components", type=int, default=16, help="components of the analysed layer")
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--n", type=int, default=200, help="dataset size")
    ap.add_argument("--size", type=int, default=96, help="dataset image side")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    fm = make_fm(args.fm)
    data = [(torch.rand(3, args.size, args.size), i % 10) for i in range(args.n)]
    layer = "features.relu2"
    with tempfile.TemporaryDirectory() as root:
        lens = Lens(Net(args.components), data, fm, [layer], m=args.m, crop="activation",
                    store=os.path.join(root, "store"), progress=False, batch_size=64)
        pipe = lens.pipeline  # the steps, one at a time
        pipe._collect()
        pipe._run_boxes(layer)
        idx, boxes = pipe._topm[layer].indices, pipe._boxes[layer]
        n_crops = idx.numel()

        # prepared crops: exactly what the Lens feeds the encoder, made once, outside the timing
        from semlens_widgets.kernels.crops import crop_resize

        side = pipe.crop_side
        prepared = fm.preprocess(crop_resize(lens.images(idx.reshape(-1)), boxes.reshape(-1, 4), side))
        bs = fm.batch_size

        def timed(fn) -> tuple[float, float]:
            """(wall seconds, CPU seconds of this process) of fn()."""
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            return time.perf_counter() - w0, time.process_time() - c0

        def bare() -> None:
            with torch.inference_mode():
                for i in range(0, n_crops, bs):
                    fm.model.encode_image(prepared[i : i + bs])

        def lens_step() -> None:
            pipe._embed(layer)

        timed(bare)  # warm-up (allocator, kernels)
        t_bare, t_lens = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            lens.store.delete_many(lens.store.keys("embed/"))
            t_lens.append(timed(lens_step))
            t_bare.append(timed(bare))
        print(f"foundation model: {fm!r}; crops: {n_crops} ({args.components} components x m={args.m}) "
              f"from {args.size}px images; batch {bs}; threads {args.threads}")
        for what, i in (("wall", 0), ("cpu", 1)):
            tb, tl = min(t[i] for t in t_bare), min(t[i] for t in t_lens)
            print(f"[{what}] bare encode_image over prepared crops: {tb:.3f} s  "
                  f"(runs: {', '.join(f'{t[i]:.3f}' for t in t_bare)})")
            print(f"[{what}] Lens embedding step:                   {tl:.3f} s  "
                  f"(runs: {', '.join(f'{t[i]:.3f}' for t in t_lens)})")
            pairs = sorted(l[i] / b[i] for l, b in zip(t_lens, t_bare))
            median = pairs[len(pairs) // 2] if len(pairs) % 2 else 0.5 * (pairs[len(pairs) // 2 - 1] + pairs[len(pairs) // 2])
            print(f"[{what}] embedding overhead ratio: best/best {tl / tb:.3f}, median of paired runs "
                  f"{median:.3f}  (target <= 1.25)")
        print("wall time is the figure; CPU time of this process is shown too because it is robust "
              "to other load on a shared machine.")


if __name__ == "__main__":
    main()
