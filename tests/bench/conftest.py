import json

import pytest
import torch

from tokenfunnel.bench import models

from .helpers import TINY, folder_args, invoke


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="session")
def bundled_bench(bundled):
    """The session's bundled VLM as a BenchModel (loading it again for every CLI call would cost ~15 s each)."""
    model, processor = bundled
    device = torch.device("cpu")
    return models.BenchModel("bundled", model, models.OnDevice(processor, device), processor.image_token_id, device)


@pytest.fixture
def use_bundled(monkeypatch, bundled_bench):
    monkeypatch.setattr(models, "load_model", lambda name, layers, device, dtype: bundled_bench)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, bundled_bench):
    """The tiny sweep, run once per session through the CLI with --json: (output folder, parsed stdout)."""
    out = tmp_path_factory.mktemp("tiny-sweep")
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "load_model", lambda name, layers, device, dtype: bundled_bench)
        result = invoke([*TINY, "--out", out, "--json"])
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


# A chat template for the tiny folder model: ChatML turns whose content is a list of image/text parts.
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, bundled):
    """A local model folder as `--model PATH` reads it: a tiny random LLaVA (CLIP tower, 112 px, 64 visual tokens)
    saved with save_pretrained, and a LlavaProcessor with the bundled tokenizer and a chat template."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from tiny import text_config, vision_config

    tokenizer = bundled[1].tokenizer
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = text_config(layers=4)
    text.vocab_size = image_token + 1
    text.pad_token_id, text.bos_token_id = tokenizer.pad_token_id, None
    text.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlavaConfig(
        vision_config=vision_config("clip"),
        text_config=text,
        image_token_id=image_token,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    images = CLIPImageProcessorPil(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112})
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=TEMPLATE,
    )
    folder = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    tokenizer.padding_side = "left"  # save_pretrained leaves the shared tokenizer as it was; be sure
    return folder


@pytest.fixture(scope="session")
def folder_sweep(tmp_path_factory, tiny_folder):
    out = tmp_path_factory.mktemp("folder-sweep")
    before = torch.get_num_threads()
    result = invoke(folder_args(tiny_folder, out))
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)
