"""LUVC with stage="encoder" on tiny LLaVAs: the SPU drop right after the last encoder layer feeding the projector
keeps the patches whose output the 1-D low-pass explains least; keep=1 is exact, batches equal their samples,
the realised keep is the one asked for, and the refusals."""

from __future__ import annotations

import pytest
import torch

import tokenfunnel
from adapters import test_idefics3
from tiny import GRID, PATCHES, assert_rows_match_alone, build, generate, logits, pair, prompt
from tokenfunnel import LUVCConfig
from tokenfunnel.ops.spectrum import highfreq_score
from tokenfunnel.runtime.patch import MARK

LAYERS = 6  # decoder layers of the tiny LLaVA


@pytest.mark.parametrize(
    "options",
    [{"contextual": 0, "final_zero": True}, {"contextual": 0.25, "final_zero": True}, {}],
    ids=["drop", "ctx", "held"],
)
def test_keep_one_is_exact_and_a_padded_batch_equals_its_samples(options):
    model = build()
    together, alone = pair()
    ref, ref_gen = logits(model, together), generate(model, together)
    with tokenfunnel.compress(model, "luvc", keep=1.0, stage="encoder", **options):
        assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
    with tokenfunnel.compress(model, "luvc", keep=0.25, stage="encoder", **options) as handle:
        last, gen = logits(model, together)[:, -1], generate(model, together)
        report = handle.report()
        assert_rows_match_alone(model, alone, last, gen)
    assert torch.equal(logits(model, together), ref) and not hasattr(model, MARK)
    counts = report["llm_visual_tokens"]
    held = not options.get("final_zero", False)  # the default holds the tokens through the last layer
    n = 16 if held else round(0.25 * PATCHES * LAYERS / (LAYERS - 1))  # 19: the last layer sees none
    assert counts == [n] * LAYERS if held else counts == [n] * (LAYERS - 1) + [0]
    assert abs(report["keep"] - 0.25) <= 1 / PATCHES  # within one token per layer
    assert report["encoder_keep"] == 1.0 and report["visual_tokens"] == n


@pytest.mark.parametrize("feature_layer", [-1, -2])
def test_the_patches_kept_are_the_highest_spectral_scores_of_the_encoder_output(feature_layer):
    model = build(feature_layer=feature_layer)
    inputs = prompt()
    with torch.no_grad():
        out = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
    feeding = out.hidden_states[model.config.vision_feature_layer][:, 1:]  # what the projector reads
    expect = set(highfreq_score(feeding.float(), 0.5)[0].topk(16).indices.tolist())
    with tokenfunnel.compress(model, "luvc", keep=0.25, stage="encoder", contextual=0) as handle:
        logits(model, inputs)
        boxes = handle.report()["boxes"][0]
    assert {r0 * GRID[1] + c0 for r0, r1, c0, c1 in boxes} == expect
    assert all(r0 == r1 and c0 == c1 for r0, r1, c0, c1 in boxes)  # dropped, not merged: each its own patch


def test_the_encoder_stage_is_refused_with_oim_and_off_the_llava_family():
    with pytest.raises(ValueError, match="^stage must be 'llm' with OIM"):
        LUVCConfig(stage="encoder", grid_keep=0.5)
    with pytest.raises(ValueError, match="^stage must be one of"):
        LUVCConfig(stage="projector")
    model = test_idefics3.build("smolvlm")
    with pytest.raises(ValueError, match="stage='llm'"):
        tokenfunnel.compress(model, "luvc", keep=0.25, stage="encoder")
    assert not hasattr(model, MARK)


def test_auto_runs_the_encoder_stage_on_llava_and_the_language_model_elsewhere():
    from tokenfunnel.methods.luvc import ENCODER_CONTEXTUAL, LUVC

    model = build()
    inputs = prompt()
    with tokenfunnel.compress(model, "luvc", keep=0.25) as handle:  # the defaults: stage="auto"
        logits(model, inputs)
        report = handle.report()
    n = round(0.25 * PATCHES)  # chosen after the encoder and held through the last layer (final_zero=False)
    assert report["visual_tokens"] == n and report["llm_visual_tokens"] == [n] * LAYERS
    assert sum(r1 > r0 or c1 > c0 for r0, r1, c0, c1 in report["boxes"][0]) == round(ENCODER_CONTEXTUAL * n)
    with tokenfunnel.compress(model, "luvc", keep=0.25, grid_keep=None) as handle:  # OIM: the language model
        logits(model, inputs)
        assert handle.report()["visual_tokens"] < PATCHES and handle.report()["llm_visual_tokens"][-1] > 0
    assert LUVC(LUVCConfig(grid_keep=None)).stage == "llm" and LUVC(LUVCConfig()).stage is None  # family unknown
    smol = test_idefics3.build("smolvlm")
    with tokenfunnel.compress(smol, "luvc", keep=0.25) as handle:
        assert handle._runtime.plan.stage == "llm" and handle._runtime.plan.contextual == 0.0
