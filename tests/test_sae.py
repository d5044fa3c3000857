"""Sparse autoencoders: the module (encode / decode in every layout), safetensors round trip,
and the TopK / ReLU trainer on data with a known sparse dictionary."""
from __future__ import annotations

import json

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
