"""lod on tiny random LLaVAs: the most question-relevant region keeps every token, batches equal their samples
alone, keep=1 is the unmodified model bit for bit, remove() restores it, report() adds up, and refusals."""

from __future__ import annotations

import pytest
import torch

import tokenfunnel
from tiny import GRID, IMAGE_TOKEN, PATCHES, Said, assert_rows_match_alone, batch, build, generate, logits, pair, prompt
from tokenfunnel.ops.relevance import regions
from tokenfunnel.runtime.patch import MARK

LAYERS = 6
ASKED = Said("What shape is it?")  # names no part of the picture: lod's focus changes nothing


@pytest.mark.parametrize("options", [{}, {"keep": 0.3}, {"keep": 0.25, "cascade": True}])
def test_a_batch_equals_each_sample_alone(options):
    model = build()
    together, alone = pair()
    with tokenfunnel.compress(model, "lod", **{"tokenizer": ASKED, **options}) as handle:
        out, gen = logits(model, together), generate(model, together)
        report = handle.report()
        for row, one in enumerate(alone):
            assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
            assert torch.equal(gen[row], generate(model, one)[0])
            assert handle.report()["stage"]["region_tokens"][0] == report["stage"]["region_tokens"][row]


@pytest.mark.parametrize("options", [{}, {"keep": 0.3}, {"keep": 0.25, "cascade": True}])
def test_report_counts_and_realised_keep_add_up(options):
    model = build()
    with tokenfunnel.compress(model, "lod", **{"tokenizer": ASKED, **options}) as handle:
        logits(model, prompt())
        report = handle.report()
    counts = report["llm_visual_tokens"]
    assert report["visual_tokens"] == sum(report["stage"]["region_tokens"][0])
    if not options.get("cascade"):
        assert counts == [report["visual_tokens"]] * LAYERS
    assert report["keep"] == pytest.approx(sum(counts) / (LAYERS * PATCHES), abs=1e-6)
    assert report["stage"]["regions"] == [8]  # an 8x8 grid in regions of 2x4 cells
    if "keep" in options:
        assert report["keep"] == pytest.approx(options["keep"], abs=0.5 / PATCHES)
    else:  # the design's shares 20:30:23 of 8 regions: 2 x 8 + 3 x 3 + 3 x 1 tokens
        assert counts[0] == 28


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_the_region_most_like_the_question_keeps_all_its_tokens_exactly(reduce):
    """The embedding of the one question word is set to one region's mean projected token: that region is the most
    relevant, and all 8 of its cells enter the language model, each its own token."""
    model = build()
    ids = [5, 6, 7] + [IMAGE_TOKEN] * PATCHES + [10]
    inputs = batch([ids])
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=inputs["pixel_values"], return_dict=True)
        x = features.pooler_output[0]
        region = regions(*GRID, (2, 4))
        target = 5
        model.model.language_model.embed_tokens.weight[10] = x[region == target].mean(0)
    with tokenfunnel.compress(model, "lod", tokenizer=ASKED, reduce=reduce) as handle:
        logits(model, inputs)
        report = handle.report()
    relevance = report["stage"]["relevance"][0]
    assert max(range(8), key=relevance.__getitem__) == target
    assert report["stage"]["region_tokens"][0][target] == 8
    whole = (region == target).nonzero()[:, 0].tolist()
    assert set(whole) <= set(report["kept"][0][0])


def test_keep_one_is_the_unmodified_model_bit_for_bit_and_remove_restores_it():
    model = build()
    together, _ = pair()
    ref, ref_gen = logits(model, together), generate(model, together)
    with tokenfunnel.compress(model, "lod", tokenizer=ASKED, keep=1.0) as handle:
        assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
        assert handle.report()["keep"] == 1.0
    handle = tokenfunnel.compress(model, "lod", tokenizer=ASKED)
    assert not torch.equal(logits(model, together), ref)
    handle.remove()
    assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
    assert not hasattr(model, MARK)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(tiers=((10, 3), (10, 8))), "must increase with relevance"),
        (dict(tiers=((10, 9), (10, 1))), "holds fewer cells"),
        (dict(region=(9, 9)), "does not fit"),
        (dict(keep=0.05), "at least one token per region"),
        (dict(cascade=True), "pass keep as well"),
        (dict(keep=1.0, cascade=True), "cannot reach keep"),
        (dict(reduce="median"), "reduce must be"),
        (dict(tokenizer=None), "pass the processor's tokenizer"),
    ],
)
def test_bad_options_are_refused_before_anything_is_patched(options, message):
    model = build()
    with pytest.raises(ValueError, match=message):
        tokenfunnel.compress(model, "lod", **{"tokenizer": ASKED, **options})
    assert not hasattr(model, MARK)


def test_a_prompt_without_question_text_after_the_image_is_refused():
    model = build()
    inputs = prompt(text=(5, 0))
    with (
        tokenfunnel.compress(model, "lod", tokenizer=ASKED),
        pytest.raises(ValueError, match="no question text after its last image"),
    ):
        logits(model, inputs)


def test_refusals_made_before_any_image_quote_the_grid_a_dinov2_tower_is_fed():
    # DINOv2's image_size sizes its position table, not its input (the bundled VLM: 518 px, fed 224); 2x4-cell
    # regions on a 4x4 grid make 2
    model = build()
    model.config.image_seq_length = 4 * 4
    with pytest.raises(ValueError, match=r"\(2 regions of 16 tokens\)"):
        tokenfunnel.compress(model, "lod", tokenizer=ASKED, keep=0.05)
    assert not hasattr(model, MARK)


TOP_LEFT = [0, 2]  # the regions (2x4 cells) of the 8x8 grid's top-left quarter


def test_focus_puts_the_named_part_in_the_top_tier():
    """Asked about the top-left, its two regions fill the two top-tier slots (8 tokens each, so every cell of the
    quarter enters alone); a question that names no part ranks by relevance alone, as focus=False does. On by
    default."""
    model = build()
    together, alone = pair()
    said = Said("In the top-left picture, what shape is there?")
    with tokenfunnel.compress(model, "lod", tokenizer=said) as handle:
        last, gen = logits(model, together)[:, -1], generate(model, together)
        report = handle.report()
        assert_rows_match_alone(model, alone, last, gen)
    assert report["stage"]["focus"] == ["top-left", "top-left"]
    quarter = {r * GRID[1] + c for r in range(GRID[0] // 2) for c in range(GRID[1] // 2)}
    for row in range(2):
        assert [report["stage"]["region_tokens"][row][r] for r in TOP_LEFT] == [8, 8]
        assert quarter <= set(report["kept"][row][0])
    with tokenfunnel.compress(model, "lod", focus=False) as handle:  # focus=False needs no tokenizer
        blind = logits(model, together)
        assert sorted(handle.report()["stage"]["region_tokens"][0], reverse=True)[:2] == [8, 8]
        assert [handle.report()["stage"]["region_tokens"][0][r] for r in TOP_LEFT] != [8, 8]
    with tokenfunnel.compress(model, "lod", tokenizer=ASKED) as handle:
        assert torch.equal(logits(model, together), blind)
        assert handle.report()["stage"]["focus"] == ["none", "none"]
