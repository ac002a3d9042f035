"""LLM prefill time of LUVC against the uncompressed model, and what the token counts allow in FLOPs.

    python scripts/luvc_speed.py --keep 0.5 0.25 0.11 --samples 12 --out benchmarks/luvc_speed.json
    python scripts/luvc_speed.py --model llava-1.5-shape --layers 4 --samples 1 --repeats 3 \
        --out benchmarks/luvc_speed_llava_shape.json
    python scripts/luvc_speed.py --model llava-1.5-shape --layers 16 --samples 1 --repeats 2 --threads 2 \
        --out benchmarks/luvc_speed_llava_shape_16.json
    python scripts/luvc_speed.py --model llava-1.5-shape --layers 32 --samples 4 --repeats 10 --device cuda \
        --dtype bfloat16 --out benchmarks/luvc_speed_llava_shape_gpu.json   # all 32 layers, SDPA, on a GPU
    python scripts/luvc_speed.py --model llava-1.5-shape --layers 32 --samples 2 --repeats 5 --threads 2 \
        --dtype bfloat16 --keep 0.25 0.11 --hold 0.6667 --context --out F   # luvc-focus as it ships

Batch 1, fp32 unless --dtype says otherwise, one mosaic question per sample (test split: timing only, no
accuracy). For each sample the uncompressed model and every keep run interleaved (A/B/C/...), each timed as the
median of --repeats prefills after one warm-up, so machine drift hits all alike. Speedup = median over samples
of uncompressed / compressed LLM prefill time; the FLOP-ideal speedup comes from the analytic FLOPs of the
tokens entering each layer.

The FLOP-ideal assumes a layer's time is proportional to its FLOPs, which a CPU (or GPU) does not honour at small
token counts. So each row also has the ceiling this hardware allows: the same language model, unpatched, fed random
embeddings of each layer's realised token count (a layer's cost read as 1/L of a full forward at that count), timed
right after the setting it belongs to. ``plain_speedup`` is that ceiling's speedup and ``share_of_plain`` the
measured speedup over it: what LUVC itself loses (scoring, gathers, masks), apart from what the hardware loses.

``--model llava-1.5-shape``: random weights in LLaVA-1.5-7B's shapes (CLIP ViT-L/14 at 336 px = 576 visual
tokens, Llama-7B layers: hidden 4096, MLP 11008, 32 heads) with only ``--layers`` decoder layers so it fits in
memory on a CPU; every layer has the same shape, so the per-layer cost ratio is the 32-layer model's. A short
prompt: 20 text tokens before and after the image. Answers are meaningless; only time is measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

import tokenfunnel
from tokenfunnel.bench.flops import context_flops, prefill_flops
from tokenfunnel.bench.models import DTYPES, OnDevice, llava_shaped, synthetic_batch
from tokenfunnel.bench.prefill import llm_timer
from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import prompt_positions
from tokenfunnel.methods.luvc import held_start


def timed(model, batch, repeats: int) -> float:
    with llm_timer(model.model.language_model) as seconds:
        for _ in range(repeats + 1):
            model(**batch, position_ids=prompt_positions(batch["attention_mask"]))
    return statistics.median(seconds[1:])


def timed_plain(lm, tokens: int, repeats: int) -> float:
    """Median seconds of an unpatched forward of ``lm`` on ``tokens`` random embeddings (one warm-up)."""
    weight = lm.embed_tokens.weight
    x = torch.randn(1, tokens, lm.config.hidden_size, device=weight.device, dtype=weight.dtype)
    with llm_timer(lm) as seconds:
        for _ in range(repeats + 1):
            lm(inputs_embeds=x, use_cache=True)
    return statistics.median(seconds[1:])


def ceiling(plain: dict[int, float], tokens_per_layer: list[int]) -> float:
    """Seconds a prefill whose layers take ``tokens_per_layer`` tokens would need at the unpatched per-layer cost."""
    return sum(plain[t] for t in tokens_per_layer) / len(tokens_per_layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.25, 0.11])
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--model", choices=("bundled", "llava-1.5-shape"), default="bundled")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of llava-1.5-shape")
    parser.add_argument("--every", type=int, default=1, help="LUVC option: decoder layers between drops")
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="time luvc-focus's schedule for a question naming a part: every token through the first layers that "
        "this share of the budget pays for, then one drop (random prompts name nothing: the drop ranks by score)",
    )
    parser.add_argument(
        "--context",
        action="store_true",
        help="with --hold, time luvc-focus as it ships: frozen context on its budget-sized lattice (the FLOP-ideal "
        "counts the frozen tokens' keys and values and the tile's attention to them; the unpatched ceiling does not)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/luvc_speed.json"))
    args = parser.parse_args()
    if args.context and not args.hold:
        parser.error("--context times frozen context after hold's drop: give --hold too (luvc-focus: 0.6667)")
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    if args.model == "bundled":
        model, processor = tokenfunnel.load_bundled(quiet=True)
        model.to(args.device, dtype)
        items = easyvqa.load_set("easyvqa-grid", args.samples, seed=1)
        batches = [OnDevice(processor, args.device, dtype)([item.image], [item.question]) for item in items]
        image_token = processor.image_token_id
    else:
        model = llava_shaped(args.layers, args.device, dtype)
        batches = [synthetic_batch(model.config, seed, args.device, dtype=dtype) for seed in range(args.samples)]
        image_token = model.config.image_token_id
    config = model.config.text_config
    times: dict[float, list[float]] = {k: [] for k in [1.0, *args.keep]}
    plain_times: dict[float, list[float]] = {k: [] for k in times}
    counts: dict[float, list[int]] = {}
    frozen: dict[float, list[int]] = {1.0: [0] * config.num_hidden_layers}
    realised: dict[float, float] = {1.0: 1.0}  # report()'s keep: frozen tokens counted at their share
    text_tokens = 0
    with torch.no_grad():
        for batch in batches:
            seq = batch["input_ids"].shape[1]
            visual = int((batch["input_ids"] == image_token).sum())
            text_tokens = seq - visual
            for keep in times:
                if keep == 1.0:
                    times[keep].append(timed(model, batch, args.repeats))
                    counts[keep] = [visual] * config.num_hidden_layers
                else:
                    held = {}
                    if args.hold:
                        held = {"stage": "llm", "start": held_start(args.hold, keep, config.num_hidden_layers)}
                    if args.context:
                        held.update(context="frozen", context_stride=None)
                    with tokenfunnel.compress(model, "luvc", keep=keep, every=args.every, **held) as handle:
                        times[keep].append(timed(model, batch, args.repeats))
                        report = handle.report()
                        counts[keep] = report["llm_visual_tokens"]
                        frozen[keep] = report.get("llm_context_tokens") or [0] * config.num_hidden_layers
                        realised[keep] = report["keep"]
                # the ceiling right after the setting it belongs to, so drift of the machine hits both alike
                tokens = [text_tokens + n for n in counts[keep]]
                plain = {t: timed_plain(model.model.language_model, t, args.repeats) for t in set(tokens)}
                plain_times[keep].append(ceiling(plain, tokens))
    full = prefill_flops([text_tokens + n for n in counts[1.0]], config)
    rows = []
    for keep, seconds in times.items():
        flops = prefill_flops([text_tokens + n for n in counts[keep]], config)
        flops += context_flops(frozen[keep], counts[keep], config)
        speedups = [a / b for a, b in zip(times[1.0], seconds, strict=True)]
        ideal = full / flops
        plain_speedup = statistics.median(a / b for a, b in zip(plain_times[1.0], plain_times[keep], strict=True))
        rows.append(
            {
                "method": "none" if keep == 1.0 else "luvc",
                "keep": keep,
                "realised_keep": round(realised[keep], 4),
                "context_tokens": frozen[keep],
                "llm_prefill_s": round(statistics.median(seconds), 5),
                "speedup_llm_prefill": round(statistics.median(speedups), 3),
                "flops_llm": flops,
                "flops_ideal_speedup": round(ideal, 3),
                "share_of_ideal": round(statistics.median(speedups) / ideal, 3),
                "plain_speedup": round(plain_speedup, 3),
                "plain_share_of_ideal": round(plain_speedup / ideal, 3),
                "share_of_plain": round(statistics.median(speedups) / plain_speedup, 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    out = {
        "model": args.model,
        "decoder_layers": config.num_hidden_layers,
        "every": args.every,
        "hold": args.hold,
        "context": args.context,
        "rows": rows,
        "samples": args.samples,
        "repeats": args.repeats,
        "threads": args.threads,
        "text_tokens": text_tokens,
        "visual_tokens": counts[1.0][0],
        "machine": torch.cuda.get_device_name()
        if args.device == "cuda"
        else (platform.processor() or platform.machine()),
        "attention": model.config.text_config._attn_implementation,
        "torch": torch.__version__,
        "dtype": args.dtype,
        "batch": 1,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
