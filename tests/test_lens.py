"""Lens core: run (collect -> boxes -> embeddings), store reuse and invalidation, resume after
an interruption, accessors, and the clear errors of the issue."""
from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from semlens_widgets.foundation import FoundationModel
from semlens_widgets.lens import Lens, imagenet_unnormalize
from semlens_widgets.store import Store, StoreError

from _models import TINY_CLIP, RedNet, ReuseNet, TinyCNN, TokenNet, red_square_images, tiny_clip_fm

torch.set_num_threads(1)

LAYERS = ["features.relu1", "features.relu2"]  # TinyCNN: 8 and 16 components


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    return tiny_clip_fm(tmp_path_factory.mktemp("cfg"))


class CountingFM:
    """Delegates to a FoundationModel; counts encode_images calls / rows; can fail after N calls."""

    def __init__(self, fm, fail_after: int | None = None, exc=KeyboardInterrupt):
        self._fm, self.calls, self.rows, self.fail_after, self.exc = fm, 0, 0, fail_after, exc

    def encode_images(self, x, batch_size=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise self.exc()
        self.calls += 1
        self.rows += x.shape[0]
        return self._fm.encode_images(x, batch_size)

    def __getattr__(self, name):
        return getattr(self._fm, name)


class ImgSet(Dataset):
    """(x, y) items of images in [0, 1] (red squares on gray)."""

    def __init__(self, n=20, size=16, seed=0):
        self.x, _ = red_square_images(n, size=size, square=4, seed=seed)
        self.y = torch.arange(n) % 3

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def count_forwards(model):
    calls = [0]

    def pre(mod, inp):
        calls[0] += 1

    model.register_forward_pre_hook(pre)
    return calls


def make(model, data, fm, store, **kw):
    kw.setdefault("m", 4)
    kw.setdefault("crop", "activation")
    kw.setdefault("progress", False)
    kw.setdefault("chunk_size", 8)
    kw.setdefault("batch_size", 32)
    return Lens(model, data, fm, kw.pop("layers", LAYERS), store=store, **kw)


def results(lens):
    return {
        layer: (lens.topm(layer).indices, lens.topm(layer).values, lens.boxes(layer),
                lens.example_embeddings(layer), lens.embeddings(layer))
        for layer in lens.layers
    }


def assert_same(a, b):
    assert a.keys() == b.keys()
    for layer in a:
        for x, y in zip(a[layer], b[layer]):
            assert torch.equal(x, y), layer


# ------------------------------------------------------------------------------ the pipeline


@pytest.mark.parametrize("crop", ["crp", "activation", "full"])
def test_run_shapes_and_accessors(fm, crop, tmp_path):
    data = ImgSet()
    lens = make(TinyCNN(num_classes=3), data, fm, tmp_path / "s", crop=crop).run()
    assert lens.layers == LAYERS
    assert lens.num_components("features.relu1") == 8 and lens.num_components("features.relu2") == 16
    for layer in LAYERS:
        C = lens.num_components(layer)
        assert lens.boxes(layer).shape == (C, 4, 4) and lens.boxes(layer).dtype == torch.long
        V, theta = lens.example_embeddings(layer), lens.embeddings(layer)
        assert V.shape == (C, 4, fm.dim) and V.dtype == torch.float32
        assert theta.shape == (C, fm.dim) and theta.dtype == torch.float32
        torch.testing.assert_close(theta, V.mean(dim=1), atol=1e-3, rtol=0)  # eq. 2 (V stored fp16)
        torch.testing.assert_close(V.norm(dim=-1), torch.ones(C, 4), atol=2e-3, rtol=0)
        b = lens.boxes(layer)
        assert (b[..., 0] < b[..., 2]).all() and (b[..., 1] < b[..., 3]).all()
        assert b.min() >= 0 and b[..., 2:].max() <= 16
    idx, act = lens.examples("features.relu2", 3)
    assert idx.shape == act.shape == (4,) and (act[:-1] >= act[1:]).all()
    crops = lens.crops("features.relu2", 3)
    assert crops.dtype == torch.uint8 and crops.shape == (4, 3, 16, 16)
    assert lens.crops("features.relu2", 3, size=8).shape == (4, 3, 8, 8)
    assert torch.equal(lens.sample_labels, data.y)
    assert lens.sample_predictions.shape == (20,) and lens.num_classes == 3
    assert lens.images([0, 5]).shape == (2, 3, 16, 16)
    torch.testing.assert_close(lens.model_inputs([5])[0], data.x[5])
    assert lens.heatmaps("features.relu2", 3).shape == (4, 16, 16)
    if crop == "full":
        assert (lens.boxes("features.relu1") == torch.tensor([0, 0, 16, 16])).all()
    # the stored entries are the final ones only: no leftover chunks
    steps = ("collect", "boxes", "embed") + (("conservation",) if crop == "crp" else ())  # crp: its conservation
    assert sorted(lens.store.keys()) == sorted(["samples"] + [f"{s}/{l}" for s in steps for l in LAYERS])


@pytest.mark.parametrize("crop", ["crp", "full"])
def test_run_reports_each_step(fm, crop, tmp_path):
    steps = []
    make(TinyCNN(num_classes=3), ImgSet(), fm, tmp_path / "s", crop=crop).run(on_step=lambda *a: steps.append(a))
    names = [(s, layer) for s, layer, _ in steps]
    embeds = [("embed", layer) for layer in LAYERS] if crop == "crp" else [("embed", None)]
    assert names == [("collect", None)] + [("crops", layer) for layer in LAYERS] + embeds
    assert all(isinstance(t, float) and t >= 0 for *_, t in steps)
    with pytest.raises(TypeError, match="on_step must be callable"):
        make(TinyCNN(num_classes=3), ImgSet(), fm, None).run(on_step="print")


def test_crops_are_the_boxes_of_the_display_images(fm):
    from semlens_widgets.kernels.crops import crop_resize

    lens = make(TinyCNN(num_classes=3), ImgSet(), fm, None).run()
    idx, _ = lens.examples("features.relu1", 2)
    expected = crop_resize(lens.images(idx), lens.boxes("features.relu1")[2], 16)
    got = lens.crops("features.relu1", 2)
    assert (got.float() - expected * 255).abs().max() <= 0.5 + 1e-4
    # the embedding of an example is the fm embedding of its crop
    emb = fm.encode_images(expected)
    torch.testing.assert_close(lens.example_embeddings("features.relu1")[2], emb, atol=2e-3, rtol=0)


def test_crp_boxes_find_the_red_square(fm):
    """RedNet conv2 channel 0 fires only on the red square. Mean pooling starts CRP at the whole
    map: the crops cover the square. Max pooling starts it at the peak neuron (the square's
    first red pixel): the crops are that pixel's 3x3 window (the first layer's Flat rule)."""
    x, true_boxes = red_square_images(12, size=24, square=5, seed=1)
    data = [(x[i], 0) for i in range(12)]
    lens = Lens(RedNet(), data, fm, ["relu2"], m=3, crop="crp", store=None, progress=False, pooling="mean").run()
    idx, _ = lens.examples("relu2", 0)
    b = lens.boxes("relu2")[0]
    t = true_boxes[idx]
    # the box contains the square and is not much larger than it
    assert (b[:, :2] <= t[:, :2]).all() and (b[:, 2:] >= t[:, 2:]).all()
    assert ((b[:, 2] - b[:, 0]) <= 5 + 4).all() and ((b[:, 3] - b[:, 1]) <= 5 + 4).all()
    # the paper's rule (relevance > 1 % of the max) keeps exactly the heatmap's support
    peak = Lens(RedNet(), data, fm, ["relu2"], m=3, crop="crp", crop_rule="threshold", store=None,
                progress=False).run()
    idx, _ = peak.examples("relu2", 0)
    t = true_boxes[idx]
    window = torch.cat([(t[:, :2] - 1).clamp(min=0), (t[:, :2] + 2).clamp(max=24)], dim=1)
    torch.testing.assert_close(peak.boxes("relu2")[0], window)
    # the default rule smooths the heatmap first (zennit-crp's kernel): a box around the window,
    # at most the kernel's half-width larger on each side
    smooth = Lens(RedNet(), data, fm, ["relu2"], m=3, crop="crp", store=None, progress=False).run()
    assert smooth.crop_rule == "peak_region"
    sb = smooth.boxes("relu2")[0]
    assert (sb[:, :2] <= window[:, :2]).all() and (sb[:, 2:] >= window[:, 2:]).all()
    assert ((sb[:, 2:] - sb[:, :2]) <= 3 + 2 * 2).all()


def test_full_mode_embeds_each_distinct_sample_once(fm):
    cfm = CountingFM(fm)
    lens = make(TinyCNN(num_classes=3), ImgSet(n=12), cfm, None, crop="full").run()
    distinct = torch.unique(torch.cat([lens.topm(l).indices.reshape(-1) for l in LAYERS]))
    assert cfm.rows == distinct.numel()
    # the same sample has the same embedding in every component that holds it
    i0 = lens.topm("features.relu1").indices[0, 0]
    V2, I2 = lens.example_embeddings("features.relu2"), lens.topm("features.relu2").indices
    hits = (I2 == i0).nonzero()
    for c, j in hits.tolist():
        torch.testing.assert_close(V2[c, j], lens.example_embeddings("features.relu1")[0, 0])


def test_fewer_samples_than_m(fm):
    data = ImgSet(n=3)
    cfm = CountingFM(fm)
    lens = make(TinyCNN(num_classes=3), data, cfm, None, m=5).run()
    assert lens.topm("features.relu1").m_eff == 3 and not lens.topm("features.relu1").complete
    assert lens.example_embeddings("features.relu2").shape == (16, 3, fm.dim)
    assert len(lens.examples("features.relu2", 0)) == 3
    assert lens.crops("features.relu2", 0).shape[0] == 3
    assert cfm.rows == (8 + 16) * 3  # only the crops that exist are embedded


def test_reused_module_and_tuple_layers(fm):
    lens = make(ReuseNet(), ImgSet(n=10), fm, None, layers=["block1.relu@1", "stem"]).run()
    assert lens.num_components("block1.relu@1") == 6
    assert lens.embeddings("stem").shape == (6, fm.dim)


class _AttentionNet(nn.Module):
    """Patch tokens through nn.MultiheadAttention: no LRP rule for attention."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # [B, T, 8]
        return self.head(self.att(t, t, t)[0][:, 0])


def test_token_model_with_activation_crops(fm):
    lens = make(TokenNet(), ImgSet(n=10), fm, None, layers=["mlp"], crop="activation", pooling="cls")
    with pytest.raises(ValueError, match=r"crop='crp' needs LRP rules.*MultiheadAttention.*crop='activation'"):
        make(_AttentionNet(), ImgSet(n=10), fm, None, layers=["att"], crop="crp")
    lens.run()
    assert lens.embeddings("mlp").shape == (8, fm.dim)


# ------------------------------------------------------------------------------ store reuse


def test_second_run_loads_without_calling_the_model(fm, tmp_path):
    data = ImgSet()
    model = TinyCNN(num_classes=3)
    first = make(model, data, fm, tmp_path / "s", crop="crp").run()
    ref = results(first)
    calls = count_forwards(model)
    cfm = CountingFM(fm)
    second = make(model, data, cfm, tmp_path / "s", crop="crp").run()
    assert calls[0] == 0 and cfm.calls == 0
    assert_same(results(second), ref)
    assert torch.equal(second.sample_predictions, first.sample_predictions)
    assert second.fingerprint == first.fingerprint


def test_changed_model_recomputes(fm, tmp_path):
    data = ImgSet()
    model = TinyCNN(num_classes=3)
    ref = results(make(model, data, fm, tmp_path / "s").run())
    with torch.no_grad():
        model.features.conv1.weight.mul_(-1.0)  # same architecture, new weights
    calls = count_forwards(model)
    lens = make(model, data, fm, tmp_path / "s").run()
    assert calls[0] > 0
    new = results(lens)
    assert not torch.equal(new["features.relu1"][1], ref["features.relu1"][1])
    # and it equals a fresh computation with the new weights
    assert_same(new, results(make(model, data, fm, None).run()))


def test_changed_m_pooling_crop_recompute(fm, tmp_path):
    data = ImgSet()
    model = TinyCNN(num_classes=3)
    make(model, data, fm, tmp_path / "s").run()
    calls = count_forwards(model)
    lens = make(model, data, fm, tmp_path / "s", m=5).run()
    assert calls[0] > 0 and lens.example_embeddings("features.relu1").shape[1] == 5
    for kw in ({"m": 5, "pooling": "mean"}, {"m": 5, "crop": "crp"}):
        before = calls[0]
        make(model, data, fm, tmp_path / "s", **kw).run()
        assert calls[0] > before, kw


def test_changed_dataset_recomputes(fm, tmp_path):
    model = TinyCNN(num_classes=3)
    make(model, ImgSet(seed=0), fm, tmp_path / "s").run()
    calls = count_forwards(model)
    make(model, ImgSet(seed=1), fm, tmp_path / "s").run()
    assert calls[0] > 0


def test_changed_fm_recomputes_only_embeddings(fm, tmp_path):
    data = ImgSet()
    model = TinyCNN(num_classes=3)
    a = make(model, data, fm, tmp_path / "s").run()
    calls = count_forwards(model)
    torch.manual_seed(99)
    other = CountingFM(FoundationModel.open_clip(TINY_CLIP))
    b = make(model, data, other, tmp_path / "s").run()
    assert calls[0] == 0 and other.calls > 0  # collection and boxes reused, embeddings redone
    assert torch.equal(a.boxes("features.relu2"), b.boxes("features.relu2"))
    assert not torch.equal(a.embeddings("features.relu2"), b.embeddings("features.relu2"))


def test_added_layer_collects_only_it(fm, tmp_path):
    data = ImgSet()
    model = TinyCNN(num_classes=3)
    a = make(model, data, fm, tmp_path / "s", layers=["features.relu1"]).run()
    b = make(model, data, fm, tmp_path / "s", layers=["features.relu1", "features.conv2"]).run()
    assert torch.equal(a.embeddings("features.relu1"), b.embeddings("features.relu1"))
    assert b.num_components("features.conv2") == 16


# ------------------------------------------------------------------------------ resume


@pytest.mark.parametrize("crop", ["activation", "full"])
def test_interrupted_embedding_resumes_identically(fm, tmp_path, crop):
    data = ImgSet()
    model = TinyCNN(num_classes=3)
    full = CountingFM(fm)
    ref = results(make(model, data, full, tmp_path / "ref", crop=crop, chunk_size=4).run())

    flaky = CountingFM(fm, fail_after=max(full.calls // 2, 1))
    with pytest.raises(KeyboardInterrupt):
        make(model, data, flaky, tmp_path / "s", crop=crop, chunk_size=4).run()
    keys = Store(tmp_path / "s").keys()
    assert "embed/features.relu2" not in keys  # no final entry for the interrupted layer
    assert [k for k in keys if "/chunk" in k]  # but its finished chunks
    assert "collect/features.relu2" in keys  # and the collection were kept

    calls = count_forwards(model)
    resumed = CountingFM(fm)
    lens = make(model, data, resumed, tmp_path / "s", crop=crop, chunk_size=4).run()
    assert calls[0] == 0  # collection and boxes reused
    assert 0 < resumed.calls < full.calls  # finished chunks were not recomputed
    assert_same(results(lens), ref)
    assert not [k for k in Store(tmp_path / "s").keys() if "/chunk" in k]


def test_interrupted_crop_step_resumes_identically(fm, tmp_path):
    """An exception in the middle of the crop step (3rd chunk of boxes) keeps the finished
    chunks; the rerun computes only the rest and ends identical to an uninterrupted run."""
    data = ImgSet()
    model = TinyCNN(num_classes=3)
    ref = results(make(model, data, fm, tmp_path / "ref", crop="crp", chunk_size=4).run())

    lens = make(model, data, fm, tmp_path / "s", crop="crp", chunk_size=4)
    real = lens.pipeline._compute_boxes
    seen = []

    def failing(layer, idx, comps):
        if len(seen) == 3:
            raise RuntimeError("injected failure")
        seen.append(layer)
        return real(layer, idx, comps)

    lens.pipeline._compute_boxes = failing
    with pytest.raises(RuntimeError, match="injected"):
        lens.run()
    keys = Store(tmp_path / "s").keys("boxes/")
    assert "boxes/features.relu1" in keys and "boxes/features.relu2/chunk0-4" in keys
    assert "boxes/features.relu2" not in keys

    lens = make(model, data, fm, tmp_path / "s", crop="crp", chunk_size=4)
    real2, redone = lens.pipeline._compute_boxes, []
    lens.pipeline._compute_boxes = lambda layer, idx, comps: redone.append(int(comps[0])) or real2(layer, idx, comps)
    lens.run()
    assert redone == [4, 8, 12]  # relu2 chunks after the finished one
    assert_same(results(lens), ref)


# ------------------------------------------------------------------------------ errors


def test_store_of_a_different_model_is_a_clear_error(fm, tmp_path):
    data = ImgSet()
    make(TinyCNN(num_classes=3), data, fm, tmp_path / "s").run()
    with pytest.raises(StoreError, match=r"holds results of a different model \(.*TinyCNN.*ReuseNet|different model"):
        make(ReuseNet(), data, fm, tmp_path / "s", layers=["stem"])
    # explicit overwrite wipes it
    lens = make(ReuseNet(), data, fm, tmp_path / "s", layers=["stem"], overwrite=True).run()
    assert Store(tmp_path / "s").keys("collect/") == ["collect/stem"]
    assert lens.num_components("stem") == 6


def test_clear_errors(fm):
    model, data = TinyCNN(num_classes=3), ImgSet(n=6)
    with pytest.raises(ValueError, match=r"unknown layer 'features.relu9': TinyCNN has no module 'features.relu9'\. Close matches: \[.*'features.relu1'"):
        make(model, data, fm, None, layers=["features.relu9"])
    for bad_m in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"m must be an int >= 1.*got {bad_m!r}"):
            make(model, data, fm, None, m=bad_m)
    with pytest.raises(ValueError, match="dataset is empty"):
        make(model, [], fm, None)
    with pytest.raises(TypeError, match="dataset item 0 has no image tensor"):
        make(model, [("not an image", 1)], fm, None)
    with pytest.raises(TypeError, match="dataset item 0"):
        make(model, [{"caption": "x"}], fm, None)
    with pytest.raises(ValueError, match=r"shape \(16, 16\) \(rank 2\); expected rank 3"):
        make(model, [torch.rand(16, 16)], fm, None)
    with pytest.raises(ValueError, match="rank 4"):
        make(model, [torch.rand(1, 3, 16, 16)], fm, None)
    with pytest.raises(ValueError, match=r"unknown crop mode 'box'; accepted: \['crp', 'activation', 'full'\]"):
        make(model, data, fm, None, crop="box")
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        make(model, data, fm, None, pooling="median")
    with pytest.raises(TypeError, match="not a DataLoader"):
        make(model, DataLoader(data, batch_size=2), fm, None)
    with pytest.raises(TypeError, match="FoundationModel"):
        make(model, data, object(), None)
    with pytest.raises(ValueError, match="duplicates"):
        make(model, data, fm, None, layers=["fc", "fc"])
    with pytest.raises(ValueError, match="display_transform must map"):
        make(model, data, fm, None, display_transform=lambda x: x[:, :, :8])
    with pytest.raises(TypeError, match="store must be"):
        make(model, data, fm, 3.5)


def test_accessor_errors(fm):
    lens = make(TinyCNN(num_classes=3), ImgSet(n=6), fm, None)
    for call in (lambda: lens.embeddings("features.relu1"), lambda: lens.examples("features.relu1", 0),
                 lambda: lens.num_components("features.relu1"), lambda: lens.sample_labels):
        with pytest.raises(RuntimeError, match=r"call lens.run\(\) first"):
            call()
    lens.run()
    with pytest.raises(ValueError, match=r"unknown layer 'fc'; this Lens has layers \['features.relu1', 'features.relu2'\]"):
        lens.embeddings("fc")
    with pytest.raises(IndexError, match=r"component 8 out of range for layer 'features.relu1': it has 8 components \(0..7\)"):
        lens.examples("features.relu1", 8)
    with pytest.raises(IndexError, match="component -1 out of range"):
        lens.crops("features.relu1", -1)
    with pytest.raises(TypeError, match="component index must be an int"):
        lens.examples("features.relu1", 1.0)
    with pytest.raises(IndexError, match=r"sample index 6 out of range: the dataset has 6 samples"):
        lens.images([0, 6])
    with pytest.raises(IndexError, match="sample index -1"):
        lens.images([-1])
    assert lens.examples("features.relu1", torch.tensor(2)).component == 2


def test_display_transform_and_normalised_data_warning(fm):
    x = torch.rand(6, 3, 16, 16)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    normed = [((x[i] - mean) / std, 0) for i in range(6)]
    with pytest.warns(UserWarning, match="imagenet_unnormalize"):
        make(TinyCNN(num_classes=3), normed, fm, None)
    lens = make(TinyCNN(num_classes=3), normed, fm, None, display_transform=imagenet_unnormalize)
    torch.testing.assert_close(lens.images([2])[0], x[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(lens.model_inputs([2])[0], normed[2][0])


def test_results_on_cpu_whatever_the_device(fm):
    lens = make(TinyCNN(num_classes=3), ImgSet(n=6), fm, None, device="cpu").run()
    assert lens.device == torch.device("cpu")
    assert lens.embeddings("features.relu1").device.type == "cpu"
    assert lens.boxes("features.relu1").device.type == "cpu"


# ------------------------------------------------------------------------------ structure


def test_lens_and_the_test_double_implement_lenslike(fm):
    """The widgets and the report depend on LensLike only: the real Lens and the one test double
    (tests/_fake_lens.py) both implement every member, with the protocol's parameters."""
    import inspect

    from _fake_lens import FakeLens

    from semlens_widgets.protocols import LensLike

    lens = make(TinyCNN(num_classes=3), ImgSet(n=6), fm, None).run()
    fake = FakeLens()
    members = [n for n in dir(LensLike) if not n.startswith("_")] + list(LensLike.__annotations__)
    assert {"crops", "search", "audit", "measures_summary", "layers", "n_samples"} <= set(members)
    for obj in (lens, fake):
        assert isinstance(obj, LensLike)
        for name in members:
            assert hasattr(obj, name), (type(obj).__name__, name)
            proto = getattr(LensLike, name, None)
            if callable(proto):
                want = [p for p in inspect.signature(proto).parameters if p != "self"]
                have = list(inspect.signature(getattr(obj, name)).parameters)
                assert have[: len(want)] == want, (type(obj).__name__, name, have, want)


def test_lens_modules_do_no_maths():
    """The Lens and its parts check, cache and build tables; the maths lives in the kernels: no
    matrix product and no norm in semlens_widgets/lens*.py."""
    import ast
    from pathlib import Path

    import semlens_widgets

    files = sorted(Path(semlens_widgets.__file__).parent.glob("lens*.py"))
    assert len(files) >= 5
    for f in files:
        tree = ast.parse(f.read_text())
        products = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.BinOp, ast.AugAssign))
                    and isinstance(n.op, ast.MatMult)]
        norms = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "norm"]
        assert not products and not norms, (f.name, products, norms)


def test_parts_are_owned_and_share_one_layer_set(fm):
    lens = make(TinyCNN(num_classes=3), ImgSet(n=6), fm, None)
    assert lens.semantics.layers is lens.pipeline.layers is lens.attribution.layers
    assert lens.semantics.attribution is lens.attribution
    assert lens.semantics.source is lens.pipeline and lens.attribution.source is lens.pipeline
    assert lens.semantics.keys.lens == lens.fingerprint == lens.pipeline.keys.lens
    assert "_semantics_state" not in vars(lens)
    with pytest.raises(ValueError, match=r"unknown layer 'fc'; this Lens has layers"):
        lens.semantics.layers.check("fc")


def test_relevance_entries_depend_on_the_lrp_setup():
    """Relevances and graphs are stored under the LRP set-up that made them; the semantic
    entries (measures, maps) do not depend on it."""
    from semlens_widgets.lens_keys import AnalysisKeys

    a, b = AnalysisKeys("lens-fp", "epsilon_plus_flat"), AnalysisKeys("lens-fp", "user:EpsilonAlpha2Beta1")
    assert a.relevance("l", 0, "label", 8) != b.relevance("l", 0, "label", 8)
    assert a.class_relevance("l", "label", 8) != b.class_relevance("l", "label", 8)
    assert a.attribution_graph(0, ("l",)) != b.attribution_graph(0, ("l",))
    assert a.relevance("l", 0, "label", 8).key == b.relevance("l", 0, "label", 8).key  # same slot, replaced
    assert a.measures("l", 0) == b.measures("l", 0) and a.map(["l"], 0, 15, 0.1) == b.map(["l"], 0, 15, 0.1)
