"""Real processes killed with SIGKILL at deterministic points, then resumed; two processes on one
store. The stores are compared with those of uninterrupted runs, every tensor of every entry,
bit for bit (the conservation diagnostic to 1e-4: tests/_stores.py). The runs are forked by one driver process (tests/_kill_driver.py: the imports are
paid once); this module reads its report and its stores."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from semlens_widgets.store import Store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name != "posix" or not hasattr(os, "fork"), reason="SIGKILL and fork: POSIX only"),
]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _kill_driver import N, SCENARIOS  # noqa: E402
from _stores import assert_same_stores as assert_identical  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill")
    proc = subprocess.run([sys.executable, str(HERE / "_kill_driver.py"), str(out)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "report.json").read_text())


def assert_clean(root: Path) -> None:
    """No chunk or checkpoint entries, no file the manifest does not name, no temp parts."""
    store = Store(root)
    assert not [k for k in store.keys() if "/chunk" in k or k == "collect_checkpoint"]
    manifest = json.loads((root / "manifest.json").read_text())
    named = {rec["file"] for rec in manifest["entries"].values()}
    files = {p.name for p in root.iterdir() if p.name.endswith(".safetensors")}
    assert files == named
    assert not [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]


def ok(run: dict) -> None:
    assert run.get("code") == 0, run["stderr"]


def test_uninterrupted_references(runs):
    out, report = runs
    for name in ("ref-crp", "ref-full"):
        ok(report[name]["run"])
        assert_clean(out / name / "store")
    keys = Store(out / "ref-crp" / "store").keys()
    assert any(k.startswith("semantics/class_relevance/") for k in keys)
    assert any(k.startswith("semantics/attribution_graph/") for k in keys)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_killed_run_resumes_to_the_identical_store(runs, name):
    out, report = runs
    r = report[name]
    assert r["victim"].get("signal") == signal.SIGKILL, r["victim"]["stderr"]
    assert "stderr" in r["victim"] and "Traceback" not in r["victim"]["stderr"]
    ok(r["resume"])
    assert_identical(out / name / "store", out / f"ref-{r['crop']}" / "store")
    assert_clean(out / name / "store")


def test_collection_keeps_all_but_the_last_checkpoint_interval(runs):
    """Killed while reading item 27 (batch 3 of 6, a checkpoint after every batch): the store kept
    the first 24 samples, the resumed pass says so and reads only items 24..47."""
    _, report = runs
    r = report["kill-collect-mid"]
    assert "collect_checkpoint" in r["after_kill"]
    assert [w for w in r["resume"]["warnings"] if w.startswith("collection: resuming")] == [
        f"collection: resuming from checkpoint at 24 / {N} samples"]
    assert sorted(set(r["resume"]["read"]) - {0}) == list(range(24, N))  # item 0: the up-front item check
    early = report["kill-collect-early"]
    assert "collect_checkpoint" not in early["after_kill"]
    assert not [w for w in early["resume"]["warnings"] if w.startswith("collection: resuming")]


def test_a_kill_after_the_final_entries_leaves_no_checkpoint_behind(runs):
    _, report = runs
    r = report["kill-collect-final"]
    assert "collect_checkpoint" in r["after_kill"] and "samples" not in r["after_kill"]
    assert all(f"collect/{layer}" in r["after_kill"] for layer in ("features.relu1", "features.relu2"))


@pytest.mark.parametrize("name", ["race-crp", "race-full"])
def test_two_runs_on_one_store_do_the_work_once(runs, name):
    """Two processes started together: both succeed, the model and the foundation model compute
    what one run computes (the second waits for each step and loads it), the one that waited said
    for whom (the holder's pid), and the store is that of one uninterrupted run."""
    out, report = runs
    a, b = report[name]["runs"]
    ok(a)
    ok(b)
    ref = report[f"ref-{name[5:]}"]["run"]["counts"]
    assert a["counts"]["forwards"] + b["counts"]["forwards"] == ref["forwards"]
    assert a["counts"]["fm_rows"] + b["counts"]["fm_rows"] == ref["fm_rows"]
    waited = [(r, o) for r, o in ((a, b), (b, a)) if any(w.startswith("waiting for") for w in r["warnings"])]
    assert waited, "neither run waited for the other"
    for r, other in waited:
        msg = next(w for w in r["warnings"] if w.startswith("waiting for"))
        assert re.search(rf"held by pid {other['pid']}\b", msg), msg
    assert_identical(out / name / "store", out / f"ref-{name[5:]}" / "store")
    assert_clean(out / name / "store")
