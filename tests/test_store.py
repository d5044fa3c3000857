"""Store: safetensors + manifest, fingerprints, atomic writes, corruption handling."""
from __future__ import annotations

import json
import os

import pytest
import torch

from semlens_widgets import store as store_mod
from semlens_widgets.store import Store, StoreError, fingerprint, module_fingerprint, tensor_digest


@pytest.fixture(params=["disk", "memory"])
def st(request, tmp_path):
    return Store(tmp_path / "s") if request.param == "disk" else Store(None)


def test_save_load_roundtrip(st):
    t = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.ones(2, dtype=torch.float16), "m": torch.tensor([True, False])}
    st.save("embed/layer3", t, "fp1", meta={"m": 30, "layers": ["x"]})
    out = st.load("embed/layer3", "fp1")
    assert set(out) == set(t)
    for k in t:
        assert out[k].dtype == t[k].dtype
        torch.testing.assert_close(out[k], t[k])
    assert st.has("embed/layer3", "fp1") and not st.has("embed/layer3", "fp2")
    meta = st.meta("embed/layer3")
    assert meta["meta"] == {"m": 30, "layers": ["x"]}
    assert meta["shapes"]["a"] == [3, 4] and meta["fingerprint"] == "fp1"
    assert "package_version" in meta and "created" in meta
    assert st.keys() == ["embed/layer3"] and st.keys("collect/") == []


def test_stale_fingerprint_and_missing_are_none(st):
    assert st.load("nope", "x") is None and st.meta("nope") is None
    st.save("k", {"a": torch.zeros(1)}, "old")
    assert st.load("k", "new") is None
    st.save("k", {"a": torch.ones(1)}, "new")
    torch.testing.assert_close(st.load("k", "new")["a"], torch.ones(1))
    assert st.load("k", "old") is None


def test_loaded_tensors_do_not_alias_store(st):
    x = torch.zeros(3)
    st.save("k", {"a": x}, "f")
    x += 1  # mutating the caller's tensor after save does not change the stored one
    out = st.load("k", "f")
    out["a"] += 5
    torch.testing.assert_close(st.load("k", "f")["a"], torch.zeros(3))


def test_delete_and_clear(st):
    st.save("a/1", {"t": torch.zeros(1)}, "f")
    st.save("a/2", {"t": torch.zeros(1)}, "f")
    st.save("b", {"t": torch.zeros(1)}, "f")
    assert st.delete("a/1") and not st.delete("a/1")
    assert st.keys() == ["a/2", "b"]
    assert st.delete_many(["a/2", "zzz"]) == 1
    st.set_info("lens", {"model": "x"})
    st.clear()
    assert st.keys() == [] and st.get_info("lens") is None


def test_shared_and_noncontiguous_tensors(st):
    base = torch.randn(4, 6)
    st.save("k", {"view": base[:, ::2], "t": base.t(), "same": base}, "f")
    out = st.load("k", "f")
    torch.testing.assert_close(out["view"], base[:, ::2])
    torch.testing.assert_close(out["t"], base.t())


def test_input_errors(st):
    with pytest.raises(ValueError, match="non-empty string"):
        st.save("", {"a": torch.zeros(1)}, "f")
    with pytest.raises(TypeError, match="non-empty dict"):
        st.save("k", {}, "f")
    with pytest.raises(TypeError, match="value of 'a' must be a torch.Tensor"):
        st.save("k", {"a": [1, 2]}, "f")
    with pytest.raises(TypeError, match="fingerprint must be a non-empty str"):
        st.save("k", {"a": torch.zeros(1)}, None)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        st.save("k", {"a": torch.zeros(1)}, "f", meta={"x": object()})


def test_disk_layout_is_safetensors_and_json_only(tmp_path):
    st = Store(tmp_path)
    st.save("crops/layer1.0.relu@1/0-64", {"boxes": torch.zeros(2, 3, 4, dtype=torch.long)}, "f")
    names = sorted(os.listdir(tmp_path))
    assert "manifest.json" in names
    locks = [n for n in names if n.startswith(".semlens-") and n.endswith(".lock")]
    assert all((tmp_path / n).read_bytes() == b"" for n in locks)  # inter-process lock files: empty
    files = [n for n in names if n != "manifest.json" and n not in locks]
    assert len(files) == 1 and files[0].endswith(".safetensors") and "/" not in files[0]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "semlens-store"
    assert manifest["entries"]["crops/layer1.0.relu@1/0-64"]["file"] == files[0]
    # a second process (new Store object) sees the same entry
    out = Store(tmp_path).load("crops/layer1.0.relu@1/0-64", "f")
    assert out["boxes"].shape == (2, 3, 4)


def test_overwrite_removes_old_file(tmp_path):
    st = Store(tmp_path)
    st.save("k", {"a": torch.zeros(10)}, "f1")
    st.save("k", {"a": torch.ones(10)}, "f2")
    files = [n for n in os.listdir(tmp_path) if n.endswith(".safetensors")]
    assert len(files) == 1


def test_corrupt_or_missing_file_is_none(tmp_path):
    st = Store(tmp_path)
    st.save("k", {"a": torch.randn(100)}, "f")
    fname = st.meta("k")["file"]
    path = tmp_path / fname
    data = bytearray(path.read_bytes())
    data[-10:] = b"\x00" * 10  # flip the tail: still parseable by safetensors, wrong content
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        assert st.load("k", "f") is None
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated (half-written) file
    with pytest.warns(UserWarning, match="corrupt"):
        assert st.load("k", "f") is None
    path.unlink()
    assert not st.has("k", "f")
    with pytest.warns(UserWarning, match="unreadable"):
        assert st.load("k", "f") is None


def test_crash_during_save_keeps_previous_entry(tmp_path, monkeypatch):
    """A crash while writing the tensor file leaves the old entry intact and no half file."""
    st = Store(tmp_path)
    st.save("k", {"a": torch.zeros(4)}, "f1")

    real_replace = os.replace

    def boom(src, dst):
        raise KeyboardInterrupt  # Ctrl-C right before the rename

    monkeypatch.setattr(store_mod.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        st.save("k", {"a": torch.ones(4)}, "f2")
    monkeypatch.setattr(store_mod.os, "replace", real_replace)
    torch.testing.assert_close(st.load("k", "f1")["a"], torch.zeros(4))
    assert st.load("k", "f2") is None
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]  # temp file cleaned


def test_crash_between_file_and_manifest(tmp_path, monkeypatch):
    """File written, manifest update interrupted: the manifest still points at the old, whole
    file (the new file is an orphan, never read)."""
    st = Store(tmp_path)
    st.save("k", {"a": torch.zeros(4)}, "f1")

    def boom(data):
        raise KeyboardInterrupt

    monkeypatch.setattr(st, "_write_manifest", boom)
    with pytest.raises(KeyboardInterrupt):
        st.save("k", {"a": torch.ones(4)}, "f2")
    st2 = Store(tmp_path)
    torch.testing.assert_close(st2.load("k", "f1")["a"], torch.zeros(4))
    assert st2.load("k", "f2") is None
    st2.clear()
    assert [n for n in os.listdir(tmp_path) if not n.endswith(".lock")] == ["manifest.json"]


def test_store_dir_errors(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        Store(f)
    other = tmp_path / "other"
    other.mkdir()
    (other / "photo.jpg").write_text("x")
    with pytest.raises(StoreError, match="not a semlens store"):
        Store(other)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StoreError, match="not a semlens store manifest"):
        Store(bad)
    with pytest.raises(TypeError, match="path"):
        Store(123)


def test_info_records(tmp_path):
    st = Store(tmp_path)
    assert st.get_info("lens") is None
    st.set_info("lens", {"model": "abc", "n": 3})
    assert Store(tmp_path).get_info("lens") == {"model": "abc", "n": 3}


def test_fingerprint_is_canonical():
    a = fingerprint({"b": 1, "a": [1, 2]}, "x", (1, 2))
    b = fingerprint({"a": (1, 2), "b": 1}, "x", [1, 2])
    assert a == b and len(a) == 64
    assert fingerprint(1) != fingerprint("1") and fingerprint(1.0) != fingerprint(2.0)
    assert fingerprint(torch.zeros(3)) == fingerprint(torch.zeros(3))
    assert fingerprint(torch.zeros(3)) != fingerprint(torch.zeros(4))
    with pytest.raises(TypeError, match="JSON-able"):
        fingerprint(object())


def test_tensor_digest_big_tensors_sampled_but_sensitive():
    big = torch.randn(1 << 21)  # over the full-hash limit: strided sample + moments
    d0 = tensor_digest(big)
    changed = big.clone()
    changed[1] += 1e-3  # not on the sample grid: caught by the moments
    assert tensor_digest(changed) != d0
    assert tensor_digest(big.clone()) == d0
    assert tensor_digest(big.to(torch.bfloat16)) != tensor_digest(big.to(torch.float16))


def test_module_fingerprint_tracks_weights_and_buffers():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    f0 = module_fingerprint(net)
    assert module_fingerprint(net) == f0
    with torch.no_grad():
        net[1].running_mean += 0.1
    assert module_fingerprint(net) != f0


def test_tensor_digest_of_big_tensors_does_not_depend_on_thread_count():
    # float64 moments summed by several threads rounded differently from one thread: a store
    # made under torchrun (1 thread per process) looked stale in a notebook (many threads)
    from semlens_widgets.store import tensor_digest

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3_000_017, generator=g) * torch.logspace(-8, 8, 3_000_017)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = tensor_digest(x)
        torch.set_num_threads(max(2, before))
        many = tensor_digest(x)
    finally:
        torch.set_num_threads(before)
    assert one == many


def test_tensor_digest_of_big_tensors_sees_a_change_outside_the_sample():
    from semlens_widgets.store import tensor_digest

    x = torch.randn(2_000_003, generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[12_345] = y[12_345] + 1e-3  # not one of the 2**16 strided sample positions
    assert tensor_digest(x) != tensor_digest(y)
    assert tensor_digest(x) == tensor_digest(x.clone())
    assert tensor_digest(torch.ones(2_000_001, dtype=torch.bool)) != tensor_digest(torch.zeros(2_000_001, dtype=torch.bool))
