"""Benchmark of the streaming top-m collection (issue 2 figures). Prints measured ratios.

1. Collection overhead: wall time of ``collect_topm`` for one layer over a dataset divided by a
   bare forward pass (``torch.inference_mode``) over the same DataLoader settings. Target <= 1.15.
   Bare and collect runs alternate 5 times; the minimum of each is compared (the
   least-disturbed run on a shared machine); the process CPU-time ratio is printed too (less
   sensitive to other processes on the machine).
   The same collection with a checkpoint of its running state saved to a real store every 2
   batches (the Lens saves one about every minute by default) is timed against it.
2. Peak memory of collection for N = 2,000 vs N = 20,000 samples (same model, layers, m), each
   in a fresh subprocess: peak RSS during the collection (Linux: VmHWM after resetting it with
   /proc/self/clear_refs; elsewhere ``ru_maxrss``) and its growth over the RSS right before
   the collection. Target: within 10 %. Nothing in the collection grows with N except the
   labels/predictions/visit counters (20 bytes per sample); a longer run can still show a
   higher peak from glibc's dynamic mmap threshold (heap fragmentation), which
   ``--fixed-malloc`` switches off (measured: growth 17.8 vs 18.1 MiB for N=2,000 vs 20,000).
   The dataset renders each image from its index, so the data itself needs O(1) memory.

Run:  python benchmarks/bench_collect.py            (about a minute on 2 CPU cores)
      python benchmarks/bench_collect.py --quick    (smaller sizes, a smoke run)
No asserts: the numbers are printed, one run, one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from semlens_widgets.kernels.collect import collect_topm  # noqa: E402


class SyntheticImages(Dataset):
    """N images [3, size, size] generated from the index (deterministic, O(1) memory), label i % 10."""

    def __init__(self, n: int, size: int):
        self.n = n
        self.size = size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, self.size, self.size, generator=g), i % 10


def build_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "resnet18":
        import torchvision

        return torchvision.models.resnet18(num_classes=10).eval()
    # small CNN for the memory runs (20,000 samples must pass in seconds)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()


def bare_forward(model: nn.Module, dataset: Dataset, batch_size: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of a bare inference pass over the DataLoader."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for x, _ in loader:
            model(x)
    return time.perf_counter() - start, time.process_time() - cpu


def timed_collect(model: nn.Module, dataset: Dataset, layer: str, m: int, batch_size: int,
                  checkpoint_every: int | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of collect_topm; with ``checkpoint_every``, the running state is saved to
    a real store (a temporary directory) every that many batches, as the Lens does."""
    import tempfile

    from semlens_widgets.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        kw = {}
        if checkpoint_every is not None:
            store = Store(tmp)

            def checkpoint(state):
                tensors, meta = state.state_dict()
                store.save("collect_checkpoint", tensors, "bench", meta=meta)

            kw = dict(checkpoint=checkpoint, checkpoint_every=checkpoint_every)
        start, cpu = time.perf_counter(), time.process_time()
        collect_topm(model, dataset, [layer], m, batch_size=batch_size, progress=False, **kw)
        return time.perf_counter() - start, time.process_time() - cpu


def overhead(n: int, size: int, batch_size: int, m: int, repeats: int) -> dict:
    model = build_model("resnet18")
    dataset = SyntheticImages(n, size)
    layer = "layer3"
    bare_forward(model, SyntheticImages(batch_size, size), batch_size)  # warm-up
    bare, coll, ckpt = [], [], []
    for _ in range(repeats):
        bare.append(bare_forward(model, dataset, batch_size))
        coll.append(timed_collect(model, dataset, layer, m, batch_size))
        ckpt.append(timed_collect(model, dataset, layer, m, batch_size, checkpoint_every=2))
    wall_b, cpu_b = [b[0] for b in bare], [b[1] for b in bare]
    wall_c, cpu_c = [c[0] for c in coll], [c[1] for c in coll]
    wall_k = [c[0] for c in ckpt]
    return {
        "model": "torchvision resnet18",
        "layer": layer,
        "n": n,
        "image": size,
        "batch_size": batch_size,
        "m": m,
        "bare_s": wall_b,
        "collect_s": wall_c,
        "ratio_min": min(wall_c) / min(wall_b),
        "ratio_median": sorted(wall_c)[len(wall_c) // 2] / sorted(wall_b)[len(wall_b) // 2],
        "cpu_ratio_min": min(cpu_c) / min(cpu_b),
        "checkpointed_s": wall_k,
        "checkpoint_ratio_min": min(wall_k) / min(wall_c),
        "checkpoints": (-(-n // batch_size) - 1) // 2,
    }


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def memory_child(n: int, size: int, batch_size: int, m: int) -> None:
    """Runs in a subprocess: collect over n samples, print peak RSS figures as JSON.

    The import of torch alone peaks higher than a small collection, so the process-lifetime
    peak (ru_maxrss) hides the collection; where Linux allows it, the peak mark is reset right
    before the collection and VmHWM read after it (peak during collection)."""
    model = build_model("small")
    dataset = SyntheticImages(n, size)
    collect_topm(model, SyntheticImages(8, size), ["2", "6"], m, batch_size=batch_size, progress=False)  # warm-up
    reset = _reset_peak_rss()
    before_kib = _status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    res = collect_topm(model, dataset, ["2", "6"], m, batch_size=batch_size, progress=False)
    elapsed = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert res.n_samples == n
    print(json.dumps({
        "n": n, "peak_mib": peak_kib / 1024, "before_mib": before_kib / 1024, "seconds": elapsed,
        "method": "VmHWM after clear_refs" if reset else "ru_maxrss (process lifetime)",
    }))


def memory(ns: list[int], size: int, batch_size: int, m: int, fixed_malloc: bool = False) -> list[dict]:
    out = []
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536") if fixed_malloc else None
    for n in ns:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", str(n), "--size", str(size),
             "--batch-size", str(batch_size), "--m", str(m)],
            check=True, capture_output=True, text=True, env=env,
        )
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machine)")
    ap.add_argument("--fixed-malloc", action="store_true",
                    help="children run with MALLOC_MMAP_THRESHOLD_=65536 (no glibc dynamic mmap threshold)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--m", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        memory_child(args.child, args.size, args.batch_size, args.m)
        return

    n_over, repeats = (256, 2) if args.quick else (512, 5)
    ns = [200, 2000] if args.quick else [2000, 20000]
    print(f"torch {torch.__version__}, {args.threads} thread(s), cpu count {os.cpu_count()}")
    ov = overhead(n_over, 64, args.batch_size, args.m, repeats)
    print(
        f"[overhead] {ov['model']} {ov['layer']}, N={ov['n']} images {ov['image']}x{ov['image']}, "
        f"batch {ov['batch_size']}, m={ov['m']}: bare forward {min(ov['bare_s']):.2f} s, "
        f"collect {min(ov['collect_s']):.2f} s -> ratio {ov['ratio_min']:.3f} (min of {repeats}; "
        f"median ratio {ov['ratio_median']:.3f}); process CPU-time ratio {ov['cpu_ratio_min']:.3f}; "
        "target <= 1.15"
    )
    print(
        f"[checkpoints] the same collection saving its running state to a store every 2 batches "
        f"({ov['checkpoints']} saves): {min(ov['checkpointed_s']):.2f} s -> {ov['checkpoint_ratio_min']:.3f} x the "
        f"collection without checkpoints (the Lens's default is one save a minute)"
    )
    mem = memory(ns, args.size, args.batch_size, args.m, args.fixed_malloc)
    for r in mem:
        print(
            f"[memory] N={r['n']}: peak RSS during collection {r['peak_mib']:.1f} MiB (RSS before "
            f"{r['before_mib']:.1f} MiB, growth {r['peak_mib'] - r['before_mib']:.1f} MiB; {r['method']}), "
            f"{r['seconds']:.1f} s"
        )
    a, b = mem[0], mem[-1]
    print(
        f"[memory] peak RSS N={b['n']} / N={a['n']}: {b['peak_mib'] / a['peak_mib']:.3f}; "
        f"growth difference {(b['peak_mib'] - b['before_mib']) - (a['peak_mib'] - a['before_mib']):+.1f} MiB; "
        "target: ratio within 1.10"
    )


if __name__ == "__main__":
    main()
