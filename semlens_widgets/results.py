"""Plain result containers returned by :class:`semlens_widgets.Lens` and the kernels.

Every result is a dataclass (or a pandas DataFrame with documented columns), never a bare
tuple, so that notebooks, widgets and the report read fields by name. Tensors are on the CPU.

Column conventions used across the package (DataFrames):

- ``layer`` (str) and ``component`` (int) identify a component everywhere.
- ``score`` is a semantic score (cosine minus the null-embedding baseline, paper eq. 4).
- ``label`` is a concept name (str) or ``None`` when the component carries no known concept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd
import torch

__all__ = [
    "TopM",
    "ComponentExamples",
    "LabelResult",
    "AuditResult",
    "AttributionGraph",
    "Comparison",
    "AUDIT_CATEGORIES",
]

AUDIT_CATEGORIES = ("valid", "spurious", "both", "unexpected")


@dataclass
class TopM:
    """Streaming top-m of one layer (the concept examples: their selection).

    indices: LongTensor [C, m_eff]  global dataset indices, sorted by value, descending.
    values:  FloatTensor [C, m_eff] float32 pooled activations matching ``indices``.
    m:       the m that was requested.
    n_seen:  how many samples were scanned.
    ``m_eff = min(m, n_seen)``: when the dataset has fewer than m samples the tensors are
    narrower and :attr:`complete` is False. Indices are never padded with fake values.
    """

    indices: torch.Tensor
    values: torch.Tensor
    m: int
    n_seen: int

    @property
    def m_eff(self) -> int:
        return int(self.indices.shape[1])

    @property
    def complete(self) -> bool:
        """True when every component has m real examples."""
        return self.m_eff == self.m

    @property
    def num_components(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class ComponentExamples:
    """The concept examples of one component: ``indices [m]`` (dataset indices) and
    ``activations [m]`` (float32, descending). Unpacks as ``idx, act = lens.examples(l, k)``."""

    layer: str
    component: int
    indices: torch.Tensor
    activations: torch.Tensor

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.indices
        yield self.activations

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class LabelResult:
    """Output of ``lens.label`` (the paper's labelling).

    table:  DataFrame, one row per component: ``layer, component, label, score, baseline``
            where ``score`` is the best concept's similarity minus the null baseline and
            ``label`` is None when no concept beats the baseline (and threshold).
    gaps:   concepts of the vocabulary that no component carries.
    groups: concept -> list of component ids labelled with it (how many neurons encode "dog").
    """

    table: pd.DataFrame
    gaps: list[str]
    groups: dict[str, list[int]]

    @property
    def counts(self) -> pd.Series:
        """Number of components per concept, descending (NetDissect-style label counts)."""
        return pd.Series({k: len(v) for k, v in self.groups.items()}, dtype="int64").sort_values(
            ascending=False
        )


@dataclass
class AuditResult:
    """Output of ``lens.audit`` (paper section 3.4, auditing).

    table:   DataFrame per component: ``layer, component, a_valid, a_spur, best_valid,
             best_spur, relevance, category, label`` with category in AUDIT_CATEGORIES.
    summary: DataFrame per category: ``category, n_components, relevance, share`` where
             ``relevance`` is the summed (positive) relevance and ``share`` its fraction.
    spurious_samples: component -> LongTensor of dataset indices behind that spurious
             component (its concept examples): the data to inspect or clean.
    """

    layer: str
    target: int
    valid: list[str]
    spurious: list[str]
    table: pd.DataFrame
    summary: pd.DataFrame
    spurious_samples: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class AttributionGraph:
    """Output of ``lens.attribution_graph`` (the paper's attribution graphs): a Sankey-ready graph.

    nodes: DataFrame ``id, layer, label, components, relevance, labelled`` where ``id`` is a
           unique string, ``components`` a list of component ids grouped in the node and
           ``labelled`` False for groups of components without a known concept.
    edges: DataFrame ``source, target, weight`` (node ids; weight = relevance flow, >= 0 for
           the drawn flows, signed value kept in ``signed_weight``).
    target: the output class the graph explains; ``layers`` ordered from input to output.
    """

    target: int
    layers: list[str]
    nodes: pd.DataFrame
    edges: pd.DataFrame


@dataclass
class Comparison:
    """Output of ``slw.compare`` (paper eqs. 5/6, comparing models).

    s_ab, s_ba: mean over A (resp. B) of the best cosine match in the other model.
    shared / unique_a / unique_b: concept names by label.
    counts: DataFrame ``concept, count_a, count_b``.
    matches: DataFrame ``component_a, component_b, cosine`` (nearest neighbour of each A
             component in B).
    """

    layer_a: str
    layer_b: str
    s_ab: float
    s_ba: float
    shared: list[str]
    unique_a: list[str]
    unique_b: list[str]
    counts: pd.DataFrame
    matches: pd.DataFrame


@dataclass
class Description:
    """Output of the open-vocabulary description loop (LINE, Zaigrajew et al. 2025):
    ``semlens_widgets.kernels.describe.describe_component`` and ``lens.describe``.

    history:      DataFrame, one row per proposed concept in the order tried:
                  ``round, concept, score, auc, note``. ``auc`` is the AUC of the component's
                  pooled activation on ``n_images`` generated images of the concept against the
                  control images (ties 1/2); ``score`` is CoSy's mean activation difference
                  ``(mean a(x+) - mean a(x-)) / std a(x-)``; both NaN when the generator could not
                  render the concept, ``note`` then says why.
    best:         the best concept: the fewest content words among the concepts whose AUC is
                  within the loop's ``parsimony`` of the highest (then highest AUC, then score).
    auc:          its AUC in the loop (selected among many, so optimistic: re-measure it on
                  fresh images, e.g. with ``lens.faithfulness``, for an unbiased value).
    candidates:   ``best``, then the other top concepts by AUC (at most ``top`` in all).
    polysemantic: whether two *distinct* concepts both score high (see ``senses``).
    senses:       the high-scoring concepts that are mutually distinct, simplest first: a concept
                  is high when its AUC >= the loop's ``high_auc``; two concepts are distinct when
                  they share no content word (articles, prepositions and generic nouns such as
                  "object" or "background" ignored, plural "s" stripped) and, when a text encoder
                  is given, the cosine of their text embeddings is below ``max_similarity``.
    layer, component: the component described (None when the kernel ran without a Lens).
    seed, n_images: how the images were generated (``generator(concept, n_images, seed)``
                  redraws any concept's images exactly).
    examples:     concept -> uint8 ``[n, 3, h, w]``: the first few generated images of each of
                  the ``candidates`` (``lens.describe`` keeps 4, longer side <= 96 px; empty
                  when the kernel ran alone).
    """

    history: pd.DataFrame
    best: str
    auc: float
    candidates: list[str]
    polysemantic: bool
    senses: list[str] = field(default_factory=list)
    layer: str | None = None
    component: int | None = None
    seed: int = 0
    n_images: int = 16
    examples: dict = field(default_factory=dict)


__all__.append("Description")
