"""torch.distributed for SemanticLens runs: sharded work, one writer, results identical to one process.

A run started by ``torchrun --nproc_per_node=N -m semlens_widgets run ...`` (or ``Lens.run()``
called on every rank of an initialised process group) splits its work over the ranks:

- collection: the dataset is cut into contiguous shards of whole batches
  (:func:`batch_shard`), so every sample is seen in exactly the batch it has in a
  one-process run (same activations, bit for bit); each rank keeps the running top-m of its
  shard, and the shards are all-gathered and merged exactly
  (:func:`~semlens_widgets.kernels.collect.merge_states`, ties broken by the lower sample index);
  labels, predictions and visit counts are summed over the ranks;
- crops, embeddings and class relevance: the chunks of components (or samples) that a
  one-process run would compute (same boundaries, so the same batches) are dealt out in rounds
  (:func:`chunked`), one chunk per rank per round, and all-gathered after each round;
- one writer: only rank 0 reads and writes the store. It saves every finished chunk as a
  checkpoint (a killed run resumes, with any number of ranks) and the final entries; the other
  ranks receive everything they need over the process group (:func:`load`,
  :func:`broadcast_tensors`), so they never read a file rank 0 is writing, and the store
  directory needs to exist only where rank 0 runs (a shared filesystem is still the simplest
  way to read the results afterwards from any node).

The result is the store of a one-process run, tensor for tensor, given the same per-process
kernels (the same device type and, on CPUs, the same number of threads per process: a
reduction split over more threads can round differently).

Sharding is on only inside :func:`sharded` (``Pipeline.run`` enters it): there every rank must
make the same calls in the same order (they are collective). Everything else a Lens does
(search, labels, maps, measures, reports) stays local to the rank that calls it, so
``if rank == 0: lens.report(...)`` after a run is safe.

Tensors travel as byte buffers (``dist.broadcast`` / ``dist.all_gather`` of ``uint8``; names,
dtypes and shapes as small objects): nothing is pickled. With the NCCL backend the buffers go
through the current CUDA device; gloo moves CPU tensors.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Callable, Iterator

import torch

__all__ = [
    "group_active",
    "active",
    "sharded",
    "local",
    "rank",
    "world_size",
    "is_writer",
    "init_from_env",
    "barrier",
    "broadcast_object",
    "check_same",
    "broadcast_tensors",
    "all_gather_tensors",
    "all_reduce_sum",
    "load",
    "save",
    "meta",
    "drop_chunks",
    "cached",
    "chunked",
    "batch_shard",
    "collect_sharded",
]

_state = threading.local()


# ---------------------------------------------------------------------------- the group


@contextlib.contextmanager
def _counted(flag: str) -> Iterator[None]:
    """Count this thread into ``flag`` while the block runs (nested blocks count up)."""
    setattr(_state, flag, getattr(_state, flag, 0) + 1)
    try:
        yield
    finally:
        setattr(_state, flag, getattr(_state, flag) - 1)


def local() -> contextlib.AbstractContextManager:
    """Run the enclosed pipeline steps in this process alone, even inside a process group (e.g.
    reopening a finished store on rank 0 only: ``Lens.from_store`` loads under it)."""
    return _counted("local")


def group_active() -> bool:
    """True when a default process group of more than one rank is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def active() -> bool:
    """True inside :func:`sharded` (and not inside :func:`local`) with an initialised group of
    more than one rank: calls are collective and work is shared."""
    return getattr(_state, "depth", 0) > 0 and not getattr(_state, "local", 0) and group_active()


def sharded() -> contextlib.AbstractContextManager:
    """Share the work of the enclosed pipeline steps among the ranks (a no-op without a group of
    more than one rank). Every rank must run the same steps inside it."""
    return _counted("depth")


def rank() -> int:
    """This process's rank in the default group (0 without a group)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_writer() -> bool:
    """Whether this process writes the store: rank 0 of a group, or a process without one."""
    return rank() == 0


def init_from_env(device: str | None) -> tuple[bool, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment.

    With ``WORLD_SIZE`` > 1 in the environment (torchrun sets ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and no group yet, initialises the default
    group: NCCL when the device is CUDA, else gloo. ``device``: ``"cuda"`` becomes
    ``cuda:LOCAL_RANK`` (one GPU per process), ``"auto"``/None picks CUDA when available.
    Returns ``(created, device)``; ``created`` is True when this call made the group (the
    caller destroys it at the end).
    """
    import torch.distributed as dist

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda" and dev.index is None:
        if world > 1 or "LOCAL_RANK" in os.environ:
            if local >= torch.cuda.device_count():
                raise RuntimeError(
                    f"LOCAL_RANK {local} has no GPU: this node has {torch.cuda.device_count()}; start at most that "
                    f"many processes per node (torchrun --nproc_per_node)"
                )
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1 or not dist.is_available() or dist.is_initialized():
        return False, dev
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return True, dev


def _comm_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    import torch.distributed as dist

    if group_active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (small JSON-like values: flags, index lists)."""
    import torch.distributed as dist

    if not group_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _all_gather_object(obj: Any) -> list:
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def check_same(value: Any, what: str) -> None:
    """Raise on every rank when the ranks do not hold the same ``value`` (e.g. the fingerprint of
    the model, data and settings: each rank must build the same lens). Sharded only."""
    if not active():
        return
    values = _all_gather_object(value)
    bad = [r for r, v in enumerate(values) if v != values[0]]
    if bad:
        raise RuntimeError(
            f"rank(s) {bad} hold another {what} than rank 0 ({str(values[bad[0]])[:24]}... vs "
            f"{str(values[0])[:24]}...): every rank must build the same model, dataset, foundation model and "
            f"settings (seed any random initialisation; read the same files)"
        )


# ---------------------------------------------------------------------------- tensors over the group


def _spec(tensors: dict[str, torch.Tensor] | None) -> list | None:
    if tensors is None:
        return None
    return [(k, str(v.dtype).replace("torch.", ""), list(v.shape)) for k, v in tensors.items()]


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous()
    return t.reshape(-1).view(torch.uint8) if t.numel() else torch.zeros(0, dtype=torch.uint8, device=t.device)


def _from_bytes(buf: torch.Tensor, dtype: str, shape: list[int]) -> torch.Tensor:
    dt = getattr(torch, dtype)
    n = 1
    for s in shape:
        n *= s
    nbytes = n * torch.empty(0, dtype=dt).element_size()
    return buf[:nbytes].cpu().clone().view(dt).reshape(shape)


def _nbytes(spec_item: tuple) -> int:
    _, dtype, shape = spec_item
    n = 1
    for s in shape:
        n *= s
    return n * torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def broadcast_tensors(tensors: dict[str, torch.Tensor] | None, src: int = 0) -> dict[str, torch.Tensor] | None:
    """The tensors of rank ``src`` (a dict, or None) on every rank, on the CPU."""
    import torch.distributed as dist

    if not group_active():
        return tensors
    spec = broadcast_object(_spec(tensors), src=src)
    if spec is None:
        return None
    dev = _comm_device()
    out = {}
    for item in spec:
        name = item[0]
        if dist.get_rank() == src:
            buf = _as_bytes(tensors[name]).to(dev)
        else:
            buf = torch.empty(_nbytes(item), dtype=torch.uint8, device=dev)
        if buf.numel():
            dist.broadcast(buf, src=src)
        out[name] = _from_bytes(buf, item[1], item[2])
    return out


def all_gather_tensors(tensors: dict[str, torch.Tensor] | None) -> list[dict[str, torch.Tensor] | None]:
    """Every rank's tensors (a dict, or None) on every rank, on the CPU: element r is rank r's."""
    import torch.distributed as dist

    if not group_active():
        return [tensors]
    specs = _all_gather_object(_spec(tensors))
    names = sorted({item[0] for s in specs if s for item in s})
    dev = _comm_device()
    out: list[dict | None] = [None if s is None else {} for s in specs]
    for name in names:
        items = [next((it for it in s if it[0] == name), None) if s else None for s in specs]
        sizes = [_nbytes(it) if it else 0 for it in items]
        width = max(sizes)
        if width == 0:
            for r, it in enumerate(items):
                if it is not None:
                    out[r][name] = _from_bytes(torch.zeros(0, dtype=torch.uint8), it[1], it[2])
            continue
        buf = torch.zeros(width, dtype=torch.uint8, device=dev)
        if tensors is not None and name in tensors:
            b = _as_bytes(tensors[name])
            buf[: b.numel()] = b.to(dev)
        bufs = [torch.empty(width, dtype=torch.uint8, device=dev) for _ in specs]
        dist.all_gather(bufs, buf)
        for r, it in enumerate(items):
            if it is not None:
                out[r][name] = _from_bytes(bufs[r], it[1], it[2])
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``t`` over the ranks (a new CPU tensor; ``t`` itself is kept)."""
    import torch.distributed as dist

    if not group_active():
        return t.clone()
    buf = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


# ---------------------------------------------------------------------------- the store, one writer


def load(store, key: str, fingerprint: str, *, lazy: bool = False) -> dict[str, torch.Tensor] | None:
    """``store.load`` on rank 0, its answer on every rank (sharded); else a plain ``store.load``
    (``lazy``: big entries memory-mapped, in one process only)."""
    if not active():
        return store.load(key, fingerprint, lazy=lazy)
    return broadcast_tensors(store.load(key, fingerprint) if is_writer() else None)


def meta(store, key: str) -> dict | None:
    """``store.meta`` on rank 0, its answer on every rank (sharded); else a plain ``store.meta``."""
    if not active():
        return store.meta(key)
    return broadcast_object(store.meta(key) if is_writer() else None)


def save(store, key: str, tensors: dict[str, torch.Tensor], fingerprint: str, meta: dict | None = None) -> None:
    """``store.save`` on the writer only (every rank holds the same tensors)."""
    if not active() or is_writer():
        store.save(key, tensors, fingerprint, meta=meta)


def drop_chunks(store, prefix: str) -> None:
    if not active() or is_writer():
        store.drop_chunks(prefix)


@contextlib.contextmanager
def _writer_lock(store, name: str) -> Iterator[None]:
    """The store's step lock ``name``, held by the writer (the others wait in the collectives)."""
    if is_writer():
        with store.lock(name):
            yield
    else:
        yield


def cached(store, key: str, fingerprint: str, compute: Callable[[], dict[str, torch.Tensor]], *,
           meta: dict | None = None, lazy: bool = False) -> dict[str, torch.Tensor]:
    """``store.cached`` shared by the ranks (sharded): rank 0 looks, every rank gets its answer;
    when the entry is missing every rank runs ``compute()`` (which may be collective and must give
    every rank the same tensors) and rank 0 saves them. Else a plain ``store.cached`` (``lazy``:
    as in ``store.load``)."""
    if not active():
        return store.cached(key, fingerprint, compute, meta=meta, lazy=lazy)
    with _writer_lock(store, key):
        got = load(store, key, fingerprint)
        if got is None:
            got = compute()
            save(store, key, got, fingerprint, meta=meta)
    return got


def chunked(store, prefix: str, fp: str, n: int, size: int, compute: Callable[[int, int], dict], *, desc: str,
            progress: bool = False) -> list[dict]:
    """``store.chunked`` with the chunks dealt out to the ranks (sharded); else a plain
    ``store.chunked``.

    The chunks are those of one process (``[a, a + size)`` over ``range(n)``), so each is
    computed exactly as a one-process run computes it. Rank 0 lists the checkpoints already in
    the store; the others are dealt out in rounds (chunk ``todo[round * W + r]`` to rank r),
    all-gathered after each round and saved as checkpoints by rank 0 (a killed run resumes
    from them, with any number of ranks). Every rank returns every chunk's tensors, in order.
    A single chunk is computed by rank 0 without a checkpoint, as ``store.chunked`` does.
    """
    if not active():
        return store.chunked(prefix, fp, n, size, compute, desc=desc, progress=progress)
    from tqdm.auto import tqdm

    chunks = [(a, min(a + size, n)) for a in range(0, n, size)]
    if not chunks:
        return []
    if len(chunks) == 1:
        return [broadcast_tensors(compute(*chunks[0]) if is_writer() else None)]
    r, w = rank(), world_size()
    key = lambda i: f"{prefix}/chunk{chunks[i][0]}-{chunks[i][1]}"  # noqa: E731
    with _writer_lock(store, prefix):
        done = broadcast_object([i for i in range(len(chunks)) if store.has(key(i), fp)] if r == 0 else None)
        todo = [i for i in range(len(chunks)) if i not in set(done)]
        parts: list[dict | None] = [None] * len(chunks)
        with tqdm(total=len(chunks), desc=desc, disable=not (progress and r == 0), unit="chunk") as bar:
            for i in done:
                parts[i] = broadcast_tensors(store.load(key(i), fp) if r == 0 else None)
                if parts[i] is None:  # listed but unreadable (a warning said why): compute it again
                    parts[i] = broadcast_tensors(compute(*chunks[i]) if r == 0 else None)
                    save(store, key(i), parts[i], fp)
                bar.update()
            for s in range(0, len(todo), w):
                mine = todo[s + r] if s + r < len(todo) else None
                got = all_gather_tensors(compute(*chunks[mine]) if mine is not None else None)
                for j, part in enumerate(got):
                    if s + j < len(todo):
                        parts[todo[s + j]] = part
                        save(store, key(todo[s + j]), part, fp)
                bar.update(min(w, len(todo) - s))
    return parts  # type: ignore[return-value]


# ---------------------------------------------------------------------------- data shards


def batch_shard(n: int, batch_size: int, rank: int, world: int) -> range:
    """The sample indices of ``rank``: a contiguous block of whole batches of a one-process pass
    (batches ``[b * batch_size, (b + 1) * batch_size)``, the last one short), so that every
    sample is computed in the same batch as in one process. Ranks beyond the number of batches
    get an empty range."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a group of {world}")
    batches = -(-n // batch_size)
    lo, hi = batches * rank // world, batches * (rank + 1) // world
    return range(min(lo * batch_size, n), min(hi * batch_size, n))


def _merge_over_ranks(local, base, device: torch.device):
    """The state of the whole pass so far: every rank's ``local`` state (all-gathered as the
    tensors and meta of ``RunningTopM.state_dict``) merged with ``base`` (the state a resumed pass
    started from, the same on every rank, or None). The same on every rank."""
    from semlens_widgets.kernels.collect import RunningTopM, merge_states

    tensors, meta = local.state_dict()
    metas = _all_gather_object(meta)
    states = [RunningTopM.from_state(t, m, device) for t, m in zip(all_gather_tensors(tensors), metas)]
    return merge_states(([base] if base is not None else []) + states)


def collect_sharded(collect: Callable[[list[int], Any], Any], fresh: Callable[[], Any], *, n_total: int,
                    batch_size: int, state: Any = None, checkpoint: Callable[[Any], None] | None = None,
                    checkpoint_every: int | None = None, checkpoint_seconds: float = 60.0,
                    progress: bool = False, device: torch.device | str = "cpu"):
    """One collection pass shared by the ranks (sharded; every rank calls it); returns the merged
    ``RunningTopM`` of the whole pass, the same on every rank.

    The samples a pass still has to visit (all, or those ``state``, the merged state of an
    interrupted pass, has not visited) are cut into the batches of a one-process pass
    (``batch_size``), and the batches are dealt out in rounds: each round gives every rank a
    contiguous block of them (:func:`batch_shard` within the round), which the rank collects
    into its own running state with ``collect(indices, local_state) -> local_state``
    (``fresh()`` makes an empty one). After each round but the last, the ranks' states are
    all-gathered and merged (exactly, ``kernels.collect.merge_states``) and rank 0 calls
    ``checkpoint(merged)``. Rounds are ``checkpoint_every`` batches per rank, or (None) sized by
    rank 0's speed so that a round takes about ``checkpoint_seconds`` (the first round is one
    batch per rank); without a checkpoint (rank 0 passes None) the pass is one round.

    Every sample is computed in the batch it has in a one-process pass, and the merge breaks
    ties by sample index, so the result equals a one-process pass bit for bit, whatever the
    number of ranks, the round sizes or the interruptions.
    """
    from tqdm.auto import tqdm

    r, w = rank(), world_size()
    visited = state.visits.cpu() > 0 if state is not None else torch.zeros(n_total, dtype=torch.bool)
    todo = (~visited).nonzero()[:, 0]  # [n_todo] global indices, ascending
    n_batches = -(-todo.numel() // batch_size)
    rounds = broadcast_object(checkpoint is not None if r == 0 else None)
    per_rank = (checkpoint_every or 1) if rounds else max(1, n_batches)
    local = fresh()
    done = 0
    before = state.batches if state is not None else 0
    with tqdm(total=before + n_batches, initial=before, desc="collect top-m", unit="batch",
              disable=not (progress and r == 0)) as bar:
        while done < n_batches:
            size = min(per_rank * w, n_batches - done)
            lo, hi = done + size * r // w, done + size * (r + 1) // w
            mine = todo[lo * batch_size: hi * batch_size].tolist()
            t0 = time.perf_counter()
            if mine:
                local = collect(mine, local)
            spent = time.perf_counter() - t0
            done += size
            bar.update(size)
            if not rounds or done >= n_batches:
                continue
            merged = _merge_over_ranks(local, state, torch.device(device))
            if r == 0:
                checkpoint(merged)
            if checkpoint_every is None:  # rank 0's pace sets the next round's size
                per_rank = broadcast_object(
                    max(1, int(per_rank * checkpoint_seconds / max(spent, 1e-3))) if r == 0 else None)
    return _merge_over_ranks(local, state, torch.device(device))
