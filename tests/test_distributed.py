"""torch.distributed: sharded collection, crops, embeddings and class relevance, one writer.

The main test runs ``torchrun --nproc_per_node=2 -m semlens_widgets -- run ...`` on the CPU
(gloo) and compares every tensor of every final store entry with a one-process run. The others
test the pieces: the total order of the top-m (ties broken by sample index), exact merges of
batch-aligned shards, the batch shards, and the process-group primitives (two spawned gloo
processes).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from semlens_widgets import cli, distributed
from semlens_widgets.kernels.collect import RunningTopM, collect_topm, merge_states
from semlens_widgets.store import Store

TESTS = str(Path(__file__).resolve().parent)
sys.path.insert(0, TESTS)
import _cli_world  # noqa: E402
from _stores import assert_same_stores  # noqa: E402


# --------------------------------------------------------------------------- the whole run, 2 ranks


@pytest.mark.slow  # two torchrun workers import torch, open_clip and the model on 2 shared cores
def test_torchrun_two_processes_write_the_store_of_one_process(tmp_path, capsys):
    args = ["run", "--model", "_cli_world:model", "--dataset", "_cli_world:duplicated", "--fm", "_cli_world:fm",
            "--app-dir", TESTS, "--layers", "features.relu1,features.relu2", "--m", "4", "--chunk-size", "3",
            "--batch-size", "8", "--checkpoint-every", "1", "--class-relevance", "--quiet", "--device", "cpu",
            "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        assert cli.main(args + ["--store", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    # '--' keeps torchrun's own parser away from the run's options (it reads '--m' as an
    # abbreviation of its '--max-restarts' / '--master-addr' ...)
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "semlens_widgets",
         "--"] + args + ["--store", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 processes" in res.stdout and res.stdout.count("semlens run:") == 1  # rank 0 speaks
    assert_same_stores(tmp_path / "one", tmp_path / "two")
    st = Store(tmp_path / "two")
    assert {"collect/features.relu2", "embed/features.relu2", "semantics/class_relevance/features.relu2/label",
            "samples"} <= set(st.keys())
    assert st.get_info("run")["layers"] == ["features.relu1", "features.relu2"]


# --------------------------------------------------------------------------- the pieces, one process


def test_ties_are_broken_by_sample_index_whatever_the_order():
    """Every image twice: each component's top-m has ties; any visiting order and any batch
    size select the same samples (the lower index of each tie) as a sorted pass."""
    model, data = _cli_world.model(), _cli_world.duplicated()
    layers = ["features.relu1", "features.relu2", "fc"]
    ref = collect_topm(model, data, layers, 5, batch_size=8, progress=False)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    other = collect_topm(model, data, layers, 5, batch_size=8, indices=order, progress=False)
    for name in layers:
        a, b = ref.topm[name], other.topm[name]
        assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values), name
        v, i = a.values, a.indices
        tied = v[:, 1:] == v[:, :-1]
        assert bool(tied.any())  # the duplicates tie
        assert bool((i[:, 1:][tied] > i[:, :-1][tied]).all())  # ... and the lower index comes first


def test_merge_of_batch_aligned_shards_is_the_one_pass():
    model, data = _cli_world.model(), _cli_world.duplicated()
    layers = ["features.relu2", "fc"]
    n, bs = len(data), 8
    whole = collect_topm(model, data, layers, 4, batch_size=bs, progress=False, keep_state=True)
    for world in (2, 3, 7):
        parts = []
        for r in range(world):
            shard = list(distributed.batch_shard(n, bs, r, world))
            st = RunningTopM(layers, 4, n, torch.device("cpu"))
            if shard:
                st = collect_topm(model, data, layers, 4, batch_size=bs, indices=shard, state=st, progress=False,
                                  keep_state=True)
            parts.append(st)
        merged = merge_states(parts).result()
        res = whole.result()
        for name in layers:
            assert torch.equal(merged.topm[name].indices, res.topm[name].indices)
            assert torch.equal(merged.topm[name].values, res.topm[name].values)  # same batches: same bits
        assert torch.equal(merged.labels, res.labels) and torch.equal(merged.predictions, res.predictions)
        assert merged.n_samples == n and merged.num_classes == 5
    with pytest.raises(ValueError, match="the parts overlap"):
        merge_states([whole, whole])


def test_batch_shards_cover_the_data_in_whole_batches():
    for n, bs, world in ((40, 8, 2), (41, 8, 3), (5, 8, 4), (100, 7, 6)):
        shards = [distributed.batch_shard(n, bs, r, world) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(n))
        assert all(s.start % bs == 0 for s in shards if len(s))
    with pytest.raises(ValueError, match="rank 2 is not in a group of 2"):
        distributed.batch_shard(10, 2, 2, 2)


def test_without_a_group_everything_is_local(tmp_path):
    assert not distributed.group_active() and distributed.rank() == 0 and distributed.is_writer()
    with distributed.sharded():
        assert not distributed.active()  # no group: sharded() changes nothing
    st = Store(tmp_path / "s")
    calls = []
    got = distributed.cached(st, "k", "fp", lambda: calls.append(1) or {"t": torch.ones(2)})
    assert torch.equal(got["t"], torch.ones(2)) and distributed.cached(st, "k", "fp", lambda: 1 / 0)["t"].sum() == 2
    assert calls == [1]


# --------------------------------------------------------------------------- primitives, 2 gloo ranks


def _spawn(fn, args: tuple, nprocs: int = 2, seconds: float = 120) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` spawned processes; fail (killing them) after
    ``seconds``: a collective that waits forever is a failure, not a hang of the suite."""
    import time

    import torch.multiprocessing as mp

    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + seconds
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{fn.__name__} did not finish within {seconds} s (a collective waiting for a rank?)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = {}
        with distributed.sharded():
            assert distributed.active() and distributed.world_size() == 2
            mine = {"a": torch.arange(3 + rank, dtype=torch.float16), "b": torch.tensor([[rank]], dtype=torch.int64),
                    "flag": torch.tensor([True, bool(rank)])}
            got = distributed.all_gather_tensors(mine if rank == 0 else {"a": mine["a"]})
            result["gather"] = [sorted(g) for g in got] + [got[1]["a"].tolist(), got[0]["flag"].tolist()]
            result["none"] = distributed.all_gather_tensors(None if rank else {"x": torch.zeros(0)})[1]
            b = distributed.broadcast_tensors({"v": torch.linspace(0, 1, 5)} if rank == 0 else None)
            result["bcast"] = b["v"].tolist()
            st = Store(root)
            computed = []

            def compute(a, b):
                computed.append((a, b))
                return {"x": torch.arange(a, b) * 10}

            if rank == 0:  # a checkpoint from an earlier, interrupted run
                st.save("job/chunk2-4", {"x": torch.arange(2, 4) * 10}, "fp")
            distributed.barrier()
            parts = distributed.chunked(st, "job", "fp", 9, 2, compute, desc="test")
            result["chunks"] = torch.cat([p["x"] for p in parts]).tolist()
            result["computed"] = computed
            result["saved"] = sorted(Store(root).keys("job/")) if rank == 0 else None
            # a resumed, sharded collection pass: the first 2 batches came from an interrupted
            # one-process pass; the ranks collect the rest in rounds of one batch each
            model, data = _cli_world.model(), _cli_world.duplicated()
            layers, n = ["features.relu2", "fc"], len(_cli_world.duplicated())
            fresh = lambda: RunningTopM(layers, 4, n, torch.device("cpu"))  # noqa: E731
            base = collect_topm(model, data, layers, 4, batch_size=8, indices=range(16), state=fresh(),
                                progress=False, keep_state=True)
            seen = []

            def part(indices, local):
                return collect_topm(model, data, layers, 4, batch_size=8, indices=indices, state=local,
                                    progress=False, keep_state=True)

            merged = distributed.collect_sharded(part, fresh, n_total=n, batch_size=8, state=base,
                                                 checkpoint=lambda st: seen.append(st.n_seen), checkpoint_every=1)
            res = merged.result()
            result["resumed"] = {k: (v.indices, v.values) for k, v in res.topm.items()}
            result["resumed_labels"] = res.labels
            result["checkpoints"] = seen
            try:
                distributed.check_same(f"model-{rank}", "model fingerprint")
            except RuntimeError as e:
                result["same"] = str(e)
        torch.save(result, os.path.join(out, f"r{rank}.pt"))  # test output only, not a store file
    finally:
        dist.destroy_process_group()


def test_process_group_primitives_on_two_gloo_ranks(tmp_path):
    root, out = tmp_path / "store", tmp_path / "out"
    out.mkdir()
    Store(root)
    _spawn(_worker, (2, _free_port(), str(root), str(out)))
    r0, r1 = (torch.load(out / f"r{r}.pt", weights_only=False) for r in (0, 1))
    for r in (r0, r1):
        assert r["gather"] == [["a", "b", "flag"], ["a"], [0.0, 1.0, 2.0, 3.0], [True, False]]
        assert r["none"] is None and r["bcast"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert r["chunks"] == [i * 10 for i in range(9)]
        assert "rank(s) [1] hold another model fingerprint than rank 0" in r["same"]
    # resumed + sharded collection == one uninterrupted pass, bit for bit, on both ranks
    whole = collect_topm(_cli_world.model(), _cli_world.duplicated(), ["features.relu2", "fc"], 4, batch_size=8,
                         progress=False)
    for r in (r0, r1):
        for name, (idx, val) in r["resumed"].items():
            assert torch.equal(idx, whole.topm[name].indices) and torch.equal(val, whole.topm[name].values)
        assert torch.equal(r["resumed_labels"], whole.labels)
    # 3 batches left after the resume: a round of 2 (one per rank) is checkpointed, the last is not
    assert r0["checkpoints"] == [32] and r1["checkpoints"] == []
    # the stored chunk was loaded, not recomputed; the other four were dealt out in rounds
    assert sorted(r0["computed"] + r1["computed"]) == [(0, 2), (4, 6), (6, 8), (8, 9)]
    assert r0["computed"] == [(0, 2), (6, 8)] and r1["computed"] == [(4, 6), (8, 9)]
    assert r0["saved"] == ["job/chunk0-2", "job/chunk2-4", "job/chunk4-6", "job/chunk6-8", "job/chunk8-9"]


def _reopen_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    import torch.distributed as dist

    import semlens_widgets as slw

    # the default thread count, as in the run: the fingerprint of a tensor over 2**20 elements
    # (the tiny CLIP's token embedding) depends on it (store.tensor_digest's float64 sums)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        if rank == 0:  # rank 1 never calls in: a collective here would wait forever
            lens = slw.Lens.from_store(root, device="cpu", progress=False)
            with open(os.path.join(out, "ok"), "w") as f:
                f.write(str(lens.num_components("features.relu1")))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # a run, then two spawned processes importing the package on 2 shared cores
def test_reopening_on_one_rank_of_a_group_is_local(tmp_path, capsys):
    store = tmp_path / "store"
    assert cli.main(["run", "--model", "_cli_world:model", "--dataset", "_cli_world:small_dataset", "--fm",
                     "_cli_world:fm", "--app-dir", TESTS, "--layers", "features.relu1", "--m", "2", "--crop",
                     "activation", "--store", str(store), "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    _spawn(_reopen_worker, (2, _free_port(), str(store), str(tmp_path)), seconds=90)
    assert (tmp_path / "ok").read_text() == "4"
