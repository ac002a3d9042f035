"""Qwen2-VL / Qwen2.5-VL adapter on tiny random models built here: pass-through, padded batches, generate(), the
pruned cache against a masked reference, and OIM inside the vision tower."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLModel,
)

import tokenfunnel
from tokenfunnel.adapters import adapter_for
from tokenfunnel.adapters.qwen2_vl import Qwen2VLAdapter
from tokenfunnel.runtime.handle import Handle
from tokenfunnel.runtime.state import RUN

IMAGE, VIDEO, START, END, PAD = 100, 101, 102, 103, 0
FAMILIES = ("qwen2_vl", "qwen2_5_vl")
GRIDS = [(1, 8, 12), (1, 4, 8)]  # two images per prompt, in patches: 4x6 and 2x4 language-model cells
# OIM with the falling cascade (the defaults have no OIM); the tiny towers have 2 blocks: merge from the first one
OIM = dict(keep=0.3, encoder_start=0.0, grid_keep=None, shape="linear", final_zero=True)
INIT = 0.2  # larger than transformers' 0.02 so random logits are far apart: greedy choices do not flip on 1e-7 noise


def _config(family: str):
    text = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},  # head_dim 16
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=PAD,
        initializer_range=INIT,
    )
    common = dict(
        num_heads=2, patch_size=2, temporal_patch_size=2, spatial_merge_size=2, depth=2, initializer_range=INIT
    )
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END)
    if family == "qwen2_vl":
        vision = dict(embed_dim=32, hidden_size=64, mlp_ratio=2, **common)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    # windows of 2x2 cells, full attention in the last block
    vision = dict(hidden_size=32, out_hidden_size=64, intermediate_size=64, window_size=8, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=text, vision_config={**vision, **common}, **ids)


@pytest.fixture(autouse=True, scope="module")
def _cpu():
    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(grad)


def build(family: str):
    """A tiny random model of ``family``, the same weights every time."""
    torch.manual_seed(0)
    cls = Qwen2VLForConditionalGeneration if family == "qwen2_vl" else Qwen2_5_VLForConditionalGeneration
    return cls(_config(family)).eval()


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return build(request.param)


def _prompt(seed: int, pre: int, grids=GRIDS, post: int = 4):
    g = torch.Generator().manual_seed(seed)
    ids = [1] + torch.randint(3, 90, (pre,), generator=g).tolist()
    for t, h, w in grids:
        ids += [START] + [IMAGE] * (t * h * w // 4) + [END]
    ids += torch.randint(3, 90, (post,), generator=g).tolist()
    pixels = torch.randn(sum(t * h * w for t, h, w in grids), 3 * 2 * 2 * 2, generator=g)
    return ids, pixels, torch.tensor(grids)


def _batch(*prompts):
    """Left-padded inputs as the Qwen2-VL processor builds them."""
    longest = max(len(p[0]) for p in prompts)
    ids = torch.tensor([[PAD] * (longest - len(p[0])) + p[0] for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p[0])) + [1] * len(p[0]) for p in prompts])
    return dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=torch.cat([p[1] for p in prompts]),
        image_grid_thw=torch.cat([p[2] for p in prompts]),
        mm_token_type_ids=(ids == IMAGE).int(),
    )


A, B = _prompt(0, pre=3), _prompt(1, pre=7)


def _generate(model, inputs, **kw):
    out = model.generate(
        **inputs, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True, **kw
    )
    return out.sequences[:, -4:], torch.stack(out.logits, 1)


def test_every_class_gets_the_adapter(model):
    assert isinstance(adapter_for(model), Qwen2VLAdapter)
    assert isinstance(adapter_for(model.model), Qwen2VLAdapter)


def test_keep_one_is_bit_identical(model):
    inputs = _batch(A, B)
    logits = model(**inputs).logits
    tokens, scores = _generate(model, inputs)
    with tokenfunnel.compress(model, "luvc", keep=1.0) as handle:
        assert torch.equal(model(**inputs).logits, logits)
        report = handle.report()
        again, again_scores = _generate(model, inputs)
    assert torch.equal(again, tokens) and torch.equal(again_scores, scores)
    assert report["keep"] == 1.0 and report["encoder_keep"] == 1.0 and report["grids"] == [[4, 6], [2, 4]]


def test_remove_restores(model):
    inputs = _batch(A)
    logits = model(**inputs).logits
    handle = tokenfunnel.compress(model, "luvc", **OIM)
    assert model(**inputs).logits.shape[1] < logits.shape[1]  # OIM shrank the placeholder runs
    handle.remove()
    for module in (model.model, model.model.language_model, model.model.visual):
        assert not {"forward", "get_image_features"} & set(vars(module))
    assert torch.equal(model(**inputs).logits, logits)
    tokenfunnel.compress(model, "luvc", keep=0.5).remove()  # and it can be compressed again


@pytest.mark.parametrize("options", [OIM, dict(keep=0.25, grid_keep=1.0)], ids=["oim", "llm-only"])
def test_padded_batch_equals_samples_alone(model, options):
    with tokenfunnel.compress(model, "luvc", **options) as handle:
        alone = []
        for p in (A, B):
            logits = model(**_batch(p)).logits
            alone.append((logits[0], handle.report()["kept"], *_generate(model, _batch(p))))
        logits = model(**_batch(A, B)).logits
        kept = handle.report()["kept"]
        tokens, scores = _generate(model, _batch(A, B))
    for i, (one_logits, one_kept, one_tokens, one_scores) in enumerate(alone):
        torch.testing.assert_close(logits[i, -len(one_logits) :], one_logits, atol=1e-4, rtol=1e-4)
        assert [cells[i] for cells in kept] == [cells[0] for cells in one_kept]
        assert torch.equal(tokens[i], one_tokens[0])
        torch.testing.assert_close(scores[i], one_scores[0], atol=1e-4, rtol=1e-4)


def test_cascade_falls_to_zero_within_budget(model):
    with tokenfunnel.compress(model, "luvc", **OIM) as handle:
        model(**_batch(A, B))
        report = handle.report()
    counts, original = report["llm_visual_tokens"], report["original_visual_tokens"]
    assert original == 4 * 6 + 2 * 4 and counts[-1] == 0
    assert abs(sum(counts) / len(counts) - OIM["keep"] * original) <= 1
    assert report["encoder_keep"] < 1 and report["visual_tokens"] == sum(h * w for h, w in report["grids"])
    h, w = report["grids"][0]
    assert h * w < 4 * 6  # OIM shrank the larger image


def test_manual_decoding_matches_generate(model):
    """Without position_ids, decoding continues from the pruned cache with the unmodified model's numbering."""
    inputs = _batch(A, B)
    with tokenfunnel.compress(model, "luvc", **OIM):
        tokens, scores = _generate(model, inputs)
        out = model(**inputs, use_cache=True)
        mask, logits = inputs["attention_mask"], [out.logits[:, -1]]
        for _ in range(3):
            step = logits[-1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            out = model(input_ids=step, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
            logits.append(out.logits[:, -1])
    torch.testing.assert_close(torch.stack(logits, 1), scores, atol=1e-4, rtol=1e-4)


class _FirstCells:
    """A plan that keeps the first ``k`` visual tokens of every sample in every decoder layer."""

    proportional = False

    def __init__(self, k: int) -> None:
        self.k = k

    def encoder_steps(self, h, w, layers):
        return {}

    def llm_counts(self, entering, original, layers):
        return [self.k] * layers

    def score(self, inputs):
        return -inputs.cells.float()


def test_pruned_cache_equals_masked_model(model):
    """Dropping tokens equals masking them out of the unmodified model at their original M-RoPE positions."""
    inputs, k = _batch(A, B), 10
    visual = inputs["input_ids"] == IMAGE
    dropped = visual & (visual.long().cumsum(1) > k)
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    masked = dict(inputs, attention_mask=inputs["attention_mask"] * ~dropped, position_ids=positions)
    reference = model(**masked).logits[~dropped].view(2, -1, 128)
    ref_tokens, ref_scores = _generate(model, masked)
    handle = Handle(model, _FirstCells(k), None)
    try:
        logits = model(**inputs).logits
        tokens, scores = _generate(model, inputs)
    finally:
        handle.remove()
    real = masked["attention_mask"][~dropped].view(2, -1).bool()
    torch.testing.assert_close(logits[real], reference[real], atol=1e-5, rtol=1e-5)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=1e-5)


def test_tower_loop_matches_the_tower(model):
    """The rerun outer loop of the vision tower, with nothing to merge, is the tower itself (Qwen2.5: windows)."""
    _, pixels, grids = _prompt(2, pre=1, grids=[(1, 8, 12), (1, 4, 4), (1, 10, 6)])
    adapter = Qwen2VLAdapter(model)
    runs = [adapter._start(h // 2, w // 2, {}, "cpu") for _, h, w in grids.tolist()]
    out, merged, _ = adapter._tower(pixels, grids, runs)
    reference = model.model.visual(pixels, grid_thw=grids)
    assert torch.equal(merged, grids)
    assert torch.equal(torch.cat(out.pooler_output), reference.pooler_output)
    assert torch.equal(out.last_hidden_state, reference.last_hidden_state)


def test_oim_merges_whole_blocks(model):
    _, pixels, grids = _prompt(3, pre=1, grids=[(1, 8, 12), (1, 4, 4), (1, 10, 6)])
    with tokenfunnel.compress(model, "luvc", keep=0.25, encoder_start=0.0, grid_keep=None):
        features = model.model.get_image_features(pixels, grids)
    run = getattr(features, RUN)
    assert run.merged and bool((run.merged_thw[:, 1:] % 2 == 0).all())
    assert [len(f) for f in features.pooler_output] == (run.merged_thw.prod(-1) // 4).tolist()
    for (_, h, w), r in zip(grids.tolist(), run.runs, strict=True):
        cover = torch.zeros(h // 2, w // 2, dtype=torch.long)  # every original cell covered exactly once
        for rows, cols in ((a, c) for a in r.rows[0].tolist() for c in r.cols[0].tolist()):
            cover[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] += 1
        assert bool((cover == 1).all())
        assert torch.equal(r.size.sum(), torch.tensor(float(h * w // 4)))


def test_bare_model_class():
    torch.manual_seed(0)
    core = Qwen2VLModel(_config("qwen2_vl")).eval()
    inputs = _batch(A, B)
    with tokenfunnel.compress(core, "luvc", **OIM) as handle:
        out = core(**inputs)
        assert handle.report()["llm_visual_tokens"][-1] == 0
    assert out.last_hidden_state.shape == (2, inputs["input_ids"].shape[1] - 32, 64)  # no visual token left


def test_refusals(model):
    with tokenfunnel.compress(model, "luvc", **OIM, proportional=True):
        with pytest.raises(NotImplementedError, match="proportional"):
            model(**_batch(A))
    with tokenfunnel.compress(model, "luvc", keep=0.5):
        with pytest.raises(NotImplementedError, match="videos"):
            model(input_ids=_batch(A)["input_ids"], pixel_values_videos=A[1], video_grid_thw=A[2])
        with pytest.raises(ValueError, match="same grids"):
            model(**_batch(A, _prompt(4, pre=3, grids=[(1, 4, 8), (1, 8, 12)])))
