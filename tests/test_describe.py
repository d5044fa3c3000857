"""The LINE loop kernel, its proposers, the generator adapters and the demo world generator."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from semlens_widgets.demo import world as W
from semlens_widgets.kernels.describe import (
    HISTORY_COLUMNS,
    LLMProposer,
    OfflineProposer,
    content_words,
    describe_component,
    distinct_senses,
    from_diffusers,
    normalize_concept,
)
from semlens_widgets.results import Description

from _demo_lens import block4_activations, demo_lens

# --------------------------------------------------------------------------- a toy world
# Image pixel (0, 0, j) carries word j of WORDS: 1 when the concept names it, else present at
# random with probability 0.3 (what a text-to-image model leaves open, it draws at random).
WORDS = ["star", "circle", "red", "blue", "striped", "sand", "watermark"]
CATS = {"star": "shape", "circle": "shape", "red": "colour", "blue": "colour", "striped": "texture",
        "sand": "background", "watermark": "artefact"}
ROLES = {"shape": "head", "colour": "modifier", "texture": "modifier", "background": "scene", "artefact": "attachment"}


def toy_generator(concept: str, n: int, seed: int) -> torch.Tensor:
    words = content_words(concept)
    unknown = words - set(WORDS)
    if unknown:
        raise ValueError(f"cannot draw {sorted(unknown)}")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 2, len(WORDS), generator=g) * 0.1
    present = torch.rand(n, len(WORDS), generator=g) < 0.3
    for j, w in enumerate(WORDS):
        if w in words:
            present[:, j] = True
    for group in (("star", "circle"), ("red", "blue")):  # one shape, one colour per image
        a, b = WORDS.index(group[0]), WORDS.index(group[1])
        both = present[:, a] & present[:, b]
        present[both, a if group[0] not in words else b] = False
    x[:, 0, 0, :] = present.float() * 0.9 + x[:, 0, 0, :]
    return x


def word(x: torch.Tensor, w: str) -> torch.Tensor:
    return x[:, 0, 0, WORDS.index(w)]


def red_star_unit(x):  # a conjunction the single-word vocabulary lacks
    return ((word(x, "red") > 0.5) & (word(x, "star") > 0.5)).float() + 0.01 * x[:, 1, 1, 0]


def _random_scenes(n, seed):
    """Control images: every word present with probability 0.1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 2, len(WORDS), generator=g) * 0.1
    x[:, 0, 0, :] += (torch.rand(n, len(WORDS), generator=g) < 0.1).float() * 0.9
    return x.clamp(0, 1)


def proposer(candidates):
    return OfflineProposer(candidates, CATS, ROLES, n_initial=2, n_explore=1)


# --------------------------------------------------------------------------- the loop


def test_loop_improves_over_its_first_proposal_on_a_conjunction():
    ctrl = _random_scenes(64, 1)
    d = describe_component(red_star_unit, toy_generator, proposer(["star", "circle", "red", "blue", "sand"]),
                           ctrl, rounds=4, n_images=16, seed=0)
    assert isinstance(d, Description)
    h = d.history
    assert list(h.columns) == list(HISTORY_COLUMNS)
    assert h.concept[0] == "star" and h["round"][0] == 0
    first_auc = h.auc[0]
    assert first_auc < 0.85
    assert d.best == "red star"
    assert d.auc > first_auc + 0.1 and d.auc > 0.95
    assert d.best not in WORDS  # a compound the single-word vocabulary lacks
    assert d.candidates[0] == d.best and len(d.candidates) <= 5
    assert not d.polysemantic
    # deterministic per seed
    d2 = describe_component(red_star_unit, toy_generator, proposer(["star", "circle", "red", "blue", "sand"]),
                            ctrl, rounds=4, n_images=16, seed=0)
    pd.testing.assert_frame_equal(d.history, d2.history)


def test_loop_records_unrenderable_proposals_and_goes_on():
    ctrl = _random_scenes(32, 2)
    prop = lambda h: ["dog", "star"] if len(h) == 0 else ["cat with a hat"]
    d = describe_component(lambda x: word(x, "star"), toy_generator, prop, ctrl, rounds=3, n_images=8)
    h = d.history.set_index("concept")
    assert np.isnan(h.loc["dog", "auc"]) and "unrenderable" in h.loc["dog", "note"] and "dog" in h.loc["dog", "note"]
    assert np.isnan(h.loc["cat with a hat", "auc"])
    assert d.best == "star" and d.auc > 0.9
    with pytest.raises(ValueError, match="no proposal could be scored.*dog"):
        describe_component(lambda x: word(x, "star"), toy_generator, lambda h: ["dog"], ctrl, rounds=2, n_images=4)


def test_loop_stops_when_nothing_new_and_skips_repeats():
    calls = []

    def prop(h):
        calls.append(len(h))
        return ["star", "A star.", "circle"]  # "A star." is "star" again

    d = describe_component(lambda x: word(x, "star"), toy_generator, prop, _random_scenes(16, 3), rounds=5, n_images=4)
    assert d.history.concept.tolist() == ["star", "circle"]
    assert calls == [0, 2]  # second round proposes nothing new: stop


def test_loop_accepts_control_activations_and_checks_shapes():
    x = _random_scenes(16, 4)
    a = describe_component(lambda x: word(x, "star"), toy_generator, lambda h: ["star"], word(x, "star"), rounds=1, n_images=8)
    b = describe_component(lambda x: word(x, "star"), toy_generator, lambda h: ["star"], x, rounds=1, n_images=8)
    assert a.auc == b.auc
    with pytest.raises(ValueError, match="one pooled value per image"):
        describe_component(lambda x: x[:, 0, 0, :], toy_generator, lambda h: ["star"], x, rounds=1)
    with pytest.raises(ValueError, match="control"):
        describe_component(lambda x: word(x, "star"), toy_generator, lambda h: ["star"], torch.zeros(3, 3))
    with pytest.raises(ValueError, match="rounds"):
        describe_component(lambda x: word(x, "star"), toy_generator, lambda h: ["star"], x, rounds=0)
    with pytest.raises(TypeError, match="list of str"):
        describe_component(lambda x: word(x, "star"), toy_generator, lambda h: "star", x, rounds=1)


def test_parsimony_prefers_the_shorter_concept_within_the_margin():
    h = {"star": 0.95, "red star": 0.96, "red striped star": 0.99}

    def gen(c, n, s):
        return torch.full((n, 3, 2, 2), h[c] - 0.5)

    ctrl = torch.rand(40, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 0.4
    act = lambda x: x[:, 0, 0, 0] + 0.0 * x[:, 0, 0, 1]
    prop = lambda hist: list(h) if len(hist) == 0 else []
    d = describe_component(act, gen, prop, ctrl, rounds=1, n_images=4, parsimony=0.0)
    assert d.best == "star" or d.auc == max(d.history.auc)  # all three separate perfectly: AUC 1
    d = describe_component(act, gen, prop, ctrl, rounds=1, n_images=4, parsimony=0.02)
    assert d.best == "star"


def test_polysemantic_when_two_distinct_concepts_score_high():
    unit = lambda x: torch.maximum(word(x, "star"), word(x, "watermark"))
    d = describe_component(unit, toy_generator, proposer(["star", "watermark", "red", "circle"]),
                           _random_scenes(64, 5), rounds=2, n_images=16, high_auc=0.85)
    assert d.polysemantic
    assert {"star", "watermark"} <= {w for s in d.senses for w in content_words(s)}
    mono = describe_component(lambda x: word(x, "star"), toy_generator, proposer(["star", "watermark", "red"]),
                              _random_scenes(64, 5), rounds=2, n_images=16, high_auc=0.85)
    assert not mono.polysemantic and len(mono.senses) == 1


def test_distinct_senses_definition():
    # shared content word: one sense; disjoint words: two; a text encoder can merge them again
    assert distinct_senses(["red star", "red"], [0.95, 0.93], [2, 1]) == ["red"]
    assert distinct_senses(["star with a watermark", "star", "watermark"], [0.99, 0.95, 0.93], [3, 2, 1]) == ["star", "watermark"]
    assert distinct_senses(["star", "watermark"], [0.95, 0.93], [2, 1]) == ["star", "watermark"]
    assert distinct_senses(["star", "watermark"], [0.95, 0.7], [2, 1]) == ["star"]
    same = lambda texts: torch.ones(len(texts), 4)
    assert distinct_senses(["star", "watermark"], [0.95, 0.93], [2, 1], text_embed=same) == ["star"]
    assert content_words("A striped star on the sand, with watermarks") == {"striped", "star", "sand", "watermark"}
    assert normalize_concept("  The Red  Star. ") == "red star"


# --------------------------------------------------------------------------- offline proposer


def test_offline_proposer_combines_and_specialises():
    p = OfflineProposer(["star", "red", "watermark", "sand", "blue", "red tint", "circle"],
                        W.VOCABULARY, W.CATEGORY_ROLES, scene_phrases={"sand": "on sand"}, n_initial=4, n_explore=2)
    first = p(pd.DataFrame(columns=list(HISTORY_COLUMNS)))
    assert first == ["star", "red", "watermark", "sand"]
    h = pd.DataFrame({"round": 0, "concept": first, "score": [3.0, 2.0, 1.0, 0.5], "auc": [0.8, 0.75, 0.7, 0.6], "note": ""})
    nxt = p(h)
    assert nxt[:3] == ["red star", "star with a watermark", "star on sand"]
    assert "blue" in nxt and "red tint" in nxt  # exploration of untried candidates
    assert not any(normalize_concept(c) in {"star", "red"} for c in nxt)
    assert "red blue star" not in nxt and "red with a red tint" not in nxt  # incompatible / same word twice
    for c in nxt:
        W.concept_spec(c)  # every proposal is drawable by the demo world
    # parse back a phrase of known concepts; unknown words -> None
    assert p.text(p.parse("a red star on sand with a watermark")) == "red star on sand with a watermark"
    assert p.parse("dog with a star") is None


def test_offline_proposer_without_categories_attaches_second_heads():
    p = OfflineProposer(["dog", "ball", "grass"], n_initial=3)
    h = pd.DataFrame({"round": 0, "concept": ["dog", "ball", "grass"], "score": [2.0, 1.0, 0.0], "auc": [0.9, 0.8, 0.5], "note": ""})
    assert p(h)[0] == "dog with a ball"
    template = OfflineProposer([], n_initial=3)  # a template: lens.describe gives it the candidates
    with pytest.raises(ValueError, match="no candidates.*with_candidates"):
        template(pd.DataFrame())
    assert template.with_candidates(["dog", "ball", "grass"])(h)[0] == "dog with a ball"
    with pytest.raises(ValueError, match="candidates must be a list of non-empty str"):
        OfflineProposer(["dog", " "])
    with pytest.raises(ValueError, match="unknown role"):
        OfflineProposer(["a"], roles={"a": "verb"})


# --------------------------------------------------------------------------- LLM proposer


def test_llm_proposer_prompt_and_parsing():
    prompts = []

    def llm(prompt):
        prompts.append(prompt)
        return "Here are my ideas:\n1. Red star.\n2) \"star with a watermark\"\n- red star\n* \n(4) a very long description " + "word " * 20 + "\n```\nblue circle\n```"

    p = LLMProposer(llm, n=5, candidates=["star", "red"])
    got = p(pd.DataFrame(columns=list(HISTORY_COLUMNS)))
    assert got == ["Red star", "star with a watermark", "blue circle"]
    assert "star, red" in prompts[0] and "one description per line" in prompts[0]
    h = pd.DataFrame({"round": [0, 0], "concept": ["red star", "dog"], "score": [2.5, np.nan], "auc": [0.91, np.nan],
                      "note": ["", "unrenderable: unknown word 'dog'"]})
    got = p(h)
    assert "- red star: AUC 0.91, activation +2.50 control std" in prompts[1]
    assert "- dog: could not be drawn (unrenderable: unknown word 'dog')" in prompts[1]
    assert normalize_concept("red star") not in {normalize_concept(g) for g in got}  # tried before
    assert got == ["star with a watermark", "blue circle"]


def test_llm_proposer_json_commas_and_malformed_output():
    assert LLMProposer(lambda p: '["red star", "sand", 3]')(None) == ["red star", "sand"]
    assert LLMProposer(lambda p: "red star, blue circle, sand")(None) == ["red star", "blue circle", "sand"]
    answers = iter(["", "...\n???", "star"])
    p = LLMProposer(lambda prompt: next(answers), retries=1)
    assert p(None) == []  # two unreadable answers: nothing (the loop then stops)
    seen = []
    p = LLMProposer(lambda prompt: seen.append(prompt) or ("" if len(seen) == 1 else "star"), retries=1)
    assert p(None) == ["star"] and "could not be read" in seen[1]
    with pytest.raises(TypeError, match="must return a str"):
        LLMProposer(lambda p: None)(None)
    with pytest.raises(TypeError, match="callable"):
        LLMProposer("gpt")


def test_llm_proposer_drives_the_loop():
    def llm(prompt):
        return "red star\nstar" if "tried so far" not in prompt else "red star with a watermark\nblue star"

    d = describe_component(red_star_unit, toy_generator, LLMProposer(llm), _random_scenes(64, 6), rounds=3, n_images=16)
    assert d.best == "red star"
    assert set(d.history.concept) == {"red star", "star", "red star with a watermark", "blue star"}


# --------------------------------------------------------------------------- diffusers adapter


class FakeOutput:
    def __init__(self, images):
        self.images = images


class FakePipe:
    """Stands in for a diffusers pipeline: images from the prompt and the torch.Generator."""

    def __init__(self, output="pil", size=8):
        self.calls, self.output, self.size = [], output, size

    def __call__(self, prompt, num_images_per_prompt=1, generator=None, **kw):
        self.calls.append((prompt, num_images_per_prompt, kw))
        base = torch.rand(num_images_per_prompt, self.size, self.size, 3, generator=generator)
        base[..., 0] = len(prompt) / 100.0
        if self.output == "pil":
            return FakeOutput([Image.fromarray((b.numpy() * 255).astype(np.uint8)) for b in base])
        if self.output == "np":
            return FakeOutput(base.numpy())
        if self.output == "tuple":
            return (base.permute(0, 3, 1, 2), None)
        raise AssertionError(self.output)


@pytest.mark.parametrize("output", ["pil", "np", "tuple"])
def test_from_diffusers_converts_and_is_deterministic(output):
    pipe = FakePipe(output)
    gen = from_diffusers(pipe, prompt_template="a photo of {}", batch_size=2, num_inference_steps=3)
    x = gen("red star", 5, seed=7)
    assert x.shape == (5, 3, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert [c[1] for c in pipe.calls] == [2, 2, 1]
    assert pipe.calls[0][0] == "a photo of red star" and pipe.calls[0][2] == {"num_inference_steps": 3}
    assert torch.allclose(x, gen("red star", 5, seed=7))
    assert not torch.allclose(x, gen("red star", 5, seed=8))
    tol = 1 / 255 + 1e-6 if output == "pil" else 1e-6
    assert abs(float(x[0, 0, 0, 0]) - len("a photo of red star") / 100.0) <= tol


def test_from_diffusers_resize_and_errors():
    gen = from_diffusers(FakePipe("np"), size=4, negative_prompt="blurry")
    assert gen("star", 3, 0).shape == (3, 3, 4, 4)
    with pytest.raises(ValueError, match="prompt_template"):
        from_diffusers(FakePipe(), prompt_template="no slot")
    with pytest.raises(TypeError, match="callable"):
        from_diffusers("stable-diffusion")
    bad = from_diffusers(lambda prompt, num_images_per_prompt, generator: FakeOutput(np.zeros((num_images_per_prompt, 4, 4))))
    with pytest.raises(ValueError, match="shape"):
        bad("star", 2, 0)


# --------------------------------------------------------------------------- the demo world generator


def test_demo_generator_renders_concepts_deterministically():
    x = W.generator("red star", 6, seed=3)
    assert x.shape == (6, 3, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, W.generator("red star", 6, seed=3))
    assert torch.equal(x[:2], W.generator("red star", 2, seed=3))  # prefix-stable
    assert not torch.equal(x, W.generator("red star", 6, seed=4))
    spec = W.concept_spec("a red striped star on sand, with a watermark")
    assert spec.objects[0] == W.ObjectSpec("star", "red", "striped", None)
    assert spec.background == "sand" and spec.artefacts == ("watermark",)
    assert W.concept_spec("striped").objects[0].shape is None
    assert W.concept_spec("sand").background == "sand"
    assert W.concept_spec("red tint").artefacts == ("red tint",) and W.concept_spec("red tint").objects[0].colour is None


def test_demo_generator_draws_what_is_asked():
    from semlens_widgets.demo.world import _fill_spec, scene_from_spec

    for concept, check in [
        ("red star", lambda sc: sc.objects[0].shape == "star" and sc.objects[0].colour == "red"),
        ("sand", lambda sc: sc.background == "sand"),
        ("star with a watermark", lambda sc: sc.objects[0].shape == "star" and sc.artefact_kinds == ("watermark",)),
    ]:
        spec = W.concept_spec(concept)
        for i in range(5):
            rng = np.random.default_rng([0, i])
            assert check(scene_from_spec(_fill_spec(spec, rng), rng))
    # red pixels appear in every "red" image
    x = W.generator("red", 8, 0)
    red = (x[:, 0] > 0.7) & (x[:, 1] < 0.2) & (x[:, 2] < 0.2)
    assert bool((red.flatten(1).sum(1) > 20).all())


def test_demo_generator_errors_are_clear():
    for bad, msg in [("dog", "unknown word 'dog'"), ("red blue star", "two colours"), ("star on sand on grass", "two backgrounds"),
                     ("a star and a ring and a cross and a circle", "1 to 3 objects"), ("", "non-empty")]:
        with pytest.raises(W.UnrenderableConcept, match=msg):
            W.generator(bad, 2, 0)
    assert issubclass(W.UnrenderableConcept, ValueError)
    with pytest.raises(ValueError, match="n must be"):
        W.generator("star", 0, 0)
    rng = np.random.default_rng(0)
    for _ in range(50):  # every caption the world writes reads back the same
        c = W.caption(W.sample_scene(rng))
        assert W.concept_spec(c) == W.parse_caption(c)


def test_demo_loop_finds_a_colour_unit_the_first_proposal_misses():
    """A constructed unit on the real demo renderer: the share of pure-red pixels. SemanticLens's
    (here: given) candidates start with a wrong shape; the loop must end on a red concept."""

    def red_unit(x):
        red = (x[:, 0] > 0.7) & (x[:, 1] < 0.2) & (x[:, 2] < 0.2)
        return red.float().mean((1, 2))

    scenes = [W.sample_scene(np.random.default_rng(s)) for s in range(48)]
    ctrl = torch.stack([W.render_scene(s).image for s in scenes])
    prop = OfflineProposer(["star", "circle", "sand", "red", "striped"], W.VOCABULARY, W.CATEGORY_ROLES, n_initial=2, n_explore=2)
    d = describe_component(red_unit, W.generator, prop, ctrl, rounds=4, n_images=12)
    first_auc = d.history.auc[0]
    assert d.history.concept[0] == "star"
    assert "red" in content_words(d.best)
    assert d.auc >= first_auc + 0.2


def test_world_generator_is_the_renderer():
    from semlens_widgets.demo import DemoWorld

    assert DemoWorld.generator.fget(None) is W.generator  # world.generator on slw.demo.load()


# --------------------------------------------------------------------------- lens.describe (the demo world)


@pytest.fixture(scope="module")
def demo():
    """The demo world at 10 images per class, and a run Lens on block4 (activation crops)."""
    world, lens = demo_lens()
    lens.set_vocabulary(world.concepts())
    return world, lens


def test_lens_describe_on_the_demo_world(demo):
    from sklearn.metrics import roc_auc_score

    world, lens = demo
    scores = lens.search_scores(world.concepts(), "block4")  # [V, C]
    k = int(scores.max(0).values.argmax())
    d = lens.describe("block4", k, world.generator, proposer=world.proposer, rounds=2, n_images=8, control=40)
    assert d.layer == "block4" and d.component == k and set(d.history["round"]) <= {0, 1}
    top = world.concepts()[int(scores[:, k].argmax())]
    assert d.history.concept[0] == top  # the loop starts from SemanticLens's best label candidate
    assert d.auc >= d.history.auc.max() - 0.02 and d.candidates[0] == d.best
    # the AUCs are those of the component's activation on the images vs the control samples
    ctrl = lens.describer.control_samples(40)
    neg = block4_activations(world.model, lens.model_inputs(ctrl))[:, k]
    pos = block4_activations(world.model, world.generator(d.best, 8, 0))[:, k]
    want = roc_auc_score(np.r_[np.ones(8), np.zeros(len(neg))], np.r_[pos.numpy(), neg.numpy()])
    assert d.history.auc[d.history.concept == d.best].iloc[0] == pytest.approx(want)
    assert d.examples[d.best].shape == (4, 3, 64, 64) and d.examples[d.best].dtype == torch.uint8
    # stored for the views, read back as it was
    back = lens.stored_description("block4", k)
    pd.testing.assert_frame_equal(back.history, d.history)
    assert (back.best, back.auc, back.candidates, back.polysemantic) == (d.best, d.auc, d.candidates, d.polysemantic)
    assert torch.equal(back.examples[d.best], d.examples[d.best])
    assert lens.stored_description("block4", (k + 1) % 128) is None


def test_lens_describe_default_proposer_and_llm_proposer(demo):
    world, lens = demo
    d = lens.describe("block4", 5, world.generator, rounds=1, n_images=4, control=20)
    assert len(d.history) == 6  # OfflineProposer over the vocabulary: the 6 best candidates
    prompts = []

    def llm(prompt):
        prompts.append(prompt)
        return "red star\nblue circle"

    d = lens.describe("block4", 5, world.generator, proposer=LLMProposer(llm, n=2), rounds=1, n_images=4, control=20)
    assert d.history.concept.tolist() == ["red star", "blue circle"]
    assert "Candidate concepts" in prompts[0]  # the lens gave it the component's label candidates
    lens.set_vocabulary(None)
    try:
        with pytest.raises(ValueError, match="set a vocabulary with lens.set_vocabulary"):
            lens.describe("block4", 5, world.generator, rounds=1)
    finally:
        lens.set_vocabulary(world.concepts())


def test_generated_images_are_resized_and_transformed(demo):
    from semlens_widgets.kernels.describe import resize_images

    world, lens = demo
    small = resize_images(world.generator("red star", 4, 0), (32, 32))
    acts = lens.describer.image_activations("block4", small, None)
    torch.testing.assert_close(acts, block4_activations(world.model, resize_images(small, (64, 64))))
    d = lens.describe("block4", 3, lambda c, n, s: resize_images(world.generator(c, n, s), (96, 96)),
                      proposer=lambda h: [] if len(h) else ["red star"], rounds=2, n_images=4, control=20)
    assert d.best == "red star"
    twice = lens.describe("block4", 3, world.generator, proposer=lambda h: [] if len(h) else ["red star"],
                          n_images=4, control=20, model_transform=lambda x: x * 2)
    assert twice.history.auc[0] != d.history.auc[0]  # the transform is applied to generated images


def test_model_transform_defaults_follow_the_display_transform(tmp_path):
    import semlens_widgets as slw
    from semlens_widgets.lens import imagenet_normalize, imagenet_unnormalize

    from _models import TinyCNN, tiny_clip_fm

    fm = tiny_clip_fm(tmp_path)
    data = [(torch.rand(3, 16, 16), 0) for _ in range(4)]
    lens = slw.Lens(TinyCNN(), data, fm, ["features.relu2"], m=2, store=None, crop="activation",
                    display_transform=imagenet_unnormalize, progress=False)
    assert lens.describer.model_transform(None)[0] is imagenet_normalize
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(imagenet_unnormalize(imagenet_normalize(x)), x)
    other = slw.Lens(TinyCNN(), data, fm, ["features.relu2"], m=2, store=None, crop="activation",
                     display_transform=lambda v: v.clamp(0, 1), progress=False)
    with pytest.raises(ValueError, match="pass model_transform="):
        other.describer.model_transform(None)
    with pytest.raises(TypeError, match="model_transform must be callable"):
        other.describer.model_transform(3)


def test_bad_generators_are_named_before_long_work(demo):
    world, lens = demo
    before = lens.store.keys("describe/")
    with pytest.raises(TypeError, match=r"generator must be a callable \(concept: str, n: int, seed: int\)"):
        lens.describe("block4", 0, "stable-diffusion")
    with pytest.raises(TypeError, match="cannot be called so"):
        lens.describe("block4", 0, lambda concept: None)
    with pytest.raises(TypeError, match="cannot be called so"):
        lens.faithfulness("block4", lambda concept, n: None)
    assert lens.store.keys("describe/") == before  # refused before any work
    prop = lambda h: [] if len(h) else ["red star"]  # noqa: E731
    for gen, err, msg in [
        (lambda c, n, s: (world.generator(c, n, s) * 255).to(torch.uint8), TypeError, r"dtype torch.uint8.*divide by 255"),
        (lambda c, n, s: world.generator(c, n, s).permute(0, 2, 3, 1), ValueError, r"shape \(4, 64, 64, 3\).*accepted: \[4, 3, H, W\]"),
        (lambda c, n, s: world.generator(c, n, s) * 255, ValueError, r"values in \[0, 255\].*not 0..255"),
        (lambda c, n, s: world.generator(c, n, s).numpy(), TypeError, "returned a ndarray"),
        (lambda c, n, s: world.generator(c, 1, s), ValueError, r"shape \(1, 3, 64, 64\)"),
    ]:
        with pytest.raises(err, match=msg):
            lens.describe("block4", 0, gen, proposer=prop, n_images=4, control=20)
    with pytest.raises(ValueError, match="control must be"):
        lens.describe("block4", 0, world.generator, proposer=prop, control=[1])
    with pytest.raises(IndexError, match="out of range"):
        lens.describe("block4", 128, world.generator)
