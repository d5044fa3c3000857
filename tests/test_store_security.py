"""Store: a hostile store directory cannot be turned against its user.

Stores are shared between people. Every test here builds the hostile store AND its "victim"
files inside its own ``tmp_path`` and asserts that the victims survive; nothing points at a
real system path.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import save as st_save

from semlens_widgets import store as store_mod
from semlens_widgets.store import Store, StoreError

TOKEN = "0123456789ab"
posix_only = pytest.mark.skipif(os.name != "posix", reason="symbolic links and FIFOs as an unprivileged user: POSIX")


def _store_with_entry(tmp_path):
    """A store ``tmp_path/s`` with one real entry ``k``, and a victim file outside its root."""
    root = tmp_path / "s"
    st = Store(root)
    st.save("k", {"a": torch.arange(4)}, "f")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    return st, root, victim


def _tamper(root, fn):
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path.read_bytes()


def _snapshot(d):
    """Every file under ``d`` (names and bytes), symlinks as their target."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(d))] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p.relative_to(d))] = p.read_bytes()
    return out


BAD_FILES = [
    "../victim.txt",
    "../../victim.txt",
    "VICTIM_ABS",  # replaced by the victim's absolute path
    f"sub/k.{TOKEN}.safetensors",
    f"../k.{TOKEN}.safetensors",
    f"k.{TOKEN}.safetensors\x00",
    f"k\x00.{TOKEN}.safetensors",
    f"a\\b.{TOKEN}.safetensors",
    f"k.{TOKEN.upper()}.safetensors",
    f".k.{TOKEN}.safetensors",
    f"..{TOKEN}.safetensors",
    "k.safetensors",
    "manifest.json",
    ".tmp-abc.part",
    "",
    ".",
    "..",
    "x" * 300 + f".{TOKEN}.safetensors",
    123,
    None,
    ["k", TOKEN],
]


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda b: repr(b)[:40])
def test_manifest_file_outside_pattern_is_refused_and_nothing_deleted(tmp_path, bad):
    st, root, victim = _store_with_entry(tmp_path)
    if bad == "VICTIM_ABS":
        bad = str(victim)
    _tamper(root, lambda d: d["entries"]["k"].__setitem__("file", bad))
    before = _snapshot(tmp_path)
    # every operation that touches entry files refuses, naming the entry and the bad value
    ops = {
        "open": lambda: Store(root),
        "load": lambda: st.load("k", "f"),
        "has": lambda: st.has("k", "f"),
        "save": lambda: st.save("k", {"a": torch.ones(2)}, "f2"),
        "delete": lambda: st.delete("k"),
        "delete_many": lambda: st.delete_many(["k"]),
        "keys": lambda: st.keys(),
        "set_info": lambda: st.set_info("x", 1),
        "cached": lambda: st.cached("k", "f", lambda: {"a": torch.ones(2)}),
    }
    for name, op in ops.items():
        with pytest.raises(StoreError) as e:
            op()
        msg = str(e.value)
        assert "'k'" in msg and "file" in msg, (name, msg)
        assert repr(bad)[:60] in msg or (isinstance(bad, str) and len(bad) > 100), (name, msg)
        assert "safetensors" in msg  # says what is accepted
    assert victim.read_text() == "precious"
    assert _snapshot(tmp_path) == before  # nothing deleted, nothing written


@posix_only
def test_entry_symlinked_outside_is_not_read(tmp_path):
    """An entry whose file is a symlink to a (valid safetensors) file outside the root: the store
    refuses to read through it, even when the manifest carries the right checksum."""
    st, root, _ = _store_with_entry(tmp_path)
    secret = tmp_path / "secret.safetensors"
    data = st_save({"a": torch.arange(4) * 7})
    secret.write_bytes(data)
    fname = f"k.{TOKEN}.safetensors"
    (root / fname).symlink_to(secret)
    _tamper(root, lambda d: d["entries"]["k"].update(file=fname, sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(StoreError, match="symbolic link"):
        st.load("k", "f")
    assert not st.has("k", "f")
    # overwriting the entry removes the link only, never its target
    st.save("k", {"a": torch.ones(2)}, "f2")
    assert secret.read_bytes() == data
    torch.testing.assert_close(Store(root).load("k", "f2")["a"], torch.ones(2))


@posix_only
def test_entry_file_that_is_a_fifo_or_directory_does_not_hang(tmp_path):
    st, root, _ = _store_with_entry(tmp_path)
    fname = f"k.{TOKEN}.safetensors"
    os.mkfifo(root / fname)
    _tamper(root, lambda d: d["entries"]["k"].update(file=fname))
    with pytest.raises(StoreError, match="regular file"):
        st.load("k", "f")
    assert not st.has("k", "f")


@posix_only
def test_symlinked_manifest_is_refused(tmp_path):
    root = tmp_path / "s"
    Store(root).save("k", {"a": torch.zeros(1)}, "f")
    outside = tmp_path / "elsewhere.json"
    os.replace(root / "manifest.json", outside)
    (root / "manifest.json").symlink_to(outside)
    before = outside.read_bytes()
    with pytest.raises(StoreError, match="symbolic link"):
        Store(root)
    assert outside.read_bytes() == before


@posix_only
def test_planted_lock_symlink_does_not_write_outside(tmp_path):
    st, root, victim = _store_with_entry(tmp_path)
    for lock in root.glob(".semlens*.lock"):
        lock.unlink()
        lock.symlink_to(victim)
    assert list(root.glob(".semlens*.lock")), "the store keeps its lock files in its root"
    with pytest.raises(StoreError, match="symbolic link"):
        st.save("k2", {"a": torch.zeros(1)}, "f")
    assert victim.read_text() == "precious"


def test_duplicate_file_references_are_refused(tmp_path):
    """Two entries naming one file: deleting one would leave the other dangling."""
    st, root, _ = _store_with_entry(tmp_path)
    st.save("k2", {"a": torch.zeros(1)}, "f")
    f1 = st.meta("k")["file"]
    _tamper(root, lambda d: d["entries"]["k2"].update(file=f1))
    with pytest.raises(StoreError, match="k2"):
        st.delete("k2")
    assert (root / f1).exists()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(entries=[]), r"entries.*must be a dict.*list"),
        (lambda d: d.update(info=[1]), r"info.*must be a dict.*list"),
        (lambda d: d["entries"].update(k="x"), r"entry 'k'.*must be a dict.*str"),
        (lambda d: d["entries"]["k"].pop("file"), r"entry 'k'.*'file'"),
        (lambda d: d["entries"]["k"].pop("fingerprint"), r"entry 'k'.*'fingerprint'"),
        (lambda d: d["entries"]["k"].update(fingerprint=3), r"entry 'k'.*'fingerprint'.*int"),
        (lambda d: d["entries"]["k"].update(sha256="zz"), r"entry 'k'.*'sha256'.*'zz'"),
        (lambda d: d["entries"]["k"].update(shapes=[1]), r"entry 'k'.*'shapes'"),
        (lambda d: d["entries"]["k"].update(shapes={"a": [-1]}), r"entry 'k'.*'shapes'"),
        (lambda d: d["entries"]["k"].update(meta="m"), r"entry 'k'.*'meta'"),
        (lambda d: d["entries"].update({" k": d["entries"]["k"]}), r"key ' k'"),
    ],
)
def test_malformed_manifest_structure(tmp_path, mutate, match):
    st, root, _ = _store_with_entry(tmp_path)
    _tamper(root, mutate)
    before = _snapshot(root)
    with pytest.raises(StoreError, match=match):
        Store(root)
    with pytest.raises(StoreError, match=match):
        st.save("other", {"a": torch.zeros(1)}, "f")
    assert _snapshot(root) == before


def test_huge_or_deep_manifest_is_a_clear_error(tmp_path, monkeypatch):
    st, root, _ = _store_with_entry(tmp_path)
    monkeypatch.setattr(store_mod, "_MAX_MANIFEST_BYTES", 10_000)
    _tamper(root, lambda d: d["info"].update(pad="x" * 20_000))
    with pytest.raises(StoreError, match="larger than"):
        Store(root)
    monkeypatch.undo()
    (root / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(StoreError, match="cannot read store manifest"):
        Store(root)


def test_keys_colliding_after_safe_name_stay_apart(tmp_path):
    root = tmp_path / "s"
    st = Store(root)
    keys = ["a/b", "a_b", "a b", "a\x00b", "a..b/", "../a_b"]
    for i, k in enumerate(keys):
        st.save(k, {"i": torch.tensor([i])}, "f")
    st2 = Store(root)
    for i, k in enumerate(keys):
        assert int(st2.load(k, "f")["i"]) == i
    assert st2.delete("a_b")
    for i, k in enumerate(keys):
        if k != "a_b":
            assert int(st2.load(k, "f")["i"]) == i
    files = sorted(p.name for p in root.iterdir() if p.name.endswith(".safetensors"))
    assert len(files) == len(keys) - 1 and all("/" not in f and not f.startswith(".") for f in files)
    assert not (tmp_path / "a_b").exists()


@posix_only
def test_save_removes_orphans_of_its_own_patterns_only(tmp_path):
    """Killed runs leave ``.tmp-*`` parts and unreferenced tensor files: the next save removes
    them, and nothing else in the directory."""
    st, root, victim = _store_with_entry(tmp_path)
    orphans = [f"k.{TOKEN}.safetensors", f"collect_l.{'f' * 12}.safetensors",
               ".tmp-store-a1_b2c3d4.part", ".tmp-a1_b2c3d.part"]  # the latter: earlier versions' parts
    for name in orphans:
        (root / name).write_bytes(b"half")
    keep = {
        "notes.txt": b"mine",
        "x.safetensors": b"mine",
        f"photo.{TOKEN}.safetensors.bak": b"mine",
        f"k.{TOKEN[:-1]}.safetensors": b"mine",
        ".tmp-notes.txt": b"mine",
        ".tmp-write-a1b2c3d4.part": b"mine",  # atomic_write_bytes of another writer (e.g. a report)
    }
    for name, data in keep.items():
        (root / name).write_bytes(data)
    (root / f"sub.{TOKEN}.safetensors").mkdir()
    (root / f"link.{'1' * 12}.safetensors").symlink_to(victim)
    st.save("k2", {"a": torch.zeros(1)}, "f")
    names = set(os.listdir(root))
    for name in orphans:
        assert name not in names, name
    for name, data in keep.items():
        assert (root / name).read_bytes() == data
    assert (root / f"sub.{TOKEN}.safetensors").is_dir()
    assert (root / f"link.{'1' * 12}.safetensors").is_symlink() and victim.read_text() == "precious"
    st2 = Store(root)
    torch.testing.assert_close(st2.load("k", "f")["a"], torch.arange(4))
    torch.testing.assert_close(st2.load("k2", "f")["a"], torch.zeros(1))


@posix_only
def test_clear_removes_own_files_only(tmp_path):
    st, root, victim = _store_with_entry(tmp_path)
    (root / "notes.txt").write_text("mine")
    (root / f"link.{TOKEN}.safetensors").symlink_to(victim)
    st.clear()
    assert st.keys() == [] and (root / "notes.txt").read_text() == "mine"
    assert victim.read_text() == "precious"
    assert not [p for p in root.iterdir() if p.is_file() and not p.is_symlink() and p.suffix == ".safetensors"]
