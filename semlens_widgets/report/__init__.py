"""Standalone HTML report of a :class:`~semlens_widgets.Lens` (``lens.report(path)``).

One self-contained ``.html`` file that opens in any browser with no kernel and no network:

- the **semantic map** of a layer (UMAP of the semantic embeddings theta_k) -- section
  :mod:`.map`; hover shows a concept-example thumbnail and the label of each component;
- **search results** for the given text queries (paper eq. 4), ranked, with score bars and a
  strip of concept-example crops per hit -- :mod:`.search`;
- the **audit** of one class (paper section 3.4): a_valid vs a_spur scatter sized by relevance
  and coloured by category, the per-category summary and the samples behind spurious
  components -- :mod:`.audit`;
- the **measures per layer** (paper eqs. 7, 9, 10): clarity, polysemanticity and redundancy --
  :mod:`.measures`;
- the **label faithfulness** of every layer whose ``lens.faithfulness`` was computed (the
  AUC of each component's activation on generated images of its label against dataset
  samples; the report reads the stored tables and never runs a generator) --
  :mod:`.faithfulness`.

The plots are bokeh documents embedded with ``bokeh.resources.INLINE`` (BokehJS is written
into the file, nothing is fetched from a CDN); thumbnails are small PNGs embedded as
``data:`` URIs. Every user-provided string (labels, queries, concept and class names) is
HTML-escaped: a concept called ``<img src=x onerror=alert(1)>`` shows as that text.

The report draws only: every number comes from a method of the lens, typed by
:class:`~semlens_widgets.protocols.LensLike` (``map``, ``search``, ``crops``, ``images``,
``label``, ``audit``, ``measures``, ``measures_summary``, ``stored_faithfulness``).
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from semlens_widgets.protocols import LensLike
from semlens_widgets.store import atomic_write_bytes

from ._html import e, names_list, table
from ._page import CSS, page_template
from ._thumbs import Thumbs
from .audit import audit_html, audit_plot, resolve_audit
from .map import map_section
from .faithfulness import faithfulness_section
from .measures import measures_section
from .search import search_section

__all__ = ["write_report", "render_report"]


def render_report(
    lens: LensLike,
    *,
    queries: Sequence[str] | None = None,
    layer: str | None = None,
    audit: Any = None,
    concepts: Any = None,
    search_layer: str | None = None,
    k: int = 8,
    n_thumbs: int = 5,
    thumb_px: int = 48,
    map_thumbs: int = 500,
    n_spurious: int = 3,
    title: str = "SemanticLens report",
    progress: bool = True,
) -> str:
    """Build the report page and return it as one HTML string (see :func:`write_report`)."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    from semlens_widgets import __version__
    from semlens_widgets.results import LabelResult

    layers = [str(l) for l in lens.layers]
    if not layers:
        raise ValueError("the lens has no layers; create it with layers=[...] and call lens.run()")
    layer = layers[-1] if layer is None else layer
    if layer not in layers:
        raise ValueError(f"layer={layer!r} is not one of the lens layers {layers}")
    if search_layer is not None and search_layer not in layers:
        raise ValueError(f"search_layer={search_layer!r} is not one of the lens layers {layers}")
    if isinstance(queries, str):
        queries = [queries]
    queries = list(queries or [])
    if int(k) < 1:
        raise ValueError(f"k={k!r}: the number of search hits per query must be >= 1")

    thumbs = Thumbs(lens, thumb_px)
    res = resolve_audit(lens, audit, layer)

    # labels of the components (for the map and the measures): from `concepts` or the audit.
    labels_by_layer: dict[str, dict[int, Any]] = {}
    gaps: list[str] | None = None
    label_res = None
    if concepts is None and lens.vocabulary:
        concepts = list(lens.vocabulary)  # the vocabulary set with lens.set_vocabulary
    if concepts is not None:
        label_res = concepts if isinstance(concepts, LabelResult) else lens.label(list(concepts), layer)
        lt = label_res.table
        labels_by_layer[layer] = dict(zip(lt["component"].astype(int), lt["label"]))
        gaps = list(label_res.gaps)
    audit_table = None
    if res is not None:
        if "label" in res.table.columns:
            labels_by_layer.setdefault(
                res.layer, dict(zip(res.table["component"].astype(int), res.table["label"]))
            )
        if res.layer == layer:
            audit_table = res.table

    roots = []
    sections: list[tuple[str, str, list[tuple[str, str]]]] = []
    variables: dict[str, str] = {"css": CSS}

    # overview
    ident = lens.fm.identity
    fm_text = "–"
    if isinstance(ident, Mapping):  # the essentials only: the identity also holds long hashes
        parts = [str(ident.get("name", "?"))]
        pre = ident.get("pretrained")
        if pre:
            parts.append(f"pretrained={os.path.basename(str(pre))}")
        if ident.get("dim"):
            parts.append(f"dim={ident['dim']}")
        fm_text = ", ".join(parts)
    overview = pd.DataFrame(
        [{"layer": l, "components": int(lens.num_components(l))} for l in layers]
    )
    nav = ['<a href="#map">Semantic map</a>']
    if queries:
        nav.append('<a href="#search">Search</a>')
    if res is not None:
        nav.append('<a href="#audit">Audit</a>')
    nav.append('<a href="#measures">Measures</a>')
    faith_html = faithfulness_section(lens, layers)
    if faith_html is not None:
        nav.append('<a href="#faithfulness">Faithfulness</a>')
    variables["header_html"] = (
        f"<header><h1>{e(title)}</h1>"
        f'<div class="small">semlens_widgets {e(__version__)} &middot; generated '
        f"{e(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} &middot; "
        f"m = {e(lens.m)} concept examples per component &middot; "
        f"crops: {e(lens.crop_mode)} &middot; foundation model: {e(fm_text)}</div>"
        f"<nav>{''.join(nav)}</nav></header>"
        "<p>SemanticLens maps every component (channel, unit) of the model to one vector in the "
        "embedding space of a foundation model (CLIP): the mean embedding of its most activating "
        "concept examples. These vectors make the model's knowledge searchable, labelable and "
        "auditable. This file is standalone: it needs no kernel and no network.</p>"
        + table(overview, ["layer", "components"], css="data overview")
    )

    # map
    p_map = map_section(lens, layer, labels_by_layer.get(layer), audit_table, thumbs, map_thumbs, progress)
    roots.append(p_map)
    colour = "audit category (size = relevance)" if audit_table is not None else "label"
    map_text = (
        f"<p>Each point is one component of <b>{e(layer)}</b>, placed by a 2-D UMAP projection "
        "of its semantic embedding: components that encode similar concepts lie close together. "
        f"Colour: {e(colour)}. Hover a point to see its top concept example and label.</p>"
    )
    if gaps is not None:
        map_text += f"<p>Concepts of the vocabulary that no component carries (gaps): {names_list(gaps)}</p>"
    if label_res is not None:
        counts = label_res.counts
        if len(counts):
            cdf = pd.DataFrame({"concept": [str(c) for c in counts.index], "components": counts.values})
            map_text += "<h3>Components per concept</h3>" + table(cdf.head(30), ["concept", "components"])
    variables["map_title"] = "<h2>Semantic map</h2>"
    variables["map_text"] = map_text
    sections.append(("map", "Semantic map", [("html", "map_text"), ("plot", "semlens_map")]))

    # search
    if queries:
        variables["search_title"] = "<h2>Search</h2>"
        variables["search_html"] = search_section(lens, queries, search_layer, int(k), thumbs, n_thumbs)
        sections.append(("search", "Search", [("html", "search_html")]))

    # audit
    if res is not None:
        p_audit = audit_plot(res, lens, thumbs, min(3, n_thumbs), progress)
        roots.append(p_audit)
        variables["audit_title"] = "<h2>Audit</h2>"
        variables["audit_html"] = audit_html(res, lens, thumbs, n_thumbs, n_spurious, max(thumb_px, 64))
        sections.append(("audit", "Audit", [("plot", "semlens_audit"), ("html", "audit_html")]))

    # measures
    p_meas, meas_text = measures_section(lens, layers, labels_by_layer)
    roots.append(p_meas)
    variables["measures_title"] = "<h2>Measures per layer</h2>"
    variables["measures_html"] = meas_text
    sections.append(("measures", "Measures", [("html", "measures_html"), ("plot", "semlens_measures")]))

    # label faithfulness (only when computed)
    if faith_html is not None:
        variables["faithfulness_title"] = "<h2>Label faithfulness</h2>"
        variables["faithfulness_html"] = faith_html
        sections.append(("faithfulness", "Faithfulness", [("html", "faithfulness_html")]))

    return file_html(
        roots,
        INLINE,
        title,
        template=page_template(sections),
        template_variables=variables,
    )


def _writable_path(path: Any) -> Path:
    """``path`` as a Path the report can be written to, checked before any work: not a directory,
    not under a file, in a directory (or below one, created later) that can be written."""
    accepted = "a file path such as 'report.html' in a writable directory"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"report path must be a str or PathLike, got {path!r:.80} ({type(path).__name__}); "
                        f"accepted: {accepted}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"report path {str(path)!r} is a directory; accepted: {accepted}")
    base = path.parent
    while not base.exists() and base != base.parent:  # the nearest existing ancestor
        base = base.parent
    if not base.is_dir():
        raise NotADirectoryError(f"report path {str(path)!r} lies under {str(base)!r}, which is a file, not a "
                                 f"directory; accepted: {accepted}")
    try:
        with tempfile.TemporaryFile(dir=base):  # O_TMPFILE where it exists: no name appears
            pass
    except OSError as e:
        raise PermissionError(f"report path {str(path)!r}: directory {str(base)!r} is not writable "
                              f"({e.strerror}); accepted: {accepted}") from None
    return path


def write_report(lens: LensLike, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write the standalone HTML report of ``lens`` to ``path`` (atomically) and return it.

    Keyword arguments (all optional):

    - ``queries``: text queries whose search results are listed (``lens.search``).
    - ``layer``: the layer of the semantic map and the audit (default: the last layer).
    - ``audit``: an :class:`~semlens_widgets.results.AuditResult` or a dict
      ``{"valid": [...], "spurious": [...], "target": int}`` passed to ``lens.audit``.
    - ``concepts``: a concept vocabulary (list of str) or a ``LabelResult``: labels the map
      (default: the lens vocabulary set with ``lens.set_vocabulary``, if any).
    - ``search_layer``: restrict the searches to one layer (default: all layers).
    - ``k`` hits per query, ``n_thumbs`` crops per hit, ``thumb_px`` thumbnail size,
      ``map_thumbs`` components of the map with a hover thumbnail (most relevant first),
      ``n_spurious`` spurious components whose samples are shown, ``title``, ``progress``.

    The file embeds BokehJS (about 1.3 MB) and PNG thumbnails; it opens offline.
    """
    path = _writable_path(path)  # before the rendering, which takes a while
    page = render_report(lens, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, page.encode("utf-8"))
    os.chmod(path, 0o644)  # a report is for sharing: readable like any written file
    return path
