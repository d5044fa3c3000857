"""Search latency over big layers (paper eq. 4 after the query is encoded): the options measured.

Data: synthetic CLIP-like unit thetas ``[C, d]`` (a common direction, concept groups,
C/50 concepts, per-component noise), generated in chunks, in two regimes (``--regime``):
``clustered`` (40 concepts per group; groups and concepts carry most of a theta and of a text
probe: within-concept cosine ~0.8; a theta is a mean of m = 30 example embeddings, so its
noise is averaged down) and ``diffuse`` (500 groups of few concepts, weaker groups, more
noise: the top-10 of a text probe is then decided by small differences spread over many
cells, the hard case for any index). Queries: held-out text-like probes (a text-side common direction + a concept +
noise, minus a null embedding) and image-like probes (a component + noise,
``kernels.semantics.calibration_probes`` with another seed). The index is calibrated on other
probes (other seeds), as the Lens calibrates it on concept names and the layer's own components;
where calibration finds no cell count reaching the target, the Lens searches the layer densely
(exact), and the table says so.

Options (one row each; ``--options`` adds the third-party ones when installed):

- ``dense fp32``: the exact product (what small layers use);
- ``dense bf16 + rerank``: the product in bfloat16 (half the bytes), the top 100 re-scored in
  float32 (exact scores for those);
- ``ivf (ours)``: ``kernels.semantics`` inverted lists, calibrated ``n_probe`` (what big layers use);
- ``faiss IVFFlat``: the same cells in faiss-cpu, same ``n_probe``;
- ``faiss HNSW32`` / ``usearch HNSW i8``: graph indexes (their build is the cost: minutes).

Columns: build seconds, per-query latency median / p95 (ms, one query at a time), recall@10 of
text and image probes against the dense fp32 top-10, extra memory (MiB) over the float32 thetas.

Run:  python benchmarks/bench_search.py                        (100k and 1M components)
      python benchmarks/bench_search.py --components 100000 --options
      python benchmarks/bench_search.py --quick                  (20k, a smoke run)
No asserts: one run, one machine; the printed table is the result.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from semlens_widgets.kernels import semantics as S  # noqa: E402
from semlens_widgets.kernels.vectors import normalize  # noqa: E402


def rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class World:
    """Synthetic CLIP-like thetas and probe makers (seeded). A theta is
    ``unit(a*mu + b*group + c*concept + e*noise)``, a text probe
    ``unit(0.5*text + b'*group + c'*concept + e'*noise)`` (weights per regime)."""

    REGIMES = {  # theta (mu, group, concept, noise), text probe (group, concept, noise), concepts per group
        "clustered": ((0.55, 0.5, 0.5, 0.45), (0.35, 0.35, 0.7), 40),
        "diffuse": ((0.55, 0.39, 0.52, 0.5), (0.3, 0.4, 0.6), None),  # None: 500 groups
    }

    def __init__(self, C: int, d: int, regime: str = "clustered", seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.d = d
        (a, b, c, e), self.query_w, per_group = self.REGIMES[regime]
        self.mu = normalize(torch.randn(d, generator=g))
        n_con = max(2, C // 50)
        n_groups = 500 if per_group is None else max(1, n_con // per_group)
        self.groups = normalize(torch.randn(n_groups, d, generator=g))
        self.con_group = torch.randint(0, n_groups, (n_con,), generator=g)
        self.concepts = normalize(torch.randn(n_con, d, generator=g))
        cc = torch.randint(0, n_con, (C,), generator=g)
        self.theta = torch.empty(C, d)
        for s in range(0, C, 65536):
            k = cc[s:s + 65536]
            self.theta[s:s + 65536] = normalize(a * self.mu + b * self.groups[self.con_group[k]] + c * self.concepts[k]
                                                + e * normalize(torch.randn(len(k), d, generator=g)))
        self.text = normalize(torch.randn(d, generator=g))
        self.null = normalize(self.text + 0.3 * normalize(torch.randn(d, generator=g)))

    def text_probes(self, q: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        b, c, e = self.query_w
        k = torch.randint(0, self.concepts.shape[0], (q,), generator=g)
        return normalize(0.5 * self.text + b * self.groups[self.con_group[k]] + c * self.concepts[k]
                         + e * normalize(torch.randn(q, self.d, generator=g)))


def timed(fn, queries: torch.Tensor) -> tuple[list[float], torch.Tensor]:
    fn(queries[:1])  # warm-up
    ts, out = [], []
    for i in range(queries.shape[0]):
        t = time.perf_counter()
        out.append(fn(queries[i:i + 1]))
        ts.append(time.perf_counter() - t)
    return ts, torch.cat(out)


def recall(got: torch.Tensor, exact: torch.Tensor) -> float:
    return float((got[:, :, None] == exact[:, None, :]).any(2).float().mean())


def run(C: int, d: int, n_queries: int, options: bool, rows: list[dict], regime: str) -> None:
    t = time.perf_counter()
    w = World(C, d, regime)
    theta, null = w.theta, w.null
    print(f"\n== {regime}: C={C:,} components x d={d} (float32 thetas {C * d * 4 / 2**20:.0f} MiB; generated in "
          f"{time.perf_counter() - t:.1f} s)", flush=True)
    probes = {"text": w.text_probes(n_queries, 1001), "image": S.calibration_probes(theta, n_queries, seed=1002)}
    dirs = {k: S.search_direction(p, null) for k, p in probes.items()}
    exact = {k: torch.topk(S.search_scores(p, null, theta, theta_normalized=True), 10, dim=1).indices
             for k, p in probes.items()}

    def add(name: str, build_s: float, fn, extra_mib: float, note: str = "") -> None:
        res = {"C": C, "regime": regime, "option": name, "build_s": build_s, "extra_mib": extra_mib, "note": note}
        for k in ("text", "image"):
            ts, got = timed(fn, dirs[k])
            res[f"recall_{k}"] = recall(got, exact[k])
            if k == "text":
                res["median_ms"] = statistics.median(ts) * 1e3
                res["p95_ms"] = float(np.percentile(ts, 95)) * 1e3
        rows.append(res)
        print(f"{name:<22} build {build_s:7.1f} s | median {res['median_ms']:8.2f} ms  p95 {res['p95_ms']:8.2f} ms | "
              f"recall@10 text {res['recall_text']:.4f} image {res['recall_image']:.4f} | "
              f"+{extra_mib:7.0f} MiB {note}", flush=True)

    add("dense fp32", 0.0, lambda q: torch.topk(theta @ q[0], 10).indices[None], 0.0, "(exact)")
    t = time.perf_counter()
    half = theta.bfloat16()
    bt = time.perf_counter() - t

    def bf16(q):
        cand = torch.topk((half @ q[0].bfloat16()).float(), 100).indices
        sc = theta.index_select(0, cand) @ q[0]
        return cand[torch.topk(sc, 10).indices][None]

    add("dense bf16 + rerank", bt, bf16, C * d * 2 / 2**20, "(top 100 re-scored in fp32)")

    cal = torch.cat([w.text_probes(64, 2001), S.calibration_probes(theta, 64, seed=2002)])
    r0, t = rss_mib(), time.perf_counter()
    index = S.build_search_index(theta, cal, null)
    bt = time.perf_counter() - t
    if index is None:
        print(f"ivf (ours)             build {bt:7.1f} s | calibration found no n_probe reaching recall "
              f"{S.TARGET_RECALL}: the Lens searches this layer densely (exact: the dense fp32 row)", flush=True)
        rows.append({"C": C, "regime": regime, "option": "ivf (ours)", "build_s": bt, "dense_fallback": True})
    else:
        extra = sum(x.numel() * x.element_size() for x in (index.centroids, index.order, index.offsets)) / 2**20
        L = index.centroids.shape[0]
        add("ivf (ours)", bt, lambda q: S.index_top_hits(index, theta, q, 10)[1], extra,
            f"(L={L}, n_probe={index.n_probe}, calibrated recall {index.recall:.3f}; RSS +{rss_mib() - r0:.0f} MiB while building)")
    if not options:
        return
    try:
        import faiss
    except ImportError:
        print("faiss-cpu not installed: faiss rows skipped")
        faiss = None
    x = theta.numpy()
    if faiss is not None and index is not None:
        faiss.omp_set_num_threads(torch.get_num_threads())
        t = time.perf_counter()
        q = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFFlat(q, d, L, faiss.METRIC_INNER_PRODUCT)
        ivf.train(x[torch.randperm(C)[:64 * L].numpy()])
        ivf.add(x)
        ivf.nprobe = index.n_probe
        add("faiss IVFFlat", time.perf_counter() - t, lambda qq: torch.from_numpy(ivf.search(qq.numpy(), 10)[1]),
            C * d * 4 / 2**20, f"(L={L}, nprobe={index.n_probe}; holds its own copy)")
        del ivf
    if faiss is not None and C <= 200_000:
        t = time.perf_counter()
        h = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = 80
        h.add(x)
        h.hnsw.efSearch = 128
        add("faiss HNSW32", time.perf_counter() - t, lambda qq: torch.from_numpy(h.search(qq.numpy(), 10)[1]),
            C * (d * 4 + 32 * 2 * 4) / 2**20, "(efSearch 128)")
        del h
    try:
        from usearch.index import Index
    except ImportError:
        Index = None
        print("usearch not installed: usearch row skipped")
    if Index is not None and C <= 200_000:
        t = time.perf_counter()
        ix = Index(ndim=d, metric="ip", dtype="i8", connectivity=16, expansion_add=128)
        ix.add(np.arange(C), x, threads=torch.get_num_threads())
        ix.expansion_search = 128
        add("usearch HNSW i8", time.perf_counter() - t,
            lambda qq: torch.from_numpy(ix.search(qq.numpy()[0], 10, threads=1).keys.astype(np.int64))[None],
            ix.memory_usage / 2**20, "(expansion 128)")
    if C > 200_000:
        print("graph indexes (HNSW) skipped above 200k components: their build takes tens of minutes on 2 cores")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--components", default="100000,1000000", help="comma-separated C values")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--options", action="store_true", help="also faiss-cpu / usearch (when installed)")
    ap.add_argument("--regime", default="clustered,diffuse", help="comma-separated: clustered, diffuse")
    ap.add_argument("--quick", action="store_true", help="20k components, 30 queries (a smoke run)")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [20_000] if args.quick else [int(c) for c in args.components.split(",")]
    nq = 30 if args.quick else args.queries
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu count {os.cpu_count()}; "
          f"target: < 20 ms per query with recall@10 >= 0.99")
    rows: list[dict] = []
    for regime in args.regime.split(","):
        for C in sizes:
            run(C, args.d, nq, args.options, rows, regime.strip())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
