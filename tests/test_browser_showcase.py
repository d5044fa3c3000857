"""Every view on the demo world in a real browser (JupyterLab + Debian's Chromium through
Playwright), light and dark: what each view shows is waited for and asserted, and the
screenshots a person would show a colleague go to ``artifacts/screenshots/demo-<view>-<theme>.png``.

The notebook (tests/notebooks/browser_showcase.ipynb) builds the demo lens as the README does.
Its code runs once in a plain Python process first (``_jlab.filled_demo_store``: a few minutes on
a laptop CPU) so that the store holds every result the views read; in the browser the notebook
then only loads them (a kernel busy for minutes under a loaded CPU can lose its websocket, and
JupyterLab then drops the queued cells). The store is the one the other browser tests, the marimo
test and the notebooks share: ``artifacts/demo-lens-store`` (kept between runs: a rerun only
loads) or ``SLW_DEMO_STORE=/path``. The hostile-string checks live in tests/test_browser.py, on a test
double, so that these pictures show a clean state.

    python -m pytest tests/test_browser_showcase.py -q      # minutes the first time, ~1 min after
"""
from __future__ import annotations

from pathlib import Path

import pytest

from _jlab import (canvas_colors, chromium, clipped_placeholders, filled_demo_store, hide_side_panels, jupyterlab,
                   missing, open_notebook, render_failure, run_all, set_theme, wait_decoded)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHOTS = REPO / "artifacts" / "screenshots"
NOTEBOOK = HERE / "notebooks" / "browser_showcase.ipynb"
VIEWS = ("search", "gallery", "map", "sankey", "audit", "compare", "explorer")

_why = missing()
if _why:
    pytestmark.append(pytest.mark.skip(reason=f"browser tests skipped: {_why}"))


def _demo_missing() -> str | None:
    try:
        from semlens_widgets import demo

        if not (Path(demo.CLASSIFIER_WEIGHTS).exists() and Path(demo.CLIP_WEIGHTS).exists()):
            return "the demo world's weights are not shipped"
    except Exception as err:  # noqa: BLE001
        return f"demo world unavailable: {err}"
    return None


if _demo_missing():
    pytestmark.append(pytest.mark.skip(reason=f"showcase: {_demo_missing()}"))


def view(page, name: str, index: int = 0):
    """The index-th standalone view (the explorer's own views come after the standalone ones)."""
    return page.locator(f"[data-testid='slw-{name}']").nth(index)


@pytest.fixture(scope="module")
def page():
    SHOTS.mkdir(parents=True, exist_ok=True)
    # the store shared with the other browser tests and the notebooks (kept under artifacts/, git
    # ignores it): a rerun loads instead of computing, and the store's fingerprints recompute
    # whatever a code change made stale
    store = filled_demo_store()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLW_DEMO_STORE", str(store))  # the JupyterLab server and its kernel inherit it
        with jupyterlab([NOTEBOOK], timeout=120) as (base, root), chromium(viewport=(1500, 1000)) as ctx:
            pg = open_notebook(ctx, base, NOTEBOOK.name)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            try:
                hide_side_panels(pg)
                run_all(pg)
                pg.wait_for_selector(".slw-explorer-box[data-all-ready='true']", timeout=300_000, state="attached")
                for name in VIEWS:
                    pg.wait_for_selector(f"[data-testid='slw-{name}'][data-ready='true']", timeout=60_000, state="attached")
            except Exception:
                raise render_failure(pg, root, SHOTS / "demo-failure.png", "the showcase did not render every view", errors)
            pg.js_errors = errors
            yield pg


def shot(loc, name: str, theme: str) -> None:
    loc.scroll_into_view_if_needed()
    loc.screenshot(path=str(SHOTS / f"demo-{name}-{theme}.png"), animations="disabled")


# ----------------------------------------------------------------------------- what each view shows
def check_search(page, theme):
    box = view(page, "search")
    box.scroll_into_view_if_needed()
    rows = box.locator("[data-testid='slw-result']")
    rows.first.wait_for(timeout=30_000)
    # the watermark detectors first; hits no better than the empty prompt apart, folded away
    sep = box.locator("[data-testid='slw-search-null']")
    assert sep.count() == 1 and "no better than the empty prompt" in sep.inner_text()
    positive = box.locator("[data-testid='slw-result']:not(.slw-null)")
    assert positive.count() >= 3 and all(float(s) > 0 for s in positive.evaluate_all("l => l.map(r => r.dataset.score)"))
    assert box.locator("[data-testid='slw-result'].slw-null:visible").count() == 0
    n_thumbs = 6 * positive.count()
    assert wait_decoded(box, n_thumbs) >= n_thumbs
    # every thumbnail of a row inside the row (none cut at the right edge)
    cut = box.evaluate("""b => [...b.querySelectorAll("[data-testid='slw-result']:not(.slw-null)")].filter(r => {
        const rr = r.getBoundingClientRect();
        return [...r.querySelectorAll('.slw-thumb')].some(t => t.getBoundingClientRect().right > rr.right + 0.5); }).length""")
    assert cut == 0
    assert clipped_placeholders(box) == []
    shot(box, "search", theme)


def check_gallery(page, theme):
    g = view(page, "gallery")
    g.scroll_into_view_if_needed()
    assert wait_decoded(g.locator("[data-testid='slw-gallery-grid']"), 30) == 30
    # the pager (‹ number ›) on one line
    mids = g.locator(".slw-pager > *").evaluate_all("l => l.map(e => { const b = e.getBoundingClientRect(); return (b.top + b.bottom) / 2; })")
    assert len(mids) == 3 and max(mids) - min(mids) < 4, mids
    # "most relevant for": shares of the class's relevance, the number beside its bar
    tops_text = g.locator("[data-testid='slw-top-class']").all_text_contents()
    assert len(tops_text) == 3 and all("%" in t for t in tops_text), tops_text
    overlap = g.evaluate("""g => [...g.querySelectorAll("[data-testid='slw-top-class']")].filter(r => {
        const bar = r.querySelector('.slw-bar').getBoundingClientRect(), num = r.querySelector('.slw-num').getBoundingClientRect();
        return num.left < bar.right && num.right > bar.left; }).length""")
    assert overlap == 0
    # the component's description (lens.describe): best concept, AUCs of the concepts tried, and
    # the generator's images of the best one
    desc = g.locator("[data-testid='slw-description']")
    assert "AUC" in desc.inner_text() and desc.locator("[data-testid='slw-description-row']").count() >= 3
    assert wait_decoded(desc, 4) == 4
    shot(g, "gallery", theme)


def check_map(page, theme):
    m = view(page, "map")
    m.scroll_into_view_if_needed()
    canvas = "[data-testid='slw-map'] [data-testid='slw-map-canvas']"
    assert m.locator("select").first.input_value() == "label"  # labels exist: coloured by label
    page.wait_for_function(f"() => Number(document.querySelector(\"{canvas}\").dataset.names) >= 3", timeout=20_000)
    got = canvas_colors(page, canvas)
    assert got["colors"] >= 8, got  # 13 labels of block4 + unlabelled, distinct colours
    x0, y0, x1, y1 = got["bbox"]
    # the points fill the canvas (a far island does not squeeze the rest into a corner)
    assert max(x1 - x0, y1 - y0) > 0.85 and (x1 - x0) * (y1 - y0) > 0.45, got
    # zoomed in, the reset button fits the points again
    box = m.locator("[data-testid='slw-map-canvas']").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -1500)
    page.wait_for_function(f"() => Number(document.querySelector(\"{canvas}\").dataset.names) < 3 || "
                           "document.querySelector(\"[data-testid='slw-map'] .slw-toolbar\").textContent.includes('outside the view')",
                           timeout=10_000)
    m.locator("[data-testid='slw-map-reset']").click()
    page.wait_for_function(f"() => !document.querySelector(\"[data-testid='slw-map'] .slw-toolbar\").textContent.includes('outside the view')",
                           timeout=10_000)
    assert canvas_colors(page, canvas)["bbox"] == pytest.approx(got["bbox"], abs=0.02)
    legend = m.locator("[data-testid='slw-map-legend-item']")
    assert legend.count() >= 10
    swatches = legend.evaluate_all("l => l.map(e => getComputedStyle(e.querySelector('.slw-swatch')).backgroundColor)")
    assert len(set(swatches)) == len(swatches), swatches  # no colour twice
    shot(m, "map", theme)


def check_sankey(page, theme):
    s = view(page, "sankey")
    s.scroll_into_view_if_needed()
    nodes = s.locator("[data-testid='slw-sankey-node']")
    nodes.first.wait_for(timeout=30_000)
    layers = nodes.evaluate_all("l => l.map(n => n.dataset.layer)")
    merged = s.locator("[data-testid='slw-sankey-node'][data-merged='true']")
    merged_layers = merged.evaluate_all("l => l.map(n => n.dataset.layer)")
    assert len(merged_layers) == len(set(merged_layers)) >= 1  # one merged node per layer at most
    texts = nodes.evaluate_all("l => l.map(n => n.textContent)")
    assert not any(t.startswith("(unlabelled)") for t in texts), texts
    assert {"block3", "block4", "output"} <= set(layers)
    assert "width" in s.text_content() and "components" in s.text_content()  # the legend says what they mean
    # drawn for the width it has (not drawn narrow and stretched: text the size of the layout)
    scale = s.locator("svg").first.evaluate("v => v.getBoundingClientRect().width / v.viewBox.baseVal.width")
    assert 0.97 < scale < 1.03, scale
    # labels sit inside their node's column, never on the flows between columns
    outside = s.evaluate("""s => [...s.querySelectorAll("[data-testid='slw-sankey-node']")].filter(g => {
        const box = g.querySelector('rect.slw-node-box').getBoundingClientRect();
        return [...g.querySelectorAll('text')].some(t => { const b = t.getBoundingClientRect();
          return b.left < box.left - 0.5 || b.right > box.right + 0.5; }); }).length""")
    assert outside == 0
    shot(s, "sankey", theme)
    # a merged node expands on click into its members, and collapses again
    n_before = nodes.count()
    count = "() => document.querySelector(\"[data-testid='slw-sankey']\").querySelectorAll(\"[data-testid='slw-sankey-node']\").length"
    merged.first.click()
    page.wait_for_function(f"n => ({count})() > n", arg=n_before, timeout=10_000)
    s.locator("[data-testid='slw-sankey-collapse']").first.click()
    page.wait_for_function(f"n => ({count})() === n", arg=n_before, timeout=10_000)


def check_audit(page, theme):
    a = view(page, "audit")
    a.scroll_into_view_if_needed()
    canvas = a.locator("[data-testid='slw-audit-canvas']")
    ticks = canvas.evaluate("c => [c.dataset.xticks, c.dataset.yticks]")
    assert all(t and len(t.split(",")) >= 3 for t in ticks), ticks
    assert canvas_colors(page, "[data-testid='slw-audit'] [data-testid='slw-audit-canvas']")["colors"] >= 3
    assert clipped_placeholders(a) == []
    assert "relevance share" in a.text_content()
    shot(a, "audit", theme)


def check_compare(page, theme):
    c = view(page, "compare")
    c.scroll_into_view_if_needed()
    chip = c.locator("[data-testid='slw-compare-concept'][data-kind='shared']").first  # examples on both sides
    if "slw-accent" not in (chip.get_attribute("class") or ""):
        chip.click()
    sides = c.locator("[data-testid='slw-compare-sides']")
    sides.wait_for(timeout=20_000)
    assert wait_decoded(sides, 6) >= 6
    # strips load when they scroll into view: bring each one in and wait for it, so that the
    # screenshot shows every row's examples (not grey placeholders)
    strips = sides.locator("[data-testid='slw-strip']")
    for i in range(strips.count()):
        strips.nth(i).scroll_into_view_if_needed()
        strips.nth(i).locator("xpath=self::*[@data-loaded='true']").wait_for(timeout=20_000)
    c.scroll_into_view_if_needed()
    banner = c.locator("[data-testid='slw-error']")
    assert not banner.is_visible(), banner.inner_text()
    shot(c, "compare", theme)


def check_explorer(page, theme):
    box = page.locator(".slw-explorer-box").first
    search = view(page, "search", 1)
    chips = search.locator("[data-testid='slw-suggestion']")
    assert chips.count() >= 5  # something to click before anything is typed
    page.set_viewport_size({"width": 1500, "height": 2800})
    try:
        box.scroll_into_view_if_needed()
        assert wait_decoded(view(page, "gallery", 1).locator("[data-testid='slw-gallery-grid']"), 30) == 30
        box.screenshot(path=str(SHOTS / f"demo-explorer-{theme}.png"), animations="disabled")
    finally:
        page.set_viewport_size({"width": 1500, "height": 1000})


CHECKS = {"search": check_search, "gallery": check_gallery, "map": check_map, "sankey": check_sankey,
          "audit": check_audit, "compare": check_compare, "explorer": check_explorer}


@pytest.mark.parametrize("name", list(CHECKS))
def test_view_on_the_demo_world_light(page, name):
    CHECKS[name](page, "light")


def test_suggestion_chip_searches_in_the_explorer(page):
    search = view(page, "search", 1)
    search.scroll_into_view_if_needed()
    chip = search.locator("[data-testid='slw-suggestion']").first
    concept = chip.get_attribute("data-concept")
    chip.click()
    search.locator("[data-testid='slw-result']").first.wait_for(timeout=30_000)
    assert search.locator("[data-testid='slw-search-input']").input_value() == concept
    # in the narrow explorer panel too, every thumbnail of a row inside the row
    rows = search.locator("[data-testid='slw-result']:not(.slw-null)")
    rows.first.scroll_into_view_if_needed()  # strips load once in view
    assert wait_decoded(rows.first, 6) == 6
    cut = search.evaluate("""b => [...b.querySelectorAll("[data-testid='slw-result']:not(.slw-null)")].filter(r => {
        const rr = r.getBoundingClientRect();
        return [...r.querySelectorAll('.slw-thumb')].some(t => t.getBoundingClientRect().right > rr.right + 0.5); }).length""")
    assert cut == 0
    assert clipped_placeholders(page.locator(".slw-explorer-box").first) == []
    search.locator("[data-testid='slw-search-input']").fill("")
    search.locator("[data-testid='slw-suggestion']").first.wait_for(timeout=30_000)


@pytest.mark.parametrize("name", list(CHECKS))
def test_view_on_the_demo_world_dark(page, name):
    if page.evaluate("() => document.body.dataset.jpThemeLight") != "false":
        set_theme(page, dark=True)
        # the canvases redraw with the dark background
        page.wait_for_function("""() => { const c = document.querySelector("[data-testid='slw-map-canvas']");
            const d = c.getContext('2d').getImageData(1, 1, 1, 1).data; return d[0] + d[1] + d[2] < 240; }""", timeout=20_000)
    CHECKS[name](page, "dark")


def test_map_colours_by_label_auc(page):
    """The label AUCs of lens.faithfulness as the map's colour (viridis; grey: not measured)."""
    m = view(page, "map")
    m.scroll_into_view_if_needed()
    sel = m.locator("select").first
    sel.select_option("auc")
    canvas = "[data-testid='slw-map'] [data-testid='slw-map-canvas']"
    try:
        page.wait_for_function("() => document.querySelector(\"[data-testid='slw-map'] .slw-legend\").textContent.includes('AUC')",
                               timeout=20_000)
        assert canvas_colors(page, canvas)["colors"] >= 6  # a ramp of AUCs, not one colour
        theme = "dark" if page.evaluate("() => document.body.dataset.jpThemeLight") == "false" else "light"
        shot(m, "map-auc", theme)
    finally:
        sel.select_option("label")
        page.wait_for_function("() => !document.querySelector(\"[data-testid='slw-map'] .slw-legend\").textContent.includes('AUC')",
                               timeout=20_000)


def test_no_javascript_errors(page):
    assert page.js_errors == []
