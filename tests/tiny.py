"""Tiny random-weight LLaVA models (one per vision tower) and prompts for them, for runtime tests that take seconds.

Import as ``from tiny import ...``: pytest puts ``tests/`` on ``sys.path`` because tests/conftest.py has no package.
Shapes: 112 px images with 14 px patches give an 8 x 8 grid, so each image fills a run of 64 ``<image>`` tokens.
"""

from __future__ import annotations

import torch
from transformers import (
    CLIPVisionConfig,
    Dinov2Config,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SiglipVisionConfig,
)

VOCAB = 128
IMAGE_TOKEN = VOCAB - 1  # the <image> placeholder
PAD = 0  # never drawn as a text token, so padding is always recognisable
IMAGE_PX, PATCH = 112, 14
GRID = (IMAGE_PX // PATCH, IMAGE_PX // PATCH)
PATCHES = GRID[0] * GRID[1]
TOWERS = ("dinov2", "clip", "siglip")
# larger than transformers' 0.02 so random logits are far apart: greedy choices then do not flip on 1e-6 noise
INIT = 0.2


def vision_config(tower: str, layers: int = 4, hidden: int = 32):
    common = dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, image_size=IMAGE_PX, patch_size=PATCH
    )
    if tower == "dinov2":
        return Dinov2Config(mlp_ratio=2, **common)
    if tower == "clip":
        return CLIPVisionConfig(intermediate_size=2 * hidden, **common)
    if tower == "siglip":
        return SiglipVisionConfig(intermediate_size=2 * hidden, **common)
    raise ValueError(f"unknown tower {tower!r}; use one of {TOWERS}")


def text_config(layers: int = 6, hidden: int = 64) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=INIT,
    )


def build(
    tower: str = "dinov2",
    *,
    seed: int = 0,
    attn: str = "sdpa",
    feature_layer: int = -1,
    strategy: str = "default",
    encoder_layers: int = 4,
    text_layers: int = 6,
) -> LlavaForConditionalGeneration:
    """A tiny LLaVA in eval mode, fp32; the same arguments always give the same weights."""
    config = LlavaConfig(
        vision_config=vision_config(tower, encoder_layers),
        text_config=text_config(text_layers),
        image_token_id=IMAGE_TOKEN,
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=strategy,
        image_seq_length=image_tokens(tower, strategy),
    )
    config.initializer_range = INIT
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation=attn, dtype=torch.float32)
    # no early stop on a random eos, so generate() and a hand-written greedy loop always emit the same number
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = None
    return model.eval()


def image_tokens(tower: str, strategy: str = "default") -> int:
    """Placeholders per image the *unmodified* model expects. "default" drops the first token of every tower's
    features, which for SigLIP (no class token) is a real patch; "full" keeps CLIP's and DINOv2's class token."""
    has_cls = tower != "siglip"
    if strategy == "default":
        return PATCHES if has_cls else PATCHES - 1
    return PATCHES + 1 if has_cls else PATCHES


def sample_ids(text: list[int], images: int = 1, per_image: int = PATCHES, seed: int = 0) -> list[int]:
    """Text tokens split into ``images + 1`` pieces with a run of ``per_image`` placeholders between each two."""
    g = torch.Generator().manual_seed(seed)
    pieces = [torch.randint(3, IMAGE_TOKEN, (n,), generator=g).tolist() for n in text]
    if len(pieces) != images + 1:
        raise ValueError(f"need {images + 1} text lengths for {images} images, got {text}")
    ids = pieces[0]
    for piece in pieces[1:]:
        ids += [IMAGE_TOKEN] * per_image + piece
    return ids


def batch(samples: list[list[int]], images: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``/``attention_mask`` and random ``pixel_values`` (images of all samples, in order)."""
    width = max(len(s) for s in samples)
    ids = torch.full((len(samples), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(samples):
        ids[row, width - len(s) :] = torch.tensor(s)
        mask[row, width - len(s) :] = 1
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(samples) * images, 3, IMAGE_PX, IMAGE_PX, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def prompt(text: tuple[int, ...] = (5, 7), images: int = 1, seed: int = 0, per_image: int = PATCHES) -> dict:
    """One sample: ``text[i]`` text tokens around each image run, and its random image(s)."""
    return batch([sample_ids(list(text), images, per_image, seed)], images, seed)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only (as tokenfunnel's scoring does), so padding does not shift them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


SHORT, LONG = [3, 4], [9, 6]  # text around the image of two prompts of different lengths


def logits(model, inputs: dict) -> torch.Tensor:
    """Logits of a forward with positions that skip padding."""
    with torch.no_grad():
        return model(**inputs, position_ids=positions(inputs["attention_mask"])).logits


def generate(model, inputs: dict, n: int = 5) -> torch.Tensor:
    """The ``n`` greedy tokens after the prompt."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False)
    return out[:, inputs["input_ids"].shape[1] :]


def pair(seed: int = 0) -> tuple[dict, list[dict]]:
    """A left-padded batch of a short and a long prompt, and each prompt alone with the same image."""
    samples = [sample_ids(SHORT, seed=seed), sample_ids(LONG, seed=seed + 1)]
    together = batch(samples, seed=seed)
    alone = []
    for row, s in enumerate(samples):
        one = batch([s])
        one["pixel_values"] = together["pixel_values"][row : row + 1]
        alone.append(one)
    return together, alone


def assert_rows_match_alone(model, alone: list[dict], last: torch.Tensor, gen: torch.Tensor, n: int = 5) -> None:
    """Each row of a padded batch (its last-position logits ``last`` and ``n`` generated tokens ``gen``) equals its
    prompt in ``alone`` run by itself (as ``pair`` gives them)."""
    for row, one in enumerate(alone):
        torch.testing.assert_close(last[row], logits(model, one)[0, -1], atol=1e-4, rtol=0)
        assert torch.equal(gen[row], generate(model, one, n)[0])


class Said:
    """A tokenizer stand-in that decodes any ids to one fixed question."""

    def __init__(self, text: str) -> None:
        self.text = text

    def decode(self, ids, skip_special_tokens=True):
        return self.text
