"""The standalone HTML report (the package semlens_widgets/report/).

Structure, content and escaping run against the test double of the LensLike protocol
(tests/_fake_lens.py) so they do not depend on a model; the browser test opens the file in
Debian's Chromium from a file:// URL with the network off at a laptop's 1366x768, checks that the
plots draw and that hovering a point shows its crops, and screenshots every section.
``test_report_on_demo_world`` runs the real Lens on the demo world.
"""
from __future__ import annotations

import base64
import html
import io
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
URI = r"data:image/webp;base64,[A-Za-z0-9+/=]+"


def _lens(**kw) -> FakeLens:
    """The fake with five classes (class 4 is named XSS_CLASS: the audited class)."""
    return FakeLens(n_classes=5, **kw)


def _full_report(tmp_path, **kw):
    lens = _lens()
    args = dict(audit=AUDIT, concepts=CONCEPTS, progress=False)
    args.update(kw)
    path = write_report(lens, tmp_path / "report.html", **args)
    return lens, path, path.read_text(encoding="utf-8")


def _body(page: str) -> str:
    """The part of the page written by the report (after bokeh's inline JS), data URIs cut."""
    body = page[page.rfind('<main class="report">'):]
    return re.sub(URI, "DATA", body)


def _section(body: str, sid: str) -> str:
    start = body.index(f'<section id="{sid}">')
    return body[start: body.index("</section>", start)]


def _docs_json(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', page, re.S)
    assert m, "bokeh document JSON not found"
    return json.loads(html.unescape(m.group(1)))


def _pictures(page: str) -> dict[str, str]:
    """CSS class -> data URI of every picture of the page."""
    return dict(re.findall(r"\.(t\d+)\{background-image:url\((" + URI + r")\)\}", page))


def _classes_used(fragment: str) -> list[str]:
    return re.findall(r'class="th (t\d+)"', fragment)


# ---------------------------------------------------------------------------- structure


def test_report_without_options_has_labels_search_map_and_measures():
    lens = _lens()
    lens.set_vocabulary(CONCEPTS)
    page = render_report(lens, progress=False)
    body = _body(page)
    for sid in ("labels", "search", "map", "measures"):
        assert f'<section id="{sid}">' in body and f'href="#{sid}"' in body
    # nothing is audited unless asked: no audit, no attribution graph (a CRP pass per class)
    assert '<section id="audit">' not in body and '<section id="attribution">' not in body
    assert lens.count("audit") == 0 and "audit=dict(valid=" in body  # the overview says how
    # the vocabulary labels every layer and is searched concept by concept
    assert sorted(c[2] for c in lens.calls if c[0] == "label") == ["block3", "block4"]
    assert [c[1] for c in lens.calls if c[0] == "search"] == CONCEPTS
    doc = next(iter(_docs_json(page).values()))
    assert {r["attributes"].get("name") for r in doc["roots"]} == {"semlens_map_block4", "semlens_measures"}


def test_every_section_with_an_audit(tmp_path):
    lens, path, page = _full_report(tmp_path)
    assert path == tmp_path / "report.html"
    body = _body(page)
    ids = re.findall(r'<section id="([a-z]+)">', body)
    assert ids == ["labels", "search", "map", "audit", "attribution", "faithfulness", "measures"]
    for sid in ids:
        assert f'<a href="#{sid}">' in body
    doc = next(iter(_docs_json(page).values()))
    names = {r["attributes"].get("name") for r in doc["roots"]}
    assert names == {"semlens_map_block4", "semlens_audit_0", "semlens_measures"}
    for name in names:
        assert f'data-plot="{name}"' in body
    for method in ("map", "search", "examples", "images", "audit", "label", "measures", "measures_summary"):
        assert lens.count(method) > 0 or method == "examples", method
    assert lens.count("measures_summary") == 1


def test_label_groups_with_galleries_and_gaps():
    lens = _lens()
    page = render_report(lens, concepts=CONCEPTS, per_group=2, progress=False)
    sec = _section(_body(page), "labels")
    for layer in ("block4", "block3"):
        res = lens.label(CONCEPTS, layer)
        part = sec[sec.index(f'<h3 id="labels-{layer}">'):]
        part = part[: part.index("<h3", 5)] if "<h3" in part[5:] else part
        rows = re.findall(r'<tr data-testid="label-group"><td class="label">(.*?)</td>(.*?)</tr>', part, re.S)
        # one row per label group, largest first, with its size
        assert [html.unescape(r[0]) for r in rows] == list(res.counts.index)
        for (name, rest), (concept, size) in zip(rows, res.counts.items()):
            assert f'<span class="num">{int(size)}</span>' in rest
            # the best components of the group by score, at most per_group, each with its crops
            score = dict(zip(res.table.component, res.table.score))
            best = sorted(res.groups[concept], key=lambda c: -score[c])[:2]
            shown = [int(c) for c in re.findall(r'data-component="(\d+)"', rest)]
            assert shown == best
            assert len(_classes_used(rest)) == len(best)
        for gap in res.gaps:
            assert f'<span class="concept">{html.escape(gap, quote=True)}</span>' in part
    # the main layer (the last) comes first
    assert sec.index('id="labels-block4"') < sec.index('id="labels-block3"')


def test_search_strips_show_positive_hits_ranked():
    lens = _lens()
    page = render_report(lens, concepts=CONCEPTS, k=3, progress=False)
    sec = _section(_body(page), "search")
    rows = re.findall(r'<div class="qrow" data-testid="search-row"><div class="qname"><q class="query-text">(.*?)</q>(.*?)</div></div>',
                      sec, re.S)
    empty = re.search(r'data-testid="search-empty">(.*?)</p>', sec, re.S)
    empty_q = [html.unescape(q) for q in re.findall(r'<q class="query-text">(.*?)</q>', empty.group(1))] if empty else []
    assert sorted([html.unescape(r[0]) for r in rows] + empty_q) == sorted(CONCEPTS)
    for q, rest in rows:
        hits = lens.search(html.unescape(q), k=3)
        good = hits[hits.score > 0]
        cards = re.findall(r'<figure class="card" data-layer="([^"]+)" data-component="(\d+)">', rest)
        assert cards == [(l, str(c)) for l, c in zip(good.layer, good.component)]
        scores = [float(s) for s in re.findall(r'<span class="num">(-?[0-9.]+)</span>', rest)]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    for q in empty_q:
        assert (lens.search(q, k=3).score <= 0).all()


def test_given_queries_replace_the_vocabulary(tmp_path):
    lens = _lens()
    page = render_report(lens, concepts=CONCEPTS, queries=["star", XSS], progress=False)
    assert [c[1] for c in lens.calls if c[0] == "search"] == ["star", XSS]
    assert "the given queries" in _section(_body(page), "search")


def test_pictures_are_webp_strips_encoded_once(tmp_path):
    from PIL import Image

    lens, _, page = _full_report(tmp_path, n_thumbs=4, thumb_px=20)
    pics = _pictures(page)
    assert pics and len(set(pics.values())) == len(pics)  # no picture twice
    assert len(re.findall(URI, page)) == len(pics)  # and nowhere else
    body = _body(page)
    used = set(_classes_used(body))
    assert used <= set(pics)  # every shown strip has its picture
    # a component shown in several sections uses one class
    cards = re.findall(r'data-layer="([^"]+)" data-component="(\d+)">(<span class="th (t\d+)")', body)
    by_comp: dict = {}
    for layer, k, _, cls in cards:
        by_comp.setdefault((layer, k), set()).add(cls)
    assert all(len(v) == 1 for v in by_comp.values()) and any(
        sum(1 for c in cards if (c[0], c[1]) == key) > 1 for key in by_comp)
    img = Image.open(io.BytesIO(base64.b64decode(pics["t0"].split(",", 1)[1])))
    assert img.format == "WEBP" and img.size[1] == 20 and (img.size[0] + 2) % 22 == 0
    assert len(set(img.convert("RGB").getdata())) > 1  # not a blank tile
    # the strips are cut from the dataset images in batches, not one lens.crops call per component
    assert lens.count("crops") == 0 and lens.count("images") == 3  # one per layer, one for the samples


def test_the_strip_shows_as_many_crops_as_asked():
    lens = _lens()
    page = render_report(lens, concepts=CONCEPTS, n_thumbs=3, thumb_px=20, progress=False)
    spans = re.findall(r'<figure class="card"[^>]*><span class="th t\d+" [^>]*style="width:([0-9.]+)px;height:(\d+)px"',
                       _body(page))
    assert spans
    for w, h in spans:
        n = (float(w) + 2 * int(h) / 20) / (int(h) * (1 + 2 / 20))  # tiles of h px and gaps of 2/20 h
        assert n == pytest.approx(3, abs=0.01) or n == pytest.approx(4, abs=0.01)  # 4: graph examples


def test_no_external_resources(tmp_path):
    _, _, page = _full_report(tmp_path)
    # BokehJS is inline: no <script src> / <link href> at all, no CDN
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert not re.search(r"<link[^>]*\shref=", page)
    assert "cdn.bokeh.org" not in page
    assert "Bokeh" in page and len(page) > 500_000  # the library itself is in the file
    assert not re.search(r'url\((?!data:)', page.split("<script")[0])
    assert not re.search(r'src="(?!data:)', _body(page).split("<script")[0])


def test_optional_sections_are_left_out():
    lens = _lens()  # no vocabulary, no audit
    body = _body(render_report(lens, progress=False))
    assert '<section id="map">' in body and '<section id="measures">' in body
    for sid in ("labels", "search", "audit", "attribution"):
        assert f'<section id="{sid}">' not in body
    assert lens.count("audit") == 0 and lens.count("search") == 0 and lens.count("label") == 0
    assert "lens.set_vocabulary" in body  # the overview says how to get labels


def test_audit_section_shows_verdict_summary_and_spurious_samples(tmp_path):
    lens, _, page = _full_report(tmp_path)
    audit = _section(_body(page), "audit")
    res = lens.audit(AUDIT["valid"], AUDIT["spurious"], "block4", AUDIT["target"])
    share = res.summary.set_index("category").share
    verdict = re.search(r'data-testid="audit-verdict">(.*?)</p>', audit).group(1)
    assert f"<b>{100 * (share.spurious + share.both):.0f}%</b>" in verdict
    for cat in ("valid", "spurious", "both", "unexpected"):
        assert f"{100 * share[cat]:.1f}%" in audit
    # the most relevant spurious component comes first, with its crops and dataset samples
    spur = res.table[res.table.category.isin(["spurious", "both"])].sort_values("relevance", ascending=False)
    top = int(spur.component.iloc[0])
    first = re.search(r'<div class="spurious" data-component="(\d+)">', audit)
    assert first and int(first.group(1)) == top
    idx = res.spurious_samples[top].tolist()
    assert f"dataset indices: {', '.join(map(str, idx[:5]))} (+{len(idx) - 5} more)" in audit
    block = audit[first.start():]
    assert len(_classes_used(block.split('<div class="spurious"', 2)[1])) == 2  # crops and samples


def test_audit_can_be_given_precomputed_several_and_on_another_layer():
    lens = _lens()
    res = lens.audit(valid=["star"], spurious=["watermark"], layer="block3", target=0)
    n_before = lens.count("audit")
    page = render_report(lens, audit=[res, dict(AUDIT)], layer="block4", progress=False)
    assert lens.count("audit") == n_before + 1  # the result is not recomputed, the dict is
    assert "Audit of star-class (class 0) in block3" in page
    body = _body(page)
    assert f'<h3 id="audit-1">{html.escape(XSS_CLASS, quote=True)} (class 4) in block4</h3>' in body
    assert 'id="audit-0"' in body
    # the attribution section explains both audited classes
    att = _section(body, "attribution")
    assert att.count("<h3>") == 2


def test_attribution_section_summarises_the_graph():
    lens = _lens()
    page = render_report(lens, concepts=CONCEPTS, graph=[1], progress=False)
    att = _section(_body(page), "attribution")
    g = lens.attribution_graph(1, concepts=CONCEPTS)
    for layer in g.layers:
        nd = g.nodes[g.nodes.layer == layer].sort_values("relevance", ascending=False)
        total = nd.relevance.abs().sum()
        col = att[att.index(f"<h4>{layer}</h4>"):]
        first = nd.iloc[0]
        assert f"{html.escape(first.label, quote=True)} ({len(first.components)})" in col
        assert f"{100 * first.relevance / total:.0f}%" in col
    assert "Strongest flows" in att
    body = _body(render_report(lens, audit=AUDIT, graph=False, progress=False))
    assert '<section id="attribution">' not in body


def test_measures_table_per_layer(tmp_path):
    _, _, page = _full_report(tmp_path)
    sec = _section(_body(page), "measures")
    table = re.search(r'<table class="data measures">(.*?)</table>', sec, re.S).group(1)
    for col in ("layer", "components", "mean clarity", "mean polysemanticity", "redundancy"):
        assert f"<th>{col}</th>" in table
    assert "<td>block3</td><td>8</td>" in table and "<td>block4</td><td>12</td>" in table
    assert "<td>0.580</td>" in table and "<td>0.620</td>" in table  # redundancy of the fake: 0.5 + C/100
    assert "The clearest components of block4" in sec and "most polysemantic" in sec


def test_map_side_panel_and_picture_limit():
    lens = FakeLens({"big": 300})
    page = render_report(lens, map_thumbs=20, progress=False)
    body = _body(page)
    assert 'class="peek" id="peek-map-big"' in body
    doc = json.dumps(_docs_json(page))
    assert "peek_text" in doc and "cb_data.index.indices" in doc
    assert len(_pictures(page)) == 20 + 4 + 4  # map panel pictures + the clearest / most polysemantic


# ---------------------------------------------------------------------------- escaping


def test_user_strings_are_escaped_everywhere(tmp_path):
    _, _, page = _full_report(tmp_path, queries=["star", XSS])
    for raw in (XSS, XSS_CLASS, "<script>alert("):
        assert raw not in page
    body = _body(page)
    esc = html.escape(XSS, quote=True)
    assert f'<q class="query-text">{esc}</q>' in body  # the query
    assert f'<span class="concept">{esc}</span>' in body  # the spurious concept list
    assert html.escape(XSS_CLASS, quote=True) in body  # the class name
    assert html.escape(QUOTED, quote=True) in body
    # in the bokeh data the label is kept as data (tooltips escape it, the panel sets textContent)
    doc = json.dumps(_docs_json(page))
    assert json.dumps(XSS)[1:-1] in doc
    assert "{safe}" not in doc and "innerHTML" not in doc


def test_title_is_escaped():
    page = render_report(_lens(), title="<b>my</b> report", progress=False)
    assert "<b>my</b>" not in page
    assert "&lt;b&gt;my&lt;/b&gt; report" in page


# ---------------------------------------------------------------------------- errors, atomicity


def test_bad_arguments_name_the_value():
    lens = _lens()
    with pytest.raises(ValueError, match="layer='nope'"):
        render_report(lens, layer="nope", progress=False)
    with pytest.raises(ValueError, match="missing \\['target'\\]"):
        render_report(lens, audit={"valid": ["a"], "spurious": ["b"]}, progress=False)
    with pytest.raises(ValueError, match="unknown keys \\['tagret'\\]"):
        render_report(lens, audit={"valid": ["a"], "spurious": ["b"], "target": 1, "tagret": 2}, progress=False)
    with pytest.raises(TypeError, match="audit= must be"):
        render_report(lens, audit=[1, 2], progress=False)
    with pytest.raises(TypeError, match="queries must be text"):
        render_report(lens, queries=[3], progress=False)
    with pytest.raises(ValueError, match="n_thumbs=0"):
        render_report(lens, n_thumbs=0, progress=False)
    with pytest.raises(ValueError, match="k=2.5"):
        render_report(lens, k=2.5, progress=False)
    with pytest.raises(TypeError, match="concepts='star'"):
        render_report(lens, concepts="star", progress=False)
    with pytest.raises(TypeError, match="graph="):
        render_report(lens, graph=[1.5], progress=False)
    assert lens.count("audit") == 0  # refused before any work


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


def test_uses_the_lens_summary_and_vocabulary():
    lens = _lens()
    lens.set_vocabulary(["star", "grass"])
    page = render_report(lens, progress=False)
    assert lens.count("measures_summary") == 1 and lens.count("redundancy") == 0
    assert sorted(c for c in lens.calls if c[0] == "label") == [("label", ("star", "grass"), "block3"),
                                                                  ("label", ("star", "grass"), "block4")]
    table = re.search(r'<table class="data measures">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    summary = lens.measures_summary()
    for row, (_, s) in zip(rows[1:], summary.iterrows()):
        assert row == (f"<td>{s.layer}</td><td>{s.n_components}</td><td>{s.clarity:.3f}</td>"
                       f"<td>{s.polysemanticity:.3f}</td><td>{s.redundancy:.3f}</td>")


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
    for sid in ("labels", "search", "map", "audit", "attribution", "measures"):
        assert f'<section id="{sid}">' in body
    assert XSS not in page and html.escape(XSS) in body
    assert "Audit of star (class 3) in block3" in page
    pics = _pictures(page)
    assert len(pics) >= 8 and set(_classes_used(body)) <= set(pics)


# ---------------------------------------------------------------------------- browser


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

# screen position of the point of a bokeh plot whose label is `label`
_POINT_ON_SCREEN = """
([name, label]) => {
  const plot = Bokeh.documents[0].get_model_by_name(name);
  const view = Bokeh.index.get_by_id(plot.id);
  const r = plot.renderers.find((r) => r.data_source && r.data_source.data.label);
  const d = r.data_source.data;
  const i = Array.from(d.label).indexOf(label);
  const rect = view.el.getBoundingClientRect();
  return [rect.left + view.frame.x_scale.compute(d.x[i]),
          rect.top + view.frame.y_scale.compute(d.y[i]), d.label[i], d.peek_title[i]];
}
"""

# every picture element (.th) of the page whose background image decoded: width > 0
_PICTURES_DECODED = """
async () => {
  const urls = new Set();
  for (const sheet of document.styleSheets) for (const r of sheet.cssRules || [])
    if (r.style && r.style.backgroundImage && r.style.backgroundImage.startsWith('url("data:')) urls.add(r.style.backgroundImage.slice(5, -2));
  let ok = 0;
  for (const u of urls) { const i = new Image(); i.src = u; try { await i.decode(); if (i.naturalWidth > 0) ok++; } catch (e) {} }
  return [ok, urls.size];
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

    plots = ("semlens_map_block4", "semlens_audit_0", "semlens_measures")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync",
                  "--proxy-server=127.0.0.1:9"],  # any request that escapes the route goes nowhere
        )
        try:
            ctx = browser.new_context(offline=True, viewport={"width": 1366, "height": 768})  # a laptop screen
            ctx.route("**/*", route)
            page = ctx.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            ink = {}
            for name in plots:  # bokeh draws asynchronously: wait until every plot has ink
                loc = page.locator(f'div.plot[data-plot="{name}"] canvas')
                loc.first.wait_for(state="attached", timeout=20_000)
                for _ in range(100):
                    ink[name] = max(loc.evaluate_all(_CANVAS_INK) or [0])
                    if ink[name] > 500:
                        break
                    page.wait_for_timeout(100)
            decoded, n_pics = page.evaluate(_PICTURES_DECODED)
            # the plots use the page's width (beside their side panel)
            widths = {n: page.locator(f'div.plot[data-plot="{n}"]').bounding_box()["width"] for n in plots}
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.add_style_tag(content="nav.top { position: static; }")  # no sticky bar over the section shots
            for sid in page.evaluate("() => [...document.querySelectorAll('section')].map(s => s.id)"):
                page.locator(f"section#{sid}").screenshot(path=str(SCREENSHOTS / f"report-{sid}.png"))
            # hover the audit point whose label is the XSS concept: the panel shows it as text, with crops
            page.locator('div.plot[data-plot="semlens_audit_0"]').scroll_into_view_if_needed()
            x, y, label, title = page.evaluate(_POINT_ON_SCREEN, ["semlens_audit_0", XSS])
            page.mouse.move(x, y)
            peek = page.locator("#peek-audit-0")
            page.wait_for_function("() => document.querySelector('#peek-audit-0').classList.contains('on')", timeout=5_000)
            peek_text = peek.inner_text()
            peek_pic = peek.locator(".peek-thumbs").evaluate("e => [e.className, getComputedStyle(e).backgroundImage.slice(0, 30), e.getBoundingClientRect().width]")
            page.locator('div.plotrow:has([data-plot="semlens_audit_0"])').screenshot(path=str(SCREENSHOTS / "report-hover.png"))
            xss_text = page.get_by_text(XSS, exact=True).count()
            injected = page.locator('img[src="x"]').count()
        finally:
            browser.close()

    assert not errors, errors
    assert not dialogs, f"a script ran: {dialogs}"
    assert not blocked, f"the report tried to load {blocked}"
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    for name, n in ink.items():
        assert n > 500, f"{name}: canvas is blank ({n} inked pixels)"
    assert n_pics > 10 and decoded == n_pics
    assert all(w > 800 for w in widths.values()), widths
    assert label == XSS and title in peek_text and XSS in peek_text
    assert peek_pic[0].startswith("peek-thumbs th t") and peek_pic[1].startswith('url("data:image/webp') and peek_pic[2] > 100
    assert xss_text >= 2 and injected == 0
