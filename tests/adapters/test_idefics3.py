"""Idefics3 / SmolVLM adapter on tiny random models: OIM under a pixel-shuffle connector, tiles, cascade, generate."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    LlamaConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)

import tokenfunnel
from tokenfunnel.adapters import shuffle
from tokenfunnel.adapters.vit import halves

SPLIT = dict(grid_keep=None, shape="linear", final_zero=True)  # OIM, then a cascade to zero (the paper's design)

VOCAB, IMAGE, PAD = 128, 127, 0
PX, PATCH, SCALE = 48, 4, 2  # a 12 x 12 patch grid per tile: 36 placeholders after the 2 x 2 pixel shuffle
PER_TILE = (PX // PATCH // SCALE) ** 2
TILES = 2  # every image of these prompts is cut into two tiles (e.g. one crop and the global view)
FAMILIES = {
    "idefics3": (Idefics3Config, Idefics3ForConditionalGeneration),
    "smolvlm": (SmolVLMConfig, SmolVLMForConditionalGeneration),
}


def build(family: str, seed: int = 0):
    config_cls, model_cls = FAMILIES[family]
    text = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.2,  # random logits far apart, so greedy choices do not flip on float noise
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, image_size=PX, patch_size=4
    )
    config = config_cls(vision_config=vision, text_config=text, scale_factor=SCALE, image_token_id=IMAGE)
    config.initializer_range = 0.2
    torch.manual_seed(seed)
    model = model_cls._from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval()
    model.generation_config.pad_token_id = PAD
    return model


def sample(text: tuple[int, ...], seed: int) -> list[int]:
    """Text pieces around TILES placeholder runs (one per tile)."""
    g = torch.Generator().manual_seed(seed)
    pieces = [torch.randint(3, IMAGE, (n,), generator=g).tolist() for n in text]
    ids = pieces[0]
    for piece in pieces[1:]:
        ids += [IMAGE] * PER_TILE + piece
    return ids


def inputs(texts: list[tuple[int, ...]], seeds: list[int]) -> dict:
    """Left-padded prompts and their tiles as (batch, tiles, 3, H, W) pixel values."""
    samples = [sample(t, s) for t, s in zip(texts, seeds, strict=True)]
    width = max(map(len, samples))
    ids = torch.full((len(samples), width), PAD)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(samples):
        ids[row, width - len(s) :] = torch.tensor(s)
        mask[row, width - len(s) :] = 1
    pixels = [torch.randn(TILES, 3, PX, PX, generator=torch.Generator().manual_seed(100 + s)) for s in seeds]
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.stack(pixels)}


TEXTS, SEEDS = [(3, 2, 4), (6, 1, 5)], [0, 1]  # 81 and 84 tokens: the first is left-padded


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model(request):
    return build(request.param)


def logits(model, batch, **kwargs):
    with torch.no_grad():
        return model(**batch, **kwargs).logits


def test_keep_one_is_bit_identical(model):
    batch = inputs(TEXTS, SEEDS)
    reference = logits(model, batch)
    with tokenfunnel.compress(model, "luvc", keep=1.0) as handle:
        assert torch.equal(logits(model, batch), reference)
        report = handle.report()
    assert report["llm_visual_tokens"] == [TILES * PER_TILE] * 4
    assert report["grids"] == [[6, 6]] * TILES


def test_remove_restores(model):
    batch = inputs(TEXTS, SEEDS)
    reference = logits(model, batch)
    handle = tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT)
    assert not torch.equal(logits(model, batch)[:, -1], reference[:, -1])
    handle.remove()
    assert torch.equal(logits(model, batch), reference)
    core = model.model
    patched = [model, core, core.text_model, core.vision_model, core.connector, *core.vision_model.encoder.layers]
    assert not any("forward" in m.__dict__ or "pixel_shuffle" in m.__dict__ for m in patched)


@pytest.mark.parametrize("keep, grid", [(0.25, [4, 5]), (0.3, [5, 5])])
def test_padded_batch_matches_single_runs(model, keep, grid):
    with tokenfunnel.compress(model, "luvc", keep=keep, **SPLIT) as handle:
        both = logits(model, inputs(TEXTS, SEEDS))
        report = handle.report()
        for row, (text, seed) in enumerate(zip(TEXTS, SEEDS, strict=True)):
            alone = logits(model, inputs([text], [seed]))[0]
            torch.testing.assert_close(both[row, -len(alone) :], alone, rtol=1e-4, atol=1e-4)
    assert report["grids"] == [grid] * TILES  # 2 * grid leaves the encoder; 4 x 5 is not square
    assert report["patch_grid"] == [PX // PATCH] * 2
    assert report["encoder_tokens"][-1] == 12 * 10  # the rows of the last layer merge after its attention
    assert report["visual_tokens"] == TILES * grid[0] * grid[1] >= report["llm_visual_tokens"][0]
    assert report["llm_visual_tokens"][-1] == 0
    layers = len(report["llm_visual_tokens"])
    # within one token per layer of the request
    assert abs(report["keep"] - keep) * report["original_visual_tokens"] <= 1
    assert sum(report["llm_visual_tokens"]) == pytest.approx(keep * layers * TILES * PER_TILE, abs=layers)
    boxes = torch.tensor(report["boxes"][0])  # each token covers a rectangle of original patches; together all
    area = ((boxes[:, 1] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 2] + 1)).sum()
    assert area == (PX // PATCH) ** 2


def test_generate_batch_matches_single(model):
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT):
        both = model.generate(**inputs(TEXTS, SEEDS), **kwargs)[:, -4:]
        for row, (text, seed) in enumerate(zip(TEXTS, SEEDS, strict=True)):
            assert torch.equal(both[row], model.generate(**inputs([text], [seed]), **kwargs)[0, -4:])
    single = inputs(TEXTS[:1], SEEDS[:1])
    reference = model.generate(**single, **kwargs)
    with tokenfunnel.compress(model, "luvc", keep=1.0):
        assert torch.equal(model.generate(**single, **kwargs), reference)


def test_proportional_attention_runs(model):
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT, proportional=True) as handle:
        out = logits(model, inputs(TEXTS, SEEDS))
        assert handle.report()["grids"] == [[4, 5]] * TILES
    assert torch.isfinite(out).all()


def test_labels_are_refused(model):
    batch = inputs(TEXTS, SEEDS)
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT), pytest.raises(ValueError, match="labels"):
        logits(model, batch, labels=batch["input_ids"])


def test_a_failed_call_leaves_no_stale_state(model):
    batch = inputs(TEXTS, SEEDS)
    text = {"input_ids": batch["input_ids"][:, -4:], "attention_mask": batch["attention_mask"][:, -4:]}
    reference = logits(model, text)
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT) as handle:
        assert handle.encoder_grid(12, 12) == (8, 10)  # known before any image: what sizes a serving prompt
        with pytest.raises((RuntimeError, ValueError, IndexError)):
            logits(model, {**batch, "attention_mask": batch["attention_mask"][:, 1:]})
        assert torch.equal(logits(model, text), reference)


def test_unequal_tile_counts_are_refused(model):
    batch = inputs(TEXTS[:1], SEEDS[:1])
    batch["pixel_values"] = batch["pixel_values"][:, :1]  # one tile for two placeholder runs
    with (
        tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT),
        pytest.raises(ValueError, match="same number of images"),
    ):
        logits(model, batch)


def test_encoder_halves_reproduce_the_layer(model):
    layer = model.model.vision_model.encoder.layers[0]
    attention, mlp = halves(layer)
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        assert torch.equal(mlp(layer, attention(layer, x, None)), layer(x, None))


def test_shuffle_matches_connector_and_keeps_blocks(model):
    x = torch.randn(3, 36, 8)
    assert torch.equal(shuffle.shuffle(x, 6, 6, 2), model.model.connector.pixel_shuffle(x, 2))
    # a 4 x 6 grid of tokens numbered in raster order: token (i, j) stacks rows 2i..2i+1, columns 2j..2j+1
    cells = torch.arange(24.0).view(1, 24, 1)
    out = shuffle.shuffle(cells, 4, 6, 2).view(2, 3, 4)
    assert out[1, 2].tolist() == [16, 17, 22, 23]


def test_steps_keep_the_grid_divisible():
    from tokenfunnel.methods.luvc import LUVC, LUVCConfig

    plan = LUVC(LUVCConfig(keep=0.2, **SPLIT))
    steps = shuffle.scaled_steps(plan, 12, 12, 4, 2)
    h = w = 12
    for axis, r in steps.values():
        h, w = (h - r, w) if axis == "rows" else (h, w - r)
    assert h % 2 == 0 and w % 2 == 0 and (h, w) != (12, 12)
    with pytest.raises(ValueError, match="cannot be pixel-shuffled"):
        shuffle.scaled_steps(plan, 12, 11, 4, 2)
