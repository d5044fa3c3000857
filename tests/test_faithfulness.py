"""Label faithfulness kernel: AUC of activations on generated images of a label vs control
images, equal to scikit-learn's ROC AUC (ties included)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

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
    with pytest.raises(ValueError, match="expected \\[0, 1\\]"):
        layer_faithfulness(activations, lambda c, n, s: torch.full((n, 3, 4, 4), 2.0), ["star"] * 3, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="labels\\[1\\]"):
        layer_faithfulness(activations, generator, ["star", "", None], torch.zeros(5, 3))
