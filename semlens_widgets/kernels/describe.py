"""Open-vocabulary descriptions of a component: the LINE loop.

LINE (LLM-based Iterative Neuron Explanations, Zaigrajew et al. 2025) describes a component of a
vision model without a fixed vocabulary and without gradients: a *proposer* suggests concept
descriptions, a text-to-image *generator* draws images of each, the component's pooled
activation on them scores each concept against control images, and the proposer refines from
this history. The best-scoring concept is the description; the history also shows whether two
unrelated concepts both drive the component (polysemanticity).

Protocols (any callables):

- ``generator(concept: str, n: int, seed: int) -> Tensor [n, 3, H, W]`` in [0, 1],
  deterministic per seed. A generator that cannot draw a concept raises ``ValueError``; the
  loop records that proposal as unusable (NaN scores, the message in ``note``) and goes on.
  :func:`from_diffusers` adapts a diffusers text-to-image pipeline; the demo world has
  ``semlens_widgets.demo.world.generator``.
- ``proposer(history: DataFrame) -> list[str]``, history columns ``round, concept, score, auc,
  note`` (empty in the first round). :class:`OfflineProposer` needs no language model (it
  starts from SemanticLens's label candidates and combines and specialises the best-scoring
  ones); :class:`LLMProposer` wraps any ``llm(prompt: str) -> str``.
- ``activation(images [n, 3, H, W]) -> Tensor [n]``: the component's pooled activation.

Pure torch/numpy, no disk, no UI.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from semlens_widgets.kernels.faithfulness import auc_separation, check_images, mean_activation_difference
from semlens_widgets.results import Description

__all__ = [
    "HISTORY_COLUMNS",
    "ROLES",
    "normalize_concept",
    "content_words",
    "distinct_senses",
    "describe_component",
    "history_frame",
    "OfflineProposer",
    "LLMProposer",
    "from_diffusers",
    "resize_images",
    "thumbnails",
]

#: columns of ``Description.history`` (and of the history a proposer receives).
HISTORY_COLUMNS = ("round", "concept", "score", "auc", "note")
#: how :class:`OfflineProposer` places a concept in a phrase (see its docstring).
ROLES = ("head", "modifier", "scene", "attachment")

_STOPWORDS = frozenset(
    "a an the one some of with without on in at against over under by and or showing containing having "
    "object objects thing things shape shapes image images picture pictures photo photos scene background".split()
)


def normalize_concept(text: str) -> str:
    """Canonical form used to recognise a concept already tried: lower case, single spaces,
    no surrounding punctuation or quotes, no leading article."""
    t = re.sub(r"\s+", " ", str(text)).strip().strip("\"'`.,;:!?*").strip().lower()
    return re.sub(r"^(?:a|an|the)\s+", "", t)


def content_words(text: str) -> frozenset[str]:
    """The content words of a concept phrase: lower-cased words (letters, digits, hyphens)
    minus articles, prepositions and generic nouns (``object``, ``background``, ``image``...),
    a plural ``s`` stripped from words longer than 3 letters (not from ``ss``)."""
    out = set()
    for w in re.findall(r"[a-z0-9][a-z0-9\-]*", str(text).lower()):
        if w in _STOPWORDS:
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.add(w)
    return frozenset(out)


def distinct_senses(
    concepts: Sequence[str],
    aucs: Sequence[float],
    scores: Sequence[float],
    *,
    high_auc: float = 0.9,
    text_embed: Callable[[list[str]], torch.Tensor] | None = None,
    max_similarity: float = 0.8,
) -> list[str]:
    """The mutually distinct high-scoring concepts (LINE's polysemanticity reading of the
    history), simplest first.

    A concept is *high* when its AUC >= ``high_auc``. Going through the high concepts from the
    simplest (fewest content words) to the most specific, ties by AUC then score, a concept is
    kept when it is distinct from every one kept before (so "star" and "watermark" are two
    senses even when "star with a watermark" scores higher than both). Two
    concepts are *distinct* when (1) their :func:`content_words` are disjoint (so "red star"
    and "red" are one sense, "star" and "watermark" two) and (2) when ``text_embed`` is given
    (``list[str] -> [n, d]``, e.g. the foundation model's text encoder), the cosine of their
    embeddings is < ``max_similarity``. Two or more senses mean polysemantic.
    """
    a = np.asarray(aucs, dtype=float)
    s = np.asarray(scores, dtype=float)
    ok = np.flatnonzero(np.isfinite(a) & (a >= high_auc))
    order = sorted(ok.tolist(), key=lambda i: (len(content_words(concepts[i])), -a[i], -np.nan_to_num(s[i], nan=-np.inf)))
    high = [concepts[i] for i in order]
    if not high:
        return []
    emb = None
    if text_embed is not None and len(high) > 1:
        e = torch.as_tensor(text_embed(list(high))).float()
        if e.ndim != 2 or e.shape[0] != len(high):
            raise ValueError(f"text_embed returned shape {tuple(e.shape)}; expected [{len(high)}, d]")
        emb = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    words = [content_words(c) for c in high]
    kept: list[int] = []
    for i in range(len(high)):
        if all(
            not (words[i] & words[j]) and (emb is None or float(emb[i] @ emb[j]) < max_similarity) for j in kept
        ):
            kept.append(i)
    return [high[i] for i in kept]


def history_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The history of a description as a DataFrame: one row per concept tried, columns
    :data:`HISTORY_COLUMNS` (round int64, concept, score and auc float64, note)."""
    return pd.DataFrame(list(rows), columns=list(HISTORY_COLUMNS)).astype(
        {"round": "int64", "score": "float64", "auc": "float64"})


def _check_int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return int(v)


def _activation_vector(activation: Callable, x: torch.Tensor, what: str) -> np.ndarray:
    a = activation(x)
    a = a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)
    if a.shape != (x.shape[0],):
        raise ValueError(f"activation returned shape {a.shape} on the {what}; expected [{x.shape[0]}] (one pooled value per image)")
    if not np.isfinite(a).all():
        raise ValueError(f"activation returned NaN or infinite values on the {what}")
    return a.astype(np.float64)


def describe_component(
    activation: Callable[[torch.Tensor], torch.Tensor],
    generator: Callable[[str, int, int], torch.Tensor],
    proposer: Callable[[pd.DataFrame], list[str]],
    control: torch.Tensor,
    *,
    rounds: int = 5,
    n_images: int = 16,
    seed: int = 0,
    top: int = 5,
    max_per_round: int = 16,
    parsimony: float = 0.02,
    high_auc: float = 0.9,
    text_embed: Callable[[list[str]], torch.Tensor] | None = None,
    max_similarity: float = 0.8,
    layer: str | None = None,
    component: int | None = None,
    progress: Callable | None = None,
) -> Description:
    """The LINE loop (Zaigrajew et al. 2025) for one component.

    Each round the proposer reads the history and proposes concepts; each new one (up to
    ``max_per_round``; already-tried ones, by :func:`normalize_concept`, are skipped) is drawn
    ``n_images`` times by the generator with the same ``seed`` (common random layouts make
    concepts comparable) and scored by the component's activation on those images against the
    control: ``auc`` (:func:`~semlens_widgets.kernels.faithfulness.auc_separation`, the
    label-faithfulness AUC) and ``score`` (CoSy's mean activation difference). The loop stops
    after ``rounds`` rounds or when the proposer has nothing new.

    activation: images [n, 3, H, W] in [0, 1] -> the component's pooled activations [n].
    generator:  ``(concept, n, seed) -> [n, 3, H, W]`` in [0, 1]; ValueError = unrenderable
                (recorded in ``note``, scores NaN).
    proposer:   ``history -> list[str]``.
    control:    control images [N, 3, H, W] in [0, 1] (e.g. dataset samples) or their
                activations [N] (N >= 2).
    top:        how many concepts ``Description.candidates`` keeps.
    parsimony:  the best concept is the one with the fewest content words among those whose
                AUC is within ``parsimony`` of the highest (ties: AUC, then score): a
                specialisation must earn its extra words ("watermark" over "striped diamond
                on water with a watermark" unless that separates better by more than this).
    high_auc, text_embed, max_similarity: the polysemanticity test, see :func:`distinct_senses`.
    progress:   optional wrapper of the round iterator (e.g. tqdm.auto.tqdm).
    Returns a :class:`~semlens_widgets.results.Description`. Raises ValueError when no
    proposal could be scored at all (the reasons listed).
    """
    if not callable(activation) or not callable(generator) or not callable(proposer):
        raise TypeError("activation, generator and proposer must be callables")
    rounds = _check_int("rounds", rounds, 1)
    n_images = _check_int("n_images", n_images, 1)
    seed = _check_int("seed", seed, 0)
    top = _check_int("top", top, 1)
    max_per_round = _check_int("max_per_round", max_per_round, 1)
    if not isinstance(control, torch.Tensor):
        raise TypeError(f"control must be a Tensor: images [N, 3, H, W] or activations [N], got {type(control).__name__}")
    if control.ndim == 4:
        neg = _activation_vector(activation, check_images(control, "control images", control.shape[0]), "control images")
    elif control.ndim == 1:
        neg = control.detach().double().cpu().numpy()
    else:
        raise ValueError(f"control must be images [N, 3, H, W] or activations [N], got shape {tuple(control.shape)}")
    if neg.shape[0] < 2:
        raise ValueError(f"need at least 2 control images, got {neg.shape[0]}")

    rows: list[dict] = []
    seen: set[str] = set()
    it = range(rounds)
    for r in progress(it) if progress else it:
        history = history_frame(rows)
        proposals = proposer(history)
        if isinstance(proposals, str) or not isinstance(proposals, (list, tuple)):
            raise TypeError(f"the proposer must return a list of str, got {type(proposals).__name__}")
        new = []
        for p in proposals:
            if not isinstance(p, str):
                raise TypeError(f"the proposer returned a non-str proposal {p!r}")
            key = normalize_concept(p)
            if key and key not in seen:
                seen.add(key)
                new.append(p.strip())
        new = new[:max_per_round]
        if not new:
            break
        for concept in new:
            try:
                x = generator(concept, n_images, seed)
            except ValueError as e:  # the generator's "cannot draw this"
                rows.append({"round": r, "concept": concept, "score": np.nan, "auc": np.nan, "note": f"unrenderable: {e}"})
                continue
            pos = _activation_vector(activation, check_images(x, concept, n_images), f"images of {concept!r}")
            rows.append({
                "round": r,
                "concept": concept,
                "score": float(mean_activation_difference(pos, neg)[0]),
                "auc": float(auc_separation(pos, neg)[0]),
                "note": "",
            })
    history = history_frame(rows)
    usable = history[np.isfinite(history["auc"].to_numpy(dtype=float))]
    if usable.empty:
        reasons = "; ".join(f"{c!r}: {n}" for c, n in zip(history["concept"], history["note"])) or "no proposals"
        raise ValueError(f"no proposal could be scored ({reasons})")
    if not (isinstance(parsimony, (int, float)) and 0 <= parsimony < 1):
        raise ValueError(f"parsimony must be a number in [0, 1), got {parsimony!r}")
    ranked = usable.sort_values(["auc", "score"], ascending=False, kind="mergesort")
    near = ranked[ranked["auc"] >= ranked["auc"].iloc[0] - parsimony]
    n_words = near["concept"].map(lambda c: len(content_words(c)))
    best = str(near["concept"].iloc[int(np.argmin(n_words.to_numpy()))])  # first minimum: best AUC
    best_auc = float(near["auc"].iloc[int(np.argmin(n_words.to_numpy()))])
    candidates = [best] + [str(c) for c in ranked["concept"] if c != best][: top - 1]
    senses = distinct_senses(
        usable["concept"].tolist(), usable["auc"].tolist(), usable["score"].tolist(),
        high_auc=high_auc, text_embed=text_embed, max_similarity=max_similarity,
    )
    return Description(
        history=history,
        best=best,
        auc=best_auc,
        candidates=candidates,
        polysemantic=len(senses) >= 2,
        senses=senses,
        layer=layer,
        component=component,
        seed=seed,
        n_images=n_images,
    )


# --------------------------------------------------------------------------- offline proposer


@dataclass(frozen=True)
class _Phrase:
    head: str | None = None
    modifiers: tuple[str, ...] = ()
    scene: str | None = None
    attachments: tuple[str, ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in (self.head, *self.modifiers, self.scene, *self.attachments) if p is not None)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class OfflineProposer:
    """A proposer that needs no language model: starts from SemanticLens's label candidates
    and combines and specialises the best-scoring concepts.

    candidates: the component's label candidates, best first: the vocabulary concepts nearest
                to its semantic embedding theta in the foundation model's text space
                (``s(c, theta) - s(null, theta)`` descending, paper eq. 5's ranking).
    categories: concept -> category (e.g. ``"colour"``), optional; two concepts of one category
                never go in one phrase ("red blue star"), except attachments.
    roles:      category (or concept) -> role in a phrase, one of :data:`ROLES`:
                ``head`` the noun ("star"), ``modifier`` an adjective before it ("red",
                "striped"), ``scene`` placed as "<phrase> on <scene>", ``attachment`` as
                "<phrase> with a <x>". Default ``head``; a second head of another category
                attaches ("dog with a ball").
    scene_phrases: scene concept -> its words with the preposition (``{"sky": "against the
                sky"}``); default ``"on <scene>"``.
    n_initial:  candidates proposed in the first round (the first proposal is candidates[0]).
    beam:       the best phrases of the history that get specialised each round.
    pool:       the attributes tried on them: the ``pool`` best single concepts by their AUC
                in the history (then by candidate rank).
    n_explore:  untried candidates added each round (so a wrong first guess is corrected).
    per_round:  at most this many proposals per round.

    Round 1 proposes ``candidates[:n_initial]``. Every later round proposes, in this order,
    for each of the ``beam`` best phrases (by AUC, then score) the phrase plus one compatible
    attribute of the pool ("star" + "red" -> "red star"; "star" + "watermark" -> "star with
    a watermark"), then the next ``n_explore`` untried candidates; nothing already tried.
    Phrases the history holds that it did not build (an LLM's) are parsed back when they
    consist of known concepts, else they are ranked but not extended. Deterministic.
    """

    def __init__(
        self,
        candidates: Sequence[str],
        categories: Mapping[str, str] | None = None,
        roles: Mapping[str, str] | None = None,
        *,
        scene_phrases: Mapping[str, str] | None = None,
        n_initial: int = 6,
        beam: int = 3,
        pool: int = 6,
        n_explore: int = 2,
        per_round: int = 10,
    ):
        if isinstance(candidates, str) or not all(isinstance(c, str) and c.strip() for c in candidates):
            raise ValueError(f"candidates must be a list of non-empty str (best first), got {candidates!r:.200}")
        self.candidates = list(dict.fromkeys(c.strip() for c in candidates))
        self._settings = dict(categories=categories, roles=roles, scene_phrases=scene_phrases, n_initial=n_initial,
                              beam=beam, pool=pool, n_explore=n_explore, per_round=per_round)
        self.categories = dict(categories or {})
        self.roles = dict(roles or {})
        self.scene_phrases = dict(scene_phrases or {})
        for k, v in self.roles.items():
            if v not in ROLES:
                raise ValueError(f"unknown role {v!r} for {k!r}; expected one of {list(ROLES)}")
        self.n_initial = _check_int("n_initial", n_initial, 1)
        self.beam = _check_int("beam", beam, 1)
        self.pool = _check_int("pool", pool, 1)
        self.n_explore = _check_int("n_explore", n_explore, 0)
        self.per_round = _check_int("per_round", per_round, 1)
        self._order = {c: i for i, c in enumerate(self.candidates)}
        # multi-word concepts first so "red tint" is not read as "red"
        self._lexicon = sorted(self.candidates, key=lambda c: (-len(c.split()), c))

    def with_candidates(self, candidates: Sequence[str]) -> "OfflineProposer":
        """This proposer (same categories, roles and settings) for a component whose label
        candidates are ``candidates`` (best first). ``lens.describe`` calls it, so a proposer
        made with ``candidates=()`` is a template (e.g. ``world.proposer``)."""
        return OfflineProposer(candidates, **self._settings)

    # ---- phrases ---------------------------------------------------------------------------
    def category(self, concept: str) -> str:
        return self.categories.get(concept, concept)

    def role(self, concept: str) -> str:
        return self.roles.get(concept, self.roles.get(self.category(concept), "head"))

    def add(self, phrase: _Phrase, concept: str) -> _Phrase | None:
        """``phrase`` plus ``concept``, or None when they do not combine."""
        if concept in phrase.parts or any(content_words(concept) & content_words(p) for p in phrase.parts):
            return None  # "red" + "red tint": one word twice says nothing new
        role, cat = self.role(concept), self.category(concept)
        used = {self.category(p) for p in phrase.parts}
        if cat in used and role != "attachment":
            return None
        if role == "head":
            if phrase.head is None:
                return _Phrase(concept, phrase.modifiers, phrase.scene, phrase.attachments)
            role = "attachment"
        if role == "modifier":
            mods = tuple(sorted((*phrase.modifiers, concept), key=lambda c: self._order.get(c, 1 << 30)))
            return _Phrase(phrase.head, mods, phrase.scene, phrase.attachments)
        if role == "scene":
            if phrase.scene is not None:
                return None
            return _Phrase(phrase.head, phrase.modifiers, concept, phrase.attachments)
        return _Phrase(phrase.head, phrase.modifiers, phrase.scene, (*phrase.attachments, concept))

    def text(self, phrase: _Phrase) -> str:
        """The phrase as words: "[modifiers] [head][ on scene][ with a x[ and a y]]"."""
        core = " ".join([*phrase.modifiers, *([phrase.head] if phrase.head else [])])
        out = core
        if phrase.scene:
            where = self.scene_phrases.get(phrase.scene, f"on {phrase.scene}")
            out = f"{core} {where}" if core else phrase.scene
        if phrase.attachments:
            atts = " and ".join(f"{_article(a)} {a}" for a in phrase.attachments)
            out = f"{out} with {atts}" if out else " and ".join(phrase.attachments)
        return out

    def parse(self, text: str) -> _Phrase | None:
        """Read a phrase made of known concepts back (None if any content word is unknown)."""
        t = " " + normalize_concept(text) + " "
        found = []
        for c in self._lexicon:
            pat = re.compile(rf"(?<![\w-]){re.escape(c.lower())}(?![\w-])")
            if pat.search(t):
                found.append(c)
                t = pat.sub(" ", t)
        if not found or content_words(t):
            return None
        phrase: _Phrase | None = _Phrase()
        for c in sorted(found, key=lambda c: (ROLES.index(self.role(c)) if self.role(c) != "head" else -1)):
            phrase = self.add(phrase, c)
            if phrase is None:
                return None
        return phrase

    # ---- the protocol ------------------------------------------------------------------------
    def __call__(self, history: pd.DataFrame) -> list[str]:
        if not self.candidates:
            raise ValueError("this OfflineProposer has no candidates: make it with the component's label candidates, "
                             "or call .with_candidates(...) (lens.describe does, from the vocabulary)")
        if history is None or len(history) == 0:
            return self.candidates[: self.n_initial]
        tried = {normalize_concept(c) for c in history["concept"]}
        auc = history["auc"].to_numpy(dtype=float)
        score = history["score"].to_numpy(dtype=float)
        ok = np.isfinite(auc)
        order = sorted(np.flatnonzero(ok).tolist(), key=lambda i: (-auc[i], -score[i]))
        ranked = [str(history["concept"].iloc[i]) for i in order]
        single_auc = {normalize_concept(c): auc[i] for i, c in enumerate(history["concept"]) if ok[i]}
        pool = sorted(
            (c for c in self.candidates if normalize_concept(c) in single_auc),
            key=lambda c: (-single_auc[normalize_concept(c)], self._order[c]),
        )[: self.pool]
        out: list[str] = []

        def offer(text: str) -> None:
            key = normalize_concept(text)
            if key and key not in tried:
                tried.add(key)
                out.append(text)

        beams = []
        for c in ranked:
            ph = self.parse(c)
            if ph is not None:
                beams.append(ph)
            if len(beams) == self.beam:
                break
        for ph in beams:
            for a in pool:
                nxt = self.add(ph, a)
                if nxt is not None:
                    offer(self.text(nxt))
        explore = [c for c in self.candidates if normalize_concept(c) not in tried][: self.n_explore]
        # exploration is kept even when the specialisations fill the round
        room = max(0, self.per_round - len(explore))
        return out[:room] + explore


# --------------------------------------------------------------------------- LLM proposer


class LLMProposer:
    """A proposer backed by any language model given as ``llm(prompt: str) -> str``.

    The prompt (:meth:`prompt`; ``{...}`` filled in)::

        You are explaining what one unit of {context} responds to. We draw images from short
        text descriptions with a text-to-image model and measure how strongly the unit
        activates on them. AUC is the probability that the unit responds more to an image of
        a description than to a control image (0.5: no preference, 1.0: always more).
        [first round, when candidates are given:]
        Candidate concepts from the images that activate the unit most: {c1}, {c2}, ...
        [later rounds:]
        Descriptions tried so far, best first:
        - {concept}: AUC {auc:.2f}, activation {score:+.2f} control std
        - {concept}: could not be drawn ({reason})
        Propose {n} new short descriptions (1 to {max_words} words) of the visual concept the
        unit responds to: refine the best ones (combine attributes, make them more specific
        or more general) or try different ideas if none is good. Do not repeat a description
        tried before. Answer with one description per line and nothing else.

    Parsing (:meth:`parse`): a JSON list of strings is read as such; otherwise one proposal
    per line, with bullets ("-", "*", "•"), numbering ("1.", "2)", "(3)"), surrounding quotes
    or backticks, code fences and trailing punctuation removed; a single line with two or more
    commas or semicolons is split there; lines ending with ":" (headers), empty ones, ones
    without a letter and ones longer than ``max_words`` words are dropped, as are repeats and
    concepts already tried. When nothing is left, the model is asked once more (``retries``)
    with a reminder of the format; then an empty list ends the loop.

    llm:        ``prompt -> text``; a non-str answer raises TypeError.
    n:          proposals asked per round.
    candidates: SemanticLens's label candidates for the component (shown in the first round).
    context:    what the unit belongs to, e.g. "an image classifier".
    max_history: rows of the history shown (the best ones).
    """

    def __init__(
        self,
        llm: Callable[[str], str],
        *,
        n: int = 5,
        candidates: Sequence[str] = (),
        context: str = "an image classifier",
        max_words: int = 12,
        max_history: int = 20,
        retries: int = 1,
    ):
        if not callable(llm):
            raise TypeError(f"llm must be a callable prompt -> text, got {type(llm).__name__}")
        self.llm = llm
        self.n = _check_int("n", n, 1)
        self.candidates = [str(c) for c in candidates]
        self.context = str(context)
        self.max_words = _check_int("max_words", max_words, 1)
        self.max_history = _check_int("max_history", max_history, 1)
        self.retries = _check_int("retries", retries, 0)

    def with_candidates(self, candidates: Sequence[str]) -> "LLMProposer":
        """This proposer showing ``candidates`` (the component's label candidates) in its first prompt."""
        return LLMProposer(self.llm, n=self.n, candidates=list(candidates)[:10], context=self.context,
                           max_words=self.max_words, max_history=self.max_history, retries=self.retries)

    def prompt(self, history: pd.DataFrame | None) -> str:
        lines = [
            f"You are explaining what one unit of {self.context} responds to. We draw images from short "
            "text descriptions with a text-to-image model and measure how strongly the unit activates on "
            "them. AUC is the probability that the unit responds more to an image of a description than "
            "to a control image (0.5: no preference, 1.0: always more).",
        ]
        if history is None or len(history) == 0:
            if self.candidates:
                lines.append("Candidate concepts from the images that activate the unit most: " + ", ".join(self.candidates) + ".")
        else:
            auc = history["auc"].to_numpy(dtype=float)
            score = history["score"].to_numpy(dtype=float)
            order = sorted(range(len(history)), key=lambda i: (not np.isfinite(auc[i]), -np.nan_to_num(auc[i]), -np.nan_to_num(score[i])))
            lines.append("Descriptions tried so far, best first:")
            for i in order[: self.max_history]:
                c = history["concept"].iloc[i]
                if np.isfinite(auc[i]):
                    lines.append(f"- {c}: AUC {auc[i]:.2f}, activation {score[i]:+.2f} control std")
                else:
                    note = str(history["note"].iloc[i]).replace("\n", " ")[:120]
                    lines.append(f"- {c}: could not be drawn ({note})")
        lines.append(
            f"Propose {self.n} new short descriptions (1 to {self.max_words} words) of the visual concept the "
            "unit responds to: refine the best ones (combine attributes, make them more specific or more "
            "general) or try different ideas if none is good. Do not repeat a description tried before. "
            "Answer with one description per line and nothing else."
        )
        return "\n".join(lines)

    def parse(self, text: str, tried: set[str] = frozenset()) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"the llm must return a str, got {type(text).__name__}")
        t = re.sub(r"```[a-zA-Z]*", "\n", text).strip()
        items: list[str] | None = None
        if t.startswith("["):
            try:
                got = json.loads(t)
                if isinstance(got, list):
                    items = [g for g in got if isinstance(g, str)]
            except ValueError:
                items = None
        if items is None:
            lines = [l for l in (x.strip() for x in t.splitlines()) if l]
            if len(lines) == 1 and len(re.findall(r"[,;]", lines[0])) >= 2:
                lines = [p for p in re.split(r"[,;]", lines[0])]
            items = lines
        out, seen = [], set(tried)
        for item in items:
            s = re.sub(r"^\s*(?:[-*\u2022]+|\d+[.)]|\(\d+\))\s*", "", item).strip()
            if s.endswith(":"):
                continue
            s = s.strip("\"'`").strip().rstrip(".;,!").strip().strip("\"'`").strip()
            if not s or not re.search(r"[A-Za-z]", s) or len(s.split()) > self.max_words:
                continue
            key = normalize_concept(s)
            if key in seen:
                continue
            seen.add(key)
            out.append(s)
        return out[: self.n]

    def __call__(self, history: pd.DataFrame) -> list[str]:
        tried = set() if history is None or len(history) == 0 else {normalize_concept(c) for c in history["concept"]}
        prompt = self.prompt(history)
        for attempt in range(self.retries + 1):
            got = self.parse(self.llm(prompt), tried)
            if got:
                return got
            prompt = (
                self.prompt(history)
                + f"\nYour previous answer could not be read. Answer with exactly {self.n} lines, one short "
                "description per line, no numbering, no other text."
            )
        return []


# --------------------------------------------------------------------------- diffusers adapter


def _to_tensor(images: Any) -> torch.Tensor:
    """Pipeline output images -> FloatTensor [n, 3, H, W] in [0, 1]: a list of PIL images, an
    ndarray / tensor [n, H, W, 3] (values in [0, 1], or uint8) or a tensor [n, 3, H, W]."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("the pipeline returned no images")
        if all(hasattr(im, "convert") and hasattr(im, "size") for im in images):  # PIL
            arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
            return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
        images = np.stack([np.asarray(im) for im in images])
    if isinstance(images, np.ndarray):
        uint8 = images.dtype == np.uint8
        images = torch.from_numpy(np.ascontiguousarray(images))
    else:
        uint8 = isinstance(images, torch.Tensor) and images.dtype == torch.uint8
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"the pipeline returned images of shape {got}; expected a list of PIL images or [n, H, W, 3] / [n, 3, H, W]")
    x = images.float() / 255.0 if uint8 else images.float()
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"the pipeline returned images of shape {tuple(images.shape)}; expected 3 colour channels")
    return x.clamp(0.0, 1.0).contiguous()


def from_diffusers(
    pipe: Callable,
    *,
    prompt_template: str = "{}",
    negative_prompt: str | None = None,
    batch_size: int = 4,
    generator_device: str = "cpu",
    size: int | None = None,
    **pipe_kwargs: Any,
) -> Callable[[str, int, int], torch.Tensor]:
    """A generator ``(concept, n, seed) -> [n, 3, H, W]`` from a diffusers text-to-image
    pipeline the user has loaded (e.g. ``StableDiffusionPipeline.from_pretrained(...)``).

    It calls ``pipe(prompt_template.format(concept), num_images_per_prompt=b,
    generator=torch.Generator(generator_device).manual_seed(seed), negative_prompt=...,
    **pipe_kwargs)`` in batches of ``batch_size`` (one torch.Generator carried across the
    batches, so the n images are deterministic per seed), reads ``.images`` (or element 0 of a
    tuple output) as PIL images, an ndarray [b, H, W, 3] or a tensor, and returns FloatTensor
    [n, 3, H, W] in [0, 1]; ``size`` resizes to size x size (bilinear). Pass pipeline options
    (``num_inference_steps``, ``guidance_scale``, ``height``, ``width``...) as keywords.
    Nothing is downloaded here; diffusers is not imported.
    """
    if not callable(pipe):
        raise TypeError(f"pipe must be a callable text-to-image pipeline, got {type(pipe).__name__}")
    if "{}" not in prompt_template:
        raise ValueError(f"prompt_template must contain '{{}}' where the concept goes, got {prompt_template!r}")
    batch_size = _check_int("batch_size", batch_size, 1)
    if size is not None:
        size = _check_int("size", size, 1)

    def generate(concept: str, n: int, seed: int) -> torch.Tensor:
        if not isinstance(concept, str) or not concept.strip():
            raise ValueError(f"expected a non-empty concept, got {concept!r}")
        n = _check_int("n", n, 1)
        g = torch.Generator(generator_device).manual_seed(_check_int("seed", seed, 0))
        prompt = prompt_template.format(concept.strip())
        kw = dict(pipe_kwargs)
        if negative_prompt is not None:
            kw["negative_prompt"] = negative_prompt
        chunks = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            out = pipe(prompt, num_images_per_prompt=b, generator=g, **kw)
            images = out[0] if isinstance(out, tuple) else getattr(out, "images", out)
            x = _to_tensor(images)
            if x.shape[0] != b:
                raise ValueError(f"the pipeline returned {x.shape[0]} images for num_images_per_prompt={b}")
            chunks.append(x)
        x = torch.cat(chunks) if len({c.shape[1:] for c in chunks}) == 1 else None
        if x is None:
            raise ValueError("the pipeline returned images of different sizes across batches")
        if size is not None and x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        return x

    config = getattr(pipe, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(pipe, "name_or_path", None)
    generate.identity = {  # type: ignore[attr-defined]  # what lens.faithfulness fingerprints
        "diffusers": f"{type(pipe).__module__}.{type(pipe).__qualname__}",
        "model": str(name) if name else f"object@{id(pipe):x}",
        "prompt_template": prompt_template, "negative_prompt": negative_prompt, "size": size,
        "batch_size": batch_size, "kwargs": {k: repr(v) for k, v in sorted(pipe_kwargs.items())},
    }
    return generate


def resize_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images ``[n, 3, h, w]`` in [0, 1] -> ``[n, 3, H, W]`` (bilinear, antialiased when
    shrinking; unchanged when already that size), values kept in [0, 1]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return torch.nn.functional.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False,
                                           antialias=True).clamp(0.0, 1.0)


def thumbnails(x: torch.Tensor, side: int) -> torch.Tensor:
    """Images ``[n, 3, h, w]`` in [0, 1] -> uint8 ``[n, 3, s, s']`` with the longer side at most
    ``side`` (aspect kept), for showing a few generated images of a concept."""
    h, w = x.shape[-2:]
    scale = min(1.0, side / max(h, w))
    small = resize_images(x, (max(1, round(h * scale)), max(1, round(w * scale))))
    return (small * 255).round().to(torch.uint8).cpu()
