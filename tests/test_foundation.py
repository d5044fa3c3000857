"""FoundationModel: open_clip adapter (random init, local weights file), tensor preprocessing,
text / concept / null embeddings, input validation."""
from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from semlens_widgets.foundation import DEFAULT_TEMPLATES, FoundationModel

torch.set_num_threads(1)

TINY = "semlens-test-tiny-clip"
TINY_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    """Register a tiny CLIP config at runtime (what the demo world does with its own config)."""
    path = tmp_path_factory.mktemp("cfg") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    return TINY


@pytest.fixture(scope="module")
def fm(tiny_name):
    torch.manual_seed(1)
    return FoundationModel.open_clip(tiny_name, pretrained=None, batch_size=4)


def test_random_init_dimensions_and_normalisation(fm):
    assert fm.dim == 24 and fm.image_size == 32 and fm.device == torch.device("cpu")
    img = fm.encode_images(torch.rand(6, 3, 40, 56))  # 6 > batch_size 4: two batches
    txt = fm.encode_text(["a red square", "a dog", "x"])
    assert img.shape == (6, fm.dim) and txt.shape == (3, fm.dim)
    assert img.dtype == torch.float32 and txt.dtype == torch.float32
    assert img.device.type == "cpu"
    torch.testing.assert_close(img.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(3))
    # batching does not change the result
    x = torch.rand(5, 3, 32, 32)
    torch.testing.assert_close(fm.encode_images(x, batch_size=1), fm.encode_images(x, batch_size=5), atol=1e-5, rtol=0)


def test_identity_fields(fm, tiny_name):
    ident = fm.identity
    assert ident["name"] == tiny_name and ident["dim"] == 24 and ident["pretrained"] is None
    assert isinstance(ident["params"], str) and len(ident["params"]) == 64
    json.dumps(ident)  # JSON-able for store fingerprints
    torch.manual_seed(2)
    other = FoundationModel.open_clip(tiny_name)
    assert other.identity["params"] != ident["params"]  # another random init is another model


def test_preprocessing_matches_open_clip_pil_pipeline(fm):
    """Tensor preprocessing == open_clip's own PIL val transform (up to resampling noise)."""
    from PIL import Image
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = image_transform_v2(PreprocessCfg(**fm.model.visual.preprocess_cfg), is_train=False)
    g = torch.Generator().manual_seed(0)
    small = torch.rand(1, 3, 12, 18, generator=g)
    img = torch.nn.functional.interpolate(small, size=(60, 90), mode="bilinear")[0]  # smooth
    u8 = (img * 255).round().to(torch.uint8)
    ref = pp(Image.fromarray(u8.permute(1, 2, 0).numpy()))
    mine = fm.preprocess(u8[None])[0]
    assert mine.shape == ref.shape == (3, 32, 32)
    assert (mine - ref).abs().mean() < 0.02
    # a wrong crop (e.g. left instead of centre) is far off: the check can fail
    wrong = fm.preprocess(u8[None, :, :, :60])[0]
    assert (wrong - ref).abs().mean() > 0.05


def test_preprocess_modes_shapes(fm):
    x = torch.rand(2, 3, 20, 50)
    assert fm.preprocess(x).shape == (2, 3, 32, 32)
    fm.resize_mode = "longest"
    try:
        out = fm.preprocess(x)
        assert out.shape == (2, 3, 32, 32)
        # padded rows (value 0 before normalisation) at the top and bottom
        mean = torch.tensor(fm.mean).view(3, 1)
        std = torch.tensor(fm.std).view(3, 1)
        torch.testing.assert_close(out[0, :, 0, :], ((0 - mean) / std).expand(3, 32))
    finally:
        fm.resize_mode = "shortest"


def test_concepts_and_null_embedding(fm):
    c = fm.encode_concepts(["dog", "cat"])
    assert c.shape == (2, fm.dim)
    torch.testing.assert_close(c.norm(dim=1), torch.ones(2))
    manual = fm.encode_text([t.format("dog") for t in DEFAULT_TEMPLATES]).mean(0)
    torch.testing.assert_close(c[0], manual / manual.norm(), atol=1e-5, rtol=0)
    null = fm.null_embedding()
    manual_null = fm.encode_text([t.format("") for t in DEFAULT_TEMPLATES]).mean(0)
    assert null.shape == (fm.dim,)
    torch.testing.assert_close(null, manual_null / manual_null.norm(), atol=1e-5, rtol=0)
    # custom templates
    one = fm.encode_concepts(["dog"], templates=["{}"])
    torch.testing.assert_close(one, fm.encode_text(["dog"]), atol=1e-5, rtol=0)


def test_custom_templates_change_null(tiny_name):
    torch.manual_seed(1)
    fm2 = FoundationModel.open_clip(tiny_name, templates=["a sketch of {}", "art of {}"])
    assert fm2.templates == ("a sketch of {}", "art of {}")
    manual = fm2.encode_text(["a sketch of ", "art of "]).mean(0)
    torch.testing.assert_close(fm2.null_embedding(), manual / manual.norm(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exactly one"):
        FoundationModel.open_clip(tiny_name, templates=["no placeholder"])


def test_local_safetensors_roundtrip(fm, tiny_name, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in fm.model.state_dict().items()}, str(path))
    torch.manual_seed(123)  # a different random init that loading must overwrite
    loaded = FoundationModel.open_clip(tiny_name, pretrained=str(path))
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_images(x), fm.encode_images(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded.encode_text(["a b", "c"]), fm.encode_text(["a b", "c"]), atol=1e-6, rtol=0)
    assert loaded.identity["params"] == fm.identity["params"]
    assert len(loaded.identity["weights_sha256"]) == 64


def test_local_pt_file_via_open_clip_loader(fm, tiny_name, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(fm.model.state_dict(), path)
    loaded = FoundationModel.open_clip(tiny_name, pretrained=str(path))
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_images(x), fm.encode_images(x), atol=1e-6, rtol=0)


def test_weights_file_errors(tiny_name, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FoundationModel.open_clip(tiny_name, pretrained=str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    save_file({"nope": torch.zeros(2)}, str(bad))
    with pytest.raises(ValueError, match="does not fit"):
        FoundationModel.open_clip(tiny_name, pretrained=str(bad))
    with pytest.raises(ValueError, match="neither an open_clip tag"):
        FoundationModel.open_clip(tiny_name, pretrained="not-a-tag")
    with pytest.raises(ValueError, match="unknown open_clip model config 'no-such-model'"):
        FoundationModel.open_clip("no-such-model")
    with pytest.raises(ValueError, match="precision"):
        FoundationModel.open_clip(tiny_name, precision="fp12")


def test_image_input_validation(fm):
    with pytest.raises(ValueError, match=r"one image of shape \(3, 32, 32\)"):
        fm.encode_images(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="rank 4"):
        fm.encode_images(torch.rand(1, 1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"3 \(RGB\) or 1 \(gray\) channels"):
        fm.encode_images(torch.rand(2, 4, 32, 32))
    with pytest.raises(ValueError, match="empty batch"):
        fm.encode_images(torch.rand(0, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expects images in \[0, 1\]; got values in \[-2"):
        fm.encode_images(torch.rand(2, 3, 32, 32) * 4 - 2)  # normalised inputs
    with pytest.raises(TypeError, match="torch.Tensor"):
        fm.encode_images([[0.0]])
    with pytest.raises(ValueError, match="batch_size"):
        fm.encode_images(torch.rand(1, 3, 32, 32), batch_size=0)
    # uint8 [0, 255] and gray images are accepted and agree with float / RGB
    x = torch.rand(2, 3, 32, 32)
    u8 = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(fm.encode_images(u8), fm.encode_images(u8.float() / 255), atol=1e-6, rtol=0)
    gray = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(fm.encode_images(gray), fm.encode_images(gray.expand(-1, 3, -1, -1)), atol=1e-6, rtol=0)


def test_text_input_validation(fm):
    with pytest.raises(ValueError, match="empty list"):
        fm.encode_text([])
    with pytest.raises(TypeError, match=r"entry 1 is int"):
        fm.encode_text(["ok", 3])
    with pytest.raises(TypeError, match="single str"):
        fm.encode_text("dog")
    with pytest.raises(ValueError, match="empty list"):
        fm.encode_concepts([])


def test_wraps_plain_callables():
    """The base class works with any pair of encoders (not only open_clip)."""
    proj = torch.randn(3 * 8 * 8, 5)

    def enc_img(x):
        return x.flatten(1) @ proj

    def enc_txt(texts):
        return torch.stack([torch.full((5,), float(len(t)) + 1.0) for t in texts])

    fm = FoundationModel(enc_img, enc_txt, image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3, identity={"name": "toy"})
    assert fm.dim == 5
    out = fm.encode_images(torch.rand(3, 3, 16, 16))
    assert out.shape == (3, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="identity"):
        FoundationModel(enc_img, enc_txt, image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3, identity={})
