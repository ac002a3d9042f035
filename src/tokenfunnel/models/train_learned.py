"""Train the learned compressor (``methods.learned``) on the bundled VLM by distillation on easy-VQA training images.

    python -m tokenfunnel.models.train_learned --out src/tokenfunnel/models/weights/learned_compressor.safetensors

The vision tower, projector and language model stay frozen; only the compressor learns. Steps:
1. the projected visual tokens of the training images (singles and 2x2 mosaics drawn from the images the bundled
   VLM was trained on, so never the dev split ``train.dev_image_ids`` nor the test split) are computed once;
2. the teacher, the uncompressed model, answers a chat of one question of each kind per image; its answer
   distribution is kept: the softmax over the first tokens of the 13 easy-VQA answers at each answer position. All 13
   start with different tokens and their later tokens are near-certain, so this is the closed-set distribution the
   evaluation takes its argmax of, at 13 rows of the LM head instead of 13 continuations;
3. the student, the same model on the compressed tokens (at their original positions, as the runtime places them),
   answers the same chats; loss KL(teacher || student). Each step draws one keep (log-uniform over --keep-range) for
   its batch, so one set of weights serves any keep and the low keeps, where choosing matters most, are drawn more.
Everything is fp32 (bf16 matmuls are slow on CPUs without AVX-512 BF16) and seeded: the same arguments and threads
give the same weights.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tokenfunnel.data import easyvqa
from tokenfunnel.methods.learned import save_compressor
from tokenfunnel.models.processor import SYSTEM_PROMPT
from tokenfunnel.ops.compressor import Compressor
from tokenfunnel.ops.detail import named_parts, part_cells

DEFAULT_OUT = Path("src/tokenfunnel/models/weights/learned_compressor.safetensors")


def training_images(seed: int, singles: int, mosaics: int) -> tuple[list, list]:
    """(kind, image ids) and question pools of ``singles`` + ``mosaics`` images drawn from the bundled VLM's own
    training recipe: images outside the dev split by construction."""
    from tokenfunnel.models.train import build_examples

    images, pools = build_examples(0, 1000, 1000)  # the committed bundled VLM's recipe (train.py defaults)
    rng = random.Random(seed)
    pick = [i for i, (kind, _) in enumerate(images) if kind == "single"]
    grid = [i for i, (kind, _) in enumerate(images) if kind == "grid"]
    chosen = sorted(rng.sample(pick, singles)) + sorted(rng.sample(grid, mosaics))
    return [images[i] for i in chosen], [pools[i] for i in chosen]


class Chats:
    """Token ids of one-question-per-turn chats about one image, and the positions that predict each answer."""

    def __init__(self, tokenize, prefix: list[int], visual_tokens: int, first: list[int]) -> None:
        self.ids, self.prefix, self.visual, self.first = tokenize, prefix, visual_tokens, first
        if len(set(first)) != len(first):
            raise ValueError("two answers share their first token; the distillation target needs them apart")

    @classmethod
    def bundled(cls, processor, visual_tokens: int) -> Chats:
        """The bundled VLM's chat format (as its processor writes prompts) and the 13 easy-VQA answers."""
        tok = processor.tokenizer

        def tokenize(text: str) -> list[int]:
            return tok(text, add_special_tokens=False)["input_ids"]

        prefix = tokenize(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
        return cls(tokenize, prefix, visual_tokens, [tokenize(a)[0] for a in easyvqa.answers()])

    def encode(self, turns: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """Ids after the image (the prefix and placeholders are the same for all) and where each answer is predicted
        (counted from the start of the whole chat)."""
        ids, at, start = [], [], len(self.prefix) + self.visual
        for index, (question, answer) in enumerate(turns):
            opener = "\n" if index == 0 else "<|im_start|>user\n"
            ids += self.ids(f"{opener}{question}<|im_end|>\n<|im_start|>assistant\n")
            at.append(start + len(ids) - 1)
            ids += self.ids(answer) + self.ids("<|im_end|>\n")
        return ids, at


def projected(model, processor, images, batch: int = 16) -> torch.Tensor:
    """(N, 256, D) the visual tokens the bundled VLM hands its language model for these images."""
    out = []
    for start in range(0, len(images), batch):
        pixels = processor.llava.image_processor(images[start : start + batch], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out.append(model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output)
    return torch.cat([torch.stack(list(x)) if isinstance(x, (list, tuple)) else x for x in out])


def answer_logprobs(model, chats: Chats, visual: torch.Tensor, rows: list, keep_cells=None) -> torch.Tensor:
    """(answers of all rows, 13) log-softmax over the answers' first tokens. ``visual`` (B, k, D) goes where the
    placeholders were, at the positions of ``keep_cells`` (B, k) (None: all of them, the uncompressed model)."""
    lm, embed = model.model.language_model, model.model.language_model.get_input_embeddings()
    b, k, _ = visual.shape
    p = len(chats.prefix)
    length = p + k + max(len(ids) for ids, _ in rows)
    ids = torch.zeros(b, length, dtype=torch.long)
    mask = torch.zeros(b, length, dtype=torch.long)
    pos = torch.zeros(b, length, dtype=torch.long)
    cells = keep_cells if keep_cells is not None else torch.arange(k).expand(b, -1)
    row_idx, col_idx = [], []
    for r, (text, at) in enumerate(rows):
        n = p + k + len(text)
        ids[r, :p], ids[r, p + k : n] = torch.tensor(chats.prefix), torch.tensor(text)
        mask[r, :n] = 1
        pos[r, :p] = torch.arange(p)
        pos[r, p : p + k] = p + cells[r]
        pos[r, p + k : n] = torch.arange(p + chats.visual, p + chats.visual + len(text))
        shift = chats.visual - k  # answers are counted in the full chat; the student's is shorter by the dropped
        row_idx += [r] * len(at)
        col_idx += [a - shift for a in at]
    embeds = torch.cat([embed(ids[:, :p]), visual, embed(ids[:, p + k :])], dim=1)
    hidden = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).last_hidden_state
    head = model.lm_head.weight[chats.first]
    return torch.log_softmax(hidden[torch.tensor(row_idx), torch.tensor(col_idx)] @ head.T, dim=-1)


def draw_turns(pool: dict, rng: random.Random, turns: int) -> list[tuple[str, str]]:
    """``turns`` questions, the kinds in turn from a random one (balanced: yes/no would otherwise dominate)."""
    present = [k for k in easyvqa.KINDS if pool[k]]
    offset = rng.randrange(len(present))
    return [rng.choice(pool[present[(offset + t) % len(present)]]) for t in range(turns)]


def distill(
    model, chats: Chats, feats, rows: list, teacher: list, compressor: Compressor, args, rng, first=None
) -> list[dict]:
    """``args.steps`` steps of KL(teacher || student) on ``args.batch`` chats each; returns the per-step log.
    ``first`` (chats, tokens) bool: the tokens of the part each chat's questions name (the compressor's focus)."""
    optimizer = torch.optim.AdamW(compressor.parameters(), lr=args.lr, weight_decay=0.0)
    low, high = args.keep_range
    n = feats.shape[1]
    order: list[int] = []
    log = []
    started = time.time()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:  # epochs in a seeded order
            order += rng.sample(range(len(rows)), len(rows))
        chosen, order = order[: args.batch], order[args.batch :]
        k = max(1, round(math.exp(rng.uniform(math.log(low), math.log(high))) * n))
        cosine = 0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / args.warmup) * cosine
        merged, cells, _ = compressor(feats[chosen][:, None], k, None if first is None else first[chosen])
        student = answer_logprobs(model, chats, merged, [rows[i] for i in chosen], cells)
        target = torch.cat([teacher[i] for i in chosen])
        loss = F.kl_div(student, target, log_target=True, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(compressor.parameters(), 1.0)
        optimizer.step()
        agree = (student.argmax(-1) == target.argmax(-1)).float().mean().item()
        seconds = time.time() - started
        log.append({"step": step, "k": k, "kl": round(loss.item(), 5), "agree": round(agree, 4), "s": round(seconds)})
        print(f"step {step}/{args.steps} k {k} kl {loss.item():.4f} agree {agree:.2f} {seconds:.0f}s", flush=True)
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4, help="chats (images) per step")
    parser.add_argument("--singles", type=int, default=48)
    parser.add_argument("--mosaics", type=int, default=48)
    parser.add_argument("--turns", type=int, default=3, help="questions per chat (one of each kind with 3)")
    parser.add_argument("--keep-range", type=float, nargs=2, default=(0.06, 0.35), metavar=("LOW", "HIGH"))
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--focus",
        action="store_true",
        help="train as learned's focus=True runs: the part a chat's questions name is kept first (use --turns 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log", type=Path, default=Path("benchmarks/learned_training.json"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    low, high = args.keep_range
    if not 0 < low <= high <= 1:
        raise SystemExit(f"--keep-range must satisfy 0 < LOW <= HIGH <= 1, got {low} {high}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from tokenfunnel.models.bundled import load_bundled  # here, so that --help needs no model

    started = time.time()
    model, processor = load_bundled(quiet=True)
    model.requires_grad_(False)
    images, pools = training_images(args.seed, args.singles, args.mosaics)
    from tokenfunnel.models.train import render_images

    feats = projected(model, processor, render_images(images))
    n = feats.shape[1]
    chats = Chats.bundled(processor, n)
    feature_s = time.time() - started
    print(f"projected tokens {tuple(feats.shape)} in {feature_s:.0f}s", flush=True)

    rng = random.Random(args.seed)
    rows, named = [], []
    side = math.isqrt(n)
    for pool in pools:
        turns = draw_turns(pool, rng, args.turns)
        rows.append((*chats.encode(turns), [easyvqa.answers().index(a) for _, a in turns]))
        named.append(part_cells(named_parts(" ".join(q for q, _ in turns)), side, side))
    first = torch.stack(named) if args.focus else None
    teacher, hits = [], 0
    with torch.no_grad():
        for start in range(0, len(rows), args.batch):
            chunk = rows[start : start + args.batch]
            logp = answer_logprobs(model, chats, feats[start : start + len(chunk)], [r[:2] for r in chunk])
            truth = torch.tensor([a for r in chunk for a in r[2]])
            hits += int((logp.argmax(-1) == truth).sum())
            teacher.append(logp.split([len(r[1]) for r in chunk]))
            print(f"  teacher {start + len(chunk)}/{len(rows)}", flush=True)
    teacher = [t for chunk in teacher for t in chunk]
    teacher_s = time.time() - started - feature_s
    answers_total = sum(len(r[1]) for r in rows)
    print(f"teacher: {hits}/{answers_total} right, {teacher_s:.0f}s", flush=True)

    torch.manual_seed(args.seed)
    compressor = Compressor(feats.shape[-1], args.hidden)
    train_started = time.time()
    log = distill(model, chats, feats, [r[:2] for r in rows], teacher, compressor, args, rng, first)
    train_s = time.time() - train_started
    meta = {
        "format": "tokenfunnel-learned-compressor",
        "seed": str(args.seed),
        "config": {k: v if isinstance(v, (int, float)) else str(v) for k, v in vars(args).items()},
        "model": "bundled VLM (DINOv2-S + SmolLM2-135M-Instruct + trained projector/LoRA)",
    }
    save_compressor(compressor, args.out, meta)
    summary = {
        "command": "python -m tokenfunnel.models.train_learned " + " ".join(sys.argv[1:] if argv is None else argv),
        "args": meta["config"],
        "images": {"singles": args.singles, "mosaics": args.mosaics, "answers": answers_total},
        "teacher_first_token_accuracy": round(hits / answers_total, 4),
        "threads": torch.get_num_threads(),
        "feature_seconds": round(feature_s),
        "teacher_seconds": round(teacher_s),
        "train_seconds": round(train_s),
        "total_seconds": round(time.time() - started),
        "log": log,
    }
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.write_text(json.dumps(summary, indent=1) + "\n")
    times = f"features {feature_s:.0f}, teacher {teacher_s:.0f}, training {train_s:.0f}"
    print(f"done in {summary['total_seconds']}s ({times}) -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
