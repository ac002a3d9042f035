"""LUVC with focus=True on tiny LLaVAs: the encoder-stage drop runs after the projector, where the question is known,
and keeps the tokens of the part of the picture the question names first; keep=1 is exact, a padded batch equals its
samples, and the refusals leave nothing patched."""

from __future__ import annotations

import pytest
import torch

import tokenfunnel
from adapters import test_idefics3
from tiny import GRID, PATCHES, Said, assert_rows_match_alone, build, generate, logits, pair, prompt
from tokenfunnel import LUVCConfig
from tokenfunnel.adapters.llava import LlavaAdapter
from tokenfunnel.methods.luvc import ENCODER_CONTEXTUAL, LUVC
from tokenfunnel.methods.registry import make_config, reads_question
from tokenfunnel.ops.spectrum import highfreq_score
from tokenfunnel.runtime.patch import MARK
from tokenfunnel.runtime.state import Visuals

LAYERS = 6  # decoder layers of the tiny LLaVA
QUARTER = {r * GRID[1] + c for r in range(GRID[0] // 2) for c in range(GRID[1] // 2)}  # the top-left one


def kept_cells(report: dict) -> set[int]:
    """The cells of the tokens entering the first decoder layer (of the first sample)."""
    return set(report["kept"][0][0])


def test_keep_one_is_exact_and_a_padded_batch_equals_its_samples():
    model = build()
    together, alone = pair()
    ref, ref_gen = logits(model, together), generate(model, together)
    said = Said("In the top-left picture, what shape is there?")
    with tokenfunnel.compress(model, "luvc", keep=1.0, focus=True, tokenizer=said):
        assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
    with tokenfunnel.compress(model, "luvc", keep=0.25, focus=True, tokenizer=said) as handle:
        last, gen = logits(model, together)[:, -1], generate(model, together)
        report = handle.report()
        assert_rows_match_alone(model, alone, last, gen)
    assert torch.equal(logits(model, together), ref) and not hasattr(model, MARK)
    n = round(0.25 * PATCHES)
    assert report["llm_visual_tokens"] == [n] * LAYERS and report["keep"] == 0.25
    assert report["stage"]["focus"] == ["top-left", "top-left"]


def test_the_named_quarter_is_kept_whole_and_otherwise_the_encoder_outputs_spectral_top_k():
    model = build()
    inputs = prompt()
    said = Said("In the top-left picture, is there a circle?")
    with tokenfunnel.compress(model, "luvc", keep=0.25, focus=True, contextual=0, tokenizer=said) as handle:
        logits(model, inputs)
        assert kept_cells(handle.report()) == QUARTER  # 16 tokens: the quarter's 16 cells, nothing else
    with torch.no_grad():
        out = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
    feeding = out.hidden_states[model.config.vision_feature_layer][:, 1:]  # what the projector reads
    expect = set(highfreq_score(feeding.float(), 0.5)[0].topk(16).indices.tolist())
    assert expect != QUARTER
    with tokenfunnel.compress(model, "luvc", keep=0.25, focus=True, contextual=0, tokenizer=Said("Is it red?")) as h:
        logits(model, inputs)
        assert kept_cells(h.report()) == expect and h.report()["stage"]["focus"] == ["none"]
    # at a smaller keep the named part still comes first: its highest-scoring cells
    with tokenfunnel.compress(model, "luvc", keep=0.125, focus=True, contextual=0, tokenizer=said) as handle:
        logits(model, inputs)
        assert kept_cells(handle.report()) < QUARTER


@pytest.mark.parametrize("question", ["What is it?", "What is top-left?"])
def test_contextual_tokens_hold_the_cells_left_out_unless_a_part_is_named(question):
    model = build()
    plan = LUVC(LUVCConfig(keep=0.25, focus=True, tokenizer=Said(question)))
    plan.check(LlavaAdapter(model))
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, PATCHES, 32, generator=g)
    scores, metric = torch.rand(1, PATCHES, generator=g), torch.randn(1, PATCHES, 8, generator=g)
    visuals = Visuals(features, GRID, torch.zeros(1, 32), torch.zeros(3), LAYERS, scores=scores, metric=metric)
    sel = plan.select(visuals)
    named = "top-left" in question
    contextual = 0 if named else round(ENCODER_CONTEXTUAL * 16)  # 2 of the 16 tokens without a named part
    assert len(sel.cells) == 16 and sel.counts == [16] * LAYERS
    assert int(sel.sizes.sum()) == (16 if named else PATCHES)  # dropped, or averaged into the contextual tokens
    alone = sel.cells[sel.sizes == 1]
    for cell, token, size in zip(sel.cells.tolist(), sel.features, sel.sizes.tolist(), strict=True):
        if size == 1:  # a token kept as it is, bit for bit
            assert torch.equal(token, features[0, cell])
    inside = torch.isin(torch.arange(PATCHES), torch.tensor(sorted(QUARTER)))
    top = scores[0].masked_fill(~inside, -1) if named else scores[0]
    dominant = set(top.topk(16 - contextual).indices.tolist())
    assert dominant <= set(alone.tolist()) and int((sel.sizes > 1).sum()) <= contextual


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "^luvc's focus reads the question as text: pass the processor's tokenizer"),
        ({"tokenizer": Said("x"), "grid_keep": None}, "grid_keep=1"),
        ({"tokenizer": Said("x"), "stage": "llm"}, "stage='auto' or 'encoder'"),
    ],
)
def test_bad_focus_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        LUVCConfig(keep=0.25, focus=True, **options)


def test_focus_off_the_llava_family_is_refused_and_nothing_is_patched():
    model = test_idefics3.build("smolvlm")
    with pytest.raises(ValueError, match="focus runs on LLaVA-family models only"):
        tokenfunnel.compress(model, "luvc", keep=0.25, focus=True, tokenizer=Said("top-left?"))
    assert not hasattr(model, MARK)


def test_the_luvc_focus_preset_is_luvc_with_focus_on():
    model = build()
    inputs = prompt()
    said = Said("In the top-left picture, what colour?")
    with tokenfunnel.compress(model, "luvc", keep=0.25, focus=True, tokenizer=said) as handle:
        ref, ref_report = logits(model, inputs), handle.report()
    with tokenfunnel.compress(model, "luvc-focus", keep=0.25, tokenizer=said) as handle:
        assert torch.equal(logits(model, inputs), ref) and handle.report()["kept"] == ref_report["kept"]
    assert reads_question("luvc-focus") and make_config("luvc-focus", 0.25, tokenizer=said).focus
    with pytest.raises(ValueError, match="pass the processor's tokenizer"):
        tokenfunnel.compress(model, "luvc-focus", keep=0.25)
    assert not hasattr(model, MARK)
