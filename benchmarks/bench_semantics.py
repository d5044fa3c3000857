"""Timing of the semantic kernels at paper scale (issue 4 figures). Prints figures; asserts nothing.

- measures for C components x m examples x d dims of random data (default 100k x 30 x 512).
  In float32 V would be 6 GB; it is stored in float16 (3 GB) and the kernels upcast one chunk
  of components at a time (``kernels.measures.default_chunk``: ~256 MB of float32 per chunk).
  redundancy is exact: all C^2 cosines in row chunks (C^2 d multiply-adds).
- one text search over C components once the query is encoded (DESIGN eq. 4): one
  [C, d] x [d] product against the cached normalised theta.

Usage::

    python benchmarks/bench_semantics.py                 # 100k x 30 x 512
    python benchmarks/bench_semantics.py --components 10000 --skip-redundancy
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from semlens_widgets.kernels import measures as M
from semlens_widgets.kernels import semantics as S
from semlens_widgets.kernels.vectors import normalize


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--components", type=int, default=100_000)
    ap.add_argument("--m", type=int, default=30)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--search-repeats", type=int, default=50)
    ap.add_argument("--skip-redundancy", action="store_true", help="skip the O(C^2 d) redundancy")
    ap.add_argument("--search-only", action="store_true", help="only time the search (theta only, no V)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    C, m, d = args.components, args.m, args.d
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"data: C={C} components x m={m} examples x d={d} (V float16 = {C * m * d * 2 / 2**30:.2f} GiB;"
          f" float32 would be {C * m * d * 4 / 2**30:.2f} GiB); chunk = {M.default_chunk(m, d)} components")

    g = torch.Generator().manual_seed(0)
    if args.search_only:
        _search(torch.randn(C, d, generator=g), g, args.search_repeats)
        return
    V = torch.empty(C, m, d, dtype=torch.float16)
    step = 4096
    for s in range(0, C, step):  # clustered random data: a component direction + noise
        b = min(step, C - s)
        centre = torch.randn(b, 1, d, generator=g)
        V[s : s + b] = (centre + 0.8 * torch.randn(b, m, d, generator=g)).half()
    theta = V.float().mean(1) if C * m * d <= 2**28 else torch.cat(
        [V[s : s + step].float().mean(1) for s in range(0, C, step)])

    _, t_cl = _timed(lambda: M.clarity(V))
    print(f"clarity (eq. 7, closed form):        {t_cl:8.2f} s")
    _, t_po = _timed(lambda: M.polysemanticity(V, seed=0))
    print(f"polysemanticity (eq. 10, 2-means):   {t_po:8.2f} s")
    if not args.skip_redundancy:
        red, t_re = _timed(lambda: M.redundancy(M.max_similarity(theta)[0]))
        print(f"redundancy (eq. 9, exact C^2):       {t_re:8.2f} s   (value {red:.3f})")
    else:
        t_re = float("nan")
        print("redundancy: skipped")
    print(f"measures total:                      {t_cl + t_po + (0 if args.skip_redundancy else t_re):8.2f} s")

    _search(theta, g, args.search_repeats)


def _search(theta: torch.Tensor, g: torch.Generator, repeats: int) -> None:
    C, d = theta.shape
    theta_unit = normalize(theta).contiguous()  # what the Lens caches once per layer
    probe, null = torch.randn(1, d, generator=g), torch.randn(d, generator=g)
    S.search_scores(probe, null, theta_unit, theta_normalized=True)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sc = S.search_scores(probe, null, theta_unit, theta_normalized=True)
        S.top_hits(sc, 10)
        times.append(time.perf_counter() - t0)
    print(f"text search over {C} components (scores + top-10, query encoded, theta cached): "
          f"median {statistics.median(times) * 1e3:.2f} ms, min {min(times) * 1e3:.2f} ms, "
          f"max {max(times) * 1e3:.2f} ms over {repeats} runs (target < 20 ms)")


if __name__ == "__main__":
    main()
