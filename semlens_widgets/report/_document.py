"""Composes the report page: checks the options, computes what several sections share, asks each
section for its pieces, encodes the pictures once and embeds the bokeh plots in one document."""
from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

from semlens_widgets.protocols import LensLike

from ._context import ReportContext, Section
from ._html import e
from ._page import CSS, page_template, plot_name
from ._thumbs import ThumbSheet
from .audit import audit_section, resolve_audits
from .faithfulness import faithfulness_section
from .graph import graph_section
from .labels import labels_section
from .map import map_section
from .measures import measures_section
from .overview import fm_text, overview_html
from .search import check_queries, search_section


def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name}={value!r} is not accepted: expected an int {rng}")
    return int(value)


def _targets(lens: LensLike, graph: Any, audits) -> list[Any]:
    """The classes of the attribution section: ``graph`` True/None -> the audited classes,
    False -> none, a class (index or name) or a list of them -> those."""
    if graph is None or graph is True:
        return list(dict.fromkeys(int(a.target) for a in audits))
    if graph is False:
        return []
    items = list(graph) if isinstance(graph, (list, tuple)) else [graph]
    for t in items:
        if isinstance(t, bool) or not isinstance(t, (int, str)):
            raise TypeError(f"graph={graph!r:.80} is not accepted: expected True/False/None, a class (index or "
                            "name) or a list of classes")
    return items


def build_context(lens: LensLike, *, queries=None, layer=None, audit=None, concepts=None, search_layer=None,
                  k=4, n_thumbs=5, thumb_px=56, map_thumbs=500, per_group=3, max_groups=40, max_queries=40,
                  n_spurious=3, graph=None, progress=True) -> ReportContext:
    """Check every option (before any long work) and compute what the sections share."""
    from semlens_widgets.results import LabelResult

    layers = [str(l) for l in lens.layers]
    if not layers:
        raise ValueError("the lens has no layers; create it with layers=[...] and call lens.run()")
    layer = layers[-1] if layer is None else layer
    if layer not in layers:
        raise ValueError(f"layer={layer!r} is not one of the lens layers {layers}")
    if search_layer is not None and search_layer not in layers:
        raise ValueError(f"search_layer={search_layer!r} is not one of the lens layers {layers}")
    k = _int("k", k, 1, 100)
    n_thumbs = _int("n_thumbs", n_thumbs, 1, 64)
    thumb_px = _int("thumb_px", thumb_px, 16, 256)
    map_thumbs = _int("map_thumbs", map_thumbs, 0)
    per_group = _int("per_group", per_group, 0, 50)
    max_groups = _int("max_groups", max_groups, 0)
    max_queries = _int("max_queries", max_queries, 0)
    n_spurious = _int("n_spurious", n_spurious, 0)
    given = check_queries(queries)

    # the vocabulary: concepts=, else the lens's
    label_res = None
    if isinstance(concepts, LabelResult):
        label_res = concepts
        concepts = list(concepts.groups) + [c for c in concepts.gaps if c not in concepts.groups]
    elif concepts is None and lens.vocabulary:
        concepts = list(lens.vocabulary)
    elif concepts is not None:
        if isinstance(concepts, str) or not all(isinstance(c, str) for c in concepts):
            raise TypeError(f"concepts={concepts!r:.80} is not accepted: expected a list of concept names (str) "
                            "or a LabelResult")
        concepts = list(concepts)
    audits = resolve_audits(lens, audit, layer)
    targets = _targets(lens, graph, audits)

    labels = {}
    if concepts:
        for l in layers:
            given_here = label_res is not None and len(label_res.table) and str(label_res.table["layer"].iloc[0]) == l
            labels[l] = label_res if given_here else lens.label(concepts, l)
    if given:
        qs, source = given, "queries"
    else:
        qs, source = list(concepts or [])[:max_queries], "vocabulary"
    return ReportContext(
        lens=lens, layers=layers, layer=layer, sheet=ThumbSheet(lens, px=thumb_px), concepts=concepts,
        labels=labels, audits=audits, queries=qs, queries_from=source, search_layer=search_layer, k=k,
        n_thumbs=n_thumbs, map_thumbs=map_thumbs, per_group=per_group, max_groups=max_groups,
        n_spurious=n_spurious, graph_targets=targets, progress=bool(progress),
    )


def render_report(lens: LensLike, *, title: str = "SemanticLens report", progress: bool = True, **options: Any) -> str:
    """Build the report page and return it as one HTML string (see :func:`write_report`)."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    from semlens_widgets import __version__

    ctx = build_context(lens, progress=progress, **options)
    sections: list[Section] = [s for s in (
        labels_section(ctx),
        search_section(ctx),
        map_section(ctx),
        audit_section(ctx),
        graph_section(ctx),
    ) if s is not None]
    faith = faithfulness_section(lens, ctx.layers)
    if faith is not None:
        sections.append(Section("faithfulness", "Label faithfulness").html(faith))
    sections.append(measures_section(ctx))

    variables: dict[str, Any] = {"css": CSS}
    roots = []
    layout: list[tuple[str, list[tuple[str, str]]]] = []
    for sec in sections:
        pieces = []
        var = f"{sec.id}_title"
        variables[var] = f"<h2>{e(sec.title)}</h2>"
        pieces.append(("html", var))
        for j, piece in enumerate(sec.pieces):
            if piece[0] == "html":
                var = f"{sec.id}_html_{j}"
                variables[var] = piece[1]
                pieces.append(("html", var))
            else:
                model, peek = piece[1], piece[2]
                model.name = plot_name(model.name or f"semlens_{sec.id}_{j}")
                roots.append(model)
                pieces.append(("plot", model.name))
                if peek:
                    var = f"{sec.id}_peek_{j}"
                    variables[var] = peek
                    pieces.append(("peek", var))
        layout.append((sec.id, pieces))

    nav = "".join(f'<a href="#{e(s.id)}">{e(s.title)}</a>' for s in sections)
    variables["header_html"] = (
        f"<header><h1>{e(title)}</h1>"
        f'<div class="small">semlens_widgets {e(__version__)} &middot; generated '
        f"{e(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} &middot; "
        f"m = {e(lens.m)} concept examples per component &middot; crops: {e(lens.crop_mode)} &middot; "
        f"foundation model: {e(fm_text(lens.fm))}</div>"
        "<p>SemanticLens (Dreyer, Berend et al., 2025) maps every component (channel, unit, SAE "
        "latent) of the model to one vector in the embedding space of a foundation model (CLIP): "
        "the mean embedding of its most activating concept examples. These vectors make the model's "
        "knowledge searchable, labelable and auditable. This file is standalone: it needs no kernel "
        "and no network.</p>"
        + overview_html(ctx)
        + "</header>"
        f'<nav class="top">{nav}</nav>'
    )
    variables["thumb_css"] = ctx.sheet.css(progress=ctx.progress)
    return file_html(roots, INLINE, title, template=page_template(layout), template_variables=variables)
