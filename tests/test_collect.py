"""Streaming top-m collection (concept examples, the selection): exactness, indices, errors."""
from __future__ import annotations

import re

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from semlens_widgets.kernels.collect import CollectResult, collect_topm, merge_topm
from semlens_widgets.kernels.hooks import parse_layer, pool_activations
from semlens_widgets.results import TopM

from _models import ReuseNet, TensorDataset3, TinyCNN, TokenNet, TupleNet

torch.set_num_threads(1)


def _brute_outputs(model, x, module_name, call=0, element=None):
    """All outputs of one module call over the whole batch x (no streaming)."""
    outs = []

    def hook(mod, inp, out):
        if isinstance(out, tuple):
            out = out[0 if element is None else element]
        outs.append(out.detach())

    h = model.get_submodule(module_name).register_forward_hook(hook)
    with torch.no_grad():
        logits = model(x)
    h.remove()
    return outs[call], logits


def _brute_topm(pooled: torch.Tensor, m: int):
    """pooled [N, C] -> (values [C, min(m, N)], indices [C, min(m, N)], pooled)."""
    v, i = pooled.t().topk(min(m, pooled.shape[0]), dim=1)
    return v, i, pooled


def _assert_topm_equal(topm: TopM, values, indices, pooled=None):
    """Values equal the brute-force top-m; indices equal it too, or, where the data has ties
    (pooled given), point at samples whose pooled value is the listed value (no duplicates)."""
    assert topm.values.dtype == torch.float32
    assert topm.indices.dtype == torch.long
    assert topm.values.device.type == "cpu"
    torch.testing.assert_close(topm.values, values)
    if pooled is None:
        assert torch.equal(topm.indices, indices)
    else:
        looked_up = torch.gather(pooled.t(), 1, topm.indices)  # [C, m]
        torch.testing.assert_close(looked_up, topm.values)
        srt = topm.indices.sort(dim=1).values
        assert not bool((srt[:, 1:] == srt[:, :-1]).any())
    # sorted descending
    assert bool((topm.values[:, 1:] <= topm.values[:, :-1]).all())


@pytest.fixture(scope="module")
def cnn_data():
    ds = TensorDataset3(37, size=12, num_classes=5)
    model = TinyCNN(num_classes=5)
    return model, ds


@pytest.mark.parametrize("batch_size", [1, 5, 16, 64])
def test_streaming_equals_bruteforce(cnn_data, batch_size):
    model, ds = cnn_data
    m = 7
    res = collect_topm(model, ds, ["features.relu1", "features.conv2", "fc"], m, batch_size=batch_size, progress=False)
    assert isinstance(res, CollectResult)
    assert res.n_samples == len(ds)
    for name in ["features.relu1", "features.conv2"]:
        out, _ = _brute_outputs(model, ds.x, name)
        v, i, _ = _brute_topm(out.amax(dim=(2, 3)), m)
        _assert_topm_equal(res.topm[name], v, i)
        assert res.topm[name].complete and res.topm[name].n_seen == len(ds)
    out, logits = _brute_outputs(model, ds.x, "fc")
    v, i, _ = _brute_topm(out, m)
    _assert_topm_equal(res.topm["fc"], v, i)
    assert res.shapes == {"features.relu1": (8, 12, 12), "features.conv2": (16, 12, 12), "fc": (5,)}
    assert torch.equal(res.labels, ds.y)
    assert torch.equal(res.predictions, logits.argmax(1))
    assert res.num_classes == 5  # from the [B, K] logits the pass already sees


def test_num_classes_none_without_logits():
    """A model whose output is not [B, K] logits gives neither predictions nor num_classes."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())  # output [B, 4, 6, 6]
    x = torch.randn(6, 3, 8, 8)
    res = collect_topm(model, x, ["1"], 2, batch_size=4, progress=False)
    assert res.predictions is None and res.num_classes is None


def test_negative_layer_and_mean_pooling(cnn_data):
    """Pre-ReLU conv outputs are mostly negative for some channels: no clamping."""
    model, ds = cnn_data
    res = collect_topm(model, ds, ["features.conv1"], 4, pooling="mean", batch_size=8, progress=False)
    out, _ = _brute_outputs(model, ds.x, "features.conv1")
    pooled = out.mean(dim=(2, 3))
    assert (pooled < 0).any()
    v, i, _ = _brute_topm(pooled, 4)
    _assert_topm_equal(res.topm["features.conv1"], v, i)


def test_shuffled_sampler_and_workers(cnn_data):
    model, ds = cnn_data
    m = 5
    out, _ = _brute_outputs(model, ds.x, "features.relu2")
    v, i, _ = _brute_topm(out.amax(dim=(2, 3)), m)
    g = torch.Generator().manual_seed(3)
    loader = DataLoader(ds, batch_size=6, sampler=RandomSampler(ds, generator=g))
    res = collect_topm(model, loader, ["features.relu2"], m, progress=False)
    _assert_topm_equal(res.topm["features.relu2"], v, i)
    assert torch.equal(res.labels, ds.y)  # labels placed by global index despite shuffling
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)
    res = collect_topm(model, loader, ["features.relu2"], m, progress=False)
    _assert_topm_equal(res.topm["features.relu2"], v, i)
    assert torch.equal(res.labels, ds.y)
    res = collect_topm(model, ds, ["features.relu2"], m, batch_size=8, num_workers=2, progress=False)
    _assert_topm_equal(res.topm["features.relu2"], v, i)


@pytest.mark.parametrize("mode", ["tensor", "tuple", "dict"])
def test_dataset_item_kinds(mode):
    ds = TensorDataset3(9, size=8, mode=mode)
    model = TinyCNN()
    res = collect_topm(model, ds, ["features.relu1"], 3, batch_size=4, progress=False)
    out, _ = _brute_outputs(model, ds.x, "features.relu1")
    v, i, _ = _brute_topm(out.amax(dim=(2, 3)), 3)
    _assert_topm_equal(res.topm["features.relu1"], v, i)
    if mode == "tensor":
        assert res.labels is None
    else:
        assert torch.equal(res.labels, ds.y)


def test_fewer_samples_than_m():
    ds = TensorDataset3(4, size=8)
    res = collect_topm(TinyCNN(), ds, ["features.relu1"], 10, batch_size=3, progress=False)
    t = res.topm["features.relu1"]
    assert t.m == 10 and t.m_eff == 4 and not t.complete
    # every component lists each of the 4 samples exactly once: no fake indices
    assert torch.equal(t.indices.sort(dim=1).values, torch.arange(4).expand(t.num_components, 4))


def test_reused_module_refused_and_call_syntax():
    model = ReuseNet()
    ds = TensorDataset3(11, size=8, num_classes=4)
    with pytest.raises(ValueError, match=r"called 2 times.*'block1\.relu@0', 'block1\.relu@1'"):
        collect_topm(model, ds, ["block1.relu"], 3, progress=False)
    res = collect_topm(model, ds, ["block1.relu@0", "block1.relu@1", "block2.conv2"], 3, batch_size=4, progress=False)
    for call in (0, 1):
        out, _ = _brute_outputs(model, ds.x, "block1.relu", call=call)
        v, i, _ = _brute_topm(out.amax(dim=(2, 3)), 3)
        _assert_topm_equal(res.topm[f"block1.relu@{call}"], v, i)
    # the two calls really differ (the test would be vacuous otherwise)
    assert not torch.equal(res.topm["block1.relu@0"].values, res.topm["block1.relu@1"].values)
    with pytest.raises(ValueError, match=r"called only 2 time.*@0 \.\. @1"):
        collect_topm(model, ds, ["block1.relu@2"], 3, progress=False)


def test_tuple_output():
    model = TupleNet()
    ds = TensorDataset3(10, size=8, num_classes=3)
    res = collect_topm(model, ds, ["block", "block[1]"], 4, batch_size=3, progress=False)
    for element in (0, 1):
        out, _ = _brute_outputs(model, ds.x, "block", element=element)
        v, i, _ = _brute_topm(out.amax(dim=(2, 3)), 4)
        _assert_topm_equal(res.topm["block" if element == 0 else "block[1]"], v, i)
    assert res.shapes["block"] == (5, 8, 8) and res.shapes["block[1]"] == (2, 8, 8)
    with pytest.raises(ValueError, match="element 2 does not exist"):
        collect_topm(model, ds, ["block[2]"], 4, progress=False)


@pytest.mark.parametrize("pooling", ["max", "mean", "absmax", "absmean", "cls"])
def test_token_maps(pooling):
    model = TokenNet()
    ds = TensorDataset3(13, size=8, num_classes=3)
    res = collect_topm(model, ds, ["mlp"], 5, pooling=pooling, batch_size=4, progress=False)
    out, _ = _brute_outputs(model, ds.x, "mlp")  # [N, 5, 8] tokens
    ref = {
        "max": out.amax(1),
        "mean": out.mean(1),
        "absmax": out.abs().amax(1),
        "absmean": out.abs().mean(1),
        "cls": out[:, 0],
    }[pooling]
    v, i, pooled = _brute_topm(ref, 5)  # the CLS token is the same for all samples: ties
    _assert_topm_equal(res.topm["mlp"], v, i, pooled)
    assert res.topm["mlp"].num_components == 8  # components are the D features
    assert res.shapes["mlp"] == (5, 8)


def test_pool_activations_shapes_and_errors():
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(pool_activations(x, "absmax"), x.abs().flatten(2).amax(2))
    lin = torch.randn(4, 6)
    assert torch.equal(pool_activations(lin, "max"), lin)
    assert torch.equal(pool_activations(lin, "absmean"), lin.abs())
    assert pool_activations(x.half(), "mean").dtype == torch.float32
    with pytest.raises(ValueError, match=r"pooling='cls' needs a token map"):
        pool_activations(x, "cls")
    with pytest.raises(ValueError, match=r"unknown pooling 'median'.*'absmax'"):
        pool_activations(x, "median")


def test_merge_topm_equals_whole(cnn_data):
    model, ds = cnn_data
    m = 6
    whole = collect_topm(model, ds, ["features.relu2"], m, progress=False).topm["features.relu2"]
    # a shard is a sampler over the full dataset so that indices stay global
    shard_a = DataLoader(ds, batch_size=7, sampler=list(range(0, 20)))
    shard_b = DataLoader(ds, batch_size=7, sampler=list(range(20, len(ds))))
    with pytest.warns(UserWarning, match="visited 20 of 37"):
        a = collect_topm(model, shard_a, ["features.relu2"], m, progress=False)
    with pytest.warns(UserWarning):
        b = collect_topm(model, shard_b, ["features.relu2"], m, progress=False)
    assert a.labels is None  # labels are per dataset index: not returned for a partial pass
    merged = merge_topm(a.topm["features.relu2"], b.topm["features.relu2"])
    _assert_topm_equal(merged, whole.values, whole.indices)
    assert merged.n_seen == len(ds)
    with pytest.raises(ValueError, match="shards overlap"):
        merge_topm(a.topm["features.relu2"], a.topm["features.relu2"])
    with pytest.raises(ValueError, match="different m"):
        merge_topm(a.topm["features.relu2"], TopM(whole.indices, whole.values, m=m + 1, n_seen=1))


def test_parse_layer():
    s = parse_layer("layer1.0.relu[1]@2")
    assert (s.module, s.element, s.call) == ("layer1.0.relu", 1, 2)
    with pytest.raises(ValueError, match="cannot parse layer name 'a@b'"):
        parse_layer("a@b")


# ----------------------------------------------------------------------------- errors


def test_error_unknown_layer(cnn_data):
    model, ds = cnn_data
    with pytest.raises(ValueError, match=r"unknown layer 'features.relu3'.*Close matches: \['features.relu2', 'features.relu1'.*10 named modules"):
        collect_topm(model, ds, ["features.relu3"], 3, progress=False)


@pytest.mark.parametrize("m", [0, -2, 2.5, True])
def test_error_bad_m(cnn_data, m):
    model, ds = cnn_data
    with pytest.raises(ValueError, match=rf"m must be an int >= 1.*got {m!r}"):
        collect_topm(model, ds, ["fc"], m, progress=False)


def test_error_empty_dataset():
    with pytest.raises(ValueError, match="dataset is empty"):
        collect_topm(TinyCNN(), TensorDataset3(0), ["fc"], 3, progress=False)


class _Items(torch.utils.data.Dataset):
    def __init__(self, item):
        self.item = item

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return self.item


@pytest.mark.parametrize(
    "item, match",
    [
        ("a string", r"dataset item 0 has no image tensor: got str"),
        ({"img": torch.zeros(3, 8, 8)}, r"keys \['img'\] but none of the image keys"),
        ((torch.zeros(3, 8, 8).numpy(), 1), r"its image is a ndarray"),
    ],
)
def test_error_item_without_image(item, match):
    with pytest.raises(TypeError, match=match):
        collect_topm(TinyCNN(), _Items(item), ["fc"], 3, progress=False)


@pytest.mark.parametrize("shape", [(8, 8), (1, 3, 8, 8)])
def test_error_wrong_rank(shape):
    with pytest.raises(ValueError, match=rf"shape {re.escape(str(tuple(shape)))} \(rank {len(shape)}\); expected rank 3"):
        collect_topm(TinyCNN(), _Items(torch.zeros(shape)), ["fc"], 3, progress=False)


def test_error_bad_pooling_and_layers(cnn_data):
    model, ds = cnn_data
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        collect_topm(model, ds, ["fc"], 3, pooling="sum", progress=False)
    with pytest.raises(ValueError, match="non-empty list"):
        collect_topm(model, ds, [], 3, progress=False)
    with pytest.raises(ValueError, match=r"pooling='cls' needs a token map"):
        collect_topm(model, ds, ["features.relu1"], 3, pooling="cls", progress=False)


def test_error_duplicate_visits(cnn_data):
    model, ds = cnn_data
    loader = DataLoader(ds, batch_size=4, sampler=[0, 1, 2, 1])
    with pytest.raises(ValueError, match="sample 1 was visited 2 times"):
        collect_topm(model, loader, ["fc"], 2, progress=False)


def test_model_mode_restored(cnn_data):
    model, ds = cnn_data
    model.train()
    try:
        collect_topm(model, ds, ["fc"], 2, progress=False)
        assert model.training
    finally:
        model.eval()


def test_custom_collate_turns_items_into_tensors():
    """A DataLoader whose collate_fn builds the tensors (items are numpy arrays) is accepted;
    a collate_fn that yields the wrong rank is refused with the batch's shape."""
    ds = TensorDataset3(9, size=8)
    items = [(ds.x[i].numpy(), int(ds.y[i])) for i in range(len(ds))]

    def collate(batch):
        return torch.stack([torch.from_numpy(a) for a, _ in batch]), torch.tensor([y for _, y in batch])

    model = TinyCNN()
    res = collect_topm(model, DataLoader(items, batch_size=4, collate_fn=collate), ["features.relu1"], 3, progress=False)
    out, _ = _brute_outputs(model, ds.x, "features.relu1")
    v, i, _ = _brute_topm(out.amax(dim=(2, 3)), 3)
    _assert_topm_equal(res.topm["features.relu1"], v, i)
    assert torch.equal(res.labels, ds.y)

    def flat_collate(batch):
        return collate(batch)[0].flatten(1)

    with pytest.raises(ValueError, match=r"batch 0 has images of shape \(4, 192\); expected \[B, C, H, W\]"):
        collect_topm(model, DataLoader(items, batch_size=4, collate_fn=flat_collate), ["fc"], 3, progress=False)


# ----------------------------------------------------------------------------- checkpoints and resume
LAYERS_CK = ["features.relu1", "features.conv2", "fc"]


class _Stop(Exception):
    pass


def _same_result(a: CollectResult, b: CollectResult):
    assert a.topm.keys() == b.topm.keys()
    for name in a.topm:
        assert torch.equal(a.topm[name].indices, b.topm[name].indices), name
        assert torch.equal(a.topm[name].values, b.topm[name].values), name
        assert a.topm[name].n_seen == b.topm[name].n_seen
    assert torch.equal(a.labels, b.labels) and torch.equal(a.predictions, b.predictions)
    assert a.n_samples == b.n_samples and a.shapes == b.shapes and a.num_classes == b.num_classes


@pytest.mark.parametrize("every, stop_at", [(1, 1), (2, 2), (3, 1)])
def test_checkpoint_then_resume_is_bit_identical(cnn_data, every, stop_at):
    """A pass checkpointed every `every` batches and stopped right after checkpoint `stop_at`
    resumes from that state (a sampler over the unvisited samples, global indices kept) and
    ends with exactly the uninterrupted result."""
    from semlens_widgets.kernels.collect import RunningTopM

    model, ds = cnn_data  # 37 samples, batch 5: 8 batches
    whole = collect_topm(model, ds, LAYERS_CK, 4, batch_size=5, progress=False)
    saved = []

    def checkpoint(state):
        tensors, meta = state.state_dict()
        assert all(t.device.type == "cpu" for t in tensors.values())
        saved.append((tensors, meta))
        if len(saved) == stop_at:
            raise _Stop

    with pytest.raises(_Stop):
        collect_topm(model, ds, LAYERS_CK, 4, batch_size=5, progress=False, checkpoint=checkpoint,
                     checkpoint_every=every)
    tensors, meta = saved[-1]
    assert meta["n_seen"] == 5 * every * stop_at
    state = RunningTopM.from_state(tensors, meta, torch.device("cpu"))
    visited = []
    resumed = collect_topm(model, _Recording(ds, visited), LAYERS_CK, 4, batch_size=5, progress=False, state=state)
    # only the unvisited samples (item 0 is read once more, by the up-front check of the items)
    assert visited.count(0) == 1 and sorted(set(visited) - {0}) == list(range(5 * every * stop_at, 37))
    _same_result(resumed, whole)


class _Recording(torch.utils.data.Dataset):
    def __init__(self, ds, visited):
        self.ds, self.visited = ds, visited

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.visited.append(i)
        return self.ds[i]


def test_checkpoint_schedule(cnn_data, monkeypatch):
    """Every N batches, never after the last batch (the final result follows); None: by time,
    after the first batch that ends >= checkpoint_seconds after the last checkpoint."""
    import semlens_widgets.kernels.collect as collect

    model, ds = cnn_data  # 8 batches of 5
    seen = []
    collect_topm(model, ds, ["fc"], 3, batch_size=5, progress=False, checkpoint=lambda s: seen.append(s.n_seen),
                 checkpoint_every=3)
    assert seen == [15, 30]
    clock = iter(range(0, 1000, 25))  # each call of the clock advances 25 s
    monkeypatch.setattr(collect, "_clock", lambda: float(next(clock)))
    seen.clear()
    collect_topm(model, ds, ["fc"], 3, batch_size=5, progress=False, checkpoint=lambda s: seen.append(s.n_seen),
                 checkpoint_every=None, checkpoint_seconds=60.0)
    # start 0; batch ends at 25, 50, 75 (>= 60: checkpoint, restart at 75+...), ...
    assert seen and all(b - a >= 10 for a, b in zip(seen, seen[1:])) and seen[-1] < 37
    with pytest.raises(ValueError, match=r"checkpoint_every must be None or an int >= 1 \(batches\), got 0"):
        collect_topm(model, ds, ["fc"], 3, progress=False, checkpoint=print, checkpoint_every=0)


def test_resume_state_must_match_the_pass(cnn_data):
    from semlens_widgets.kernels.collect import RunningTopM

    model, ds = cnn_data
    state = RunningTopM(["fc"], 3, len(ds), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"resume state.*layers \['fc'\].*m=3.*37 samples.*this pass"):
        collect_topm(model, ds, ["features.relu1"], 3, progress=False, state=state)
    with pytest.raises(ValueError, match=r"resume state.*m=3"):
        collect_topm(model, ds, ["fc"], 4, progress=False, state=state)


# ----------------------------------------------------------------------------- inputs checked per batch
class _Patched(torch.utils.data.Dataset):
    """TensorDataset3 items with some items replaced."""

    def __init__(self, n=20, size=8, patch=None):
        self.ds, self.patch = TensorDataset3(n, size=size), patch or {}

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return self.patch[i](x) if i in self.patch else x, y


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_pixels_are_named_by_dataset_index(value):
    def poison(x):
        x = x.clone()
        x[1, 2, 3] = value
        return x

    ds = _Patched(patch={13: poison, 17: poison})
    with pytest.raises(ValueError, match=r"dataset items \[13, 17\] have non-finite pixel values.*accepted: finite"):
        collect_topm(TinyCNN(), ds, ["fc"], 3, batch_size=10, progress=False)


def test_non_finite_activations_are_refused():
    """Finite inputs, a model that makes NaN: the top-m would hold NaN values (topk ranks NaN
    first); refused naming the layer and the samples."""

    class Log(torch.nn.Module):
        def forward(self, x):
            return torch.log(x)  # NaN where x < 0

    class NanNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.conv.weight.fill_(1.0)
                self.conv.bias.fill_(10.0)
            self.log = Log()

        def forward(self, x):
            return self.log(self.conv(x))

    ds = TensorDataset3(10, size=4)
    ds.x[4, :, 0, 0] = -20.0
    assert collect_topm(NanNet(), ds, ["conv"], 3, batch_size=4, progress=False).topm["conv"].values.isfinite().all()
    with pytest.raises(ValueError, match=r"layer 'log' has non-finite activations.*dataset items \[4\]"):
        collect_topm(NanNet(), ds, ["log"], 3, batch_size=4, progress=False)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_cast_like_model_inputs(cnn_data, dtype):
    model, ds = cnn_data
    cast = _Patched(n=37, size=12, patch={i: (lambda x, d=dtype: x.to(d)) for i in range(37)})
    cast.ds = ds
    expected = collect_topm(model, [(x.to(dtype).float(), y) for x, y in (ds[i] for i in range(37))], ["fc"], 3,
                            progress=False)
    got = collect_topm(model, cast, ["fc"], 3, progress=False)
    assert torch.equal(got.topm["fc"].values, expected.topm["fc"].values)


def test_integer_images_are_refused():
    ds = _Patched(patch={i: (lambda x: (x.clamp(0, 1) * 255).to(torch.uint8)) for i in range(20)})
    with pytest.raises(TypeError, match=r"dataset items \[0, 1, .*torch.uint8.*floating-point.*ToTensor"):
        collect_topm(TinyCNN(), ds, ["fc"], 3, batch_size=8, progress=False)


def test_mixed_image_sizes_are_named():
    """Sizes differing inside a batch (the collate) or between batches."""
    ds = _Patched(patch={5: lambda x: torch.zeros(3, 10, 10)})
    with pytest.raises(ValueError, match=r"dataset item 5 has an image of shape \(3, 10, 10\) but item 0 has "
                                         r"\(3, 8, 8\).*one size"):
        collect_topm(TinyCNN(), ds, ["fc"], 3, batch_size=8, progress=False)
    ds = _Patched(patch={i: (lambda x: torch.zeros(3, 10, 10)) for i in range(8, 20)})
    with pytest.raises(ValueError, match=r"dataset items \[8, .*shape \(3, 10, 10\).*\(3, 8, 8\).*one size"):
        collect_topm(TinyCNN(), ds, ["fc"], 3, batch_size=8, progress=False)


def test_labels_outside_the_model_classes_are_refused_when_asked():
    ds = TensorDataset3(20, size=8, num_classes=5)
    ds.y[11] = 7
    ds.y[3] = -1
    res = collect_topm(TinyCNN(num_classes=5), ds, ["fc"], 3, progress=False)  # the kernel alone: recorded
    assert res.labels[11] == 7
    with pytest.raises(ValueError, match=r"dataset items \[3, 11\] have labels \[-1, 7\].*5 outputs.*\[0, 5\)"):
        collect_topm(TinyCNN(num_classes=5), ds, ["fc"], 3, progress=False, check_labels=True)


# ----------------------------------------------------------------------------- the Lens's collection pass
class _Interrupting(torch.utils.data.Dataset):
    """TensorDataset3 whose item ``stop_at`` raises KeyboardInterrupt (once armed)."""

    def __init__(self, n=40, stop_at=None):
        self.ds, self.stop_at = TensorDataset3(n, size=8, num_classes=5), stop_at

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if i == self.stop_at:
            raise KeyboardInterrupt
        return self.ds[i]


@pytest.fixture(scope="module")
def tiny_fm(tmp_path_factory):
    from _models import tiny_clip_fm

    return tiny_clip_fm(tmp_path_factory.mktemp("cfg"))


def _lens(data, fm, store, **kw):
    from semlens_widgets.lens import Lens

    return Lens(TinyCNN(num_classes=5), data, fm, ["features.relu1", "fc"], m=3, crop="full", store=store,
                progress=False, batch_size=8, **kw)


def test_lens_collection_resumes_from_its_checkpoint(tiny_fm, tmp_path):
    """Interrupted in batch 3 (items 24..31) with a checkpoint every batch: the rerun reads only
    items 24.. , says where it resumed, drops the checkpoint and stores exactly what an
    uninterrupted run stores."""
    from semlens_widgets.store import Store

    whole = _lens(_Interrupting(), tiny_fm, tmp_path / "whole").run()
    data = _Interrupting(stop_at=27)
    lens = _lens(data, tiny_fm, tmp_path / "cut", checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        lens.run()
    cut = Store(tmp_path / "cut")
    assert cut.keys() == ["collect_checkpoint"] and cut.meta("collect_checkpoint")["meta"]["n_seen"] == 24
    data.stop_at = None
    with pytest.warns(UserWarning, match=r"collection: resuming from checkpoint at 24 / 40 samples"):
        lens.run()
    assert "collect_checkpoint" not in cut.keys()
    assert cut.keys() == whole.store.keys()
    for key in cut.keys():
        a, b = cut.load(key, cut.meta(key)["fingerprint"]), whole.store.load(key, cut.meta(key)["fingerprint"])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), key


def test_lens_refuses_labels_outside_the_model_classes_at_run(tiny_fm, tmp_path):
    data = _Interrupting()
    data.ds.y[9] = 5
    lens = _lens(data, tiny_fm, tmp_path / "s")
    with pytest.raises(ValueError, match=r"dataset items \[9\] have labels \[5\].*5 outputs.*\[0, 5\)"):
        lens.run()
    assert lens.store.keys() == []


@pytest.mark.parametrize("every", [0, -1, 1.5, True, "10"])
def test_lens_checkpoint_every_is_checked(tiny_fm, every):
    with pytest.raises(ValueError, match=rf"checkpoint_every must be None .* or an int >= 1 .*got {re.escape(repr(every))}"):
        _lens(_Interrupting(), tiny_fm, None, checkpoint_every=every)


def test_deferred_checks_raise_at_verify_naming_the_items():
    """On an accelerator the per-batch checks are recorded on the device (no host sync) and
    raised by verify() -- before every checkpoint and in result(): nothing bad is handed out."""
    from semlens_widgets.kernels.collect import RunningTopM

    state = RunningTopM(["fc"], 2, 10, torch.device("cpu"))
    state.flag("non_finite", torch.tensor([4, 5, 6]), torch.tensor([False, True, False]), now=False)
    state.flag("non_finite", torch.tensor([7, 8]), torch.tensor([False, False]), now=False)
    with pytest.raises(ValueError, match=r"dataset items \[5\] have non-finite pixel values"):
        state.verify()
    state = RunningTopM(["fc"], 2, 10, torch.device("cpu"))
    state.num_classes = 3
    state.labels[torch.tensor([1, 9])] = torch.tensor([4, -2])
    state.flag("label", torch.tensor([0, 1, 9]), torch.tensor([False, True, True]), now=False)
    with pytest.raises(ValueError, match=r"dataset items \[1, 9\] have labels \[-2, 4\].*\[0, 3\)"):
        state.verify()
