"""Real-browser test of the quickstart notebook on the demo world: JupyterLab on 127.0.0.1 +
Debian's Chromium through Playwright, Run All, then every view of the explorer must draw.

Its own module so that its Playwright instance never overlaps the module-scoped one of
tests/test_browser.py (the sync API refuses to start inside a running loop).

The notebook's store (``demo-lens-store`` next to it) is a link to the demo store the browser
tests and the notebooks share (``_jlab.filled_demo_store``): the first test of a run fills it,
this one loads it, so ``lens.run()`` in the notebook takes seconds.

    python -m pytest tests/test_browser_quickstart.py -q      # minutes when the store is new
"""
from __future__ import annotations

from pathlib import Path

import pytest

from _jlab import (canvas_colors, canvas_ink, chromium, filled_demo_store, jupyterlab, missing, open_notebook, run_all,
                   wait_decoded)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHOTS = REPO / "artifacts" / "screenshots"

_why = missing()
if _why:
    pytestmark.append(pytest.mark.skip(reason=f"browser tests skipped: {_why}"))


# --------------------------------------------------------------------------- the quickstart notebook
# Only a machine without Chromium skips (above): a missing notebook, missing demo weights or a
# missing Lens.explorer are failures of the package, and fail here.
def test_quickstart_notebook_renders_every_view():
    quick = REPO / "notebooks" / "quickstart.ipynb"
    store = filled_demo_store()
    with jupyterlab([quick], links={"demo-lens-store": store}) as (base, root), chromium() as ctx:
        pg = open_notebook(ctx, base, quick.name)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        run_all(pg)
        try:
            pg.wait_for_selector(".slw-explorer-box[data-all-ready='true']", timeout=540_000, state="attached")
        except Exception:
            pg.screenshot(path=str(SHOTS / "quickstart-failure.png"))
            raise
        for view in ("search", "gallery", "map"):
            loc = pg.locator(f"[data-testid='slw-{view}']").first
            loc.scroll_into_view_if_needed()
            # real crops of the demo world, requested lazily once in view: wait until they are decoded
            if view == "search":
                n = 6 * loc.locator("[data-testid='slw-result']:not(.slw-null)").count()
                assert n and wait_decoded(loc, n) >= n
            elif view == "gallery":
                assert wait_decoded(loc.locator("[data-testid='slw-gallery-grid']"), 30) == 30
            loc.screenshot(path=str(SHOTS / f"quickstart-{view}.png"), animations="disabled")
        assert pg.locator("[data-testid='slw-search'] [data-testid='slw-result']").count() > 0
        assert canvas_ink(pg, "[data-testid='slw-map-canvas']")["ink"] > 50
        assert canvas_colors(pg, "[data-testid='slw-map-canvas']")["colors"] >= 3  # not a one-colour map
        pg.set_viewport_size({"width": 1500, "height": 2600})
        box = pg.locator(".slw-explorer-box").first
        box.scroll_into_view_if_needed()
        assert wait_decoded(pg.locator("[data-testid='slw-gallery']").last.locator("[data-testid='slw-gallery-grid']"), 30) == 30
        box.screenshot(path=str(SHOTS / "quickstart-explorer.png"), animations="disabled")
        assert errors == []
