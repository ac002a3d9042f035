"""What one setting does to one prompt, measured once (not per repeat: these do not need medians): the tokens
entering every encoder and decoder layer, the analytic FLOPs that follow, the KV cache and peak activation
memory of the prefill, and the decode rate over 32 greedy tokens."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from tokenfunnel.bench.flops import encoder_flops
from tokenfunnel.bench.memory import peak_bytes
from tokenfunnel.bench.models import BenchModel
from tokenfunnel.bench.settings import Setting
from tokenfunnel.bench.timing import prefill, sync
from tokenfunnel.runtime.cache import cache_of

DECODE_TOKENS = 32


@contextmanager
def encoder_counter(layers):
    """Yields a list that receives the tokens entering each of ``layers`` (per image) as a forward runs them."""
    seen: list[int] = []

    def before(_module, args, kwargs) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        seen.append(int(hidden.shape[0] if hidden.dim() == 2 else hidden.shape[1]))  # Qwen2-VL packs (tokens, C)

    hooks = [layer.register_forward_pre_hook(before, with_kwargs=True) for layer in layers]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def cache_bytes(cache) -> int:
    """Bytes of the keys and values a cache holds (each layer's own length: pruned layers hold fewer)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        pairs = [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in layers]
    else:
        pairs = list(cache)  # legacy tuple of (key, value) per layer
    return sum(t.numel() * t.element_size() for pair in pairs for t in pair if isinstance(t, torch.Tensor))


class _Stamps(LogitsProcessor):
    """Records when each step's logits are ready: the gaps between stamps are whole decode steps."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, []

    def __call__(self, input_ids, scores):
        sync(self.device)
        self.times.append(time.perf_counter())
        return scores


@torch.no_grad()
def decode_rate(bench: BenchModel, batch: dict, tokens: int = DECODE_TOKENS) -> float:
    """Tokens per second of greedy decoding, forced to ``tokens`` new tokens (no early stop): the ``tokens - 1``
    decode steps after the first token (which the prefill produces) over the time they took."""
    stamps = _Stamps(bench.device)
    extra = {}
    if bench.model.generation_config.pad_token_id is None:
        extra["pad_token_id"] = getattr(bench.model.generation_config, "eos_token_id", None) or 0
    bench.model.generate(
        **batch,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        logits_processor=LogitsProcessorList([stamps]),
        **extra,
    )
    steps = len(stamps.times) - 1  # the first stamp follows the prefill
    return steps / (stamps.times[-1] - stamps.times[0])


def profile(bench: BenchModel, batch: dict, setting: Setting) -> dict:
    """Token counts, FLOPs, KV-cache bytes, peak memory and decode rate of ``setting`` on one batch-1 prompt."""
    text, visual = bench.prompt_tokens(batch)
    with setting.applied(bench.model, bench.processor) as handle:
        layers = bench.adapter.encoder_layers or list(getattr(bench.adapter.vision_tower, "blocks", []))
        with encoder_counter(layers) as counted:
            peak, out = peak_bytes(lambda: prefill(bench, batch), bench.device)
        kv = cache_bytes(cache_of(out))
        del out
        report = handle.report() if handle is not None else {}
        rate = decode_rate(bench, batch)
    llm = bench.llm_tokens(report, visual)
    encoder = report.get("encoder_tokens") or counted
    return {
        "text_tokens": text,
        "original_visual_tokens": report.get("original_visual_tokens", visual),
        "visual_tokens": report.get("visual_tokens", visual),
        "llm_visual_tokens": llm,
        "encoder_tokens": list(encoder),
        "realised_keep": report.get("keep", 1.0),
        "encoder_keep": report.get("encoder_keep", 1.0),
        "flops_vision": encoder_flops(encoder, bench.vision_config),
        "flops_llm": bench.llm_flops(report, text, llm),
        "kv_cache_bytes": kv,
        "peak_mem_bytes": peak,
        "decode_tok_s": rate,
    }
