"""The benchmark runner (benchmarks/run.py): it reads each benchmark's output as the benchmarks
print it, and its --quick mode runs end to end (a subset here; the whole suite is for a quiet
machine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import run as runner  # noqa: E402

# one line of each benchmark's output, in the format its print statement writes
OUTPUTS = {
    "collect": "[overhead] cnn layer, N=256 images 64x64, batch 64, m=30: bare forward 1.00 s, collect 1.05 s -> "
               "ratio 1.050 (min of 2; median ratio 1.060); process CPU-time ratio 1.040; target <= 1.15\n"
               "[memory] peak RSS N=2000 / N=200: 1.024; growth difference +0.3 MiB; target: ratio within 1.10",
    "real": "[1] blocks.14: our crop step / get_max_reference = 0.31 (min of 2: 1.00 s vs 3.20 s; median pair "
            "ratio 0.33; 64 heatmaps)\n\n[2] collection / bare forward: 1.07 (min of 3: 1.07 s vs 1.00 s)",
    "embed": "[wall] embedding overhead ratio: best/best 1.180, median of paired runs 1.200  (target <= 1.25)\n"
             "[cpu] embedding overhead ratio: best/best 1.100, median of paired runs 1.150  (target <= 1.25)",
    "search": "== clustered: C=1,000,000 components x d=512 (float32 thetas 1953 MiB; generated in 9.0 s)\n"
              "dense fp32             build     0.0 s | median   180.00 ms  p95   200.00 ms | recall@10 text 1.0000 "
              "image 1.0000 |       0 MiB (exact)\n"
              "ivf (ours)             build    60.0 s | median     3.00 ms  p95     6.00 ms | recall@10 text 0.9990 "
              "image 1.0000 |      10 MiB (L=1000, n_probe=8)\n"
              "== diffuse: C=1,000,000 components x d=512 (float32 thetas 1953 MiB; generated in 9.0 s)\n"
              "ivf (ours)             build    60.0 s | calibration found no n_probe reaching recall 0.995: the Lens "
              "searches this layer densely (exact: the dense fp32 row)",
    "open": "[open] eager       open_s 27.78\n[open] lazy        open_s 0.88\n"
            "[open] lazy+theta  open_s 0.84, theta_first_access_s 3.59",
    "map": "[map] N=20,000: 30.0 s, peak RSS 900 MiB (before 800 MiB, growth 100 MiB; VmHWM after clear_refs)\n"
           "[map] N=200,000: 200.0 s, peak RSS 1200 MiB (before 1000 MiB, growth 200 MiB; VmHWM after clear_refs)\n"
           "[map] N=200,000 / N=20,000: time x6.67, peak-RSS growth x2.00 (bounded: the fit is at most MAX_FIT components)",
    "demo": "timings (s):\n  load world    1.0\n  run (collect + crop + embed)   30.0\n    collect    3.0\n"
            "    crops    20.0\n    embed     7.0\n  label     0.5\n  map     1.0\n  total up to the map    33.0\n",
}


def test_the_runner_reads_every_benchmark_output(tmp_path):
    got = {name: runner.summarise(name, [(1.0, text)], str(tmp_path)) for name, text in OUTPUTS.items()}
    val = {name: {r["figure"]: (r["value"], r["met"]) for r in rows} for name, rows in got.items()}
    assert val["collect"] == {"collection / bare forward": (1.05, True), "peak RSS 10N / N (collection)": (1.024, True)}
    assert val["real"] == {"crops / get_max_reference (blocks.14)": (0.31, True),
                           "collection / bare forward (Lite0)": (1.07, True)}
    assert val["embed"]["embedding / bare fm forward (wall)"] == (1.18, True)
    search = got["search"]
    assert [(r["value"], r["met"]) for r in search] == [(180.0, False), (3.0, True), (None, None)]
    assert "diffuse, C=1,000,000: calibration -> dense" in search[2]["figure"]
    assert val["open"]["store open (lazy), s"] == (0.88, True)
    assert val["open"]["theta first access (block verification), s"] == (3.59, True)
    assert val["map"]["map peak-RSS growth 10N / N"] == (2.0, True)
    small = runner.summarise("map", [(1.0, OUTPUTS["map"].replace("200,000", "10,000").replace("N=20,000: 30", "N=1,000: 30"))],
                             str(tmp_path))
    assert small[-1]["met"] is None and "not judged" in small[-1]["figure"]
    assert val["demo"]["semlens demo, total up to the map, s"] == (33.0, True)
    assert val["demo"]["  demo stage map, s"] == (1.0, None)
    two = runner.summarise("torchrun", [(100.0, ""), (70.0, "")], str(tmp_path))
    assert two[0]["value"] == pytest.approx(0.7) and two[0]["met"] is True
    failed = runner.summarise("torchrun", [(100.0, ""), (None, "Traceback")], str(tmp_path))
    assert failed[0]["value"] is None  # a failed run is a hole, never a number


def test_every_benchmark_has_a_command_at_every_size(tmp_path):
    for size in runner.SIZES:
        cmds = runner.commands(size, str(tmp_path))
        assert set(cmds) == set(OUTPUTS) | {"crops", "torchrun"}
        for name, argvs in cmds.items():
            for argv in argvs:
                script = next((a for a in argv if a.endswith(".py")), None)
                assert script is None or os.path.isfile(script), (name, script)


@pytest.mark.slow
def test_quick_mode_runs(tmp_path):
    out = tmp_path / "results.json"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick", "--only", "search,open",
                        "--out", str(out), "--logs", str(tmp_path / "logs")], cwd=ROOT, capture_output=True, text=True,
                       timeout=1800)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["size"] == "quick" and data["command"].startswith("python benchmarks/run.py --quick")
    figures = {r["figure"]: r["value"] for r in data["rows"]}
    assert any(f.startswith("search dense fp32, clustered, C=20,000") for f in figures)
    assert figures["store open (lazy), s"] is not None and figures["store open (eager), s"] is not None
    assert "summary (quick" in p.stdout
