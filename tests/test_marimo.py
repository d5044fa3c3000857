"""marimo: the marimo quickstart (notebooks/quickstart_marimo.py) served by ``marimo run`` on
127.0.0.1 and opened in Debian's Chromium through Playwright. Every view of the package must draw
in it, as in JupyterLab: the search box's and the gallery's crops decoded, the map in several
colours, the Sankey's nodes, the audit's points, the comparison's crops, the explorer's linked
views (laid out by marimo's stacks, as marimo renders anywidgets but not ipywidgets' boxes), and
the notebook's last cell (the report) done. marimo puts each widget in its own shadow root:
Playwright's locators find elements inside them. Screenshots: ``artifacts/screenshots/marimo-*.png``.

The notebook's lens loads from the demo store the browser tests and notebooks share
(``_jlab.filled_demo_store``).

    python -m pytest tests/test_marimo.py -q      # ~2 min once the store is filled
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from _jlab import CHROMIUM, canvas_colors, chromium, filled_demo_store, free_port, server, wait_decoded

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHOTS = REPO / "artifacts" / "screenshots"
NOTEBOOK = REPO / "notebooks" / "quickstart_marimo.py"

if not Path(CHROMIUM).exists():  # marimo itself is a dev dependency: missing, the test fails
    pytestmark.append(pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"))


@contextlib.contextmanager
def marimo_run(notebook: Path, store: Path, timeout: float = 90.0):
    """``marimo run`` of a copy of ``notebook`` in a temp dir; yields (url, dir). Stopped by PID."""
    import marimo  # noqa: F401 - a dev dependency: fail here, clearly, when it is missing

    root = Path(tempfile.mkdtemp(prefix="slw-marimo-"))
    shutil.copy(notebook, root / notebook.name)
    port = free_port()
    env = {**os.environ, "SLW_DEMO_STORE": str(store), "TQDM_DISABLE": "1", "MARIMO_SKIP_UPDATE_CHECK": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "marimo", "run", notebook.name, "--headless", "--no-token", "--host", "127.0.0.1",
           "--port", str(port), "--no-sandbox"]
    url = f"http://127.0.0.1:{port}/"
    try:
        with server(cmd, root, env, root / "marimo.log", url, "marimo", timeout):
            yield url, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_quickstart_marimo_renders_every_view():
    SHOTS.mkdir(parents=True, exist_ok=True)
    store = filled_demo_store()
    with marimo_run(NOTEBOOK, store) as (url, root), chromium(viewport=(1500, 1000)) as ctx:
        page = ctx.new_page()
        errors: list[str] = []
        console: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.goto(url)

        def view(name: str, index: int = 0):
            return page.locator(f"[data-testid='slw-{name}']").nth(index)

        try:
            # each standalone view, then the explorer's own (they come after in the page)
            for name, n in (("search", 2), ("gallery", 2), ("map", 2), ("sankey", 2), ("audit", 2), ("compare", 1),
                            ("explorer", 1)):
                page.locator(f"[data-testid='slw-{name}'][data-ready='true']").nth(n - 1).wait_for(
                    state="attached", timeout=420_000)
            # the last cell ran: the report of the notebook exists
            deadline = time.time() + 300
            report = root / "reports" / "quickstart_marimo.html"
            while not report.exists() and time.time() < deadline:
                time.sleep(1)
            assert report.exists() and report.stat().st_size > 1_000_000
            page.get_by_text("Wrote quickstart_marimo.html").wait_for(timeout=60_000)

            s = view("search")
            s.scroll_into_view_if_needed()
            rows = s.locator("[data-testid='slw-result']:not(.slw-null)")
            rows.first.wait_for(timeout=60_000)
            assert rows.count() >= 3
            for i in range(rows.count()):  # strips load once in view: each row's 6 crops came through marimo's comm
                rows.nth(i).scroll_into_view_if_needed()
                assert wait_decoded(rows.nth(i), 6, timeout=120_000) == 6
            s.scroll_into_view_if_needed()
            s.screenshot(path=str(SHOTS / "marimo-search.png"), animations="disabled")

            g = view("gallery")
            g.scroll_into_view_if_needed()
            assert wait_decoded(g.locator("[data-testid='slw-gallery-grid']"), 30, timeout=120_000) == 30
            g.screenshot(path=str(SHOTS / "marimo-gallery.png"), animations="disabled")

            m = view("map")
            m.scroll_into_view_if_needed()
            got = canvas_colors(page, m.locator("[data-testid='slw-map-canvas']"))
            assert got["colors"] >= 8, got  # coloured by label
            m.screenshot(path=str(SHOTS / "marimo-map.png"), animations="disabled")

            k = view("sankey")
            k.scroll_into_view_if_needed()
            assert k.locator("[data-testid='slw-sankey-node']").count() >= 5
            k.screenshot(path=str(SHOTS / "marimo-sankey.png"), animations="disabled")

            a = view("audit")
            a.scroll_into_view_if_needed()
            assert canvas_colors(page, a.locator("[data-testid='slw-audit-canvas']"))["colors"] >= 3
            a.screenshot(path=str(SHOTS / "marimo-audit.png"), animations="disabled")

            c = view("compare")
            c.scroll_into_view_if_needed()
            chip = c.locator("[data-testid='slw-compare-concept'][data-kind='shared']").first
            if "slw-accent" not in (chip.get_attribute("class") or ""):
                chip.click()
            sides = c.locator("[data-testid='slw-compare-sides']")
            sides.wait_for(timeout=30_000)
            assert wait_decoded(sides, 6, timeout=120_000) >= 6
            c.screenshot(path=str(SHOTS / "marimo-compare.png"), animations="disabled")

            # the explorer: selecting a search hit selects it in its gallery (linked in Python)
            es, eg = view("search", 1), view("gallery", 1)
            es.scroll_into_view_if_needed()
            es.locator("[data-testid='slw-suggestion']").first.click()
            hit = es.locator("[data-testid='slw-result']:not(.slw-null)").first
            hit.wait_for(timeout=60_000)
            want = hit.get_attribute("data-component")
            hit.click(position={"x": 8, "y": 8})
            deadline = time.time() + 60
            while eg.locator("input[type='number']").first.input_value() != want and time.time() < deadline:
                time.sleep(0.5)
            assert eg.locator("input[type='number']").first.input_value() == want
            grid = eg.locator("[data-testid='slw-gallery-grid']")
            grid.scroll_into_view_if_needed()
            assert wait_decoded(grid, 30, timeout=120_000) == 30
            header = view("explorer")
            header.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "marimo-explorer.png"), animations="disabled")
        except Exception:
            page.screenshot(path=str(SHOTS / "marimo-failure.png"))
            log = (root / "marimo.log").read_text(errors="replace")[-3000:]
            print(f"marimo log tail:\n{log}\nconsole errors: {console}")
            raise
        assert errors == []
        assert [c for c in console if "anywidget" in c.lower() or "esm" in c.lower()] == [], console
