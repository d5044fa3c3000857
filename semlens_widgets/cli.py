"""The ``semlens`` console command.

    semlens demo [--store DIR] [--layers block3 block4] [--m 30] [--n-per-class 250] [--no-eval]
    semlens info STORE
    semlens --version

``semlens demo`` is the README's main job: it loads the demo world that ships inside the package
(no download), builds a :class:`~semlens_widgets.Lens` over the demo classifier, runs collection
+ CRP crops + embeddings, labels every component with the world's vocabulary, computes the
semantic map, and prints a summary with the time of every stage and, unless ``--no-eval``, the
quality figures of :func:`semlens_widgets.demo.evaluate` (label accuracy, search precision@5,
shortcut audit). Results go to the store directory; a second run loads them in seconds.

``semlens info STORE`` lists what a store directory holds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``semlens`` (sub-commands ``demo`` and ``info``)."""
    from semlens_widgets import __version__

    ap = argparse.ArgumentParser(prog="semlens", description="SemanticLens for vision models, in Jupyter widgets.")
    ap.add_argument("--version", action="version", version=f"semlens_widgets {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="{demo,info}")
    sub.required = True

    d = sub.add_parser(
        "demo",
        help="run SemanticLens on the embedded demo world and print a summary",
        description="Load the demo world shipped with the package, run collect + crop + embed, "
        "label every component with the world's vocabulary, compute the semantic map, and print "
        "timings and quality figures. A second run loads the results from the store.",
    )
    d.add_argument("--store", default="./demo-lens-store", help="store directory (default ./demo-lens-store)")
    d.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="classifier layers to analyse (default: block3 block4; choices block1..block4)")
    d.add_argument("--m", type=_positive_int, default=30, help="concept examples per component (default 30)")
    d.add_argument("--n-per-class", type=_positive_int, default=250,
                   help="images per class of the analysed clean test split (default 250: 2,000 images)")
    d.add_argument("--batch-size", type=_positive_int, default=256,
                   help="images per batch for collection and CRP crops (default 256: the demo's "
                        "64x64 images are small, and CRP runs ~1.5x faster than at 64)")
    d.add_argument("--crop", choices=["crp", "activation", "full"], default="crp", help="crop mode (default crp)")
    d.add_argument("--no-eval", action="store_true", help="skip the ground-truth evaluation")
    d.add_argument("--no-map", action="store_true", help="skip the semantic map (UMAP)")
    d.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    d.add_argument("--device", default="cpu", help="torch device (default cpu)")
    d.add_argument("--overwrite", action="store_true", help="wipe the store first (recompute everything)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")

    i = sub.add_parser("info", help="list what a store directory holds",
                       description="List the entries of a semlens store directory.")
    i.add_argument("store", help="store directory")
    i.add_argument("--json", action="store_true", help="print the listing as JSON")
    return ap


class _Timer:
    """Wall-clock seconds per stage name (accumulates)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.order: list[str] = []

    def add(self, stage: str, dt: float) -> None:
        if stage not in self.seconds:
            self.order.append(stage)
        self.seconds[stage] += dt

    def stage(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.add(name, time.perf_counter() - self.t)

        return _Ctx()


def _print(msg: str = "") -> None:
    print(msg, flush=True)


def run_demo(args: argparse.Namespace) -> int:
    """``semlens demo``: see the module docstring."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from semlens_widgets import demo
    from semlens_widgets.lens import Lens

    t_start = time.perf_counter()
    timer = _Timer()
    with timer.stage("load world"):
        world = demo.load(n_per_class=args.n_per_class, device=args.device)
    layers = list(args.layers) if args.layers else list(world.layers)
    known = [n for n, _ in world.model.named_children() if n.startswith("block")]
    bad = [l for l in layers if l not in known]
    if bad:
        _print(f"semlens demo: unknown layer(s) {bad}; the demo classifier has {known}")
        return 2
    _print(f"demo world: {len(world.dataset)} images of the clean test split, {len(world.class_names)} classes, "
           f"{len(world.vocabulary)} concepts; layers {layers}; m={args.m}; store {args.store}")
    with timer.stage("lens setup"):
        lens = Lens(world.model, world.dataset, world.fm, layers, m=args.m, crop=args.crop, store=args.store,
                    device=args.device, batch_size=args.batch_size, class_names=world.class_names, progress=not args.quiet,
                    overwrite=args.overwrite)
    with timer.stage("run (collect + crop + embed)"):
        lens.run(on_step=lambda step, layer, seconds: timer.add(step, seconds))
    vocab = list(world.vocabulary)
    labels = {}
    with timer.stage("label"):
        lens.set_vocabulary(vocab)
        for layer in layers:
            labels[layer] = lens.label(vocab, layer)
    if not args.no_map:
        with timer.stage("map"):
            for layer in layers:
                lens.map(layer)
    pipeline = time.perf_counter() - t_start
    evaluation = None
    if not args.no_eval:
        with timer.stage("evaluate (ground truth, search, audit)"):
            evaluation = demo.evaluate(lens, world)

    _print()
    _print("labels (the SemanticLens paper's labelling, with the world's vocabulary):")
    for layer in layers:
        res = labels[layer]
        n = len(res.table)
        n_lab = int(res.table["label"].notna().sum())
        top = ", ".join(f"{c} {k}" for c, k in res.counts.head(8).items())
        _print(f"  {layer}: {n_lab}/{n} components labelled; most common: {top}")
        if res.gaps:
            _print(f"    concepts no component carries: {', '.join(res.gaps)}")
    hits = lens.search(world.shortcut_artefact, k=5)
    _print(f"search {world.shortcut_artefact!r}: " + ", ".join(
        f"{r.layer}:{r.component} ({r.score:+.3f})" for r in hits.itertuples()))
    if evaluation is not None:
        _print()
        _print("quality against the ground truth (slw.demo.evaluate):")
        for line in evaluation.summary().splitlines():
            _print("  " + line)
    _print()
    _print("timings (s):")
    for stage in timer.order:
        if stage in ("collect", "crops", "embed"):
            continue
        _print(f"  {stage:<40} {timer.seconds[stage]:7.1f}")
        if stage.startswith("run"):
            for sub in ("collect", "crops", "embed"):
                if sub in timer.seconds:
                    _print(f"    {sub:<38} {timer.seconds[sub]:7.1f}")
    _print(f"  {'total up to the map':<40} {pipeline:7.1f}")
    _print(f"results stored in {Path(args.store).resolve()} (a second run loads them)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """``semlens info STORE``: list the entries of a store directory."""
    from semlens_widgets.store import Store, StoreError

    root = Path(args.store)
    if not (root / "manifest.json").is_file():
        _print(f"semlens info: {str(root)!r} is not a semlens store (no manifest.json)")
        return 2
    try:
        store = Store(root)
    except StoreError as e:
        _print(f"semlens info: {e}")
        return 2
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    entries = manifest.get("entries", {})
    rows = []
    for key in store.keys():
        e = entries.get(key, {})
        f = root / e.get("file", "")
        rows.append({
            "key": key,
            "shapes": e.get("shapes", {}),
            "bytes": f.stat().st_size if f.is_file() else 0,
            "meta": e.get("meta") or {},
        })
    if args.json:
        _print(json.dumps({"store": str(root.resolve()), "info": manifest.get("info", {}), "entries": rows}, indent=1))
        return 0
    total = sum(r["bytes"] for r in rows)
    _print(f"store {root.resolve()}: {len(rows)} entries, {total / 1e6:.2f} MB")
    lens_info = manifest.get("info", {}).get("lens")
    if lens_info:
        _print(f"  model: {lens_info.get('model_class')}")
    for r in rows:
        shapes = ", ".join(f"{k} {list(v)}" for k, v in r["shapes"].items())
        _print(f"  {r['key']:<40} {r['bytes'] / 1e3:9.1f} kB  {shapes}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semlens`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    if args.command == "info":
        return run_info(args)
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
