"""The models a benchmark can run: the bundled VLM, a random-weight LLaVA-1.5-7B-shaped model, or a local folder.

Each comes as a ``BenchModel``: the model, a processor that turns (images, questions) into a batch on the model's
device (``None`` when answers would be meaningless), and how to build the prompts that timing runs on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tokenfunnel.bench.errors import BenchError
from tokenfunnel.bench.flops import context_flops, prefill_flops
from tokenfunnel.data.easyvqa import model_input
from tokenfunnel.data.video import frames_of
from tokenfunnel.ops.positions import prompt_positions

SHAPE = "llava-7b-shape"
NAMES = ("bundled", SHAPE)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BenchModel:
    name: str  # as rows record it: "bundled", "llava-7b-shape" or the folder
    model: torch.nn.Module
    processor: object | None  # processor(images, questions) -> batch on ``device``; None: no accuracy
    image_token_id: int
    device: torch.device
    positions: bool = True  # pass prompt positions explicitly (LLaVA; M-RoPE families build their own)
    _adapter: object | None = field(default=None, repr=False)

    @property
    def adapter(self):
        """The tokenfunnel family adapter: where the vision tower, its layers and the text model are."""
        if self._adapter is None:
            from tokenfunnel.adapters import adapter_for

            self._adapter = adapter_for(self.model)
        return self._adapter

    @property
    def text_config(self):
        return self.model.config.text_config

    @property
    def vision_config(self):
        return self.model.config.vision_config

    @property
    def decoder_layers(self) -> int:
        return self.text_config.num_hidden_layers

    def prompt_tokens(self, batch: dict) -> tuple[int, int]:
        """(text, visual) tokens of a batch-1 prompt as the uncompressed model sees it."""
        visual = int((batch["input_ids"][0] == self.image_token_id).sum())
        return int(batch["attention_mask"][0].sum()) - visual, visual

    def llm_tokens(self, report: dict, visual: int) -> list[int]:
        """Visual tokens entering each decoder layer in the forward a handle's ``report`` describes (``{}``: the
        uncompressed model, ``visual`` in every layer)."""
        return list(report.get("llm_visual_tokens") or [report.get("visual_tokens", visual)] * self.decoder_layers)

    def llm_flops(self, report: dict, text: int, visual: list[int]) -> float:
        """FLOPs of the language model's prefill in the forward ``report`` describes, ``text`` text tokens and
        ``visual`` visual tokens entering each layer, with LUVC's frozen context (``context="frozen"``; the first
        sample's when samples differ) where it has one."""
        frozen = report.get("llm_context_tokens") or [0] * self.decoder_layers
        frozen = frozen[0] if isinstance(frozen[0], list) else frozen
        tokens = [text + n for n in visual]
        return prefill_flops(tokens, self.text_config) + context_flops(frozen, visual, self.text_config)

    def inputs(self, batch: dict) -> dict:
        """Keyword arguments of a forward on ``batch`` (its tensors, plus prompt positions where they apply)."""
        if self.positions:
            return {**batch, "position_ids": prompt_positions(batch["attention_mask"])}
        return dict(batch)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def prompts(self, items: list, count: int) -> list[dict]:
        """``count`` batch-1 prompts for timing: the first dataset items, or synthetic ones for a shape model."""
        if self.processor is None:
            return [synthetic_batch(self.model.config, seed, self.device, dtype=self.dtype) for seed in range(count)]
        return [self.processor([model_input(item)], [item.question]) for item in items[:count]]


class OnDevice:
    """Wraps a processor so that its batches land on the model's device, pixels in its dtype (scoring calls it
    directly)."""

    def __init__(self, processor, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self._processor, self._device, self._dtype = processor, device, dtype

    def __call__(self, images, questions):
        # BatchFeature.to moves every tensor and casts only the floating ones (pixels), never the token ids
        return self._processor(images, questions).to(device=self._device, dtype=self._dtype)

    def __getattr__(self, name: str):
        return getattr(self._processor, name)


class ChatProcessor:
    """(images, questions) -> a left-padded batch for a transformers VLM, each question put through the
    processor's own chat template as one user turn holding the image (or a video's frames, one image part each)
    and the question."""

    def __init__(self, processor) -> None:
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "chat_template", None) is None:
            raise BenchError(f"{type(processor).__name__} has no tokenizer with a chat template; cannot build prompts")
        tokenizer.padding_side = "left"
        self.processor, self.tokenizer = processor, tokenizer
        self.image_processor = getattr(processor, "image_processor", None)  # its normalisation, for processor_options
        token_id = getattr(processor, "image_token_id", None)
        if token_id is None:
            token_id = tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", "<image>"))
        self.image_token_id = int(token_id)

    def __call__(self, images, questions):
        videos = [frames_of(item, index) for index, item in enumerate(images)]
        prompts = [
            self.processor.apply_chat_template(
                [{"role": "user", "content": [*[{"type": "image"}] * len(frames), {"type": "text", "text": q}]}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for q, frames in zip(questions, videos, strict=True)
        ]
        # one flat list in prompt order: transformers' multi-image processors hand images to placeholders in turn
        rgb = [frame.convert("RGB") for frames in videos for frame in frames]
        return self.processor(images=rgb, text=prompts, return_tensors="pt", padding=True)

    def decode(self, token_ids) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()


def llava_shaped(layers: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """Random weights in LLaVA-1.5-7B's shapes (CLIP ViT-L/14 at 336 px = 576 visual tokens; Llama-7B layers:
    hidden 4096, MLP 11008, 32 heads) with only ``layers`` decoder layers, so it fits in a CPU's memory: every
    layer has the same shape, so per-layer cost ratios are the 32-layer model's. Built on ``device`` in ``dtype``
    directly (a 32-layer model never passes through a CPU's memory in float32)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    text = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32064,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=32000,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = None  # random weights: never stop early, always emit what was asked
    model.generation_config.pad_token_id = 0
    return model


def synthetic_batch(
    config, seed: int = 0, device: torch.device | str = "cpu", text: int = 20, dtype: torch.dtype = torch.float32
) -> dict:
    """One LLaVA prompt: ``text`` tokens before and after the image's placeholders, and a random image."""
    vc = config.vision_config
    visual = (vc.image_size // vc.patch_size) ** 2
    token = config.image_token_id
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(3, min(token, config.text_config.vocab_size), (2 * text,), generator=g)
    ids = torch.cat([words[:text], torch.full((visual,), token), words[text:]])[None]
    pixels = torch.randn(1, vc.num_channels, vc.image_size, vc.image_size, generator=g).to(dtype)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
    return {k: v.to(device) for k, v in batch.items()}


def _bundled(device: torch.device, dtype: torch.dtype) -> BenchModel:
    from tokenfunnel.models.bundled import load_bundled
    from tokenfunnel.models.errors import BundledModelError

    try:
        model, processor = load_bundled(quiet=True)
    except BundledModelError as error:
        raise BenchError(str(error)) from None
    model.to(device, dtype)
    return BenchModel("bundled", model, OnDevice(processor, device, dtype), processor.image_token_id, device)


def _folder(path: Path, device: torch.device, dtype: torch.dtype) -> BenchModel:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = ChatProcessor(AutoProcessor.from_pretrained(str(path)))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise BenchError(f"cannot build a processor from {path}: {error}".splitlines()[0]) from None
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise BenchError(f"cannot load a vision-language model from {path}: {error}".splitlines()[0]) from None
    bench = BenchModel(
        str(path), model.eval().to(device), OnDevice(processor, device, dtype), processor.image_token_id, device
    )
    try:
        bench.adapter  # noqa: B018 - an unsupported family fails here, clearly, before any work
    except TypeError as error:
        raise BenchError(str(error)) from None
    bench.positions = "qwen" not in getattr(model.config, "model_type", "")  # M-RoPE builds its own positions
    return bench


def fingerprint(name: str) -> str:
    """What identifies the weights a sweep measures, so a resumed sweep never reuses parts measured on others: the
    bundled VLM's weights and learned compressor by content; a folder's config and weight files by name, size and
    modification time (hashing gigabytes on every run would cost more than it saves)."""
    if name == SHAPE:
        return "random-seeded"
    if name == "bundled":
        from tokenfunnel.methods.learned import default_weights
        from tokenfunnel.models.bundled import trained_weights_path

        digest = hashlib.sha256()
        for path in (trained_weights_path(), default_weights()):
            digest.update(path.read_bytes() if path.exists() else b"missing")
        return digest.hexdigest()[:16]
    folder = Path(name).expanduser()
    files = sorted(p for p in folder.glob("*") if p.suffix in (".json", ".safetensors", ".bin") and p.is_file())
    stamp = "".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in files)
    return hashlib.sha256(stamp.encode()).hexdigest()[:16]


def load_model(name: str, layers: int, device: torch.device, dtype: torch.dtype = torch.float32) -> BenchModel:
    """``bundled``, ``llava-7b-shape`` (``layers`` decoder layers) or a local folder of a supported family, its
    weights in ``dtype``."""
    if name == "bundled":
        return _bundled(device, dtype)
    if name == SHAPE:
        model = llava_shaped(layers, device, dtype)
        return BenchModel(SHAPE, model, None, model.config.image_token_id, device)
    path = Path(name).expanduser()
    if not path.is_dir():
        raise BenchError(f"unknown model {name!r}: use {', '.join(NAMES)} or a local model folder")
    return _folder(path, device, dtype)
