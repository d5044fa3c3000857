"""Explorer benchmark: time from executing ``lens.explorer()`` to all views drawn in Chromium,
and the bytes sent to the front end to open it and per gallery page.

    python benchmarks/bench_explorer.py            # synthetic lenses (demo-sized and 10,000 components)
    python benchmarks/bench_explorer.py --demo     # + the real demo world (needs its shipped weights;
                                                   #   runs the Lens once into ./demo-lens-store)

Timing: JupyterLab on 127.0.0.1 + Debian's Chromium (Playwright). For each lens a cell
``ex = explorer(lens)`` is executed with Shift+Enter; the clock starts at the key press (page
``performance.now()``) and stops when the Explorer box reports every view drawn
(``data-all-ready``, polled every animation frame). "cold" is the first Explorer of the page
(the ES modules are compiled then), "warm" a later one. Thumbnails are lazy and not part of it.

Bytes: the widget state of every view of the Explorer (JSON + binary buffers), with and without
the JS/CSS modules (``_esm``/``_css``, sent once per view), measured in-process with
ipywidgets' own serialisation; a gallery page is one ``thumbs`` reply (30 crops, PNG).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from _fake_lens import CONCEPTS, FakeLens  # noqa: E402

SYNTH = {
    # a stand-in of the demo world's size (two conv layers) and the 10,000-component lens
    "synthetic-demo-size": "FakeLens({'block3': 64, 'block4': 128}, m=30, n_samples=2000, image_size=64, crop_size=64, n_classes=8)",
    "synthetic-10k": "FakeLens({'block3': 2000, 'block4': 10000}, m=30, n_samples=20000, image_size=64, crop_size=64, n_classes=8)",
}


def explorer_of(lens, layer, concepts):
    if hasattr(lens, "explorer"):
        try:
            return lens.explorer()
        except TypeError:
            pass
    from semlens_widgets.widgets import Explorer

    return Explorer(lens, layer, concepts=concepts)


def payload_bytes(ex) -> dict:
    from ipywidgets.widgets.widget import _remove_buffers

    out = {"json": 0, "buffers": 0, "modules": 0, "views": len(ex.views)}
    for v in ex.views:
        state, _paths, buffers = _remove_buffers(v.get_state())
        out["modules"] += len(state.pop("_esm", "")) + len(state.pop("_css", ""))
        out["json"] += len(json.dumps(state, separators=(",", ":")))
        out["buffers"] += sum(len(b) for b in buffers)
    # the layout boxes (ipywidgets VBox/HBox + Layout models) are JSON too
    import ipywidgets

    boxes = [ex] + [c for c in ex.children if isinstance(c, ipywidgets.Box)]
    for b in boxes:
        out["json"] += len(json.dumps(b.get_state(), default=str, separators=(",", ":")))
        out["json"] += len(json.dumps(b.layout.get_state(), default=str, separators=(",", ":")))
    out["total_without_modules"] = out["json"] + out["buffers"]
    out["total"] = out["total_without_modules"] + out["modules"]
    return out


def gallery_page_bytes(ex) -> dict:
    g = ex.gallery
    sent = []
    g.send = lambda content, buffers=None: sent.append((content, list(buffers or [])))
    g._on_custom_msg(g, {"type": "thumbs", "req": 1, "layer": g.layer, "component": g.component, "start": 0,
                         "count": g.page_size, "size": g.thumb_size, "kind": "crops", "format": "png"}, [])
    content, bufs = sent[-1]
    return {"images": content.get("count"), "png_bytes": sum(len(b) for b in bufs),
            "json_bytes": len(json.dumps(content)), "thumb_px": g.thumb_size}


def measure_bytes(demo: bool) -> dict:
    res = {}
    for name, expr in SYNTH.items():
        lens = eval(expr)  # noqa: S307 - our own constant expressions
        ex = explorer_of(lens, "block4", CONCEPTS)
        res[name] = {"components": sum(lens.num_components(l) for l in lens.layers),
                     "open": payload_bytes(ex), "gallery_page": gallery_page_bytes(ex)}
    if demo:
        lens = demo_lens()
        if lens is not None:
            ex = explorer_of(lens, lens.layers[-1], None)
            res["demo-world"] = {"components": sum(lens.num_components(l) for l in lens.layers),
                                 "open": payload_bytes(ex), "gallery_page": gallery_page_bytes(ex)}
    return res


DEMO_SETUP = """
import semlens_widgets as slw
world = slw.demo.load()
lens_demo = slw.Lens(world.model, world.dataset, world.fm, layers=world.layers, m=30,
                     class_names=world.class_names, store="{store}")
lens_demo.run()
lens_demo.set_vocabulary(world.concepts())
"""


def demo_lens():
    try:
        ns: dict = {}
        exec(DEMO_SETUP.format(store=str(REPO / "demo-lens-store")), ns)  # noqa: S102
        return ns["lens_demo"]
    except Exception as err:  # noqa: BLE001
        print(f"[demo world unavailable: {type(err).__name__}: {err}]")
        return None


def make_notebook(path: Path, demo: bool, repeats: int) -> list[str]:
    import nbformat as nbf

    setup = ["import os, sys", "sys.path[:0] = [os.getcwd()]", "import semlens_widgets as slw",
             "from semlens_widgets.widgets import Explorer",
             "from _fake_lens import FakeLens, CONCEPTS",
             "def explorer(lens, layer='block4'):",
             "    return lens.explorer() if hasattr(lens, 'explorer') else Explorer(lens, layer, concepts=CONCEPTS)"]
    lenses = {}
    for name, expr in SYNTH.items():
        var = name.replace("-", "_")
        setup.append(f"{var} = {expr}")
        lenses[name] = var
    if demo:
        setup.append(DEMO_SETUP.format(store=str(REPO / "demo-lens-store")))
        lenses["demo-world"] = "lens_demo"
    cells = [nbf.v4.new_code_cell("\n".join(setup))]
    order = []
    for r in range(repeats):
        for name, var in lenses.items():
            cells.append(nbf.v4.new_code_cell(f"ex = explorer({var})\nex"))
            order.append(name)
    cells.append(nbf.v4.new_code_cell(
        "from semlens_widgets.widgets import SemanticMap\n"
        "big_map = SemanticMap(FakeLens({'block4': 50000}, n_classes=8), 'block4', concepts=CONCEPTS)\nbig_map"))
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, path)
    return order


def measure_times(demo: bool, repeats: int) -> dict:
    from _jlab import chromium, jupyterlab, missing, open_notebook

    why = missing()
    if why:
        print(f"[browser timing skipped: {why}]")
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="slw-bench-"))
    nb = tmp / "bench_explorer.ipynb"
    order = make_notebook(nb, demo, repeats)
    times: dict[str, list[float]] = {}
    with jupyterlab([nb, REPO / "tests" / "_fake_lens.py"]) as (base, _root), chromium((1500, 1100)) as ctx:
        page = open_notebook(ctx, base, nb.name)
        cells = page.locator(".jp-Notebook .jp-Cell")
        # the setup cell (not timed); retried until the kernel takes it (websocket just opened)
        started = "() => /\\[(\\*|\\d+)\\]/.test(document.querySelector('.jp-Cell .jp-InputArea-prompt').textContent)"
        for _ in range(8):
            cells.nth(0).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            try:
                page.wait_for_function(started, timeout=5_000)
                break
            except Exception:  # noqa: BLE001 - not yet: try again
                pass
        page.wait_for_function("() => /\\[1\\]/.test(document.querySelector('.jp-Cell .jp-InputArea-prompt').textContent)",
                               timeout=600_000)
        for i, name in enumerate(order, start=1):
            cells.nth(i).locator(".jp-InputArea-prompt").click()  # select the cell (command mode)
            page.evaluate("() => { window.__t0 = performance.now(); window.__t1 = null; }")
            page.keyboard.press("Shift+Enter")
            page.wait_for_function(
                """(n) => { const b = document.querySelectorAll('.slw-explorer-box[data-all-ready=true]');
                            if (b.length >= n) { window.__t1 = window.__t1 || performance.now(); return true; } return false; }""",
                arg=i, polling="raf", timeout=120_000)
            dt = page.evaluate("() => window.__t1 - window.__t0") / 1000
            times.setdefault(name, []).append(dt)
        # the 50,000-point map: time to first draw, then the frame interval while zooming
        i = len(order) + 1
        cells.nth(i).locator(".jp-InputArea-prompt").click()
        n_maps = page.locator("[data-testid='slw-map']").count()
        page.evaluate("() => { window.__t0 = performance.now(); }")
        page.keyboard.press("Shift+Enter")
        page.wait_for_function(
            """(n) => { const m = document.querySelectorAll("[data-testid='slw-map'][data-ready='true']");
                        return m.length > n && m[n].querySelector('.slw-sub').textContent.startsWith('50,000'); }""",
            arg=n_maps, polling="raf", timeout=120_000)
        map50k_first = page.evaluate("() => performance.now() - window.__t0") / 1000
        box = page.locator("[data-testid='slw-map-canvas']").last
        box.scroll_into_view_if_needed()
        frame_ms = page.evaluate("""async () => {
            const c = [...document.querySelectorAll("[data-testid='slw-map-canvas']")].pop();
            const b = c.getBoundingClientRect();
            const raf = () => new Promise((r) => requestAnimationFrame(r));
            await raf();
            const t0 = performance.now();
            const N = 40;
            for (let i = 0; i < N; i++) {
              c.dispatchEvent(new WheelEvent('wheel', {deltaY: i < N / 2 ? -40 : 40, clientX: b.left + b.width / 2,
                                                       clientY: b.top + b.height / 2, bubbles: true, cancelable: true}));
              await raf();
            }
            return (performance.now() - t0) / N;
        }""")
        shot = REPO / "artifacts" / "screenshots"
        shot.mkdir(parents=True, exist_ok=True)
        box.screenshot(path=str(shot / "map_50k.png"))
    out = {name: {"cold_s": ts[0], "warm_median_s": statistics.median(ts[1:]) if len(ts) > 1 else None, "all_s": ts}
           for name, ts in times.items()}
    out["_map50k"] = {"first_draw_s": map50k_first, "zoom_frame_ms": frame_ms}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", action="store_true", help="also time the real demo world (runs the Lens once)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true", help="bytes only")
    args = ap.parse_args()
    t = time.time()
    sizes = measure_bytes(args.demo)
    print("== bytes sent to open the Explorer (thumbnails excluded) and per gallery page")
    for name, r in sizes.items():
        o, g = r["open"], r["gallery_page"]
        print(f"{name:22s} {r['components']:6d} components: state {o['total_without_modules'] / 1024:8.1f} KiB "
              f"(JSON {o['json'] / 1024:.1f} KiB + binary {o['buffers'] / 1024:.1f} KiB) + JS/CSS modules "
              f"{o['modules'] / 1024:.1f} KiB over {o['views']} views = {o['total'] / 1024:.1f} KiB; "
              f"gallery page: {g['images']} crops, {g['png_bytes'] / 1024:.1f} KiB PNG + {g['json_bytes']} B JSON")
    if not args.no_browser:
        times = measure_times(args.demo, args.repeats)
        print("== time from executing the explorer cell to all views drawn in Chromium (target < 1.5 s)")
        m50 = times.pop("_map50k", None)
        for name, r in times.items():
            warm = f"{r['warm_median_s']:.2f} s" if r["warm_median_s"] is not None else "n/a"
            print(f"{name:22s} cold {r['cold_s']:.2f} s, warm median {warm}  (all: "
                  + ", ".join(f"{x:.2f}" for x in r["all_s"]) + ")")
        if m50:
            print(f"== SemanticMap with 50,000 points: executed -> drawn {m50['first_draw_s']:.2f} s; "
                  f"zooming: {m50['zoom_frame_ms']:.1f} ms per frame ({1000 / m50['zoom_frame_ms']:.0f} fps)")
    print(f"(benchmark wall time {time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
