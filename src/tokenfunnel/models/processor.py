"""Turns (image, question) pairs into bundled-VLM inputs: a `LlavaProcessor` (which expands `<image>` to the
visual token count) fed with prompts in SmolLM2's own chat template.

A video is a list of frames: the user turn holds one `<image>` per frame, as a LLaVA-style model sees several
images, and its frames take their place in `pixel_values` in order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from transformers import AutoTokenizer, BatchFeature, CLIPImageProcessorPil, LlavaProcessor

from tokenfunnel.data.video import frames_of

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 224
PATCH_SIZE = 14
SYSTEM_PROMPT = "Answer the question about the image with one word."
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class BundledProcessor:
    """Chat-formats questions and prepares images for the bundled VLM.

    `processor(images, questions)` returns a left-padded batch ready for `model(**batch)` or
    `model.generate(**batch)`. Each item of `images` is one PIL image or a list/tuple of PIL frames (a video).
    """

    def __init__(self, tokenizer) -> None:
        tokenizer.padding_side = "left"
        image_processor = CLIPImageProcessorPil(
            do_resize=True,
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            resample=Image.Resampling.BICUBIC,
            do_center_crop=False,
            do_convert_rgb=True,
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
        )
        self.llava = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=PATCH_SIZE,
            vision_feature_select_strategy="default",
            image_token=IMAGE_TOKEN,
            num_additional_image_tokens=1,
        )
        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    @classmethod
    def from_tokenizer_dir(cls, folder: Path) -> BundledProcessor:
        return cls(AutoTokenizer.from_pretrained(str(folder)))

    def messages(self, question: str, answer: str | None = None, frames: int = 1) -> list[dict[str, str]]:
        turns = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{IMAGE_TOKEN * frames}\n{question}"},
        ]
        if answer is not None:
            turns.append({"role": "assistant", "content": answer})
        return turns

    def prompt(self, question: str, frames: int = 1) -> str:
        """The chat-formatted prompt for an image (or a video of `frames` frames), ending where the assistant's
        answer starts."""
        turns = self.messages(question, frames=frames)
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    def __call__(self, images: Sequence[Image.Image | Sequence[Image.Image]], questions: Sequence[str]) -> BatchFeature:
        if len(images) != len(questions):
            raise ValueError(f"got {len(images)} images for {len(questions)} questions: pass one image per question")
        for question in questions:
            if not question or not question.strip():
                raise ValueError("the question is empty: pass a non-empty question")
        videos = [frames_of(item, index) for index, item in enumerate(images)]
        prompts = [self.prompt(q, len(frames)) for q, frames in zip(questions, videos, strict=True)]
        rgb = [frame.convert("RGB") for frames in videos for frame in frames]
        return self.llava(images=rgb, text=prompts, return_tensors="pt", padding=True)

    def decode(self, token_ids) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()
