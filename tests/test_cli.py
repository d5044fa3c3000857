"""Tests of the ``semlens`` console command."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from semlens_widgets import cli


def test_parser_rejects_bad_values(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--m", "0"])
    assert e.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--crop", "boxes"])
    with pytest.raises(SystemExit):
        cli.main([])  # a sub-command is required


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert "semlens_widgets" in capsys.readouterr().out


def test_info_on_a_non_store(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path)]) == 2
    assert "is not a semlens store" in capsys.readouterr().out


def test_demo_unknown_layer(tmp_path, capsys):
    assert cli.main(["demo", "--store", str(tmp_path / "s"), "--layers", "layer9", "--n-per-class", "2"]) == 2
    assert "unknown layer(s) ['layer9']" in capsys.readouterr().out


def test_demo_runs_then_reloads_from_the_store(tmp_path, capsys):
    store = tmp_path / "store"
    argv = ["demo", "--store", str(store), "--layers", "block3", "--m", "4", "--n-per-class", "4", "--quiet",
            "--no-map"]
    assert cli.main(argv) == 0
    out1 = capsys.readouterr().out
    assert "labels (the SemanticLens paper" in out1 and "DESIGN" not in out1 and "block3:" in out1
    assert "label accuracy" in out1 and "search precision@5" in out1 and "shortcut found" in out1
    assert "collect" in out1 and "crops" in out1 and "embed" in out1
    t = time.perf_counter()
    assert cli.main(argv) == 0
    second = time.perf_counter() - t
    out2 = capsys.readouterr().out
    # the same labels, read back from the store: no collection / crop / embedding pass
    lab1 = [l for l in out1.splitlines() if "components labelled" in l]
    assert lab1 and lab1 == [l for l in out2.splitlines() if "components labelled" in l]
    assert "    crops" not in out2 or " 0.0" in out2.split("    crops")[1].splitlines()[0]
    assert second < 30
    # info lists the store's entries
    assert cli.main(["info", str(store)]) == 0
    info = capsys.readouterr().out
    assert "embed/block3" in info and "collect/block3" in info
    assert cli.main(["info", str(store), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert any(e["key"] == "embed/block3" for e in listing["entries"])


def test_console_script_is_installed():
    assert shutil.which("semlens"), "the semlens console script is not installed (pip install -e .)"
    res = subprocess.run(["semlens", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "demo" in res.stdout and "info" in res.stdout


def test_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "semlens_widgets.cli", "info", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "store directory" in res.stdout


# --------------------------------------------------------------------------- semlens run / report

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from semlens_widgets.lens_open import RunSpecError, load_object, parse_fm  # noqa: E402

TESTS = str(Path(__file__).resolve().parent)
WORLD = ["--model", "_cli_world:model", "--dataset", "_cli_world:dataset", "--fm", "_cli_world:fm",
         "--app-dir", TESTS]


def _run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("value, expected", [
    ("nocolon", "is not MODULE:CALLABLE"),
    ("a:b:c", "is not MODULE:CALLABLE"),
    ("mod:", "is not MODULE:CALLABLE"),
    ("1mod:fn", "must be a dotted module name"),
    ("_cli_world_missing:model", "cannot import module '_cli_world_missing'"),
    ("_cli_world:nope", "has no attribute 'nope'"),
    ("_cli_world:NOT_CALLABLE", "names a int, not a callable"),
])
def test_run_refuses_bad_model_names_before_any_work(tmp_path, capsys, value, expected):
    argv = ["run", "--model", value, "--dataset", "_cli_world:dataset", "--fm", "_cli_world:fm",
            "--app-dir", TESTS, "--layers", "features.relu1", "--store", str(tmp_path / "s")]
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert f"--model {value!r}" in err and expected in err
    assert not (tmp_path / "s").exists()  # nothing built, nothing written


def test_run_refuses_bad_values_of_what_the_callables_return(tmp_path, capsys):
    base = ["run", "--app-dir", TESTS, "--layers", "features.relu1", "--store", str(tmp_path / "s")]
    code, _, err = _run(base + ["--model", "_cli_world:not_a_model", "--dataset", "_cli_world:dataset",
                                "--fm", "_cli_world:fm"], capsys)
    assert code == 2 and "--model '_cli_world:not_a_model' returned a str; expected a torch.nn.Module" in err
    code, _, err = _run(base + ["--model", "_cli_world:model", "--dataset", "_cli_world:a_loader",
                                "--fm", "_cli_world:fm"], capsys)
    assert code == 2 and "returned a DataLoader; expected a map-style dataset" in err


def test_run_refuses_missing_and_conflicting_sources(tmp_path, capsys):
    store = ["--store", str(tmp_path / "s")]
    code, _, err = _run(["run", "--layers", "a", "--model", "_cli_world:model", "--app-dir", TESTS] + store, capsys)
    assert code == 2 and "missing --dataset, --fm" in err
    code, _, err = _run(["run", "--demo", "--model", "_cli_world:model", "--app-dir", TESTS] + store, capsys)
    assert code == 2 and "--demo builds the demo world's" in err and "drop --model" in err
    code, _, err = _run(["run"] + WORLD + store, capsys)
    assert code == 2 and "missing --layers" in err
    code, _, err = _run(["run"] + WORLD + store + ["--layers", "features.nope"], capsys)
    assert code == 2 and "features.nope" in err  # the Lens's layer check, before any pass
    code, _, err = _run(["run"] + WORLD + store + ["--layers", "features.relu1", "--pooling", "median"], capsys)
    assert code == 2 and "--pooling 'median'" in err
    with pytest.raises(SystemExit):
        cli.main(["run", "--layers", ",", "--demo"] + store)  # argparse: empty layer names
    assert "expected comma-separated layer names" in capsys.readouterr().err


def test_fm_names():
    assert parse_fm("ViT-B-32") == ("ViT-B-32", None)
    assert parse_fm("ViT-B-32@laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    name, path = parse_fm("ViT-B-32@weights/clip.safetensors")
    assert name == "ViT-B-32" and os.path.isabs(path) and path.endswith("weights/clip.safetensors")
    assert parse_fm("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    for bad in ("", "@tag", "ViT-B-32@"):
        with pytest.raises(RunSpecError, match="NAME\\[@PRETRAINED\\]"):
            parse_fm(bad)
    assert load_object("semlens_widgets.lens:imagenet_unnormalize").__name__ == "imagenet_unnormalize"
    with pytest.raises(RunSpecError, match="has no attribute 'nope'"):
        load_object("semlens_widgets.lens:Lens.nope")


def test_fm_name_with_local_weights_builds_the_demo_clip():
    from semlens_widgets.demo.models import CLIP_WEIGHTS, load_fm
    from semlens_widgets.lens_open import RunSpec

    spec = RunSpec(layers=["x"], fm=f"semlens-demo-clip@{CLIP_WEIGHTS}")
    fm = spec._build_fm(torch.device("cpu"))
    assert fm.identity["weights_sha256"] == load_fm().identity["weights_sha256"]


def _store_tensors(root):
    """Every final entry of a store: key -> {name: tensor} (chunk checkpoints excluded)."""
    from semlens_widgets.store import Store

    st = Store(root)
    out = {}
    for key in st.keys():
        assert "/chunk" not in key and "checkpoint" not in key, f"a checkpoint was left behind: {key}"
        out[key] = st.load(key, st.meta(key)["fingerprint"])
    return out


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    """One `semlens run` of the random-weight world (two layers, class names, vocabulary)."""
    store = tmp_path_factory.mktemp("cli") / "store"
    argv = ["run"] + WORLD + ["--layers", "features.relu1,features.relu2", "--m", "4", "--store", str(store),
                              "--chunk-size", "4", "--batch-size", "16", "--class-names", "_cli_world:CLASS_NAMES",
                              "--vocabulary", "_cli_world:vocabulary", "--quiet", "--device", "cpu"]
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    assert code == 0, err.getvalue()
    return store, out.getvalue()


def test_run_a_random_weight_model_then_reopen(world_run):
    import semlens_widgets as slw

    store, out = world_run
    assert "40 samples" in out and "features.relu2: 8 components" in out and "Lens.from_store" in out
    rec = json.loads((store / "manifest.json").read_text())["info"]["run"]
    assert rec["model"] == "_cli_world:model" and rec["fm"] == "_cli_world:fm" and rec["app_dir"] == TESTS
    assert rec["layers"] == ["features.relu1", "features.relu2"] and rec["m"] == 4 and rec["batch_size"] == 16
    assert rec["class_names"] == ["ant", "bee", "cat", "dog", "eel"] and rec["vocabulary"][0] == "red"

    lens = slw.Lens.from_store(store, device="cpu", progress=False)
    assert lens.layers == ["features.relu1", "features.relu2"] and lens.m == 4 and lens.class_names[0] == "ant"
    assert lens.vocabulary == ["red", "green", "blue", "stripes", "dots"]
    stored = _store_tensors(store)
    assert set(stored) == {"samples", "collect/features.relu1", "collect/features.relu2", "boxes/features.relu1",
                           "boxes/features.relu2", "embed/features.relu1", "embed/features.relu2",
                           "conservation/features.relu1", "conservation/features.relu2"}  # crp: how relevance adds up
    assert torch.equal(lens.embeddings("features.relu2"), stored["embed/features.relu2"]["theta"])
    assert torch.equal(lens.topm("features.relu1").indices, stored["collect/features.relu1"]["indices"])
    assert torch.equal(lens.sample_labels, stored["samples"]["labels"])


@pytest.mark.slow  # the report's semantic map pays numba's first compilation of UMAP
def test_report_of_a_run(world_run, tmp_path, capsys):
    store, _ = world_run
    code, out, err = _run(["report", "--store", str(store), "--out", str(tmp_path / "r.html"), "--query", "red",
                           "--quiet"], capsys)
    assert code == 0, err
    assert "report written to" in out
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "features.relu2" in html and 'id="search"' in html and "red" in html


def test_reopen_refuses_an_unfinished_run_and_another_model(tmp_path, capsys):
    import semlens_widgets as slw
    from semlens_widgets.lens_open import RUN_RECORD
    from semlens_widgets.store import Store, StoreError

    store = tmp_path / "store"
    argv = ["run", "--model", "_cli_world:unseeded_model", "--dataset", "_cli_world:small_dataset", "--fm",
            "_cli_world:fm", "--app-dir", TESTS, "--layers", "1", "--m", "3", "--store", str(store), "--quiet",
            "--crop", "activation", "--device", "cpu"]
    assert _run(argv, capsys)[0] == 0
    # torch's default init is seeded by `semlens run`: the reopened model is the same one
    lens = slw.Lens.from_store(store, device="cpu", progress=False)
    assert lens.num_components("1") == 6
    st = Store(store)
    st.delete("embed/1")
    with pytest.raises(StoreError, match=r"unfinished run \(missing \['embed/1'\]\).*recompute=True"):
        slw.Lens.from_store(store, device="cpu", progress=False)
    lens = slw.Lens.from_store(store, device="cpu", progress=False, recompute=True)  # finishes it
    assert lens.embeddings("1").shape[0] == 6 and st.has("embed/1", st.meta("embed/1")["fingerprint"])
    rec = st.get_info(RUN_RECORD)
    st.set_info(RUN_RECORD, dict(rec, model="_cli_world:model", layers=["features.relu1"]))
    with pytest.raises(StoreError, match="another model or dataset"):
        slw.Lens.from_store(store, device="cpu", progress=False)
    code, _, err = _run(["report", "--store", str(store), "--out", str(tmp_path / "r.html")], capsys)
    assert code == 2 and "another model or dataset" in err


def test_reopen_refuses_stores_without_a_run_record(tmp_path, capsys):
    import semlens_widgets as slw
    from semlens_widgets.store import Store, StoreError

    with pytest.raises(StoreError, match="is not a semlens store"):
        slw.Lens.from_store(tmp_path / "none")
    Store(tmp_path / "plain").set_info("lens", {"model_class": "x"})
    with pytest.raises(StoreError, match="has no run record: it was not made by `semlens run`"):
        slw.Lens.from_store(tmp_path / "plain")
    code, _, err = _run(["report", "--store", str(tmp_path / "plain"), "--out", str(tmp_path / "r.html")], capsys)
    assert code == 2 and "has no run record" in err


def test_run_the_demo_world(tmp_path, capsys):
    store = tmp_path / "demo"
    code, out, err = _run(["run", "--demo", "--n-per-class", "3", "--layers", "block4", "--m", "3", "--crop",
                           "activation", "--store", str(store), "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "24 samples" in out and "block4:" in out
    import semlens_widgets as slw

    lens = slw.Lens.from_store(store, device="cpu", progress=False)
    assert lens.class_names[0] and "watermark" in lens.vocabulary and lens.n_samples == 24
    assert len(lens.search("watermark", k=3)) == 3


def test_python_dash_m_is_the_semlens_command():
    res = subprocess.run([sys.executable, "-m", "semlens_widgets", "run", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "--model MODULE:CALLABLE" in res.stdout and "torchrun" in res.stdout
