"""Videos through the processors: one `<image>` run per frame, frames in `pixel_values` in order; scoring takes
clips unchanged."""

import pytest
import torch
from PIL import Image

from tokenfunnel.bench.models import ChatProcessor
from tokenfunnel.data import clips, easyvqa
from tokenfunnel.eval.scoring import answer_logprobs

QUESTION = "What color is the shape?"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def frames():
    return [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue")]


def _image_tokens(processor, batch) -> list[int]:
    return (batch["input_ids"] == processor.image_token_id).sum(-1).tolist()


def test_a_video_gets_one_image_run_per_frame(bundled, frames):
    _, processor = bundled
    batch = processor([frames], [QUESTION])
    assert _image_tokens(processor, batch) == [3 * 256]
    assert batch["pixel_values"].shape == (3, 3, 224, 224)
    for index, frame in enumerate(frames):
        alone = processor([frame], [QUESTION])["pixel_values"][0]
        assert torch.equal(batch["pixel_values"][index], alone)
    assert f"<|im_start|>user\n{'<image>' * 3}\n{QUESTION}<|im_end|>" in processor.prompt(QUESTION, 3)


def test_a_one_frame_video_is_the_plain_image(bundled, astronaut):
    _, processor = bundled
    plain = processor([astronaut], [QUESTION])
    for video in ([astronaut], (astronaut,)):
        batch = processor([video], [QUESTION])
        assert batch.keys() == plain.keys()
        assert all(torch.equal(batch[key], plain[key]) for key in plain)


def test_images_and_videos_mix_in_one_batch(bundled, frames, astronaut):
    _, processor = bundled
    batch = processor([astronaut, frames, frames[:2]], ["q one?", "question two?", "q three?"])
    assert _image_tokens(processor, batch) == [256, 3 * 256, 2 * 256]
    assert batch["pixel_values"].shape[0] == 1 + 3 + 2
    assert torch.equal(batch["pixel_values"][0], processor([astronaut], ["q one?"])["pixel_values"][0])
    assert torch.equal(batch["pixel_values"][4], batch["pixel_values"][1])  # the third item starts on frame 0 again


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([], "item 0 is a video with no frames"),
        ((), "item 0 is a video with no frames"),
        (["red.png"], "item 0 holds a str"),
        ("red.png", "item 0 is a str"),
    ],
)
def test_bad_items_fail_clearly(bundled, item, message):
    _, processor = bundled
    with pytest.raises(ValueError, match=message):
        processor([item], [QUESTION])


def test_scoring_takes_videos_as_they_are(bundled):
    model, processor = bundled
    clip = clips.clip_set(1, seed=5, frames=8)[0]
    single = easyvqa.single_set(1, seed=5)[0]
    # a clip's last three frames keep the prompt short: a full 8-frame clip is 2048 visual tokens
    items, questions = [clip.frames[-3:], single.image], [clip.question, single.question]
    candidates = ("yes", "no", "circle", "rectangle", "red")
    together = answer_logprobs(model, processor, items, questions, candidates)
    assert together.shape == (2, len(candidates)) and torch.isfinite(together).all()
    for row, (item, question) in enumerate(zip(items, questions, strict=True)):
        alone = answer_logprobs(model, processor, [item], [question], candidates)[0]
        torch.testing.assert_close(together[row], alone, rtol=1e-3, atol=1e-3)


def test_chat_processor_puts_one_image_part_per_frame(bundled, frames):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    llava = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112}),
        tokenizer=bundled[1].tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    chat = ChatProcessor(llava)
    batch = chat([frames[0], frames], [QUESTION, QUESTION])
    assert _image_tokens(chat, batch) == [64, 3 * 64]
    assert batch["pixel_values"].shape == (4, 3, 112, 112)
    single = chat([frames[0]], [QUESTION])
    assert torch.equal(chat([[frames[0]]], [QUESTION])["input_ids"], single["input_ids"])
