"""docs/METHOD.md maps every step of the method to one function: the functions exist, every
numbered paper equation lives in exactly one kernel function, whose docstring names the number
and the equation."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import semlens_widgets.kernels

METHOD = Path(__file__).resolve().parents[1] / "docs" / "METHOD.md"

# paper equation -> (its name in the docstring, the one kernel function)
EQUATIONS = {
    "eq. 4": ("search", "semlens_widgets.kernels.semantics.search_scores"),
    "eqs. 5/6": ("comparing models", "semlens_widgets.kernels.semantics.set_similarity"),
    "eq. 7": ("clarity", "semlens_widgets.kernels.measures.clarity"),
    "eq. 9": ("redundancy", "semlens_widgets.kernels.measures.redundancy"),
    "eq. 10": ("polysemanticity", "semlens_widgets.kernels.measures.polysemanticity"),
}


def _resolve(path: str):
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def _kernel_functions():
    for info in pkgutil.iter_modules(semlens_widgets.kernels.__path__):
        module = importlib.import_module(f"semlens_widgets.kernels.{info.name}")
        for name, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__:
                yield f"{module.__name__}.{name}", fn


def test_every_function_of_the_method_page_exists():
    paths = re.findall(r"`(semlens_widgets(?:\.\w+)+)`", METHOD.read_text(encoding="utf-8"))
    assert len(paths) >= 25
    for path in paths:
        assert callable(_resolve(path)), path


def test_each_numbered_equation_lives_in_one_kernel_function():
    text = METHOD.read_text(encoding="utf-8")
    functions = list(_kernel_functions())
    for eq, (name, path) in EQUATIONS.items():
        assert f"`{path}`" in text, (eq, path)
        cite = f"(paper {eq}, {name}"
        citing = [p for p, fn in functions if cite in " ".join((fn.__doc__ or "").split())]
        assert citing == [path], (eq, citing)


def test_no_kernel_cites_an_internal_document():
    for path, fn in _kernel_functions():
        doc = fn.__doc__ or ""
        assert "DESIGN" not in doc and "issue" not in doc.lower(), path
