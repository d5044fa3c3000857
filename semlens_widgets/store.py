"""On-disk results: safetensors tensor files plus one JSON manifest.

Layout of a store directory::

    <root>/manifest.json                         the index (see below)
    <root>/<safe key>.<12 hex>.safetensors       one file per key (tensors only, no pickle)
    <root>/.semlens-store.lock                   inter-process lock of the manifest
    <root>/.semlens-writers.lock                 held (shared) by every save while it writes
    <root>/.semlens-step-<name>.<hash>.lock      a step lock (:meth:`Store.lock`), while held

``manifest.json``::

    {"format": "semlens-store", "version": 1,
     "info":    {name: JSON value, ...}            # store-level records (e.g. the Lens identity)
     "entries": {key: {"file", "fingerprint", "sha256", "meta", "shapes", "dtypes",
                       "package_version", "created", "blocks" (files above 64 MiB)}}}

Every entry records the fingerprint of the inputs that produced it; :meth:`Store.load` with
another fingerprint answers ``None`` ("not there"), so stale results are never reused.

Crash safety. A save writes the tensors to a temporary file in the same directory, fsyncs it
and renames it (``os.replace``) to a *fresh* file name, then rewrites the manifest the same
way, and only then removes the file the key pointed to before. A crash at any point leaves
the manifest pointing at complete files only (at worst an orphan file nobody references, or a
``.tmp-*`` part, removed by the next save or by :meth:`Store.clear`). The manifest also records
the sha256 of each file, and a file whose bytes do not match is reported as missing, never
returned half-read. Nothing is ever pickled and nothing is read with ``torch.load``.

Lazy reads. ``load(key, fp, lazy=True)`` memory-maps a file above 64 MiB instead of reading it
and returns a :class:`MappedEntry` (a mapping name -> tensor view), so a store over a million
components opens without reading its gigabytes. Integrity then works per block: a save of such a
file also records the sha256 of each 64 MiB block (``"blocks"`` in its record); opening checks
the blocks that hold the safetensors header and the header itself against the record (names,
shapes, dtypes, byte ranges inside the file), and each tensor's blocks are hashed the first time
the tensor is taken, once per process, raising :class:`StoreCorruptError` on a mismatch. The
whole-file sha256 stays what eager loads check (and what lazy loads check, once, for big entries
saved before block digests existed). Mapping uses the descriptor opened with the checks below
(no symbolic links, regular files only).

A shared store is untrusted input. The manifest is validated as a whole on every read (its
structure, field types, and every ``file`` being a plain name of the store's own pattern
``<safe key>.<12 hex>.safetensors``, each named by one entry only); a manifest that breaks this
is refused with a :class:`StoreError` naming the entry and the bad value, before anything is
read or deleted. The store reads, writes and deletes only regular files of its own name
patterns directly inside its root: symbolic links (a linked manifest, entry file or lock file),
FIFOs and directories are refused or left alone, never followed. Manifests over 256 MiB are
refused.

Concurrency. Every manifest read-modify-write (save, delete, set_info, clear) holds an
inter-process lock (``fcntl.flock`` on ``.semlens-store.lock``), so processes sharing a store
lose no entries; reads need no lock (the manifest is replaced atomically). Orphans are swept
only while no other save is between writing its file and registering it. For long work,
:meth:`Store.lock` is a named step lock that records its holder (pid, host, time): another
process waits for it (saying what it waits for) or, with ``wait=False``, gets a
:class:`StoreLockedError` naming the holder's pid. Locks die with their process (the kernel
drops them), so the lock of a killed run is simply taken over. :meth:`Store.cached` and
:meth:`Store.chunked` re-check the store under step locks: a second process loads what the
first computed instead of computing it again. On platforms without ``fcntl`` (Windows) there is
no inter-process locking: a warning says so once, and two processes must not write one store
at the same time there.

Keys are strings and may contain ``/`` (``"embed/layer3"``); they are mapped to safe file names.
"""
from __future__ import annotations

import copy
import errno
import hashlib
import json
import math
import mmap
import os
import re
import socket
import stat
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

try:  # POSIX inter-process locks; absent on Windows (see the module docstring)
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None

__all__ = [
    "Store", "StoreLock", "fingerprint", "module_fingerprint", "module_signature", "tensor_digest",
    "StoreError", "StoreLockedError", "StoreCorruptError", "MappedEntry", "atomic_write_bytes",
]

MANIFEST = "manifest.json"
FORMAT = "semlens-store"
FORMAT_VERSION = 1

# The store's own file names. Only names matching these are ever read, written or deleted.
_FILE_RE = re.compile(r"(?!\.)[A-Za-z0-9._-]{1,80}\.[0-9a-f]{12}\.safetensors")  # fullmatch
_FILE_PATTERN = "'<safe key>.<12 lowercase hex digits>.safetensors'"
_STORE_TMP_PREFIX = ".tmp-store-"
# temp parts of the store's atomic writes; the second form is what earlier versions left behind
_TMP_RE = re.compile(r"\.tmp-store-[a-z0-9_]{1,64}\.part|\.tmp-[a-z0-9_]{8}\.part")
_MANIFEST_LOCK = ".semlens-store.lock"
_WRITERS_LOCK = ".semlens-writers.lock"
_STEP_LOCK_PREFIX = ".semlens-step-"
_LOCK_RE = re.compile(r"\.semlens-[A-Za-z0-9._-]+\.lock")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_MAX_MANIFEST_BYTES = 256 << 20  # a bigger manifest is refused (a hostile one could exhaust memory)
# Lazy reads (Store.load(..., lazy=True)): files above _LAZY_MIN_BYTES are memory-mapped instead
# of read; such files also record the sha256 of each _BLOCK_BYTES block at save ("blocks"), so a
# mapped tensor is verified block by block when it is first taken (see MappedEntry).
_LAZY_MIN_BYTES = 64 << 20
_BLOCK_BYTES = 64 << 20
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on a file's JSON header

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO planted under our name must not hang
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.ENOSYS, errno.EINVAL}

# Tensors with more elements than this are hashed from a strided sample plus float64 moments
# (see tensor_digest); smaller ones are hashed in full.
_FULL_HASH_MAX_NUMEL = 1 << 20
_SAMPLE_NUMEL = 1 << 16


class StoreError(ValueError):
    """A store directory that cannot be used as asked (wrong format, different model, a manifest
    that breaks the store's rules, ...)."""


class StoreLockedError(StoreError):
    """A step lock (:meth:`Store.lock`) is held by another process: ``pid`` and ``host`` name the
    holder (``None`` when it has not recorded itself yet)."""

    def __init__(self, message: str, *, name: str, pid: int | None, host: str | None):
        super().__init__(message)
        self.name, self.pid, self.host = name, pid, host


class StoreCorruptError(StoreError):
    """The bytes of a memory-mapped entry do not match the digests the store recorded when it
    saved them (:class:`MappedEntry`: raised when the damaged tensor is first taken). ``key`` and
    ``tensor`` name what is damaged; deleting the entry (``store.delete(key)``) lets the next run
    recompute it."""

    def __init__(self, message: str, *, key: str, tensor: str | None):
        super().__init__(message)
        self.key, self.tensor = key, tensor


def _package_version() -> str:
    try:
        from semlens_widgets import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - only if the package is half-installed
        return "unknown"


def _canonical(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON-able data with a canonical form (tuples -> lists, paths ->
    str, tensors -> shape/dtype/digest, floats finite-checked)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return repr(obj)
        return obj
    if isinstance(obj, (list, tuple)):
        return [_canonical(x) for x in obj]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                k = str(k)
            out[k] = _canonical(v)
        return out
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return {"tensor": tensor_digest(obj)}
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalars
        return _canonical(obj.item())
    raise TypeError(
        f"fingerprint parts must be JSON-able (None, bool, int, float, str, list, tuple, dict, "
        f"Path, Tensor); got {type(obj).__name__}: {obj!r:.80}"
    )


def fingerprint(*parts: Any) -> str:
    """Stable sha256 (hex) over JSON-able ``parts``.

    The parts are canonicalised (dict keys sorted, tuples as lists, tensors by
    :func:`tensor_digest`) and serialised as compact JSON, so equal inputs give equal
    fingerprints across processes and machines.
    """
    payload = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 (hex) of a tensor's dtype, shape and content; the same on every device, thread
    count and machine.

    Tensors up to 2**20 elements are hashed byte for byte. Bigger ones are hashed from a
    strided sample of 2**16 elements (evenly spaced over the flattened tensor) plus two exact
    integer moments of the whole tensor's raw bytes, read as unsigned 16-bit words: their sum
    and their sum of squares (see :func:`_word_moments`). Integer sums do not depend on the
    order of summation, so a store made on a GPU, under torchrun (one thread per process) or
    in a notebook (many threads) gets the same fingerprints -- float sums did not. Any
    realistic change of the weights (fine-tuning, a different checkpoint) changes the digest,
    and hashing a 100M-parameter model stays around a second.
    """
    t = t.detach()
    h = hashlib.sha256()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    flat = t.reshape(-1)
    if flat.numel() > _FULL_HASH_MAX_NUMEL:
        h.update(_word_moments(flat).encode())
        step = flat.numel() // _SAMPLE_NUMEL
        flat = flat[::step][:_SAMPLE_NUMEL]
    # raw bytes work for every dtype (bool, bfloat16, float8, ...)
    h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_WORD_CHUNK = 1 << 24  # 16-bit words per partial sum: squares < 2**32, a chunk's sum < 2**56


def _word_moments(flat: torch.Tensor) -> str:
    """Exact ``sum(w)`` and ``sum(w * w)`` over the raw bytes of ``flat [n]`` read as unsigned
    16-bit words ``w`` (a trailing odd byte counts as one word), computed where the tensor
    lives in int64 chunks (no overflow: a chunk's sums stay below 2**56) and accumulated as
    Python ints. Returned as ``"<sum>:<sum of squares>"``."""
    raw = flat.contiguous().view(torch.uint8)
    odd = raw.numel() % 2
    words = raw[: raw.numel() - odd].view(torch.int16)
    total = square = 0
    for s in range(0, words.numel(), _WORD_CHUNK):
        w = words[s : s + _WORD_CHUNK].to(torch.int64) & 0xFFFF
        total += int(w.sum())
        square += int((w * w).sum())
    if odd:
        last = int(raw[-1])
        total, square = total + last, square + last * last
    return f"{total}:{square}"


def module_fingerprint(module: torch.nn.Module) -> str:
    """Fingerprint of a model's parameters and buffers (names, shapes, dtypes, content).

    Uses :func:`tensor_digest` per tensor (full bytes for small tensors, a strided sample plus
    float64 moments for big ones). Two models with equal weights and buffers (e.g. BatchNorm
    running statistics) get the same fingerprint regardless of the device they live on.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module_fingerprint expects a torch.nn.Module, got {type(module).__name__}")
    h = hashlib.sha256()
    h.update(type(module).__qualname__.encode())
    for name, t in module.state_dict(keep_vars=False).items():
        if not isinstance(t, torch.Tensor):
            continue
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return h.hexdigest()


def module_signature(module: torch.nn.Module) -> str:
    """Fingerprint of a model's *architecture*: class name, parameter/buffer names and shapes
    (not their values). Used to tell "a different model" from "the same model, new weights"."""
    parts = [type(module).__module__ + "." + type(module).__qualname__]
    for name, t in module.state_dict(keep_vars=False).items():
        if isinstance(t, torch.Tensor):
            parts.append([name, list(t.shape), str(t.dtype)])
    return fingerprint(*parts)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(key: str) -> str:
    base = _SAFE.sub("_", key).strip("._")[:80] or "entry"
    return base


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # pragma: no cover
        return
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, prefix: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename."""
    _atomic_write(Path(path), data, ".tmp-write-")


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or key.strip() != key:
        raise ValueError(
            f"store key must be a non-empty string without surrounding whitespace, got {key!r}"
        )
    return key


def _check_tensors(key: str, tensors: Any, copy: bool = True) -> dict[str, torch.Tensor]:
    if not isinstance(tensors, dict) or not tensors:
        raise TypeError(
            f"store.save({key!r}, ...): tensors must be a non-empty dict[str, Tensor], "
            f"got {type(tensors).__name__}"
        )
    out = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"store.save({key!r}, ...): tensor names must be non-empty str, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"store.save({key!r}, ...): value of {name!r} must be a torch.Tensor, "
                f"got {type(t).__name__}"
            )
        out[name] = t.detach().to("cpu").contiguous()
    # copies: an in-memory store keeps the tensors (the caller may change its own); safetensors
    # refuses tensors sharing storage. A file needs no copy otherwise (saving a 30 GB entry then
    # holds its bytes once, not twice).
    seen: set[int] = set()
    for name, t in out.items():
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if copy or ptr in seen:
            out[name] = t.clone()
        elif ptr is not None:
            seen.add(ptr)
    return out


def _check_json(key: str, meta: Any) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise TypeError(f"store.save({key!r}, ...): meta must be a dict or None, got {type(meta).__name__}")
    try:
        return json.loads(json.dumps(meta))
    except (TypeError, ValueError) as e:
        raise TypeError(f"store.save({key!r}, ...): meta must be JSON-serialisable: {e}") from None


class _NotWritable(StoreError):
    """The store directory cannot be written (permissions, read-only file system)."""


# ---------------------------------------------------------------------- manifest validation
def _short(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile manifest may hold huge strings)."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[:limit - 20]}... ({len(r)} characters)"


def _is_shape(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v)


# field -> (check, what is accepted); a record needs every field of _REQUIRED
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "file": (lambda v: isinstance(v, str) and _FILE_RE.fullmatch(v) is not None,
             f"a plain file name {_FILE_PATTERN} inside the store directory"),
    "fingerprint": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "sha256": (lambda v: isinstance(v, str) and _SHA256_RE.fullmatch(v) is not None,
               "64 lowercase hex digits"),
    "shapes": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_shape(x) for k, x in v.items()),
               "a dict of tensor name -> list of non-negative ints"),
    "meta": (lambda v: isinstance(v, dict), "a dict"),
    "dtypes": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
               "a dict of tensor name -> dtype name"),
    "package_version": (lambda v: isinstance(v, str), "a string"),
    "created": (lambda v: isinstance(v, str), "a string"),
    "blocks": (lambda v: isinstance(v, dict) and set(v) == {"size", "sha256"} and type(v["size"]) is int
               and v["size"] > 0 and isinstance(v["sha256"], list) and len(v["sha256"]) > 0
               and all(isinstance(h, str) and _SHA256_RE.fullmatch(h) is not None for h in v["sha256"]),
               "a dict {'size': block bytes (int > 0), 'sha256': [64 lowercase hex digits per block, ...]}"),
}
_REQUIRED = ("file", "fingerprint", "sha256", "shapes", "meta")


def _validate_manifest(data: Any, where: str) -> dict:
    """Check the whole manifest (structure, field types, file names) or raise :class:`StoreError`
    naming the entry and the bad value. Returns ``data`` with ``info`` / ``entries`` defaulted."""
    refused = ("; the manifest is refused and nothing was read or deleted. Fix or remove that entry "
               "in manifest.json, or use another store directory.")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else None
        raise StoreError(f"{where} is not a semlens store manifest (format {_short(got)}, expected {FORMAT!r})")
    if type(data.get("version")) is not int or data["version"] != FORMAT_VERSION:
        raise StoreError(
            f"{where} has format version {_short(data.get('version'))}; this semlens_widgets reads "
            f"version {FORMAT_VERSION}. Use a new store directory."
        )
    info = data.setdefault("info", {})
    if not isinstance(info, dict):
        raise StoreError(f"{where}: 'info' must be a dict of store-level records, got {type(info).__name__}{refused}")
    entries = data.setdefault("entries", {})
    if not isinstance(entries, dict):
        raise StoreError(f"{where}: 'entries' must be a dict of key -> record, got {type(entries).__name__}{refused}")
    owner: dict[str, str] = {}
    for key, rec in entries.items():
        if not key or key.strip() != key:
            raise StoreError(f"{where}: entry key {_short(key)} is not a store key (a non-empty string "
                             f"without surrounding whitespace){refused}")
        if not isinstance(rec, dict):
            raise StoreError(f"{where}: entry {_short(key)} must be a dict (a manifest record), got "
                             f"{type(rec).__name__}{refused}")
        for field in _REQUIRED:
            if field not in rec:
                raise StoreError(f"{where}: entry {_short(key)} has no {field!r} field (a record needs "
                                 f"{', '.join(map(repr, _REQUIRED))}){refused}")
        for field, (ok, accepted) in _FIELDS.items():
            if field in rec and not ok(rec[field]):
                raise StoreError(f"{where}: entry {_short(key)} has {field!r} {_short(rec[field])} "
                                 f"({type(rec[field]).__name__}); accepted: {accepted}{refused}")
        fname = rec["file"]
        if fname in owner:
            raise StoreError(f"{where}: entries {_short(owner[fname])} and {_short(key)} both name file "
                             f"{fname!r}; each entry owns its own file{refused}")
        owner[fname] = key
    return data


_ENCODE = json.JSONEncoder(sort_keys=True, separators=(", ", ": ")).encode  # the C encoder (no indent)


def _dump_manifest(data: dict) -> bytes:
    """The manifest as JSON with one line per top-level field and per entry: readable, and
    encoded by json's C encoder (``indent=`` would use the pure-Python one, 10x slower on a
    manifest of thousands of entries that is rewritten at every save)."""
    lines = [f" {_ENCODE(k)}: {_ENCODE(v)}," for k, v in sorted(data.items()) if k != "entries"]
    entries = data.get("entries", {})
    body = ",\n".join(f"  {_ENCODE(k)}: {_ENCODE(entries[k])}" for k in sorted(entries))
    body = "{\n" + body + "\n }" if body else "{}"
    return ("{\n" + "\n".join(lines) + '\n "entries": ' + body + "\n}\n").encode("utf-8")


# ---------------------------------------------------------------------- inter-process locks
_TLS = threading.local()  # per thread: lock file path -> [fd, exclusive, depth] (re-entrancy)
_WARNED: set[str] = set()


def _held() -> dict:
    d = getattr(_TLS, "held", None)
    if d is None:
        d = _TLS.held = {}
    return d


def _forget_locks_after_fork() -> None:
    # A forked child shares its parent's lock descriptors; it must never release them.
    global _TLS
    _TLS = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_after_fork)


def _warn_once(tag: str, message: str) -> None:
    if tag not in _WARNED:
        _WARNED.add(tag)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _pid_alive(pid: int) -> bool | None:
    """True / False for a pid on this machine; None when it cannot be told."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return None
    return True


def _read_holder(path: Path) -> dict:
    """The JSON record a step-lock holder wrote into its lock file ({} when there is none)."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
    except OSError:
        return {}
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return {}
    finally:
        os.close(fd)
    try:
        info = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe_holder(info: dict) -> tuple[str, int | None, str | None]:
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return "another process (it has not recorded its pid yet)", None, None
    host = str(host)[:100] if host is not None else None
    text = f"pid {pid} on {host or 'an unknown host'}"
    since = info.get("since")
    if isinstance(since, str):
        text += f" since {since[:40]}"
    if host == socket.gethostname() and _pid_alive(pid) is False:
        text += " (that process has ended; a child process it started still holds the lock)"
    return text, pid, host


class StoreLock:
    """An inter-process lock on one file of a store (``fcntl.flock``); re-entrant within a
    thread, exclusive between threads and processes. Use :meth:`Store.lock` to get one.

    Attributes: ``name`` (the step name), ``path`` (the lock file, ``None`` when nothing is
    locked: an in-memory store, a read-only store, or a platform without ``fcntl``)."""

    def __init__(self, store: "Store", name: str, path: Path | None, *, exclusive: bool = True,
                 wait: bool = True, timeout: float | None = None, step: bool = False):
        self.store, self.name, self.path = store, name, path
        self.exclusive, self.wait, self.timeout, self.step = exclusive, wait, timeout, step
        self._key: str | None = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"StoreLock({self.name!r}, {'held' if self._key else 'not held'})"

    # -------------------------------------------------------------- acquire / release
    def acquire(self) -> "StoreLock":
        """Take the lock (waiting, or raising :class:`StoreLockedError`, as configured)."""
        if self._key is not None:
            raise RuntimeError(f"{self!r} is already acquired")
        if self.path is None:
            self._key = ""
            return self
        key = str(self.path)
        held = _held()
        h = held.get(key)
        if h is not None:  # this thread holds it already: re-enter
            if h[1] != self.exclusive:
                raise RuntimeError(f"lock {key!r} is held {'exclusive' if h[1] else 'shared'} by this thread")
            h[2] += 1
            self._key = key
            return self
        fd = self._take()
        held[key] = [fd, self.exclusive, 1]
        self._key = key
        if fd is not None and self.step:
            record = {"pid": os.getpid(), "host": socket.gethostname(), "name": self.name,
                      "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "time": time.time()}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
            except OSError:  # pragma: no cover - the lock itself is what matters
                pass
        return self

    def release(self) -> None:
        key, self._key = self._key, None
        if not key:
            return
        held = _held()
        h = held.get(key)
        if h is None:  # pragma: no cover - released in another thread / after a fork
            return
        h[2] -= 1
        if h[2] > 0:
            return
        del held[key]
        fd = h[0]
        if fd is None:
            return
        try:
            if self.step:  # remove the file while still holding it (waiters re-check the inode)
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            _fcntl.flock(fd, _fcntl.LOCK_UN)  # explicit: a forked child may share the descriptor
        finally:
            os.close(fd)

    # -------------------------------------------------------------- internals
    def _open(self) -> int | None:
        assert self.path is not None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreError(
                    f"lock file {str(self.path)!r} of store {str(self.store.root)!r} is a symbolic link; "
                    f"a store uses only its own regular files. Remove the link."
                ) from None
            if e.errno in _NOT_WRITABLE:
                if self.step:  # nothing can be written here, so there is nothing to protect
                    return None
                raise _NotWritable(
                    f"store {str(self.store.root)!r} is not writable ({e.strerror}); results cannot be "
                    f"saved or deleted in it. Use a writable copy or another store directory."
                ) from None
            raise StoreError(f"cannot open lock file {str(self.path)!r}: {e}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreError(f"lock file {str(self.path)!r} of store {str(self.store.root)!r} is not a "
                             f"regular file; remove it")
        return fd

    def _take(self) -> int | None:
        if _fcntl is None:  # pragma: no cover - Windows
            _warn_once("platform", "semlens_widgets.store: this platform has no fcntl (e.g. Windows), so a "
                       "store has no inter-process locking: do not run two processes on one store directory "
                       "at the same time")
            return None
        mode = _fcntl.LOCK_EX if self.exclusive else _fcntl.LOCK_SH
        blocking = self.wait and self.timeout is None and not self.step
        deadline = None if self.timeout is None else time.monotonic() + max(float(self.timeout), 0.0)
        pause, told = 0.01, False
        while True:
            fd = self._open()
            if fd is None:
                return None
            try:
                _fcntl.flock(fd, mode if blocking else mode | _fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                info = _read_holder(self.path) if self.step else {}
                holder, pid, host = _describe_holder(info)
                where = f"{self.name!r} of store {str(self.store.root)!r}"
                if not self.wait:
                    raise StoreLockedError(
                        f"{where} is held by {holder}, which is probably computing the same step; wait "
                        f"for it (lock(..., wait=True)) or stop that process", name=self.name, pid=pid, host=host,
                    ) from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"waited {self.timeout:g} s for {where}, still held by {holder}; wait longer "
                        f"(timeout=None) or stop that process", name=self.name, pid=pid, host=host,
                    ) from None
                if self.step and not told:
                    told = True
                    warnings.warn(f"waiting for {where}: held by {holder}; this process continues (and "
                                  f"loads what it saved) when it is done", UserWarning, stacklevel=4)
                time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
                pause = min(pause * 2, 0.5)
                continue
            except OSError as e:
                os.close(fd)
                if e.errno in _NO_FLOCK:
                    _warn_once(f"fs:{self.store.root}", f"store {str(self.store.root)!r}: the file system "
                               f"does not support locks ({e.strerror}); do not run two processes on this store "
                               f"at the same time")
                    return None
                raise
            if self.step:  # the holder before us may have removed the file: then lock the new one
                try:
                    same = os.path.samestat(os.lstat(self.path), os.fstat(fd))
                except OSError:
                    same = False
                if not same:
                    _fcntl.flock(fd, _fcntl.LOCK_UN)
                    os.close(fd)
                    continue
            return fd


def _lock_file_name(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{_STEP_LOCK_PREFIX}{_safe_name(name)[:60]}.{digest}.lock"


# ---------------------------------------------------------------------- lazy (memory-mapped) reads
# safetensors dtype codes -> torch dtypes (a file with another dtype is read eagerly instead)
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
# Blocks of mapped files verified in this process: file identity -> block numbers. Store files are
# never rewritten in place (a save writes a new file), so a verified block stays verified.
_VERIFIED: dict[tuple, set[int]] = {}
_VERIFIED_LOCK = threading.Lock()


def _block_digests(data: Any, size: int) -> list[str]:
    """sha256 (hex) of each ``size``-byte block of ``data`` (bytes or a buffer), hashed on up to
    ``os.cpu_count()`` threads (hashlib releases the GIL on big buffers)."""
    view = memoryview(data)
    spans = [(a, min(a + size, len(view))) for a in range(0, len(view), size)] or [(0, 0)]
    work = lambda ab: hashlib.sha256(view[ab[0]:ab[1]]).hexdigest()  # noqa: E731
    if len(spans) == 1:
        return [work(spans[0])]
    with ThreadPoolExecutor(max_workers=min(len(spans), os.cpu_count() or 1)) as pool:
        return list(pool.map(work, spans))


class _Corrupt(Exception):
    """A mapped file that is not what its manifest record says (internal: turned into a warning
    and ``None`` at open, into :class:`StoreCorruptError` at a tensor's first access)."""


class MappedEntry(Mapping):
    """The tensors of one store entry, memory-mapped from its file (:meth:`Store.load` with
    ``lazy=True`` on a file above 64 MiB): a read-only mapping ``name -> Tensor``.

    Opening reads only the safetensors header, after checking the blocks that hold it against the
    digests recorded at save and the header against the manifest record (names, shapes, dtypes,
    byte ranges inside the file). A tensor's bytes are checked the first time it is taken
    (``entry[name]``): the blocks it spans are hashed (on all cores) and compared with the
    recorded digests, once per process; a mismatch raises :class:`StoreCorruptError`. Entries
    saved without block digests (older versions) are checked as a whole file at open.

    The tensors are views of a private (copy-on-write) mapping: writing into them never reaches
    the file, but other readers of the same ``MappedEntry`` in this process see the change, so
    clone before modifying. The mapping stays valid when the store later replaces or deletes the
    entry (the file's inode lives while it is mapped). What the digests guard against is
    accidental damage (disk errors, a partial copy); a process that can write the store's files
    can also rewrite its manifest, and truncating a mapped file under a reader crashes it (SIGBUS):
    share writable stores only with people you trust.
    """

    def __init__(self, key: str, where: str, mm: mmap.mmap, identity: tuple, blocks: dict | None,
                 spans: dict[str, tuple[int, int, torch.dtype, tuple[int, ...]]]):
        self.key, self.where = key, where
        self._mm, self._identity, self._blocks, self._spans = mm, identity, blocks, spans
        self._tensors: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    # ---- Mapping
    def __getitem__(self, name: str) -> torch.Tensor:
        t = self._tensors.get(name)
        if t is not None:
            return t
        if name not in self._spans:
            raise KeyError(name)
        with self._lock:
            t = self._tensors.get(name)
            if t is None:
                start, end, dtype, shape = self._spans[name]
                try:
                    self._verify(start, end)
                except _Corrupt as e:
                    raise StoreCorruptError(
                        f"{self.where}: tensor {name!r} of entry {_short(self.key)} is corrupt ({e}); delete "
                        f"the entry (store.delete({self.key!r})) so that the next run recomputes it",
                        key=self.key, tensor=name) from None
                t = self._tensors[name] = self._view(start, end, dtype, shape)
        return t

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {list(s[3])} {str(s[2]).replace('torch.', '')}" for n, s in self._spans.items())
        return f"MappedEntry({self.key!r}, {{{parts}}})"

    # ---- helpers
    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name`` (no data is read)."""
        return self._spans[name][3]

    def nbytes(self, name: str) -> int:
        """Bytes of tensor ``name`` in the file (no data is read)."""
        start, end, _, _ = self._spans[name]
        return end - start

    def verify(self) -> None:
        """Check every byte of the file now (raises :class:`StoreCorruptError` on a mismatch)."""
        try:
            self._verify(0, len(self._mm))
        except _Corrupt as e:
            raise StoreCorruptError(f"{self.where}: entry {_short(self.key)} is corrupt ({e})",
                                    key=self.key, tensor=None) from None

    def _verify(self, start: int, end: int) -> None:
        if self._blocks is None:  # checked as a whole at open
            return
        verify_blocks(self._mm, self._identity, self._blocks, start, end)

    def _view(self, start: int, end: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        numel = math.prod(shape)
        if numel == 0:
            return torch.empty(shape, dtype=dtype)
        item = torch.empty((), dtype=dtype).element_size()
        t = torch.frombuffer(self._mm, dtype=dtype, count=numel, offset=start)
        if start % item:  # pragma: no cover - safetensors aligns its data; copy if a file does not
            t = t.clone()
        return t.view(shape)


def verify_blocks(mm: Any, identity: tuple, blocks: dict, start: int, end: int) -> None:
    """Hash the recorded ``blocks`` of a mapped file that overlap bytes ``[start, end)`` (those not
    verified in this process yet) and compare them with the record; raises ``_Corrupt``."""
    size, digests = blocks["size"], blocks["sha256"]
    first, last = start // size, max(start, end - 1) // size
    with _VERIFIED_LOCK:
        done = _VERIFIED.setdefault(identity, set())
        todo = [b for b in range(first, last + 1) if b not in done]
    if not todo:
        return
    view = memoryview(mm)
    work = lambda b: (b, hashlib.sha256(view[b * size:(b + 1) * size]).hexdigest())  # noqa: E731
    if len(todo) == 1:
        got = [work(todo[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
            got = list(pool.map(work, todo))
    bad = [b for b, h in got if h != digests[b]]
    with _VERIFIED_LOCK:
        _VERIFIED.setdefault(identity, set()).update(b for b, h in got if h == digests[b])
    if bad:
        lo = bad[0] * size
        raise _Corrupt(f"checksum mismatch in bytes {lo}..{min(lo + size, len(view))} of the file")


def _mapped_spans(mm: Any, rec: dict) -> dict[str, tuple[int, int, torch.dtype, tuple[int, ...]]] | None:
    """The byte range, dtype and shape of each tensor of a mapped safetensors file, checked
    against the manifest record ``rec``; raises ``_Corrupt`` when the header is damaged or does not
    match, ``None`` when it uses a dtype this reader does not map (the caller reads it eagerly)."""
    size = len(mm)
    if size < 8:
        raise _Corrupt("shorter than a safetensors header")
    n = int.from_bytes(mm[:8], "little")
    if n > min(size - 8, _MAX_HEADER_BYTES):
        raise _Corrupt(f"header length {n} does not fit the file ({size} bytes)")
    try:
        header = json.loads(bytes(mm[8:8 + n]).decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise _Corrupt(f"unreadable header: {str(e)[:100]}") from None
    if not isinstance(header, dict):
        raise _Corrupt("header is not a JSON object")
    header.pop("__metadata__", None)
    if set(header) != set(rec["shapes"]):
        raise _Corrupt(f"tensors {sorted(header)[:8]} differ from the manifest's {sorted(rec['shapes'])[:8]}")
    base, data_len = 8 + n, size - 8 - n
    spans, ranges = {}, []
    dtypes = rec.get("dtypes") or {}
    for name, info in header.items():
        if not (isinstance(info, dict) and isinstance(info.get("dtype"), str) and _is_shape(info.get("shape"))
                and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
                and all(type(o) is int for o in info["data_offsets"])):
            raise _Corrupt(f"header record of {name!r} is malformed")
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            return None
        shape = tuple(info["shape"])
        if list(shape) != rec["shapes"][name] or (name in dtypes and dtypes[name] != str(dtype).replace("torch.", "")):
            raise _Corrupt(f"tensor {name!r} is {list(shape)} {info['dtype']} in the file but "
                           f"{rec['shapes'][name]} {dtypes.get(name)} in the manifest")
        a, b = info["data_offsets"]
        if not 0 <= a <= b <= data_len or b - a != math.prod(shape) * torch.empty((), dtype=dtype).element_size():
            raise _Corrupt(f"byte range {a}..{b} of tensor {name!r} does not fit its shape or the file")
        spans[name] = (base + a, base + b, dtype, shape)
        ranges.append((a, b))
    ranges.sort()
    if any(b0 > a1 for (_, b0), (a1, _) in zip(ranges, ranges[1:])):
        raise _Corrupt("tensors overlap in the file")
    return spans


# ---------------------------------------------------------------------- the store
class Store:
    """Results store: safetensors files + a JSON manifest with fingerprints.

    ``Store(root)`` opens (and creates) a directory; ``Store(None)`` keeps everything in memory
    (nothing is written; useful for tests and throw-away analyses; locks are no-ops there).

    Methods: :meth:`save` (atomic), :meth:`load` (``None`` when missing, stale or corrupt),
    :meth:`cached`, :meth:`chunked`, :meth:`has`, :meth:`meta`, :meth:`delete`, :meth:`keys`,
    :meth:`clear`, store-level records :meth:`get_info` / :meth:`set_info` (used by the Lens to
    remember which model a directory belongs to), and :meth:`lock`, the step lock for long work.
    Processes may share one store (see the module docstring: locking, hostile manifests).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root: Path | None
        if root is None:
            self.root = None
            self._mem: dict[str, dict] = {}
            self._mem_info: dict[str, Any] = {}
            return
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"Store root must be a path (str / PathLike) or None, got {type(root).__name__}")
        root = Path(root).expanduser()
        if root.exists() and not root.is_dir():
            raise StoreError(f"store path {str(root)!r} exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._real_root = os.path.realpath(root)
        self._valid_digest: bytes | None = None  # blake2b of the manifest bytes last validated
        if os.path.lexists(root / MANIFEST):
            self._read_manifest()  # validates the whole manifest early, with a clear error
            return
        others = [p.name for p in root.iterdir() if not (p.name.startswith(".tmp-") or _LOCK_RE.fullmatch(p.name))]
        if others:
            raise StoreError(
                f"{str(root)!r} is not a semlens store (no {MANIFEST}) and is not empty "
                f"(contains {others[:5]}); pass an empty or new directory as store"
            )
        # Claim the directory with an empty manifest now: a first save killed between its tensor
        # file and the manifest must leave a store (with an orphan), not a "foreign" directory.
        try:
            with self._manifest_lock():
                if not os.path.lexists(root / MANIFEST):
                    self._write_manifest({"format": FORMAT, "version": FORMAT_VERSION, "info": {}, "entries": {}})
        except _NotWritable:
            pass  # a read-only empty directory: nothing can be saved, and nothing needs claiming

    # ------------------------------------------------------------------ manifest
    @property
    def in_memory(self) -> bool:
        return self.root is None

    def __repr__(self) -> str:
        where = "in memory" if self.root is None else str(self.root)
        return f"Store({where}, {len(self.keys())} entries)"

    def _read_manifest(self) -> dict:
        """The validated manifest (see :func:`_validate_manifest`); read without a lock (it is
        replaced atomically), never through a symbolic link."""
        assert self.root is not None
        path = self.root / MANIFEST
        where = f"store manifest {str(path)!r}"
        if not _O_NOFOLLOW and os.path.islink(path):  # pragma: no cover - Windows
            raise StoreError(f"{where} is a symbolic link; a store reads only its own regular files")
        try:
            fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
        except FileNotFoundError:
            return {"format": FORMAT, "version": FORMAT_VERSION, "info": {}, "entries": {}}
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreError(f"{where} is a symbolic link; a store reads only its own regular files "
                                 f"(replace the link by the file it points to)") from None
            raise StoreError(f"cannot read {where}: {e}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{where} is not a regular file")
            if st.st_size > _MAX_MANIFEST_BYTES:
                raise StoreError(f"{where} is larger than {_MAX_MANIFEST_BYTES} bytes ({st.st_size}); refused")
            raw = f.read(_MAX_MANIFEST_BYTES + 1)
        if len(raw) > _MAX_MANIFEST_BYTES:  # pragma: no cover - grew while read
            raise StoreError(f"{where} is larger than {_MAX_MANIFEST_BYTES} bytes; refused")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise StoreError(f"cannot read {where}: {str(e)[:200]}") from None
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        if digest == self._valid_digest:  # these exact bytes passed the check before
            data.setdefault("info", {})
            data.setdefault("entries", {})
            return data
        data = _validate_manifest(data, where)
        self._valid_digest = digest
        return data

    def _write_manifest(self, data: dict) -> None:
        assert self.root is not None
        payload = _dump_manifest(data)
        _atomic_write(self.root / MANIFEST, payload, _STORE_TMP_PREFIX)
        # written from a checked manifest plus records this process made
        self._valid_digest = hashlib.blake2b(payload, digest_size=16).digest()

    def _manifest_lock(self) -> StoreLock:
        """Held around every manifest read-modify-write."""
        assert self.root is not None
        return StoreLock(self, "manifest", Path(self._real_root) / _MANIFEST_LOCK)

    def _writers_lock(self, *, exclusive: bool, wait: bool = True) -> StoreLock:
        """Shared by saves from writing their file until the manifest names it; exclusive for
        sweeping orphans (so a file another save is about to register is never swept)."""
        assert self.root is not None
        return StoreLock(self, "writers", Path(self._real_root) / _WRITERS_LOCK, exclusive=exclusive, wait=wait)

    def lock(self, name: str, wait: bool = True, timeout: float | None = None) -> StoreLock:
        """A named step lock for long work, as a context manager::

            with store.lock(f"embed/{layer}"):      # the key the step will save
                got = store.load(key, fp)           # re-check: another process may have saved it
                if got is None:
                    ...compute, store.save(key, ...)

        The holder's pid, host and start time are recorded in the lock file. When another live
        process holds ``name``: ``wait=True`` waits (a warning says for whom) up to ``timeout``
        seconds (``None``: as long as it takes), ``wait=False`` raises
        :class:`StoreLockedError` naming the holder's pid. Locks die with their process, so the
        lock of a killed run is taken over. Re-entrant within a thread (:meth:`cached` and
        :meth:`chunked` lock their keys, so they nest inside a step lock of the same key).
        No-op for an in-memory store and for a store that cannot be written.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"lock name must be a non-empty string, got {_short(name)}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise ValueError(f"lock timeout must be None or a number >= 0 (seconds), got {_short(timeout)}")
        # the resolved root: a thread re-entering through another spelling of the root (a
        # relative path, a symlink) must find its own lock, not wait for itself
        path = None if self.root is None else Path(self._real_root) / _lock_file_name(name)
        return StoreLock(self, name, path, wait=bool(wait), timeout=timeout, step=True)

    # ------------------------------------------------------------------ files
    def _entry_path(self, key: str, fname: str) -> Path:
        """The path of an entry's file: a plain name of the store's pattern, directly inside the
        root, and not a symbolic link (the manifest check already refused anything else)."""
        assert self.root is not None
        if not isinstance(fname, str) or _FILE_RE.fullmatch(fname) is None:  # pragma: no cover
            raise StoreError(f"store {str(self.root)!r}: entry {_short(key)} has file {_short(fname)}; "
                             f"accepted: {_FIELDS['file'][1]}")
        path = self.root / fname
        if os.path.islink(path):
            raise StoreError(
                f"store {str(self.root)!r}: the file {fname!r} of entry {_short(key)} is a symbolic link "
                f"(to {_short(os.readlink(path))}); a store reads and deletes only its own regular files. "
                f"Remove the link or the entry."
            )
        if os.path.dirname(os.path.realpath(path)) != self._real_root:  # pragma: no cover - defence in depth
            raise StoreError(f"store {str(self.root)!r}: the file {fname!r} of entry {_short(key)} resolves "
                             f"outside the store directory")
        return path

    def _is_own_file(self, fname: str) -> bool:
        """A regular file (not a link, FIFO, directory) of that name exists in the root."""
        assert self.root is not None
        try:
            return stat.S_ISREG(os.lstat(self.root / fname).st_mode)
        except OSError:
            return False

    def _unlink(self, fname: str) -> None:
        """Remove one of the store's own files: a regular file whose name matches the store's
        patterns, directly in the root. Anything else is left alone."""
        assert self.root is not None
        if not (_FILE_RE.fullmatch(fname) or _TMP_RE.fullmatch(fname)):  # pragma: no cover - callers check
            return
        if not self._is_own_file(fname):
            return
        try:
            os.unlink(self.root / fname)
        except FileNotFoundError:
            pass
        except OSError as e:  # pragma: no cover - e.g. a read-only directory
            warnings.warn(f"store {str(self.root)!r}: cannot remove {fname!r} ({e})", stacklevel=3)

    def _sweep_orphans(self) -> None:
        """Remove files of the store's own patterns that no entry names (a killed run's tensor
        files and ``.tmp-*`` parts). Skipped while another save is writing (it runs again at the
        next save); never touches names of other patterns, links or directories."""
        assert self.root is not None
        sweep = self._writers_lock(exclusive=True, wait=False)
        try:
            sweep.acquire()
        except StoreLockedError:
            return
        try:
            with self._manifest_lock():
                referenced = {rec["file"] for rec in self._read_manifest()["entries"].values()}
                for name in os.listdir(self.root):
                    if (_FILE_RE.fullmatch(name) and name not in referenced) or _TMP_RE.fullmatch(name):
                        self._unlink(name)
        finally:
            sweep.release()

    # ------------------------------------------------------------------ info
    def get_info(self, name: str, default: Any = None) -> Any:
        """A store-level JSON record (e.g. ``"lens"``: which model the directory belongs to)."""
        if self.root is None:
            return copy.deepcopy(self._mem_info.get(name, default))
        return self._read_manifest()["info"].get(name, default)

    def set_info(self, name: str, value: Any) -> None:
        """Set a store-level JSON record (written atomically with the manifest, under its lock)."""
        value = json.loads(json.dumps(value))
        if self.root is None:
            self._mem_info[name] = value
            return
        with self._manifest_lock():
            data = self._read_manifest()
            data["info"][name] = value
            self._write_manifest(data)

    # ------------------------------------------------------------------ entries
    def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys (optionally only those starting with ``prefix``)."""
        keys = self._mem.keys() if self.root is None else self._read_manifest()["entries"].keys()
        return sorted(k for k in keys if k.startswith(prefix))

    def save(
        self,
        key: str,
        tensors: dict[str, torch.Tensor],
        fingerprint: str,
        meta: dict | None = None,
    ) -> None:
        """Save ``tensors`` under ``key`` with the ``fingerprint`` of their inputs (atomic).

        The tensor file is complete and fsynced before the manifest points at it; the manifest
        update holds the store's lock (concurrent saves lose nothing); the previous file of the
        key (if any) is removed only after the manifest was replaced. Then orphans of killed
        runs are swept. A manifest that breaks the store's rules is refused (:class:`StoreError`)
        and the new file removed again.
        """
        _check_key(key)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise TypeError(f"store.save({key!r}, ...): fingerprint must be a non-empty str, got {fingerprint!r}")
        tensors = _check_tensors(key, tensors, copy=self.root is None)
        meta = _check_json(key, meta)
        record = {
            "fingerprint": fingerprint,
            "meta": meta,
            "shapes": {k: list(v.shape) for k, v in tensors.items()},
            "dtypes": {k: str(v.dtype).replace("torch.", "") for k, v in tensors.items()},
            "package_version": _package_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if self.root is None:
            record["tensors"] = tensors
            self._mem[key] = record
            return
        data = _st_save(tensors, metadata={"key": key, "fingerprint": fingerprint})
        fname = f"{_safe_name(key)}.{uuid.uuid4().hex[:12]}.safetensors"
        record["file"] = fname
        record["sha256"] = hashlib.sha256(data).hexdigest()
        if len(data) > _LAZY_MIN_BYTES:  # big files are memory-mapped by lazy loads: digests per block
            record["blocks"] = {"size": _BLOCK_BYTES, "sha256": _block_digests(data, _BLOCK_BYTES)}
        stage = "file"
        with self._writers_lock(exclusive=False):
            try:
                _atomic_write(self.root / fname, data, _STORE_TMP_PREFIX)
                with self._manifest_lock():
                    manifest = self._read_manifest()
                    old = manifest["entries"].get(key)
                    manifest["entries"][key] = record
                    stage = "manifest"
                    self._write_manifest(manifest)
                    stage = "done"
                    if old is not None and old["file"] != fname:
                        self._unlink(old["file"])
            except BaseException:
                if stage != "done":
                    self._discard_unregistered(fname, maybe_registered=stage == "manifest")
                raise
        self._sweep_orphans()

    def _discard_unregistered(self, fname: str, maybe_registered: bool) -> None:
        """Remove the fresh file of a save that failed before the manifest named it."""
        if maybe_registered:
            try:
                if any(r["file"] == fname for r in self._read_manifest()["entries"].values()):
                    return
            except BaseException:
                return  # cannot tell: keep it (an orphan at worst, swept later)
        self._unlink(fname)

    def load(self, key: str, fingerprint: str, *, lazy: bool = False) -> Mapping[str, torch.Tensor] | None:
        """The tensors of ``key`` if they were produced with ``fingerprint``, else ``None``.

        ``None`` also when the file is missing, unreadable or its bytes do not match the
        recorded sha256 (a warning says so); half data is never returned. An entry file that is
        a symbolic link, a FIFO or a directory raises :class:`StoreError` (never followed).

        ``lazy=True``: a file above 64 MiB is memory-mapped instead of read, and a
        :class:`MappedEntry` (a read-only mapping name -> tensor view) is returned; its tensors'
        bytes are checked against per-block digests recorded at save when each tensor is first
        taken (a mismatch then raises :class:`StoreCorruptError`), the header and the blocks that
        hold it at once. Smaller files are read as with ``lazy=False`` (a plain dict).
        """
        _check_key(key)
        if self.root is None:
            rec = self._mem.get(key)
            if rec is None or rec["fingerprint"] != fingerprint:
                return None
            return {k: v.clone() for k, v in rec["tensors"].items()}
        rec = self._read_manifest()["entries"].get(key)
        if rec is None or rec["fingerprint"] != fingerprint:
            return None
        path = self._entry_path(key, rec["file"])
        try:
            fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
        except OSError as e:
            if e.errno == errno.ELOOP:  # became a link after the check above
                raise StoreError(f"store {str(self.root)!r}: the file of entry {_short(key)} is a symbolic "
                                 f"link; a store reads only its own regular files") from None
            warnings.warn(f"store {str(self.root)!r}: entry {key!r} unreadable ({e}); recomputing", stacklevel=2)
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"store {str(self.root)!r}: the file {rec['file']!r} of entry {_short(key)} "
                                 f"is not a regular file; a store reads only its own regular files")
            if lazy and st.st_size > _LAZY_MIN_BYTES:
                got = self._load_mapped(key, rec, f, st)
                if got is not False:
                    return got
                f.seek(0)
            try:
                data = f.read()
            except OSError as e:
                warnings.warn(f"store {str(self.root)!r}: entry {key!r} unreadable ({e}); recomputing",
                              stacklevel=2)
                return None
        if hashlib.sha256(data).hexdigest() != rec["sha256"]:
            warnings.warn(
                f"store {str(self.root)!r}: file of entry {key!r} is corrupt (checksum mismatch); recomputing",
                stacklevel=2,
            )
            return None
        try:
            out = _st_load(data)
        except (SafetensorError, ValueError, RuntimeError) as e:  # pragma: no cover - checksum guards
            warnings.warn(f"store {str(self.root)!r}: entry {key!r} unreadable ({e}); recomputing", stacklevel=2)
            return None
        if set(out) != set(rec["shapes"]):  # pragma: no cover - checksum guards
            return None
        return out

    def _load_mapped(self, key: str, rec: dict, f: Any, st: os.stat_result) -> MappedEntry | None | bool:
        """Map the (already opened and checked) file ``f`` of ``key``: a :class:`MappedEntry`,
        ``None`` (with a warning) when its header or size is damaged, ``False`` when it holds a
        dtype the mapping does not cover (read it eagerly then)."""
        where = f"store {str(self.root)!r}"
        blocks = rec.get("blocks")
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, rec["sha256"])
        try:
            if blocks is not None and len(blocks["sha256"]) != -(-st.st_size // blocks["size"]):
                raise _Corrupt(f"{st.st_size} bytes, but {len(blocks['sha256'])} blocks of {blocks['size']} recorded")
            try:  # private mapping: writes into the tensors stay in this process
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            except (OSError, ValueError) as e:
                warnings.warn(f"{where}: entry {key!r} cannot be memory-mapped ({e}); reading it", stacklevel=3)
                return False
            if blocks is None:  # saved without block digests: the whole file once per process
                verify_blocks(mm, identity, {"size": max(1, st.st_size), "sha256": [rec["sha256"]]}, 0, st.st_size)
            else:
                n = int.from_bytes(mm[:8], "little") if st.st_size >= 8 else 0
                verify_blocks(mm, identity, blocks, 0, min(st.st_size, 8 + min(n, _MAX_HEADER_BYTES)))
            spans = _mapped_spans(mm, rec)
        except _Corrupt as e:
            warnings.warn(f"{where}: file of entry {key!r} is corrupt ({e}); recomputing", stacklevel=3)
            return None
        if spans is None:
            return False
        return MappedEntry(key, where, mm, identity, blocks, spans)

    def cached(self, key: str, fingerprint: str, compute: Callable[[], dict[str, torch.Tensor]],
               *, meta: dict | None = None, lazy: bool = False) -> Mapping[str, torch.Tensor]:
        """The tensors of ``key`` for ``fingerprint``: loaded when stored (``lazy``: as in
        :meth:`load`), else ``compute()``, saved (atomically, with ``meta``) and returned. The one
        load-else-compute-and-save helper of the package. Computes under the step lock ``key``
        after a second look, so when two processes race, the second waits and loads what the
        first saved."""
        got = self.load(key, fingerprint, lazy=lazy)
        if got is not None:
            return got
        with self.lock(key):
            got = self.load(key, fingerprint, lazy=lazy)
            if got is None:
                got = compute()
                self.save(key, got, fingerprint, meta=meta)
        return got

    def has(self, key: str, fingerprint: str) -> bool:
        """True when ``key`` exists with this ``fingerprint`` and its file is a regular file of
        the store (its content is not re-verified)."""
        _check_key(key)
        if self.root is None:
            rec = self._mem.get(key)
        else:
            rec = self._read_manifest()["entries"].get(key)
            if rec is not None and not self._is_own_file(rec["file"]):
                return False
        return rec is not None and rec["fingerprint"] == fingerprint

    def meta(self, key: str) -> dict | None:
        """The manifest record of ``key`` (fingerprint, meta, shapes, dtypes, package version,
        created time) without the tensors, or ``None`` when absent."""
        _check_key(key)
        if self.root is None:
            rec = self._mem.get(key)
            return None if rec is None else copy.deepcopy({k: v for k, v in rec.items() if k != "tensors"})
        rec = self._read_manifest()["entries"].get(key)
        return None if rec is None else dict(rec)

    def delete(self, key: str) -> bool:
        """Remove ``key`` (manifest first, then its file). Returns whether it existed."""
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove several keys with one manifest rewrite. Returns how many existed."""
        keys = [_check_key(k) for k in keys]
        if self.root is None:
            n = 0
            for k in keys:
                n += self._mem.pop(k, None) is not None
            return n
        with self._manifest_lock():
            manifest = self._read_manifest()
            removed = [manifest["entries"].pop(k) for k in dict.fromkeys(keys) if k in manifest["entries"]]
            if removed:
                self._write_manifest(manifest)
                for rec in removed:
                    self._unlink(rec["file"])
        return len(removed)

    def chunked(self, prefix: str, fp: str, n: int, size: int, compute: Callable[[int, int], dict],
                *, desc: str, progress: bool = False) -> list[dict]:
        """Resumable chunked work: run ``compute(a, b)`` for each chunk [a, b) of range(n) of
        ``size`` items, saving each finished chunk under ``prefix/chunk<a>-<b>`` (fingerprint
        ``fp``) and loading the ones already there. A single chunk is computed without a
        checkpoint (the caller's final entry is the only one worth writing). Returns the
        chunks' tensor dicts in order; :meth:`drop_chunks` removes the checkpoints.

        Safe when processes share the work: each chunk is computed under its step lock after a
        second look; a chunk another process is computing is skipped at first and loaded (or,
        if that process died, computed) at the end, so every chunk is computed once."""
        from tqdm.auto import tqdm

        chunks = [(a, min(a + size, n)) for a in range(0, n, size)]
        if len(chunks) == 1:
            return [compute(*chunks[0])]
        parts: list[dict | None] = [None] * len(chunks)
        busy = []
        with tqdm(total=len(chunks), desc=desc, disable=not progress, unit="chunk") as bar:
            for i, (a, b) in enumerate(chunks):
                key = f"{prefix}/chunk{a}-{b}"
                got = self.load(key, fp)
                if got is None:
                    lk = self.lock(key, wait=False)
                    try:
                        lk.acquire()
                    except StoreLockedError:
                        busy.append(i)  # another process computes it right now
                        continue
                    try:
                        got = self.load(key, fp)
                        if got is None:
                            got = compute(a, b)
                            self.save(key, got, fp)
                    finally:
                        lk.release()
                parts[i] = got
                bar.update()
            for i in busy:
                a, b = chunks[i]
                parts[i] = self.cached(f"{prefix}/chunk{a}-{b}", fp, lambda a=a, b=b: compute(a, b))
                bar.update()
        return parts  # type: ignore[return-value]

    def drop_chunks(self, prefix: str) -> None:
        """Remove the checkpoints :meth:`chunked` wrote under ``prefix``."""
        keys = self.keys(prefix + "/chunk")
        if keys:
            self.delete_many(keys)

    def clear(self) -> None:
        """Remove every entry, every store-level record and the store's own files (tensor files
        and temp parts of its name patterns; nothing else in the directory). Waits for saves
        in progress."""
        if self.root is None:
            self._mem.clear()
            self._mem_info.clear()
            return
        with self._writers_lock(exclusive=True), self._manifest_lock():
            self._write_manifest({"format": FORMAT, "version": FORMAT_VERSION, "info": {}, "entries": {}})
            for name in os.listdir(self.root):
                if _FILE_RE.fullmatch(name) or _TMP_RE.fullmatch(name):
                    self._unlink(name)
