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
