"""How to rebuild a run: the run record of a store and the Lens that reopens it.

``semlens run`` builds its model, dataset and foundation model from names
(``--model MODULE:CALLABLE``, ``--dataset MODULE:CALLABLE``, ``--fm NAME[@PRETRAINED]``) and
writes them, with every setting of the run, into the store as the store-level JSON record
``"run"`` (:data:`RUN_RECORD`) before any long work. :func:`open_lens` (also
``slw.Lens.from_store(DIR)``) reads the record back, rebuilds the same objects, checks that they
are the ones the results were made with, and returns the Lens with its results loaded; the
``semlens report`` command and a notebook use it alike.

Names (:func:`load_object`):

- ``MODULE:CALLABLE``: ``MODULE`` is imported (a dotted module name, found on ``sys.path``; the
  run records the directory it was started from, ``app_dir``, and puts it on ``sys.path`` again
  when reopening), ``CALLABLE`` is an attribute path inside it (``build`` or ``Zoo.resnet``).
  The model and dataset callables are called with no arguments, under ``torch.manual_seed(0)``
  so that a callable that builds random weights builds the same ones in every process and on
  every reopen; a display transform named this way is used as it is (not called).
- ``--fm NAME[@PRETRAINED]``: an open_clip config name with an optional pretrained tag or a
  local weights file (``ViT-B-32@laion2b_s34b_b79k``, ``ViT-B-32@/data/clip.safetensors``);
  without ``@`` random weights (tests). ``--fm MODULE:CALLABLE``: a callable returning a
  :class:`~semlens_widgets.foundation.FoundationModel` (any encoder). The demo world's CLIP
  config ``semlens-demo-clip`` is registered with open_clip on demand.
- class names and vocabularies: ``MODULE:ATTR`` (a list of str, or a callable returning one)
  or a text file with one name per line; the record keeps the resolved list.

Everything that can be checked without running the model is checked in :meth:`RunSpec.check`
(syntax, imports, attributes), so a typo fails in a second, naming the value and what is
accepted, instead of after an hour of collection.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["RUN_RECORD", "RUN_FORMAT", "RunSpec", "BuiltRun", "load_object", "parse_fm", "open_lens",
           "read_names"]

RUN_RECORD = "run"
RUN_FORMAT = "semlens-run"
RUN_VERSION = 1
_OPEN_CLIP_SCHEMAS = ("hf-hub", "local-dir")
_SEED = 0


class RunSpecError(ValueError):
    """A name or setting of a run that cannot be used (the message names it and what is accepted)."""


# ---------------------------------------------------------------------------- names


def _split_spec(spec: Any, option: str, example: str) -> tuple[str, str]:
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise RunSpecError(
            f"{option} {spec!r} is not MODULE:CALLABLE; accepted: an importable module and an attribute "
            f"inside it, separated by one colon (e.g. {example})"
        )
    module, attr = spec.split(":")
    ident = lambda s: all(p.isidentifier() for p in s.split("."))  # noqa: E731
    if not module or not attr or not ident(module) or not ident(attr):
        raise RunSpecError(
            f"{option} {spec!r} is not MODULE:CALLABLE: {module!r} must be a dotted module name and "
            f"{attr!r} a dotted attribute name (e.g. {example})"
        )
    return module, attr


def load_object(spec: str, option: str = "name", example: str = "mypackage.models:build") -> Any:
    """The object named ``MODULE:ATTR`` (``ATTR`` may be dotted): imports ``MODULE`` and walks the
    attributes. Raises :class:`RunSpecError` naming ``option`` and the value when the syntax is
    wrong, the module is not importable or the attribute does not exist."""
    module, attr = _split_spec(spec, option, example)
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise RunSpecError(
                f"{option} {spec!r}: cannot import module {module!r} (not found on sys.path; the "
                f"current directory and --app-dir are searched: run from the directory that holds "
                f"{module.split('.')[0]!r} or pass --app-dir)"
            ) from None
        raise RunSpecError(f"{option} {spec!r}: importing module {module!r} failed: {e}") from e
    except Exception as e:  # an error inside the user's module: say where it came from
        raise RunSpecError(f"{option} {spec!r}: importing module {module!r} raised {type(e).__name__}: {e}") from e
    obj: Any = mod
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            where = module if i == 0 else f"{module}:{'.'.join(attr.split('.')[:i])}"
            names = sorted(n for n in dir(obj) if not n.startswith("_"))
            raise RunSpecError(
                f"{option} {spec!r}: {where!r} has no attribute {part!r}; it has {names[:12]}"
                + (" ..." if len(names) > 12 else "")
            )
        obj = getattr(obj, part)
    return obj


def load_callable(spec: str, option: str, example: str) -> Callable:
    obj = load_object(spec, option, example)
    if not callable(obj):
        raise RunSpecError(f"{option} {spec!r} names a {type(obj).__name__}, not a callable")
    return obj


def parse_fm(text: Any) -> tuple[str, str | None]:
    """``NAME[@PRETRAINED]`` -> ``(name, pretrained)`` (``pretrained`` None without ``@``).

    ``NAME`` is an open_clip config name (``ViT-B-32``, ``hf-hub:org/repo``); PRETRAINED an
    open_clip tag or a weights file (a relative path is made absolute, so the run record still
    finds it from another directory)."""
    if not isinstance(text, str) or not text.strip():
        raise RunSpecError(f"--fm {text!r}: expected NAME[@PRETRAINED] (e.g. ViT-B-32@laion2b_s34b_b79k) "
                           f"or MODULE:CALLABLE returning a FoundationModel")
    name, at, pretrained = text.strip().partition("@")
    if not name or (at and not pretrained):
        raise RunSpecError(
            f"--fm {text!r}: expected NAME[@PRETRAINED] with a non-empty open_clip config name and, after "
            f"'@', an open_clip pretrained tag or a weights file (e.g. ViT-B-32@laion2b_s34b_b79k, "
            f"ViT-B-32@/path/to/clip.safetensors)"
        )
    if not at:
        return name, None
    looks_like_path = os.sep in pretrained or pretrained.endswith((".safetensors", ".pt", ".bin", ".pth"))
    if looks_like_path or os.path.exists(pretrained):
        pretrained = str(Path(pretrained).expanduser().resolve())
    return name, pretrained


def _is_callable_spec(text: str) -> bool:
    """``--fm`` as MODULE:CALLABLE (a colon that is not an open_clip schema such as hf-hub:)."""
    return ":" in text and "@" not in text and text.split(":", 1)[0] not in _OPEN_CLIP_SCHEMAS


def read_names(value: Any, option: str) -> list[str]:
    """A list of names from ``MODULE:ATTR`` (a list of str, or a callable returning one), a text file
    (one name per line, blank lines skipped) or a list of str."""
    if isinstance(value, (list, tuple)):
        names = list(value)
    elif isinstance(value, str) and os.path.isfile(value):
        names = [l.strip() for l in Path(value).read_text(encoding="utf-8").splitlines() if l.strip()]
    elif isinstance(value, str) and ":" in value:
        obj = load_object(value, option, "mypackage.data:CLASS_NAMES")
        names = obj() if callable(obj) else obj
    else:
        raise RunSpecError(f"{option} {value!r}: expected a text file (one name per line) or MODULE:ATTR naming "
                           f"a list of str (or a callable returning one)")
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise RunSpecError(f"{option} {value!r} gives {type(names).__name__} {str(names)[:80]}, not a list of str")
    if not names:
        raise RunSpecError(f"{option} {value!r} gives an empty list")
    return list(names)


# ---------------------------------------------------------------------------- the record


@dataclass
class BuiltRun:
    """The objects of a run: what :class:`~semlens_widgets.lens.Lens` takes."""

    model: torch.nn.Module
    dataset: Any
    fm: Any
    class_names: list[str] | None
    vocabulary: list[str] | None
    display_transform: Callable | None


@dataclass
class RunSpec:
    """Everything that rebuilds a run (the JSON record ``"run"`` of its store).

    model / dataset / display_transform: ``MODULE:CALLABLE`` names (None with ``demo``);
    fm: ``NAME[@PRETRAINED]`` or ``MODULE:CALLABLE`` (None with ``demo``); demo: None or
    ``{"n_per_class": int}`` (the demo world's model, test split and CLIP); class_names /
    vocabulary: resolved lists (or None); layers, m, crop, pooling, batch_size (None: chosen per
    device), num_workers, chunk_size: the Lens's settings; app_dir: the directory put on
    ``sys.path`` for the imports.
    """

    layers: list[str]
    m: int = 30
    crop: str = "crp"
    pooling: str = "max"
    model: str | None = None
    dataset: str | None = None
    fm: str | None = None
    demo: dict | None = None
    display_transform: str | None = None
    class_names: list[str] | None = None
    vocabulary: list[str] | None = None
    batch_size: int | None = None
    num_workers: int = 0
    chunk_size: int = 64
    app_dir: str | None = None
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ checks
    def check(self) -> "RunSpec":
        """Check every name without running anything heavy: syntax, imports, attributes, settings.
        Raises :class:`RunSpecError` naming the bad value and what is accepted."""
        from semlens_widgets.kernels.hooks import POOLINGS
        from semlens_widgets.lens_pipeline import CROP_MODES

        self._path()
        if self.demo is not None:
            given = [o for o, v in (("--model", self.model), ("--dataset", self.dataset), ("--fm", self.fm)) if v]
            if given:
                raise RunSpecError(f"--demo builds the demo world's model, dataset and foundation model; drop "
                                   f"{', '.join(given)} (or drop --demo)")
        else:
            missing = [o for o, v in (("--model", self.model), ("--dataset", self.dataset), ("--fm", self.fm)) if not v]
            if missing:
                raise RunSpecError(f"missing {', '.join(missing)}: a run needs --model MODULE:CALLABLE, --dataset "
                                   f"MODULE:CALLABLE and --fm NAME[@PRETRAINED] (or --demo for the demo world)")
            load_callable(self.model, "--model", "torchvision.models:resnet50")
            load_callable(self.dataset, "--dataset", "mypackage.data:imagenet_val")
            if _is_callable_spec(self.fm):
                load_callable(self.fm, "--fm", "mypackage.encoders:my_clip")
            else:
                parse_fm(self.fm)
        if self.display_transform is not None:
            load_callable(self.display_transform, "--display-transform", "semlens_widgets.lens:imagenet_unnormalize")
        if not self.layers or not all(isinstance(l, str) and l for l in self.layers):
            raise RunSpecError(f"--layers {self.layers!r}: expected comma-separated layer names (e.g. layer3,layer4)")
        if self.crop not in CROP_MODES:
            raise RunSpecError(f"--crop {self.crop!r}: accepted {list(CROP_MODES)}")
        if self.pooling not in POOLINGS:
            raise RunSpecError(f"--pooling {self.pooling!r}: accepted {list(POOLINGS)}")
        return self

    def _path(self) -> None:
        if self.app_dir and os.path.isdir(self.app_dir) and self.app_dir not in sys.path:
            sys.path.insert(0, self.app_dir)

    # ------------------------------------------------------------------ build
    def build(self, device: str | torch.device = "cpu") -> BuiltRun:
        """Call the callables (each under ``torch.manual_seed(0)``) and load the foundation model on
        ``device``; check what they return."""
        from torch.utils.data import DataLoader, IterableDataset

        self._path()
        device = torch.device(device)
        if self.demo is not None:
            from semlens_widgets.demo import CLASS_NAMES, VOCABULARY
            from semlens_widgets.demo.data import make_split
            from semlens_widgets.demo.models import load_classifier, load_fm

            n = self.demo.get("n_per_class")
            model = load_classifier(device=str(device))
            dataset = make_split(self.demo.get("split", "test"), n)
            fm = load_fm(device=str(device))
            class_names = self.class_names or list(CLASS_NAMES)
            vocabulary = self.vocabulary or list(VOCABULARY)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_SEED)
                model = load_callable(self.model, "--model", "")()
            if not isinstance(model, torch.nn.Module):
                raise RunSpecError(f"--model {self.model!r} returned a {type(model).__name__}; expected a "
                                   f"torch.nn.Module")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_SEED)
                dataset = load_callable(self.dataset, "--dataset", "")()
            if isinstance(dataset, (DataLoader, IterableDataset)) or not (
                    hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
                raise RunSpecError(
                    f"--dataset {self.dataset!r} returned a {type(dataset).__name__}; expected a map-style dataset "
                    f"(with __len__ and __getitem__, e.g. torchvision.datasets.ImageFolder; not a DataLoader)"
                )
            fm = self._build_fm(device)
            class_names = self.class_names
            if class_names is None:  # torchvision datasets name their classes
                cls = getattr(dataset, "classes", None)
                if isinstance(cls, (list, tuple)) and cls and all(isinstance(c, str) for c in cls):
                    class_names = list(cls)
            vocabulary = self.vocabulary
        display = None
        if self.display_transform is not None:
            display = load_callable(self.display_transform, "--display-transform", "")
        return BuiltRun(model, dataset, fm, class_names, vocabulary, display)

    def _build_fm(self, device: torch.device) -> Any:
        assert self.fm is not None
        if _is_callable_spec(self.fm):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_SEED)
                fm = load_callable(self.fm, "--fm", "")()
            for attr in ("encode_images", "encode_concepts", "identity", "image_size", "dim"):
                if not hasattr(fm, attr):
                    raise RunSpecError(f"--fm {self.fm!r} returned a {type(fm).__name__} without {attr!r}; expected "
                                       f"a semlens_widgets.FoundationModel")
            if getattr(fm, "model", None) is not None and torch.device(getattr(fm, "device", "cpu")) != device:
                fm.to(device)  # a FoundationModel wrapping a module moves in place
            return fm
        from semlens_widgets.foundation import FoundationModel

        name, pretrained = parse_fm(self.fm)
        from semlens_widgets.demo.models import CLIP_CONFIG_NAME, register_clip_config

        if name == CLIP_CONFIG_NAME:
            register_clip_config()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            return FoundationModel.open_clip(name, pretrained=pretrained, device=device)

    def lens_kwargs(self) -> dict:
        """The Lens's settings of this run (besides model, dataset, fm and store)."""
        return dict(layers=list(self.layers), m=int(self.m), crop=self.crop, pooling=self.pooling,
                    batch_size=self.batch_size, num_workers=int(self.num_workers), chunk_size=int(self.chunk_size))

    # ------------------------------------------------------------------ record
    def to_record(self) -> dict:
        rec = {"format": RUN_FORMAT, "version": RUN_VERSION}
        rec.update(asdict(self))
        return rec

    @classmethod
    def from_record(cls, rec: Any, where: str = "the store") -> "RunSpec":
        if not isinstance(rec, dict) or rec.get("format") != RUN_FORMAT:
            raise RunSpecError(f"{where} holds no run record of semlens run (format {RUN_FORMAT!r})")
        if rec.get("version") != RUN_VERSION:
            raise RunSpecError(f"{where}: run record version {rec.get('version')!r} is not supported (this "
                               f"package reads version {RUN_VERSION})")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(rec) - names - {"format", "version"})
        if unknown:
            raise RunSpecError(f"{where}: run record has unknown fields {unknown}")
        return cls(**{k: v for k, v in rec.items() if k in names})


# ---------------------------------------------------------------------------- reopen


def _pipeline_entries(lens) -> list:
    keys = lens.pipeline.keys
    out = [keys.samples()]
    for layer in lens.layers:
        out += [keys.collect(layer), keys.boxes(layer), keys.embed(layer)]
    return out


def open_lens(store: str | os.PathLike, *, device: str | torch.device | None = None, recompute: bool = False,
              progress: bool = True, batch_size: int | None = None, num_workers: int | None = None):
    """The Lens of a store made by ``semlens run`` (also ``slw.Lens.from_store(store)``), with its
    results loaded.

    Reads the store's run record, rebuilds the model, dataset and foundation model from their
    names, and checks that they are the ones the results were made with. With
    ``recompute=False`` (default) nothing is computed: a store whose run is unfinished, or whose
    model or dataset no longer match (a callable that builds unseeded random weights, a changed
    checkpoint or data directory), raises :class:`~semlens_widgets.store.StoreError` naming what
    is missing; ``recompute=True`` resumes an unfinished run and recomputes what no longer
    matches (:meth:`Lens.run`). ``device``: where the model runs (default: cuda when available,
    else cpu); ``batch_size`` / ``num_workers`` override the run's. Local to the calling process,
    also inside a process group (nothing is shared with other ranks).
    """
    from semlens_widgets.lens import Lens
    from semlens_widgets.lens_data import DataView
    from semlens_widgets.store import MANIFEST, Store, StoreError, module_fingerprint

    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be the directory of a semlens store, got {type(store).__name__}")
    root = Path(store).expanduser()
    if not (root / MANIFEST).is_file():
        raise StoreError(f"{str(root)!r} is not a semlens store (no {MANIFEST}); pass the --store directory of "
                         f"`semlens run`")
    st = Store(root)
    rec = st.get_info(RUN_RECORD)
    if rec is None:
        raise StoreError(
            f"store {str(root)!r} has no run record: it was not made by `semlens run`, so nothing says how to "
            f"rebuild its model and dataset; open it with slw.Lens(model, dataset, fm, layers, store={str(root)!r})"
        )
    try:
        spec = RunSpec.from_record(rec, f"store {str(root)!r}")
    except RunSpecError as e:
        raise StoreError(str(e)) from None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    built = spec.build(device)
    kwargs = spec.lens_kwargs()
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if num_workers is not None:
        kwargs["num_workers"] = num_workers
    info = st.get_info("lens") or {}
    if not recompute and info:
        what = []
        if info.get("model_fingerprint") != module_fingerprint(built.model):
            what.append(f"the model built by {spec.model or 'the demo world'!r} (its weights differ: a callable "
                        f"that builds random weights must seed them, or a checkpoint changed)")
        if info.get("dataset_fingerprint") != DataView(built.dataset, built.display_transform).fingerprint:
            what.append(f"the dataset built by {spec.dataset or 'the demo world'!r} (its length or content changed)")
        if what:
            raise StoreError(f"store {str(root)!r} was made with another model or dataset than {' and '.join(what)}; "
                             f"pass recompute=True to recompute its results for these")
    lens = Lens(built.model, built.dataset, built.fm, store=st, device=device, class_names=built.class_names,
                display_transform=built.display_transform, progress=progress, **kwargs)
    if not recompute:
        missing = [e.key for e in _pipeline_entries(lens) if not st.has(e.key, e.fingerprint)]
        if missing:
            raise StoreError(
                f"store {str(root)!r} holds an unfinished run (missing {missing[:4]}"
                f"{' ...' if len(missing) > 4 else ''}): finish it with the same `semlens run` command, or pass "
                f"recompute=True to compute the rest here"
            )
    from semlens_widgets import distributed

    with distributed.local():  # this process alone: reopening on one rank of a group must not wait for the others
        lens.run()
    if built.vocabulary:
        lens.set_vocabulary(built.vocabulary)
    return lens
