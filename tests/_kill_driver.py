"""Driver of tests/test_kill_resume.py: real processes on one store, killed with SIGKILL.

``python tests/_kill_driver.py OUT_DIR [SCENARIO ...]`` imports torch, the package and a tiny
world once, then forks a fresh process for every run (a forked process is a real process: its
own pid, its own file locks, killed by the kernel):

- ``ref-crp`` / ``ref-full``: uninterrupted runs, the stores every other store is compared with;
- a kill scenario: a *victim* run that SIGKILLs itself at a deterministic point (the N-th
  dataset item of the collection pass, the N-th crop chunk, the N-th call of the foundation
  model, the N-th chunk of the class-relevance pass, the save of the ``samples`` entry), then a
  *resume* run in a new process on the same store;
- ``race-crp`` / ``race-full``: two processes started together on one store.

Every run does the same work: ``lens.run()`` and, for ``crop="crp"``, class relevance, relevance
and an attribution graph. ``OUT_DIR/report.json`` records per run the exit (code or signal),
the model forward passes and foundation-model rows it computed, the warnings it gave, and the
dataset items the collection pass read; stores are ``OUT_DIR/<scenario>/store``.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

from _models import TinyCNN, red_square_images, tiny_clip_fm  # noqa: E402

from semlens_widgets.lens import Lens  # noqa: E402
from semlens_widgets.lens_pipeline import Pipeline  # noqa: E402
from semlens_widgets.lens_relevance import Attribution  # noqa: E402
from semlens_widgets.store import Store  # noqa: E402

LAYERS = ["features.relu1", "features.relu2"]  # 8 and 16 components
N, BATCH, CHUNK, M = 48, 8, 4, 4  # 6 batches; chunks of 4 components; class relevance chunks of 16 samples

# where a victim kills itself: (what, n) -- the n-th event of that kind (1-based)
SCENARIOS = {
    "kill-collect-early": ("crp", ("item", 5)),        # batch 0, before any checkpoint
    "kill-collect-mid": ("crp", ("item", 27)),         # batch 3: checkpoints after batches 0, 1, 2
    "kill-collect-final": ("crp", ("save", "samples")),  # collect/<layer> saved, samples not yet
    "kill-crops": ("crp", ("boxes", 4)),               # fourth crop chunk (relu2's second)
    "kill-embed": ("crp", ("encode", 4)),              # fourth foundation-model batch
    "kill-class-relevance": ("crp", ("relevance", 2)),  # second chunk of the class-relevance pass
    "kill-embed-full": ("full", ("encode", 2)),        # crop="full": second batch of sample embeddings
}


class World(torch.utils.data.Dataset):
    """Gray 12x12 images with a red square, labels 0..2; counts the items the collection pass reads."""

    def __init__(self):
        self.x, _ = red_square_images(N, size=12, square=4, seed=5)
        self.y = torch.arange(N) % 3
        self.collecting = False
        self.read: list[int] = []
        self.kill_item: int | None = None

    def __len__(self):
        return N

    def __getitem__(self, i):
        if self.collecting:
            self.read.append(int(i))
            if i == self.kill_item:
                die()
        return self.x[i], self.y[i]


def die():
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def work(store: Path, crop: str, data: World, model, fm) -> None:
    lens = Lens(model, data, fm, LAYERS, m=M, crop=crop, store=store, progress=False, batch_size=BATCH,
                chunk_size=CHUNK, checkpoint_every=1)
    lens.run()
    if crop == "crp":
        lens.class_relevance("features.relu2")
        lens.relevance(1, "features.relu2")
        lens.attribution_graph(1, LAYERS)


def child(out: Path, name: str, store: Path, crop: str, kill, data: World, model, fm) -> None:
    """The body of a forked run: arm the kill point, count the work, run, report."""
    counts = {"forwards": 0, "fm_rows": 0}
    model.register_forward_pre_hook(lambda mod, inp: counts.__setitem__("forwards", counts["forwards"] + 1))
    events = {"boxes": 0, "encode": 0, "relevance": 0}
    what, n = kill if kill else (None, None)

    def event(kind: str) -> None:
        events[kind] += 1
        if what == kind and events[kind] == n:
            die()

    encode = fm.encode_images

    def counting_encode(x, *a, **kw):
        event("encode")
        counts["fm_rows"] += int(x.shape[0])
        return encode(x, *a, **kw)

    fm.encode_images = counting_encode
    boxes, relevance, save, collect_pass = (Pipeline._compute_boxes, Attribution._component_relevance, Store.save,
                                            Pipeline._collect_pass)

    def counting_boxes(self, *a, **kw):
        event("boxes")
        return boxes(self, *a, **kw)

    def counting_relevance(self, *a, **kw):
        event("relevance")
        return relevance(self, *a, **kw)

    def dying_save(self, key, *a, **kw):
        if what == "save" and key == n:
            die()
        return save(self, key, *a, **kw)

    def reading_collect_pass(self, *a, **kw):
        data.collecting = True
        try:
            return collect_pass(self, *a, **kw)
        finally:
            data.collecting = False

    Pipeline._compute_boxes, Attribution._component_relevance = counting_boxes, counting_relevance
    Store.save, Pipeline._collect_pass = dying_save, reading_collect_pass
    data.kill_item = n if what == "item" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        work(store, crop, data, model, fm)
    record = {"counts": counts, "read": data.read, "warnings": [str(w.message) for w in caught]}
    (out / f"{name}.{os.getpid()}.json").write_text(json.dumps(record))


def fork_run(out: Path, name: str, store: Path, crop: str, kill, world) -> int:
    """Start one run in a forked process; returns its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            err = os.open(out / f"{name}.{os.getpid()}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(err, 2)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            child(out, name, store, crop, kill, *world)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def wait(pid: int) -> dict:
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"pid": pid, "signal": os.WTERMSIG(status)}
    return {"pid": pid, "code": os.WEXITSTATUS(status)}


def result(out: Path, name: str, exit: dict) -> dict:
    pid = exit["pid"]
    rec = out / f"{name}.{pid}.json"
    err = out / f"{name}.{pid}.err"
    got = dict(exit)
    got.update(json.loads(rec.read_text()) if rec.exists() else {})
    got["stderr"] = err.read_text()[-4000:] if err.exists() else ""
    return got


def main() -> None:
    out = Path(sys.argv[1])
    names = sys.argv[2:] or ["ref-crp", "ref-full", *SCENARIOS, "race-crp", "race-full"]
    out.mkdir(parents=True, exist_ok=True)
    model, fm = TinyCNN(num_classes=3), tiny_clip_fm(out)
    world = (World(), model, fm)
    report: dict[str, dict] = {}
    for name in names:
        store = out / name / "store"
        if name.startswith("ref-"):
            report[name] = {"run": result(out, name, wait(fork_run(out, name, store, name[4:], None, world)))}
        elif name.startswith("race-"):
            crop = name[5:]
            pids = [fork_run(out, f"{name}-{i}", store, crop, None, world) for i in range(2)]
            report[name] = {"runs": [result(out, f"{name}-{i}", wait(p)) for i, p in enumerate(pids)]}
        else:
            crop, kill = SCENARIOS[name]
            victim = result(out, f"{name}-victim", wait(fork_run(out, f"{name}-victim", store, crop, kill, world)))
            after_kill = sorted(Store(store).keys()) if (store / "manifest.json").exists() else []
            resume = result(out, f"{name}-resume", wait(fork_run(out, f"{name}-resume", store, crop, None, world)))
            report[name] = {"crop": crop, "victim": victim, "after_kill": after_kill, "resume": resume}
        print(name, "done", flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
