"""Python side of the widgets: traits, message handlers, malformed messages, linked selection,
binary buffers. Runs against the small stand-in lens in _fake_lens.py (milliseconds)."""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess

import numpy as np
import torch
import pytest
import traitlets as t
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image

import semlens_widgets as slw
from semlens_widgets import widgets as W
from _fake_lens import CONCEPTS, XSS, FakeLens, fake_compare


@pytest.fixture
def lens():
    return FakeLens()


class Sent:
    """Record what a widget sends to the front end (custom messages + buffers)."""

    def __init__(self, widget):
        self.msgs: list[tuple[dict, list]] = []
        widget.send = lambda content, buffers=None: self.msgs.append((content, list(buffers or [])))

    @property
    def last(self):
        return self.msgs[-1]


def msg(widget, content, buffers=()):
    """Deliver a message the way the comm does (method "custom")."""
    widget._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)})


def reply(widget, content, buffers=()):
    sent = Sent(widget)
    msg(widget, {**content, "req": "r1"}, buffers)
    assert sent.msgs, "no reply"
    out, bufs = sent.last
    assert out["req"] == "r1"
    return out, bufs


# --------------------------------------------------------------------------- public names
def test_public_names_resolve_lazily():
    for name in ("SearchBox", "ConceptGallery", "SemanticMap", "AttributionSankey", "AuditView",
                 "CompareView", "Explorer"):
        assert getattr(slw, name) is getattr(W, name)


def test_esm_and_css_are_built_files():
    for cls in (W.SearchBox, W.ConceptGallery, W.SemanticMap, W.AttributionSankey, W.AuditView,
                W.CompareView, W.ExplorerHeader):
        assert "export" in str(cls._esm) or cls._esm.path.exists()


# --------------------------------------------------------------------------- search
def test_search_message_fills_results(lens):
    sb = W.SearchBox(lens, k=5)
    assert sb.layers == ["block3", "block4"] and sb.results == []
    out, _ = reply(sb, {"type": "search", "query": "star"})
    assert out["type"] == "search" and out["n"] == 5
    assert len(sb.results) == 5 and sb.query == "star" and sb.error == ""
    r = sb.results[0]
    assert set(r) == {"rank", "layer", "component", "score", "label"}
    assert isinstance(r["component"], int) and isinstance(r["score"], float)
    scores = [r["score"] for r in sb.results]
    assert scores == sorted(scores, reverse=True)
    # one search per message, with the layer filter
    lens.calls.clear()
    msg(sb, {"type": "search", "query": "grass", "layer": "block4", "k": 3})
    assert [c for c in lens.calls if c[0] == "search"] == [("search", "grass", "block4", 3)]
    assert {r["layer"] for r in sb.results} == {"block4"} and len(sb.results) == 3


def test_search_from_python_and_empty_query(lens):
    sb = W.SearchBox(lens, query="watermark")
    assert len(sb.results) == 10 and sb.query == "watermark"
    sb.query = "   "
    assert sb.results == []


def test_search_suggests_the_largest_label_groups_and_the_gaps(lens):
    sb = W.SearchBox(lens, concepts=CONCEPTS + ["zebra"])
    groups = {}
    for layer in lens.layers:
        for c, comps in lens.label(CONCEPTS + ["zebra"], layer).groups.items():
            groups[c] = groups.get(c, 0) + len(comps)
    want = sorted(((c, n) for c, n in groups.items() if n), key=lambda kv: (-kv[1], kv[0]))
    assert [(s["concept"], s["components"]) for s in sb.suggestions] == want[:12]
    assert "zebra" in sb.gaps and not set(sb.gaps) & {c for c, n in want}
    sb.layer = "block3"  # the suggestions follow the searched layer
    assert sum(s["components"] for s in sb.suggestions) <= lens.num_components("block3")
    assert W.SearchBox(lens).suggestions == []  # no vocabulary: nothing to suggest


def test_search_image_probe(lens):
    sb = W.SearchBox(lens)
    assert sb.num_samples == lens.n_samples
    msg(sb, {"type": "search_image", "index": 3})
    assert sb.probe_index == 3 and len(sb.results) == 10 and sb.error == ""
    out, _ = reply(sb, {"type": "search_image", "index": 10_000})
    assert out["type"] == "error" and "out of range" in out["message"]


@pytest.mark.parametrize("bad, words", [
    ("not a dict", "expected a JSON object"),
    ({"type": "nope"}, "unknown message type"),
    ({"query": "x"}, "unknown message type"),
    ({"type": "search"}, "missing field 'query'"),
    ({"type": "search", "query": 5}, "must be a string"),
    ({"type": "search", "query": "x" * 10_000}, "longer than"),
    ({"type": "search", "query": "x", "layer": "nope"}, "unknown layer"),
    ({"type": "search", "query": "x", "k": 0}, "out of range"),
    ({"type": "search", "query": "x", "k": "ten"}, "must be an integer"),
    ({"type": "search", "query": "x", "k": True}, "must be an integer"),
    ({"type": "select", "layer": "block3", "component": 99}, "out of range"),
    ({"type": "select", "layer": "block3", "component": 1.5}, "must be an integer"),
    ({"type": "thumbs", "layer": "block3", "component": 0, "count": 10_000}, "out of range"),
    ({"type": "thumbs", "layer": "block3", "component": 0, "format": "gif"}, "not one of"),
    ({"type": "thumbs", "layer": "block3", "component": 0, "kind": "../etc"}, "not one of"),
])
def test_malformed_messages_set_error_and_never_raise(lens, bad, words):
    sb = W.SearchBox(lens)
    sent = Sent(sb)
    msg(sb, bad)  # no exception escapes
    assert words in sb.error
    if isinstance(bad, dict):
        msg(sb, {**bad, "req": 7})
        out, _ = sent.last
        assert out == {"type": "error", "req": 7, "message": sb.error}


def test_lens_failure_is_shown_not_raised(lens):
    sb = W.SearchBox(lens)

    def boom(*a, **k):
        raise RuntimeError("store is gone")

    lens.search = boom
    out, _ = reply(sb, {"type": "search", "query": "x"})
    assert out["type"] == "error" and "store is gone" in out["message"]
    assert "store is gone" in sb.error
    sb.query = "y"  # a trait change from Python: also caught
    assert "store is gone" in sb.error


def test_bad_state_update_from_front_end_sets_error(lens):
    sb = W.SearchBox(lens)
    sb.set_state({"k": "many"})
    assert "rejected state update" in sb.error and sb.k == 10


# --------------------------------------------------------------------------- thumbnails
def test_thumbs_png_are_real_images(lens):
    sb = W.SearchBox(lens)
    out, bufs = reply(sb, {"type": "thumbs", "layer": "block4", "component": 2, "count": 4, "size": 64})
    assert out["format"] == "png" and out["count"] == 4 and out["total"] == lens.m and len(bufs) == 4
    img = Image.open(io.BytesIO(bufs[0]))
    assert img.size == (lens.crop_size, lens.crop_size) and img.mode == "RGB"
    assert np.asarray(img).std() > 0


def test_thumbs_raw_downsampled(lens):
    sb = W.SearchBox(lens)
    out, bufs = reply(sb, {"type": "thumbs", "layer": "block3", "component": 1, "start": 2, "count": 3,
                           "size": 16, "format": "raw"})
    assert out["shape"] == [3, 16, 16, 3] and len(bufs) == 1 and len(bufs[0]) == 3 * 16 * 16 * 3
    # past the end: an empty page, not an error
    out, bufs = reply(sb, {"type": "thumbs", "layer": "block3", "component": 1, "start": 100, "count": 3,
                           "format": "raw"})
    assert out["count"] == 0


def test_thumbs_full_images_carry_boxes_and_heatmaps(lens):
    g = W.ConceptGallery(lens, "block4", 1)
    out, bufs = reply(g, {"type": "thumbs", "layer": "block4", "component": 1, "count": 2, "size": 32,
                          "kind": "full", "format": "raw"})
    assert out["shape"] == [2, 32, 32, 3] and len(out["boxes"]) == 2 and len(out["indices"]) == 2
    assert out["heatmap_shape"] == [2, 32, 32] and len(bufs) == 2 and len(bufs[1]) == 2 * 32 * 32
    assert out["indices"] == lens.examples("block4", 1).indices[:2].tolist()


# --------------------------------------------------------------------------- gallery
def test_gallery_info_and_navigation(lens):
    g = W.ConceptGallery(lens, "block4", 3, concepts=CONCEPTS)
    assert g.selection == {"layer": "block4", "component": 3} and g.num_components == 12
    info = g.info
    assert set(info["measures"]) == {"clarity", "polysemanticity", "redundancy"}
    assert len(info["top_classes"]) == 3 and {"class", "name", "relevance"} <= set(info["top_classes"][0])
    assert len(info["indices"]) == lens.m == len(info["activations"])
    msg(g, {"type": "goto", "component": 4})
    assert g.component == 4 and g.info["component"] == 4 and g.selection["component"] == 4
    msg(g, {"type": "goto", "layer": "block3", "component": 7})
    assert (g.layer, g.component, g.num_components) == ("block3", 7, 8)
    msg(g, {"type": "goto", "component": 8})
    assert "out of range" in g.error and g.component == 7
    msg(g, {"type": "mode", "mode": "full"})
    assert g.mode == "full"
    msg(g, {"type": "mode", "mode": "<b>"})
    assert "not one of" in g.error and g.mode == "full"


def test_gallery_top_classes_carry_shares_of_the_class_relevance(lens):
    import torch

    rel = torch.tensor(np.random.default_rng(0).normal(size=(4, 12)), dtype=torch.float32)  # [K, C]
    lens.class_relevance = lambda layer: rel
    g = W.ConceptGallery(lens, "block4", 3)
    tops = g.info["top_classes"]
    assert tops and all(t["share"] is not None for t in tops)
    for t in tops:  # the component's relevance over the class's summed |relevance| in the layer
        assert t["share"] == pytest.approx(t["relevance"] / float(rel[t["class"]].abs().sum()))
    del lens.class_relevance
    g2 = W.ConceptGallery(lens, "block4", 3)  # a lens without class relevance: no share, no made-up number
    assert all(t["share"] is None for t in g2.info["top_classes"])


def test_gallery_follows_selection_and_keeps_xss_label_as_data(lens):
    g = W.ConceptGallery(lens, "block4", 0, concepts=CONCEPTS)
    xss = [c for c in range(12) if lens._label_of("block4", c) == XSS]
    assert xss, "the fake lens has an XSS-labelled component"
    g.selection = {"layer": "block4", "component": xss[0]}
    assert g.component == xss[0] and g.info["label"] == XSS  # plain string; the view sets textContent
    with pytest.raises(W.WidgetValueError, match="unknown layer 'nope'"):
        g.selection = {"layer": "nope", "component": 1}  # refused, and nothing changes
    assert g.component == xss[0] and g.selection == {"layer": "block4", "component": xss[0]}


def test_constructor_errors_name_the_bad_value(lens):
    with pytest.raises(ValueError, match="unknown layer 'x'"):
        W.ConceptGallery(lens, "x", 0)
    with pytest.raises(ValueError, match="out of range"):
        W.ConceptGallery(lens, "block3", 8)
    with pytest.raises(ValueError, match="color_by"):
        W.SemanticMap(lens, color_by="rainbow")
    with pytest.raises(ValueError, match="target=9"):
        W.AttributionSankey(lens, target=9)


# --------------------------------------------------------------------------- argument and trait validation
def test_audit_view_takes_a_single_str_as_one_concept(lens):
    a = W.AuditView(lens, "star", "watermark", "block4", 0)
    assert a.valid == ["star"] and a.spurious == ["watermark"]  # not 's', 't', 'a', 'r'
    assert [c for c in lens.calls if c[0] == "audit"][-1] == ("audit", ("star",), ("watermark",), "block4", 0)
    a.valid = "grass"  # the trait too: one concept
    assert a.valid == ["grass"]
    for bad, words in [(["star", "star"], "twice"), (["  "], "non-empty"), ([3], "3"),
                       ({"star": 1}, "expected a list|not the dict")]:
        with pytest.raises(t.TraitError, match=words):
            a.valid = bad
        with pytest.raises(ValueError, match=words):
            W.AuditView(lens, bad, (), "block4", 0)
    assert a.valid == ["grass"]


def test_gallery_component_must_be_an_int_in_range(lens):
    for k, words in [(2.7, r"k=2.7 is not accepted: expected an int in 0..11"),
                     (True, r"k=True is not accepted"), (12, r"k=12 is out of range: expected an int in 0..11"),
                     (-1, "out of range"), ("2", "not accepted")]:
        with pytest.raises(ValueError, match=words):
            W.ConceptGallery(lens, "block4", k)
    g = W.ConceptGallery(lens, "block4", 2)
    with pytest.raises(t.TraitError, match=r"component=12 is out of range: expected an int in 0..11"):
        g.component = 12
    with pytest.raises(t.TraitError, match="unknown layer 'nope'; accepted: \\['block3', 'block4'\\]"):
        g.layer = "nope"
    g.component = 11
    with pytest.raises(t.TraitError, match="out of range for it \\(0..7\\)"):
        g.layer = "block3"  # component 11 does not exist there: say so, do not clamp
    g.show("block3", 7)
    assert (g.layer, g.component, g.num_components) == ("block3", 7, 8)
    with pytest.raises(ValueError, match="component=8 is out of range"):
        g.show("block3", 8)
    g.set_state({"component": 2.5})  # from the front end: the banner, not an exception
    assert "component" in g.error and g.component == 7


@pytest.mark.parametrize("value, words", [
    ({"layer": "nope", "component": -3}, r"unknown layer 'nope'; accepted: \{\} or \{'layer': one of \['block3', 'block4'\]"),
    ({"layer": "block4", "component": -3}, r"component -3 is not an int in 0..11"),
    ({"layer": "block4", "component": 12}, r"component 12 is not an int in 0..11"),
    ({"layer": "block4", "component": 1.0}, r"component 1.0 is not an int"),
    ({"layer": "block4", "component": True}, r"component True is not an int"),
    ({"layer": "block4"}, "is not accepted; accepted"),
    ({"layer": "block4", "component": 1, "x": 2}, "is not accepted; accepted"),
])
def test_selection_trait_is_validated_in_every_view(lens, value, words):
    views = [W.SearchBox(lens), W.SemanticMap(lens, "block4"), W.ConceptGallery(lens, "block4", 1),
             W.AttributionSankey(lens, 0), W.AuditView(lens, ["star"], [], "block4", 0)]
    views[2].show("block4", 2)  # a value equal to the current one is no change, hence not validated
    for v in views:
        before = dict(v.selection)
        with pytest.raises(t.TraitError, match=words):
            v.selection = value
        assert v.selection == before, type(v).__name__
        v.set_state({"selection": value})  # a hostile front end: refused, shown in the banner
        assert "rejected state update ['selection']" in v.error and v.selection == before
    views[0].selection = {"layer": "block3", "component": 7}
    assert views[0].selection == {"layer": "block3", "component": 7}


def test_map_color_by_and_layers_are_validated(lens):
    with pytest.raises(ValueError, match=r"color_by='x' is not accepted; accepted: \['layer', 'label'"):
        W.SemanticMap(lens, "block4", color_by="x")
    m = W.SemanticMap(lens, "block4", concepts=CONCEPTS)
    with pytest.raises(t.TraitError, match=r"color_by='x' is not accepted; accepted"):
        m.color_by = "x"
    with pytest.raises(t.TraitError, match=r"size_by='big' is not accepted"):
        m.size_by = "big"
    with pytest.raises(t.TraitError, match=r"unknown layer\(s\) \['nope'\]"):
        m.layers = ["nope"]
    with pytest.raises(t.TraitError, match="non-empty list"):
        m.layers = []
    with pytest.raises(t.TraitError, match=r"target=7 is out of range: expected an int in 0..3"):
        m.target = 7
    assert W.SemanticMap(lens, "block4", target="stripe-class").target == 1  # a class name: its index
    assert m.color_by == "label" and m.n == 12 and m.error == ""
    m.set_state({"color_by": "x"})
    assert "color_by='x' is not accepted" in m.error and m.color_by == "label"


def test_search_box_arguments_and_traits_are_validated(lens):
    with pytest.raises(ValueError, match=r"k=-4 is out of range: expected an int in 1..200"):
        W.SearchBox(lens, k=-4)
    with pytest.raises(ValueError, match=r"k=2.5 is not accepted"):
        W.SearchBox(lens, k=2.5)
    with pytest.raises(ValueError, match=r"SearchBox needs a Lens .* got None"):
        W.SearchBox(None)
    with pytest.raises(ValueError, match=r"needs a Lens .* got 'lens'"):
        W.ConceptGallery("lens")
    with pytest.raises(ValueError, match=r"unknown layer 'x'; accepted: \['block3', 'block4'\] or None"):
        W.SearchBox(lens, layer="x")
    sb = W.SearchBox(lens)
    with pytest.raises(t.TraitError, match=r"k=-4 is out of range: expected an int in 1..200"):
        sb.k = -4
    with pytest.raises(t.TraitError, match=r"probe_index=64 is out of range: expected an int in 0..63"):
        sb.probe_index = 64
    with pytest.raises(t.TraitError, match=r"unknown layer 'x'"):
        sb.layer = "x"
    assert sb.k == 10 and sb.layer == "" and sb.probe_index is None


def test_sankey_and_audit_targets_are_validated(lens):
    for cls in (W.AttributionSankey, lambda l, target: W.AuditView(l, ["star"], [], "block4", target)):
        with pytest.raises(ValueError, match=r"target=2.0 is not accepted: expected an int in 0..3"):
            cls(lens, target=2.0)
        with pytest.raises(ValueError, match=r"target='dog' is not a class name; accepted: a class index in 0..3"):
            cls(lens, target="dog")
        v = cls(lens, target="circle-class")
        assert v.target == 3
        with pytest.raises(t.TraitError, match="target=-1 is out of range"):
            v.target = -1
    s = W.AttributionSankey(lens, 0)
    with pytest.raises(t.TraitError, match=r"open_node='nope' is not a node id; accepted: '' \(closed\)"):
        s.open_node = "nope"
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['block5'\]"):
        W.AttributionSankey(lens, 0, layers=["block4", "block5"])
    assert W.AttributionSankey(lens, 0, layers="block4").layers == ["block4"]  # one layer, not 6


def test_compare_view_of_two_layers_of_one_lens(lens):
    c = W.CompareView(lens, lens, "block3", "block4", concepts=CONCEPTS, names=("block3", "block4"), compare=fake_compare)
    out, bufs = reply(c, {"type": "thumbs", "side": "a", "layer": "block3", "component": 7, "count": 2})
    assert out["layer"] == "block3" and len(bufs) == 2
    out, bufs = reply(c, {"type": "thumbs", "side": "b", "layer": "block4", "component": 11, "count": 2})
    assert out["layer"] == "block4" and len(bufs) == 2
    out, _ = reply(c, {"type": "thumbs", "side": "b", "layer": "block3", "component": 0})
    assert out["type"] == "error" and "unknown layer 'block3'" in out["message"]


def test_compare_view_arguments_are_validated(lens):
    with pytest.raises(ValueError, match=r"model B: unknown layer 'x'"):
        W.CompareView(lens, FakeLens(seed=1), "block4", "x", compare=fake_compare)
    with pytest.raises(ValueError, match=r"CompareView \(lens_b\) needs a Lens"):
        W.CompareView(lens, None, compare=fake_compare)
    with pytest.raises(ValueError, match=r"names='AB' is not accepted: expected two non-empty strings"):
        W.CompareView(lens, FakeLens(seed=1), names="AB", compare=fake_compare)
    c = W.CompareView(lens, FakeLens(seed=1), "block4", "block4", concepts=CONCEPTS, compare=fake_compare)
    with pytest.raises(t.TraitError, match=r"concept='dog' is not accepted; accepted: '' \(none\) or one of"):
        c.concept = "dog"


def test_map_default_colouring_follows_what_the_map_shows(lens):
    # labels exist: colour by label, with one layer or several
    assert W.SemanticMap(lens, "block4", concepts=CONCEPTS).color_by == "label"
    assert W.SemanticMap(lens, concepts=CONCEPTS).color_by == "label"
    # no labels: several layers -> layer; one layer -> relevance (target) / score (query), never one colour
    assert W.SemanticMap(lens).color_by == "layer"
    assert W.SemanticMap(lens, "block4", target=1).color_by == "relevance"
    assert W.SemanticMap(lens, "block4", query="star").color_by == "score"
    one = W.SemanticMap(lens, "block4")
    assert one.color_by == "layer" and "one layer shown" in one.color_note
    # a vocabulary that no component carries: say so instead of painting everything '(unlabelled)'
    none = W.SemanticMap(lens, "block4", concepts=["zebra"])
    lens_none = [c for c in range(12) if lens._label_of("block4", c) == "zebra"]
    assert not lens_none and none.color_by == "label" and "no component" in none.color_note
    # a choice the user made is kept when the shown layers change
    m = W.SemanticMap(lens, concepts=CONCEPTS)
    msg(m, {"type": "color", "color_by": "layer"})
    msg(m, {"type": "layers", "layers": ["block4"]})
    assert m.color_by == "layer"
    auto = W.SemanticMap(lens)
    assert auto.color_by == "layer"
    msg(auto, {"type": "layers", "layers": ["block4"]})
    assert auto.color_by == "layer" and auto.error == ""


# --------------------------------------------------------------------------- map
def test_map_arrays_are_binary(lens):
    m = W.SemanticMap(lens, "block4", concepts=CONCEPTS)
    assert m.n == 12 and len(m.xy) == 12 * 8 and len(m.components) == 12 * 4 and len(m.layer_codes) == 12 * 2
    np.testing.assert_allclose(np.frombuffer(m.xy, np.float32).reshape(-1, 2), lens._xy["block4"], rtol=1e-6)
    assert m.color_by == "label" and m.label_names[0] == "(unlabelled)"
    codes = np.frombuffer(m.color_codes, np.uint16)
    assert codes.max() < len(m.color_names)
    state, buffer_paths, buffers = _remove_buffers(m.get_state())
    assert ["xy"] in buffer_paths and ["components"] in buffer_paths
    state.pop("_esm"), state.pop("_css")  # the bundle and the stylesheet: sent once, not data
    assert "xy" not in state and len(json.dumps(state)) < 5_000  # no arrays inside the JSON


def test_map_multi_layer_and_colour_modes(lens):
    m = W.SemanticMap(lens)
    assert m.layers == ["block3", "block4"] and m.n == 20 and m.color_by == "layer"
    assert m.color_names == ["block3", "block4"]
    msg(m, {"type": "color", "color_by": "score"})
    assert m.color_values == b"" and "query" in m.color_note
    m.query = "star"
    v = np.frombuffer(m.color_values, np.float32)
    assert v.shape == (20,) and np.isfinite(v).all() and m.color_note == ""
    msg(m, {"type": "color", "color_by": "relevance"})
    assert "target" in m.color_note
    m.target = 1
    v = np.frombuffer(m.color_values, np.float32)
    np.testing.assert_allclose(v[8:], lens._rel["block4"][1], rtol=1e-6)
    msg(m, {"type": "color", "size_by": "relevance"})
    s = np.frombuffer(m.size_values, np.float32)
    assert s.shape == (20,) and s.max() == pytest.approx(1.0) and s.min() >= 0
    m.valid, m.spurious = ["star"], ["watermark"]
    msg(m, {"type": "color", "color_by": "category"})
    assert m.color_names == ["valid", "spurious", "both", "unexpected"]
    assert np.frombuffer(m.color_codes, np.uint16).max() < 4
    msg(m, {"type": "color", "color_by": "heat"})
    assert "not one of" in m.error and m.color_by == "category"
    msg(m, {"type": "layers", "layers": ["block3"]})
    assert m.n == 8


def test_map_box_selection_buffer(lens):
    m = W.SemanticMap(lens, "block4")
    idx = np.array([3, 1, 3, 7], dtype="<i4")
    out, _ = reply(m, {"type": "select_many"}, [memoryview(idx.tobytes())])
    assert out["n"] == 3 and m.n_selected == 3
    assert m.selected.to_dict("list") == {"layer": ["block4"] * 3, "component": [1, 3, 7]}
    for bufs, words in [([], "one int32 buffer"), ([b"abc"], "multiple of 4"),
                        ([np.array([12], "<i4").tobytes()], "point indices"),
                        ([np.array([-1], "<i4").tobytes()], "point indices")]:
        msg(m, {"type": "select_many"}, bufs)
        assert words in m.error
    assert m.n_selected == 3


# --------------------------------------------------------------------------- sankey
def test_sankey_nodes_edges_and_open_node(lens):
    s = W.AttributionSankey(lens, target=2, concepts=CONCEPTS)
    assert s.targets[2] == [2, XSS]
    ids = {n["id"] for n in s.nodes}
    assert any(not n["labelled"] for n in s.nodes)
    assert all(e["source"] in ids and e["target"] in ids and e["weight"] > 0 for e in s.edges)
    node = next(n for n in s.nodes if n["components"])
    msg(s, {"type": "open_node", "id": node["id"]})
    assert s.open_node == node["id"]
    assert s.selection == {"layer": node["layer"], "component": node["components"][0]}
    msg(s, {"type": "open_node", "id": "no such node"})
    assert "unknown node id" in s.error and s.open_node == node["id"]
    msg(s, {"type": "open_node", "id": ""})
    assert s.open_node == ""
    msg(s, {"type": "target", "target": 1})
    assert s.target == 1
    msg(s, {"type": "target", "target": 4})
    assert "out of range" in s.error and s.target == 1


# --------------------------------------------------------------------------- audit
def test_audit_arrays_and_concept_editing(lens):
    a = W.AuditView(lens, valid=["star"], spurious=["watermark"], layer="block4", target=0)
    assert a.n == 12 and len(a.a_valid) == 48 and len(a.category) == 12
    assert [r["category"] for r in a.summary] == ["valid", "spurious", "both", "unexpected"]
    cats = np.frombuffer(a.category, np.uint8)
    assert set(cats) <= {0, 1, 2, 3}
    assert a.spurious_components == sorted(int(c) for c in np.nonzero(np.isin(cats, [1, 2]))[0])
    lens.calls.clear()
    msg(a, {"type": "set_concepts", "valid": ["star", "grass"], "spurious": ["watermark", XSS]})
    assert a.valid == ["star", "grass"] and a.spurious == ["watermark", XSS]
    assert [c for c in lens.calls if c[0] == "audit"] == [("audit", ("star", "grass"), ("watermark", XSS), "block4", 0)]
    for bad in ({"valid": "star", "spurious": []}, {"valid": [""], "spurious": []}, {"valid": [1], "spurious": []},
                {"valid": ["x"] * 1000, "spurious": []}):
        msg(a, {"type": "set_concepts", **bad})
        assert "field 'valid'" in a.error
    assert a.valid == ["star", "grass"]
    comp = a.spurious_components[0]
    out, bufs = reply(a, {"type": "thumbs", "layer": "block4", "component": comp, "kind": "samples", "count": 4})
    assert out["count"] == 4 and len(bufs) == 4 and out["indices"] == a.result.spurious_samples[comp][:4].tolist()
    ok = next(c for c in range(12) if c not in a.spurious_components)
    out, _ = reply(a, {"type": "thumbs", "layer": "block4", "component": ok, "kind": "samples"})
    assert out["type"] == "error" and "no spurious samples" in out["message"]


def test_audit_without_concepts_is_empty(lens):
    a = W.AuditView(lens, layer="block3")
    assert a.n == 0 and a.summary == [] and a.error == ""


# --------------------------------------------------------------------------- compare
def test_compare_view(lens):
    b = FakeLens(seed=1)
    c = W.CompareView(lens, b, "block4", "block4", concepts=CONCEPTS, names=("clean", "poisoned"), compare=fake_compare)
    assert c.s_ab == pytest.approx(0.71) and c.names == ["clean", "poisoned"]
    assert set(c.shared) | set(c.unique_a) | set(c.unique_b) <= set(CONCEPTS)
    concept = (c.shared or c.unique_a)[0]
    msg(c, {"type": "concept", "concept": concept})
    assert c.concept == concept and c.components_a == lens.label(CONCEPTS, "block4").groups.get(concept, [])
    msg(c, {"type": "concept", "concept": "<script>"})
    assert "unknown concept" in c.error
    comp_b = c.components_b[0] if c.components_b else 0
    out, bufs = reply(c, {"type": "thumbs", "side": "b", "layer": "block4", "component": comp_b, "count": 2})
    assert out["count"] == 2 and len(bufs) == 2
    out, _ = reply(c, {"type": "thumbs", "side": "b", "layer": "block3", "component": 0})
    assert out["type"] == "error" and "unknown layer" in out["message"]
    out, _ = reply(c, {"type": "thumbs", "side": "c", "layer": "block4", "component": 0})
    assert out["type"] == "error"


# --------------------------------------------------------------------------- explorer
def test_explorer_links_selection_everywhere(lens):
    e = W.Explorer(lens, "block4", concepts=CONCEPTS, valid=["star"], spurious=["watermark"])
    assert [type(v).__name__ for v in e.views] == ["ExplorerHeader", "SearchBox", "SemanticMap",
                                                    "ConceptGallery", "AttributionSankey", "AuditView"]
    assert e.selection == {"layer": "block4", "component": 0}
    msg(e.search, {"type": "select", "layer": "block3", "component": 5})
    for v in e.views:
        assert v.selection == {"layer": "block3", "component": 5}, type(v).__name__
    assert (e.gallery.layer, e.gallery.component) == ("block3", 5)
    assert e.header.selection_label == (lens._label_of("block3", 5) or "")
    msg(e.map, {"type": "select", "layer": "block4", "component": 9})
    assert e.gallery.component == 9 and e.search.selection["component"] == 9
    node = next(n for n in e.sankey.nodes if n["components"])
    msg(e.sankey, {"type": "open_node", "id": node["id"]})
    assert e.gallery.component == node["components"][0] and e.gallery.layer == node["layer"]
    msg(e.gallery, {"type": "goto", "component": 2})
    assert e.selection == {"layer": e.gallery.layer, "component": 2}
    # the search query colours the map; the audit's concepts feed its category colouring
    msg(e.search, {"type": "search", "query": "grass"})
    assert e.map.query == "grass"
    msg(e.audit, {"type": "set_concepts", "valid": ["circle"], "spurious": []})
    assert e.map.valid == ["circle"] and e.map.spurious == []


def test_explorer_initial_payload_is_small(lens):
    big = FakeLens({"block3": 2000, "block4": 10_000})
    e = W.Explorer(big, "block4", concepts=CONCEPTS)
    total_json = total_buf = 0
    for v in e.views:
        state, _paths, buffers = _remove_buffers(v.get_state())
        state.pop("_esm", None), state.pop("_css", None)
        total_json += len(json.dumps(state))
        total_buf += sum(len(b) for b in buffers)
    # map arrays: 10,000 x (8 xy + 4 component + 2 layer + 2 label + 2 colour) bytes
    assert total_buf <= 10_000 * 20
    assert total_json < 400_000, total_json  # dominated by the Sankey node component lists


def test_lens_vocabulary_is_the_default_concepts(lens):
    lens.vocabulary = ["star", "grass"]
    m = W.SemanticMap(lens, "block4")
    assert m.concepts == ["star", "grass"] and set(m.label_names) <= {"(unlabelled)", "star", "grass"}


# --------------------------------------------------------------------------- the real Lens
@pytest.fixture(scope="module")
def real_lens(tmp_path_factory):
    pytest.importorskip("open_clip")
    import torch
    from _models import TinyCNN, red_square_images, tiny_clip_fm

    from semlens_widgets.lens import Lens

    tmp = tmp_path_factory.mktemp("widget-lens")
    fm = tiny_clip_fm(tmp)
    x, _ = red_square_images(18, size=16, square=4)
    data = torch.utils.data.TensorDataset(x, torch.arange(18) % 3)
    lens = Lens(TinyCNN(num_classes=3), data, fm, ["features.relu1", "features.relu2"], m=4, crop="full",
                store=tmp / "store", progress=False, batch_size=8)
    lens.run()
    lens.set_vocabulary(["red", "gray", "square", XSS])
    return lens


def test_every_widget_on_a_real_lens(real_lens):
    layer = "features.relu2"
    e = W.Explorer(real_lens, layer, valid=["red"], spurious=["gray"])
    assert all(v.error == "" for v in e.views), [v.error for v in e.views]
    assert e.map.n == 16 and e.gallery.num_components == 16 and e.sankey.nodes
    assert any(n["layer"] == "output" for n in e.sankey.nodes)
    out, _ = reply(e.search, {"type": "search", "query": "a red square"})
    assert out["n"] == 10 and e.search.error == ""
    hit = e.search.results[0]
    msg(e.search, {"type": "select", "layer": hit["layer"], "component": hit["component"]})
    assert (e.gallery.layer, e.gallery.component) == (hit["layer"], hit["component"])
    assert set(e.gallery.info["measures"]) >= {"clarity", "polysemanticity"}
    out, bufs = reply(e.gallery, {"type": "thumbs", "layer": layer, "component": 3, "count": 4, "size": 32})
    assert out["count"] == 4 and Image.open(io.BytesIO(bufs[0])).size[0] <= 32
    out, bufs = reply(e.gallery, {"type": "thumbs", "layer": layer, "component": 3, "count": 2, "size": 32,
                                  "kind": "full", "format": "raw"})
    assert out["shape"][0] == 2 and len(out["boxes"]) == 2
    msg(e.search, {"type": "search_image", "index": 2})
    assert e.search.error == "" and e.search.results
    for mode in ("label", "score", "relevance", "category", "layer"):
        msg(e.map, {"type": "color", "color_by": mode})
        assert e.map.error == "", (mode, e.map.error)
    assert e.audit.n == 16 and e.audit.error == ""
    c = W.CompareView(real_lens, real_lens, layer, "features.relu1")
    assert c.error == "" and 0 < c.s_ab <= 1.0001


# --------------------------------------------------------------------------- every front end
# VS Code's and Colab's trackers: bundles must not import from a CDN (no network, strict CSP),
# binary buffers arrive as DataView (or ArrayBuffer / typed arrays), and messages near 1 MB fail.
# marimo's: an exported `render` is required, binary data nested in a dict arrives as base64, and
# a widget's CSS must not leak into the page.
STATIC = W._base.STATIC
BUNDLES = sorted(STATIC.glob("*.js"))
NODE = shutil.which("node")


def test_bundles_are_self_contained():
    assert {b.stem for b in BUNDLES} == {"search", "gallery", "map", "sankey", "audit", "compare", "explorer"}
    for b in BUNDLES:
        text = b.read_text(encoding="utf-8")
        # esbuild inlined every dependency: no static or dynamic import of anything, no fetch
        assert not re.search(r"""\bimport\s*\(|\bimport\s*[{*\w$][^;]*?\bfrom\s*["'`]|\bimport\s*["'`]""", text), b.name
        assert not re.search(r"\bfetch\s*\(|importScripts|new\s+Worker\s*\(", text), b.name
        # the only URLs are XML namespaces (SVG), never something to load
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml", "http://www.w3.org/1999/xlink",
                        "http://www.w3.org/XML/1998/namespace", "http://www.w3.org/2000/xmlns/"}, (b.name, urls)
    css = (STATIC / "semlens.css").read_text(encoding="utf-8")
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?(https?:|//)", css)


def _selectors(css: str) -> list[str]:
    """The selectors of the style rules of a stylesheet (at-rule preludes and keyframes left out)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    out, depth, buf, stack = [], 0, "", []
    for ch in css:
        if ch == "{":
            head = buf.strip()
            stack.append(head)
            if not head.startswith("@") and not any(s.startswith("@keyframes") for s in stack[:-1]):
                out += [s.strip() for s in head.split(",")]
            buf = ""
        elif ch == "}":
            stack.pop() if stack else None
            buf = ""
        elif ch == ";" and stack:
            buf = ""
        else:
            buf += ch
    return out


def test_css_never_styles_the_page():
    """Every rule of the widgets' stylesheet is scoped to a view's root (class .slw / .slw-*):
    marimo and VS Code put it in the page, where it must not restyle anything else."""
    sels = _selectors((STATIC / "semlens.css").read_text(encoding="utf-8"))
    assert len(sels) > 50
    assert [s for s in sels if not s.startswith(".slw")] == []


def _node(script: str) -> str:
    if NODE is None:
        pytest.skip("node is not installed (it builds js/; CI has it)")
    out = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60,
                         cwd=str(STATIC.parent.parent))
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_bundle_exports_a_default_render():
    """anywidget's front-end contract, which marimo enforces: ``export default { render }``."""
    files = json.dumps([str(b) for b in BUNDLES])
    got = json.loads(_node(f"""
        const out = {{}};
        for (const f of {files}) {{
          const m = await import("file://" + f);
          out[f.split("/").pop()] = typeof (m.default && m.default.render);
        }}
        console.log(JSON.stringify(out));"""))
    assert got == {b.name: "function" for b in BUNDLES}


def test_buffers_read_the_same_from_every_front_end():
    """js/lib/model.js reads a buffer the same whether it comes as a DataView (JupyterLab, VS Code),
    an ArrayBuffer, a typed array or a base64 string (marimo, nested binary data)."""
    got = json.loads(_node("""
        import { u8, f32 } from "./js/lib/model.js";
        const bytes = new Uint8Array([0, 0, 128, 63, 0, 0, 0, 64, 7]);   // 1.0f, 2.0f, then 7
        const padded = new Uint8Array([9, 9, 9, ...bytes]);
        const forms = {
          dataview: new DataView(padded.buffer, 3, 9), arraybuffer: bytes.buffer.slice(0),
          uint8: bytes, int8: new Int8Array(bytes.buffer), base64: Buffer.from(bytes).toString("base64"),
        };
        const out = {};
        for (const [k, v] of Object.entries(forms)) out[k] = [Array.from(u8(v)), Array.from(f32(v))];
        out.none = [Array.from(u8(null)), Array.from(u8("%%not base64%%"))];
        console.log(JSON.stringify(out));"""))
    for form in ("dataview", "arraybuffer", "uint8", "int8", "base64"):
        assert got[form] == [[0, 0, 128, 63, 0, 0, 0, 64, 7], [1.0, 2.0]], form
    assert got["none"] == [[], []]


def test_thumbnails_are_fetched_in_parts_until_all_arrived():
    """requestThumbs asks again from where a (size-limited) reply stopped."""
    got = json.loads(_node("""
        import { requestThumbs } from "./js/lib/thumbs.js";
        const asked = [];
        const chan = { request: async (m) => { asked.push([m.start, m.count]);
          const n = Math.min(m.count, 7, 30 - m.start);
          return { msg: { count: n, total: 30, start: m.start }, buffers: Array(n).fill(0) }; } };
        const parts = await requestThumbs(chan, { type: "thumbs", start: 2, count: 25 });
        console.log(JSON.stringify({ asked, n: parts.reduce((a, p) => a + p.msg.count, 0) }));"""))
    assert got == {"asked": [[2, 25], [9, 18], [16, 11], [23, 4]], "n": 25}


def test_thumbnail_replies_stay_under_half_a_megabyte():
    """Big thumbnails (64 of 128-160 px) come in parts of at most MAX_REPLY_BYTES; the parts,
    asked for from where each stopped, are exactly the one big answer."""

    class Noisy(FakeLens):  # incompressible crops: the PNG path has to cut too
        def crops(self, layer, k, size=None):
            g = torch.Generator().manual_seed(int(k))
            return torch.randint(0, 256, (self.m, 3, self.crop_size, self.crop_size), generator=g, dtype=torch.uint8)

    big = Noisy(image_size=160, crop_size=128, m=64, n_samples=256)
    g = W.ConceptGallery(big, "block4", 1)
    limit = W._base.MAX_REPLY_BYTES
    for kind, fmt in (("crops", "raw"), ("full", "raw"), ("crops", "png")):
        start, raw, boxes, pngs = 0, b"", [], []
        while start < 64:
            out, bufs = reply(g, {"type": "thumbs", "layer": "block4", "component": 1, "start": start, "count": 64 - start,
                                  "size": 256, "kind": kind, "format": fmt})
            assert 1 <= out["count"] < 64 and sum(map(len, bufs)) <= limit, (kind, fmt, out["count"])
            assert len(bufs) == (out["count"] if fmt == "png" else 1 + (kind == "full"))
            if fmt == "raw":
                n, hh, ww, c = out["shape"]
                assert n == out["count"] and len(bufs[0]) == n * hh * ww * c
                raw += bufs[0]
            else:
                pngs += bufs
            if kind == "full":
                assert out["heatmap_shape"][0] == len(out["boxes"]) == len(out["indices"]) == out["count"]
                assert len(bufs[1]) == out["count"] * out["heatmap_shape"][1] * out["heatmap_shape"][2]
                boxes += out["boxes"]
            start += out["count"]
        want = big.crops("block4", 1)
        if kind == "crops" and fmt == "raw":
            assert raw == want.permute(0, 2, 3, 1).contiguous().numpy().tobytes()
        if fmt == "png":
            assert len(pngs) == 64 and np.array_equal(np.asarray(Image.open(io.BytesIO(pngs[-1]))),
                                                      want[-1].permute(1, 2, 0).numpy())
        if kind == "full":
            assert len(boxes) == 64


def _state_bytes(widget) -> int:
    """Bytes of a widget's whole state as the comm sends it when the view opens (JSON with the
    bundle and the CSS, plus the binary buffers)."""
    state, _paths, buffers = _remove_buffers(widget.get_state())
    return len(json.dumps(state)) + sum(len(b) for b in buffers)


@pytest.mark.slow
def test_every_message_on_the_demo_world_is_under_half_a_megabyte():
    """The largest messages the views send on the demo world (the states they open with, a
    gallery page of crops and of full images with heatmaps, search results and their strips, the
    map's tooltip crops, a comparison) stay under MAX_REPLY_BYTES: well under the ~1 MB at which
    VS Code's and Colab's widget transports fail."""
    from _jlab import filled_demo_store

    world = slw.demo.load()
    lens = slw.Lens(world.model, world.dataset, world.fm, layers=world.layers, m=30, class_names=world.class_names,
                    store=filled_demo_store(), progress=False)
    lens.run()
    lens.set_vocabulary(world.concepts())
    e = W.Explorer(lens, target=world.shortcut_target, valid=world.valid_concepts[world.shortcut_class],
                   spurious=["watermark"])
    c = W.CompareView(lens, lens, "block3", "block4")
    sizes = {}
    out, bufs = reply(e.search, {"type": "search", "query": "watermark"})
    sizes["search results"] = len(json.dumps(out)) + sum(map(len, bufs))
    hit = e.search.results[0]
    for name, widget, req in (
        ("search strip", e.search, dict(count=6, size=56)),
        ("gallery page of crops", e.gallery, dict(count=30, size=96)),
        ("gallery page of full images + heatmaps", e.gallery, dict(count=30, size=96, kind="full", format="raw")),
        ("map tooltip", e.map, dict(count=4, size=48, format="raw")),
        ("compare strip", c, dict(count=6, size=56, side="b")),
    ):
        layer = "block4" if widget is c else hit["layer"]
        out, bufs = reply(widget, {"type": "thumbs", "layer": layer, "component": hit["component"], **req})
        assert out["count"] == req["count"], name  # on the demo world every page fits in one reply
        sizes[name] = len(json.dumps(out)) + sum(map(len, bufs))
    msg(c, {"type": "concept", "concept": c.shared[0]})
    for mode in ("label", "score", "relevance", "category"):
        msg(e.map, {"type": "color", "color_by": mode})
    for v in e.views + [c]:
        assert v.error == "", (type(v).__name__, v.error)
        sizes[f"{type(v).__name__} state"] = _state_bytes(v)
    largest = max(sizes, key=sizes.get)
    print(f"largest message on the demo world: {largest}, {sizes[largest] / 1024:.0f} KiB; all: "
          + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])))
    assert sizes[largest] < W._base.MAX_REPLY_BYTES, sizes


# --------------------------------------------------------------------------- descriptions, label AUC, SAE layers
def test_gallery_shows_the_description_history_and_its_generated_images(lens):
    g = W.ConceptGallery(lens, "block4", 2)  # the fake describes even components
    d = g.info["description"]
    want = lens.stored_description("block4", 2)
    assert d["best"] == want.best and d["auc"] == pytest.approx(want.auc) and d["polysemantic"] is False
    assert [(r["round"], r["concept"], r["auc"]) for r in d["history"]] == [
        (int(r), c, pytest.approx(a)) for r, c, a in zip(want.history["round"], want.history["concept"], want.history["auc"])]
    assert d["rounds"] == 2 and d["examples"] == {c: 4 for c in want.examples}
    out, bufs = reply(g, {"type": "thumbs", "layer": "block4", "component": 2, "kind": "generated",
                          "concept": want.best, "count": 4, "size": 64})
    assert out["count"] == 4 and out["total"] == 4 and out["concept"] == want.best
    got = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in bufs])
    assert np.array_equal(got, want.examples[want.best].permute(0, 2, 3, 1).numpy())
    out, _ = reply(g, {"type": "thumbs", "layer": "block4", "component": 2, "kind": "generated", "concept": XSS, "count": 4})
    assert out["type"] == "error" and "no generated images" in out["message"]
    msg(g, {"type": "goto", "component": 3})
    assert g.info["description"] is None  # never described


def test_map_colours_by_label_auc(lens):
    m = W.SemanticMap(lens, "block3", color_by="auc")
    table = lens.stored_faithfulness("block3").set_index("component")["auc"]
    comps = np.frombuffer(m.components, dtype=np.int32)
    values = np.frombuffer(m.color_values, dtype=np.float32)
    np.testing.assert_allclose(values, table.reindex(comps).to_numpy(dtype=np.float32), equal_nan=True)
    assert np.isnan(values).any() and np.isfinite(values).any() and m.color_note == ""
    m.layers = ["block4"]  # no faithfulness table for it: a note, no colours
    assert m.color_values == b"" and "lens.faithfulness" in m.color_note


def test_sae_layers_are_listed_wherever_layers_are(lens):
    sae = FakeLens({"block3": 8, "block4": 12, "block4:sae": 20}, concepts=CONCEPTS)
    e = W.Explorer(sae, "block4:sae", concepts=CONCEPTS)
    assert e.gallery.layers == sae.layers and e.map.all_layers == sae.layers and e.map.n == 20
    assert e.sankey.layers == ["block3", "block4"]  # relevance does not flow through SAE layers
    out, _ = reply(e.search, {"type": "search", "query": "star", "layer": "block4:sae"})
    assert out["type"] == "search" and {r["layer"] for r in e.search.results} == {"block4:sae"}
    msg(e.gallery, {"type": "goto", "layer": "block4:sae", "component": 19})
    assert (e.gallery.layer, e.gallery.component) == ("block4:sae", 19) and e.map.selection["layer"] == "block4:sae"
    a = W.AuditView(sae, ["star"], ["watermark"], "block4:sae", 1)
    assert a.n == 20 and a.error == ""


@pytest.mark.slow
def test_every_widget_on_a_real_lens_with_an_sae_layer(tmp_path):
    pytest.importorskip("open_clip")
    from _models import TinyCNN, tiny_clip_fm

    from semlens_widgets.lens import Lens

    g = torch.Generator().manual_seed(1)
    sae = slw.SAE(torch.randn(16, 24, generator=g), torch.zeros(24), activation="topk", k=4)
    x = torch.rand(24, 3, 16, 16, generator=g)
    lens = Lens(TinyCNN(num_classes=3), [(x[i], i % 3) for i in range(24)], tiny_clip_fm(tmp_path),
                ["features.relu2", "features.relu2:sae"], m=4, saes={"features.relu2": sae}, store=None,
                progress=False, batch_size=8)
    lens.run()
    lens.set_vocabulary(["red", "gray", "square"])
    e = W.Explorer(lens, "features.relu2:sae", valid=["red"], spurious=["gray"])
    assert all(v.error == "" for v in e.views), [(type(v).__name__, v.error) for v in e.views]
    assert e.map.n == 24 and e.gallery.num_components == 24 and e.audit.n == 24
    assert e.sankey.layers == ["features.relu2"] and e.sankey.nodes
    out, bufs = reply(e.gallery, {"type": "thumbs", "layer": "features.relu2:sae", "component": 3, "count": 4, "size": 32})
    assert out["count"] == 4 and len(bufs) == 4
    for mode in ("label", "relevance", "category", "auc"):
        msg(e.map, {"type": "color", "color_by": mode})
        assert e.map.error == "", (mode, e.map.error)


def test_query_traits_refuse_over_long_text(lens):
    """The search box's and the map's query trait take at most MAX_STR characters (one check)."""
    from semlens_widgets.widgets._base import MAX_STR

    for widget in (W.SearchBox(lens), W.SemanticMap(lens)):
        widget.query = "star"
        with pytest.raises(W.WidgetValueError, match=rf"query is {MAX_STR + 1} characters long; at most {MAX_STR}"):
            widget.query = "x" * (MAX_STR + 1)
        assert widget.query == "star"  # refused, nothing changed
