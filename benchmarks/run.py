"""The benchmark suite: one runner, each benchmark in its own subprocess (clean memory figures),
one summary of the measured ratios against their targets.

    python benchmarks/run.py            # default sizes: about 12 minutes on 2 quiet CPU cores
    python benchmarks/run.py --quick    # smoke sizes: every benchmark runs, minutes (not figures)
    python benchmarks/run.py --full     # bigger sizes (tens of minutes)
    python benchmarks/run.py --only search,map --out results.json

Benchmarks (the script that measures each; this runner only calls them and reads their output):

=========  ==============================================================  =====================
name       ratio / figure                                                   target
=========  ==============================================================  =====================
collect    collection / bare forward (bench_collect.py, synthetic CNN)     <= 1.15 (CPU)
memory     peak RSS of collection at 10 N / at N (bench_collect.py)        <= 1.10
real       crops / zennit-crp get_max_reference; collection / bare         <= 0.5; <= 1.15
           forward on EfficientNet-Lite0 with real weights (bench_real_model.py)
crops      crop step / the same number of batched forward + backward       <= 1.3
           passes from the layer (bench_gpu.py on the CPU)
embed      embedding step / bare foundation-model forward over prepared    <= 1.25
           crops (bench_embed.py)
search     per-query latency (median, p95) and recall@10 at 100k and 1M    < 20 ms, >= 0.99
           components (bench_search.py)
open       opening a 1M-component store: eager vs lazy (bench_store_open)  seconds
map        UMAP time and peak RSS at N and 10 N (bench_map.py)             bounded memory
torchrun   2-process torchrun / 1-process wall time of the same            < 1 (2 processes)
           ``semlens run`` on the demo world (the CLI's torchrun entry)
demo       ``semlens demo`` end to end from an empty store, stage times    < 40 s
=========  ==============================================================  =====================

Every benchmark's own output is kept (``--logs DIR``, default a temp dir, printed); the summary
prints ``name | figure | target | met`` lines, and ``--out`` writes them as JSON with the date,
machine and command. Nothing is asserted: measure on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable

# per benchmark: (size -> argv) ; sizes: quick / default / full
SIZES = ("quick", "default", "full")


def _demo_store(tmp: str, name: str) -> str:
    path = os.path.join(tmp, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def commands(size: str, tmp: str) -> dict[str, list[list[str]]]:
    q, f = size == "quick", size == "full"
    b = lambda name: os.path.join(HERE, name)  # noqa: E731
    n_per_class = "20" if q else ("250" if f else "60")
    # m = 30, the default: torchrun's own parser takes "--m" for an ambiguous abbreviation of its options
    run_args = ["run", "--demo", "--layers", "block3,block4", "--crop", "crp",
                "--device", "cpu", "--n-per-class", n_per_class, "--quiet"]
    return {
        "collect": [[PY, b("bench_collect.py")] + (["--quick"] if q else [])],
        "real": [[PY, b("bench_real_model.py")] + ([] if f else ["--quick"])],
        "crops": [[PY, b("bench_gpu.py"), "--device", "cpu", "--arch", "resnet18", "--layers", "layer3,layer4",
                   "--n", "64" if q else "512", "--size", "64", "--m", "3" if q else "30",
                   "--components", "2" if q else ("32" if f else "8"), "--fm", "demo", "--compare", "bf16",
                   "--agree-n", "32", "--no-channels-last", "--threads", "2",
                   "--out", os.path.join(tmp, "gpu.json")]],
        "embed": [[PY, b("bench_embed.py")] + (["--fm", "tiny", "--repeats", "1"] if q else [])],
        "search": [[PY, b("bench_search.py")] + (["--quick"] if q else
                                                 (["--options"] if f else ["--regime", "clustered"]))],
        "open": [[PY, b("bench_store_open.py")] + (["--quick"] if q else [])],
        "map": [[PY, b("bench_map.py"), "--sizes", "1000,10000" if q else "20000,200000"]],
        "torchrun": [
            [PY, "-m", "semlens_widgets"] + run_args + ["--store", _demo_store(tmp, "run1"), "--threads", "2"],
            [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "semlens_widgets"]
            + run_args + ["--store", _demo_store(tmp, "run2"), "--threads", "1"],
        ],
        "demo": [[PY, "-m", "semlens_widgets", "demo", "--store", _demo_store(tmp, "demo"), "--quiet"]
                 + (["--n-per-class", "20", "--m", "5"] if q else [])],
    }


def _num(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def summarise(name: str, outs: list[tuple[float, str]], tmp: str) -> list[dict]:
    """The figures of one benchmark from its output(s): dicts with figure, value, target, met."""
    text = "\n".join(o for _, o in outs)
    rows: list[dict] = []

    def add(figure: str, value: float | None, target: str, met: bool | None) -> None:
        rows.append({"benchmark": name, "figure": figure, "value": value, "target": target,
                     "met": None if value is None else met})

    if name == "collect":
        v = _num(r"-> ratio ([0-9.]+) \(min", text)
        add("collection / bare forward", v, "<= 1.15", v is not None and v <= 1.15)
        v = _num(r"peak RSS N=\d+ / N=\d+: ([0-9.]+)", text)
        add("peak RSS 10N / N (collection)", v, "<= 1.10", v is not None and v <= 1.10)
    elif name == "real":
        for layer, v in re.findall(r"\[1\] (\S+): our crop step / get_max_reference = ([0-9.]+)", text):
            add(f"crops / get_max_reference ({layer})", float(v), "<= 0.5", float(v) <= 0.5)
        v = _num(r"\[2\] collection / bare forward: ([0-9.]+)", text)
        add("collection / bare forward (Lite0)", v, "<= 1.15", v is not None and v <= 1.15)
    elif name == "crops":
        try:
            stages = json.load(open(os.path.join(tmp, "gpu.json")))["stages"]
        except (OSError, ValueError, KeyError):
            stages = {}
        for st, kw in stages.items():
            for k, v in kw.items():
                if st.startswith("crops") and "ratio" in k:
                    add(f"{st}: {k}", float(v), "<= 1.3", float(v) <= 1.3)
                if st.startswith("embed") and "ratio" in k:
                    add(f"{st}: {k} (ResNet-18 CPU)", float(v), "<= 1.25", float(v) <= 1.25)
        if not stages:
            add("crops / forward+backward", None, "<= 1.3", None)
    elif name == "embed":
        for what, v in re.findall(r"\[(\w[^\]]*)\] embedding overhead ratio: best/best ([0-9.]+)", text):
            add(f"embedding / bare fm forward ({what})", float(v), "<= 1.25", float(v) <= 1.25)
        if not rows:
            add("embedding / bare fm forward", None, "<= 1.25", None)
    elif name == "search":
        regime, C = "", 0
        for line in text.splitlines():
            m = re.match(r"== (\w+): C=([0-9,]+)", line)
            if m:
                regime, C = m.group(1), int(m.group(2).replace(",", ""))
                continue
            m = re.match(r"(ivf \(ours\)|dense fp32)\s+build\s+([0-9.]+) s \| median\s+([0-9.]+) ms\s+p95\s+([0-9.]+) ms"
                         r" \| recall@10 text ([0-9.]+) image ([0-9.]+)", line)
            if m:
                med, rec = float(m.group(3)), min(float(m.group(5)), float(m.group(6)))
                add(f"search {m.group(1)}, {regime}, C={C:,}: median ms (p95 {m.group(4)}), recall {rec:.3f}",
                    med, "< 20 ms, recall >= 0.99", med < 20 and rec >= 0.99)
            elif line.startswith("ivf (ours)") and "densely" in line:
                add(f"search ivf (ours), {regime}, C={C:,}: calibration -> dense (exact)", None, "< 20 ms", False)
    elif name == "open":
        for mode, v, rest in re.findall(r"\[open\] (\S+)\s+open_s ([0-9.]+)(.*)", text):
            what = mode
            build, opened = _num(r"index_build_s ([0-9.]+)", rest), _num(r"index_open_s ([0-9.]+)", rest)
            if build is not None:
                what = f"index built at the first search in {build:.1f} s"
            elif opened is not None:
                what = f"index read from the store in {opened:.2f} s"
            add(f"store open ({what}), s", float(v), "seconds", None if mode == "eager" else float(v) < 10)
        v = _num(r"theta_first_access_s ([0-9.]+)", text)
        add("theta first access (block verification), s", v, "seconds", v is not None and v < 10)
    elif name == "map":
        for n, s, peak, before in re.findall(r"\[map\] N=([0-9,]+): ([0-9.]+) s, peak RSS ([0-9]+) MiB \(before ([0-9]+)", text):
            add(f"map N={n}: seconds (peak RSS {peak} MiB, growth {int(peak) - int(before)} MiB)", float(s), "", None)
        v = _num(r"peak-RSS growth x([0-9.]+)", text)
        ns = [int(n.replace(",", "")) for n in re.findall(r"\[map\] N=([0-9,]+):", text)]
        # bounded memory is a claim about layers above the fitted sample (MAX_FIT = 10,000): both
        # sizes must be above it (below, the map is one whole fit whose memory grows with N)
        judged = bool(ns) and min(ns) > 10_000
        add("map peak-RSS growth 10N / N" + ("" if judged else " (a size fitted whole: not judged)"), v,
            "bounded (<= 3)", (v is not None and v <= 3) if judged else None)
    elif name == "torchrun":
        if len(outs) == 2 and all(o is not None for o, _ in outs):
            (t1, _), (t2, _) = outs
            add("torchrun 2 processes / 1 process wall time", t2 / t1 if t1 else None, "< 1", t1 > 0 and t2 / t1 < 1)
        else:
            add("torchrun 2 processes / 1 process wall time", None, "< 1", None)
    elif name == "demo":
        v = _num(r"total up to the map\s+([0-9.]+)", text)
        add("semlens demo, total up to the map, s", v, "< 40", v is not None and v < 40)
        for stage in ("collect", "crops", "embed", "label", "map"):
            s = _num(rf"\n\s+{stage}\s+([0-9.]+)", text)
            if s is not None:
                add(f"  demo stage {stage}, s", s, "", None)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smoke sizes")
    g.add_argument("--full", action="store_true", help="bigger sizes")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    ap.add_argument("--logs", default=None, help="directory for each benchmark's output (default: a temp dir)")
    ap.add_argument("--out", default=None, help="write the summary as JSON here")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per benchmark command")
    args = ap.parse_args(argv)
    size = "quick" if args.quick else ("full" if args.full else "default")
    tmp = tempfile.mkdtemp(prefix="semlens-bench-")
    logs = args.logs or os.path.join(tmp, "logs")
    os.makedirs(logs, exist_ok=True)
    cmds = commands(size, tmp)
    names = list(cmds) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in cmds]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {list(cmds)}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")]))
    head = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": f"{platform.platform()}, {os.cpu_count()} cpus",
            "command": " ".join(["python", "benchmarks/run.py"] + (argv if argv is not None else sys.argv[1:])),
            "size": size}
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"{head['date']} | {head['machine']} | {head['command']} | load average {load:.2f}", flush=True)
    rows: list[dict] = []
    t_all = time.perf_counter()
    for name in names:
        outs: list[tuple[float | None, str]] = []
        for i, cmd in enumerate(cmds[name]):
            print(f"-- {name} [{i + 1}/{len(cmds[name])}]: {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)}",
                  flush=True)
            t = time.perf_counter()
            try:
                p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
                out, ok = p.stdout + p.stderr, p.returncode == 0
            except subprocess.TimeoutExpired as e:
                out, ok = f"{e.stdout or ''}{e.stderr or ''}\nTIMEOUT after {args.timeout} s", False
            dt = time.perf_counter() - t
            with open(os.path.join(logs, f"{name}-{i + 1}.log"), "w") as f:
                f.write(out)
            print(f"   {'ok' if ok else 'FAILED'} in {dt:.1f} s (log {os.path.join(logs, f'{name}-{i + 1}.log')})", flush=True)
            outs.append((dt if ok else None, out))
        got = summarise(name, outs, tmp)
        for r in got:
            v = "n/a" if r["value"] is None else f"{r['value']:.3f}"
            met = {True: "yes", False: "NO", None: "-"}[r["met"]]
            print(f"   {r['figure']:<72} {v:>10}   target {r['target'] or '-':<22} met: {met}", flush=True)
        rows += got
    print(f"\nsummary ({size}, {time.perf_counter() - t_all:.0f} s in all):")
    for r in rows:
        v = "n/a" if r["value"] is None else f"{r['value']:.3f}"
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        print(f"{r['benchmark']:<9} | {r['figure']:<72} | {v:>10} | {r['target'] or '-':<22} | {met}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**head, "load_average": load, "rows": rows}, f, indent=1)
    shutil.rmtree(os.path.join(tmp, "run1"), ignore_errors=True)
    shutil.rmtree(os.path.join(tmp, "run2"), ignore_errors=True)
    shutil.rmtree(os.path.join(tmp, "demo"), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
