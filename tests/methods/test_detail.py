"""detail on tiny random LLaVAs: without details only the global view enters, with them the budget is filled by the
most novel detail tokens, samples that decide differently in one batch equal each alone (generate() too), keep=1
with details is the unmodified model bit for bit, remove() restores it, and refusals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tokenfunnel
from tiny import GRID, IMAGE_PX, IMAGE_TOKEN, PATCHES, Said, batch, build, generate, logits, pair
from tokenfunnel.methods.detail import Detail, DetailConfig
from tokenfunnel.methods.difficulty import IMAGENET_MEAN, IMAGENET_STD
from tokenfunnel.ops.detail import blocks
from tokenfunnel.runtime.patch import MARK
from tokenfunnel.runtime.state import Visuals

LAYERS, PREFIX, ENCODER_LAYERS = 6, 1, 4
WORDS = {9: "corner"}


class Words:
    """A tokenizer stand-in: id 9 is "corner", any other id the word "shape"."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(WORDS.get(i, "shape") for i in ids)


def smooth(seed: int) -> torch.Tensor:
    """A normalised image of slow colour gradients: too few edges for the policy to ask for details."""
    low = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    img = F.interpolate(low, size=(IMAGE_PX, IMAGE_PX), mode="bilinear", align_corners=False)[0]
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (img - mean) / std


def sample(question: list[int], seed: int) -> dict:
    inputs = batch([[5, 6] + [IMAGE_TOKEN] * PATCHES + question])
    inputs["pixel_values"] = smooth(seed)[None]
    return inputs


def side(keep: float) -> int:
    return max(1, round(GRID[0] * math.sqrt(0.5 * keep)))  # the default global grid: half of the budget


@pytest.mark.parametrize("view", ["pool", "image", "salient"])
@pytest.mark.parametrize("keep", [0.5, 0.25, 0.11])
def test_without_details_only_the_global_tokens_enter(keep, view):
    model = build()
    together, alone = pair()
    with tokenfunnel.compress(model, "detail", keep=keep, details="never", view=view) as handle:
        out, gen = logits(model, together), generate(model, together)
        report = handle.report()
        for row, one in enumerate(alone):
            assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
            assert torch.equal(gen[row], generate(model, one)[0])
    g = side(keep)
    assert report["visual_tokens"] == g * g and report["llm_visual_tokens"] == [g * g] * LAYERS
    assert report["keep"] == pytest.approx(g * g / PATCHES, abs=1e-6) and report["keep"] < keep
    assert report["stage"]["detail_tokens"] == [0, 0] and report["stage"]["global_tokens"] == [g * g] * 2
    assert report["stage"]["details"] == [False, False]
    # an image view runs the encoder twice per image: the full grid and the global view
    second = PREFIX + g * g if view == "image" else 0
    assert report["encoder_tokens"] == [PREFIX + PATCHES + second] * ENCODER_LAYERS


@pytest.mark.parametrize("keep", [0.5, 0.25, 0.11])
def test_with_details_the_budget_is_filled_and_respected(keep):
    model = build()
    together, alone = pair()
    with tokenfunnel.compress(model, "detail", keep=keep, details="always") as handle:
        out = logits(model, together)
        report = handle.report()
        for row, one in enumerate(alone):
            assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
    budget = round(keep * PATCHES)
    assert report["visual_tokens"] == budget and report["keep"] == pytest.approx(keep, abs=0.5 / PATCHES)
    stage = report["stage"]
    assert stage["budget"] == [budget] * 2 and stage["details"] == [True, True]
    for d, g in zip(stage["detail_tokens"], stage["global_tokens"], strict=True):
        assert d + g == budget and d >= budget - side(keep) ** 2
    for cells in report["kept"][0]:  # one placeholder per token, in sequence order
        assert cells == sorted(set(cells))


def test_auto_decides_per_sample_and_a_batch_equals_each_sample_alone():
    """A plain question and one with a spatial word, about smooth images, left-padded into one batch."""
    model = build()
    alone = [sample([12, 13, 13, 13, 13], seed=1), sample([9, 13], seed=2)]
    width = max(s["input_ids"].shape[1] for s in alone)
    pads = [width - s["input_ids"].shape[1] for s in alone]
    both = {
        key: torch.cat([F.pad(s[key], (p, 0)) for s, p in zip(alone, pads, strict=True)])
        for key in ("input_ids", "attention_mask")
    }
    both["pixel_values"] = torch.cat([s["pixel_values"] for s in alone])
    with tokenfunnel.compress(model, "detail", keep=0.25, tokenizer=Words()) as handle:
        out, gen = logits(model, both), generate(model, both)
        report = handle.report()
        for row, one in enumerate(alone):
            assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
            assert torch.equal(gen[row], generate(model, one)[0])
            assert handle.report()["visual_tokens"] == report["visual_tokens"][row]
    stage = report["stage"]
    assert stage["details"] == [False, True] and stage["why"] == ["none", "word 'corner'"]
    assert stage["question_text"] == ["shape shape shape shape shape", "corner shape"]
    assert report["visual_tokens"] == [side(0.25) ** 2, round(0.25 * PATCHES)]
    assert report["keep"] == pytest.approx(sum(report["keep_per_sample"]) / 2, abs=1e-6)


def test_the_detail_tokens_kept_are_those_the_global_view_does_not_explain():
    """Every cell's token is its block's global token plus a little noise, except 12 scattered cells and one whole
    block, which differ: those are the detail tokens kept, the whole block's global token is dropped, and its slot
    goes to one more (noise-ranked) detail token."""
    g = torch.Generator().manual_seed(0)
    plan = Detail(DetailConfig(keep=0.5, details="always", view="image"))
    view = torch.randn(16, 32, generator=g)
    block = blocks(*GRID, 4, 4)
    features = view[block] + 0.01 * torch.randn(PATCHES, 32, generator=g)
    novel = [0, 1, 8, 9] + [3, 6, 20, 23, 29, 34, 38, 45, 51, 54, 59, 62]  # block 0 whole, then one per block
    features[novel] = torch.randn(len(novel), 32, generator=g)
    visuals = Visuals(features[None], GRID, torch.zeros(1, 32), torch.zeros(1), LAYERS, torch.zeros(1, 3, 8, 8))
    visuals.view, visuals.view_grid = view[None], (4, 4)
    sel = plan.select(visuals)
    detail = sel.cells[sel.sizes == 1].tolist()
    assert set(novel) < set(detail) and len(detail) == 17 and sel.info["global_tokens"] == 15
    assert len(sel.cells) == 32 and sel.counts == [32] * LAYERS
    assert sel.cells.tolist() == sorted(set(sel.cells.tolist()))
    stand = sel.cells[sel.sizes > 1]
    assert 0 not in block[stand].tolist()  # block 0 has no global token left
    for cell, token, size in zip(sel.cells.tolist(), sel.features, sel.sizes.tolist(), strict=True):
        b = int(block[cell])
        expected = features[cell] if size == 1 else view[b]
        assert torch.equal(token, expected)
        if size > 1:  # a global token stands for the cells of its block not kept as detail
            assert size == sum(1 for c in (block == b).nonzero()[:, 0].tolist() if c not in detail)


@pytest.mark.parametrize("focus", [True, False])
def test_a_named_corner_gets_the_detail_tokens_first(focus):
    """The most novel cells lie outside the top-left quadrant; asked about the top-left, the detail tokens come from
    that quadrant (its 16 cells fill the 16 detail slots; the four blocks they fill whole free their global tokens'
    slots for four more, which go to the most novel cells elsewhere) unless focus=False."""
    g = torch.Generator().manual_seed(3)
    view = torch.randn(16, 32, generator=g)
    block = blocks(*GRID, 4, 4)
    features = view[block] + 0.01 * torch.randn(PATCHES, 32, generator=g)
    far = [6, 7, 14, 15, 38, 39, 46, 47, 60, 61, 62, 63]  # outside the top-left 4x4 quadrant
    features[far] = torch.randn(len(far), 32, generator=g)
    visuals = Visuals(features[None], GRID, torch.zeros(1, 32), torch.zeros(3), LAYERS, torch.zeros(1, 3, 8, 8))
    visuals.view, visuals.view_grid = view[None], (4, 4)
    options = dict(keep=0.5, details="always", view="image", tokenizer=Said("In the top-left picture, what shape?"))
    sel = Detail(DetailConfig(focus=focus, **options)).select(visuals)
    detail = set(sel.cells[sel.sizes == 1].tolist())
    quadrant = {r * GRID[1] + c for r in range(4) for c in range(4)}
    assert sel.info["focus"] == ("top-left" if focus else "none")
    if focus:
        assert quadrant <= detail and len(detail - quadrant) == 4
        assert detail - quadrant <= set(far)  # the rest of the budget still goes to the most novel cells
    else:
        assert set(far) <= detail


def test_keep_one_with_details_is_the_unmodified_model_bit_for_bit_and_remove_restores_it():
    model = build()
    together, _ = pair()
    ref, ref_gen = logits(model, together), generate(model, together)
    for details in ("always", "never"):  # keep 1 is the model unchanged, whether the question wants details or not
        with tokenfunnel.compress(model, "detail", keep=1.0, details=details) as handle:
            assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
            assert handle.report()["keep"] == 1.0
    handle = tokenfunnel.compress(model, "detail", keep=0.25, tokenizer=Words())
    assert not torch.equal(logits(model, together), ref)
    handle.remove()
    assert torch.equal(logits(model, together), ref) and torch.equal(generate(model, together), ref_gen)
    assert not hasattr(model, MARK)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(keep=0.05, global_grid=(4, 4), details="always"), "global view alone takes 16 of 64 tokens"),
        (dict(keep=0.005, details="never"), "ask for keep >="),
        (dict(details="sometimes", tokenizer=Words()), "details must be one of"),
        (dict(), "pass the processor's tokenizer"),
        (dict(details="always", global_grid=(9, 9)), "finer than the 8x8 patch grid"),
        (dict(details="always", global_share=0), "global_share must be"),
        (dict(details="always", view="crop"), "view must be one of"),
    ],
)
def test_bad_options_are_refused_before_anything_is_patched(options, message):
    model = build()
    with pytest.raises(ValueError, match=message):
        tokenfunnel.compress(model, "detail", **options)
    assert not hasattr(model, MARK)


@pytest.mark.parametrize("tower", ["dinov2", "clip"])
def test_the_global_view_alone_is_the_downsample_method(tower):
    """Without details, detail shows the language model the image downsampled to its global grid, each token at
    its block's centre cell: what ``downsample`` gives at the same grid (CLIP needs its positions interpolated)."""
    model = build(tower)
    together, _ = pair()
    with tokenfunnel.compress(model, "downsample", keep=0.25) as handle:
        ref = logits(model, together)
        assert handle.report()["grids"][0] == [4, 4]
    with tokenfunnel.compress(model, "detail", keep=0.25, details="never", global_grid=(4, 4), view="image"):
        out = logits(model, together)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)  # same tokens at the same positions


def test_a_pooled_global_view_averages_the_full_view_and_runs_the_encoder_once():
    """view="pool": each global token is the mean of its block's projected tokens (no second encoder pass); a batch
    still equals each sample alone, with and without details."""
    g = torch.Generator().manual_seed(1)
    features = torch.randn(PATCHES, 32, generator=g)
    visuals = Visuals(features[None], GRID, torch.zeros(1, 32), torch.zeros(1), LAYERS, torch.zeros(1, 3, 8, 8))
    sel = Detail(DetailConfig(keep=0.25, details="never", global_grid=(4, 4), view="pool")).select(visuals)
    block = blocks(*GRID, 4, 4)
    means = torch.stack([features[block == b].mean(0) for b in range(16)])
    torch.testing.assert_close(sel.features, means[block[sel.cells]], atol=1e-6, rtol=0)
    assert sel.sizes.tolist() == [4] * 16
    model = build()
    together, alone = pair()
    for details in ("never", "always"):
        with tokenfunnel.compress(model, "detail", keep=0.25, details=details, view="pool") as handle:
            out = logits(model, together)
            report = handle.report()
            for row, one in enumerate(alone):
                assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
        assert report["encoder_tokens"] == [PREFIX + PATCHES] * ENCODER_LAYERS
        assert report["stage"]["view"] == ["pool"] * 2 and report["stage"]["details"] == [details == "always"] * 2


def test_a_salient_global_view_keeps_each_blocks_token_least_like_the_image_mean():
    """view="salient": each global token is a real token of its block (the one farthest from the image's mean), not
    an average; with details the budget is filled as with the other views, and a batch equals each sample alone."""
    g = torch.Generator().manual_seed(2)
    features = torch.randn(PATCHES, 32, generator=g)
    visuals = Visuals(features[None], GRID, torch.zeros(1, 32), torch.zeros(1), LAYERS, torch.zeros(1, 3, 8, 8))
    sel = Detail(DetailConfig(keep=0.25, details="never", global_grid=(4, 4), view="salient")).select(visuals)
    block = blocks(*GRID, 4, 4)
    far = 1 - torch.nn.functional.cosine_similarity(features, features.mean(0, keepdim=True), dim=-1)
    best = torch.stack([features[block == b][far[block == b].argmax()] for b in range(16)])
    torch.testing.assert_close(sel.features, best[block[sel.cells]], atol=0, rtol=0)
    model = build()
    together, alone = pair()
    with tokenfunnel.compress(model, "detail", keep=0.5, details="always", view="salient") as handle:
        out = logits(model, together)
        report = handle.report()
        for row, one in enumerate(alone):
            assert torch.allclose(out[row, -1], logits(model, one)[0, -1], atol=1e-5)
    assert report["visual_tokens"] == round(0.5 * PATCHES) and report["stage"]["view"] == ["salient"] * 2
