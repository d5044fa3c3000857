"""Store: concurrent processes on one store directory (real processes, real locks).

Every child is a fresh ``python -c`` process started with subprocess; they start together
behind a "go" file so that their manifest updates really interleave.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from semlens_widgets.store import Store, StoreError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="inter-process locks need fcntl (POSIX)")

REPO = str(Path(__file__).resolve().parents[1])
PRELUDE = textwrap.dedent(
    f"""
    import os, sys, time, json
    sys.path.insert(0, {REPO!r})
    import torch
    from semlens_widgets.store import Store, StoreError
    def wait_for(path, timeout=60):
        open(path + "." + str(os.getpid()) + ".ready", "w").close()  # imports done, at the start line
        t0 = time.monotonic()
        while not os.path.exists(path):
            if time.monotonic() - t0 > timeout:
                raise SystemExit("timed out waiting for " + path)
            time.sleep(0.005)
    """
)


def _spawn(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _go(go: Path, procs, timeout=60):
    """Open the start line once every child waits at it."""
    t0 = time.monotonic()
    while len(list(go.parent.glob(go.name + ".*.ready"))) < len(procs):
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(p.communicate()[1][-3000:])
        assert time.monotonic() - t0 < timeout, "children never reached the start line"
        time.sleep(0.01)
    go.write_text("go")


def _finish(procs, timeout=120):
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


def _wait_file(path: Path, proc: subprocess.Popen, timeout=60):
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1][-3000:])
        assert time.monotonic() - t0 < timeout, f"child never wrote {path}"
        time.sleep(0.01)


SAVER = """
root, tag, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
st = Store(root)
wait_for(go)
t0 = time.perf_counter()
for i in range(n):
    st.save(f"{tag}/{i}", {"v": torch.full((8,), float(i)), "tag": torch.tensor([ord(tag)])}, f"fp{i}")
print(time.perf_counter() - t0)
"""


def test_two_processes_150_saves_each_lose_nothing(tmp_path):
    root = tmp_path / "s"
    Store(root).save("prior", {"v": torch.zeros(3)}, "fp")
    go = tmp_path / "go"
    procs = [_spawn(SAVER, root, tag, 150, go) for tag in "ab"]
    _go(go, procs)
    seconds = [float(o) for o in _finish(procs)]
    print(f"150 saves per process took {seconds} s")
    st = Store(root)
    keys = st.keys()
    expected = {"prior"} | {f"{t}/{i}" for t in "ab" for i in range(150)}
    lost = expected - set(keys)
    assert not lost, f"{len(lost)} keys lost"
    assert len(keys) == 301
    for k in keys:  # zero dangling: every entry's file exists and loads with its content
        fp = "fp" if k == "prior" else f"fp{k.split('/')[1]}"
        got = st.load(k, fp)
        assert got is not None, k
        if k != "prior":
            assert got["v"][0].item() == float(k.split("/")[1]) and got["tag"].item() == ord(k[0])
    files = {p.name for p in root.iterdir() if p.name.endswith(".safetensors")}
    assert files == {st.meta(k)["file"] for k in keys}  # and no orphan or temp file is left
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_threads_saving_through_two_store_objects(tmp_path):
    root = tmp_path / "s"
    a, b = Store(root), Store(root)

    def work(st, tag):
        for i in range(40):
            st.save(f"{tag}/{i}", {"v": torch.tensor([i])}, "f")

    ts = [threading.Thread(target=work, args=(s, t)) for s, t in ((a, "a"), (b, "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(Store(root).keys()) == 80


HOLDER = """
root, name, ready, release = sys.argv[1:5]
st = Store(root)
with st.lock(name):
    open(ready, "w").write(str(os.getpid()))
    wait_for(release)
"""


def test_step_lock_refuses_or_waits_naming_the_holder(tmp_path):
    root = tmp_path / "s"
    st = Store(root)
    ready, release = tmp_path / "ready", tmp_path / "release"
    p = _spawn(HOLDER, root, "step:collect", ready, release)
    try:
        _wait_file(ready, p)
        with pytest.raises(StoreError, match=rf"pid {p.pid}\b") as e:
            with st.lock("step:collect", wait=False):
                pass
        assert "step:collect" in str(e.value)
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=rf"waited 0.3 s.*pid {p.pid}\b"), pytest.warns(UserWarning, match="waiting"):
            with st.lock("step:collect", wait=True, timeout=0.3):
                pass
        assert time.monotonic() - t0 >= 0.3
        with st.lock("step:other", wait=False):  # another name is free
            pass
        # wait=True waits (saying what for) until the holder is done, then holds it
        threading.Timer(0.5, release.write_text, args=("x",)).start()
        with pytest.warns(UserWarning, match=rf"waiting.*step:collect.*pid {p.pid}\b"):
            with st.lock("step:collect", wait=True, timeout=60) as lk:
                assert p.poll() is not None or p.wait(timeout=30) == 0
                assert lk.name == "step:collect"
    finally:
        release.write_text("x")
        _finish([p])


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
    root = tmp_path / "s"
    st = Store(root)
    ready, release = tmp_path / "ready", tmp_path / "release"
    p = _spawn(HOLDER, root, "step:embed", ready, release)
    _wait_file(ready, p)
    with pytest.raises(StoreError, match=rf"pid {p.pid}\b"):
        with st.lock("step:embed", wait=False):
            pass
    os.kill(p.pid, signal.SIGKILL)  # dies holding the lock, its lock file stays behind
    p.wait(timeout=30)
    assert any(".semlens-step" in n for n in os.listdir(root))
    with st.lock("step:embed", wait=False):
        # taken over: the lock file now names this process
        probe = _spawn(
            """
            st = Store(sys.argv[1])
            try:
                with st.lock("step:embed", wait=False):
                    print("acquired")
            except StoreError as e:
                print(str(e))
            """,
            root,
        )
        out = _finish([probe])[0]
        assert f"pid {os.getpid()}" in out and "acquired" not in out
    assert not any(".semlens-step" in n for n in os.listdir(root))  # released: lock file removed


def test_stale_lock_file_naming_a_dead_pid_is_taken_over(tmp_path):
    """A lock file left by a process on this host that no longer exists (e.g. after a reboot)."""
    root = tmp_path / "s"
    st = Store(root)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    with st.lock("step:x"):
        lock_files = [n for n in os.listdir(root) if n.startswith(".semlens-step")]
    assert len(lock_files) == 1
    import socket

    (root / lock_files[0]).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "name": "step:x"}))
    with st.lock("step:x", wait=False):
        info = json.loads((root / lock_files[0]).read_text())
        assert info["pid"] == os.getpid()


def test_step_lock_is_reentrant_in_one_thread_and_excludes_other_threads(tmp_path):
    st = Store(tmp_path / "s")
    (tmp_path / "alias").symlink_to(tmp_path / "s")
    with st.lock("a"):
        with Store(tmp_path / "alias").lock("a", wait=False):  # same thread, the root spelled otherwise
            st.save("k", {"a": torch.zeros(1)}, "f")
        got = []

        def other():
            try:
                with st.lock("a", wait=False):
                    got.append("acquired")
            except StoreError as e:
                got.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert got and "acquired" not in got[0] and f"pid {os.getpid()}" in got[0]


def test_memory_store_lock_is_a_no_op():
    st = Store(None)
    with st.lock("x", wait=False):
        with st.lock("x", wait=False):
            st.save("k", {"a": torch.zeros(1)}, "f")
    assert st.cached("k", "f", lambda: 1 / 0)["a"].shape == (1,)


CACHED = """
root, counter, go = sys.argv[1:4]
st = Store(root)
def compute():
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(1.0)
    return {"v": torch.arange(5)}
wait_for(go)
out = st.cached("expensive", "fp", compute)
print(out["v"].tolist())
"""


def _race(tmp_path, code):
    """Two children run ``code`` (argv: root, counter, go) on one store at the same moment;
    returns their printed JSON and the lines they appended to the counter file."""
    root = tmp_path / "s"
    Store(root)
    counter, go = tmp_path / "counter", tmp_path / "go"
    procs = [_spawn(code, root, counter, go) for _ in range(2)]
    _go(go, procs)
    return [json.loads(o) for o in _finish(procs)], counter.read_text().split()


def test_cached_race_computes_once(tmp_path):
    outs, computed = _race(tmp_path, CACHED)
    assert outs == [[0, 1, 2, 3, 4]] * 2
    assert len(computed) == 1, "the second process recomputed instead of loading"


CHUNKED = """
root, counter, go = sys.argv[1:4]
st = Store(root)
def compute(a, b):
    with open(counter, "a") as f:
        f.write(f"{a}\\n")
    time.sleep(0.3)
    return {"x": torch.arange(a, b) * 2}
wait_for(go)
parts = st.chunked("step/x", "fp", 12, 2, compute, desc="x")
print(torch.cat([p["x"] for p in parts]).tolist())
"""


def test_chunked_race_computes_each_chunk_once(tmp_path):
    outs, computed = _race(tmp_path, CHUNKED)
    assert outs == [list(range(0, 24, 2))] * 2
    assert sorted(map(int, computed)) == list(range(0, 12, 2)), "a chunk was computed twice (or not at all)"


KEEP_SAVING = """
root, go = sys.argv[1:3]
st = Store(root)
wait_for(go)
i = 0
while True:  # overwrite a few keys with ~4 MB files until killed
    st.save(f"k/{i % 5}", {"v": torch.full((1 << 20,), float(i))}, "fp")
    i += 1
"""


@pytest.mark.parametrize("after", [3, 11])
def test_killed_save_leaves_whole_entries_and_the_next_save_sweeps(tmp_path, after):
    """SIGKILL at a random point of a stream of saves: every entry still loads whole, and the
    next save removes the killed run's temp part / unregistered file."""
    root = tmp_path / "s"
    Store(root)
    go = tmp_path / "go"
    p = _spawn(KEEP_SAVING, root, go)
    _go(go, [p])
    t0 = time.monotonic()
    while len(Store(root).keys()) < 5 or sum(1 for _ in root.glob("*.safetensors")) < after % 7:
        assert p.poll() is None and time.monotonic() - t0 < 60
        time.sleep(0.01)
    time.sleep(0.001 * after)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    st = Store(root)
    for k in st.keys():
        got = st.load(k, "fp")
        assert got is not None and bool((got["v"] == got["v"][0]).all()), k
    st.save("after", {"v": torch.zeros(1)}, "fp")
    files = {p.name for p in root.iterdir() if p.name.endswith(".safetensors")}
    assert files == {st.meta(k)["file"] for k in st.keys()}
    assert not [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]
