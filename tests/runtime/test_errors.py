"""Bad input gives one clear error and leaves the model as it was: untouched if compress() fails, still compressed
(and exactly removable) if a forward on a compressed model fails.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

import tokenfunnel
from tiny import PAD, batch, build, positions, prompt, sample_ids, text_config
from tokenfunnel import LUVCConfig
from tokenfunnel.runtime.patch import MARK

TEXT = {"input_ids": torch.tensor([[5, 9, 14, 20, 7, 3, 11]])}  # a text-only prompt


def logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
        return model(**inputs, position_ids=positions(mask)).logits


def assert_untouched(model, inputs: dict, ref: torch.Tensor) -> None:
    assert not hasattr(model, MARK)
    assert [n for n, m in model.named_modules() if "forward" in m.__dict__] == []
    assert torch.equal(logits(model, inputs), ref)


@pytest.fixture
def model():
    return build()


@pytest.fixture
def inputs():
    return prompt()


# -- compress() refuses: nothing is installed ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("luvc",), dict(keep=0), ValueError, "keep must be in"),
        (("luvc",), dict(keep=-0.5), ValueError, "keep must be in"),
        (("luvc",), dict(keep=1.5), ValueError, "keep must be in"),
        (("fastvv",), dict(keep=0.25), ValueError, "unknown method .fastvv.; available: luvc, luvc-focus, fastv"),
        (("luvc",), dict(keep=0.25, ratio=2), TypeError, "luvc has no option ratio"),
        (("luvc",), dict(keep=0.25, shape="cubic"), ValueError, "shape must be one of"),
        ((LUVCConfig(keep=0.25),), dict(keep=0.5), TypeError, "not both"),
        ((object(),), {}, TypeError, "unknown config type object"),
    ],
    ids=["keep0", "keep-neg", "keep>1", "method", "option", "shape", "config+kw", "config-type"],
)
def test_bad_arguments_to_compress_leave_the_model_untouched(model, inputs, args, kwargs, error, match):
    ref = logits(model, inputs)
    with pytest.raises(error, match=match):
        tokenfunnel.compress(model, *args, **kwargs)
    assert_untouched(model, inputs, ref)


def test_compressing_twice_is_refused_and_the_first_handle_still_works(model, inputs):
    ref = logits(model, inputs)
    first = tokenfunnel.compress(model, "luvc", keep=0.25)
    compressed = logits(model, inputs)
    with pytest.raises(RuntimeError, match="already compressed"):
        tokenfunnel.compress(model, "luvc", keep=0.5)
    assert torch.equal(logits(model, inputs), compressed)
    first.remove()
    assert_untouched(model, inputs, ref)


def test_an_unsupported_model_class_is_refused_naming_the_supported_ones():
    torch.manual_seed(0)
    llm = LlamaForCausalLM(text_config()).eval()
    ref = logits(llm, TEXT)
    with pytest.raises(TypeError, match=r"LlamaForCausalLM is not a supported VLM.*LlavaForConditionalGeneration"):
        tokenfunnel.compress(llm, "luvc", keep=0.25)
    assert_untouched(llm, TEXT, ref)


def test_report_before_any_image_forward_says_what_to_do(model):
    with tokenfunnel.compress(model, "luvc", keep=0.25) as handle, pytest.raises(RuntimeError, match="run a forward"):
        handle.report()


# -- a forward on a compressed model refuses: the model stays compressed, exactly ---------------------------


def _fails_cleanly(model, inputs, bad: dict, error, match: str | None) -> None:
    """``bad`` raises ``error``; afterwards image and text-only prompts give what they gave before it, and
    removing the handle restores the model bit for bit."""
    ref, ref_text = logits(model, inputs), logits(model, TEXT)
    with tokenfunnel.compress(model, "luvc", keep=0.25):
        compressed, text = logits(model, inputs), logits(model, TEXT)
        assert torch.equal(text, ref_text)  # text-only prompts pass through a compressed model unchanged
        with pytest.raises(error, match=match), torch.no_grad():
            model(**bad)
        assert torch.equal(logits(model, TEXT), text)
        assert torch.equal(logits(model, inputs), compressed)
    assert_untouched(model, inputs, ref)


def test_pixel_values_without_placeholders(model, inputs):
    bad = {"input_ids": TEXT["input_ids"], "pixel_values": inputs["pixel_values"]}
    _fails_cleanly(model, inputs, bad, ValueError, "no <image> placeholder")


def test_samples_with_different_numbers_of_images(model, inputs):
    bad = batch([sample_ids([2, 3, 4], images=2), sample_ids([9, 6], images=1, seed=1)])
    bad["pixel_values"] = torch.randn(3, 3, 112, 112)
    _fails_cleanly(model, inputs, bad, ValueError, "same number of images")


def test_a_grid_oim_cannot_reach_in_the_layers_left(inputs):
    model = build()
    ref = logits(model, inputs)
    # 8x8 -> 1x2 needs three halvings per axis; encoder_start=0.9 leaves one layer of the four
    with tokenfunnel.compress(model, "luvc", keep=0.25, grid_keep=0.02, encoder_start=0.9):
        with pytest.raises(ValueError, match="OIM cannot take the 8x8 grid to 1x2"), torch.no_grad():
            model(**inputs)
        assert torch.equal(logits(model, TEXT), logits(build(), TEXT))
    assert_untouched(model, inputs, ref)


def test_features_that_are_not_supported(model, inputs):
    _fails_cleanly(model, inputs, dict(inputs, output_attentions=True), ValueError, "output_attentions")
    embeds = model.get_input_embeddings()(inputs["input_ids"]).detach()
    bad = {"inputs_embeds": embeds, "pixel_values": inputs["pixel_values"]}
    _fails_cleanly(model, inputs, bad, ValueError, "needs input_ids")


def test_a_clip_tower_with_full_features_is_refused():
    model = build("clip", strategy="full")
    inputs = prompt(per_image=65)  # the class token is a feature too
    ref = logits(model, inputs)
    # refused up front: the class token would reach the LLM outside the grid
    with pytest.raises(ValueError, match="needs vision_feature_select_strategy='default'"):
        tokenfunnel.compress(model, "luvc", keep=0.25)
    assert_untouched(model, inputs, ref)


def test_a_failure_inside_the_compressed_forward_leaves_no_stale_state(model, inputs):
    # an attention mask one token short fails after the adapter has staged the pruned layout for the text model;
    # the next text-only forward must not pick that layout up
    bad = dict(inputs, attention_mask=inputs["attention_mask"][:, 1:])
    _fails_cleanly(model, inputs, bad, (RuntimeError, ValueError, IndexError), None)


def test_labels_give_a_loss_over_the_input_or_a_clear_error(model, inputs):
    # a compressed forward returns logits for surviving tokens only, so labels aligned with input_ids cannot apply
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == PAD, -100)
    with tokenfunnel.compress(model, "luvc", keep=0.25), torch.no_grad():
        try:
            out = model(**inputs, labels=labels)
        except ValueError as err:
            assert "labels" in str(err), err
        else:
            assert out.logits.shape[1] == labels.shape[1] and torch.isfinite(out.loss)
