"""Size and time of the standalone HTML report on the demo world (``lens.report``).

Loads (or computes, the first time: minutes) the demo lens in ``--store``, then writes the report
the README shows (labels, search strips, map, measures, plus the audit of the shortcut class and
its attribution summary) and prints its size, what the size is made of (BokehJS, the WebP crop
strips, the bokeh document, the page) and the time of each part. Run it on a quiet machine:

    python benchmarks/bench_report.py --store ./demo-lens-store [--no-audit] [--out report.html]
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="./demo-lens-store", help="demo lens store (default ./demo-lens-store)")
    ap.add_argument("--out", default=None, help="where to write the report (default: a temp file)")
    ap.add_argument("--no-audit", action="store_true", help="the report without options (no audit, no graph)")
    ap.add_argument("--repeat", type=int, default=2, help="reports written (the first may compute and store "
                    "the map, the measures and the attribution graph; later ones load them)")
    args = ap.parse_args()

    import semlens_widgets as slw

    t0 = time.perf_counter()
    world = slw.demo.load()
    lens = slw.Lens(world.model, world.dataset, world.fm, layers=world.layers, m=30, class_names=world.class_names,
                    store=args.store, progress=False)
    lens.run()
    lens.set_vocabulary(world.concepts())
    print(f"demo lens ready in {time.perf_counter() - t0:.1f} s ({args.store})")
    kw = {} if args.no_audit else dict(audit=dict(valid=world.valid_concepts[world.shortcut_class],
                                                  spurious=["watermark", "ruler", "band-aid", "red tint"],
                                                  target=world.shortcut_target))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "report.html"
    for i in range(max(1, args.repeat)):
        t = time.perf_counter()
        path = lens.report(out, progress=False, **kw)
        print(f"report {i + 1}: {time.perf_counter() - t:.1f} s, {path.stat().st_size / 1e6:.2f} MB -> {path}")
    page = path.read_text(encoding="utf-8")
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    uris = re.findall(r"data:image/webp;base64,[A-Za-z0-9+/=]+", page)
    bokehjs = max(map(len, scripts)) if scripts else 0
    doc = sum(len(s) for s in scripts if s.lstrip().startswith("{")) if scripts else 0
    pics = sum(map(len, uris))
    print(f"  BokehJS {bokehjs / 1e6:.2f} MB, {len(uris)} crop strips {pics / 1e6:.2f} MB "
          f"({pics / max(1, len(uris)) / 1e3:.1f} kB each, {len(set(uris))} distinct), bokeh document {doc / 1e6:.2f} MB, "
          f"rest {(len(page) - bokehjs - pics - doc) / 1e6:.2f} MB")
    sections = re.findall(r'<section id="([a-z]+)">', page)
    print(f"  sections: {', '.join(sections)}")


if __name__ == "__main__":
    main()
