"""Label faithfulness kernel: AUC of activations on generated images of a label vs control
images, equal to scikit-learn's ROC AUC (ties included)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from _demo_lens import block4_activations, demo_lens

from semlens_widgets.kernels.faithfulness import (
    auc_separation,
    faithfulness_summary,
    layer_faithfulness,
    mean_activation_difference,
    roc_auc,
)


def test_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, n, c = rng.integers(1, 30), rng.integers(1, 40), 3
        pos = rng.integers(0, 4, size=(p, c)).astype(float)  # many ties
        neg = rng.integers(0, 3, size=(n, c)).astype(float)
        got = auc_separation(pos, neg)
        y = np.r_[np.ones(p), np.zeros(n)]
        want = [roc_auc_score(y, np.r_[pos[:, j], neg[:, j]]) for j in range(c)]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_auc_extremes_and_1d():
    assert auc_separation(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0]))[0] == 1.0
    assert auc_separation([0.0], [1.0])[0] == 0.0
    assert auc_separation([1.0, 1.0], [1.0])[0] == 0.5


def test_roc_auc_matrix_and_bad_input():
    s = np.array([[0.1, 3.0], [0.4, 2.0], [0.35, 1.0], [0.8, 0.0]])
    y = np.array([[0, 1], [0, 1], [1, 0], [1, 0]], dtype=bool)
    a = roc_auc(s, y)
    assert a.shape == (2, 2)
    assert a[0, 0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert a[1, 1] == pytest.approx(roc_auc_score(y[:, 1], s[:, 1]))
    assert np.isnan(roc_auc(s, np.ones(4, bool))).all()
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([np.nan, 1.0]), np.array([True, False]))
    with pytest.raises(ValueError, match="share C"):
        auc_separation(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least one"):
        auc_separation(np.zeros((0, 2)), np.zeros((3, 2)))


def test_mad():
    pos, neg = np.array([3.0, 5.0]), np.array([0.0, 2.0])
    assert mean_activation_difference(pos, neg)[0] == pytest.approx((4.0 - 1.0) / np.std([0.0, 2.0], ddof=1))


def _toy():
    """Images whose pixel (0, 0, j) says whether word j is in the concept; C = 3 components
    read words 0, 1, 2 plus noise."""
    words = ["star", "red", "sand"]
    calls = []

    def generator(concept, n, seed):
        calls.append(concept)
        if concept == "dog":
            raise ValueError("cannot draw 'dog'")
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 3, 4, 4, generator=g) * 0.2
        for j, w in enumerate(words):
            if w in concept.split():
                x[:, 0, 0, j] += 0.7
        return x

    def activations(x):
        return x[:, 0, 0, :3] + 0.05 * x[:, 1, 1, :3]

    return words, generator, activations, calls


def test_layer_faithfulness_matches_direct_auc():
    words, generator, activations, calls = _toy()
    control = activations(torch.rand(50, 3, 4, 4, generator=torch.Generator().manual_seed(9)) * 0.5)
    labels = ["star", "red", None]
    t = layer_faithfulness(activations, generator, labels, control, n_images=8, seed=3)
    assert list(t.columns) == ["component", "label", "auc", "mad", "note"]
    for k, lab in enumerate(labels[:2]):
        pos = activations(generator(lab, 8, 3))[:, k].numpy()
        y = np.r_[np.ones(8), np.zeros(50)]
        assert t.auc[k] == pytest.approx(roc_auc_score(y, np.r_[pos, control[:, k].numpy()]))
    assert np.isnan(t.auc[2]) and t.label[2] is None
    # component 0 reads "star", component 1 "red": their labels separate
    assert t.auc[0] > 0.95 and t.auc[1] > 0.95


def test_layer_faithfulness_generates_once_per_label_and_records_unrenderable():
    words, generator, activations, calls = _toy()
    control = activations(torch.rand(20, 3, 4, 4) * 0.8)
    t = layer_faithfulness(activations, generator, ["star", "star", "dog"], control, n_images=4)
    assert sorted(calls) == ["dog", "star"]
    assert np.isnan(t.auc[2]) and "unrenderable" in t.note[2] and "dog" in t.note[2]
    s = faithfulness_summary(t)
    assert s["n_labelled"] == 3 and s["n_scored"] == 2 and s["n_unrenderable"] == 1
    assert s["mean_auc"] == pytest.approx(t.auc[:2].mean())


def test_layer_faithfulness_bad_input():
    words, generator, activations, _ = _toy()
    with pytest.raises(ValueError, match="control"):
        layer_faithfulness(activations, generator, ["star"], torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n_images"):
        layer_faithfulness(activations, generator, ["star"] * 3, torch.zeros(5, 3), n_images=0)
    with pytest.raises(ValueError, match="values in \\[2, 2\\] for 'star'; accepted: a floating-point Tensor"):
        layer_faithfulness(activations, lambda c, n, s: torch.full((n, 3, 4, 4), 2.0), ["star"] * 3, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="labels\\[1\\]"):
        layer_faithfulness(activations, generator, ["star", "", None], torch.zeros(5, 3))


# --------------------------------------------------------------------------- lens.faithfulness


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_lens(tmp_path_factory.mktemp("store"))


def _block4(model, x):
    return block4_activations(model, x).numpy()


class Counting:
    """The demo renderer, counting its calls; ``stop_after``: raise KeyboardInterrupt then."""

    identity = "demo renderer (counted)"

    def __init__(self, world, stop_after=None):
        self.world, self.calls, self.stop_after = world, [], stop_after

    def __call__(self, concept, n, seed):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(concept)
        return self.world.generator(concept, n, seed)


def test_lens_faithfulness_equals_sklearn(demo):
    world, lens = demo
    assert lens.stored_faithfulness("block4") is None
    labels = lens.label(world.concepts(), "block4").table["label"].tolist()  # the default labels
    f = lens.faithfulness("block4", world.generator, n_images=8, control=40)
    assert list(f.columns) == ["layer", "component", "label", "auc", "mad", "note"]
    assert f.label.tolist() == labels
    neg = _block4(world.model, lens.model_inputs(lens.describer.control_samples(40)))  # [40, 128]
    checked = 0
    for lab in sorted({l for l in labels if l is not None})[:6]:
        pos = _block4(world.model, world.generator(lab, 8, 0))
        for k in [k for k, l in enumerate(labels) if l == lab]:
            want = roc_auc_score(np.r_[np.ones(8), np.zeros(40)], np.r_[pos[:, k], neg[:, k]])
            assert f.auc[k] == pytest.approx(want)
            checked += 1
    assert checked > 0
    assert f.auc[[l is None for l in labels]].isna().all()
    s = f.attrs["summary"]
    assert s["n_labelled"] == sum(l is not None for l in labels) and s["mean_auc"] == pytest.approx(f.auc.mean())
    back = lens.stored_faithfulness("block4")
    pd.testing.assert_frame_equal(back, f)


def test_lens_faithfulness_labels_argument_and_errors(demo):
    world, lens = demo
    f = lens.faithfulness("block4", world.generator, labels={3: "red star", 7: "dog"}, n_images=4, control=20)
    assert f.label[3] == "red star" and np.isfinite(f.auc[3]) and f.auc.notna().sum() == 1
    assert f.note[7].startswith("unrenderable: ") and "unknown word 'dog'" in f.note[7]
    with pytest.raises(ValueError, match="labels must be a list of 128 labels"):
        lens.faithfulness("block4", world.generator, labels=["red"] * 3)
    with pytest.raises(ValueError, match=r"labels has components \[200\]"):
        lens.faithfulness("block4", world.generator, labels={200: "red"})
    with pytest.raises(ValueError, match="unknown layer 'block9'"):
        lens.faithfulness("block9", world.generator)


def test_lens_faithfulness_resumes_after_an_interruption(demo):
    world, lens = demo
    labels = [world.concepts()[k % 20] if k < 40 else None for k in range(128)]  # 20 distinct labels
    gen = Counting(world, stop_after=10)  # chunks of 8 labels: the first chunk is saved, then it stops
    with pytest.raises(KeyboardInterrupt):
        lens.faithfulness("block4", gen, labels=labels, n_images=4, seed=1, control=30)
    again = Counting(world)
    f = lens.faithfulness("block4", again, labels=labels, n_images=4, seed=1, control=30)
    assert len(again.calls) == 12  # only the labels of the unfinished chunks are drawn again
    reused = Counting(world)
    lens.faithfulness("block4", reused, labels=labels, n_images=4, seed=1, control=30)
    assert reused.calls == []  # the same settings and generator: read from the store
    full = lens.faithfulness("block4", world.generator, labels=labels, n_images=4, seed=1, control=30)
    pd.testing.assert_frame_equal(f, full)  # another generator identity: computed, same images


# --------------------------------------------------------------------------- the report section


def test_report_shows_the_stored_faithfulness_only_when_computed():
    import html
    import re

    from _fake_lens import XSS, FakeLens

    from semlens_widgets.report import render_report

    lens = FakeLens(n_classes=5, concepts=["star", "stripes", XSS, "circle"])
    table = FakeLens(n_classes=5, concepts=["star", "stripes", XSS, "circle"]).stored_faithfulness("block3")
    page = render_report(lens, progress=False)
    body = page[page.rfind("<header>"):]
    assert '<section id="faithfulness">' in body and 'href="#faithfulness"' in body
    assert lens.count("stored_faithfulness") == 2  # both layers asked; only block3 has a table
    scored = table[table.auc.notna()]
    mean = f"{scored.auc.mean():.3f}"
    section = body[body.index('<section id="faithfulness">'):]
    assert mean in section  # the layer's mean label AUC
    for lab, group in scored.groupby("label"):
        assert html.escape(lab, quote=True) in section and f"{group.auc.mean():.3f}" in section
    assert XSS not in page  # labels are escaped
    weak = scored[scored.auc < 0.6]
    assert len(re.findall(r"<tr><td>\d+</td>", section.split("labels that do not hold")[1])) == len(weak)

    class NoFaithfulness(FakeLens):
        def stored_faithfulness(self, layer):
            return None

    page = render_report(NoFaithfulness(n_classes=5), progress=False)
    assert '<section id="faithfulness">' not in page and 'href="#faithfulness"' not in page


def test_report_of_a_real_lens_reads_its_faithfulness(demo, tmp_path):
    world, lens = demo
    f = lens.faithfulness("block4", world.generator, labels={3: "red star", 4: "sand"}, n_images=4, control=20)
    path = lens.report(tmp_path / "r.html", progress=False)
    body = path.read_text(encoding="utf-8")
    section = body[body.index('<section id="faithfulness">'):]
    assert "red star" in section and f"{f.auc[3]:.3f}" in section
