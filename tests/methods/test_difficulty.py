"""difficulty on tiny random LLaVAs: the tier follows the image and the question, samples of different tiers in one
batch equal each alone, remove() restores the model, report() adds up, and refusals (the tokenizer included)."""

from __future__ import annotations

import pytest
import torch

import tokenfunnel
from tiny import GRID, IMAGE_PX, IMAGE_TOKEN, LONG, PATCHES, SHORT, Said, batch, build, generate, logits, sample_ids
from tokenfunnel.methods.difficulty import IMAGENET_MEAN, IMAGENET_STD
from tokenfunnel.runtime.patch import MARK

LAYERS = 6
WORDS = {9: "how many", 10: "why", 11: "not", 12: "circles"}


class Words:
    """A tokenizer stand-in: ids 9..12 are the words above, any other id is the word "shape"."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(WORDS.get(i, "shape") for i in ids)


def normalised(image: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (image - mean) / std


def flat() -> torch.Tensor:
    return normalised(torch.full((3, IMAGE_PX, IMAGE_PX), 0.5))


def busy(seed: int = 0) -> torch.Tensor:
    """Many small coloured squares on white: edges, colour variance and more than ten objects."""
    g = torch.Generator().manual_seed(seed)
    img = torch.ones(3, IMAGE_PX, IMAGE_PX)
    for r in range(5):
        for c in range(5):
            img[:, 4 + 22 * r : 16 + 22 * r, 4 + 22 * c : 16 + 22 * c] = torch.rand(3, 1, 1, generator=g) * 0.5
    return normalised(img)


def sample(question: list[int], image: torch.Tensor) -> dict:
    inputs = batch([[5, 6] + [IMAGE_TOKEN] * PATCHES + question])
    inputs["pixel_values"] = image[None]
    return inputs


EASY = ([12, 13], flat())  # "circles shape" about a flat grey image
HARD = ([9, 10, 11, 12] + [13] * 16, busy())  # a long counting, reasoning, negated question about a busy image


def together(samples: list[dict]) -> dict:
    width = max(s["input_ids"].shape[1] for s in samples)
    pad = [width - s["input_ids"].shape[1] for s in samples]
    return {
        "input_ids": torch.cat(
            [torch.nn.functional.pad(s["input_ids"], (p, 0)) for s, p in zip(samples, pad, strict=True)]
        ),
        "attention_mask": torch.cat(
            [torch.nn.functional.pad(s["attention_mask"], (p, 0)) for s, p in zip(samples, pad, strict=True)]
        ),
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
    }


def test_the_tier_follows_the_image_and_the_question():
    model = build()
    with tokenfunnel.compress(model, "difficulty", tokenizer=Words()) as handle:
        logits(model, sample(*EASY))
        easy = handle.report()
        logits(model, sample(*HARD))
        hard = handle.report()
    assert easy["stage"]["tier"] == ["easy"] and easy["stage"]["question_text"] == ["circles shape"]
    # edges and colour of a drawing stay low, so even this pair falls short of "very hard" (>= 0.85)
    assert hard["stage"]["tier"] == ["hard"] and hard["stage"]["question"] == [1.0]
    assert easy["stage"]["budget"] == [round(64 * PATCHES / 576)] and hard["stage"]["budget"] == [
        round(256 * PATCHES / 576)
    ]
    for report in (easy, hard):  # the budget is the mean count over the decoder layers
        assert report["keep"] == pytest.approx(report["stage"]["budget"][0] / PATCHES, abs=1 / PATCHES)
        assert report["keep"] == pytest.approx(sum(report["llm_visual_tokens"]) / (LAYERS * PATCHES), abs=1e-6)
        counts = report["llm_visual_tokens"]
        assert counts == sorted(counts, reverse=True) and counts[0] <= 1.5 * report["stage"]["budget"][0]


@pytest.mark.parametrize("schedule", ["held", "cascade"])
def test_held_takes_the_tokens_to_the_budget_at_every_layer_and_cascade_empties_the_last(schedule):
    model = build()
    with tokenfunnel.compress(model, "difficulty", tokenizer=Words(), schedule=schedule) as handle:
        logits(model, sample(*HARD))
        report = handle.report()
    budget = report["stage"]["budget"][0]
    counts = report["llm_visual_tokens"]
    if schedule == "held":  # LUVC's drop as it ships: exactly the budget, the last layer included
        assert counts == [budget] * LAYERS and report["keep"] == pytest.approx(budget / PATCHES, abs=1e-6)
        assert report["stage"]["steps"][0][-1] == "spu"
    else:
        assert counts[-1] == 0 and counts[0] > budget and "spu" not in report["stage"]["steps"][0]


def test_reduction_spu_is_luvcs_drop_at_the_tier_budget_scored_by_the_encoder():
    from tokenfunnel.methods.luvc import ENCODER_CONTEXTUAL
    from tokenfunnel.ops.spectrum import highfreq_score

    model = build()
    inputs = sample(*HARD)
    with tokenfunnel.compress(model, "difficulty", tokenizer=Words(), reduction="spu") as handle:
        logits(model, inputs)
        report = handle.report()
    budget = report["stage"]["budget"][0]
    assert report["llm_visual_tokens"] == [budget] * LAYERS and report["stage"]["steps"] == [["spu"]]
    with torch.no_grad():
        out = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
    feeding = out.hidden_states[model.config.vision_feature_layer][:, 1:]  # what the projector reads
    dominant = budget - round(ENCODER_CONTEXTUAL * budget)
    top = set(highfreq_score(feeding.float(), 0.5)[0].topk(dominant).indices.tolist())
    assert top <= set(report["kept"][0][0])


def test_focus_keeps_the_named_quarter_first():
    model = build()
    quarter = {r * GRID[1] + c for r in range(GRID[0] // 2) for c in range(GRID[1] // 2)}
    inputs = sample(*HARD)
    said = Said("In the top-left picture, how many circles are not there and why?")
    reports = {}
    for focus in (True, False):
        with tokenfunnel.compress(model, "difficulty", tokenizer=said, focus=focus) as handle:
            logits(model, inputs)
            reports[focus] = handle.report()
    budget = reports[True]["stage"]["budget"][0]
    assert budget > len(quarter) and reports[True]["stage"]["focus"] == ["top-left"]
    assert quarter < set(reports[True]["kept"][0][0]) and reports[True]["visual_tokens"] == budget
    assert not quarter <= set(reports[False]["kept"][0][0]) and reports[False]["stage"]["focus"] == ["none"]


def test_a_batch_of_different_tiers_equals_each_sample_alone():
    model = build()
    alone = [sample(*EASY), sample(*HARD)]
    both = together(alone)
    with tokenfunnel.compress(model, "difficulty", tokenizer=Words()) as handle:
        out, gen = logits(model, both), generate(model, both)
        report = handle.report()
        assert report["stage"]["tier"] == ["easy", "hard"]
        for row, one in enumerate(alone):
            assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
            assert torch.equal(gen[row], generate(model, one)[0])
            assert handle.report()["llm_visual_tokens"] == report["llm_visual_tokens"][row]
    assert report["keep"] == pytest.approx(sum(report["keep_per_sample"]) / 2, abs=1e-6)


def test_random_prompts_batch_like_single_runs_and_remove_restores_the_model():
    model = build()
    samples = [sample_ids(SHORT), sample_ids(LONG, seed=1)]
    both = batch(samples)
    ref = logits(model, both)
    with tokenfunnel.compress(model, "difficulty", tokenizer=Words(), schedule="none") as handle:
        out = logits(model, both)
        report = handle.report()
        for row, s in enumerate(samples):
            one = batch([s])
            one["pixel_values"] = both["pixel_values"][row : row + 1]
            assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
    counts = report["llm_visual_tokens"]
    rows = counts if isinstance(counts[0], list) else [counts] * 2
    assert all(len(set(r)) == 1 for r in rows)  # no cascade: the reduced set at every layer
    assert torch.equal(logits(model, both), ref) and not hasattr(model, MARK)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(), "pass the processor's tokenizer"),
        (dict(tokenizer=Words(), budgets=(64, 144, 144, 400)), "tier budgets must increase"),
        (dict(tokenizer=Words(), budgets=(64, 144, 256, 600)), "larger than the 576-token input"),
        (dict(tokenizer=Words(), budgets=(64, 144)), "make 4 tiers"),
        (dict(tokenizer=Words(), bounds=(0.6, 0.3, 0.85)), "bounds must increase"),
        (dict(tokenizer=Words(), merge_keep=1.0), "merge_keep must be"),
        (dict(tokenizer=Words(), keep=0.25), "takes no keep"),
        (dict(tokenizer=Words(), schedule="flat"), "schedule must be one of"),
    ],
)
def test_bad_options_are_refused_before_anything_is_patched(options, message):
    model = build()
    with pytest.raises((ValueError, TypeError), match=message):
        tokenfunnel.compress(model, "difficulty", **options)
    assert not hasattr(model, MARK)


def test_a_question_with_no_tokens_is_refused():
    model = build()
    inputs = batch([[5, 6] + [IMAGE_TOKEN] * PATCHES])
    with tokenfunnel.compress(model, "difficulty", tokenizer=Words()):
        with pytest.raises(ValueError, match="no question text after its last image"):
            logits(model, inputs)


class Processor:
    tokenizer = Words()


def test_bench_settings_hand_the_processor_tokenizer_to_methods_that_read_the_question():
    from tokenfunnel.bench.settings import Setting, refusal
    from tokenfunnel.methods.registry import processor_options, reads_question

    assert reads_question("difficulty") and reads_question("luvc") and not reads_question("random")  # luvc: focus
    assert processor_options("random", Processor()) == {}
    assert "tokenizer" in processor_options("difficulty", Processor())
    model = build()
    setting = Setting("difficulty", None)
    assert refusal(model, setting, Processor()) is None
    assert "pass the processor's tokenizer" in refusal(model, setting)  # a shape-only model has no processor
    with setting.applied(model, Processor()) as handle:
        logits(model, sample(*EASY))
        assert handle.report()["stage"]["tier"] == ["easy"]
    assert not hasattr(model, MARK)


def test_the_processor_image_normalisation_reaches_the_methods_that_read_pixels():
    """A SigLIP-style processor normalises with 0.5 / 0.5: difficulty and detail must undo that, not ImageNet's."""
    from types import SimpleNamespace

    from tokenfunnel.methods.registry import processor_options

    half = SimpleNamespace(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    siglip = SimpleNamespace(tokenizer=Words(), image_processor=half)
    for method in ("difficulty", "detail"):
        options = processor_options(method, siglip)
        assert options["image_mean"] == options["image_std"] == (0.5, 0.5, 0.5)
    assert set(processor_options("lod", siglip)) == {"tokenizer"}  # lod reads the question (focus), not pixels
    assert processor_options("random", siglip) == {}
