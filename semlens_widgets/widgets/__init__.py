"""Jupyter widgets of semlens_widgets (anywidget): thin views over a Lens.

Each class holds small state in typed traitlets, sends arrays and images as binary buffers,
and answers the front end's messages by calling Lens methods; none computes anything itself.
JS sources live in ``js/`` (one ES module per view), the built bundles in ``static/``.
"""
from ._base import WidgetValueError
from .audit import AuditView
from .compare import CompareView
from .explorer import Explorer, ExplorerHeader
from .gallery import ConceptGallery
from .map import SemanticMap
from .sankey import AttributionSankey
from .search import SearchBox

__all__ = ["SearchBox", "ConceptGallery", "SemanticMap", "AttributionSankey", "AuditView",
           "CompareView", "Explorer", "ExplorerHeader", "WidgetValueError"]
