"""InternVL adapter on tiny random models: OIM with a class token under the pixel-shuffle projector, tiles, cascade."""

from __future__ import annotations

import pytest
import torch
from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen2Config

import tokenfunnel
from tokenfunnel.adapters.vit import halves

SPLIT = dict(grid_keep=None, shape="linear", final_zero=True)  # OIM, then a cascade to zero (the paper's design)

VOCAB, IMAGE, PAD = 128, 127, 0
PX, PATCH = 48, 4  # a 12 x 12 patch grid per tile: 36 placeholders after the 2 x 2 pixel shuffle
PER_TILE = (PX // PATCH // 2) ** 2
TILES = 2  # each image is cut into two tiles, which share one placeholder run


def build(feature_layer: int = -1, seed: int = 0) -> InternVLForConditionalGeneration:
    text = Qwen2Config(
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
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=[PX, PX],
        patch_size=[PATCH, PATCH],
        initializer_range=0.2,
    )
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE,
        image_seq_length=PER_TILE,
        vision_feature_layer=feature_layer,
    )
    config.initializer_range = 0.2
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    with torch.no_grad():  # transformers initialises these to zero; make them matter
        model.model.vision_tower.embeddings.cls_token.normal_()
        model.model.vision_tower.embeddings.position_embeddings.normal_(std=0.2)
    model.generation_config.pad_token_id = PAD
    return model.eval()


def sample(text: tuple[int, int], seed: int) -> list[int]:
    """Text, one placeholder run for the TILES tiles of one image, text."""
    g = torch.Generator().manual_seed(seed)
    before, after = (torch.randint(3, IMAGE, (n,), generator=g).tolist() for n in text)
    return before + [IMAGE] * (TILES * PER_TILE) + after


def inputs(texts: list[tuple[int, int]], seeds: list[int]) -> dict:
    """Left-padded prompts and the tiles of all samples as (batch * tiles, 3, H, W) pixel values."""
    samples = [sample(t, s) for t, s in zip(texts, seeds, strict=True)]
    width = max(map(len, samples))
    ids = torch.full((len(samples), width), PAD)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(samples):
        ids[row, width - len(s) :] = torch.tensor(s)
        mask[row, width - len(s) :] = 1
    pixels = [torch.randn(TILES, 3, PX, PX, generator=torch.Generator().manual_seed(100 + s)) for s in seeds]
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.cat(pixels)}


TEXTS, SEEDS = [(3, 4), (7, 2)], [0, 1]


@pytest.fixture(scope="module")
def model():
    return build()


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
    assert report["encoder_tokens"] == [1 + (PX // PATCH) ** 2] * 4  # the class token is counted, never merged


def test_remove_restores(model):
    batch = inputs(TEXTS, SEEDS)
    reference = logits(model, batch)
    handle = tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT)
    assert not torch.equal(logits(model, batch)[:, -1], reference[:, -1])
    handle.remove()
    assert torch.equal(logits(model, batch), reference)
    core = model.model
    patched = [model, core, core.language_model, core.vision_tower, *core.vision_tower.encoder.layer]
    assert not any("forward" in m.__dict__ for m in patched)
    assert "get_image_features" not in core.__dict__


@pytest.mark.parametrize("keep, grid", [(0.25, [4, 5]), (0.3, [5, 5])])
def test_padded_batch_matches_single_runs(model, keep, grid):
    with tokenfunnel.compress(model, "luvc", keep=keep, **SPLIT) as handle:
        both = logits(model, inputs(TEXTS, SEEDS))
        report = handle.report()
        for row, (text, seed) in enumerate(zip(TEXTS, SEEDS, strict=True)):
            alone = logits(model, inputs([text], [seed]))[0]
            torch.testing.assert_close(both[row, -len(alone) :], alone, rtol=1e-4, atol=1e-4)
    assert report["grids"] == [grid] * TILES  # 2 * grid leaves the encoder; 4 x 5 is not square
    assert report["encoder_tokens"][-1] == 1 + 12 * 10  # class token + grid after the column merge of layer 2
    assert report["visual_tokens"] == TILES * grid[0] * grid[1] >= report["llm_visual_tokens"][0]
    assert report["llm_visual_tokens"][-1] == 0
    # within one token per layer of the request
    assert abs(report["keep"] - keep) * report["original_visual_tokens"] <= 1
    boxes = torch.tensor(report["boxes"][1])  # each token covers a rectangle of original patches; together all
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


def test_earlier_feature_layer():
    """vision_feature_layer=-2: the last encoder layer does not feed the projector, so merges stop before it."""
    model = build(feature_layer=-2)
    batch = inputs(TEXTS[:1], SEEDS[:1])
    reference = logits(model, batch)
    with tokenfunnel.compress(model, "luvc", keep=1.0):
        assert torch.equal(logits(model, batch), reference)
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT, proportional=True) as handle:
        out = logits(model, batch)
        report = handle.report()
    assert torch.isfinite(out).all()
    assert report["grids"] == [[4, 5]] * TILES
    assert report["llm_visual_tokens"][-1] == 0


def test_unsupported_calls_are_refused(model):
    batch = inputs(TEXTS[:1], SEEDS[:1])
    with tokenfunnel.compress(model, "luvc", keep=0.25, **SPLIT):
        with pytest.raises(ValueError, match="vision_feature_select_strategy"):
            logits(model, batch, vision_feature_select_strategy="full")
        with pytest.raises(ValueError, match="vision_feature_layer"):
            logits(model, batch, vision_feature_layer=-2)
        with pytest.raises(ValueError, match="same number of images"):
            logits(model, {**batch, "pixel_values": batch["pixel_values"][:1]})
        with pytest.raises(ValueError, match="labels"):
            logits(model, batch, labels=batch["input_ids"])
        with pytest.raises(ValueError, match="input_ids"):
            logits(
                model,
                {
                    "inputs_embeds": model.get_input_embeddings()(batch["input_ids"]),
                    "pixel_values": batch["pixel_values"],
                },
            )


def test_encoder_halves_reproduce_the_layer(model):
    layer = model.model.vision_tower.encoder.layer[0]
    attention, mlp = halves(layer)
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        assert torch.equal(mlp(layer, attention(layer, x, None)), layer(x))


def test_projector_shuffle_keeps_blocks_on_a_merged_grid(model):
    """The adapter relies on InternVL's pixel_shuffle stacking 2 x 2 blocks in raster order for any h x w grid."""
    cells = torch.arange(24.0).view(1, 4, 6, 1)  # a 4 x 6 grid of tokens numbered in raster order
    out = model.model.pixel_shuffle(cells, scale_factor=0.5)
    assert out.shape == (1, 2, 3, 4)
    assert out[0, 1, 2].tolist() == [16, 17, 22, 23]
