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
