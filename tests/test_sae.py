"""Sparse autoencoders: the module (encode / decode in every layout), safetensors round trip,
and the TopK / ReLU trainer on data with a known sparse dictionary."""
from __future__ import annotations

import json

import numpy as np

import pytest
import torch
from safetensors.torch import save_file

import semlens_widgets as slw
from semlens_widgets.sae import SAE


def random_sae(d=6, n=10, activation="relu", k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SAE(torch.randn(d, n, generator=g), torch.randn(n, generator=g) * 0.1, torch.randn(n, d, generator=g),
               torch.randn(d, generator=g), activation=activation, k=k)


def sparse_data(n=6000, d=16, atoms=24, k=2, seed=0):
    """x = sum of k random unit atoms with positive weights (a known sparse dictionary)."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(atoms, d, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(atoms, generator=g)[:k] for _ in range(n)])
    w = torch.rand(n, k, generator=g) + 0.5
    return (w[..., None] * D[idx]).sum(1) + 0.3, D


def test_export():
    assert slw.SAE is SAE


def test_encode_decode_formulas_and_layouts():
    sae = random_sae()
    x = torch.randn(5, 6)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    torch.testing.assert_close(sae.encode(x), torch.relu(pre))
    z = sae.encode(x)
    torch.testing.assert_close(sae.decode(z), z @ sae.W_dec + sae.b_dec)
    # conv maps: every spatial position is a vector
    maps = torch.randn(2, 6, 3, 4)
    out = sae(maps)
    assert out.shape == (2, 10, 3, 4)
    torch.testing.assert_close(out[1, :, 2, 3], sae.encode(maps[1, :, 2, 3][None])[0])
    assert sae.decode(out).shape == (2, 6, 3, 4)
    tokens = torch.randn(2, 7, 6)
    assert sae.encode(tokens).shape == (2, 7, 10)
    torch.testing.assert_close(sae.encode(tokens)[1, 3], sae.encode(tokens[1, 3][None])[0])
    with pytest.raises(ValueError, match=r"\[N, 6\], conv maps \[B, 6, H, W\]"):
        sae.encode(torch.randn(5, 7))


def test_topk_keeps_k_latents():
    sae = random_sae(activation="topk", k=3)
    x = torch.randn(50, 6)
    z = sae.encode(x)
    assert bool(((z > 0).sum(1) <= 3).all())
    pre = sae.pre_activations(x)
    top = pre.topk(3, dim=1)
    torch.testing.assert_close(z.gather(1, top.indices), torch.relu(top.values))


def test_constructor_validation():
    W = torch.randn(6, 10)
    assert torch.equal(SAE(W, torch.zeros(10)).W_dec.detach(), W.T)  # tied decoder
    with pytest.raises(ValueError, match="b_enc must be \\[n_latents=10\\]"):
        SAE(W, torch.zeros(6))
    with pytest.raises(ValueError, match="W_dec must be \\[n_latents=10, d=6\\]"):
        SAE(W, torch.zeros(10), W_dec=W)
    with pytest.raises(ValueError, match="b_dec must be \\[d=6\\]"):
        SAE(W, torch.zeros(10), b_dec=torch.zeros(10))
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        SAE(W, torch.zeros(10), activation="gelu")
    with pytest.raises(ValueError, match="needs an int k"):
        SAE(W, torch.zeros(10), activation="topk", k=11)
    with pytest.raises(ValueError, match="only meaningful"):
        SAE(W, torch.zeros(10), activation="relu", k=3)
    with pytest.raises(TypeError, match="floating-point"):
        SAE(torch.ones(6, 10, dtype=torch.long), torch.zeros(10))


def test_save_load_roundtrip(tmp_path):
    sae = random_sae(activation="topk", k=4)
    sae.fit_info = {"fvu": 0.1}
    path = sae.save(tmp_path / "sub" / "sae.safetensors")
    back = SAE.load(path)
    x = torch.randn(9, 6)
    torch.testing.assert_close(back.encode(x), sae.encode(x))
    assert back.activation == "topk" and back.k == 4 and back.fit_info == {"fvu": 0.1}
    assert not list((tmp_path / "sub").glob(".tmp-*"))  # nothing half-written left behind
    with pytest.raises(ValueError, match=".safetensors"):
        sae.save(tmp_path / "sae.pt")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an SAE"):
        SAE.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        SAE.load(tmp_path / "missing.safetensors")


def test_topk_fit_recovers_a_sparse_dictionary():
    x, D = sparse_data()
    sae = SAE.fit(x, 48, "topk", k=2, epochs=40, batch_size=512, lr=5e-3, seed=1, progress=False)
    info = sae.fit_info
    assert info["fvu"] < 0.15 and info["l0"] <= 2.0 and info["n_vectors"] == 6000
    torch.testing.assert_close(sae.W_dec.detach().norm(dim=1), torch.ones(48), atol=1e-4, rtol=0)
    # most true atoms have a decoder row pointing their way
    cos = (D @ sae.W_dec.detach().T).max(1).values
    assert float((cos > 0.9).float().mean()) >= 0.7
    assert sae.stats(x)["fvu"] == pytest.approx(info["fvu"])
    # seeded: same seed, same SAE; conv maps fit the same vectors as rows
    again = SAE.fit(x, 48, "topk", k=2, epochs=2, batch_size=512, seed=3, progress=False)
    maps = x.reshape(100, 60, 16).permute(0, 2, 1).reshape(100, 16, 6, 10)
    from_maps = SAE.fit(maps, 48, "topk", k=2, epochs=2, batch_size=512, seed=3, progress=False)
    torch.testing.assert_close(again.W_enc, from_maps.W_enc)


def test_relu_fit_trades_sparsity_for_reconstruction():
    x, _ = sparse_data(n=3000)
    loose = SAE.fit(x, 32, "relu", l1=0.01, epochs=10, batch_size=256, lr=5e-3, progress=False)
    tight = SAE.fit(x, 32, "relu", l1=1.0, epochs=10, batch_size=256, lr=5e-3, progress=False)
    assert loose.activation == "relu" and loose.k is None
    assert tight.fit_info["l0"] < loose.fit_info["l0"]
    assert loose.fit_info["fvu"] < 0.1


def test_fit_from_a_lens_and_layer():
    model = torch.nn.Sequential()
    model.add_module("conv", torch.nn.Conv2d(3, 8, 3, padding=1))
    model.add_module("relu", torch.nn.ReLU())

    class FakeLens:  # what SAE.fit reads of a Lens
        def __init__(self):
            self.model, self.dataset, self.batch_size = model, list(range(10)), 4
            self.images = torch.rand(10, 3, 5, 5, generator=torch.Generator().manual_seed(0))

        def model_inputs(self, idx):
            return self.images[idx]

    lens = FakeLens()
    sae = SAE.fit(lens, 16, "topk", k=2, layer="relu", epochs=1, progress=False)
    assert sae.fit_info["n_vectors"] == 10 * 25 and sae.d == 8
    with torch.no_grad():
        want = SAE.fit(model(lens.images), 16, "topk", k=2, epochs=1, progress=False)
    torch.testing.assert_close(sae.W_enc, want.W_enc)
    with pytest.raises(ValueError, match="layer must name a module"):
        SAE.fit(lens, 16, layer="nope", progress=False)


def test_fit_validation():
    x = torch.randn(20, 4)
    with pytest.raises(ValueError, match="n_latents"):
        SAE.fit(x, 0)
    with pytest.raises(ValueError, match="needs an int k"):
        SAE.fit(x, 4, "topk", k=5)
    with pytest.raises(ValueError, match="unknown activation"):
        SAE.fit(x, 4, "jumprelu")
    with pytest.raises(ValueError, match="got shape"):
        SAE.fit(torch.randn(2, 3, 4, 5, 6), 4, k=2)
    with pytest.raises(ValueError, match="NaN"):
        SAE.fit(torch.full((5, 4), float("nan")), 4, k=2)
    with pytest.raises(TypeError, match="Lens with"):
        SAE.fit([[1.0, 2.0]], 4, k=2)
    with pytest.raises(ValueError, match="layer is only used"):
        SAE.fit(x, 4, k=2, layer="block4")


# --------------------------------------------------------------------------- relevance rules


def test_latent_relevance_shares_the_layer_relevance_by_parts():
    """R_z[j] = sum_i z_j W_dec[j, i] / x_i * R_x[i]: summed over latents it is R_x minus the
    shares of b_dec and the error; with an exact, bias-free SAE it is all of R_x."""
    sae = random_sae(d=6, n=10)
    x = torch.rand(4, 6) + 0.1
    R = torch.randn(4, 6)
    got = sae.latent_relevance(x, R)
    with torch.no_grad():
        z = sae.encode(x)
        want = torch.zeros(4, 10)
        for b in range(4):
            for j in range(10):
                want[b, j] = sum(z[b, j] * sae.W_dec[j, i] / x[b, i] * R[b, i] for i in range(6))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # conv layout: per position, same numbers
    xm, Rm = x.T.reshape(1, 6, 2, 2), R.T.reshape(1, 6, 2, 2)
    torch.testing.assert_close(sae.latent_relevance(xm, Rm), want.T.reshape(1, 10, 2, 2), rtol=1e-4, atol=1e-5)
    # identity dictionary (z = x, x_hat = x): the latents carry exactly the layer's relevance
    eye = SAE(torch.eye(6), torch.zeros(6))
    torch.testing.assert_close(eye.latent_relevance(x, R), R)
    # zero activations pass nothing (no division by zero)
    x0 = x.clone()
    x0[:, 2] = 0
    assert torch.isfinite(sae.latent_relevance(x0, R)).all()


def test_input_relevance_is_the_conserving_epsilon_rule_of_the_encoder():
    sae = random_sae(d=6, n=10, activation="topk", k=3)
    x = torch.randn(5, 6)
    Rz = torch.relu(torch.randn(5, 10))
    got = sae.input_relevance(x, Rz)
    with torch.no_grad():
        c = x - sae.b_dec
        s = c @ sae.W_enc
        want = torch.stack([sum(c[:, i:i + 1] * sae.W_enc[i, j] / s[:, j:j + 1] * Rz[:, j:j + 1]
                                for j in range(10))[:, 0] for i in range(6)], 1)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(got.sum(1), Rz.sum(1), rtol=1e-3, atol=1e-4)  # conserved
    assert sae.input_relevance(x.T.reshape(1, 6, 5, 1), Rz.T.reshape(1, 10, 5, 1)).shape == (1, 6, 5, 1)


def test_identity_changes_with_any_weight():
    a = random_sae()
    b = random_sae()
    assert a.identity == b.identity
    with torch.no_grad():
        b.b_dec[0] += 1e-3
    assert a.identity["weights"] != b.identity["weights"]
    assert a.identity["n_latents"] == 10 and a.identity["activation"] == "relu"


# --------------------------------------------------------------------------- SAE layers of a Lens

from _models import TinyCNN, tiny_clip_fm  # noqa: E402

BASE = "features.relu2"  # TinyCNN: 16 channels
SAE_LAYER = BASE + ":sae"


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    return tiny_clip_fm(tmp_path_factory.mktemp("cfg"))


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g)
    return [(x[i], i % 3) for i in range(n)]


def _lens(fm, sae, store=None, **kw):
    from semlens_widgets.lens import Lens

    kw.setdefault("crop", "crp")
    return Lens(TinyCNN(num_classes=3), _data(), fm, [BASE, SAE_LAYER], m=4, saes={BASE: sae}, store=store,
                progress=False, batch_size=8, chunk_size=8, **kw)


def _boxes(heatmaps, crop_rule):
    from semlens_widgets.kernels.crops import boxes_from_heatmaps

    return boxes_from_heatmaps(heatmaps, crop_rule=crop_rule)


def _layer_sae(seed=1, n=24, k=4):
    g = torch.Generator().manual_seed(seed)
    return SAE(torch.randn(16, n, generator=g), torch.zeros(n), activation="topk", k=k)


def test_sae_layer_names_and_errors():
    from semlens_widgets.kernels.hooks import parse_layer, resolve_layers
    from semlens_widgets.lens_layers import LayerSet

    s = parse_layer("layer1.0.relu@1:sae")
    assert s.sae and s.module == "layer1.0.relu" and s.call == 1 and s.base == "layer1.0.relu@1"
    assert not parse_layer(BASE).sae and parse_layer(BASE).base == BASE
    model, sae = TinyCNN(), _layer_sae()
    with pytest.raises(ValueError, match=r"no SAE was given for 'features.relu2'.*saes=\{'features.relu2': sae\}"):
        resolve_layers(model, [SAE_LAYER])
    with pytest.raises(ValueError, match="saes has SAEs for \\['features.relu1'\\] but layers has no"):
        LayerSet(model, [BASE], {"features.relu1": sae})
    with pytest.raises(TypeError, match="must be a semlens_widgets.SAE"):
        LayerSet(model, [SAE_LAYER], {BASE: torch.nn.Linear(16, 4)})
    with pytest.raises(ValueError, match="unknown layer 'nope:sae'"):
        LayerSet(model, ["nope:sae"], {"nope": sae})
    layers = LayerSet(model, [BASE, SAE_LAYER], {BASE: sae})
    assert layers.is_sae(SAE_LAYER) and not layers.is_sae(BASE) and layers.base(SAE_LAYER) == BASE
    assert layers.crp_layers() == [BASE, SAE_LAYER] and layers.flow_layers() == [BASE]


def test_recorder_encodes_the_base_output():
    from semlens_widgets.kernels.collect import collect_topm
    from semlens_widgets.kernels.hooks import LayerCapture, pool_activations

    model, sae, data = TinyCNN(num_classes=3), _layer_sae(), _data()
    x = torch.stack([d[0] for d in data])
    with torch.no_grad(), LayerCapture(model, [BASE, SAE_LAYER], saes={BASE: sae}) as cap:
        model(x)
        cap.check()
    torch.testing.assert_close(cap.outputs[SAE_LAYER], sae.encode(cap.outputs[BASE]))
    assert cap.outputs[SAE_LAYER].shape == (24, 24, 16, 16)  # [B, n_latents, H, W]
    res = collect_topm(model, data, [SAE_LAYER], 5, saes={BASE: sae}, progress=False, batch_size=7)
    pooled = pool_activations(cap.outputs[SAE_LAYER], "max")  # [B, 24]
    top = pooled.T.topk(5, dim=1)
    torch.testing.assert_close(res.topm[SAE_LAYER].values, top.values)
    bad = SAE(torch.randn(7, 4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"the SAE on 'features.relu2' cannot encode its output of shape \(7, 16, 16, 16\)"):
        collect_topm(model, data[:7], [SAE_LAYER], 2, saes={BASE: bad}, progress=False)


def test_lens_analyses_an_sae_layer_like_any_layer(fm, tmp_path):
    sae = _layer_sae()
    lens = _lens(fm, sae, tmp_path / "s").run()
    assert lens.layers == [BASE, SAE_LAYER] and lens.saes == {BASE: sae}
    assert lens.num_components(SAE_LAYER) == 24 and lens.embeddings(SAE_LAYER).shape == (24, 16)
    assert lens.boxes(SAE_LAYER).shape == (24, 4, 4) and lens.crops(SAE_LAYER, 3).dtype == torch.uint8
    live = int(lens.topm(SAE_LAYER).values[:, 0].argmax())
    hm = lens.heatmaps(SAE_LAYER, live)  # CRP through the encoder: starts at the latent's peak
    assert hm.shape == (4, 16, 16) and torch.isfinite(hm).all() and hm.abs().sum() > 0
    assert torch.equal(lens.boxes(SAE_LAYER)[live], _boxes(hm, lens.crop_rule))
    hits = lens.search("red", k=5)
    assert set(hits.layer) <= {BASE, SAE_LAYER} and len(hits) == 5
    assert len(lens.label(["red", "dog"], SAE_LAYER).table) == 24
    assert set(lens.map(SAE_LAYER).columns) >= {"x", "y"} and len(lens.map([BASE, SAE_LAYER])) == 40
    summary = lens.measures_summary()
    assert list(summary.layer) == [BASE, SAE_LAYER] and summary.n_components.tolist() == [16, 24]
    assert lens.clarity(SAE_LAYER).shape == (24,)
    rel = lens.relevance(0, SAE_LAYER, normalize="none", per_sample=True)
    assert len(rel) == 24 * 8 and rel.relevance.abs().sum() > 0
    audit = lens.audit(["red"], ["dog"], SAE_LAYER, 0)
    assert len(audit.table) == 24 and audit.summary.n_components.sum() == 24
    assert lens.top_classes(SAE_LAYER, 2).shape[0] == 48
    with pytest.raises(ValueError, match="attribution graphs cannot include the SAE layer"):
        lens.attribution_graph(0, [BASE, SAE_LAYER])
    assert lens.graph_layers == [BASE]
    page = lens.report(tmp_path / "r.html", concepts=["red", "dog"], progress=False).read_text(encoding="utf-8")
    assert SAE_LAYER in page[page.rfind("<header>"):]  # the map (last layer) and the measures show the latents
    assert lens.attribution_graph(0, concepts=["red"]).layers == [BASE]  # default: the module layers


def test_sae_latent_relevance_is_the_share_of_the_base_relevance(fm):
    """The relevance of the latents for a class comes out of the base layer's CRP relevance
    map (kernels.relevance records the base and shares it with SAE.latent_relevance)."""
    from semlens_widgets.kernels.hooks import LayerCapture
    from semlens_widgets.kernels.relevance import component_relevance

    model, sae = TinyCNN(num_classes=3), _layer_sae()
    lens = _lens(fm, sae, crop="activation")
    x = torch.stack([d[0] for d in _data()])[:6]
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    got = component_relevance(model, x, targets, [BASE, SAE_LAYER], lens.composite, saes={BASE: sae})
    # the latents of an exact identity SAE carry exactly the base layer's relevance
    eye = SAE(torch.eye(16), torch.zeros(16))
    same = component_relevance(model, x, targets, [BASE, SAE_LAYER], lens.composite, saes={BASE: eye})
    torch.testing.assert_close(same[SAE_LAYER], same[BASE], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(same[BASE], got[BASE])
    assert got[SAE_LAYER].shape == (6, 24)
    with torch.no_grad(), LayerCapture(model, [BASE]) as cap:
        model(x)
    z = sae.encode(cap.outputs[BASE]).amax((2, 3))
    assert bool((got[SAE_LAYER][z == 0] == 0).all())  # silent latents get nothing


def test_fingerprints_follow_the_sae_weights(fm, tmp_path):
    from semlens_widgets.lens import Lens

    a, b = _layer_sae(seed=1), _layer_sae(seed=1)
    la, lb = _lens(fm, a, crop="activation"), _lens(fm, b, crop="activation")
    assert la.fingerprint == lb.fingerprint
    with torch.no_grad():
        b.W_enc[3, 1] += 0.5
    lb2 = _lens(fm, b, crop="activation")
    assert lb2.fingerprint != la.fingerprint
    ka, kb = la.pipeline.keys, lb2.pipeline.keys
    assert ka.collect(SAE_LAYER).fingerprint != kb.collect(SAE_LAYER).fingerprint
    assert ka.collect(BASE).fingerprint == kb.collect(BASE).fingerprint  # the module layer is the same
    plain = Lens(TinyCNN(num_classes=3), _data(), fm, [BASE], m=4, store=None, progress=False, crop="activation")
    assert plain.pipeline.keys.saes == {} and plain.fingerprint != la.fingerprint
    # a store: new SAE weights recompute the SAE layer only
    store = tmp_path / "fp"
    first = _lens(fm, a, store, crop="activation").run()
    v_first = first.topm(SAE_LAYER).values
    with torch.no_grad():
        b.W_enc.add_(0.5)
    again = _lens(fm, b, store, crop="activation")
    calls = []
    handle = b.register_forward_hook(lambda *_: calls.append(1))
    again.run()
    handle.remove()
    assert calls and not torch.equal(again.topm(SAE_LAYER).values, v_first)
    torch.testing.assert_close(again.topm(BASE).values, first.topm(BASE).values)


def test_fit_from_a_real_lens_equals_fit_from_its_activations(fm):
    from semlens_widgets.kernels.hooks import LayerCapture

    lens = _lens(fm, _layer_sae(), crop="activation")
    sae = SAE.fit(lens, 32, "topk", k=4, layer=BASE, epochs=1, progress=False)
    x = torch.stack([d[0] for d in _data()])
    with torch.no_grad(), LayerCapture(lens.model, [BASE]) as cap:
        lens.model(x)
    want = SAE.fit(cap.outputs[BASE], 32, "topk", k=4, epochs=1, progress=False)
    torch.testing.assert_close(sae.W_enc, want.W_enc)
    with pytest.raises(ValueError, match="layer must name a module"):
        SAE.fit(lens, 8, k=2, layer=SAE_LAYER, progress=False)


def test_faithfulness_of_sae_latents_equals_sklearn(fm):
    from sklearn.metrics import roc_auc_score

    from semlens_widgets.kernels.hooks import LayerCapture

    sae = _layer_sae()
    lens = _lens(fm, sae, crop="activation").run()

    def gen(concept, n, seed):  # a different texture per concept, 16 x 16 like the data
        g = torch.Generator().manual_seed(seed * 1000 + sum(map(ord, concept)))
        return torch.rand(n, 3, 16, 16, generator=g) ** (1 + len(concept) % 3)

    f = lens.faithfulness(SAE_LAYER, gen, labels={2: "stripes", 5: "dots", 9: "stripes"}, n_images=6, control=10)

    def latents(x):
        with torch.no_grad(), LayerCapture(lens.model, [SAE_LAYER], saes={BASE: sae}) as cap:
            lens.model(x)
        return cap.outputs[SAE_LAYER].amax((2, 3)).numpy()

    neg = latents(lens.model_inputs(lens.describer.control_samples(10)))
    for k, lab in ((2, "stripes"), (5, "dots"), (9, "stripes")):
        pos = latents(gen(lab, 6, 0))
        want = roc_auc_score(np.r_[np.ones(6), np.zeros(10)], np.r_[pos[:, k], neg[:, k]])
        assert f.auc[k] == pytest.approx(want)
    assert f.auc.notna().sum() == 3 and len(f) == 24
