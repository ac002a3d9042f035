import torch
from transformers import Dinov2Model, LlamaModel, LlavaForConditionalGeneration

from tokenfunnel.eval.scoring import prompt_positions


def test_bundled_is_a_genuine_llava_with_dinov2_and_smollm2(bundled):
    model, processor = bundled
    assert type(model) is LlavaForConditionalGeneration
    assert isinstance(model.model.vision_tower, Dinov2Model)
    assert isinstance(model.model.language_model, LlamaModel)
    text = model.config.text_config
    assert (text.num_hidden_layers, text.hidden_size) == (30, 576)
    assert model.config.image_token_id == processor.image_token_id == 49152
    assert model.get_input_embeddings().weight.shape[0] == 49153
    # tied word embeddings and LM head, as in SmolLM2
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert not model.training


def test_processor_expands_image_placeholder_in_the_lm_chat_template(bundled, astronaut):
    _, processor = bundled
    batch = processor([astronaut], ["What color is the shape?"])
    assert batch["pixel_values"].shape == (1, 3, 224, 224)
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == 256
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("What color is the shape?<|im_end|>\n<|im_start|>assistant\n")


def test_left_padded_batch_matches_single_runs(bundled, astronaut):
    model, processor = bundled
    questions = ["what color is the shape?", "In the bottom-right picture, is there not a teal shape in the image?"]
    images = [astronaut, astronaut.rotate(90)]
    batch = processor(images, questions)
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # the short one is padded
    with torch.no_grad():
        together = model(**batch, position_ids=prompt_positions(batch["attention_mask"])).logits[:, -1]
        for row, (image, question) in enumerate(zip(images, questions, strict=True)):
            alone = processor([image], [question])
            single = model(**alone, position_ids=prompt_positions(alone["attention_mask"])).logits[0, -1]
            torch.testing.assert_close(together[row], single, rtol=1e-4, atol=1e-4)


def test_generate_answers_and_stops_at_end_of_turn(bundled):
    from tokenfunnel.data import easyvqa

    model, processor = bundled
    samples = easyvqa.single_set(2, seed=11)
    batch = processor([s.image for s in samples], [s.question for s in samples])
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    for row in out[:, batch["input_ids"].shape[1] :]:
        answer = processor.decode(row)
        assert answer in easyvqa.answers()
