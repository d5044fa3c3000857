"""The standalone HTML report (the package semlens_widgets/report/).

Structure and escaping run against the test double of the LensLike protocol
(tests/_fake_lens.py) so they do not depend on a model; the browser test opens the file in
Debian's Chromium from a file:// URL with the network off and checks that the bokeh plots draw.
``test_report_on_demo_world`` runs the real Lens on the demo world.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pytest

from _fake_lens import CONCEPTS as FAKE_CONCEPTS
from _fake_lens import XSS, XSS_CLASS, FakeLens
from semlens_widgets.report import render_report, write_report

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
QUOTED = 'a & b "quoted"'
CONCEPTS = FAKE_CONCEPTS + [QUOTED]  # QUOTED labels no component: it shows in the gaps
AUDIT = {"valid": ["star", "circle"], "spurious": ["watermark", XSS], "target": 4}


def _lens(**kw) -> FakeLens:
    """The fake with five classes (class 4 is named XSS_CLASS: the audited class)."""
    return FakeLens(n_classes=5, **kw)


def _full_report(tmp_path, **kw):
    lens = _lens()
    args = dict(queries=["star", XSS], audit=AUDIT, concepts=CONCEPTS, k=5, progress=False)
    args.update(kw)
    path = write_report(lens, tmp_path / "report.html", **args)
    return lens, path, path.read_text(encoding="utf-8")


def _body(page: str) -> str:
    """The part of the page written by report.py (after bokeh's inline JS), data URIs cut."""
    body = page[page.rfind("<header>") :]
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "DATA", body)


def _docs_json(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', page, re.S)
    assert m, "bokeh document JSON not found"
    return json.loads(html.unescape(m.group(1)))


# ---------------------------------------------------------------------------- structure


def test_report_has_every_section_and_plot(tmp_path):
    lens, path, page = _full_report(tmp_path)
    assert path == tmp_path / "report.html"
    body = _body(page)
    for sid in ("map", "search", "audit", "measures"):
        assert f'<section id="{sid}">' in body
    for name in ("semlens_map", "semlens_audit", "semlens_measures"):
        assert f'data-plot="{name}"' in body
    # the three plots are bokeh roots of one embedded document
    doc = next(iter(_docs_json(page).values()))
    root_names = {r["attributes"].get("name") for r in doc["roots"]}
    assert root_names == {"semlens_map", "semlens_audit", "semlens_measures"}
    # every number comes from the lens
    for method in ("map", "search", "crops", "audit", "label", "measures", "measures_summary", "images"):
        assert lens.count(method) > 0, method
    assert lens.count("search") == 2 and lens.count("measures_summary") == 1


def test_search_results_are_ranked_with_thumbnails(tmp_path):
    _, _, page = _full_report(tmp_path)
    body = _body(page)
    queries = re.findall(r'<div class="query">(.*?)</table></div>', body, re.S)
    assert len(queries) == 2
    for q in queries:
        ranks = [int(r) for r in re.findall(r'<td class="num">(\d+)</td>', q)]
        assert ranks == [1, 2, 3, 4, 5]
        scores = [float(s) for s in re.findall(r'<span class="num">(-?[0-9.]+)</span>', q)]
        assert scores == sorted(scores, reverse=True) and len(scores) == 5
        assert q.count('<img class="thumbs" src="DATA"') == 5


def test_thumbnails_are_real_pngs(tmp_path):
    from PIL import Image
    import base64
    import io

    _, _, page = _full_report(tmp_path, n_thumbs=4, thumb_px=20)
    uris = re.findall(r'<img class="thumbs" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert uris
    img = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert img.format == "PNG" and img.size == (4 * 20 + 3 * 2, 20)
    assert len(set(img.convert("RGB").getdata())) > 1  # not a blank tile


def test_no_external_resources(tmp_path):
    _, _, page = _full_report(tmp_path)
    # BokehJS is inline: no <script src> / <link href> at all, no CDN
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert not re.search(r"<link[^>]*\shref=", page)
    assert "cdn.bokeh.org" not in page
    assert "Bokeh" in page and len(page) > 500_000  # the library itself is in the file
    body = _body(page)
    assert not re.search(r'src="(?!DATA)', body.split("<script")[0])


def test_optional_sections_are_left_out(tmp_path):
    lens = _lens()
    page = render_report(lens, progress=False)
    body = _body(page)
    assert '<section id="map">' in body and '<section id="measures">' in body
    assert '<section id="search">' not in body and '<section id="audit">' not in body
    assert lens.count("audit") == 0 and lens.count("search") == 0


def test_audit_section_shows_summary_and_spurious_samples(tmp_path):
    lens, _, page = _full_report(tmp_path)
    body = _body(page)
    audit = body[body.index('<section id="audit">') : body.index('<section id="measures">')]
    assert "Per-category summary" in audit
    for col in ("category", "n_components", "relevance", "share"):
        assert f"<th>{col}</th>" in audit
    # the most relevant spurious component of the audit comes first, with its samples
    res = lens.audit(AUDIT["valid"], AUDIT["spurious"], "block4", AUDIT["target"])
    spur = res.table[res.table.category.isin(["spurious", "both"])].sort_values("relevance", ascending=False)
    top = int(spur.component.iloc[0])
    first = re.search(r'<div class="spurious"><div><b>block4 #(\d+)</b>', audit)
    assert first and int(first.group(1)) == top
    idx = res.spurious_samples[top].tolist()
    assert f"dataset indices: {', '.join(map(str, idx[:5]))} (+{len(idx) - 5} more)" in audit


def test_audit_can_be_given_precomputed_and_on_another_layer(tmp_path):
    lens = _lens()
    res = lens.audit(valid=["star"], spurious=["watermark"], layer="block3", target=0)
    n_before = lens.count("audit")
    page = render_report(lens, audit=res, layer="block4", progress=False)
    assert lens.count("audit") == n_before  # not recomputed
    assert "Audit of star-class (class 0) in block3" in page


def test_measures_table_per_layer(tmp_path):
    _, _, page = _full_report(tmp_path)
    body = _body(page)
    table = re.search(r'<table class="data measures">(.*?)</table>', body, re.S).group(1)
    for col in ("layer", "components", "mean clarity", "mean polysemanticity", "redundancy"):
        assert f"<th>{col}</th>" in table
    assert "<td>block3</td><td>8</td>" in table and "<td>block4</td><td>12</td>" in table
    assert "<td>0.580</td>" in table and "<td>0.620</td>" in table  # redundancy of the fake: 0.5 + C/100


# ---------------------------------------------------------------------------- escaping


def test_user_strings_are_escaped_everywhere(tmp_path):
    _, _, page = _full_report(tmp_path)
    for raw in (XSS, XSS_CLASS, "<script>alert("):
        assert raw not in page
    body = _body(page)
    esc = html.escape(XSS, quote=True)
    assert f'<q class="query-text">{esc}</q>' in body  # the query
    assert f'<span class="concept">{esc}</span>' in body  # the spurious concept list
    assert html.escape(XSS_CLASS, quote=True) in body  # the class name
    assert html.escape(QUOTED, quote=True) in body
    # in the bokeh data the label is kept as data (bokeh escapes @label in tooltips)
    doc = json.dumps(_docs_json(page))
    assert json.dumps(XSS)[1:-1] in doc
    assert "{safe}" not in doc


def test_title_is_escaped(tmp_path):
    page = render_report(_lens(), title="<b>my</b> report", progress=False)
    assert "<b>my</b>" not in page
    assert "&lt;b&gt;my&lt;/b&gt; report" in page


# ---------------------------------------------------------------------------- errors, atomicity


def test_bad_arguments_name_the_value(tmp_path):
    lens = _lens()
    with pytest.raises(ValueError, match="layer='nope'"):
        render_report(lens, layer="nope", progress=False)
    with pytest.raises(ValueError, match="missing \\['target'\\]"):
        render_report(lens, audit={"valid": ["a"], "spurious": ["b"]}, progress=False)
    with pytest.raises(TypeError, match="audit= must be"):
        render_report(lens, audit=[1, 2], progress=False)
    with pytest.raises(TypeError, match="queries must be text"):
        render_report(lens, queries=[3], progress=False)


def test_write_is_atomic(tmp_path):
    lens = _lens()
    path = write_report(lens, tmp_path / "out" / "r.html", progress=False)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_report(lens, path, queries=[object()], progress=False)
    assert path.read_bytes() == before  # the old report is untouched
    assert sorted(os.listdir(path.parent)) == ["r.html"]  # no temp file left behind

    class Boom(FakeLens):
        def measures(self, layer):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_report(Boom(n_classes=5), path, progress=False)
    assert path.read_bytes() == before and sorted(os.listdir(path.parent)) == ["r.html"]
    with pytest.raises(IsADirectoryError):
        write_report(lens, tmp_path, progress=False)


def test_report_file_is_readable_by_others(tmp_path):
    path = write_report(_lens(), tmp_path / "r.html", progress=False)
    assert path.stat().st_mode & 0o777 == 0o644


def test_large_layer_limits_hover_thumbnails(tmp_path):
    lens = FakeLens({"big": 300})
    render_report(lens, map_thumbs=20, progress=False)
    assert lens.count("crops") == 20


def test_lens_report_delegates_here(tmp_path, monkeypatch):
    import semlens_widgets.lens as lens_mod
    import semlens_widgets.report as report_mod

    seen = {}

    def fake_write(lens, path, **kw):
        seen.update(lens=lens, path=path, kw=kw)
        return path

    monkeypatch.setattr(report_mod, "write_report", fake_write)
    sentinel = object()
    lens_mod.Lens.report(sentinel, tmp_path / "r.html", queries=["x"])
    assert seen["lens"] is sentinel and seen["kw"] == {"queries": ["x"]}


# ---------------------------------------------------------------------------- demo world


@pytest.mark.slow
def test_report_on_demo_world(tmp_path):
    """The report from a real (small) Lens on the demo world: every section, real crops."""
    import semlens_widgets as slw

    world = slw.demo.load(n_per_class=8)
    lens = slw.Lens(world.model, world.dataset, world.fm, layers=["block3"], m=5,
                    class_names=world.class_names, store=None, progress=False)
    lens.run()
    page = render_report(
        lens, queries=["watermark", XSS], concepts=world.concepts(), k=4, progress=False,
        audit={"valid": ["star"], "spurious": ["watermark", XSS], "target": "star"},
    )
    body = _body(page)
    for sid in ("map", "search", "audit", "measures"):
        assert f'<section id="{sid}">' in body
    assert XSS not in page and html.escape(XSS) in body
    assert "Audit of star (class 3) in block3" in page
    assert body.count('<img class="thumbs" src="DATA"') >= 8


# ---------------------------------------------------------------------------- browser


def _pixels(png: bytes) -> tuple[int, float]:
    """(number of distinct colours, share of non-white pixels) of a screenshot."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    px = list(img.getdata())
    nonwhite = sum(1 for p in px if min(p) < 240)
    return len(set(px)), nonwhite / max(1, len(px))


_CANVAS_INK = """
(els) => els.map((c) => {
  const ctx = c.getContext('2d');
  if (!ctx || !c.width || !c.height) return 0;
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) ink++;
  }
  return ink;
})
"""


# screen position of the first point of a bokeh plot whose label is `label`
_POINT_ON_SCREEN = """
([name, label]) => {
  const plot = Bokeh.documents[0].get_model_by_name(name);
  const view = Bokeh.index.get_by_id(plot.id);
  const r = plot.renderers.find((r) => r.data_source && r.data_source.data.label);
  const d = r.data_source.data;
  const i = Array.from(d.label).indexOf(label);
  const rect = view.el.getBoundingClientRect();
  return [rect.left + view.frame.x_scale.compute(d.x[i]),
          rect.top + view.frame.y_scale.compute(d.y[i]), d.label[i]];
}
"""


@pytest.mark.browser
def test_report_renders_offline_in_chromium(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium")
    from playwright import sync_api  # a dev dependency: missing, the test fails
    _, path, _ = _full_report(tmp_path)

    requests, blocked, dialogs, errors = [], [], [], []

    def route(r):
        url = r.request.url
        if url.startswith(("file:", "data:", "blob:")):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync",
                "--proxy-server=127.0.0.1:9",  # any request that escapes the route goes nowhere
            ],
        )
        try:
            ctx = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            ctx.route("**/*", route)
            page = ctx.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            for name in ("semlens_map", "semlens_audit", "semlens_measures"):
                page.locator(f'div.plot[data-plot="{name}"] canvas').first.wait_for(
                    state="attached", timeout=20_000
                )
            # bokeh draws asynchronously: wait until every plot has ink on its canvases
            ink = {}
            for name in ("semlens_map", "semlens_audit", "semlens_measures"):
                loc = page.locator(f'div.plot[data-plot="{name}"] canvas')
                for _ in range(100):
                    ink[name] = max(loc.evaluate_all(_CANVAS_INK) or [0])
                    if ink[name] > 500:
                        break
                    page.wait_for_timeout(100)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)
            shots = {
                name: page.locator(f'div.plot[data-plot="{name}"]').screenshot()
                for name in ("semlens_map", "semlens_audit", "semlens_measures")
            }
            (SCREENSHOTS / "report-map.png").write_bytes(shots["semlens_map"])
            (SCREENSHOTS / "report-audit.png").write_bytes(shots["semlens_audit"])
            # hover the audit point whose label is the XSS concept: the tooltip shows it as text
            page.locator('div.plot[data-plot="semlens_audit"]').scroll_into_view_if_needed()
            x, y, label = page.evaluate(_POINT_ON_SCREEN, ["semlens_audit", XSS])
            page.mouse.move(x, y)
            tip = page.locator(".bk-tooltip-content").first
            tip.wait_for(state="visible", timeout=5_000)
            tip_text = tip.inner_text()
            tip_img_ok = tip.locator("img").first.evaluate(
                "(i) => i.complete && i.naturalWidth > 0 && i.src.startsWith('data:image/png')"
            )
            page.screenshot(path=str(SCREENSHOTS / "report-hover.png"))
            # the XSS concept / query show as text and create no element
            xss_text = page.get_by_text(XSS, exact=True).count()
            injected = page.locator('img[src="x"]').count()
            thumbs_ok = page.evaluate(
                "() => [...document.querySelectorAll('img.thumbs')].every(i => i.complete && i.naturalWidth > 0)"
            )
        finally:
            browser.close()

    assert not errors, errors
    assert not dialogs, f"a script ran: {dialogs}"
    assert not blocked, f"the report tried to load {blocked}"
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    for name, n in ink.items():
        assert n > 500, f"{name}: canvas is blank ({n} inked pixels)"
    for name, png in shots.items():
        colours, share = _pixels(png)
        assert colours > 20 and share > 0.02, (name, colours, share)
    assert xss_text >= 2 and injected == 0
    assert thumbs_ok
    assert label == XSS and XSS in tip_text and "component: block4 #" in tip_text
    assert tip_img_ok


def test_uses_the_lens_summary_and_vocabulary():
    lens = _lens()
    lens.set_vocabulary(["star", "grass"])
    page = render_report(lens, progress=False)
    assert lens.count("measures_summary") == 1 and lens.count("redundancy") == 0
    assert [c for c in lens.calls if c[0] == "label"] == [("label", ("star", "grass"), "block4")]
    table = re.search(r'<table class="data measures">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    summary = lens.measures_summary()
    for row, (_, s) in zip(rows[1:], summary.iterrows()):
        assert row == (f"<td>{s.layer}</td><td>{s.n_components}</td><td>{s.clarity:.3f}</td>"
                       f"<td>{s.polysemanticity:.3f}</td><td>{s.redundancy:.3f}</td>")
