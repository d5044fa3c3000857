"""A catalogue of bad inputs, as a new user (or a hostile store) would give them.

Every case asserts the error type, that the message names the bad value, that it says what is
accepted, and that nothing on disk changed (every file under the world's directory, by name
and content, before and after; cases that first build something snapshot after that set-up).
The world is built once: two small lenses that ran (TinyCNN, red squares, a tiny random CLIP).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from semlens_widgets.lens import Lens
from semlens_widgets.lens_semantics import compare
from semlens_widgets.store import Store, StoreError

from _models import TinyCNN, red_square_images, tiny_clip_fm

torch.set_num_threads(1)

LAYERS = ["features.relu1", "features.relu2"]
NAMES = ["star", "moon", "sun"]


class Imgs(Dataset):
    """(x, y) items: gray 12x12 images with a red square, labels 0..2; ``patch`` replaces items."""

    def __init__(self, n=24, patch: dict[int, Callable] | None = None, labels: dict[int, int] | None = None):
        self.x, _ = red_square_images(n, size=12, square=4, seed=2)
        self.y = torch.arange(n) % 3
        for i, v in (labels or {}).items():
            self.y[i] = v
        self.patch = patch or {}

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        x = self.x[i]
        return (self.patch[i](x) if i in self.patch else x), self.y[i]


def make_readonly(path: Path) -> bool:
    """Make a directory unwritable, also for root (chattr +i where it works). True if it worked."""
    os.chmod(path, 0o555)
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    try:
        (path / ".probe").write_text("x")
    except OSError:
        return True
    (path / ".probe").unlink()
    return False


def make_writable(path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, 0o755)


@dataclass
class World:
    root: Path
    fm: Any
    data: Imgs
    model: torch.nn.Module
    lens: Lens
    other: Lens
    readonly: bool

    def new(self, **kw) -> Lens:
        """A Lens over the world's model and data on the world's store, with overrides."""
        args = dict(model=self.model, dataset=self.data, fm=self.fm, layers=LAYERS, m=3, crop="crp",
                    store=self.root / "store", progress=False, batch_size=8, chunk_size=8, class_names=NAMES)
        args.update(kw)
        return Lens(args.pop("model"), args.pop("dataset"), args.pop("fm"), args.pop("layers"), **args)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    fm = tiny_clip_fm(root)
    data, model = Imgs(), TinyCNN(num_classes=3)
    kw = dict(m=3, crop="crp", progress=False, batch_size=8, chunk_size=8, class_names=NAMES)
    lens = Lens(model, data, fm, LAYERS, store=root / "store", **kw).run()
    lens.set_vocabulary(["red", "square", "gray"])
    other = Lens(TinyCNN(num_classes=3, seed=1), data, fm, LAYERS, store=root / "store2", **kw).run()
    # things to trip over
    (root / "afile.txt").write_text("not a directory")
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("someone else's")
    for name, entries in (("list", []), ("nofile", {"k": {"fingerprint": "f", "sha256": "0" * 64, "shapes": {},
                                                           "meta": {}}}),
                          ("escape", {"k": {"file": "../../x.abcdef012345.safetensors", "fingerprint": "f",
                                            "sha256": "0" * 64, "shapes": {}, "meta": {}}})):
        d = root / f"bad-manifest-{name}"
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({"format": "semlens-store", "version": 1, "info": {},
                                                     "entries": entries}))
    shutil.copytree(root / "store", root / "ro-store")
    (root / "ro").mkdir()
    readonly = make_readonly(root / "ro") and make_readonly(root / "ro-store")
    try:
        yield World(root, fm, data, model, lens, other, readonly)
    finally:
        for d in ("ro", "ro-store"):
            make_writable(root / d)


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


@dataclass
class Case:
    id: str
    act: Callable[[Any], Any]           # (world, or what setup returned) -> raises
    exc: type | tuple
    value: str                          # regex: the bad value, named in the message
    accepted: str                       # regex: what would be accepted
    setup: Callable[[World], Any] | None = None
    readonly: bool = False              # needs a directory that cannot be written


def nan_at(i, value=float("nan")):
    def f(x):
        x = x.clone()
        x[0, 1, 1] = value
        return x
    return f


def w(fn):  # act on the world
    return fn


L1, L2 = LAYERS
IMG = lambda *s: torch.rand(*s)  # noqa: E731

CASES = [
    # ---------------------------------------------------------------- Lens(...) arguments
    Case("model-not-a-module", lambda W: W.new(model="resnet50"), TypeError, r"'resnet50' \(str\)",
         r"torch\.nn\.Module"),
    Case("fm-not-a-foundation-model", lambda W: W.new(fm="ViT-B-32"), TypeError, r"'ViT-B-32' \(str\)",
         r"FoundationModel"),
    Case("crop-unknown", lambda W: W.new(crop="box"), ValueError, r"'box'", r"accepted: \['crp', 'activation', 'full'\]"),
    Case("pooling-unknown", lambda W: W.new(pooling="sum"), ValueError, r"'sum'", r"accepted: \[.*'max'"),
    Case("m-zero", lambda W: W.new(m=0), ValueError, r"got 0\b", r"int >= 1"),
    Case("m-float", lambda W: W.new(m=2.5), ValueError, r"got 2\.5", r"int >= 1"),
    Case("m-bool", lambda W: W.new(m=True), ValueError, r"got True", r"int >= 1"),
    Case("batch-size-zero", lambda W: W.new(batch_size=0), ValueError, r"got 0\b", r"int >= 1"),
    Case("num-workers-negative", lambda W: W.new(num_workers=-1), ValueError, r"got -1", r"int >= 0"),
    Case("chunk-size-zero", lambda W: W.new(chunk_size=0), ValueError, r"got 0\b", r"int >= 1"),
    Case("crop-size-negative", lambda W: W.new(crop_size=-3), ValueError, r"got -3", r"None or an int >= 1"),
    Case("checkpoint-every-zero", lambda W: W.new(checkpoint_every=0), ValueError, r"got 0\b",
         r"None .* or an int >= 1"),
    Case("checkpoint-every-str", lambda W: W.new(checkpoint_every="10"), ValueError, r"got '10'",
         r"None .* or an int >= 1"),
    Case("class-names-a-str", lambda W: W.new(class_names="star"), TypeError, r"'star'", r"list of str or None"),
    Case("class-names-ints", lambda W: W.new(class_names=[1, 2, 3]), TypeError, r"\[1, 2, 3\]", r"list of str"),
    Case("layer-unknown", lambda W: W.new(layers=["features.relu3"]), ValueError, r"'features\.relu3'",
         r"Close matches: \['features\.relu2'"),
    Case("layers-empty", lambda W: W.new(layers=[]), ValueError, r"\[\]", r"non-empty list"),
    Case("layer-not-a-str", lambda W: W.new(layers=[3]), (TypeError, ValueError), r"\b3\b", r"str"),
    Case("dataset-a-dataloader", lambda W: W.new(dataset=DataLoader(W.data)), TypeError, r"DataLoader",
         r"loader\.dataset"),
    Case("dataset-empty", lambda W: W.new(dataset=Imgs(0)), ValueError, r"len 0", r"at least one sample"),
    Case("dataset-items-str", lambda W: W.new(dataset=["a.jpg", "b.jpg"]), TypeError, r"str",
         r"Tensor \[C, ?H, ?W\]"),
    Case("dataset-uint8", lambda W: W.new(dataset=Imgs(patch={0: lambda x: (x * 255).to(torch.uint8)})), TypeError,
         r"torch\.uint8", r"accepted: float32"),
    Case("dataset-mixed-sizes", lambda W: W.new(dataset=Imgs(patch={7: lambda x: torch.rand(3, 16, 16)})),
         ValueError, r"item 7 has an image of shape \(3, 16, 16\)", r"one size"),
    Case("display-transform-not-callable", lambda W: W.new(display_transform="unnormalize"), TypeError, r"str",
         r"callable or None"),
    Case("store-not-a-path", lambda W: W.new(store=3), TypeError, r"\bint\b", r"directory path, a Store or None"),
    Case("store-a-file", lambda W: W.new(store=W.root / "afile.txt"), StoreError, r"afile\.txt",
         r"not a directory"),
    Case("store-foreign-directory", lambda W: W.new(store=W.root / "foreign"), StoreError, r"notes\.txt",
         r"empty or new directory"),
    Case("store-manifest-entries-a-list", lambda W: W.new(store=W.root / "bad-manifest-list"), StoreError,
         r"'entries' must be a dict", r"key -> record"),
    Case("store-manifest-entry-without-file", lambda W: W.new(store=W.root / "bad-manifest-nofile"), StoreError,
         r"entry 'k' has no 'file' field", r"a record needs 'file'"),
    Case("store-manifest-file-escapes", lambda W: W.new(store=W.root / "bad-manifest-escape"), StoreError,
         r"\.\./\.\./x", r"accepted: a plain file name"),
    Case("store-of-another-model", lambda W: W.new(model=torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)),
                                                   layers=["0"], crop="activation"),
         StoreError, r"different model", r"another directory as store=.*overwrite=True"),
    Case("device-unknown", lambda W: W.new(device="tpu"), ValueError, r"'tpu'", r"accepted: 'cpu', 'cuda'"),
    Case("device-cuda-missing", lambda W: W.new(device="cuda:7"), ValueError, r"'cuda:7'", r"accepted: 'cpu'"),
    Case("device-not-a-str", lambda W: W.new(device=0.5), TypeError, r"0\.5", r"accepted: 'cpu'"),
    Case("model-on-meta", lambda W: W.new(model=TinyCNN(num_classes=3).to("meta")), ValueError,
         r"'features\.conv1\.weight' is on the meta device", r"accepted: a model whose tensors hold values"),
    Case("model-float16", lambda W: W.new(model=TinyCNN(num_classes=3).half()), ValueError,
         r"'features\.conv1\.weight' is torch\.float16", r"accepted: a float32 model"),
    Case("store-readonly-overwrite", lambda W: W.new(store=W.root / "ro-store", overwrite=True), StoreError,
         r"ro-store.* is not writable.*overwrite=True", r"accepted: a writable store directory", readonly=True),
    Case("store-readonly-new-model", lambda W: W.new(model=TinyCNN(num_classes=3, seed=5),
                                                     store=W.root / "ro-store"),
         StoreError, r"ro-store.* is not writable", r"accepted: a writable store directory", readonly=True),
    # ---------------------------------------------------------------- run(): checked before the work
    Case("run-on-step-not-callable", lambda W: W.lens.run(on_step="print"), TypeError, r"'print'", r"callable"),
    Case("run-nan-pixels", lambda L: L.run(), ValueError, r"dataset items \[13\] have non-finite pixel values",
         r"accepted: finite images",
         setup=lambda W: W.new(dataset=Imgs(patch={13: nan_at(13)}), store=W.root / "run-nan")),
    Case("run-inf-pixels", lambda L: L.run(), ValueError, r"dataset items \[3, 4\] have non-finite",
         r"accepted: finite images",
         setup=lambda W: W.new(dataset=Imgs(patch={3: nan_at(3, math.inf), 4: nan_at(4, -math.inf)}),
                               store=W.root / "run-inf")),
    Case("run-label-too-big", lambda L: L.run(), ValueError, r"dataset items \[17\] have labels \[3\]",
         r"class index in \[0, 3\)",
         setup=lambda W: W.new(dataset=Imgs(labels={17: 3}), store=W.root / "run-labels")),
    Case("run-label-negative", lambda L: L.run(), ValueError, r"dataset items \[2\] have labels \[-1\]",
         r"class index in \[0, 3\)",
         setup=lambda W: W.new(dataset=Imgs(labels={2: -1}), store=W.root / "run-labels-neg")),
    Case("run-mixed-sizes-late", lambda L: L.run(), ValueError,
         r"dataset item 9 has an image of shape \(3, 16, 16\) but item 8 has \(3, 12, 12\)", r"one size",
         setup=lambda W: W.new(dataset=Imgs(patch={9: lambda x: torch.rand(3, 16, 16)}), store=W.root / "run-mix")),
    Case("run-readonly-store-new-layer", lambda L: L.run(), StoreError, r"step 'collect'",
         r"accepted: a writable store directory", readonly=True,
         setup=lambda W: W.new(layers=["features.conv1"], crop="activation", store=W.root / "ro-store")),
    # ---------------------------------------------------------------- accessors
    Case("examples-layer-unknown", lambda W: W.lens.examples("fc", 0), ValueError, r"'fc'",
         r"layers \['features\.relu1', 'features\.relu2'\]"),
    Case("examples-component-out-of-range", lambda W: W.lens.examples(L1, 8), IndexError, r"component 8",
         r"0\.\.7"),
    Case("examples-component-float", lambda W: W.lens.examples(L1, 2.7), TypeError, r"2\.7", r"an int"),
    Case("crops-size-zero", lambda W: W.lens.crops(L1, 0, size=0), ValueError, r"got 0\b", r"None or an int >= 1"),
    Case("images-index-out-of-range", lambda W: W.lens.images([3, 24]), IndexError, r"sample index 24",
         r"0\.\.23"),
    Case("images-index-float", lambda W: W.lens.images([0.5]), TypeError, r"float", r"integers"),
    # ---------------------------------------------------------------- search (paper eq. 4)
    Case("search-ambiguous-rank2", lambda W: W.lens.search(torch.rand(3, 16)), ValueError,
         r"shape \(3, 16\) is ambiguous", r"Accepted: a text .* images .*\[3, H, W\].*embedding probes"),
    Case("search-int", lambda W: W.lens.search(3), TypeError, r"3 \(int\)", r"accepted: a text"),
    Case("search-empty-list", lambda W: W.lens.search([]), ValueError, r"empty list", r"accepted: a text"),
    Case("search-blank", lambda W: W.lens.search("   "), ValueError, r"'   '", r"type a concept"),
    Case("search-mixed-list", lambda W: W.lens.search(["red", torch.rand(3, 8, 8)]), TypeError,
         r"item 1 is tensor", r"holds texts"),
    Case("search-image-0-255", lambda W: W.lens.search(IMG(1, 3, 8, 8) * 255), ValueError, r"values in \[",
         r"images are in \[0, 1\]"),
    Case("search-image-gray", lambda W: W.lens.search(IMG(2, 1, 8, 8)), ValueError, r"1 channels", r"\[3, H, W\]"),
    Case("search-image-nan", lambda W: W.lens.search(torch.full((3, 8, 8), float("nan"))), ValueError,
         r"NaN or infinite", r"accepted: a text"),
    Case("search-embedding-wrong-d", lambda W: W.lens.search(torch.randn(5, 7)), ValueError,
         r"shape \(5, 7\)", r"d=16"),
    Case("search-embedding-zero", lambda W: W.lens.search(torch.zeros(16)), ValueError, r"probe 0 is all zeros",
         r"direction"),
    Case("search-image-uint8", lambda W: W.lens.search(torch.zeros(3, 8, 8, dtype=torch.uint8)), ValueError,
         r"torch\.uint8", r"floating point"),
    Case("search-rank5", lambda W: W.lens.search(IMG(1, 1, 3, 8, 8)), ValueError, r"\(1, 1, 3, 8, 8\)",
         r"accepted: a text"),
    Case("search-k-zero", lambda W: W.lens.search("red", k=0), ValueError, r"got 0\b", r"int >= 1"),
    Case("search-k-float", lambda W: W.lens.search("red", k=2.5), ValueError, r"got 2\.5", r"int >= 1"),
    Case("search-layer-unknown", lambda W: W.lens.search("red", layer="fc"), ValueError, r"'fc'",
         r"this Lens has layers"),
    # ---------------------------------------------------------------- labels (paper's labelling)
    Case("label-threshold-nan", lambda W: W.lens.label(["red"], L1, threshold=float("nan")), ValueError,
         r"got nan", r"finite number"),
    Case("label-threshold-str", lambda W: W.lens.label(["red"], L1, threshold="high"), ValueError, r"'high'",
         r"finite number"),
    Case("label-no-concepts", lambda W: W.lens.label([], L1), ValueError, r"got \[\]", r"non-empty list"),
    Case("label-duplicates", lambda W: W.lens.label(["red", "red"], L1), ValueError, r"\['red'\]",
         r"duplicates"),
    Case("label-blank-concept", lambda W: W.lens.label(["red", " "], L1), ValueError, r"' '",
         r"empty or whitespace"),
    Case("label-concept-int", lambda W: W.lens.label(["red", 7], L1), TypeError, r"7 \(int\)", r"strings"),
    Case("vocabulary-blank", lambda W: W.lens.set_vocabulary([""]), ValueError, r"''", r"empty or whitespace"),
    # ---------------------------------------------------------------- audit (section 3.4)
    Case("audit-valid-empty", lambda W: W.lens.audit([], ["gray"], L2, 0), ValueError, r"got \[\]",
         r"non-empty list"),
    Case("audit-target-unknown-name", lambda W: W.lens.audit(["red"], ["gray"], L2, "planet"), ValueError,
         r"'planet'", r"class index in \[0, 3\) or a class name \('star'"),
    Case("audit-target-out-of-range", lambda W: W.lens.audit(["red"], ["gray"], L2, 3), ValueError,
         r"target class 3", r"\[0, 3\)"),
    Case("audit-target-float", lambda W: W.lens.audit(["red"], ["gray"], L2, 1.0), ValueError, r"1\.0",
         r"\[0, 3\)"),
    Case("audit-target-bool", lambda W: W.lens.audit(["red"], ["gray"], L2, True), ValueError, r"True",
         r"\[0, 3\)"),
    Case("audit-tau-nan", lambda W: W.lens.audit(["red"], ["gray"], L2, 0, tau=float("nan")), ValueError,
         r"got nan", r"finite number"),
    Case("audit-over-unknown", lambda W: W.lens.audit(["red"], ["gray"], L2, 0, over="everything"), ValueError,
         r"'everything'", r"\['label', 'prediction'\]"),
    # ---------------------------------------------------------------- relevance, class relevance
    Case("relevance-max-samples-zero", lambda W: W.lens.relevance(0, L2, max_samples=0), ValueError,
         r"got 0\b", r"int >= 1"),
    Case("relevance-normalize-unknown", lambda W: W.lens.relevance(0, L2, normalize="l2"), ValueError,
         r"'l2'", r"'abs'"),
    Case("relevance-target-negative", lambda W: W.lens.relevance(-1, L2), ValueError, r"-1", r"\[0, 3\)"),
    Case("class-relevance-max-per-class", lambda W: W.lens.class_relevance(L2, max_per_class=-1), ValueError,
         r"got -1", r"int >= 1"),
    Case("top-classes-k-zero", lambda W: W.lens.top_classes(L2, k=0), ValueError, r"got 0\b", r"int >= 1"),
    # ---------------------------------------------------------------- compare (eqs. 5/6)
    Case("compare-with-a-str", lambda W: compare(W.lens, "x", L1, L1), TypeError, r"'x' \(str\)",
         r"compare\(lens_a, lens_b, layer_a, layer_b\)"),
    Case("compare-layer-unknown", lambda W: compare(W.lens, W.other, L1, "fc"), ValueError, r"'fc'",
         r"this Lens has layers"),
    Case("compare-threshold-nan", lambda W: compare(W.lens, W.other, L1, L1, threshold=float("nan")), ValueError,
         r"got nan", r"finite number"),
    # ---------------------------------------------------------------- attribution graph
    Case("graph-target-name-unknown", lambda W: W.lens.attribution_graph("planet"), ValueError, r"'planet'",
         r"class name \('star', 'moon', 'sun'\)"),
    Case("graph-layer-unknown", lambda W: W.lens.attribution_graph(0, ["fc"]), ValueError, r"'fc'",
         r"this Lens has layers"),
    Case("graph-top-k-negative", lambda W: W.lens.attribution_graph(0, top_k=-1), ValueError, r"got -1",
         r"int >= 0"),
    Case("graph-threshold-inf", lambda W: W.lens.attribution_graph(0, threshold=float("inf")), ValueError,
         r"got inf", r"finite number"),
    # ---------------------------------------------------------------- measures and map
    Case("map-layer-unknown", lambda W: W.lens.map("fc"), ValueError, r"'fc'", r"this Lens has layers"),
    Case("similarity-layer-unknown", lambda W: W.lens.similarity(L1, "fc"), ValueError, r"'fc'",
         r"this Lens has layers"),
    # ---------------------------------------------------------------- store
    Case("store-root-int", lambda W: Store(3), TypeError, r"\bint\b", r"str / PathLike\) or None"),
    Case("store-save-blank-key", lambda W: Store(W.root / "store").save(" ", {"a": torch.zeros(1)}, "fp"),
         ValueError, r"' '", r"non-empty string"),
    Case("store-save-not-a-tensor", lambda W: Store(W.root / "store").save("k", {"a": 3}, "fp"), TypeError,
         r"'a'.*\bint\b", r"torch\.Tensor"),
    Case("store-lock-blank", lambda W: Store(W.root / "store").lock(""), ValueError, r"''", r"non-empty string"),
    Case("store-lock-timeout-negative", lambda W: Store(W.root / "store").lock("x", timeout=-1), ValueError,
         r"-1", r"None or a number >= 0"),
    # ---------------------------------------------------------------- widgets
    Case("widget-searchbox-none", lambda W: _widgets().SearchBox(None), ValueError, r"got None",
         r"needs a Lens"),
    Case("widget-searchbox-k", lambda W: _widgets().SearchBox(W.lens, k=-4), ValueError, r"k=-4",
         r"expected an int in 1\.\.200"),
    Case("widget-gallery-k-float", lambda W: _widgets().ConceptGallery(W.lens, L1, k=2.7), ValueError, r"2\.7",
         r"expected an int"),
    Case("widget-gallery-layer", lambda W: _widgets().ConceptGallery(W.lens, "fc"), ValueError, r"'fc'",
         r"features\.relu1"),
    Case("widget-map-color-by", lambda W: _widgets().SemanticMap(W.lens, L1, color_by="x"), ValueError,
         r"color_by='x'", r"accepted: \['layer', 'label'"),
    Case("widget-sankey-target", lambda W: _widgets().AttributionSankey(W.lens, target=7), ValueError,
         r"target=7", r"0\.\.2"),
    Case("widget-audit-target-name", lambda W: _widgets().AuditView(W.lens, "red", "gray", target="planet"),
         ValueError, r"'planet'", r"one of \['star'"),
    # ---------------------------------------------------------------- report
    Case("report-into-a-directory", lambda W: W.lens.report(W.root / "foreign"), IsADirectoryError,
         r"foreign", r"accepted: a file path"),
    Case("report-under-a-file", lambda W: W.lens.report(W.root / "afile.txt" / "report.html"),
         NotADirectoryError, r"afile\.txt", r"accepted: a file path"),
    Case("report-readonly-directory", lambda W: W.lens.report(W.root / "ro" / "sub" / "report.html"),
         PermissionError, r"'.*ro'", r"accepted: a file path .* writable directory", readonly=True),
    Case("report-path-int", lambda W: W.lens.report(3), TypeError, r"3 \(int\)", r"accepted: a file path"),
]


def _widgets():
    from semlens_widgets import widgets

    return widgets


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(world, case):
    if case.readonly and not world.readonly:
        pytest.skip("no directory can be made unwritable here (root without chattr)")
    target = case.setup(world) if case.setup else world
    before = snapshot(world.root)
    with pytest.raises(case.exc) as err:
        case.act(target)
    msg = str(err.value)
    assert re.search(case.value, msg), f"the message does not name the bad value ({case.value}): {msg}"
    assert re.search(case.accepted, msg), f"the message does not say what is accepted ({case.accepted}): {msg}"
    assert snapshot(world.root) == before, "something on disk changed"


def test_a_readonly_store_with_the_inputs_it_holds_loads_without_writing(world):
    """The other side of the read-only cases: a store that cannot be written serves the inputs it
    was made with (nothing is computed, nothing is written)."""
    if not world.readonly:
        pytest.skip("no directory can be made unwritable here (root without chattr)")
    before = snapshot(world.root)
    lens = world.new(store=world.root / "ro-store").run()
    assert torch.equal(lens.embeddings(L2), world.lens.embeddings(L2))
    assert snapshot(world.root) == before


def test_fp16_and_fp64_images_are_cast_like_model_inputs(world, tmp_path):
    """Not a bad input: half / double images are read as float32, in collection as in
    model_inputs(), so the concept examples are those of the float32 images."""
    for dtype in (torch.float16, torch.float64):
        data = Imgs(patch={i: (lambda x, d=dtype: x.to(d)) for i in range(24)})
        ref = Imgs(patch={i: (lambda x, d=dtype: x.to(d).float()) for i in range(24)})
        a = world.new(dataset=data, store=None, crop="full").run()
        b = world.new(dataset=ref, store=None, crop="full").run()
        assert torch.equal(a.topm(L2).indices, b.topm(L2).indices)
        assert torch.equal(a.topm(L2).values, b.topm(L2).values)


def test_a_str_is_one_concept_and_a_class_is_a_name_or_an_index(world):
    """Not errors: audit's valid / spurious given as a str are one concept (as in the widgets), and
    every argument that names a class takes its name or its index (int, numpy int, 0-d tensor)."""
    import numpy as np

    lens = world.lens
    a = lens.audit("red", "gray", L2, "moon")
    b = lens.audit(["red"], ["gray"], L2, 1)
    assert a.valid == ["red"] and a.spurious == ["gray"] and a.target == b.target == 1
    assert a.table.equals(b.table)
    for target in ("moon", 1, np.int64(1), torch.tensor(1)):
        assert lens.relevance(target, L2).equals(lens.relevance(1, L2))
        assert lens.attribution_graph(target).target == 1
    assert lens.relevance("sun", L2, max_samples=4).equals(lens.relevance(2, L2, max_samples=4))
