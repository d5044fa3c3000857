"""Standalone HTML report of a :class:`~semlens_widgets.Lens` (``lens.report(path)``).

One self-contained ``.html`` file that opens in any browser with no kernel and no network, worth
sending without options. After a header with the findings at a glance, its sections:

- **Labels** (:mod:`.labels`): per layer every label group (how many components carry a concept
  of the vocabulary, their mean score) with a gallery of its best components, the gaps of the
  vocabulary and the unlabelled components;
- **Search** (:mod:`.search`, paper eq. 4): for every concept of the vocabulary (or the given
  ``queries``) its best components with their concept examples;
- **Semantic map** (:mod:`.map`): the UMAP of the semantic embeddings of a layer coloured by
  label, names where labels cluster; hovering a point shows its crops beside the map;
- **Audit** (:mod:`.audit`, paper section 3.4), when one is configured with ``audit=``: a_valid
  vs a_spur per component sized by relevance, the share of the class's relevance per category
  and the samples behind the spurious components;
- **Attribution** (:mod:`.graph`): for the audited classes (or ``graph=``), the concepts each
  layer's relevance flows through and the strongest flows (the attribution graph's summary);
- **Label faithfulness** (:mod:`.faithfulness`), when ``lens.faithfulness`` was computed;
- **Measures** (:mod:`.measures`, paper eqs. 7, 9, 10): clarity, polysemanticity and
  redundancy per layer, the clearest and the most polysemantic components.

Pictures are WebP ``data:`` URIs, each encoded once and shared by every section that shows it
(:mod:`._thumbs`); the plots are bokeh documents embedded with ``bokeh.resources.INLINE``
(BokehJS is written into the file, nothing is fetched from a CDN). Every user-provided string
(labels, queries, concept and class names) is HTML-escaped: a concept called
``<img src=x onerror=alert(1)>`` shows as that text.

The report draws only: every number comes from a member of
:class:`~semlens_widgets.protocols.LensLike` (``label``, ``search``, ``map``, ``examples``,
``boxes``, ``images``, ``audit``, ``attribution_graph``, ``measures``, ``measures_summary``,
``stored_faithfulness``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from semlens_widgets.protocols import LensLike
from semlens_widgets.store import atomic_write_bytes

from ._document import render_report

__all__ = ["write_report", "render_report"]


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

    Without options the report shows what the lens knows: labels, gaps and search strips for the
    vocabulary set with ``lens.set_vocabulary`` (or ``concepts=``), the map of the last layer, the
    measures, and the faithfulness tables computed earlier. Keyword arguments (all optional):

    - ``audit``: what to audit: a dict ``{"valid": [...], "spurious": [...], "target": CLASS}``
      (optionally ``"layer"``) passed to ``lens.audit``, an
      :class:`~semlens_widgets.results.AuditResult`, or a list of them. Adds the audit section
      and, for each audited class, the attribution section (one CRP pass per class when its
      graph is not stored yet).
    - ``graph``: the classes of the attribution section (index or name, or a list); default: the
      audited classes; False: none.
    - ``concepts``: the vocabulary (list of str) or a ``LabelResult`` (default: ``lens.vocabulary``).
    - ``queries``: text queries for the search strips (default: the vocabulary's concepts, at
      most ``max_queries`` = 40); ``search_layer``: one layer to search (default: all); ``k``
      components per query (4).
    - ``layer``: the layer of the map and of audits given as dicts (default: the last layer).
    - ``n_thumbs`` crops per component (5), ``thumb_px`` side of an encoded crop (56),
      ``per_group`` components shown per label group (3), ``max_groups`` label groups with a
      gallery per layer (40), ``map_thumbs`` map components with crops in the side panel (500),
      ``n_spurious`` spurious components whose samples are shown (3), ``title``, ``progress``.

    The file embeds BokehJS (about 1.3 MB) and the crops as WebP; it opens offline. On the demo
    world (two layers, 192 components) with an audit it is about 2 MB.
    """
    path = _writable_path(path)  # before the rendering, which takes a while
    page = render_report(lens, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, page.encode("utf-8"))
    os.chmod(path, 0o644)  # a report is for sharing: readable like any written file
    return path
