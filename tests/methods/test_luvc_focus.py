"""LUVC with focus=True on tiny LLaVAs: the encoder-stage drop runs after the projector, where the question is known,
and keeps the tokens of the part of the picture the question names first; at the language-model stage every token
enters and the decoder's drop ranks that part first. keep=1 is exact, a padded batch equals its samples, and the
refusals leave nothing patched."""

from __future__ import annotations

import pytest
import torch

import tokenfunnel
import tokenfunnel.runtime.encoder
from adapters import test_idefics3
from tiny import GRID, PATCHES, Said, assert_rows_match_alone, build, generate, logits, pair, prompt
from tokenfunnel import LUVCConfig
from tokenfunnel.adapters.llava import LlavaAdapter
from tokenfunnel.methods.luvc import ENCODER_CONTEXTUAL, FOCUS_HOLD, LUVC
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

    def scored():
        return scores, metric

    visuals = Visuals(features, GRID, torch.zeros(1, 32), torch.zeros(3), LAYERS, encoder_scores=scored)
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


LATE = dict(focus=True, stage="llm", start=1)  # every token through the first decoder layer, then the drop


def test_at_the_llm_stage_keep_one_is_exact_and_a_padded_batch_equals_its_samples():
    model = build()
    together, alone = pair()
    ref, ref_gen = logits(model, together), generate(model, together)
    said = Said("In the top-left picture, what shape is there?")
    with tokenfunnel.compress(model, "luvc", keep=1.0, tokenizer=said, **LATE):
        assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
    with tokenfunnel.compress(model, "luvc", keep=0.25, tokenizer=said, **LATE) as handle:
        last, gen = logits(model, together)[:, -1], generate(model, together)
        report = handle.report()
        assert_rows_match_alone(model, alone, last, gen)
    assert torch.equal(logits(model, together), ref) and not hasattr(model, MARK)
    counts = report["llm_visual_tokens"]
    assert counts[0] == PATCHES and max(counts[1:]) <= len(QUARTER) and report["keep"] == pytest.approx(0.25, abs=0.01)
    assert report["stage"]["focus"] == ["top-left", "top-left"]


def test_at_the_llm_stage_the_drop_keeps_the_named_quarter_first_and_else_ranks_as_without_focus():
    model = build()
    inputs = prompt()
    said = Said("In the top-left picture, is there a circle?")
    with tokenfunnel.compress(model, "luvc", keep=0.25, tokenizer=said, **LATE) as handle:
        logits(model, inputs)
        kept = handle.report()["kept"]
    assert set(kept[0][0]) == set(range(PATCHES)) and set(kept[1][0]) < QUARTER  # all enter; the drop keeps the part
    plain = {**LATE, "focus": False}
    with tokenfunnel.compress(model, "luvc", keep=0.25, **plain) as handle:
        ref = logits(model, inputs), handle.report()["kept"]
    assert not set(ref[1][1][0]) <= QUARTER  # the spectral scores alone would not keep the quarter
    with tokenfunnel.compress(model, "luvc", keep=0.25, tokenizer=Said("Is it red?"), **LATE) as handle:
        out = logits(model, inputs)
        assert handle.report()["kept"] == ref[1] and handle.report()["stage"]["focus"] == ["none"]
    assert torch.equal(out, ref[0])


class ByLength:
    """A tokenizer stand-in for a batch of ``pair()``: the long prompt's question names the top-left, the short one's
    names nothing."""

    def decode(self, ids, skip_special_tokens=True):
        return "In the top-left picture, what is it?" if len(ids) > 5 else "What is it?"


HELD = dict(focus=True, hold=FOCUS_HOLD)  # 2/3 of a 6-layer, keep-0.25 budget: every token through the first layer


def test_hold_carries_every_token_then_keeps_the_named_quarter_and_leaves_the_rest_as_without_it():
    model = build()
    inputs = prompt()
    with tokenfunnel.compress(model, "luvc", keep=0.25, tokenizer=Said("In the top-left one, what?"), **HELD) as h:
        logits(model, inputs)
        report = h.report()
    counts, kept = report["llm_visual_tokens"], report["kept"]
    assert counts[0] == PATCHES and set(kept[0][0]) == set(range(PATCHES))
    assert max(counts[1:]) <= len(QUARTER) and all(set(k[0]) < QUARTER for k in kept[1:])
    assert report["keep"] == pytest.approx(0.25, abs=1 / PATCHES)
    said = Said("Is it red?")
    with tokenfunnel.compress(model, "luvc", keep=0.25, focus=True, tokenizer=said) as handle:
        ref = logits(model, inputs), handle.report()["kept"]
    with tokenfunnel.compress(model, "luvc", keep=0.25, tokenizer=said, **HELD) as handle:
        assert torch.equal(logits(model, inputs), ref[0]) and handle.report()["kept"] == ref[1]
    # a budget of more tokens than the named quarter has keeps them to the end, as without hold
    said = Said("In the top-left picture, what?")
    with tokenfunnel.compress(model, "luvc", keep=0.5, focus=True, tokenizer=said) as handle:
        ref = logits(model, inputs), handle.report()["llm_visual_tokens"]
    with tokenfunnel.compress(model, "luvc", keep=0.5, tokenizer=said, **HELD) as handle:
        assert torch.equal(logits(model, inputs), ref[0]) and handle.report()["llm_visual_tokens"] == ref[1]
    assert ref[1] == [PATCHES // 2] * LAYERS


@pytest.mark.parametrize("context", ["none", "frozen"])
def test_hold_in_a_padded_batch_of_a_named_and_an_unnamed_question_equals_its_samples(context):
    # the unnamed sample keeps more tokens than the named one after its drop, so the named one's extra slots go
    # dark in the batch: with frozen context, those on the lattice must be frozen as they are when it runs alone
    model = build()
    together, alone = pair()
    ref, ref_gen = logits(model, together), generate(model, together)
    held = dict(HELD, context=context)
    with tokenfunnel.compress(model, "luvc", keep=1.0, tokenizer=ByLength(), **held):
        assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
    with tokenfunnel.compress(model, "luvc", keep=0.25, tokenizer=ByLength(), **held) as handle:
        last, gen = logits(model, together)[:, -1], generate(model, together)
        report = handle.report()
        assert_rows_match_alone(model, alone, last, gen)
    assert report["stage"]["focus"] == ["none", "top-left"]
    unnamed, named = report["llm_visual_tokens"]
    assert unnamed == [round(0.25 * PATCHES)] * LAYERS and named[0] == PATCHES and max(named[1:]) <= len(QUARTER)
    assert torch.equal(logits(model, together), ref) and not hasattr(model, MARK)


@pytest.mark.parametrize("question, scored", [("In the top-left one, what?", False), ("Is it red?", True)])
def test_the_encoder_scores_only_for_a_drop_that_reads_its_scores(monkeypatch, question, scored):
    # hold on a named part ranks in the decoder, by the layer's own scores: the encoder's are never computed
    calls = []
    real = tokenfunnel.runtime.encoder.query_keys
    monkeypatch.setattr(tokenfunnel.runtime.encoder, "query_keys", lambda *a: calls.append(1) or real(*a))
    model = build()
    with tokenfunnel.compress(model, "luvc", keep=0.25, tokenizer=Said(question), **HELD):
        logits(model, prompt())
    assert len(calls) == int(scored)


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "^luvc's focus reads the question as text: pass the processor's tokenizer"),
        ({"tokenizer": Said("x"), "grid_keep": None}, "grid_keep=1"),
        ({"tokenizer": Said("x"), "hold": 1.0}, "hold must be a share in"),
        ({"tokenizer": Said("x"), "hold": -0.1}, "hold must be a share in"),
        ({"tokenizer": Said("x"), "hold": 0.5, "stage": "llm"}, "at stage='llm' give start"),
        ({"tokenizer": Said("x"), "hold": 0.5, "focus": False}, "use it with focus=True"),
    ],
)
def test_bad_focus_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        LUVCConfig(**{"keep": 0.25, "focus": True, **options})


def test_focus_off_the_llava_family_is_refused_and_nothing_is_patched():
    model = test_idefics3.build("smolvlm")
    with pytest.raises(ValueError, match="focus runs on LLaVA-family models only"):
        tokenfunnel.compress(model, "luvc", keep=0.25, focus=True, tokenizer=Said("top-left?"))
    assert not hasattr(model, MARK)


def test_the_luvc_focus_preset_is_luvc_with_focus_on_the_named_part_held_and_frozen_context():
    model = build()
    inputs = prompt()
    said = Said("In the top-left picture, what colour?")
    preset = dict(HELD, context="frozen", context_stride=None)
    with tokenfunnel.compress(model, "luvc", keep=0.25, tokenizer=said, **preset) as handle:
        ref, ref_report = logits(model, inputs), handle.report()
    with tokenfunnel.compress(model, "luvc-focus", keep=0.25, tokenizer=said) as handle:
        assert torch.equal(logits(model, inputs), ref) and handle.report()["kept"] == ref_report["kept"]
    assert ref_report["llm_visual_tokens"][0] == PATCHES  # every token through the first layer: the hold
    assert reads_question("luvc-focus") and make_config("luvc-focus", 0.25, tokenizer=said).focus
    with pytest.raises(ValueError, match="pass the processor's tokenizer"):
        tokenfunnel.compress(model, "luvc-focus", keep=0.25)
    assert not hasattr(model, MARK)
