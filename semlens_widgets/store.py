"""On-disk results: safetensors tensor files plus one JSON manifest.

Layout of a store directory::

    <root>/manifest.json            the index (see below)
    <root>/<safe key>.<token>.safetensors   one file per key (tensors only, no pickle)

``manifest.json``::

    {"format": "semlens-store", "version": 1,
     "info":    {name: JSON value, ...}            # store-level records (e.g. the Lens identity)
     "entries": {key: {"file", "fingerprint", "sha256", "meta", "shapes", "dtypes",
                       "package_version", "created"}}}

Every entry records the fingerprint of the inputs that produced it; :meth:`Store.load` with
another fingerprint answers ``None`` ("not there"), so stale results are never reused.

Crash safety. A save writes the tensors to a temporary file in the same directory, fsyncs it
and renames it (``os.replace``) to a *fresh* file name, then rewrites the manifest the same
way, and only then removes the file the key pointed to before. A crash at any point leaves
the manifest pointing at complete files only (at worst an orphan file nobody references,
removed by the next save of that key or by :meth:`Store.clear`). The manifest also records the
sha256 of each file, and a file whose bytes do not match is reported as missing, never
returned half-read. Nothing is ever pickled and nothing is read with ``torch.load``.

Keys are strings and may contain ``/`` (``"embed/layer3"``); they are mapped to safe file names.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

__all__ = ["Store", "fingerprint", "module_fingerprint", "tensor_digest", "StoreError", "atomic_write_bytes"]

MANIFEST = "manifest.json"
FORMAT = "semlens-store"
FORMAT_VERSION = 1

# Tensors with more elements than this are hashed from a strided sample plus float64 moments
# (see tensor_digest); smaller ones are hashed in full.
_FULL_HASH_MAX_NUMEL = 1 << 20
_SAMPLE_NUMEL = 1 << 16


class StoreError(ValueError):
    """A store directory that cannot be used as asked (wrong format, different model, ...)."""


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
    """sha256 (hex) of a tensor's dtype, shape and content.

    Tensors up to 2**20 elements are hashed byte for byte. Bigger ones are hashed from a
    strided sample of 2**16 elements (evenly spaced over the flattened tensor) plus the float64
    sum and sum of squares of the whole tensor, so that any realistic change of the weights
    (fine-tuning, a different checkpoint) changes the digest while hashing a 100M-parameter
    model stays well under a second.
    """
    t = t.detach()
    h = hashlib.sha256()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    flat = t.reshape(-1)
    if flat.numel() > _FULL_HASH_MAX_NUMEL:
        # moments are computed where the tensor lives; only the sample moves to the cpu
        if flat.dtype.is_floating_point or flat.dtype.is_complex:
            f64 = flat.to(torch.float64) if not flat.dtype.is_complex else torch.view_as_real(flat).to(torch.float64)
            moments = torch.stack([f64.sum(), (f64 * f64).sum()])
        else:
            i64 = flat.to(torch.int64)
            moments = torch.stack([i64.sum(), (i64 * i64).sum()]).to(torch.float64)
        h.update(moments.cpu().numpy().tobytes())
        step = flat.numel() // _SAMPLE_NUMEL
        flat = flat[::step][:_SAMPLE_NUMEL]
    # raw bytes work for every dtype (bool, bfloat16, float8, ...)
    h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=str(path.parent))
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


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or key.strip() != key:
        raise ValueError(
            f"store key must be a non-empty string without surrounding whitespace, got {key!r}"
        )
    return key


def _check_tensors(key: str, tensors: Any) -> dict[str, torch.Tensor]:
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
        # clone: safetensors refuses tensors sharing storage; contiguous cpu copies are safe.
        out[name] = t.detach().to("cpu").contiguous().clone()
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


class Store:
    """Results store: safetensors files + a JSON manifest with fingerprints.

    ``Store(root)`` opens (and creates) a directory; ``Store(None)`` keeps everything in memory
    (nothing is written; useful for tests and throw-away analyses).

    Methods: :meth:`save` (atomic), :meth:`load` (``None`` when missing, stale or corrupt),
    :meth:`has`, :meth:`meta`, :meth:`delete`, :meth:`keys`, :meth:`clear`, and store-level
    records :meth:`get_info` / :meth:`set_info` (used by the Lens to remember which model a
    directory belongs to).
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
        manifest = root / MANIFEST
        if manifest.exists():
            self._read_manifest()  # validates the format early, with a clear error
        else:
            others = [p.name for p in root.iterdir() if not p.name.startswith(".tmp-")]
            if others:
                raise StoreError(
                    f"{str(root)!r} is not a semlens store (no {MANIFEST}) and is not empty "
                    f"(contains {others[:5]}); pass an empty or new directory as store"
                )

    # ------------------------------------------------------------------ manifest
    @property
    def in_memory(self) -> bool:
        return self.root is None

    def __repr__(self) -> str:
        where = "in memory" if self.root is None else str(self.root)
        return f"Store({where}, {len(self.keys())} entries)"

    def _read_manifest(self) -> dict:
        assert self.root is not None
        path = self.root / MANIFEST
        if not path.exists():
            return {"format": FORMAT, "version": FORMAT_VERSION, "info": {}, "entries": {}}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read store manifest {str(path)!r}: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StoreError(
                f"{str(path)!r} is not a semlens store manifest (format {data.get('format') if isinstance(data, dict) else None!r}, expected {FORMAT!r})"
            )
        if data.get("version") != FORMAT_VERSION:
            raise StoreError(
                f"store {str(self.root)!r} has format version {data.get('version')!r}; this "
                f"semlens_widgets reads version {FORMAT_VERSION}. Use a new store directory."
            )
        data.setdefault("info", {})
        data.setdefault("entries", {})
        return data

    def _write_manifest(self, data: dict) -> None:
        assert self.root is not None
        payload = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
        atomic_write_bytes(self.root / MANIFEST, payload)

    # ------------------------------------------------------------------ info
    def get_info(self, name: str, default: Any = None) -> Any:
        """A store-level JSON record (e.g. ``"lens"``: which model the directory belongs to)."""
        if self.root is None:
            return copy.deepcopy(self._mem_info.get(name, default))
        return self._read_manifest()["info"].get(name, default)

    def set_info(self, name: str, value: Any) -> None:
        """Set a store-level JSON record (written atomically with the manifest)."""
        value = json.loads(json.dumps(value))
        if self.root is None:
            self._mem_info[name] = value
            return
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

        The tensor file is complete and fsynced before the manifest points at it; the previous
        file of the key (if any) is removed only after the manifest was replaced.
        """
        _check_key(key)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise TypeError(f"store.save({key!r}, ...): fingerprint must be a non-empty str, got {fingerprint!r}")
        tensors = _check_tensors(key, tensors)
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
        atomic_write_bytes(self.root / fname, data)
        record["file"] = fname
        record["sha256"] = hashlib.sha256(data).hexdigest()
        manifest = self._read_manifest()
        old = manifest["entries"].get(key)
        manifest["entries"][key] = record
        self._write_manifest(manifest)
        if old and old.get("file") and old["file"] != fname:
            self._unlink(old["file"])

    def load(self, key: str, fingerprint: str) -> dict[str, torch.Tensor] | None:
        """The tensors of ``key`` if they were produced with ``fingerprint``, else ``None``.

        ``None`` also when the file is missing, unreadable or its bytes do not match the
        recorded sha256 (a warning says so); half data is never returned.
        """
        _check_key(key)
        if self.root is None:
            rec = self._mem.get(key)
            if rec is None or rec["fingerprint"] != fingerprint:
                return None
            return {k: v.clone() for k, v in rec["tensors"].items()}
        rec = self._read_manifest()["entries"].get(key)
        if rec is None or rec.get("fingerprint") != fingerprint:
            return None
        path = self.root / rec["file"]
        try:
            data = path.read_bytes()
        except OSError as e:
            warnings.warn(f"store {str(self.root)!r}: entry {key!r} unreadable ({e}); recomputing", stacklevel=2)
            return None
        if hashlib.sha256(data).hexdigest() != rec.get("sha256"):
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
        if set(out) != set(rec.get("shapes", {})):  # pragma: no cover - checksum guards
            return None
        return out

    def cached(self, key: str, fingerprint: str, compute: Callable[[], dict[str, torch.Tensor]],
               *, meta: dict | None = None) -> dict[str, torch.Tensor]:
        """The tensors of ``key`` for ``fingerprint``: loaded when stored, else ``compute()``,
        saved (atomically, with ``meta``) and returned. The one load-else-compute-and-save
        helper of the package."""
        got = self.load(key, fingerprint)
        if got is None:
            got = compute()
            self.save(key, got, fingerprint, meta=meta)
        return got

    def has(self, key: str, fingerprint: str) -> bool:
        """True when ``key`` exists with this ``fingerprint`` (the file is not re-verified)."""
        _check_key(key)
        if self.root is None:
            rec = self._mem.get(key)
        else:
            rec = self._read_manifest()["entries"].get(key)
            if rec is not None and not (self.root / rec["file"]).exists():
                return False
        return rec is not None and rec.get("fingerprint") == fingerprint

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
        manifest = self._read_manifest()
        removed = [manifest["entries"].pop(k) for k in keys if k in manifest["entries"]]
        if removed:
            self._write_manifest(manifest)
            for rec in removed:
                if rec.get("file"):
                    self._unlink(rec["file"])
        return len(removed)

    def chunked(self, prefix: str, fp: str, n: int, size: int, compute: Callable[[int, int], dict],
                *, desc: str, progress: bool = False) -> list[dict]:
        """Resumable chunked work: run ``compute(a, b)`` for each chunk [a, b) of range(n) of
        ``size`` items, saving each finished chunk under ``prefix/chunk<a>-<b>`` (fingerprint
        ``fp``) and loading the ones already there. A single chunk is computed without a
        checkpoint (the caller's final entry is the only one worth writing). Returns the
        chunks' tensor dicts in order; :meth:`drop_chunks` removes the checkpoints."""
        from tqdm.auto import tqdm

        chunks = [(a, min(a + size, n)) for a in range(0, n, size)]
        if len(chunks) == 1:
            return [compute(*chunks[0])]
        parts = []
        for a, b in tqdm(chunks, desc=desc, disable=not progress, unit="chunk"):
            key = f"{prefix}/chunk{a}-{b}"
            got = self.load(key, fp)
            if got is None:
                got = compute(a, b)
                self.save(key, got, fp)
            parts.append(got)
        return parts

    def drop_chunks(self, prefix: str) -> None:
        """Remove the checkpoints :meth:`chunked` wrote under ``prefix``."""
        keys = self.keys(prefix + "/chunk")
        if keys:
            self.delete_many(keys)

    def clear(self) -> None:
        """Remove every entry, every store-level record and orphan files."""
        if self.root is None:
            self._mem.clear()
            self._mem_info.clear()
            return
        self._write_manifest({"format": FORMAT, "version": FORMAT_VERSION, "info": {}, "entries": {}})
        for p in self.root.iterdir():
            if p.name != MANIFEST and (p.suffix == ".safetensors" or p.name.startswith(".tmp-")):
                self._unlink(p.name)

    def _unlink(self, fname: str) -> None:
        assert self.root is not None
        try:
            (self.root / fname).unlink()
        except FileNotFoundError:
            pass
