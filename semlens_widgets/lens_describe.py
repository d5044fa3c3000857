"""Open-vocabulary descriptions (the LINE loop) and label faithfulness of a Lens's components.

:meth:`Describer.describe` runs the LINE loop (:func:`semlens_widgets.kernels.describe.describe_component`)
for one component: the proposer starts from SemanticLens's label candidates of the component
(the vocabulary ranked by paper eq. 4's score, ``lens.search_scores``), a text-to-image
generator draws each proposal, and the component's pooled activation on those images is scored
against control images (dataset samples). :meth:`Describer.faithfulness` is the label
evaluation of the SemanticLens paper (CoSy's AUC) of a whole layer:
:func:`semlens_widgets.kernels.faithfulness.layer_faithfulness`.

How images reach the model
    A generator returns images in [0, 1] (display space) of any size. They are resized to the
    model's input size (bilinear, antialiased) and passed through ``model_transform`` (images
    in [0, 1] -> model inputs). Default: the identity when the Lens has no display transform
    (its dataset already holds [0, 1] images), ImageNet normalisation when the display
    transform is :func:`~semlens_widgets.lens.imagenet_unnormalize`; any other display
    transform needs an explicit ``model_transform=`` (its inverse cannot be guessed). Control
    images are dataset samples, read as model inputs (no transform).

Control images
    ``control=n`` (default 256): n dataset samples, the first n of a fixed seeded permutation
    of the dataset; or a list of dataset indices. Their pooled activations are stored
    (``describe/control/<layer>/<digest>``).

What is stored (:class:`~semlens_widgets.lens_keys.AnalysisKeys`)
    - the last description of each component (``describe/description/<layer>/<k>``: the
      history as tensors plus JSON meta, and a few generated images of its top candidates as
      uint8), read back by :meth:`Describer.stored_description` for the views; a description
      is always recomputed when asked for (a generator cannot be fingerprinted reliably);
    - the last faithfulness table of each layer (``describe/faithfulness/<layer>``), computed
      in resumable chunks of labels and reused when the same labels, generator, images, seed
      and controls are asked again. A generator is identified by its ``identity`` attribute
      when it has one (``from_diffusers`` generators do), else by its qualified name; an
      anonymous function (a lambda or a closure without ``identity``) is identified by the
      object itself, so its results are reused within the session only.
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from semlens_widgets.kernels import describe as _describe
from semlens_widgets.kernels import faithfulness as _faith
from semlens_widgets.kernels.hooks import LayerCapture, pool_activations
from semlens_widgets.lens_checks import concept_list, is_int, nonnegative_int, positive_int
from semlens_widgets.lens_data import callable_id
from semlens_widgets.lens_keys import AnalysisKeys
from semlens_widgets.lens_layers import LayerSet
from semlens_widgets.results import Description
from semlens_widgets.store import Store, fingerprint

__all__ = ["Describer", "generator_id", "check_generator", "DEFAULT_CONTROL", "THUMBS"]

#: control images (dataset samples) of describe and faithfulness by default
DEFAULT_CONTROL = 256
#: generated images kept per top candidate of a description (for the gallery), and their side
THUMBS = (4, 96)
#: distinct labels per resumable chunk of a faithfulness pass
_LABELS_PER_CHUNK = 8
_CONTROL_PERMUTATION_SEED = 0


def generator_id(generator: Callable) -> str:
    """The id of a generator in fingerprints (see the module docstring)."""
    ident = getattr(generator, "identity", None)
    if ident is not None:
        return "identity:" + json.dumps(ident, sort_keys=True, default=str)
    cid = callable_id(generator)
    if "<lambda>" in cid or "<locals>" in cid:
        cid += f"@{id(generator):x}"  # anonymous: this object, this session
    return cid


def check_generator(generator: Any) -> Callable:
    """``generator`` when it is a callable taking ``(concept, n, seed)``; else TypeError."""
    accepted = "a callable (concept: str, n: int, seed: int) -> Tensor [n, 3, H, W] in [0, 1]"
    if not callable(generator):
        raise TypeError(f"generator must be {accepted}, got {type(generator).__name__}")
    try:
        inspect.signature(generator).bind("concept", 1, 0)
    except TypeError as e:
        raise TypeError(f"generator must be {accepted}; {callable_id(generator)} cannot be called so ({e})") from None
    except ValueError:  # builtins without a signature: called as is
        pass
    return generator


class Describer:
    """describe / faithfulness over the components of a Lens.

    pipeline: the model, the dataset view and the concept examples (a run
    :class:`~semlens_widgets.lens_pipeline.Pipeline`); semantics: the
    :class:`~semlens_widgets.lens_semantics.SemanticIndex` (label candidates, default labels,
    text embeddings); store / keys: where results are kept; layers: the Lens's layers (SAE
    layers included: their activations are the SAE's latents); batch_size: images per forward
    pass; progress: tqdm bars.
    """

    def __init__(self, pipeline: Any, semantics: Any, store: Store, keys: AnalysisKeys, layers: LayerSet, *,
                 batch_size: int, progress: bool):
        self.pipeline = pipeline
        self.semantics = semantics
        self.store = store
        self.keys = keys
        self.layers = layers
        self.batch_size = int(batch_size)
        self.progress = bool(progress)

    # ------------------------------------------------------------------ images -> activations
    def model_transform(self, model_transform: Callable | None) -> tuple[Callable | None, str]:
        """``(transform, id)``: images in [0, 1] -> model inputs (see the module docstring)."""
        if model_transform is not None:
            if not callable(model_transform):
                raise TypeError(f"model_transform must be callable (images [n, 3, H, W] in [0, 1] -> model "
                                f"inputs) or None, got {type(model_transform).__name__}")
            return model_transform, callable_id(model_transform)
        from semlens_widgets.lens import imagenet_normalize, imagenet_unnormalize

        display = self.pipeline.data.display_transform
        if display is None:
            c = self.pipeline.data.input_shape[0]
            if c != 3:
                raise ValueError(f"the model eats {c}-channel inputs; generated images are RGB: pass "
                                 "model_transform= (images [n, 3, H, W] in [0, 1] -> model inputs)")
            return None, callable_id(None)
        if display is imagenet_unnormalize:
            return imagenet_normalize, callable_id(imagenet_normalize)
        raise ValueError(
            f"this Lens shows its inputs through display_transform={callable_id(display)}, so generated images "
            "(in [0, 1]) cannot be fed to the model as they are: pass model_transform= (images [n, 3, H, W] "
            "in [0, 1] -> model inputs, the inverse of the display transform)"
        )

    def activations(self, layer: str, x: torch.Tensor) -> torch.Tensor:
        """Pooled activations ``[n, C]`` (float32, CPU) of ``layer`` on model inputs ``x [n, ...]``
        (the Lens's pooling; an SAE layer's are its latents)."""
        model, device, pooling = self.pipeline.model, self.pipeline.device, self.pipeline.config.pooling
        out = []
        with torch.inference_mode(), LayerCapture(model, [layer], saes=self.layers.saes) as cap:
            for s in range(0, x.shape[0], self.batch_size):
                cap.reset()
                model(x[s : s + self.batch_size].to(device))
                cap.check()
                out.append(pool_activations(cap.outputs[layer], pooling).float().cpu())
        return torch.cat(out)

    def image_activations(self, layer: str, images: torch.Tensor, transform: Callable | None) -> torch.Tensor:
        """Pooled activations ``[n, C]`` of ``layer`` on images ``[n, 3, h, w]`` in [0, 1] of any
        size (resized to the model's input size, then ``transform``)."""
        c, h, w = self.pipeline.data.input_shape
        x = _describe.resize_images(images, (h, w))
        if transform is not None:
            x = transform(x)
            if not isinstance(x, torch.Tensor) or tuple(x.shape) != (images.shape[0], c, h, w):
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"model_transform returned {got}; the model eats [{images.shape[0]}, {c}, {h}, {w}]")
        return self.activations(layer, x)

    # ------------------------------------------------------------------ control images
    def control_samples(self, control: Any) -> torch.Tensor:
        """Dataset indices ``[n]`` of the control images: ``control`` = n (the first n of a fixed
        seeded permutation of the dataset) or a list of dataset indices."""
        N = len(self.pipeline.data)
        if is_int(control):
            n = positive_int("control", control)
            if n < 2:
                raise ValueError(f"control must be at least 2 samples, got {control!r}")
            perm = torch.randperm(N, generator=torch.Generator().manual_seed(_CONTROL_PERMUTATION_SEED))
            return perm[: min(n, N)]
        if isinstance(control, torch.Tensor):
            control = control.tolist()
        if isinstance(control, (list, tuple, np.ndarray)) and len(control) >= 2 \
                and all(is_int(i) and 0 <= int(i) < N for i in control):
            return torch.tensor([int(i) for i in control], dtype=torch.long)
        raise ValueError(f"control must be a number of dataset samples (int >= 2) or a list of >= 2 dataset "
                         f"indices in [0, {N}), got {control!r:.120}")

    def control_activations(self, layer: str, samples: torch.Tensor) -> torch.Tensor:
        """Pooled activations ``[n, C]`` of ``layer`` on the control samples (stored)."""
        from semlens_widgets.store import tensor_digest

        digest = tensor_digest(samples)
        entry = self.keys.describe_control(f"{layer}/{digest[:12]}", digest)
        got = self.store.cached(
            entry.key, entry.fingerprint,
            lambda: {"samples": samples, "activations": self.activations(layer, self.pipeline.data.model_inputs(samples))},
            meta={"layer": layer, "n": int(samples.numel())},
        )
        return got["activations"]

    # ------------------------------------------------------------------ describe (LINE)
    def candidates(self, layer: str, k: int, concepts: Sequence[str] | None) -> list[str]:
        """The label candidates of component k: the vocabulary ranked by paper eq. 4's score."""
        concepts = self.semantics.vocabulary if concepts is None else concept_list(concepts)
        if not concepts:
            raise ValueError(
                "describe starts from SemanticLens's label candidates of the component: set a vocabulary with "
                "lens.set_vocabulary([...]) or pass concepts=[...] (or a proposer that needs none)"
            )
        scores = self.semantics.search_scores(list(concepts), layer)[:, k]  # [V]
        return [concepts[i] for i in torch.argsort(scores, descending=True, stable=True).tolist()]

    def describe(self, layer: str, k: Any, generator: Callable, proposer: Any = None, rounds: int = 5,
                 n_images: int = 16, *, seed: int = 0, control: Any = DEFAULT_CONTROL,
                 model_transform: Callable | None = None, concepts: Sequence[str] | None = None,
                 **loop: Any) -> Description:
        """See :meth:`semlens_widgets.lens.Lens.describe`."""
        layer = self.layers.check(layer)
        k = self.pipeline.check_component(layer, k)
        generator = check_generator(generator)
        rounds, n_images = positive_int("rounds", rounds), positive_int("n_images", n_images)
        seed = nonnegative_int("seed", seed)
        transform, _ = self.model_transform(model_transform)
        samples = self.control_samples(control)
        if proposer is None:
            proposer = _describe.OfflineProposer(self.candidates(layer, k, concepts))
        elif not callable(proposer):
            raise TypeError(f"proposer must be None or a callable history -> list[str], got {type(proposer).__name__}")
        elif hasattr(proposer, "with_candidates"):  # a proposer that starts from label candidates
            if concepts is not None or self.semantics.vocabulary or not getattr(proposer, "candidates", None):
                proposer = proposer.with_candidates(self.candidates(layer, k, concepts))
        neg = self.control_activations(layer, samples)[:, k]  # [n]
        kept: dict[str, torch.Tensor] = {}

        def drawn(concept: str, n: int, s: int) -> torch.Tensor:
            x = generator(concept, n, s)
            x = _faith.check_images(x, concept, n)
            kept[concept] = _describe.thumbnails(x[: THUMBS[0]], THUMBS[1])
            return x

        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = lambda it: tqdm(it, desc=f"describe {layer} #{k}", unit="round", leave=False)  # noqa: E731
        desc = _describe.describe_component(
            lambda x: self.image_activations(layer, x, transform)[:, k], drawn, proposer, neg,
            rounds=rounds, n_images=n_images, seed=seed, text_embed=self.semantics.encode, layer=layer,
            component=k, progress=bar, **loop,
        )
        desc.examples = {c: kept[c] for c in desc.candidates if c in kept}
        self._save_description(desc, generator, proposer, rounds, int(samples.numel()))
        return desc

    def _save_description(self, d: Description, generator: Callable, proposer: Any, rounds: int, n_control: int) -> None:
        entry = self.keys.description(d.layer, d.component)
        h = d.history
        tensors = {
            "round": torch.tensor(h["round"].to_numpy(dtype=np.int64)),
            "score": torch.tensor(h["score"].to_numpy(dtype=np.float64)),
            "auc": torch.tensor(h["auc"].to_numpy(dtype=np.float64)),
        }
        for i, c in enumerate(d.candidates):
            if c in d.examples:
                tensors[f"examples{i}"] = d.examples[c]
        meta = {
            "concepts": [str(c) for c in h["concept"]], "notes": [str(n) for n in h["note"]],
            "best": d.best, "auc": float(d.auc), "candidates": list(d.candidates), "polysemantic": bool(d.polysemantic),
            "senses": list(d.senses), "seed": int(d.seed), "n_images": int(d.n_images), "rounds": int(rounds),
            "generator": generator_id(generator), "proposer": callable_id(proposer), "n_control": n_control,
        }
        self.store.save(entry.key, tensors, entry.fingerprint, meta=meta)

    def stored_description(self, layer: str, k: Any) -> Description | None:
        """The last description of component k of ``layer`` made on this Lens (or None)."""
        layer = self.layers.check(layer)
        k = self.pipeline.check_component(layer, k)
        entry = self.keys.description(layer, k)
        got = self.store.load(entry.key, entry.fingerprint)
        if got is None:
            return None
        meta = self.store.meta(entry.key)["meta"]
        history = _describe.history_frame(
            {"round": int(r), "concept": c, "score": float(s), "auc": float(a), "note": n}
            for r, c, s, a, n in zip(got["round"].tolist(), meta["concepts"], got["score"].tolist(),
                                     got["auc"].tolist(), meta["notes"]))
        examples = {c: got[f"examples{i}"] for i, c in enumerate(meta["candidates"]) if f"examples{i}" in got}
        return Description(history=history, best=meta["best"], auc=float(meta["auc"]), candidates=list(meta["candidates"]),
                           polysemantic=bool(meta["polysemantic"]), senses=list(meta["senses"]), layer=layer,
                           component=k, seed=int(meta["seed"]), n_images=int(meta["n_images"]), examples=examples)

    # ------------------------------------------------------------------ faithfulness
    def labels(self, layer: str, labels: Any) -> list[str | None]:
        """The label of every component: ``labels`` (a list of C str/None, a dict component ->
        str, or a LabelResult), else the layer's current labels (``lens.label``, else the
        vocabulary's)."""
        from semlens_widgets.results import LabelResult

        C = self.pipeline.num_components(layer)
        if labels is None:
            cur = self.semantics.current_labels(layer)
            if cur is None:
                raise ValueError(
                    "faithfulness needs labels: pass labels=[...] (one str or None per component), label the layer "
                    "with lens.label(concepts, layer), or set a vocabulary with lens.set_vocabulary([...])"
                )
            return list(cur)
        if isinstance(labels, LabelResult):
            labels = labels.table["label"].tolist()
        if isinstance(labels, Mapping):
            bad = [c for c in labels if not is_int(c) or not 0 <= int(c) < C]
            if bad:
                raise ValueError(f"labels has components {bad[:5]} outside layer {layer!r}'s 0..{C - 1}")
            out: list[str | None] = [None] * C
            for c, lab in labels.items():
                out[int(c)] = lab
            labels = out
        if isinstance(labels, str) or not isinstance(labels, (list, tuple)) or len(labels) != C:
            raise ValueError(f"labels must be a list of {C} labels (str or None, one per component of {layer!r}), "
                             f"a dict component -> label or a LabelResult, got {labels!r:.120}")
        for i, lab in enumerate(labels):
            if lab is not None and (not isinstance(lab, str) or not lab.strip()):
                raise ValueError(f"labels[{i}] must be a non-empty str or None, got {lab!r}")
        return list(labels)

    def faithfulness(self, layer: str, generator: Callable, labels: Any = None, n_images: int = 32, *,
                     seed: int = 0, control: Any = DEFAULT_CONTROL,
                     model_transform: Callable | None = None) -> pd.DataFrame:
        """See :meth:`semlens_widgets.lens.Lens.faithfulness`."""
        layer = self.layers.check(layer)
        generator = check_generator(generator)
        n_images, seed = positive_int("n_images", n_images), nonnegative_int("seed", seed)
        labels = self.labels(layer, labels)
        transform, transform_id = self.model_transform(model_transform)
        samples = self.control_samples(control)
        from semlens_widgets.store import tensor_digest

        entry = self.keys.faithfulness(layer, labels, generator_id(generator), n_images, seed,
                                       tensor_digest(samples), transform_id)
        got = self.store.load(entry.key, entry.fingerprint)
        if got is None:
            neg = self.control_activations(layer, samples)  # [n, C]
            distinct = sorted({lab for lab in labels if lab is not None})

            def compute(a: int, b: int) -> dict[str, torch.Tensor]:
                chunk = set(distinct[a:b])
                t = _faith.layer_faithfulness(
                    lambda x: self.image_activations(layer, x, transform), generator,
                    [lab if lab in chunk else None for lab in labels], neg, n_images=n_images, seed=seed,
                )
                notes = json.dumps(t["note"].tolist()).encode()
                return {"auc": torch.tensor(t["auc"].to_numpy()), "mad": torch.tensor(t["mad"].to_numpy()),
                        "notes": torch.tensor(list(notes), dtype=torch.uint8)}

            parts = self.store.chunked(entry.key, entry.fingerprint, len(distinct), _LABELS_PER_CHUNK, compute,
                                       desc=f"faithfulness {layer}", progress=self.progress) if distinct \
                else [compute(0, 0)]
            got = _faith.merge_faithfulness_parts(parts)
            notes = got.pop("notes_list")
            got["notes"] = torch.tensor(list(json.dumps(notes).encode()), dtype=torch.uint8)
            self.store.save(entry.key, got, entry.fingerprint,
                            meta={"layer": layer, "lens": self.keys.lens, "labels": labels, "n_images": n_images, "seed": seed,
                                  "generator": generator_id(generator), "n_control": int(samples.numel())})
            self.store.drop_chunks(entry.key)
        return self._table(layer, labels, got)

    def _table(self, layer: str, labels: list[str | None], got: dict[str, torch.Tensor]) -> pd.DataFrame:
        notes = json.loads(bytes(got["notes"].tolist()).decode())
        table = pd.DataFrame({
            "layer": layer,
            "component": np.arange(len(labels)),
            "label": pd.Series(labels, dtype=object),
            "auc": got["auc"].numpy().astype(np.float64),
            "mad": got["mad"].numpy().astype(np.float64),
            "note": pd.Series(notes, dtype=object),
        })
        table.attrs["summary"] = _faith.faithfulness_summary(table)
        return table

    def stored_faithfulness(self, layer: str) -> pd.DataFrame | None:
        """The last faithfulness table of ``layer`` computed on this Lens (or None): an entry
        made by another model, dataset or SAE (another Lens fingerprint) is not returned."""
        layer = self.layers.check(layer)
        key = self.keys.faithfulness(layer).key
        rec = self.store.meta(key)
        meta = (rec or {}).get("meta") or {}
        if rec is None or meta.get("lens") != self.keys.lens:
            return None
        got = self.store.load(key, rec["fingerprint"])
        return None if got is None else self._table(layer, meta["labels"], got)
