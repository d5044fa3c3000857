"""Store: lazy (memory-mapped) reads of big entries, and their integrity checks.

The thresholds are lowered (``_LAZY_MIN_BYTES`` / ``_BLOCK_BYTES``) so that small tensors make
files of several blocks; the code paths are those of a 30 GB entry.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from semlens_widgets import store as store_mod
from semlens_widgets.store import MappedEntry, Store, StoreCorruptError, StoreError

posix_only = pytest.mark.skipif(os.name != "posix", reason="symbolic links and FIFOs as an unprivileged user: POSIX")

BLOCK = 4096


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(store_mod, "_LAZY_MIN_BYTES", 2 * BLOCK)
    monkeypatch.setattr(store_mod, "_BLOCK_BYTES", BLOCK)
    store_mod._VERIFIED.clear()
    yield
    store_mod._VERIFIED.clear()


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "theta": torch.randn(300, 16, generator=g),                      # 19200 bytes
        "V": torch.randn(50, 3, 16, generator=g).half(),                  # 4800 bytes
        "indices": torch.randint(0, 10**9, (200, 3), generator=g),        # int64
        "flags": torch.rand(37, generator=g) > 0.5,                       # bool, odd size
        "bf": torch.randn(11, 3, generator=g).bfloat16(),
        "empty": torch.zeros(0, 4),
    }


def _file(root, st, key):
    return root / st.meta(key)["file"]


def _store_with_edited_record(tmp_path, edit):
    """A store ``tmp_path/s`` with entry ``k`` whose manifest record was changed by ``edit(rec)``."""
    root = tmp_path / "s"
    Store(root).save("k", _tensors(), "fp")
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data["entries"]["k"])
    path.write_text(json.dumps(data))
    return root


def _flip(path, offset):
    b = bytearray(path.read_bytes())
    b[offset] ^= 0xFF
    path.write_bytes(bytes(b))


def test_lazy_reads_equal_eager_reads(tmp_path):
    st = Store(tmp_path / "s")
    t = _tensors()
    st.save("embed/x", t, "fp")
    rec = st.meta("embed/x")
    size = _file(tmp_path / "s", st, "embed/x").stat().st_size
    assert rec["blocks"]["size"] == BLOCK and len(rec["blocks"]["sha256"]) == -(-size // BLOCK) > 2
    eager = st.load("embed/x", "fp")
    lazy = st.load("embed/x", "fp", lazy=True)
    assert isinstance(eager, dict) and isinstance(lazy, MappedEntry)
    assert set(lazy) == set(t) and len(lazy) == len(t)
    assert lazy.shape("V") == (50, 3, 16) and lazy.nbytes("theta") == 300 * 16 * 4
    for name, x in t.items():
        assert lazy[name].dtype == x.dtype and lazy[name].shape == x.shape
        assert torch.equal(lazy[name], x) and torch.equal(eager[name], x), name
    assert lazy.get("missing") is None and st.load("embed/x", "other", lazy=True) is None
    lazy.verify()  # every block


def test_small_entries_are_read_eagerly_and_memory_store_too(tmp_path):
    st = Store(tmp_path / "s")
    st.save("small", {"a": torch.arange(10)}, "fp")
    got = st.load("small", "fp", lazy=True)
    assert type(got) is dict and torch.equal(got["a"], torch.arange(10))
    assert "blocks" not in st.meta("small")
    mem = Store(None)
    mem.save("k", _tensors(), "fp")
    assert type(mem.load("k", "fp", lazy=True)) is dict


def test_corrupt_tensor_is_detected_when_taken(tmp_path):
    root = tmp_path / "s"
    st = Store(root)
    st.save("k", _tensors(), "fp")
    lazy = st.load("k", "fp", lazy=True)
    start = lazy._spans["V"][0]  # V lies in blocks after the first one
    assert start // BLOCK > 0
    _flip(_file(root, st, "k"), start + 3)
    store_mod._VERIFIED.clear()
    got = st.load("k", "fp", lazy=True)
    assert isinstance(got, MappedEntry)  # the header's blocks are intact
    assert torch.equal(got["indices"], _tensors()["indices"])  # another block: fine
    with pytest.raises(StoreCorruptError, match=r"tensor 'V' of entry 'k' is corrupt.*checksum mismatch") as e:
        got["V"]
    assert e.value.key == "k" and e.value.tensor == "V"
    with pytest.raises(StoreCorruptError):
        got.verify()
    # the eager read sees the same damage and answers "not there"
    with pytest.warns(UserWarning, match="corrupt"):
        assert st.load("k", "fp") is None


def test_corrupt_header_or_size_is_none_at_open(tmp_path):
    root = tmp_path / "s"
    st = Store(root)
    st.save("k", _tensors(), "fp")
    path = _file(root, st, "k")
    good = path.read_bytes()
    _flip(path, 20)  # inside the JSON header
    with pytest.warns(UserWarning, match="corrupt"):
        assert st.load("k", "fp", lazy=True) is None
    path.write_bytes(good[:-100])  # truncated: the recorded blocks do not fit
    store_mod._VERIFIED.clear()
    with pytest.warns(UserWarning, match="corrupt"):
        assert st.load("k", "fp", lazy=True) is None
    path.write_bytes(good)
    assert isinstance(st.load("k", "fp", lazy=True), MappedEntry)


def test_header_must_match_the_manifest(tmp_path):
    """A file whose blocks are intact but whose header disagrees with its record (shapes) is refused."""
    st = Store(_store_with_edited_record(tmp_path, lambda rec: rec["shapes"].update(theta=[16, 300])))
    with pytest.warns(UserWarning, match=r"corrupt.*'theta'"):
        assert st.load("k", "fp", lazy=True) is None


def test_entry_without_block_digests_is_verified_whole(tmp_path):
    """Entries saved before block digests existed: the whole-file sha256, once, at open."""
    root = _store_with_edited_record(tmp_path, lambda rec: rec.pop("blocks"))
    st = Store(root)
    got = st.load("k", "fp", lazy=True)
    assert isinstance(got, MappedEntry) and torch.equal(got["theta"], _tensors()["theta"])
    _flip(_file(root, st, "k"), os.path.getsize(_file(root, st, "k")) - 2)
    store_mod._VERIFIED.clear()
    with pytest.warns(UserWarning, match="corrupt"):
        assert st.load("k", "fp", lazy=True) is None


@pytest.mark.parametrize("bad", [
    {"size": 0, "sha256": ["0" * 64]},
    {"size": 4096, "sha256": []},
    {"size": 4096, "sha256": ["xyz"]},
    {"size": "4096", "sha256": ["0" * 64]},
    {"size": 4096, "sha256": ["0" * 64], "extra": 1},
    [4096],
])
def test_malformed_block_digests_refuse_the_manifest(tmp_path, bad):
    root = _store_with_edited_record(tmp_path, lambda rec: rec.update(blocks=bad))
    with pytest.raises(StoreError, match=r"entry 'k' has 'blocks'"):
        Store(root)


def test_writes_into_mapped_tensors_never_reach_the_file(tmp_path):
    root = tmp_path / "s"
    st = Store(root)
    t = _tensors()
    st.save("k", t, "fp")
    lazy = st.load("k", "fp", lazy=True)
    lazy["theta"].zero_()
    other = st.load("k", "fp", lazy=True)  # a new mapping reads the file
    assert torch.equal(other["theta"], t["theta"])
    assert torch.equal(st.load("k", "fp")["theta"], t["theta"])  # sha256 still matches


def test_mapping_survives_replacement_and_blocks_are_verified_once(tmp_path):
    root = tmp_path / "s"
    st = Store(root)
    t = _tensors()
    st.save("k", t, "fp")
    lazy = st.load("k", "fp", lazy=True)
    theta = lazy["theta"]
    verified = {k: set(v) for k, v in store_mod._VERIFIED.items()}
    assert len(verified) == 1 and len(next(iter(verified.values()))) >= 2
    calls = []
    real = store_mod.hashlib.sha256
    store_mod.hashlib.sha256 = lambda *a: calls.append(1) or real(*a)
    try:
        again = st.load("k", "fp", lazy=True)
        assert torch.equal(again["theta"], t["theta"])
    finally:
        store_mod.hashlib.sha256 = real
    assert calls == []  # the same file in the same process: nothing hashed again
    st.save("k", {n: x + 1 if x.is_floating_point() else x for n, x in t.items()}, "fp2")
    assert torch.equal(theta, t["theta"])  # the old file lives on while it is mapped
    assert torch.equal(st.load("k", "fp2", lazy=True)["theta"], t["theta"] + 1)


@posix_only
def test_lazy_load_refuses_links_and_fifos(tmp_path):
    root = tmp_path / "s"
    st = Store(root)
    st.save("k", _tensors(), "fp")
    path = _file(root, st, "k")
    target = tmp_path / "elsewhere.safetensors"
    os.replace(path, target)
    os.symlink(target, path)
    with pytest.raises(StoreError, match="symbolic link"):
        st.load("k", "fp", lazy=True)
    os.unlink(path)
    os.mkfifo(path)
    with pytest.raises(StoreError, match="not a regular file"):
        st.load("k", "fp", lazy=True)


def test_cached_passes_lazy_through(tmp_path):
    st = Store(tmp_path / "s")
    t = _tensors()
    first = st.cached("k", "fp", lambda: t, lazy=True)
    assert first is t  # computed: returned as computed
    second = st.cached("k", "fp", lambda: pytest.fail("recomputed"), lazy=True)
    assert isinstance(second, MappedEntry) and torch.equal(second["V"], t["V"])


def test_a_reopened_lens_reads_its_big_entries_lazily(tmp_path, monkeypatch):
    """Pipeline._load maps big entries: a second Lens on the store gets the same results from
    memory-mapped entries; V is not even verified until example_embeddings asks for it."""
    from semlens_widgets.lens import Lens

    monkeypatch.setattr(store_mod, "_LAZY_MIN_BYTES", 1024)
    monkeypatch.setattr(store_mod, "_BLOCK_BYTES", 512)

    from _models import TinyCNN, red_square_images, tiny_clip_fm

    (tmp_path / "cfg").mkdir()
    fm = tiny_clip_fm(tmp_path / "cfg")
    x, _ = red_square_images(24, size=16, square=4, seed=0)
    data = torch.utils.data.TensorDataset(x, torch.arange(24) % 3)
    model = TinyCNN(num_classes=3)
    layers = ["features.relu1", "features.relu2"]

    def lens():
        return Lens(model, data, fm, layers, m=4, crop="activation", store=tmp_path / "s", progress=False,
                    chunk_size=8, batch_size=32).run()

    def results(l):
        return {layer: (l.topm(layer).indices, l.topm(layer).values, l.boxes(layer),
                        l.example_embeddings(layer), l.embeddings(layer)) for layer in layers}

    first = lens()
    ref = results(first)
    store_mod._VERIFIED.clear()
    second = lens()
    mapped = second.pipeline._embedded["features.relu2"]
    assert isinstance(mapped, MappedEntry) and "V" not in mapped._tensors
    got = results(second)
    for layer in layers:
        for a, b in zip(ref[layer], got[layer]):
            assert a.dtype == b.dtype and torch.equal(a, b), layer
    assert "V" in mapped._tensors
    a, b = first.search("red square", k=3), second.search("red square", k=3)
    assert a.equals(b)
