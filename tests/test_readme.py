"""The README's real-model code runs as written.

The block marked ``<!-- readme-test: real-model-setup -->`` is executed unchanged except for two
paths (the image folder and the store, into tmp) with the downloads replaced: torchvision's
weight download returns a randomly initialised ResNet-50's state dict, and open_clip builds
ViT-B-32 with random weights. The image folder is a tiny ImageFolder of real files. The block
``real-model-run`` then runs as written on a small lens (3,072 ResNet-50 components with CLIP
embeddings would take a GPU, not a CI minute).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def block(name: str) -> str:
    """The python code block that follows ``<!-- readme-test: name -->`` in the README."""
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"<!-- readme-test: {re.escape(name)} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no block marked readme-test: {name}"
    return m.group(1)


@pytest.fixture
def no_downloads(monkeypatch):
    """torchvision weights and open_clip checkpoints come from random initialisations."""
    import open_clip
    import torchvision
    from torchvision.models import _api

    def random_state_dict(url, *args, **kwargs):
        assert "resnet50" in url, url  # only the weights the README names
        torch.manual_seed(0)
        return torchvision.models.resnet50().state_dict()

    monkeypatch.setattr(_api, "load_state_dict_from_url", random_state_dict)
    create = open_clip.create_model_and_transforms

    def random_clip(name, pretrained=None, **kwargs):
        assert (name, pretrained) == ("ViT-B-32", "laion2b_s34b_b79k")
        return create(name, pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", random_clip)


def image_folder(root: Path, classes=("n01440764", "n01443537"), per_class: int = 2) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            px = (torch.rand(3, 300, 260, generator=g) * 255).byte().permute(1, 2, 0).numpy()  # not square, not 224
            Image.fromarray(px).save(root / c / f"img{i}.JPEG")
    return root


@pytest.mark.slow
def test_real_model_setup_runs_as_written(tmp_path, no_downloads):
    import semlens_widgets as slw

    folder = image_folder(tmp_path / "val")
    code = block("real-model-setup")
    assert code.count('"/data/imagenet/val"') == 1 and code.count('"./resnet50-lens-store"') == 1
    code = code.replace('"/data/imagenet/val"', repr(str(folder))).replace(
        '"./resnet50-lens-store"', repr(str(tmp_path / "store")))
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    lens, data, weights = ns["lens"], ns["data"], ns["weights"]
    assert isinstance(lens, slw.Lens) and lens.layers == ["layer3", "layer4"]
    x, y = data[3]
    assert x.shape == (3, 224, 224) and y == 1  # the weights' transform: resized, cropped, normalised
    assert len(lens.class_names) == 1000 and lens.class_names[0] == weights.meta["categories"][0]
    shown = lens.images([0, 3])
    assert shown.shape == (2, 3, 224, 224) and 0 <= float(shown.min()) and float(shown.max()) <= 1
    assert float(shown.std()) > 0.1  # unnormalised for display: the random photo, not a grey field


@pytest.mark.slow
def test_real_model_run_block_runs_as_written(tmp_path, monkeypatch):
    """The run block, as written, on a small real Lens (a tiny CNN and a tiny CLIP)."""
    from _models import TinyCNN, red_square_images, tiny_clip_fm

    import semlens_widgets as slw

    fm = tiny_clip_fm(tmp_path)
    x, _ = red_square_images(12, size=16, square=4)
    data = torch.utils.data.TensorDataset(x, torch.arange(12) % 3)
    lens = slw.Lens(TinyCNN(num_classes=3), data, fm, ["features.relu1", "features.relu2"], m=4, crop="crp",
                    store=tmp_path / "store", progress=False, batch_size=8)
    monkeypatch.chdir(tmp_path)
    ns = {"lens": lens}
    exec(compile(block("real-model-run"), str(README), "exec"), ns)
    assert len(ns["hits"]) == 10 and list(ns["hits"].columns[:3]) == ["query", "rank", "layer"]
    assert (tmp_path / "resnet50-report.html").stat().st_size > 500_000
    assert lens.vocabulary and "watermark" in lens.vocabulary
