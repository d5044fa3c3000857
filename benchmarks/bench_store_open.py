"""Opening a big store: eager reads vs lazy (memory-mapped) reads, and the search index.

A synthetic store holds the pipeline entries of one layer of C components as a Lens writes them
(``collect/L``: indices, values [C, m]; ``boxes/L``: [C, m, 4]; ``embed/L``: V [C, m, d]
float16, theta [C, d] float32). theta is real size; m defaults to 2 because V at m = 30 and
C = 1M is 30 GB (more than this machine's disk budget and memory for a benchmark; V is
never read when a lens opens or searches, so its size changes none of the open figures).

Each measurement runs in a fresh subprocess over the same files (the OS page cache is warm
after the write: the figures are CPU-side costs, not disk reads):

- ``eager``: ``Store.load`` of every entry (read + sha256 of the whole files);
- ``lazy``: ``Store.load(lazy=True)`` of every entry (map + header checks) -- what the Lens's
  ``Pipeline._load`` does when a lens opens;
- ``lazy + theta``: the same and the first access to theta (its blocks hashed: what the first
  search pays once per process);
- ``index build`` / ``index open``: the search index of the layer built (first search ever) and
  loaded from the store (every later process).

Run:  python benchmarks/bench_store_open.py                 (1M components, m = 2: ~5 GB of files)
      python benchmarks/bench_store_open.py --components 100000 --quick
No asserts: one run, one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from semlens_widgets.store import Store  # noqa: E402

KEYS = {"collect/L": "fp-collect", "boxes/L": "fp-boxes", "embed/L": "fp-embed"}


def write(root: str, C: int, m: int, d: int) -> float:
    from bench_search import World

    st = Store(root)
    t = time.perf_counter()
    w = World(C, d, "clustered")
    theta = w.theta
    g = torch.Generator().manual_seed(0)
    st.save("collect/L", {"indices": torch.randint(0, 10**6, (C, m), generator=g),
                          "values": torch.rand(C, m, generator=g)}, KEYS["collect/L"])
    st.save("boxes/L", {"boxes": torch.randint(0, 224, (C, m, 4), generator=g)}, KEYS["boxes/L"])
    V = (theta[:, None, :] + 0.1 * torch.randn(C, m, d, generator=g)).half()
    st.save("embed/L", {"V": V, "theta": theta}, KEYS["embed/L"])
    del V
    with open(os.path.join(root, "null.json"), "w") as f:
        json.dump({"null": w.null.tolist(), "probes": w.text_probes(64, 2001).tolist()}, f)
    return time.perf_counter() - t


def child(root: str, mode: str) -> None:
    from semlens_widgets.kernels import semantics as S
    from semlens_widgets.kernels.vectors import normalize

    st = Store(root)
    t = time.perf_counter()
    got = {k: st.load(k, fp, lazy=mode != "eager") for k, fp in KEYS.items()}
    out = {"open_s": time.perf_counter() - t}
    if mode in ("lazy+theta", "index"):
        t = time.perf_counter()
        theta = got["embed/L"]["theta"]
        out["theta_first_access_s"] = time.perf_counter() - t
    if mode == "index":
        extra = json.load(open(os.path.join(root, "null.json")))
        null, probes = torch.tensor(extra["null"]), torch.tensor(extra["probes"])
        t = time.perf_counter()
        unit = normalize(theta)
        out["normalise_s"] = time.perf_counter() - t
        t = time.perf_counter()
        entry = st.load("semantics/search_index/L", "fp-index")
        if entry is None:
            index = S.build_search_index(unit, torch.cat([probes, S.calibration_probes(unit, 64)]), null)
            out["index_build_s"] = time.perf_counter() - t
            st.save("semantics/search_index/L", index.tensors() if index else {"params": torch.zeros(3, dtype=torch.float64)},
                    "fp-index")
        else:
            out["index_open_s"] = time.perf_counter() - t
    print(json.dumps(out))


def run_child(root: str, mode: str) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", mode, "--root", root], capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--components", type=int, default=1_000_000)
    ap.add_argument("--m", type=int, default=2, help="examples per component in collect/boxes/V (default 2)")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="100k components")
    ap.add_argument("--dir", default=None, help="where to write the store (default: a temp dir, removed after)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.root, args.child)
        return
    C = 100_000 if args.quick else args.components
    base = args.dir or tempfile.mkdtemp(prefix="semlens-bench-store-")
    root = os.path.join(base, "store")
    try:
        print(f"store of C={C:,} components, m={args.m}, d={args.d}: theta {C * args.d * 4 / 2**30:.2f} GiB, "
              f"V {C * args.m * args.d * 2 / 2**30:.2f} GiB (float16), in {root}", flush=True)
        print(f"written in {write(root, C, args.m, args.d):.1f} s (generation + save with sha256 and block digests)",
              flush=True)
        for mode in ("eager", "lazy", "lazy+theta", "index", "index"):
            r = run_child(root, mode)
            print(f"[open] {mode:<11} " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in r.items()), flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
