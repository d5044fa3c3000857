"""The semantic map (UMAP) of big layers: time and peak memory at N and 10 N components.

Each size runs in a fresh subprocess: synthetic clustered thetas ``[N, d]`` (the ``clustered``
regime of bench_search.py), then ``kernels.projection.umap_2d`` -- one fit up to ``MAX_FIT`` (10,000)
components, above that a fit on a seeded sample of ``MAX_FIT`` and the rest placed by UMAP's
transform in chunks of ``CHUNK`` (10,000). Printed: seconds, peak RSS during the map (Linux: VmHWM reset
through /proc/self/clear_refs before the map; elsewhere ru_maxrss) and its growth over the RSS
before it (which holds the thetas). numba's compiled code comes from its on-disk cache (a
warm-up map, fitted on 5,000 and transforming 1,000, runs first, outside the figures).

Run:  python benchmarks/bench_map.py                    (20,000 and 200,000 components: both with
                                                         the fitted sample, what bounded memory is about)
      python benchmarks/bench_map.py --sizes 2000,20000  (quicker)
No asserts: one run, one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def child(n: int, d: int) -> None:
    import torch

    from bench_search import World
    from semlens_widgets.kernels.projection import umap_2d, warm_up

    torch.set_num_threads(2)
    warm_up().join()
    # compile (or load) the transform's nearest-neighbour search too (training sets above 4,096
    # points use pynndescent's index), so the figures hold data, not the compiler's memory
    umap_2d(World(6000, d, "clustered").theta, seed=0, n_epochs=10, max_fit=5000, chunk=1000)
    theta = World(n, d, "clustered").theta
    before = _status_mib("VmRSS")
    try:  # reset the high-water mark (Linux)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss (includes set-up)"
    t = time.perf_counter()
    xy = umap_2d(theta, seed=0)
    seconds = time.perf_counter() - t
    peak = _status_mib("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "seconds": seconds, "before_mib": before, "peak_mib": peak, "method": method,
                      "finite": bool(torch.isfinite(xy).all())}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,200000")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.d)
        return
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        p = subprocess.run([sys.executable, __file__, "--child", str(n), "--d", str(args.d)], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"[map] N={n}: failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"[map] N={n:,}: {r['seconds']:.1f} s, peak RSS {r['peak_mib']:.0f} MiB (before {r['before_mib']:.0f} MiB, "
              f"growth {r['peak_mib'] - r['before_mib']:.0f} MiB; {r['method']})", flush=True)
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"[map] N={b['n']:,} / N={a['n']:,}: time x{b['seconds'] / a['seconds']:.2f}, peak-RSS growth "
              f"x{(b['peak_mib'] - b['before_mib']) / max(1.0, a['peak_mib'] - a['before_mib']):.2f} "
              f"(bounded: the fit is at most MAX_FIT components)", flush=True)


if __name__ == "__main__":
    main()
