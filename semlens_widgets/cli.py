"""The ``semlens`` console command (also ``python -m semlens_widgets``).

    semlens demo [--store DIR] [--layers block3 block4] [--m 30] [--n-per-class 250] [--no-eval]
    semlens run --model MODULE:CALLABLE --dataset MODULE:CALLABLE --fm NAME[@PRETRAINED]
                --layers a,b [--m 30] [--crop crp] --store DIR [--device cuda] [--demo] ...
    torchrun --nproc_per_node=N -m semlens_widgets run ...      (the same store as one process)
    semlens report --store DIR --out report.html [--layer L] [--query TEXT ...]
    semlens info STORE
    semlens --version

``semlens demo`` is the README's main job: it loads the demo world that ships inside the package
(no download), builds a :class:`~semlens_widgets.Lens` over the demo classifier, runs collection
+ CRP crops + embeddings, labels every component with the world's vocabulary, computes the
semantic map, and prints a summary with the time of every stage and, unless ``--no-eval``, the
quality figures of :func:`semlens_widgets.demo.evaluate` (label accuracy, search precision@5,
shortcut audit). Results go to the store directory; a second run loads them in seconds.

``semlens run`` is a real run: the model, the dataset and the foundation model are named
(``MODULE:CALLABLE`` callables, an open_clip ``NAME[@PRETRAINED]``), built, checked, and the
Lens's collect + crop + embed steps run into the store, which records how to rebuild the run
(:mod:`semlens_widgets.lens_open`). Under ``torchrun`` every process joins the process group and
the work is shared (:mod:`semlens_widgets.distributed`); rank 0 writes the store. ``semlens
report`` and ``slw.Lens.from_store(DIR)`` reopen the store.

``semlens info STORE`` lists what a store directory holds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]


def _int_at_least(lo: int, what: str):
    """An argparse type: an int >= ``lo`` (``what`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``semlens`` (sub-commands ``demo`` and ``info``)."""
    from semlens_widgets import __version__

    ap = argparse.ArgumentParser(prog="semlens", description="SemanticLens for vision models, in Jupyter widgets.")
    ap.add_argument("--version", action="version", version=f"semlens_widgets {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="{demo,run,report,info}")
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

    _add_run_parser(sub)
    _add_report_parser(sub)

    i = sub.add_parser("info", help="list what a store directory holds",
                       description="List the entries of a semlens store directory.")
    i.add_argument("store", help="store directory")
    i.add_argument("--json", action="store_true", help="print the listing as JSON")
    return ap


_STEPS = ("collect", "crops", "embed")  # the steps of Lens.run (its on_step names)


class _Timer:
    """Wall-clock seconds per stage name (accumulates)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.order: list[str] = []

    def add(self, stage: str, dt: float) -> None:
        if stage not in self.seconds:
            self.order.append(stage)
        self.seconds[stage] += dt

    def summary(self) -> list[str]:
        """The timing lines: each stage, with the steps of a Lens.run indented under it."""
        lines = ["timings (s):"]
        for stage in self.order:
            if stage in _STEPS:
                continue
            lines.append(f"  {stage:<40} {self.seconds[stage]:7.1f}")
            if stage.startswith("run"):
                lines += [f"    {sub:<38} {self.seconds[sub]:7.1f}" for sub in _STEPS if sub in self.seconds]
        return lines

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


def _conservation_lines(rows: list[dict]) -> list[str]:
    """The LRP conservation of the CRP layers (``lens.conservation()`` rows or the stored
    ``conservation/<layer>`` summaries): a title and one line per layer, flagged when low or
    unstable (``kernels.lrp.conservation_warning``)."""
    from semlens_widgets.kernels.lrp import conservation_warning

    if not rows:
        return []
    lines = ["LRP conservation of the CRP crops (input heatmap sum / start relevance, 1 is perfect):"]
    for r in rows:
        flag = "  <- not conserved: relevance values unreliable" if conservation_warning(r) else ""
        lines.append(f"  {r['layer']}: median {r['median']:.3f} (10-90 %: {r['q10']:.3f} .. {r['q90']:.3f}, "
                     f"min {r['min']:.3f}) over {r['n']} concept examples{flag}")
    return lines


def run_demo(args: argparse.Namespace) -> int:
    """``semlens demo``: see the module docstring."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from semlens_widgets import demo
    from semlens_widgets.lens import Lens

    if not args.no_map:  # UMAP's numba code compiles (or loads from its cache) while the pipeline runs
        from semlens_widgets.kernels.projection import warm_up

        warm_up()
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
    for line in _conservation_lines(lens.conservation().to_dict("records")):
        _print(line)
    hits = lens.search(world.shortcut_artefact, k=5)
    _print(f"search {world.shortcut_artefact!r}: " + ", ".join(
        f"{r.layer}:{r.component} ({r.score:+.3f})" for r in hits.itertuples()))
    if evaluation is not None:
        _print()
        _print("quality against the ground truth (slw.demo.evaluate):")
        for line in evaluation.summary().splitlines():
            _print("  " + line)
    _print()
    for line in timer.summary():
        _print(line)
    _print(f"  {'total up to the map':<40} {pipeline:7.1f}")
    _print(f"results stored in {Path(args.store).resolve()} (a second run loads them)")
    _print()
    _print("next (README, 'After the demo'):")
    _print('  open a notebook: pip install -e ".[notebook]", then jupyter lab notebooks/quickstart.ipynb')
    _print("                   or marimo edit notebooks/quickstart_marimo.py")
    _print('  write a report:  lens.report("report.html", audit=dict(valid=[...], spurious=["watermark"], '
           'target="star")) -> one HTML file to send')
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
    for line in _conservation_lines([r["meta"] for r in rows if r["key"].startswith("conservation/")]):
        _print(line)
    return 0


# ---------------------------------------------------------------------------- semlens run


def _layer_list(text: str) -> list[str]:
    layers = [l.strip() for l in text.split(",")]
    if not text.strip() or any(not l for l in layers):
        raise argparse.ArgumentTypeError(f"expected comma-separated layer names (e.g. layer3,layer4), got {text!r}")
    return layers


def _add_run_parser(sub) -> None:
    r = sub.add_parser(
        "run",
        help="run SemanticLens on a model and dataset named on the command line (torchrun: many processes)",
        description="Build the model (--model MODULE:CALLABLE, called with no arguments, returns a "
        "torch.nn.Module), the dataset (--dataset MODULE:CALLABLE, returns a map-style dataset) and the "
        "foundation model (--fm NAME[@PRETRAINED], an open_clip config with a pretrained tag or a local "
        "weights file), then collect + crop + embed every layer into the store. The store records how to "
        "rebuild the run: `semlens report --store DIR` and slw.Lens.from_store(DIR) reopen it. Under "
        "torchrun (torchrun --nproc_per_node=N -m semlens_widgets run ...) the processes share the work "
        "and rank 0 writes the same store as one process would.",
    )
    what = r.add_argument_group("what to analyse")
    what.add_argument("--model", metavar="MODULE:CALLABLE", help="callable returning the model (nn.Module), "
                      "e.g. torchvision.models:resnet50 or mymodels:build (modules are found from --app-dir)")
    what.add_argument("--dataset", metavar="MODULE:CALLABLE",
                      help="callable returning a map-style dataset of (image [C,H,W], label) items")
    what.add_argument("--fm", metavar="NAME[@PRETRAINED]",
                      help="open_clip foundation model: config name, optionally @ a pretrained tag or a weights "
                           "file (ViT-B-32@laion2b_s34b_b79k, ViT-B-32@/data/clip.safetensors); or MODULE:CALLABLE "
                           "returning a semlens_widgets.FoundationModel")
    what.add_argument("--demo", action="store_true",
                      help="the demo world that ships with the package (its classifier, test split and CLIP) "
                           "instead of --model/--dataset/--fm")
    what.add_argument("--n-per-class", type=_positive_int, default=None,
                      help="with --demo: images per class (default: the full test split, 250)")
    what.add_argument("--layers", type=_layer_list, default=None, metavar="A,B",
                      help="comma-separated layer names (model.named_modules() names; with --demo default "
                           "block3,block4)")
    what.add_argument("--display-transform", metavar="MODULE:CALLABLE", default=None,
                      help="model inputs -> images in [0, 1] for crops, e.g. "
                           "semlens_widgets.lens:imagenet_unnormalize for ImageNet-normalised datasets")
    what.add_argument("--class-names", metavar="FILE|MODULE:ATTR", default=None,
                      help="names of the model's outputs: a text file (one per line) or a list / callable; "
                           "default: the dataset's .classes when it has them")
    what.add_argument("--vocabulary", metavar="FILE|MODULE:ATTR", default=None,
                      help="concepts to label components with (kept in the store; the report uses them)")
    how = r.add_argument_group("settings")
    how.add_argument("--m", type=_positive_int, default=30, help="concept examples per component (default 30)")
    how.add_argument("--crop", choices=["crp", "activation", "full"], default="crp", help="crop mode (default crp)")
    how.add_argument("--pooling", default="max", help="pooling of a component's map (default max)")
    how.add_argument("--store", required=True, metavar="DIR", help="store directory (results and the run record)")
    how.add_argument("--device", default="auto",
                     help="torch device: auto (cuda when available), cpu, cuda (under torchrun: cuda:LOCAL_RANK)")
    how.add_argument("--batch-size", type=_positive_int, default=None,
                     help="images per batch (default: chosen for the device, 64 on CPUs)")
    how.add_argument("--num-workers", type=_nonnegative_int, default=None,
                     help="DataLoader workers of the collection pass (default: 0 on CPUs, up to 8 per GPU)")
    how.add_argument("--chunk-size", type=_positive_int, default=64,
                     help="components per resumable chunk of the crop and embedding steps (default 64)")
    how.add_argument("--checkpoint-every", type=_positive_int, default=None,
                     help="batches between checkpoints of the collection pass (default: about one a minute)")
    how.add_argument("--class-relevance", action="store_true",
                     help="also compute the relevance of every component for every class (top classes), "
                          "shared among the processes under torchrun")
    how.add_argument("--app-dir", default=".", help="directory put on sys.path for MODULE imports (default .)")
    how.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads per process")
    how.add_argument("--overwrite", action="store_true", help="wipe the store first (recompute everything)")
    how.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="write the standalone HTML report of a store made by `semlens run`",
        description="Reopen the Lens of a store made by `semlens run` (its run record names the model, "
        "dataset and foundation model) and write the standalone HTML report.",
    )
    p.add_argument("--store", required=True, metavar="DIR", help="store directory of `semlens run`")
    p.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--layer", default=None, help="layer of the map and audit (default: the last)")
    p.add_argument("--query", action="append", default=None, metavar="TEXT",
                   help="a search query to show (repeat for several)")
    p.add_argument("--title", default="SemanticLens report", help="page title")
    p.add_argument("--device", default="cpu", help="torch device for what the report computes (default cpu)")
    p.add_argument("--recompute", action="store_true",
                   help="finish an unfinished run / recompute what no longer matches instead of refusing")
    p.add_argument("--app-dir", default=None, help="directory put on sys.path for MODULE imports "
                   "(default: the one the run recorded)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _error(command: str, msg: Any) -> int:
    print(f"semlens {command}: {msg}", file=sys.stderr, flush=True)
    return 2


def _auto_workers(device) -> int:
    """DataLoader workers when none are given: 0 on CPUs (workers would compete with the model for
    the cores), else up to 8 per process on the node's cores."""
    import os

    if device.type != "cuda":
        return 0
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, (os.cpu_count() or 2) // per_node - 1))


def run_run(args: argparse.Namespace) -> int:
    """``semlens run``: see the module docstring."""
    import os

    from semlens_widgets.lens_open import RunSpec, RunSpecError, read_names

    app_dir = os.path.abspath(args.app_dir)
    if not os.path.isdir(app_dir):
        return _error("run", f"--app-dir {args.app_dir!r} is not a directory")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    layers = args.layers
    if layers is None and args.demo:
        from semlens_widgets.demo import DEMO_LAYERS

        layers = list(DEMO_LAYERS)
    if layers is None:
        return _error("run", "missing --layers: comma-separated layer names to analyse (e.g. --layers layer3,layer4)")
    if args.n_per_class is not None and not args.demo:
        return _error("run", "--n-per-class applies to --demo only")
    try:
        spec = RunSpec(
            layers=layers, m=args.m, crop=args.crop, pooling=args.pooling, model=args.model, dataset=args.dataset,
            fm=args.fm, demo={"n_per_class": args.n_per_class, "split": "test"} if args.demo else None,
            display_transform=args.display_transform,
            class_names=None if args.class_names is None else read_names(args.class_names, "--class-names"),
            vocabulary=None if args.vocabulary is None else read_names(args.vocabulary, "--vocabulary"),
            batch_size=args.batch_size, num_workers=args.num_workers or 0, chunk_size=args.chunk_size,
            app_dir=app_dir,
        ).check()
    except RunSpecError as e:
        return _error("run", e)

    import torch

    from semlens_widgets import distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        created, device = distributed.init_from_env(args.device)
    except (RuntimeError, ValueError) as e:
        return _error("run", f"--device {args.device!r}: {e}")
    try:
        return _run_lens(args, spec, device)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run_lens(args: argparse.Namespace, spec, device) -> int:
    from semlens_widgets import distributed
    from semlens_widgets.lens import Lens, StoreError
    from semlens_widgets.lens_open import RUN_RECORD, RunSpecError

    rank0 = distributed.is_writer()
    say = _print if rank0 else (lambda msg="": None)
    timer = _Timer()
    workers = args.num_workers if args.num_workers is not None else _auto_workers(device)
    with timer.stage("build model, data, fm"):
        try:
            built = spec.build(device)
        except RunSpecError as e:
            return _error("run", e)
    try:
        with timer.stage("lens setup"):
            lens = Lens(built.model, built.dataset, built.fm, spec.layers, m=spec.m, crop=spec.crop, store=args.store,
                        device=device, pooling=spec.pooling, batch_size=spec.batch_size, num_workers=workers,
                        chunk_size=spec.chunk_size, class_names=built.class_names,
                        display_transform=built.display_transform, progress=not args.quiet and rank0,
                        overwrite=args.overwrite, checkpoint_every=args.checkpoint_every)
    except (ValueError, TypeError, StoreError) as e:
        return _error("run", e)
    spec.batch_size, spec.num_workers = lens.batch_size, workers
    if rank0:  # before the long work: an interrupted run can be resumed and reopened
        lens.store.set_info(RUN_RECORD, spec.to_record())
    world = distributed.world_size()
    say(f"semlens run: {len(built.dataset):,} samples, layers {spec.layers}, m={spec.m}, crop={spec.crop}, "
        f"device {device}, batch {lens.batch_size}, {world} process{'es' if world > 1 else ''}; store {args.store}")
    with timer.stage("run (collect + crop + embed)"):
        lens.run(on_step=lambda step, layer, seconds: timer.add(step, seconds))
    if args.class_relevance:
        if lens.num_classes is None:
            return _error("run", "--class-relevance: the model has no class outputs ([B, K] logits)")
        with timer.stage("class relevance"), distributed.sharded():
            for layer in lens.pipeline.layers.crp_layers():
                lens.class_relevance(layer)
    distributed.barrier()
    say()
    for layer in spec.layers:
        say(f"  {layer}: {lens.num_components(layer):,} components")
    for line in _conservation_lines(lens.conservation().to_dict("records")):
        say(line)
    for line in timer.summary():
        say(line)
    root = lens.store.root
    where = str(Path(root).resolve()) if root is not None else args.store
    say(f"results stored in {where}; reopen with slw.Lens.from_store({where!r}) or "
        f"`semlens report --store {where} --out report.html`")
    return 0


# ---------------------------------------------------------------------------- semlens report


def run_report(args: argparse.Namespace) -> int:
    """``semlens report``: reopen a store of ``semlens run`` and write its HTML report."""
    import os

    from semlens_widgets.lens import Lens, StoreError
    from semlens_widgets.lens_open import RunSpecError

    if args.app_dir is not None:
        sys.path.insert(0, os.path.abspath(args.app_dir))
    try:
        lens = Lens.from_store(args.store, device=args.device, recompute=args.recompute, progress=not args.quiet)
    except (StoreError, RunSpecError) as e:
        return _error("report", e)
    try:
        path = lens.report(args.out, queries=args.query, layer=args.layer, title=args.title,
                           progress=not args.quiet)
    except ValueError as e:
        return _error("report", e)
    _print(f"report written to {Path(path).resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semlens`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    if args.command == "info":
        return run_info(args)
    if args.command == "run":
        return run_run(args)
    if args.command == "report":
        return run_report(args)
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
