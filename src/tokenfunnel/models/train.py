"""Train the bundled VLM's projector (and a small LoRA on the LM) on the easy-VQA *train* split.

    make train   # the committed weights' recipe (flags in the Makefile)

The vision tower and the LM stay frozen. Why a LoRA too: with the projector alone, 2x2 mosaics stayed near
66% (the LM must learn to read a tile's tokens from a question that names the tile), see BUNDLED-VLM notes.
What makes this fit on 2 CPU cores:
- the frozen vision features are computed once (fp16) and cached on disk;
- each image carries several question-answer turns packed after one image prefix, each turn seeing only the
  prefix and itself (``ChatEncoder``), so one pass over its 256 visual tokens trains several answers;
- the LM head runs only at answer positions.
Everything runs in fp32: on CPUs without AVX-512 BF16 (ours), bf16 matmuls are ~8x slower than fp32.
Question kinds are drawn evenly (yes/no, shape, colour): with the natural mix colour lags far behind.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tokenfunnel.data import easyvqa
from tokenfunnel.models.bundled import load_bundled, lora_key, split_trained
from tokenfunnel.models.processor import SYSTEM_PROMPT
from tokenfunnel.models.route_loss import RouteLoss, named_tile

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def image_features(model, processor, images, batch: int = 32) -> torch.Tensor:
    """The Llava-selected vision features (last hidden state before the final norm, CLS dropped), fp16."""
    out = []
    tower = model.model.vision_tower
    for start in range(0, len(images), batch):
        pixels = processor.llava.image_processor(images[start : start + batch], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        out.append(hidden.to(torch.float16))
        print(f"  features {start + len(pixels)}/{len(images)}", flush=True)
    return torch.cat(out)


def build_examples(seed: int, mosaics: int, singles: int = 0) -> tuple[list, list]:
    """Training images (single train images, then train mosaics) and, for each, its question pools."""
    rng = random.Random(seed)
    table = easyvqa._questions_by_image("train")
    ids = sorted(table)
    images, pools = [], []
    for image_id in ids[: singles or None]:
        images.append(("single", (image_id,)))
        pools.append({k: [(q.text, q.answer) for q in table[image_id][k]] for k in easyvqa.KINDS})
    for _ in range(mosaics):
        tiles = rng.sample(ids, 4)
        images.append(("grid", tuple(tiles)))
        pool = {k: [] for k in easyvqa.KINDS}
        for position, image_id in enumerate(tiles):
            for kind in easyvqa.KINDS:
                pool[kind] += [
                    (easyvqa.tile_question(easyvqa.TILES[position], q.text), q.answer) for q in table[image_id][kind]
                ]
        pools.append(pool)
    return images, pools


def dev_image_ids(seed: int = 0, mosaics: int = 1000, singles: int = 1000) -> list[int]:
    """Training-split images that the default recipe never shows, alone or as a mosaic tile: a dev split for
    monitoring training and choosing method defaults without touching the test split."""
    seen = {i for _, ids in build_examples(seed, mosaics, singles)[0] for i in ids}
    return sorted(set(easyvqa._questions_by_image("train")) - seen)


def dev_accuracy(weights: Path, samples: int, seed: int, mosaics: int, singles: int) -> list[dict]:
    """Accuracy of trained weights on dev-split singles and mosaics (training images never shown)."""
    from tokenfunnel.eval.runner import evaluate_samples

    model, processor = load_bundled(weights=weights, quiet=True)
    dev = dev_image_ids(seed, mosaics, singles)
    sets = {
        "dev-single": easyvqa.single_set(samples, seed, split="train", image_ids=dev),
        "dev-grid": easyvqa.grid_set(samples, seed, split="train", image_ids=dev),
    }
    return [evaluate_samples(model, processor, items, name) for name, items in sets.items()]


def feature_file(work: Path, seed: int = 0, singles: int = 1000, mosaics: int = 1000) -> Path:
    """Where training caches the frozen vision features of ``build_examples(seed, mosaics, singles)``'s images."""
    return work / f"features-seed{seed}-singles{singles}-mosaics{mosaics}.pt"


def cached_features(work: Path = Path("runs/train")) -> torch.Tensor:
    """The default recipe's cached features, for the diagnosis scripts; exits naming ``make train`` if missing."""
    path = feature_file(work)
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `make train` once (it caches the features first)")
    return torch.load(path)


def render_images(images) -> list:
    out = []
    for kind, ids in images:
        tiles = [easyvqa.load_image("train", i) for i in ids]
        out.append(tiles[0] if kind == "single" else easyvqa.mosaic(tiles))
    return out


class ChatEncoder:
    """Token ids of several question-answer turns about one image, packed after a single image prefix.

    ``separate=True`` (``--separate-turns``): every turn attends to the prefix (system prompt + image) and to
    itself only, and its positions restart right after the prefix, so each turn is exactly the single-question
    chat the model is evaluated on, while the 256 visual tokens are computed once for all turns. With
    ``separate=False`` (the committed weights' recipe) turns follow each other as one multi-turn chat: later
    answers can then be read off earlier ones ("Is the shape red?" - "yes" gives away the colour).
    """

    def __init__(self, processor, visual_tokens: int, separate: bool = True) -> None:
        self.tok = processor.tokenizer
        self.image_id = processor.image_token_id
        self.visual_tokens = visual_tokens
        self.separate = separate

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def encode(self, turns: list[tuple[str, str]]) -> dict[str, list[int]]:
        """``ids``, ``positions``, ``turn`` (-1 on the prefix), the answer tokens as ``targets`` with the
        index of the token that predicts each (``sources``), and ``asks``: per turn, the index of the token
        that predicts its first answer token."""
        ids = self.ids(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
        ids += [self.image_id] * self.visual_tokens
        prefix = len(ids)
        positions, turn_of = list(range(prefix)), [-1] * prefix
        sources, targets, asks = [], [], []
        for index, (question, answer) in enumerate(turns):
            opener = "\n" if index == 0 or self.separate else "<|im_start|>user\n"
            body = self.ids(f"{opener}{question}<|im_end|>\n<|im_start|>assistant\n")
            answer_ids = self.ids(answer) + self.ids("<|im_end|>")
            closer = [] if self.separate else self.ids("\n")
            start = prefix if self.separate else len(ids)
            asks.append(len(ids) + len(body) - 1)
            for offset, token in enumerate(body + answer_ids + closer):
                if len(body) <= offset < len(body) + len(answer_ids):
                    sources.append(len(ids) - 1)
                    targets.append(token)
                ids.append(token)
                positions.append(start + offset)
                turn_of.append(index if self.separate else 0)
        return {
            "ids": ids,
            "positions": positions,
            "turn": turn_of,
            "sources": sources,
            "targets": targets,
            "asks": asks,
        }


PADDING = -2  # the turn of padding tokens (the prefix is turn -1)


def turn_mask(turns: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(batch, 1, L, L) additive mask for packed rows: causal, and a turn sees the prefix (turn -1) and itself.
    Padding (turn ``PADDING``) sees only itself, so no row is all masked."""
    length = turns.shape[1]
    valid = turns != PADDING
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    same = (turns[:, None, :] == -1) | (turns[:, None, :] == turns[:, :, None])
    allowed = causal & same & valid[:, None, :] & valid[:, :, None]
    allowed |= torch.eye(length, dtype=torch.bool)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def pack(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pads encoded rows into a batch: ids, position ids, the 4D mask and the answer index triples."""
    length = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), length), pad_id)
    positions = torch.zeros(len(rows), length, dtype=torch.long)
    turns = torch.full((len(rows), length), PADDING)
    src_b, src_t, tgt = [], [], []
    for b, row in enumerate(rows):
        n = len(row["ids"])
        ids[b, :n] = torch.tensor(row["ids"])
        positions[b, :n] = torch.tensor(row["positions"])
        turns[b, :n] = torch.tensor(row["turn"])
        src_b += [b] * len(row["sources"])
        src_t += row["sources"]
        tgt += row["targets"]
    return {
        "ids": ids,
        "positions": positions,
        "mask": turn_mask(turns),
        "source_rows": torch.tensor(src_b),
        "source_tokens": torch.tensor(src_t),
        "targets": torch.tensor(tgt),
    }


class Whitening:
    """ZCA whitening of the frozen vision features, trained through and folded back into ``linear_1``.

    Why: the features are badly conditioned (on easy-VQA training tokens the top 5 of 384 directions hold 86% of
    the variance, eigenvalues up to 379 against a median of 0.024); a linear probe reads colour at 0.99 all the
    same, yet a projector trained on raw features learnt shape within 50 steps and colour not at all in 100.
    Training ``linear_1`` on whitened features gives every direction the same scale (``--whiten``).
    ``fold`` gives the plain LLaVA projector weights (W·Z, b − W·Z·mean), so nothing changes at inference.
    """

    def __init__(self, features: torch.Tensor, samples: int = 65536, eps: float = 1e-2, seed: int = 0) -> None:
        tokens = features.flatten(0, 1)
        pick = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))[:samples]
        x = tokens[pick].double()
        self.mean = x.mean(0)
        values, vectors = torch.linalg.eigh(torch.cov((x - self.mean).T))
        values = values.clamp_min(0) + eps * values.median()  # the median: a few huge channels dominate the mean
        self.matrix = (vectors * values.rsqrt()) @ vectors.T
        self.inverse = (vectors * values.sqrt()) @ vectors.T

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features.double() - self.mean) @ self.matrix

    def fold(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights on raw features equal to ``weight``/``bias`` on whitened ones."""
        w = weight.double() @ self.matrix
        return w.float(), (bias.double() - w @ self.mean).float()

    def unfold(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights on whitened features equal to ``weight``/``bias`` on raw ones (for ``--init``)."""
        w = weight.double() @ self.inverse
        return w.float(), (bias.double() + weight.double() @ self.mean).float()


def add_lora(lm, rank: int, seed: int) -> tuple[dict[str, torch.nn.Parameter], list]:
    """LoRA on every projection of the LM's decoder layers, as forward hooks (no module is replaced)."""
    gen = torch.Generator().manual_seed(seed)
    params, hooks = {}, []
    scale = 2.0  # alpha = 2 * rank
    for name, module in lm.named_modules():
        if name.rsplit(".", 1)[-1] not in LORA_TARGETS:
            continue
        a = torch.nn.Parameter(torch.randn(rank, module.in_features, generator=gen) / math.sqrt(module.in_features))
        b = torch.nn.Parameter(torch.zeros(module.out_features, rank))
        params[name] = (a, b)

        def hook(mod, args, output, a=a, b=b):
            return output + scale * F.linear(F.linear(args[0], a), b)

        hooks.append(module.register_forward_hook(hook))
    return params, hooks, scale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--mosaics", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=1000, help="limit the single train images (0: all)")
    parser.add_argument(
        "--separate-turns",
        action="store_true",
        help="each question turn sees only the image prefix and itself (no answer can be read off another turn)",
    )
    parser.add_argument("--whiten", action="store_true", help="train linear_1 on whitened vision features")
    parser.add_argument("--grid-fraction", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument("--lora-rank", type=int, default=8, help="0 trains the projector alone")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--route-weight",
        type=float,
        default=0.0,
        help="weight of the auxiliary loss that points the answer token's attention at the named tile (0: off)",
    )
    parser.add_argument("--route-layers", default="8,12,16,20", help="decoder layers the route loss supervises")
    parser.add_argument(
        "--stop-after", type=int, default=0, help="end after this many steps of the --steps schedule (0: all)"
    )
    parser.add_argument("--init", type=Path, default=None, help="continue from these trained weights")
    parser.add_argument("--dev-eval", type=Path, default=None, help="only score these weights on the dev split")
    parser.add_argument("--dev-samples", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--draw-seed",
        type=int,
        default=None,
        help="seed of the batch draws only (default: --seed); the training images stay those of --seed, so a "
        "continued run sees new draws without touching the dev split",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/train"))
    parser.add_argument("--out", type=Path, default=Path("runs/train/bundled_vlm.safetensors"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dev_eval is not None:
        for row in dev_accuracy(args.dev_eval, args.dev_samples, args.seed, args.mosaics, args.singles):
            print(json.dumps(row), flush=True)
        return
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed if args.draw_seed is None else args.draw_seed)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    model, processor = load_bundled(trained=False)
    model.requires_grad_(False)
    images, pools = build_examples(args.seed, args.mosaics, args.singles)
    cache = feature_file(args.work, args.seed, args.singles, args.mosaics)
    if cache.exists():
        features = torch.load(cache)
    else:
        print(f"computing frozen vision features for {len(images)} training images", flush=True)
        features = image_features(model, processor, render_images(images))
        torch.save(features, cache)
    feature_s = time.time() - started
    print(f"features ready: {tuple(features.shape)} in {feature_s:.0f}s", flush=True)

    projector = model.model.multi_modal_projector
    projector.requires_grad_(True)
    lm = model.model.language_model
    lora, hooks, lora_scale = add_lora(lm, args.lora_rank, args.seed) if args.lora_rank else ({}, [], 0.0)
    groups = [{"params": list(projector.parameters()), "lr": args.lr}]
    if lora:
        groups.append({"params": [p for pair in lora.values() for p in pair], "lr": args.lora_lr})
    if args.init is not None:
        _load_trained(args.init, projector, lora)
    whiten = Whitening(features, seed=args.seed) if args.whiten else None
    if whiten is not None and args.init is not None:  # the file holds linear_1 on raw features
        first = projector.linear_1
        with torch.no_grad():
            weight, bias = whiten.unfold(first.weight, first.bias)
            first.weight.copy_(weight)
            first.bias.copy_(bias)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    base_lrs = [g["lr"] for g in groups]
    encoder = ChatEncoder(processor, features.shape[1], separate=args.separate_turns)
    route = None
    if args.route_weight:
        side = math.isqrt(features.shape[1])
        route = RouteLoss(lm, [int(i) for i in args.route_layers.split(",")], side)
    embed = lm.get_input_embeddings()
    singles = [i for i, (kind, _) in enumerate(images) if kind == "single"]
    grids = [i for i, (kind, _) in enumerate(images) if kind == "grid"]
    log = []
    train_started = time.time()
    for step in range(1, args.steps + 1):
        n_grid = round(args.batch * args.grid_fraction)
        chosen = rng.sample(grids, n_grid) + rng.sample(singles, args.batch - n_grid)
        rows = []
        for index in chosen:
            present = [k for k in easyvqa.KINDS if pools[index][k]]
            offset = rng.randrange(len(present))
            kinds = [present[(offset + t) % len(present)] for t in range(args.turns)]
            turns = [rng.choice(pools[index][k]) for k in kinds]
            rows.append({**encoder.encode(turns), "questions": [q for q, _ in turns]})
        batch = pack(rows, processor.tokenizer.pad_token_id)
        if route is not None:
            route.arm(*_route_targets(rows), visual_start=rows[0]["ids"].index(processor.image_token_id))
        warm = min(1.0, step / args.warmup)
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * warm * cosine
        ids = batch["ids"]
        chosen_features = features[chosen]
        visual = projector(whiten(chosen_features).float() if whiten is not None else chosen_features.float())
        embeds = embed(ids).masked_scatter((ids == processor.image_token_id)[..., None], visual)
        hidden = lm(inputs_embeds=embeds, attention_mask=batch["mask"], position_ids=batch["positions"])
        logits = model.lm_head(hidden.last_hidden_state[batch["source_rows"], batch["source_tokens"]])
        target = batch["targets"]
        loss = answer_loss = F.cross_entropy(logits, target)
        route_loss, route_share = route.take() if route is not None else (None, 0.0)
        if route_loss is not None:
            loss = loss + args.route_weight * route_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        accuracy = (logits.argmax(-1) == target).float().mean().item()
        entry = {"step": step, "loss": round(answer_loss.item(), 4), "token_accuracy": round(accuracy, 4)}
        if route is not None:
            entry["route_share"] = round(route_share, 4)
        log.append(entry)
        if step % 10 == 0 or step == 1:
            rate = (time.time() - train_started) / step
            extra = f" route share {route_share:.3f}" if route is not None else ""
            print(
                f"step {step}/{args.steps} loss {answer_loss.item():.4f} acc {accuracy:.3f}{extra} {rate:.1f}s/step",
                flush=True,
            )
        if step % 50 == 0 or step == args.steps or step == args.stop_after:
            _save(args.out, projector, lora, lora_scale, whiten)
        if step == args.stop_after:
            break
    for hook in hooks:
        hook.remove()
    if route is not None:
        route.remove()
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "feature_seconds": round(feature_s),
        "train_seconds": round(time.time() - train_started),
        "log": log,
    }
    (args.work / "train_log.json").write_text(json.dumps(summary, indent=1))
    print(f"done: features {feature_s:.0f}s, training {summary['train_seconds']}s -> {args.out}", flush=True)


def _route_targets(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, token, tile) for every turn whose question names a mosaic tile."""
    found = [
        (b, token, tile)
        for b, row in enumerate(rows)
        for token, question in zip(row["asks"], row["questions"], strict=True)
        if (tile := named_tile(question)) is not None
    ]
    return tuple(torch.tensor([f[i] for f in found], dtype=torch.long) for i in range(3))


def _load_trained(path: Path, projector, lora) -> None:
    from safetensors.torch import load_file

    state = load_file(path)
    projector.load_state_dict(split_trained(state)[0])
    with torch.no_grad():
        for name, (a, b) in lora.items():
            a.copy_(state[lora_key(name, "A")])
            b.copy_(state[lora_key(name, "B")])


def _save(path: Path, projector, lora, lora_scale: float, whiten: Whitening | None = None) -> None:
    state = {f"projector.{k}": v.detach().clone().contiguous() for k, v in projector.state_dict().items()}
    if whiten is not None:
        weight, bias = whiten.fold(projector.linear_1.weight.detach(), projector.linear_1.bias.detach())
        state["projector.linear_1.weight"], state["projector.linear_1.bias"] = weight.contiguous(), bias.contiguous()
    for name, (a, b) in lora.items():
        state[lora_key(name, "A")] = a.detach().clone().contiguous()
        state[lora_key(name, "B")] = b.detach().clone().contiguous()
    if lora:
        state["lora_scale"] = torch.tensor(lora_scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path)


if __name__ == "__main__":
    main()
