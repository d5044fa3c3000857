"""The install a user makes. The wheel: ``python -m build`` of the committed sources contains the
built JS bundle and the demo world's weights, installs into a fresh virtual environment, and
``semlens demo`` runs from it. scripts/setup.sh: torch from PyTorch's CPU index where there is no
NVIDIA GPU, PyPI (quickly) when that index is unreachable, PyPI on a GPU machine.

The venv is made with ``--system-site-packages`` and the wheel installed with ``--no-deps`` so
that torch & co. (gigabytes) are not installed a second time; the package itself then comes from
the wheel (asserted: ``semlens_widgets.__file__`` lies in the venv), and everything runs from a
temp dir outside the repository.

    python -m pytest tests/test_wheel.py -q      # ~1-2 min
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VIEWS = ("search", "gallery", "map", "sankey", "audit", "compare", "explorer")


def _tracked_copy(dst: Path) -> Path:
    """The files git tracks, as they are in the working tree, copied to ``dst`` (no build
    leftovers, stores or caches of the checkout end up in the wheel)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        src = REPO / f.decode()
        if src.is_file():
            (dst / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f.decode())
    return dst


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the wheel is built from the tracked files")
    tmp = tmp_path_factory.mktemp("wheel")
    src = _tracked_copy(tmp / "src")
    # no isolation: the build backend (setuptools) of this environment, no download
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, timeout=600)
    (whl,) = (tmp / "dist").glob("semlens_widgets-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_contains_the_bundle_and_the_demo_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for view in VIEWS:
        assert f"semlens_widgets/static/{view}.js" in names, view
    assert "semlens_widgets/static/semlens.css" in names
    for f in ("classifier.safetensors", "clip.safetensors"):
        assert f"semlens_widgets/demo/weights/{f}" in names
    assert "semlens_widgets/demo/semlens-demo-clip.json" in names
    assert {"semlens_widgets/report/__init__.py", "semlens_widgets/widgets/__init__.py",
            "semlens_widgets/kernels/__init__.py"} <= names
    assert not any(n.startswith(("tests/", "js/", "notebooks/")) for n in names)
    # the bundled files are those of the checkout, byte for byte
    z = zipfile.ZipFile(wheel)
    for view in VIEWS:
        assert z.read(f"semlens_widgets/static/{view}.js") == (REPO / "semlens_widgets" / "static" / f"{view}.js").read_bytes()
    entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "semlens = semlens_widgets.cli:main" in entry


@pytest.mark.slow
def test_semlens_demo_runs_from_the_installed_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
                    str(wheel)], check=True, timeout=300)
    work = tmp_path / "work"  # a clean directory: nothing of the repository on the path
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(TQDM_DISABLE="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    where = subprocess.run(
        [str(py), "-c", "import semlens_widgets as s, semlens_widgets.widgets._base as b; print(s.__file__); "
                        "print(b.STATIC / 'search.js')"],
        cwd=work, env=env, capture_output=True, text=True, check=True, timeout=300).stdout.split()
    assert len(where) == 2 and all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), where  # not the checkout
    assert Path(where[1]).is_file()
    out = subprocess.run([str(venv / "bin" / "semlens"), "demo", "--store", "store", "--layers", "block4", "--m", "5",
                          "--n-per-class", "10", "--no-map", "--quiet"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "labels" in out.stdout and "results stored in" in out.stdout
    assert "open a notebook" in out.stdout and "write a report" in out.stdout  # what to do next
    assert (work / "store" / "manifest.json").exists()


# --------------------------------------------------------------------------- scripts/setup.sh
def _setup(tmp_path, target="runtime", torch=False, gpu=False, index=None):
    """scripts/setup.sh in dry-run mode (pip commands printed, not run) with a python that has
    torch or not and a PATH with or without nvidia-smi; returns (stdout + stderr, pip lines)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    py = bin_ / "python3"
    py.write_text("#!/bin/bash\n"
                  f'if [ "$1" = "-c" ] && [[ "$2" == *"import torch"* ]]; then exit {0 if torch else 1}; fi\n'
                  f'exec {sys.executable} "$@"\n')
    py.chmod(0o755)
    if gpu:
        (bin_ / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (bin_ / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PYTHON": str(py), "SLW_SETUP_DRY_RUN": "1", "PATH": f"{bin_}{os.pathsep}/usr/bin:/bin"}
    env.pop("SLW_TORCH_INDEX", None)
    if index:
        env["SLW_TORCH_INDEX"] = index
    out = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), target], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr, [l for l in out.stdout.splitlines() if l.startswith("dry-run:")]


@pytest.fixture
def cpu_index(tmp_path):
    """A local stand-in for PyTorch's CPU index (a directory with torch/ served over HTTP)."""
    import http.server
    import threading

    root = tmp_path / "index"
    (root / "torch").mkdir(parents=True)
    (root / "torch" / "index.html").write_text("<html></html>")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_setup_takes_cpu_torch_where_there_is_no_gpu(tmp_path, cpu_index):
    _, pip = _setup(tmp_path, "dev", index=cpu_index)
    assert pip == [f"dry-run: pip install --timeout 30 torch torchvision --index-url {cpu_index}",
                   "dry-run: pip install -e .[dev]"]


def test_setup_keeps_pypi_torch_on_a_gpu_machine_and_an_installed_torch(tmp_path, cpu_index):
    _, pip = _setup(tmp_path, "runtime", gpu=True, index=cpu_index)
    assert pip == ["dry-run: pip install -e ."]
    _, pip = _setup(tmp_path, "notebook", torch=True, index=cpu_index)
    assert pip == ["dry-run: pip install -e .[notebook]"]


def test_setup_falls_back_to_pypi_when_the_cpu_index_is_unreachable(tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port that accepts connections and never answers: the 10 s timeout
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        t0 = time.time()
        text, pip = _setup(tmp_path, "runtime", index=f"http://127.0.0.1:{s.getsockname()[1]}/whl/cpu")
        print(f"fallback after {time.time() - t0:.1f} s")
    assert pip == ["dry-run: pip install -e ."] and "unreachable: torch comes from PyPI" in text
    text, pip = _setup(tmp_path, "runtime", index="http://127.0.0.1:9/whl/cpu")  # refused at once
    assert pip == ["dry-run: pip install -e ."] and "unreachable" in text


def test_setup_names_an_unknown_target(tmp_path):
    out = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "everything"], capture_output=True, text=True,
                         env={**os.environ, "SLW_SETUP_DRY_RUN": "1"}, timeout=60)
    assert out.returncode == 2 and "unknown target 'everything'; accepted: runtime, notebook, dev" in out.stderr
